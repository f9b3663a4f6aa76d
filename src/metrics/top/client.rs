//! `GET /metrics` over a blocking `TcpStream`: one request per connection, bounded in time and size.
//!
//! `top` is a small command-line tool, so plain blocking I/O is the right size: no event loop, no async
//! runtime, no HTTP client crate. The bytes are read by the crate's own sans-IO HTTP code: the response
//! head by [`parse_response_head`], the body by [`BodyDecoder`] (Content-Length, chunked, or up to the
//! close), the same code the relay reads its upstreams with. Plain `http://` only: a relay serving
//! HTTPS can be scraped through a plain listener or a local port forward.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::http::{BodyDecoder, parse_response_head};

/// The longest response head read, and the largest body (tokenpipe's exposition is some 30 KiB).
const MAX_HEAD_BYTES: usize = 16 * 1024;
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Where the metrics are: an `http://` URL, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsUrl {
    /// The host as written for a socket address (an IPv6 address without its brackets).
    pub host: String,
    pub port: u16,
    /// The path and query, `/metrics` when the URL has none.
    pub path: String,
    /// `Host` header value: the host (IPv6 in brackets) and the port.
    authority: String,
}

impl MetricsUrl {
    /// Reads `http://HOST[:PORT][/PATH]` (or a bare `HOST:PORT`, taken as `http://`); the path defaults to
    /// `/metrics`. For clap's `value_parser`: the message says what is wrong.
    pub fn parse(text: &str) -> Result<MetricsUrl, String> {
        let text = text.trim();
        let with_scheme = if text.contains("://") {
            text.to_string()
        } else {
            format!("http://{text}")
        };
        let url =
            url::Url::parse(&with_scheme).map_err(|e| format!("{text:?}: not a URL ({e})"))?;
        match url.scheme() {
            "http" => {}
            "https" => {
                return Err(format!(
                    "{text:?}: https is not supported; `tokenpipe top` reads /metrics over plain \
                     http:// only (give the address of a plain listener, e.g. http://127.0.0.1:8080)"
                ));
            }
            other => {
                return Err(format!(
                    "{text:?}: scheme {other:?}; expected http://HOST:PORT"
                ));
            }
        }
        let (host, authority_host) = match url.host() {
            Some(url::Host::Ipv6(ip)) => (ip.to_string(), format!("[{ip}]")),
            Some(host) => (host.to_string(), host.to_string()),
            None => return Err(format!("{text:?}: no host; expected http://HOST:PORT")),
        };
        let port = url.port_or_known_default().unwrap_or(80);
        let path = match (url.path(), url.query()) {
            ("" | "/", None) => "/metrics".to_string(),
            (path, None) => path.to_string(),
            (path, Some(query)) => format!("{path}?{query}"),
        };
        Ok(MetricsUrl {
            host,
            port,
            path,
            authority: format!("{authority_host}:{port}"),
        })
    }

    /// The request line's target, for messages: `http://HOST:PORT/PATH`.
    pub fn url(&self) -> String {
        format!("http://{}{}", self.authority, self.path)
    }
}

impl fmt::Display for MetricsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url())
    }
}

/// `GET` the target; its body as text if the answer is a `200`, else a message that says what went
/// wrong. The whole exchange, connecting included, takes at most about `timeout`.
pub fn get(target: &MetricsUrl, timeout: Duration) -> Result<String, String> {
    let deadline = Instant::now() + timeout;
    let mut stream = connect(target, timeout)?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: text/plain\r\nUser-Agent: tokenpipe-top/{}\r\n\
         Connection: close\r\n\r\n",
        target.path,
        target.authority,
        env!("CARGO_PKG_VERSION")
    );
    stream
        .set_write_timeout(Some(timeout))
        .and_then(|()| stream.write_all(request.as_bytes()))
        .map_err(|e| io_message("sending the request failed", &e, timeout))?;
    let body = read_response(&mut stream, deadline, timeout)?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// A connection to the first of the host's addresses that takes one.
fn connect(target: &MetricsUrl, timeout: Duration) -> Result<TcpStream, String> {
    let addrs: Vec<SocketAddr> = (target.host.as_str(), target.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", target.host))?
        .collect();
    let mut last = format!("{} resolves to no address", target.host);
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(stream) => return Ok(stream),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                last = format!("connection refused at {addr} (is the relay running there?)");
            }
            Err(e) => last = io_message(&format!("cannot connect to {addr}"), &e, timeout),
        }
    }
    Err(last)
}

/// Reads one response from `stream`: its body if its status is 200.
fn read_response(
    stream: &mut TcpStream,
    deadline: Instant,
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    let (head, consumed) = loop {
        match parse_response_head(&buf, MAX_HEAD_BYTES) {
            Ok(Some(parsed)) => break parsed,
            Ok(None) => {}
            Err(e) => return Err(format!("not an HTTP answer: {e}")),
        }
        if fill(stream, &mut buf, deadline, timeout)? == 0 {
            return Err("the connection closed before an answer".to_string());
        }
    };
    if head.status != 200 {
        let status = format!(
            "{} {}",
            head.status,
            crate::http::response::reason(head.status)
        );
        return Err(format!(
            "answered {} (is this the relay's /metrics?)",
            status.trim_end()
        ));
    }
    let mut decoder = BodyDecoder::new(head.framing);
    let mut body = Vec::new();
    let mut ranges = Vec::new();
    let mut pending = buf.split_off(consumed);
    loop {
        ranges.clear();
        let decoded = decoder
            .decode(&pending, &mut ranges)
            .map_err(|e| format!("unreadable body: {e}"))?;
        for range in &ranges {
            body.extend_from_slice(&pending[range.clone()]);
        }
        if body.len() > MAX_BODY_BYTES {
            return Err(format!("the answer is larger than {MAX_BODY_BYTES} bytes"));
        }
        if decoded.done || decoder.is_done() {
            return Ok(body);
        }
        pending.clear();
        if fill(stream, &mut pending, deadline, timeout)? == 0 {
            decoder
                .on_eof()
                .map_err(|e| format!("unreadable body: {e}"))?;
            return Ok(body);
        }
    }
}

/// Reads what is there into `buf` (appended), waiting at most until `deadline`; 0 at the end of the
/// stream.
fn fill(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    deadline: Instant,
    timeout: Duration,
) -> Result<usize, String> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("no whole answer within {timeout:?}"));
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(|e| io_message("reading failed", &e, timeout))?;
        match stream.read(&mut chunk) {
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Ok(n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(format!("no whole answer within {timeout:?}"));
            }
            Err(e) => return Err(io_message("reading the answer failed", &e, timeout)),
        }
    }
}

/// `what: error`, with time-outs said plainly.
fn io_message(what: &str, e: &io::Error, timeout: Duration) -> String {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            format!("{what}: no answer within {timeout:?}")
        }
        _ => format!("{what}: {e}"),
    }
}
