//! Robustness beyond the listed error cases: size limits are inclusive of valid sizes, requests split into
//! tiny writes parse, an error never desynchronizes a keep-alive connection, and mangled requests never hurt
//! the server.

mod common;

use common::*;
use std::time::Duration;

/// The control cases for the size limits: a head just under 16 KiB (in two field lines, each within the
/// 8 KiB field line limit) and a body of exactly `--max-body-bytes` are accepted.
#[test]
fn limits_are_inclusive_of_valid_sizes() {
    let s = RelayWithMock::start();
    let filler = "a".repeat(7 * 1024 + 512);
    let raw = format!(
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: {filler}\r\nX-B: {filler}\r\n\r\n"
    );
    let resp = fetch(s.relay.addr, raw.as_bytes());
    assert_eq!(
        resp.status(),
        200,
        "a 15 KiB head was refused: {:?} {:?}",
        resp.head,
        resp.text()
    );

    // A JSON body of exactly SMALL_MAX_BODY bytes (padded with spaces, which JSON ignores).
    let mut body = prompt_body("exactly at the limit", None, Some(2));
    body.insert_str(1, &" ".repeat(SMALL_MAX_BODY - body.len()));
    assert_eq!(body.len(), SMALL_MAX_BODY);
    let mut c = Conn::connect(s.relay.addr);
    c.send(&stream_request(&body));
    let head = c.expect_head("body of exactly --max-body-bytes");
    assert_stream_head(&head);
    let stream = c.read_chunked_body().expect("read stream");
    assert!(
        stream.complete,
        "no final chunk: {:?}",
        lossy(&stream.payload)
    );
}

/// A request written in 1..7-byte fragments (head and chunked body) is parsed like one written at once.
#[test]
fn fragmented_request_is_parsed() {
    let s = RelayWithMock::start();
    let raw = chunked_post(&chunked(
        prompt_body("fragmented request", None, Some(3)).as_bytes(),
        7,
    ));
    let mut c = Conn::connect(s.relay.addr);
    write_fragmented(&mut c.stream, &raw, 42, Duration::from_micros(300)).expect("send fragments");
    let head = c.expect_head("fragmented request");
    assert_stream_head(&head);
    let body = c.read_chunked_body().expect("read stream");
    assert!(body.complete, "no final chunk: {:?}", lossy(&body.payload));
    assert_eq!(
        token_texts(&body.payload).len(),
        3,
        "{:?}",
        lossy(&body.payload)
    );
}

/// An error answered to a request with a body must not desynchronize the connection: the body is skipped (or
/// the connection closed, saying so), never parsed as the next request.
#[test]
fn error_with_body_keeps_framing() {
    let s = RelayWithMock::start();
    let body = "{\"prompt\": \"GET /healthz HTTP/1.1\\r\\n\\r\\n\"} trailing garbage";
    for (what, first) in [
        (
            "404 with a body",
            post_json("/api/v1/nope", &small_prompt()),
        ),
        ("400 invalid JSON", stream_request(body)),
        ("405 with a body", post_json("/healthz", &small_prompt())),
    ] {
        let mut c = Conn::connect(s.relay.addr);
        c.send(&[first, get("/healthz")].concat());
        let resp = c.read_response(what);
        assert!(resp.status() >= 400, "{what}: {:?}", resp.head);
        if resp.head.says_close() {
            if let Err(why) = c.wait_closed(Duration::from_secs(2)) {
                panic!("{what}: said Connection: close but {why}");
            }
        } else {
            let next = c.read_response(&format!("GET /healthz pipelined after {what}"));
            assert_eq!(
                next.status(),
                200,
                "{what}: the next request got {:?} {:?}",
                next.head,
                next.text()
            );
        }
    }
}

/// Mangled requests (a valid request with bytes flipped, inserted or cut) never crash the relay, never get a
/// 5xx, and every connection ends once the client has half-closed; the relay keeps serving throughout.
#[test]
fn mangled_requests_never_hurt_the_server() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    let mut s = RelayWithMock::start();
    let bases: Vec<Vec<u8>> = vec![
        stream_request(&prompt_body("fuzz me", None, Some(2))),
        chunked_post(&chunked(
            prompt_body("fuzz me chunked", None, Some(2)).as_bytes(),
            9,
        )),
        get("/healthz"),
        b"GET /healthz HTTP/1.0\r\n\r\n".to_vec(),
    ];
    let strategy = (
        0..bases.len(),
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6),
        any::<prop::sample::Index>(),
    );
    let mut runner = TestRunner::new(Config {
        cases: 96,
        max_shrink_iters: 32,
        failure_persistence: None,
        ..Config::default()
    });
    let relay_addr = s.relay.addr;
    let result = runner.run(&strategy, |(base, edits, cut)| {
        let mut raw = bases[base].clone();
        for (at, byte, kind) in edits {
            let i = at.index(raw.len());
            match kind {
                0 => raw[i] = byte,
                1 => raw.insert(i, byte),
                _ => {
                    raw.remove(i);
                }
            }
        }
        // Sometimes cut the request short.
        if cut.index(4) == 0 {
            let n = cut.index(raw.len() + 1);
            raw.truncate(n);
        }
        let mut c = Conn::connect(relay_addr);
        c.send(&raw);
        let _ = c.stream.shutdown(std::net::Shutdown::Write);
        c.set_read_timeout(Duration::from_secs(3));
        // Read responses until the relay closes; all of it must happen within the timeouts.
        loop {
            match c.read_head() {
                Ok(None) => break,
                Ok(Some(head)) => {
                    let status = head.status();
                    prop_assert!(status < 500, "status {} for {:?}", status, lossy(&raw));
                    match c.read_body(&head) {
                        Ok((_, true)) => {}
                        Ok((_, false)) => break, // a stream cut by the half-close
                        Err(e) => {
                            prop_assert!(false, "bad response body ({}) for {:?}", e, lossy(&raw))
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    prop_assert!(
                        false,
                        "connection still open 3 s after the client half-closed, for {:?}",
                        lossy(&raw)
                    )
                }
                Err(e) => prop_assert!(false, "bad response ({}) for {:?}", e, lossy(&raw)),
            }
        }
        Ok(())
    });
    s.relay.assert_alive();
    if let Err(e) = result {
        panic!("{e}");
    }
    assert_healthy(s.relay.addr, "mangled requests");
}
