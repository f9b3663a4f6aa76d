//! `tokenpipe loadgen` against the real relay and mock, on loopback: what it counts must be what the
//! servers did. Each run is bounded by its own `--total`, `--duration` and `--timeout`, and [`loadgen`]
//! kills it if it outlives [`RUN_DEADLINE`] all the same.
//!
//! Time is asserted only where it is the behaviour under test (the open loop's rate, a stall's
//! timeout), and loosely: CI has two cores and other tests beside these.

mod common;

use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// The longest any run here may take before it is killed as hung.
const RUN_DEADLINE: Duration = Duration::from_secs(30);

/// The relay with its embedded mock: five tokens, 2 ms apart.
fn relay() -> Proc {
    Proc::spawn(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "1",
        "--mock-tokens",
        "5",
        "--mock-interval-ms",
        "2",
    ])
}

/// The mock alone, same answers.
fn mock() -> Proc {
    spawn_mock(&["--tokens", "5", "--interval-ms", "2"])
}

fn generate_url(p: &Proc) -> String {
    format!("{}/api/v1/generate-stream", p.url())
}

/// An OpenAI chat request to the mock for `prompt`, streamed.
fn chat_body(prompt: &str) -> String {
    serde_json::json!({
        "model": MODEL,
        "messages": [{ "role": "user", "content": prompt }],
        "stream": true,
    })
    .to_string()
}

/// Runs `tokenpipe loadgen ARGS` to its end; its stdout and stderr.
fn run(args: &[&str]) -> (String, String) {
    let mut child = Command::new(BIN)
        .arg("loadgen")
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tokenpipe loadgen");
    let deadline = Instant::now() + RUN_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for loadgen") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("loadgen {args:?} still running after {RUN_DEADLINE:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    let output = child.wait_with_output().expect("loadgen output");
    let (out, err) = (lossy(&output.stdout), lossy(&output.stderr));
    assert!(status.success(), "loadgen {args:?}: {status}\n{out}\n{err}");
    (out, err)
}

/// `run` with `--json --quiet`: the report.
fn loadgen(args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["--json", "--quiet"]);
    let (out, err) = run(&all);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out:?}\n{err}"))
}

fn n(v: &Value, path: &[&str]) -> u64 {
    let mut at = v;
    for key in path {
        at = &at[*key];
    }
    at.as_u64()
        .unwrap_or_else(|| panic!("no number at {path:?} in {v}"))
}

#[test]
fn a_closed_loop_through_the_relay_completes_and_sustains_every_stream() {
    let relay = relay();
    let url = generate_url(&relay);
    // 2 ms pacing; the factor is generous (a 500 ms gap) because a loaded CI machine may pause a
    // process for tens of milliseconds: sustained must be a fact about the relay, not about CI.
    let r = loadgen(&[
        "--url",
        &url,
        "--streams",
        "20",
        "--total",
        "40",
        "--pacing-ms",
        "2",
        "--sustain-factor",
        "250",
    ]);
    assert_eq!(
        (n(&r, &["started"]), n(&r, &["completed"])),
        (40, 40),
        "{r}"
    );
    assert_eq!(n(&r, &["failed", "total"]), 0, "{r}");
    // Through the relay, an OpenAI-shaped answer of 5 tokens is 8 events: 5 tokens, the finish chunk,
    // the usage chunk (the relay asks for it) and [DONE].
    assert_eq!(n(&r, &["events_per_stream", "min"]), 8, "{r}");
    assert_eq!(n(&r, &["events_per_stream", "max"]), 8, "{r}");
    assert_eq!(n(&r, &["events"]), 320);
    for figure in ["first_byte_us", "first_event_us", "completion_us"] {
        assert_eq!(n(&r, &[figure, "count"]), 40, "{figure}: {r}");
    }
    assert_eq!(
        n(&r, &["gap_us", "count"]),
        40 * 7,
        "seven gaps between eight events"
    );
    // Causality, not speed: the first event comes with or after the first byte, and the last chunk after
    // the first event.
    assert!(n(&r, &["first_event_us", "p50"]) >= n(&r, &["first_byte_us", "p50"]));
    assert!(n(&r, &["completion_us", "p50"]) >= n(&r, &["first_event_us", "p50"]));
    assert_eq!(n(&r, &["sustained", "count"]), 40, "{r}");
    assert_eq!(r["sustained"]["percent"], 100.0);
    assert_eq!(n(&r, &["sustained", "gap_limit_us"]), 500_000);
    assert_eq!(r["mode"], "closed");
    assert_eq!(r["schema"], 1);
}

#[test]
fn events_are_what_the_mock_sends_directly() {
    let mock = mock();
    let url = format!("{}/v1/chat/completions", mock.url());
    let body = chat_body("Tell me a story.");
    let r = loadgen(&[
        "--url",
        &url,
        "--body",
        &body,
        "--streams",
        "3",
        "--total",
        "6",
    ]);
    assert_eq!(n(&r, &["completed"]), 6, "{r}");
    // No usage chunk asked for: 5 tokens, the finish chunk and [DONE].
    assert_eq!(n(&r, &["events_per_stream", "min"]), 7, "{r}");
    assert_eq!(n(&r, &["events_per_stream", "max"]), 7, "{r}");
    // No --pacing-ms: sustained is not judged.
    assert!(r["sustained"].is_null());
    let stats = mock_stats(mock.addr);
    // Ours for /stats counts too.
    assert_eq!(stat(&stats, "requests"), 6 + 1);
    assert_eq!(stat(&stats, "connections"), 6 + 1, "one per stream");
}

#[test]
fn an_open_loop_starts_its_rate_whatever_the_streams_do() {
    let relay = relay();
    let url = generate_url(&relay);
    let r = loadgen(&["--url", &url, "--rate", "50", "--duration", "1s"]);
    // Due at k / 50 s for k in 0..50: fifty starts, late or not.
    assert_eq!(n(&r, &["started"]), 50, "{r}");
    assert_eq!(n(&r, &["completed"]), 50, "{r}");
    assert_eq!(r["mode"], "open");
    assert_eq!(r["rate"], 50.0);
    let rate = r["started_per_s"].as_f64().expect("a start rate");
    assert!((40.0..=60.0).contains(&rate), "started {rate}/s for 50/s");
    assert_eq!(n(&r, &["start_lag_us", "count"]), 50);
}

#[test]
fn keep_alive_reuses_a_slots_connection() {
    let mock = mock();
    let url = format!("{}/v1/chat/completions", mock.url());
    let body = chat_body("Tell me a story.");
    let args = [
        "--url",
        &url,
        "--body",
        &body,
        "--streams",
        "4",
        "--total",
        "20",
    ];
    let r = loadgen(&[&args[..], &["--keep-alive"]].concat());
    assert_eq!(n(&r, &["completed"]), 20, "{r}");
    assert_eq!(r["keep_alive"], true);
    let stats = mock_stats(mock.addr);
    // Ours for /stats counts too.
    assert_eq!(stat(&stats, "requests"), 20 + 1);
    assert_eq!(stat(&stats, "connections"), 4 + 1, "one per slot");
}

#[test]
fn a_failing_status_is_counted_with_its_code() {
    let mock = mock();
    let url = format!("{}/v1/chat/completions", mock.url());
    let body = chat_body("hi [fault: status=500]");
    let r = loadgen(&[
        "--url",
        &url,
        "--body",
        &body,
        "--streams",
        "5",
        "--total",
        "10",
    ]);
    assert_eq!(n(&r, &["started"]), 10, "{r}");
    assert_eq!(n(&r, &["completed"]), 0, "{r}");
    assert_eq!(n(&r, &["failed", "status"]), 10, "{r}");
    assert_eq!(n(&r, &["failed", "total"]), 10, "{r}");
    assert_eq!(n(&r, &["statuses", "500"]), 10, "{r}");
    // A refused stream's quick answer is not a latency.
    assert_eq!(n(&r, &["first_byte_us", "count"]), 0, "{r}");
    assert!(r["first_byte_us"]["p50"].is_null());
}

#[test]
fn a_stalled_stream_fails_at_its_timeout_and_the_run_still_ends() {
    let mock = mock();
    let url = format!("{}/v1/chat/completions", mock.url());
    let body = chat_body("hi [fault: stall-after=1]");
    let started = Instant::now();
    let r = loadgen(&[
        "--url",
        &url,
        "--body",
        &body,
        "--streams",
        "3",
        "--total",
        "3",
        "--timeout",
        "1s",
    ]);
    assert_eq!(n(&r, &["failed", "timeout"]), 3, "{r}");
    assert_eq!(n(&r, &["completed"]), 0, "{r}");
    // One token came before the stall: one event each, and the first byte and event were measured.
    assert_eq!(n(&r, &["events"]), 3, "{r}");
    assert_eq!(n(&r, &["first_event_us", "count"]), 3, "{r}");
    let why = r["errors"]["timeout"]
        .as_str()
        .expect("the timeout's message");
    assert!(why.contains("in the body, after 1 events"), "{why}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_refused_connection_and_a_cut_body_are_counted_by_reason() {
    let refused = closed_port_addr();
    let url = format!("http://{refused}/x");
    let r = loadgen(&["--url", &url, "--streams", "2", "--total", "4"]);
    assert_eq!(n(&r, &["failed", "connect"]), 4, "{r}");
    assert!(r["errors"]["connect"].as_str().is_some(), "{r}");

    let mock = mock();
    let url = format!("{}/v1/chat/completions", mock.url());
    let body = chat_body("hi [fault: reset-after=2]");
    let r = loadgen(&[
        "--url",
        &url,
        "--body",
        &body,
        "--streams",
        "2",
        "--total",
        "4",
    ]);
    assert_eq!(n(&r, &["failed", "truncated"]), 4, "{r}");
    let body = chat_body("hi [fault: bad-chunk-after=2]");
    let r = loadgen(&[
        "--url",
        &url,
        "--body",
        &body,
        "--streams",
        "2",
        "--total",
        "2",
        "--timeout",
        "5s",
    ]);
    assert_eq!(n(&r, &["failed", "protocol"]), 2, "{r}");
}

#[test]
fn https_with_a_private_ca_and_without_it() {
    let pki = TestPki::new(&["localhost", "127.0.0.1"]);
    let (cert, key, ca) = (
        pki.cert.to_str().unwrap(),
        pki.key.to_str().unwrap(),
        pki.ca.to_str().unwrap(),
    );
    let mock = spawn_mock(&[
        "--tokens",
        "5",
        "--interval-ms",
        "2",
        "--tls-cert",
        cert,
        "--tls-key",
        key,
    ]);
    let url = format!("https://localhost:{}/v1/chat/completions", mock.addr.port());
    let body = chat_body("Tell me a story.");
    let args = [
        "--url",
        &url,
        "--body",
        &body,
        "--streams",
        "4",
        "--total",
        "8",
    ];
    let r = loadgen(&[&args[..], &["--ca", ca]].concat());
    assert_eq!(n(&r, &["completed"]), 8, "{r}");
    assert_eq!(n(&r, &["events_per_stream", "min"]), 7, "{r}");
    // The built-in roots do not know our CA.
    let r = loadgen(&[
        "--url",
        &url,
        "--body",
        &body,
        "--streams",
        "2",
        "--total",
        "2",
    ]);
    assert_eq!(n(&r, &["failed", "tls"]), 2, "{r}");
    assert!(
        r["errors"]["tls"]
            .as_str()
            .is_some_and(|e| e.contains("certificate")),
        "{r}"
    );
}

#[test]
fn the_table_is_for_people_and_shows_no_progress_off_a_terminal() {
    let relay = relay();
    let url = generate_url(&relay);
    let (out, err) = run(&[
        "--url",
        &url,
        "--streams",
        "2",
        "--total",
        "2",
        "--pacing-ms",
        "2",
    ]);
    for needle in [
        "streams    2 started, 2 completed, 0 failed",
        "events     16 (8 per completed stream)",
        "first event",
        "sustained ",
    ] {
        assert!(out.contains(needle), "{needle:?} in\n{out}");
    }
    assert!(
        !err.contains("active"),
        "no progress line off a terminal: {err}"
    );
}

#[test]
fn bad_options_are_refused_before_anything_runs() {
    let output = Command::new(BIN)
        .args(["loadgen", "--url", "ftp://127.0.0.1/", "--quiet"])
        .output()
        .expect("run loadgen");
    assert!(!output.status.success());
    let err = lossy(&output.stderr);
    assert!(err.contains("not http or https"), "{err}");
}
