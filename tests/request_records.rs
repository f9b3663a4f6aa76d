//! Every request has its record: requests refused before they were whole, and streams cut by a worker's stop, are
//! counted and logged like every other request.

mod common;

use std::time::Duration;

use common::*;

fn relay(extra: &[&str]) -> (Proc, Logs) {
    spawn_relay_logged(extra, "info")
}

/// Sends `raw` and reads until the relay closes (bounded by the connection's read timeout).
fn exchange(relay: &Proc, raw: &[u8]) -> String {
    let mut c = Conn::connect(relay.addr);
    c.send(raw);
    // To the end, or to a reset: what arrived before it is the answer.
    while matches!(c.fill(), Ok(n) if n > 0) {}
    String::from_utf8_lossy(c.buffered()).into_owned()
}

#[test]
fn requests_refused_before_they_are_whole_are_counted_and_logged() {
    let (relay, mut logs) = relay(&["--client-head-timeout", "1s", "--max-body-bytes", "1000"]);
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let cases: [(&[u8], u16); 4] = [
        (b"GET /healthz HTTP/1.1\r\n\r\n", 400),
        (big.as_bytes(), 431),
        (
            b"POST /api/v1/generate-stream HTTP/1.1\r\nHost: x\r\nContent-Length: 99999\r\n\r\n",
            413,
        ),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\n", 408),
    ];
    for (raw, status) in cases {
        let got = exchange(&relay, raw);
        assert!(got.starts_with(&format!("HTTP/1.1 {status}")), "{got}");
        logs.wait_for(
            &format!("access line of a {status}"),
            |l| l.contains("tokenpipe::access") && l.contains(&format!(" {status} ")),
            Duration::from_secs(5),
        );
    }
    let s = scrape(relay.addr);
    for (_, status) in cases {
        let n = s.sum(
            "tokenpipe_http_requests_total",
            &[("status", &status.to_string())],
        );
        assert_eq!(n, 1.0, "requests answered {status}:\n{}", s.text);
    }
}

#[test]
fn a_stream_cut_by_the_drain_deadline_gets_its_access_line() {
    let (mut relay, mut logs) = relay(&[
        "--mock-tokens",
        "400",
        "--mock-interval-ms",
        "50",
        "--drain-timeout",
        "1s",
    ]);
    let mut c = Conn::connect(relay.addr);
    let body = prompt_body("a long one", None, Some(400));
    let mut req = stream_request(&body);
    let at = req.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
    req.splice(at..at, b"X-Request-Id: cut-by-stop\r\n".iter().copied());
    c.send(&req);
    assert_eq!(c.expect_head("stream head").status(), 200);
    relay.signal("TERM");
    relay
        .wait_exit(Duration::from_secs(10))
        .expect("exits after the drain");
    let lines = logs.collect().to_vec();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("tokenpipe::access") && l.contains("cut-by-stop")),
        "no access line for the stream cut at the stop:\n{}",
        lines.join("\n")
    );
}
