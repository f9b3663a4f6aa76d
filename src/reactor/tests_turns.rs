//! White-box tests of the worker's scheduling: turns, yields and the client-side authority over the
//! client-upstream link. They drive one `Worker` by hand (no thread, no `run`), taking readiness from the
//! worker's own `Poll`, so the situations that only arise inside one event batch can be set up exactly.
//!
//! Test code only: its parent declares it `#[cfg(test)]`.

use super::*;
use crate::conn::client::{AfterReply, ClientState, Source, StreamFraming};
use crate::mock::script::MockFormat;
use crate::relay::pool::Pool;
use crate::relay::providers::{Origin, Provider};
use std::io::Write;

fn worker(service: Service) -> Worker {
    worker_with_cap(service, 1 << 20)
}

fn worker_with_cap(service: Service, cap: usize) -> Worker {
    let settings = Arc::new(Settings {
        limits: Limits::default(),
        stream_buffer: cap,
        loop_warn: Duration::from_secs(10),
    });
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    Worker::new("test".into(), listener, settings, service).unwrap()
}

fn mock_service() -> Service {
    Service::Mock(MockService {
        format: MockFormat::OpenAi,
        tokens: 10_000,
        interval: Duration::ZERO,
        stats: Arc::default(),
    })
}

/// A relay service whose upstream is `addr` (a listener the test owns).
fn relay_service(addr: std::net::SocketAddr) -> Service {
    Service::Relay(RelayService {
        provider: Provider::OpenAi,
        origin: Origin {
            host: "127.0.0.1".into(),
            port: addr.port(),
            base_path: String::new(),
        },
        addr,
        key: None,
        default_model: "m".into(),
        pool: Pool::new(4),
        idle_timeout: Duration::from_secs(60),
    })
}

/// Starts a relayed generation for client `id` and returns the upstream connection it streams from.
fn start_relay_for(w: &mut Worker, id: ConnId) -> ConnId {
    w.start_relay(
        id,
        br#"{"prompt":"hi"}"#,
        StreamFraming::Chunked(AfterReply::KeepAlive),
    );
    match w.conns.get(id) {
        Some(Conn::Client(c)) => match c.state {
            ClientState::Streaming {
                source: Source::Upstream(up),
                ..
            } => up,
            _ => panic!("not streaming from an upstream"),
        },
        _ => panic!("client gone"),
    }
}

/// A client connection in the worker's slab, and the test's end of it.
fn client(w: &mut Worker) -> (ConnId, std::net::TcpStream) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let peer = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (s, _) = l.accept().unwrap();
    s.set_nonblocking(true).unwrap();
    let reader = RequestReader::new(w.settings.limits.clone());
    let id = w
        .conns
        .insert_with(|_| Conn::Client(Box::new(ClientConn::new(TcpStream::from_std(s), reader))));
    w.register(id).unwrap();
    (id, peer)
}

/// Polls the worker's own `Poll` until `id` is readable and writable (bounded): synchronized on events.
fn wait_ready(w: &mut Worker, id: ConnId) {
    let mut events = Events::with_capacity(16);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(Conn::Client(c)) = w.conns.get(id)
            && c.ready.readable
            && c.ready.writable
        {
            return;
        }
        assert!(Instant::now() < deadline, "no readiness within 5 s");
        w.poll
            .poll(&mut events, Some(Duration::from_millis(500)))
            .unwrap();
        for e in events.iter() {
            if let Some(Conn::Client(c)) = w.conns.get_mut(ConnId::from_token(e.token())) {
                c.ready.absorb(e);
            }
        }
    }
}

/// `drive_client`: a client pipelining many requests gets one turn, then yields.
#[test]
fn a_pipelining_client_yields_after_its_turn() {
    let mut w = worker(mock_service());
    let (id, mut peer) = client(&mut w);
    peer.write_all(&b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n".repeat(500))
        .unwrap();
    wait_ready(&mut w, id);
    w.drive_client(id);
    assert_eq!(
        w.deferred,
        vec![id],
        "500 pipelined requests answered in one turn"
    );
}

/// `mock_pump`: a zero-interval stream to a fast reader sends TURN_BUDGET events, then yields.
#[test]
fn a_fire_hose_mock_stream_yields_after_its_turn() {
    let mut w = worker(mock_service());
    let (id, _peer) = client(&mut w);
    w.start_mock(
        id,
        br#"{"messages":[{"role":"user","content":"go"}]}"#,
        StreamFraming::Chunked(AfterReply::KeepAlive),
    );
    if let Some(Conn::Client(c)) = w.conns.get_mut(id) {
        c.ready.writable = true;
        c.out = Default::default(); // the head is not the point here
    }
    w.mock_pump(id);
    assert_eq!(
        w.deferred,
        vec![id],
        "the stream did not yield after {TURN_BUDGET} events"
    );
}

/// The client's side of the link is the authority; an upstream whose client streams from something else is
/// closed the moment it is pumped, before it writes anything.
#[test]
fn an_upstream_its_client_no_longer_streams_from_is_closed() {
    let origin = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = origin.local_addr().unwrap();
    let mut w = worker(relay_service(addr));
    let (id, _peer) = client(&mut w);
    let up = start_relay_for(&mut w, id);
    if let Some(Conn::Client(c)) = w.conns.get_mut(id) {
        c.state = ClientState::AwaitingRequest;
    }
    w.pump(up);
    assert!(
        w.conns.get(up).is_none(),
        "pumped an upstream for a client that no longer streams from it"
    );
}

/// Polls the worker's `Poll` once (bounded) and folds every event into its connection's readiness.
fn absorb_events(w: &mut Worker) {
    let mut events = Events::with_capacity(16);
    w.poll
        .poll(&mut events, Some(Duration::from_millis(500)))
        .unwrap();
    for e in events.iter() {
        match w.conns.get_mut(ConnId::from_token(e.token())) {
            Some(Conn::Client(c)) => c.ready.absorb(e),
            Some(Conn::Upstream(u)) => u.ready.absorb(e),
            _ => {}
        }
    }
}

fn until(w: &mut Worker, what: &str, mut done: impl FnMut(&mut Worker) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done(w) {
        assert!(Instant::now() < deadline, "{what}: not within 5 s");
        absorb_events(w);
    }
}

/// `pump`: an upstream that always has bytes (and a client that takes them) gets TURN_BUDGET
/// reads, then yields.
#[test]
fn a_fire_hose_upstream_yields_after_its_turn() {
    use crate::conn::upstream::UpstreamState;
    let origin = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = origin.local_addr().unwrap();
    // A 1 KiB cap: each read takes at most 1 KiB, so a 64 KiB body needs 64 reads.
    let mut w = worker_with_cap(relay_service(addr), 1024);
    let (id, _peer) = client(&mut w);
    let up = start_relay_for(&mut w, id);
    let (mut origin_side, _) = origin.accept().unwrap();
    origin_side
        .write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 65536\r\n\r\n",
        )
        .unwrap();
    until(&mut w, "response head parsed", |w| {
        w.pump(up);
        w.deferred.clear();
        matches!(w.conns.get(up), Some(Conn::Upstream(u)) if matches!(u.state, UpstreamState::Body { .. }))
    });
    origin_side.write_all(&vec![b'x'; 65536]).unwrap();
    until(
        &mut w,
        "body readable",
        |w| matches!(w.conns.get(up), Some(Conn::Upstream(u)) if u.ready.readable),
    );
    if let Some(Conn::Client(c)) = w.conns.get_mut(id) {
        c.ready.writable = true;
    }
    w.pump(up);
    assert_eq!(
        w.deferred,
        vec![up],
        "a 64-read body was relayed in one turn"
    );
}
