//! White-box tests of the relay worker's turns: a relay `Worker` driven one iteration at a time
//! ([`crate::reactor::Worker::turn`]) against a fake upstream the test writes by hand, so that situations
//! that only arise inside one event batch can be set up exactly.
//!
//! Test code only: its parent declares it `#[cfg(test)]`.

use super::*;
use crate::reactor::Worker;
use deadlines::UpstreamTimeouts;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream as StdStream};
use std::time::Duration;

/// A relay worker whose upstream is `origin` (a listener the test owns), with a stream cap of `cap`.
fn relay(origin: &TcpListener, cap: usize) -> (Worker<Relay>, SocketAddr) {
    relay_to(origin, cap, false)
}

/// [`relay`], with an `https` origin when `https` (but no TLS configuration: see the test that uses it).
fn relay_to(origin: &TcpListener, cap: usize, https: bool) -> (Worker<Relay>, SocketAddr) {
    let addr = origin.local_addr().unwrap();
    let target = Arc::new(UpstreamTarget {
        name: "default".into(),
        provider: Provider::OpenAi,
        origin: Origin {
            tls: https,
            host: "127.0.0.1".into(),
            port: addr.port(),
            base_path: String::new(),
        },
        key: None,
        default_model: "m".into(),
        tls_name: None,
        gate: admission::Gate::new(admission::AdmissionLimits::default()),
        health: health::Health::new(health::BreakerPolicy::default()),
        fallback: None,
    });
    let observe = observe::Observe::standalone(std::slice::from_ref(&target));
    let settings = RelaySettings {
        limits: Limits::default(),
        stream_buffer: cap,
        max_idle: 4,
        idle_timeout: Duration::from_secs(60),
        inbound_tls: None,
        dns: dns::CacheConfig::default(),
        upstreams: vec![(target, None)],
        router: Router::single(Provider::OpenAi),
        client: ClientTimeouts::default(),
        timeouts: UpstreamTimeouts::default(),
        retry: retry::RetryPolicy::default(),
        rate_limiter: None,
        client_keys: Arc::default(),
        max_clients: usize::MAX,
        draining: Arc::default(),
    };
    let resolver = dns::Resolver::new().unwrap();
    let make = |remote| Relay::new(settings, Arc::default(), resolver, remote, observe);
    let mut w = Worker::build("test".into(), Duration::from_secs(10), make).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    w.listen(listener).unwrap();
    (w, addr)
}

/// Turns until `done` holds (at most 100 turns of at most 100 ms): synchronized on what the worker saw.
fn turn_until(w: &mut Worker<Relay>, what: &str, mut done: impl FnMut(&mut Worker<Relay>) -> bool) {
    for _ in 0..100 {
        if done(w) {
            return;
        }
        w.turn(Some(Duration::from_millis(100))).unwrap();
    }
    panic!("{what}: not within 100 turns");
}

fn only_client(w: &mut Worker<Relay>) -> ConnId {
    let clients: Vec<ConnId> = w
        .context()
        .conns
        .iter()
        .filter(|(_, e)| matches!(e, Entry::Client(_)))
        .map(|(id, _)| id)
        .collect();
    assert_eq!(clients.len(), 1);
    clients[0]
}

fn streaming(w: &mut Worker<Relay>, id: ConnId) -> bool {
    matches!(
        w.context().conns.get(id),
        Some(Entry::Client(c)) if matches!(&c.state, ClientState::Serving(x) if matches!(x.phase, exchange::Phase::Streaming { .. }))
    )
}

/// A client that asked for a stream, and the upstream connection the relay opened for it (blocking).
fn stream_with_upstream(
    w: &mut Worker<Relay>,
    origin: &TcpListener,
    addr: SocketAddr,
) -> (StdStream, StdStream) {
    let mut peer = StdStream::connect(addr).unwrap();
    let body = br#"{"prompt":"hi"}"#;
    let req = format!(
        "POST /api/v1/generate-stream HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    peer.write_all(&[req.as_bytes(), body].concat()).unwrap();
    origin.set_nonblocking(true).unwrap();
    let mut upstream = None;
    turn_until(w, "the upstream connect", |_| {
        upstream = origin.accept().ok().map(|(s, _)| s);
        upstream.is_some()
    });
    let upstream = upstream.unwrap();
    upstream.set_nonblocking(false).unwrap();
    (peer, upstream)
}

/// A client pipelining many requests gets one turn, then yields.
#[test]
fn a_pipelining_client_yields_after_its_turn() {
    let origin = TcpListener::bind("127.0.0.1:0").unwrap();
    let (mut w, addr) = relay(&origin, 1 << 20);
    let mut peer = StdStream::connect(addr).unwrap();
    peer.write_all(&b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n".repeat(500))
        .unwrap();
    turn_until(&mut w, "a yield", |w| {
        let cx = w.context();
        cx.conns.iter().any(|(id, _)| cx.is_deferred(id))
    });
    // It was not served in one turn, and it goes on: every answer arrives.
    let mut answers = 0;
    let mut buf = vec![0u8; 1 << 16];
    peer.set_nonblocking(true).unwrap();
    turn_until(&mut w, "500 answers", |_| {
        while let Ok(n) = peer.read(&mut buf) {
            if n == 0 {
                break;
            }
            answers += buf[..n]
                .windows(15)
                .filter(|w| w == b"HTTP/1.1 200 OK")
                .count();
        }
        answers >= 500
    });
}

/// An upstream that always has bytes, to a client that takes them, gets TURN_BUDGET reads, then yields.
#[test]
fn a_fire_hose_upstream_yields_after_its_turn() {
    let origin = TcpListener::bind("127.0.0.1:0").unwrap();
    // A 1 KiB cap: each read takes at most 1 KiB, so a 64 KiB body needs 64 reads.
    let (mut w, addr) = relay(&origin, 1024);
    let (mut peer, mut upstream) = stream_with_upstream(&mut w, &origin, addr);
    let id = only_client(&mut w);
    upstream
        .write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 65536\r\n\r\n",
        )
        .unwrap();
    turn_until(&mut w, "the head", |w| streaming(w, id));
    upstream.write_all(&vec![b'x'; 65536]).unwrap();
    turn_until(&mut w, "a yield", |w| w.context().is_deferred(id));
    // The client drains what it gets, and the stream completes.
    let mut got = 0;
    let mut buf = vec![0u8; 1 << 16];
    peer.set_nonblocking(true).unwrap();
    turn_until(&mut w, "the whole body", |_| {
        while let Ok(n) = peer.read(&mut buf) {
            if n == 0 {
                break;
            }
            got += n;
        }
        got > 65536
    });
}

/// The upstream socket belongs to the client's entry: when the client leaves, the upstream is closed in
/// the same reap, and nothing of the exchange is left in the slab.
#[test]
fn a_departing_client_takes_its_upstream_along() {
    let origin = TcpListener::bind("127.0.0.1:0").unwrap();
    let (mut w, addr) = relay(&origin, 1 << 16);
    let (peer, mut upstream) = stream_with_upstream(&mut w, &origin, addr);
    let mut request = [0u8; 4096];
    upstream.set_nonblocking(true).unwrap();
    turn_until(&mut w, "the request", |_| {
        upstream.read(&mut request).is_ok_and(|n| n > 0)
    });
    upstream.set_nonblocking(false).unwrap();
    upstream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    drop(peer);
    turn_until(&mut w, "the client reaped", |w| {
        w.context().conns.is_empty()
    });
    // The upstream sees the end of file: its socket was closed with the client.
    assert_eq!(upstream.read(&mut request).unwrap(), 0);
    assert_eq!(
        w.handler().pooled(),
        0,
        "a connection abandoned mid-exchange is never pooled"
    );
}

/// Settings that name an `https` origin but carry no TLS configuration (a library caller's mistake) fail
/// closed: the client gets a 502 and nothing is dialled, so the key never crosses the network in clear.
#[test]
fn an_https_origin_is_never_dialled_in_clear_text() {
    let origin = TcpListener::bind("127.0.0.1:0").unwrap();
    origin.set_nonblocking(true).unwrap();
    let (mut w, addr) = relay_to(&origin, 1 << 16, true);
    let mut peer = StdStream::connect(addr).unwrap();
    let body = br#"{"prompt":"hi"}"#;
    let req = format!(
        "POST /api/v1/generate-stream HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    peer.write_all(&[req.as_bytes(), body].concat()).unwrap();
    peer.set_nonblocking(true).unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    turn_until(&mut w, "the 502", |_| {
        if let Ok(n) = peer.read(&mut buf) {
            answer.extend_from_slice(&buf[..n]);
        }
        answer.windows(4).any(|w| w == b"\r\n\r\n")
    });
    assert!(
        answer.starts_with(b"HTTP/1.1 502"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert!(
        origin.accept().is_err(),
        "the https origin was dialled without TLS"
    );
}

/// An event collected for an upstream token before the exchange replaced that socket (in the same batch)
/// is the old socket's: it must not mark the new one. Here the new socket is the one the test connected,
/// and the batch it was registered in is set to the current one, as a replacement during the batch does.
#[test]
fn a_stale_upstream_event_does_not_mark_the_new_socket() {
    let origin = TcpListener::bind("127.0.0.1:0").unwrap();
    let (mut w, addr) = relay(&origin, 1 << 16);
    let (_peer, _upstream) = stream_with_upstream(&mut w, &origin, addr);
    let id = only_client(&mut w);
    let hangup = Ready {
        readable: true,
        writable: false,
        read_closed: true,
        error: false,
    };
    let read_closed = |w: &mut Worker<Relay>| match w.context().conns.get_mut(id) {
        Some(Entry::Client(c)) => match &mut c.state {
            ClientState::Serving(x) => x.upstream().map(|u| u.io.read_closed()),
            _ => None,
        },
        _ => None,
    };
    let set_registered = |w: &mut Worker<Relay>, this_batch: bool| {
        let batch = w.context().batch;
        if let Some(Entry::Client(c)) = w.context().conns.get_mut(id)
            && let ClientState::Serving(x) = &mut c.state
        {
            x.upstream_batch = if this_batch { batch } else { batch - 1 };
        }
    };
    set_registered(&mut w, true);
    let (relay, cx) = w.parts();
    relay.on_ready(cx, id, UPSTREAM, hangup);
    assert_eq!(
        read_closed(&mut w),
        Some(false),
        "a stale hang-up was absorbed"
    );
    // The same event for a socket registered in an earlier batch is its own.
    set_registered(&mut w, false);
    let (relay, cx) = w.parts();
    relay.on_ready(cx, id, UPSTREAM, hangup);
    assert_eq!(read_closed(&mut w), Some(true));
}
