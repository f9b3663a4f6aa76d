//! A few plain GETs on loopback: a peer's `/healthz` (is it up?) and tokenpipe's `/metrics` (its own count
//! of system calls). One connection per request, every step under a timeout.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::procs::Proc;

/// `GET path` on 127.0.0.1:`port`: the status and the body (chunked framing left in: the callers only
/// look for lines in it).
pub fn get(port: u16, path: &str, timeout: Duration) -> std::io::Result<(u16, String)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string());
    Ok((status, body))
}

/// Waits until `GET /healthz` answers 200, at most `timeout`, failing early if the process exits.
pub fn wait_healthy(proc: &mut Proc, port: u16, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok((200, _)) = get(port, "/healthz", Duration::from_secs(1)) {
            return Ok(());
        }
        if let Some(status) = proc.exited() {
            return Err(format!(
                "{} exited ({status}) before it was healthy:\n{}",
                proc.name,
                proc.log_tail()
            ));
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{} did not answer GET /healthz with 200 within {timeout:?}:\n{}",
                proc.name,
                proc.log_tail()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// tokenpipe's own counters from `GET /metrics`: the system calls it made (`tokenpipe_syscalls_total`,
/// every kind summed) and the chunks it relayed (`tokenpipe_relayed_chunks_total`).
#[derive(Debug, Clone, Copy, Default)]
pub struct OwnCounters {
    pub syscalls: f64,
    pub relayed_chunks: f64,
}

pub fn own_counters(port: u16) -> Option<OwnCounters> {
    let (status, body) = get(port, "/metrics", Duration::from_secs(2)).ok()?;
    if status != 200 {
        return None;
    }
    let mut counters = OwnCounters::default();
    for line in body.lines() {
        let value = || -> f64 {
            line.rsplit(' ')
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0)
        };
        if line.starts_with("tokenpipe_syscalls_total") {
            counters.syscalls += value();
        } else if line.starts_with("tokenpipe_relayed_chunks_total") {
            counters.relayed_chunks += value();
        }
    }
    Some(counters)
}
