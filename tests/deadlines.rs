//! Every wait has a deadline: slow and silent clients, silent and stalled upstreams. Each test sets the
//! deadline it exercises to a fraction of a second and synchronises on what the sockets show (a status,
//! an end of file, an event), never on a sleep; the durations it asserts are bounds with wide margins.

mod common;

use common::*;
use std::io::{Read, Write};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tokenpipe::config::Config;
use tokenpipe::relay::providers::{Provider, ProviderKey};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A relay in front of `upstream` with `configure` applied.
fn relay(upstream: &str, configure: impl FnOnce(&mut Config)) -> InProcess {
    InProcess::relay(upstream, configure)
}

/// An upstream that answers with `head` then sends `events` one by one, `gap` apart, each as its own chunk;
/// then, if `end`, the last chunk; otherwise it holds the connection open (silent) until the relay closes
/// it, and reports that on `closed`.
fn scripted(
    head: &'static str,
    events: Script,
    end: bool,
    closed: mpsc::Sender<()>,
) -> FakeUpstream {
    let closed = std::sync::Mutex::new(closed);
    FakeUpstream::start(4, move |_, mut conn| {
        let Ok(Some(_)) = conn.read_request() else {
            return;
        };
        if conn.stream.write_all(head.as_bytes()).is_err() {
            return;
        }
        for (gap, event) in &events {
            std::thread::sleep(*gap);
            let chunk = [format!("{:x}\r\n", event.len()).as_bytes(), event, b"\r\n"].concat();
            if conn.stream.write_all(&chunk).is_err() {
                return;
            }
        }
        if end {
            let _ = conn.stream.write_all(b"0\r\n\r\n");
            let _ = conn.read_request();
            return;
        }
        // Silent: wait for the relay to give up on us (bounded by the read timeout of the fake).
        conn.set_read_timeout(Duration::from_secs(10));
        let mut buf = [0u8; 64];
        if let Ok(0) | Err(_) = conn.stream.read(&mut buf) {
            let _ = closed.lock().unwrap().send(());
        }
    })
}

/// What a scripted upstream sends: each event after its pause.
type Script = Vec<(Duration, Vec<u8>)>;

fn openai_event(text: &str) -> Vec<u8> {
    format!("data: {{\"choices\":[{{\"delta\":{{\"content\":\"{text}\"}}}}]}}\n\n").into_bytes()
}

/// A client trickling its request head one byte at a time gets 408 at the head deadline, whatever it still
/// sends, and the connection closes; meanwhile another client is served as usual.
#[test]
fn slowloris_is_cut_at_the_head_deadline() {
    let mock = spawn_mock(&["--tokens", "3", "--interval-ms", "1"]);
    let relay = relay(&mock.url(), |c| c.common.client.head = ms(400));
    let mut slow = Conn::connect(relay.addr);
    let started = Instant::now();
    let head = b"POST /api/v1/generate-stream HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    let (done_tx, done_rx) = mpsc::channel();
    let mut writer = slow.stream.try_clone().unwrap();
    let trickler = std::thread::spawn(move || {
        for b in head
            .iter()
            .chain(b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter())
        {
            if done_rx.try_recv().is_ok() || writer.write_all(&[*b]).is_err() {
                return;
            }
            std::thread::sleep(ms(30));
        }
    });
    // Another client, served while the slow one trickles.
    let payload = relay_stream(relay.addr, &small_prompt());
    assert!(!payload.is_empty());
    let resp = slow.read_response("the slow client");
    let _ = done_tx.send(());
    let elapsed = started.elapsed();
    assert_eq!(resp.status(), 408, "{:?}", resp.text());
    assert_eq!(resp.json()["error"]["code"], "request_timeout");
    assert!(resp.head.says_close());
    assert!(
        elapsed >= ms(400) && elapsed < ms(3000),
        "408 after {elapsed:?} with a 400 ms head deadline"
    );
    slow.wait_closed(Duration::from_secs(5)).unwrap();
    let _ = trickler.join();
    assert_eq!(
        relay
            .counts_when(|c| c.client_timeouts >= 1)
            .client_timeouts,
        1
    );
}

/// A client that sends nothing at all gets the same deadline for its first request; an idle keep-alive
/// connection is closed at the keep-alive deadline, silently.
#[test]
fn silent_and_idle_clients_are_closed() {
    let mock = spawn_mock(&["--tokens", "2", "--interval-ms", "1"]);
    let relay = relay(&mock.url(), |c| {
        c.common.client.head = ms(300);
        c.common.client.keepalive = ms(300);
    });
    let mut silent = Conn::connect(relay.addr);
    let resp = silent.read_response("a client that sent nothing");
    assert_eq!(resp.status(), 408);
    let mut idle = Conn::connect(relay.addr);
    // The keep-alive deadline starts when the answer is out, which is after this instant: so the close
    // can come no sooner than 300 ms from here (from the client's read of the answer, it could).
    let started = Instant::now();
    idle.send(&get("/healthz"));
    assert_eq!(idle.read_response("healthz").status(), 200);
    idle.wait_closed(Duration::from_secs(5)).unwrap();
    assert!(started.elapsed() >= ms(300), "{:?}", started.elapsed());
}

/// A head that arrives in time, then a body that trickles: 408 at the body deadline.
#[test]
fn a_trickled_body_is_cut_at_the_body_deadline() {
    let mock = spawn_mock(&["--tokens", "2", "--interval-ms", "1"]);
    let relay = relay(&mock.url(), |c| c.common.client.body = ms(300));
    let mut c = Conn::connect(relay.addr);
    c.send(b"POST /api/v1/generate-stream HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"prompt\"");
    let resp = c.read_response("a body that never ends");
    assert_eq!(resp.status(), 408);
    assert!(resp.text().contains("request body"), "{}", resp.text());
}

/// A client that never reads its stream is dropped at the write-progress deadline, its upstream connection
/// is closed with it, and the relay holds no more than the stream cap for it meanwhile.
#[test]
fn a_client_that_never_reads_is_dropped_with_its_upstream() {
    let (closed_tx, closed_rx) = mpsc::channel();
    // An upstream with far more to say than the client's socket buffers and the stream cap hold.
    let closed = std::sync::Mutex::new(closed_tx);
    let fake = FakeUpstream::start(2, move |_, mut conn| {
        let Ok(Some(_)) = conn.read_request() else {
            return;
        };
        if conn.stream.write_all(SSE_CHUNKED_HEAD.as_bytes()).is_err() {
            return;
        }
        let event = openai_event(&"x".repeat(1000));
        let chunk = [format!("{:x}\r\n", event.len()).as_bytes(), &event, b"\r\n"].concat();
        // Bounded: 64 MiB at most; the relay stops reading long before, and closes us at its deadline.
        for sent in 0..60_000 {
            if conn.stream.write_all(&chunk).is_err() {
                let _ = closed.lock().unwrap().send(sent * chunk.len());
                return;
            }
        }
    });
    let relay = relay(&fake.url(), |c| {
        c.common.client.write = ms(500);
        c.common.stream_buffer = 64 * 1024;
    });
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&relay.addr.into()).unwrap();
    let mut client: std::net::TcpStream = sock.into();
    client.write_all(&stream_request(&small_prompt())).unwrap();
    let started = Instant::now();
    let upstream_sent = closed_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the upstream connection was closed when the client was dropped");
    let elapsed = started.elapsed();
    assert!(elapsed >= ms(500), "dropped after {elapsed:?}");
    // While the client did not read, the relay stopped reading the upstream once the stream cap was
    // full: what the upstream got rid of is what the sockets' buffers hold, not the 60 MiB it offered.
    assert!(
        upstream_sent < 24 << 20,
        "the upstream wrote {upstream_sent} bytes: the relay kept reading for a client that did not"
    );
    let counts = relay.counts_when(|c| c.client_timeouts >= 1);
    assert_eq!(counts.client_timeouts, 1, "{counts:?}");
    assert_eq!(counts.completed, 0);
    drop(client);
}

/// An upstream that thinks before its first token: the client gets keep-alive comments meanwhile, then the
/// real events, and without the comments the stream is byte for byte what the upstream sent.
#[test]
fn a_silent_upstream_gets_keepalive_comments_between_events() {
    let (tx, _rx) = mpsc::channel();
    let events = vec![
        (ms(650), openai_event("Hello")),
        (ms(0), openai_event(" world")),
        (ms(0), b"data: [DONE]\n\n".to_vec()),
    ];
    let fake = scripted(SSE_CHUNKED_HEAD, events.clone(), true, tx);
    let relay = relay(&fake.url(), |c| {
        c.timeouts.sse_keepalive = Some(ms(200));
    });
    let mut c = Conn::connect(relay.addr);
    c.send(&stream_request(&small_prompt()));
    let head = c.expect_head("the stream head");
    assert_stream_head(&head);
    let body = c.read_chunked_body().expect("body");
    assert!(body.complete);
    let text = String::from_utf8(body.payload).unwrap();
    let comments = text.matches(": keep-alive\n\n").count();
    assert!(comments >= 2, "{comments} keep-alive comments in {text:?}");
    let upstream: Vec<u8> = events.iter().flat_map(|(_, e)| e.clone()).collect();
    assert_eq!(
        text.replace(": keep-alive\n\n", ""),
        String::from_utf8(upstream).unwrap(),
        "the relayed events changed"
    );
    assert!(text.starts_with(": keep-alive\n\n"), "{text:?}");
    assert!(relay.counts().keepalives >= 2);
}

/// A stream that stalls mid-way: at the idle deadline the client gets an error event in the shape of the
/// API it called, and the connection closes without the last chunk. The upstream is closed too.
#[test]
fn a_stalled_stream_fails_in_the_apis_own_shape() {
    // (provider, path, body, upstream events, what the error event must contain)
    let anthropic_events = vec![
        (
            ms(0),
            b"event: message_start\ndata: {\"type\":\"message_start\"}\n\n".to_vec(),
        ),
        (
            ms(0),
            b"event: ping\ndata: {\"type\": \"ping\"}\n\n".to_vec(),
        ),
    ];
    let cases: Vec<(Provider, &str, &str, Script, &str)> = vec![
        (
            Provider::OpenAi,
            "/api/v1/generate-stream",
            "{\"prompt\":\"hi\"}",
            vec![(ms(0), openai_event("a"))],
            "event: error\ndata: {\"error\":{\"code\":\"upstream_timeout\"",
        ),
        (
            Provider::OpenAi,
            "/v1/chat/completions",
            "{\"model\":\"m\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
            vec![(ms(0), openai_event("a"))],
            "data: {\"error\":{\"code\":\"upstream_timeout\"",
        ),
        (
            Provider::Anthropic,
            "/v1/messages",
            "{\"model\":\"m\",\"max_tokens\":5,\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
            anthropic_events,
            "event: error\ndata: {\"error\":{\"message\":",
        ),
        (
            Provider::Gemini,
            "/v1beta/models/m:streamGenerateContent?alt=sse",
            "{\"contents\":[{\"parts\":[{\"text\":\"hi\"}]}]}",
            vec![(ms(0), b"data: {\"candidates\":[]}\r\n\r\n".to_vec())],
            "data: {\"error\":{\"code\":504",
        ),
    ];
    for (provider, path, body, events, expected) in cases {
        let (tx, closed) = mpsc::channel();
        let fake = scripted(SSE_CHUNKED_HEAD, events.clone(), false, tx);
        let relay = relay(&fake.url(), |c| {
            let u = c.first_upstream().unwrap();
            u.provider = provider;
            u.key = Some(ProviderKey::new("k").unwrap());
            c.timeouts.idle = ms(300);
        });
        let mut c = Conn::connect(relay.addr);
        c.send(&post_json(path, body));
        let head = c.expect_head(path);
        assert_eq!(head.status(), 200, "{path}");
        let started = Instant::now();
        let got = c.read_chunked_body().expect("body");
        assert!(
            !got.complete,
            "{path}: a stalled stream passed off as complete"
        );
        assert!(
            started.elapsed() >= ms(250),
            "{path}: {:?}",
            started.elapsed()
        );
        let text = String::from_utf8(got.payload).unwrap();
        let upstream: Vec<u8> = events.iter().flat_map(|(_, e)| e.clone()).collect();
        let upstream = String::from_utf8(upstream).unwrap();
        assert!(text.starts_with(&upstream), "{path}: {text:?}");
        let error = &text[upstream.len()..];
        assert!(
            error.replace(' ', "").contains(&expected.replace(' ', "")),
            "{path}: error event {error:?} lacks {expected:?}"
        );
        assert!(error.ends_with("\n\n"), "{path}: {error:?}");
        closed
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_else(|_| panic!("{path}: the stalled upstream was not closed"));
        assert_eq!(relay.counts_when(|c| c.timeouts >= 1).timeouts, 1, "{path}");
    }
}

/// Comments and pings keep a stream from idling out, but they are not its first token: an upstream that
/// only pings fails at the first-token deadline, with the error event after its pings.
#[test]
fn pings_are_activity_but_not_the_first_token() {
    let pings: Script = (0..20).map(|_| (ms(50), b": ping\n\n".to_vec())).collect();
    let (tx, _closed) = mpsc::channel();
    let fake = scripted(SSE_CHUNKED_HEAD, pings, false, tx);
    let relay = relay(&fake.url(), |c| {
        c.timeouts.idle = ms(200);
        c.timeouts.first_token = ms(600);
        c.timeouts.sse_keepalive = None;
    });
    let mut c = Conn::connect(relay.addr);
    c.send(&stream_request(&small_prompt()));
    c.expect_head("head");
    let started = Instant::now();
    let got = c.read_chunked_body().expect("body");
    let elapsed = started.elapsed();
    let text = String::from_utf8(got.payload).unwrap();
    assert!(!got.complete);
    assert!(text.contains("first token"), "{text:?}");
    assert!(
        elapsed >= ms(550),
        "failed after {elapsed:?}: the 200 ms idle deadline fired despite the pings"
    );
    assert!(text.matches(": ping\n\n").count() >= 5, "{text:?}");
}

/// An upstream that takes the request and never answers: 504 at the head deadline, in JSON.
#[test]
fn a_silent_upstream_is_a_504() {
    let fake = FakeUpstream::start(2, |_, mut conn| {
        let _ = conn.read_request();
        conn.set_read_timeout(Duration::from_secs(5));
        let _ = conn.read_request();
    });
    let relay = relay(&fake.url(), |c| c.timeouts.head = ms(300));
    let resp = fetch(relay.addr, &stream_request(&small_prompt()));
    assert_eq!(resp.status(), 504, "{:?}", resp.text());
    assert_eq!(resp.json()["error"]["code"], "upstream_timeout");
    assert!(resp.text().contains("response head"), "{}", resp.text());
}

/// An https upstream that never answers the ClientHello: 504 at the TLS handshake deadline.
#[test]
fn a_stuck_tls_handshake_is_a_504() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let holder = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
        }
    });
    let relay = relay(&format!("https://localhost:{}", addr.port()), |c| {
        c.timeouts.handshake = ms(300);
        // A stuck handshake is worth a retry in general (see tests/resilience.rs); not here.
        c.retry.max = 0;
    });
    let resp = fetch(relay.addr, &stream_request(&small_prompt()));
    assert_eq!(resp.status(), 504, "{:?}", resp.text());
    assert!(resp.text().contains("TLS handshake"), "{}", resp.text());
    drop(relay);
    let _ = holder.join();
}

/// The optional total deadline cuts a stream that runs too long; it is off by default.
#[test]
fn the_total_deadline_cuts_a_long_stream() {
    let mock = spawn_mock(&["--tokens", "50", "--interval-ms", "20"]);
    let relay = relay(&mock.url(), |c| c.timeouts.total = Some(ms(300)));
    let long = prompt_body("a long answer", None, None);
    let mut c = Conn::connect(relay.addr);
    c.send(&stream_request(&long));
    c.expect_head("head");
    let got = c.read_chunked_body().unwrap();
    assert!(!got.complete);
    assert!(String::from_utf8_lossy(&got.payload).contains("whole stream"));
    // 50 tokens 20 ms apart take about a second: with the default (no limit) the stream completes.
    let relay = InProcess::relay(&mock.url(), |_| {});
    let mut c = Conn::connect(relay.addr);
    c.send(&stream_request(&long));
    c.expect_head("head");
    assert!(
        c.read_chunked_body().unwrap().complete,
        "no limit by default"
    );
}

/// The same non-reading client against the relay binary: its memory stays flat while the client holds
/// the stream (the stream cap bounds what is queued for it), and at the write deadline the client is
/// dropped and the upstream connection closed.
#[test]
fn the_relays_memory_stays_flat_under_a_client_that_never_reads() {
    let (closed_tx, closed_rx) = mpsc::channel();
    let closed = std::sync::Mutex::new(closed_tx);
    let fake = FakeUpstream::start(2, move |_, mut conn| {
        let Ok(Some(_)) = conn.read_request() else {
            return;
        };
        if conn.stream.write_all(SSE_CHUNKED_HEAD.as_bytes()).is_err() {
            return;
        }
        let event = openai_event(&"y".repeat(1000));
        let chunk = [format!("{:x}\r\n", event.len()).as_bytes(), &event, b"\r\n"].concat();
        for _ in 0..60_000 {
            if conn.stream.write_all(&chunk).is_err() {
                let _ = closed.lock().unwrap().send(());
                return;
            }
        }
    });
    let mut relay = spawn_relay(
        &fake.url(),
        "openai",
        &["--model", MODEL, "--client-write-timeout", "3s"],
    );
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&relay.addr.into()).unwrap();
    let mut client: std::net::TcpStream = sock.into();
    client.write_all(&stream_request(&small_prompt())).unwrap();
    // Once the sockets' buffers and the stream cap are full, nothing more moves: sample then, and later.
    std::thread::sleep(ms(700));
    let early = vm_rss_kib(relay.pid());
    std::thread::sleep(ms(1500));
    let late = vm_rss_kib(relay.pid());
    assert!(
        late <= early + 1024,
        "the relay grew from {early} KiB to {late} KiB while its client did not read"
    );
    closed_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the upstream connection was closed at the write deadline");
    relay.assert_alive();
    drop(client);
}

/// A client that stops reading for a while pauses its stream (backpressure: the relay stops reading the
/// upstream once the client's queue is full). That pause is the relay's, not a silence of the upstream:
/// the idle deadline must not fail the stream for it (the client's write deadline is what judges it).
#[test]
fn backpressure_is_not_upstream_silence() {
    let payload: Vec<u8> = (0..4000)
        .flat_map(|i| openai_event(&format!("{i:04}{}", "z".repeat(1000))))
        .collect();
    let wire = sse_chunked_response(&payload, 4096);
    let fake = FakeUpstream::start(2, move |_, mut conn| {
        let Ok(Some(_)) = conn.read_request() else {
            return;
        };
        let _ = conn.stream.write_all(&wire);
        let _ = conn.read_request();
    });
    let relay = relay(&fake.url(), |c| {
        c.timeouts.idle = ms(300);
        c.common.stream_buffer = 8 * 1024;
    });
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&relay.addr.into()).unwrap();
    let mut client: std::net::TcpStream = sock.into();
    client.write_all(&stream_request(&small_prompt())).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // Read nothing for a second, more than three idle deadlines: the relay's queue for us fills (4 MiB
    // is far more than the sockets hold) and it stops reading the upstream meanwhile.
    std::thread::sleep(Duration::from_secs(1));
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    while let Ok(n) = client.read(&mut buf) {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        if let Parsed::Complete { .. } = parse_response(&got) {
            break;
        }
    }
    match parse_response(&got) {
        Parsed::Complete {
            status,
            payload: relayed,
            ..
        } => {
            assert_eq!(status, 200);
            assert_eq!(relayed.len(), payload.len());
        }
        other => panic!(
            "the paused stream was failed after {} bytes: {other:?}",
            got.len()
        ),
    }
    assert_eq!(relay.counts().timeouts, 0);
}
