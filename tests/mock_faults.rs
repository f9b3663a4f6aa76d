//! The mock upstream's faults, each shown on a real socket against the mock alone: a status with
//! `Retry-After`, a late head, a late first token, a stream that stalls, resets, breaks its framing or
//! reports the provider's own error after K tokens, an idle connection closed early, a fault for the first
//! N requests of a key only, and the 400 of a malformed spec. The stream faults on every streaming path.
//!
//! Waits are bounded reads: "nothing arrived" is a read that timed out, "it arrived later" a read that
//! returned after the delay was over. Delays are 100 to 300 ms.

mod common;

use common::*;
use serde_json::{Value, json};
use std::io;
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The prompt of every test: five words, so token K is recognisable.
const WORDS: &str = "alpha bravo charlie delta echo";

fn start() -> InProcess {
    InProcess::mock(5, Duration::from_millis(1))
}

/// Every streaming path: (path, body for `prompt`, events before the first token).
fn streaming_paths(prompt: &str) -> Vec<(&'static str, String, usize)> {
    let user = json!([{"role": "user", "content": prompt}]);
    vec![
        (
            "/v1/chat/completions",
            json!({"messages": user, "stream": true}).to_string(),
            0,
        ),
        (
            "/v1/completions",
            json!({"prompt": prompt, "stream": true}).to_string(),
            0,
        ),
        (
            "/v1/responses",
            json!({"input": prompt, "stream": true}).to_string(),
            4,
        ),
        (
            "/v1/messages",
            json!({"max_tokens": 50, "messages": user, "stream": true}).to_string(),
            3,
        ),
        (
            "/v1beta/models/m:streamGenerateContent?alt=sse",
            json!({"contents": [{"parts": [{"text": prompt}]}]}).to_string(),
            0,
        ),
    ]
}

/// Sends `raw` and reads the head of a 200 event stream.
fn open_stream(mock: &InProcess, raw: &[u8], what: &str) -> Conn {
    let mut c = Conn::connect(mock.addr);
    c.send(raw);
    let head = c.expect_head(what);
    assert_stream_head(&head);
    c
}

/// Reads `n` data chunks and returns their payload.
fn read_chunks(c: &mut Conn, n: usize, what: &str) -> String {
    let mut payload = Vec::new();
    for i in 0..n {
        match c.read_chunk() {
            Ok(Chunk::Data(d)) => payload.extend_from_slice(&d),
            other => panic!(
                "{what}: chunk {i} of {n}: {other:?}; so far {:?}",
                lossy(&payload)
            ),
        }
    }
    lossy(&payload)
}

/// Asserts that nothing arrives within `wait`, and that the connection is still open.
fn assert_silent(c: &mut Conn, wait: Duration, what: &str) {
    c.set_read_timeout(wait);
    match c.fill() {
        Err(e) if e.kind() == io::ErrorKind::TimedOut => {}
        Ok(0) => panic!("{what}: the connection was closed (reset: {})", c.reset),
        other => panic!("{what}: {other:?}, {:?}", c.buffered_text()),
    }
    c.set_read_timeout(IO_TIMEOUT);
}

fn chat_stream(prompt: &str) -> String {
    json!({"messages": [{"role": "user", "content": prompt}], "stream": true}).to_string()
}

#[test]
fn a_status_with_retry_after_asked_three_ways() {
    let mock = start();
    // In a header field, on Anthropic's path.
    let body = json!({"max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
    let raw = post_with_fault(
        "/v1/messages",
        &body.to_string(),
        "status=503,retry-after=2",
    );
    let resp = fetch(mock.addr, &raw);
    assert_eq!(resp.status(), 503, "{}", resp.text());
    assert_eq!(resp.head.header("retry-after"), Some("2"));
    assert_eq!(resp.json()["error"]["type"], "api_error");
    // In the query, on Gemini's path.
    let gemini = json!({"contents": [{"parts": [{"text": "hi"}]}]}).to_string();
    let path = format!(
        "/v1beta/models/m:generateContent{}",
        fault_query("status=500")
    );
    let resp = fetch(mock.addr, &post_json(&path, &gemini));
    assert_eq!(resp.status(), 500);
    assert_eq!(resp.head.header("retry-after"), Some("7"));
    assert_eq!(resp.json()["error"]["status"], "INTERNAL");
    // In the prompt, of a streamed chat request: the status replaces the stream.
    let body = chat_stream(&fault_prompt("hi", "status=429,retry-after=1"));
    let resp = fetch(mock.addr, &post_json("/v1/chat/completions", &body));
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.head.header("retry-after"), Some("1"));
    assert_eq!(resp.json()["error"]["code"], "rate_limit_exceeded");
}

#[test]
fn the_head_is_delayed() {
    let mock = start();
    for (what, spec) in [
        ("stream", "head-delay=200ms"),
        ("status", "head-delay=200ms,status=503"),
    ] {
        let body = chat_stream(WORDS);
        let mut c = Conn::connect(mock.addr);
        let sent = Instant::now();
        c.send(&post_with_fault("/v1/chat/completions", &body, spec));
        assert_silent(&mut c, Duration::from_millis(100), what);
        let resp = c.read_response(what);
        assert!(sent.elapsed() >= Duration::from_millis(200), "{what}");
        let expected = if what == "status" { 503 } else { 200 };
        assert_eq!((resp.status(), resp.complete), (expected, true), "{what}");
    }
}

#[test]
fn the_first_token_is_delayed() {
    let mock = start();
    let body = chat_stream(&fault_prompt(WORDS, "first-token-delay=300ms"));
    let mut c = Conn::connect(mock.addr);
    let sent = Instant::now();
    c.send(&post_json("/v1/chat/completions", &body));
    let head = c.expect_head("head");
    assert_stream_head(&head);
    // The head came alone: no event with it, none for a while after it.
    assert!(c.buffered().is_empty(), "{:?}", c.buffered_text());
    assert_silent(&mut c, Duration::from_millis(100), "before the first token");
    let first = read_chunks(&mut c, 1, "first token");
    assert!(sent.elapsed() >= Duration::from_millis(300));
    assert!(first.contains("alpha"), "{first}");
    let rest = c.read_chunked_body().expect("the rest");
    assert!(rest.complete && lossy(&rest.payload).contains("[DONE]"));
}

#[test]
fn a_stream_stalls_after_k_tokens_on_every_path() {
    let mock = start();
    let mut conns = Vec::new();
    for (path, body, opening) in streaming_paths(&fault_prompt(WORDS, "stall-after=2")) {
        let mut c = open_stream(&mock, &post_json(path, &body), path);
        let payload = read_chunks(&mut c, opening + 2, path);
        assert!(
            payload.contains("bravo") && !payload.contains("charlie"),
            "{path}: {payload}"
        );
        conns.push((path, c));
    }
    // One wait for all: bytes that came meanwhile would be in the sockets, and read at once.
    let first = conns[0].0;
    assert_silent(&mut conns[0].1, Duration::from_millis(300), first);
    for (path, c) in &mut conns {
        assert_silent(c, Duration::from_millis(1), path);
    }
    assert_eq!(stat(&mock.mock_stats(), "open_connections"), 5);
    // A stalled stream holds only its connection, which the mock frees when the client leaves.
    drop(conns);
    let deadline = Instant::now() + Duration::from_secs(5);
    while stat(&mock.mock_stats(), "open_connections") > 0 {
        assert!(Instant::now() < deadline, "stalled connections never freed");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_stream_is_reset_after_k_tokens_on_every_path() {
    let mock = start();
    for (path, body, opening) in streaming_paths(WORDS) {
        let raw = post_with_fault(path, &body, "reset-after=2");
        let mut c = open_stream(&mock, &raw, path);
        let payload = read_chunks(&mut c, opening + 2, path);
        assert!(
            payload.contains("bravo") && !payload.contains("charlie"),
            "{path}: {payload}"
        );
        assert_eq!(c.read_chunk().expect(path), Chunk::Eof, "{path}");
        assert!(c.reset, "{path}: the connection ended without a reset");
    }
    // Before the head: not a byte, then the reset.
    let raw = post_with_fault(
        "/v1/chat/completions",
        &chat_stream(WORDS),
        "reset-after=request",
    );
    let mut c = Conn::connect(mock.addr);
    c.send(&raw);
    assert!(matches!(c.read_head(), Ok(None)), "{:?}", c.buffered_text());
    assert!(c.reset);
}

#[test]
fn a_stream_breaks_its_framing_after_k_tokens_on_every_path() {
    let mock = start();
    for (path, body, opening) in streaming_paths(&fault_prompt(WORDS, "bad-chunk-after=1")) {
        let mut c = open_stream(&mock, &post_json(path, &body), path);
        let payload = read_chunks(&mut c, opening + 1, path);
        assert!(
            payload.contains("alpha") && !payload.contains("bravo"),
            "{path}: {payload}"
        );
        let err = c.read_chunk().expect_err(path);
        assert!(err.to_string().contains("\"zz\""), "{path}: {err}");
        // Nothing else is wrong: the connection stays open, waiting for the client to give up.
        assert_silent(&mut c, Duration::from_millis(100), path);
    }
}

#[test]
fn a_stream_reports_the_providers_error_after_k_tokens_then_ends() {
    // Per path: whether the event is named `error`, and where its data says what went wrong.
    let expected = |path: &str| match path {
        "/v1/responses" => (true, "/code", "server_error"),
        "/v1/messages" => (true, "/error/type", "overloaded_error"),
        p if p.contains(":streamGenerateContent") => (false, "/error/status", "UNAVAILABLE"),
        _ => (false, "/error/type", "server_error"),
    };
    let mock = start();
    for (path, body, opening) in streaming_paths(&fault_prompt(WORDS, "error-after=1")) {
        let mut c = open_stream(&mock, &post_json(path, &body), path);
        let stream = c.read_chunked_body().expect(path);
        assert!(stream.complete, "{path}: the stream must end properly");
        assert_eq!(stream.chunks.len(), opening + 2, "{path}");
        assert!(lossy(&stream.payload).contains("alpha"), "{path}");
        let events = sse_events(&stream.payload);
        let last = events.last().expect("events");
        let data = last.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
        let data: Value = serde_json::from_str(data).unwrap();
        let (named, pointer, kind) = expected(path);
        assert_eq!(last.starts_with("event: error\n"), named, "{path}: {last}");
        assert_eq!(
            data.pointer(pointer).and_then(Value::as_str),
            Some(kind),
            "{path}: {last}"
        );
        // The connection is kept alive, as after any answer.
        c.send(&get("/healthz"));
        assert_eq!(c.read_response("after the error").status(), 200, "{path}");
    }
}

#[test]
fn an_idle_connection_is_closed_early() {
    let mock = start();
    let body = json!({"messages": [{"role": "user", "content": WORDS}]}).to_string();
    let mut c = Conn::connect(mock.addr);
    let ask = |c: &mut Conn, spec: &str| {
        c.send(&post_with_fault("/v1/chat/completions", &body, spec));
        assert_eq!(c.read_response(spec).status(), 200);
    };
    ask(&mut c, "close-idle=100ms");
    // A request restarts the wait: the second answer's spec is the one that counts. The mock's wait
    // starts when it has that request, so after `sent`.
    let sent = Instant::now();
    ask(&mut c, "close-idle=300ms");
    assert_silent(
        &mut c,
        Duration::from_millis(150),
        "idle, before close-idle",
    );
    c.wait_closed(Duration::from_secs(5))
        .expect("closed once idle");
    assert!(sent.elapsed() >= Duration::from_millis(300));
    assert!(!c.reset, "an idle connection is closed, not reset");
}

/// What a relay's retry sees: the same request twice (here on two connections), the first failed.
#[test]
fn only_the_first_requests_of_a_key_fail() {
    let mock = start();
    let ask = |key: &str| {
        let spec = format!("status=500,times=2,key={key}");
        let body = chat_stream(&fault_prompt(WORDS, &spec));
        fetch(mock.addr, &post_json("/v1/chat/completions", &body)).status()
    };
    let statuses: Vec<u16> = ["a", "a", "b", "a", "b", "b"]
        .into_iter()
        .map(ask)
        .collect();
    assert_eq!(statuses, [500, 500, 500, 200, 500, 200]);
    assert_eq!(stat(&mock.mock_stats(), "faults"), 4);
}

#[test]
fn a_malformed_spec_is_a_400_that_names_the_problem() {
    let mock = start();
    let raw = post_with_fault("/v1/chat/completions", &chat_stream(WORDS), "stall=3");
    let resp = fetch(mock.addr, &raw);
    assert_eq!(resp.status(), 400);
    let message = resp.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(message.contains("unknown key \"stall\""), "{message}");
    // In the prompt, in Anthropic's error shape.
    let prompt = fault_prompt(WORDS, "stall-after=soon");
    let body = json!({"max_tokens": 5, "messages": [{"role": "user", "content": prompt}]});
    let resp = fetch(mock.addr, &post_json("/v1/messages", &body.to_string()));
    assert_eq!(resp.status(), 400);
    let v = resp.json();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("stall-after"),
        "{v}"
    );
}

/// Refusal is not a fault of the mock: an address nobody listens on refuses.
#[test]
fn a_closed_port_refuses() {
    let err = TcpStream::connect(closed_port_addr()).expect_err("nothing listens there");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
}

/// `tokenpipe mock-upstream --help` says how to ask for a fault.
#[test]
fn the_help_says_how_to_ask_for_a_fault() {
    let out = std::process::Command::new(BIN)
        .args(["mock-upstream", "--help"])
        .output()
        .expect("run tokenpipe mock-upstream --help");
    let help = lossy(&out.stdout);
    assert!(out.status.success(), "{help}");
    for needle in [
        "x-mock-fault: SPEC",
        "mock_fault=SPEC",
        "[fault: SPEC]",
        "stall-after",
    ] {
        assert!(help.contains(needle), "{needle:?} not in {help}");
    }
}
