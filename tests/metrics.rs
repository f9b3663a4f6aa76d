//! `GET /metrics` against what really happened: the counters match what the clients received and what
//! the mock sent, the descriptor gauges come back to where they started, the stall route is caught by
//! the loop's figures and named in the log, and the access log holds no secret.

mod common;

use common::*;
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

const STREAMS: usize = 6;
const TOKENS: u64 = 5;

/// The usage the stream's own last chunk reported: (prompt tokens, completion tokens).
fn reported_usage(payload: &[u8]) -> (u64, u64) {
    let text = String::from_utf8_lossy(payload);
    let usage = text
        .lines()
        .rev()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .find_map(|v| v.get("usage").filter(|u| u.is_object()).cloned())
        .unwrap_or_else(|| panic!("no usage in the stream: {text}"));
    let n = |k: &str| {
        usage[k]
            .as_u64()
            .unwrap_or_else(|| panic!("{k} in {usage}"))
    };
    (n("prompt_tokens"), n("completion_tokens"))
}

/// Reads one stream through the relay: (chunks received, payload bytes, usage reported in it).
fn one_stream(relay: SocketAddr, i: usize) -> (usize, usize, (u64, u64)) {
    let mut c = Conn::connect(relay);
    c.send(&stream_request(&prompt_body(
        &format!("count {i}"),
        None,
        Some(TOKENS),
    )));
    let head = c.expect_head("stream head");
    assert_eq!(head.status(), 200);
    let body = c.read_chunked_body().expect("stream body");
    assert!(body.complete, "stream {i} complete");
    (
        body.chunks.len(),
        body.payload.len(),
        reported_usage(&body.payload),
    )
}

/// Polls the relay's metrics until `done` holds (bounded): gauges are published once per loop iteration,
/// and a closed client is noticed in an iteration of its own.
fn scrape_until(relay: SocketAddr, what: &str, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = scrape(relay);
        if done(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "{what} never held:\n{}", s.text);
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_counters_match_what_the_clients_received() {
    let mock = InProcess::mock(TOKENS as u32, Duration::from_millis(2));
    let relay = InProcess::relay(&format!("http://{}", mock.addr), |_| {});
    let before = scrape(relay.addr);
    assert_eq!(before.sum("tokenpipe_relayed_chunks_total", &[]), 0.0);
    let results: Vec<(usize, usize, (u64, u64))> = thread::scope(|s| {
        let handles: Vec<_> = (0..STREAMS)
            .map(|i| s.spawn(move || one_stream(relay.addr, i)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let chunks: usize = results.iter().map(|r| r.0).sum();
    let bytes: usize = results.iter().map(|r| r.1).sum();
    let input: u64 = results.iter().map(|r| r.2.0).sum();
    let output: u64 = results.iter().map(|r| r.2.1).sum();
    assert_eq!(output, STREAMS as u64 * TOKENS, "the mock's own count");
    let m = scrape(relay.addr);
    let ok = [
        ("route", "generate"),
        ("upstream", "default"),
        ("status", "200"),
    ];
    assert_eq!(m.sum("tokenpipe_http_requests_total", &ok), STREAMS as f64);
    assert_eq!(m.sum("tokenpipe_relayed_chunks_total", &[]), chunks as f64);
    assert_eq!(m.sum("tokenpipe_relayed_bytes_total", &[]), bytes as f64);
    // Read off the streams on the side: the same as the clients found in them.
    let tokens = |kind| {
        let labels = [
            ("upstream", "default"),
            ("gen_ai_response_model", "mock"),
            ("gen_ai_token_type", kind),
        ];
        m.sum("gen_ai_client_token_usage_total", &labels)
    };
    assert_eq!(
        (tokens("input"), tokens("output")),
        (input as f64, output as f64)
    );
    let completed = [("outcome", "completed")];
    assert_eq!(m.sum("tokenpipe_streams_total", &completed), STREAMS as f64);
    let ttft = m.sum("gen_ai_server_time_to_first_token_seconds_count", &[]);
    assert_eq!(ttft, STREAMS as f64);
    // Every request has a first byte and a duration: the streams, and the scrape before.
    for h in [
        "tokenpipe_time_to_first_byte_seconds_count",
        "tokenpipe_http_request_duration_seconds_count",
    ] {
        assert_eq!(m.sum(h, &[]), STREAMS as f64 + 1.0, "{h}");
    }
    // A gap is measured between two chunks of one stream.
    let gaps = m.sum("tokenpipe_relay_event_gap_seconds_count", &[]);
    assert_eq!(gaps, (chunks - STREAMS) as f64);
    // The scrapes before this one are requests too (counted once their answer was out).
    let scrapes = [("route", "metrics"), ("status", "200")];
    assert_eq!(m.sum("tokenpipe_http_requests_total", &scrapes), 1.0);
    // Every relayed chunk cost system calls; the figure to read off is their ratio.
    let calls = m.sum("tokenpipe_syscalls_total", &[]);
    assert!(calls > chunks as f64, "{calls} calls for {chunks} chunks");
    assert!(m.sum("tokenpipe_loop_iterations_total", &[]) > 0.0);
}

#[test]
fn only_event_streams_have_a_first_token() {
    let mock = InProcess::mock(TOKENS as u32, Duration::from_millis(1));
    let relay = InProcess::relay(&format!("http://{}", mock.addr), |_| {});
    // A JSON answer and a model list: a first byte each, and no token.
    let models = fetch(relay.addr, &get("/v1/models"));
    assert_eq!(models.status(), 200, "{}", models.text());
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    let whole = fetch(relay.addr, &post_json("/v1/chat/completions", body));
    assert_eq!(whole.status(), 200, "{}", whole.text());
    one_stream(relay.addr, 0);
    let m = scrape(relay.addr);
    let count = |h: &str| m.sum(&format!("{h}_count"), &[]);
    assert_eq!(count("gen_ai_server_time_to_first_token_seconds"), 1.0);
    assert_eq!(count("tokenpipe_time_to_first_byte_seconds"), 3.0);
}

#[test]
fn the_descriptor_gauges_come_back_to_where_they_started() {
    // The binary with its embedded mock: `process_open_fds` is then the relay's process alone (tests run
    // in parallel threads of this one).
    let args = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "1",
        "--mock-interval-ms",
        "1",
    ];
    let relay = Proc::spawn(&args);
    let fds = |s: &Scrape, kind: &str| s.sum("tokenpipe_open_fds", &[("kind", kind)]);
    // One client: the scrape's own connection.
    let start = scrape_until(relay.addr, "one client", |s| fds(s, "client") == 1.0);
    assert_eq!(fds(&start, "listener"), 1.0);
    assert_eq!(fds(&start, "upstream_active"), 0.0);
    thread::scope(|s| {
        for i in 0..STREAMS {
            s.spawn(move || one_stream(relay.addr, i));
        }
    });
    let end = scrape_until(relay.addr, "the clients gone", |s| fds(s, "client") == 1.0);
    assert_eq!(fds(&end, "upstream_active"), 0.0, "{}", end.text);
    let pooled = fds(&end, "upstream_idle");
    assert!(
        pooled >= 1.0,
        "the pool keeps connections for the next streams"
    );
    // The whole process holds what it held, plus the pooled connections (both ends: the mock is in this
    // process too), and nothing else.
    let open = |s: &Scrape| s.sum("process_open_fds", &[]);
    assert_eq!(
        open(&end),
        open(&start) + 2.0 * (pooled - fds(&start, "upstream_idle"))
    );
}

#[test]
fn the_stall_route_is_caught_and_its_culprit_named() {
    let mock = spawn_mock(&["--tokens", "2", "--interval-ms", "1"]);
    let upstream = mock.url();
    let args = [
        "--upstream",
        &upstream,
        "--loop-warn-ms",
        "20",
        "--debug-stall-route",
    ];
    let (relay, mut logs) = spawn_relay_logged(&args, "warn");
    let slow = |s: &Scrape| {
        let total = s.sum("tokenpipe_loop_busy_seconds_count", &[]);
        total - s.sum("tokenpipe_loop_busy_seconds_bucket", &[("le", "0.025")])
    };
    let before = scrape(relay.addr);
    let resp = fetch(relay.addr, &get("/debug/stall?ms=50"));
    assert_eq!(resp.status(), 200, "{}", resp.text());
    let line = logs.wait_for(
        "warning of the stall",
        |l| l.contains("loop iteration busy"),
        Duration::from_secs(10),
    );
    assert!(
        line.contains("slowest: an event for the client") && line.contains("GET /debug/stall"),
        "the culprit is named: {line}"
    );
    let after = scrape(relay.addr);
    assert!(slow(&after) >= slow(&before) + 1.0, "{}", after.text);
    let worker = [("worker", "relay-0")];
    assert!(after.sum("tokenpipe_loop_slow_iterations_total", &worker) >= 1.0);
    // Off by default: the route does not exist.
    let plain = spawn_relay(&mock.url(), "openai", &[]);
    assert_eq!(fetch(plain.addr, &get("/debug/stall?ms=50")).status(), 404);
}
