//! Graceful drain: in process through `Running::drain`, and in the binary through SIGTERM and SIGINT.
//!
//! Every wait is on an event (a byte, an end of file, a refused connect, a process exit), bounded. The
//! streams are paced by the mock (`--interval-ms`) so that they are still running when the drain starts:
//! each test waits for a stream's first event before it starts the drain.

mod common;

use common::*;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use tokenpipe::config::DrainPlan;

/// How many tokens each paced stream has, and the pace (50 ms: 20 tokens take about a second).
const TOKENS: u64 = 20;

/// A stream started on a fresh connection and seen running: its head and first chunk have arrived.
struct Running {
    conn: Conn,
    payload: Vec<u8>,
}

fn start_stream(addr: SocketAddr, prompt: &str) -> Running {
    let mut conn = Conn::connect(addr);
    conn.send(&stream_request(&prompt_body(prompt, None, None)));
    start_on(conn)
}

fn start_on(mut conn: Conn) -> Running {
    let head = conn.expect_head("stream head");
    start_on_with_head(conn, head)
}

fn start_on_with_head(mut conn: Conn, head: Head) -> Running {
    assert_stream_head(&head);
    let payload = match conn.read_chunk().expect("first chunk") {
        Chunk::Data(d) => d,
        other => panic!("no first event: {other:?}"),
    };
    Running { conn, payload }
}

impl Running {
    /// Reads the rest of the stream on a thread of its own, as it arrives: (everything relayed, whether
    /// the last chunk came, when its last chunk arrived). The instant orders the stream's end against
    /// events the test sees meanwhile, such as the listener closing.
    fn read_on(self) -> std::thread::JoinHandle<(Vec<u8>, bool, Instant)> {
        std::thread::spawn(move || {
            let (payload, complete) = self.finish();
            (payload, complete, Instant::now())
        })
    }

    /// Reads the rest of the stream: (everything relayed, whether the last chunk came).
    fn finish(mut self) -> (Vec<u8>, bool) {
        let rest = self.conn.read_chunked_body().expect("read the stream");
        self.payload.extend_from_slice(&rest.payload);
        (self.payload, rest.complete)
    }
}

fn assert_intact(payload: &[u8], complete: bool, tokens: u64, what: &str) {
    assert!(complete, "{what}: no last chunk; {:?}", lossy(payload));
    assert_eq!(token_texts(payload).len() as u64, tokens, "{what}");
    assert_eq!(
        sse_data(payload).last().map(String::as_str),
        Some("[DONE]"),
        "{what}"
    );
}

/// Connecting to `addr` is refused.
fn refused(addr: SocketAddr) -> bool {
    matches!(TcpStream::connect(addr), Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused)
}

/// Waits until connecting to `addr` is refused (checking every 10 ms, at most `within`).
fn wait_refused(addr: SocketAddr, within: Duration) {
    let deadline = Instant::now() + within;
    while !refused(addr) {
        assert!(
            Instant::now() < deadline,
            "{addr} still accepts connections after {within:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn plan(grace_ms: u64, timeout_ms: u64) -> DrainPlan {
    DrainPlan {
        grace: Duration::from_millis(grace_ms),
        timeout: Duration::from_millis(timeout_ms),
    }
}

/// With no grace: the listener closes at once, an idle kept-alive connection is closed, three streams in
/// flight finish intact, a request pipelined behind one of them is answered (`/readyz`: 503, and the
/// connection closes after it), and `wait` reports the drain.
#[test]
fn a_drain_lets_streams_finish_and_refuses_new_connections() {
    let mock = spawn_mock(&["--tokens", &TOKENS.to_string(), "--interval-ms", "50"]);
    let relay = InProcess::relay(&mock.url(), |_| {});
    let mut idle = Conn::connect(relay.addr);
    idle.send(&get("/healthz"));
    assert_eq!(idle.read_response("healthz").status(), 200);
    let mut first = Conn::connect(relay.addr);
    let mut pipelined = stream_request(&prompt_body("first", None, None));
    pipelined.extend_from_slice(&get("/readyz"));
    first.send(&pipelined);
    let mut streams = vec![start_on(first)];
    streams.push(start_stream(relay.addr, "second"));
    streams.push(start_stream(relay.addr, "third"));

    relay.drain(plan(0, 20_000));
    // The idle connection's end is the sign that the worker drains: its listener is closed by then.
    idle.wait_closed(Duration::from_secs(5))
        .expect("an idle kept-alive connection is closed");
    assert!(refused(relay.addr), "a new connection was not refused");

    let mut conns = Vec::new();
    for (i, s) in streams.into_iter().enumerate() {
        let mut s = s;
        let rest = s.conn.read_chunked_body().expect("read the stream");
        s.payload.extend_from_slice(&rest.payload);
        assert_intact(&s.payload, rest.complete, TOKENS, &format!("stream {i}"));
        conns.push(s.conn);
    }
    let readyz = conns[0].read_response("the pipelined /readyz");
    assert_eq!(readyz.status(), 503);
    assert_eq!(readyz.json()["status"], "draining");
    assert!(readyz.head.says_close(), "{:?}", readyz.head);
    conns[0]
        .wait_closed(Duration::from_secs(5))
        .expect("closed after its last answer");
    drop(conns);

    let drained = relay.wait(Duration::from_secs(10)).expect("drained");
    assert_eq!(drained.in_flight, 3, "{drained:?}");
    assert_eq!((drained.completed, drained.cut), (3, 0), "{drained:?}");
}

/// With a grace: `/readyz` says 200 before the drain and 503 during the grace, on fresh connections (as a
/// load balancer's probe asks), and a stream asked for during the grace is served, with `Connection:
/// close`; then the listener closes while both streams still run, and they finish.
#[test]
fn readyz_is_503_during_the_grace_then_the_listener_closes() {
    let tokens = 60; // three seconds: both streams outlast the grace
    let mock = spawn_mock(&["--tokens", &tokens.to_string(), "--interval-ms", "50"]);
    let relay = InProcess::relay(&mock.url(), |_| {});
    let ready = fetch(relay.addr, &get("/readyz"));
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.json()["status"], "ready");
    let wrong = fetch(relay.addr, &post_json("/readyz", "{}"));
    assert_eq!(wrong.status(), 405);
    assert_eq!(wrong.head.header("allow"), Some("GET, HEAD"));
    let in_flight = start_stream(relay.addr, "in flight");

    relay.drain(plan(1_000, 20_000));
    let probe = fetch(relay.addr, &get("/readyz"));
    assert_eq!(probe.status(), 503);
    assert_eq!(probe.json()["status"], "draining");
    assert!(probe.head.says_close());
    let mut late = Conn::connect(relay.addr);
    late.send(&stream_request(&prompt_body(
        "during the grace",
        None,
        None,
    )));
    let head = late.expect_head("a stream asked for during the grace");
    assert!(head.says_close(), "{head:?}");
    let late = start_on_with_head(late, head);
    let readers =
        [("in flight", in_flight), ("of the grace", late)].map(|(what, s)| (what, s.read_on()));
    wait_refused(relay.addr, Duration::from_secs(10));
    let refused_at = Instant::now();
    for (what, reader) in readers {
        let (payload, complete, last) = reader.join().expect("reader");
        assert_intact(&payload, complete, tokens, what);
        assert!(
            last > refused_at,
            "the stream {what} ended before the listener closed"
        );
    }
    let drained = relay.wait(Duration::from_secs(10)).expect("drained");
    assert_eq!((drained.completed, drained.cut), (2, 0), "{drained:?}");
}

/// Streams longer than the drain's timeout are cut at the timeout: their clients see the connection end
/// without the last chunk (a failed transfer), and `wait` returns within the timeout and a small margin.
#[test]
fn the_timeout_cuts_streams_that_run_longer() {
    let mock = spawn_mock(&["--tokens", "400", "--interval-ms", "50"]);
    let relay = InProcess::relay(&mock.url(), |_| {});
    let streams: Vec<Running> = (0..3)
        .map(|i| start_stream(relay.addr, &format!("long {i}")))
        .collect();
    let t0 = Instant::now();
    relay.drain(plan(0, 1_000));
    for (i, s) in streams.into_iter().enumerate() {
        let (payload, complete) = s.finish();
        assert!(
            !complete,
            "stream {i} got a last chunk: {:?}",
            lossy(&payload)
        );
        assert!(
            token_texts(&payload).len() < 400,
            "stream {i} ran to its end"
        );
    }
    let drained = relay.wait(Duration::from_secs(10)).expect("drained");
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(3_000),
        "took {took:?}"
    );
    assert_eq!((drained.in_flight, drained.cut), (3, 3), "{drained:?}");
}

/// The binary: SIGTERM while three streams run; they finish intact, connecting is refused meanwhile, and
/// the process exits with status 0.
#[test]
fn sigterm_drains_and_exits_zero() {
    let mut relay = Proc::spawn(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "2",
        "--mock-tokens",
        &TOKENS.to_string(),
        "--mock-interval-ms",
        "50",
    ]);
    let streams: Vec<Running> = (0..3)
        .map(|i| start_stream(relay.addr, &format!("signal {i}")))
        .collect();
    let readers: Vec<_> = streams.into_iter().map(Running::read_on).collect();
    relay.signal("TERM");
    // Both workers' listeners closed (with SO_REUSEPORT, one open listener would still accept), while
    // the streams still ran.
    wait_refused(relay.addr, Duration::from_secs(5));
    let refused_at = Instant::now();
    for (i, reader) in readers.into_iter().enumerate() {
        let (payload, complete, last) = reader.join().expect("reader");
        assert_intact(&payload, complete, TOKENS, &format!("stream {i}"));
        assert!(
            last > refused_at,
            "stream {i} ended before the listeners closed"
        );
    }
    let status = relay
        .wait_exit(Duration::from_secs(10))
        .expect("the process exits once drained");
    assert_eq!(status.code(), Some(0), "{status}");
}

/// The binary: a second signal does not wait for the drain (a stream of a minute is in flight, and the
/// timeout is a minute too): the process exits at once, with 128 + the signal's number.
#[test]
fn a_second_signal_exits_at_once() {
    let mut relay = Proc::spawn(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "1",
        "--mock-tokens",
        "1200",
        "--mock-interval-ms",
        "50",
        "--drain-timeout",
        "60s",
    ]);
    let stream = start_stream(relay.addr, "a long one");
    relay.signal("TERM");
    // The first signal was handled once the listener is closed: the second cannot merge with it.
    wait_refused(relay.addr, Duration::from_secs(5));
    relay.assert_alive();
    relay.signal("INT");
    let status = relay
        .wait_exit(Duration::from_secs(5))
        .expect("a second signal exits at once");
    assert_eq!(status.code(), Some(128 + 2), "{status}");
    let (_, complete) = stream.finish();
    assert!(!complete, "the stream cannot have finished");
}
