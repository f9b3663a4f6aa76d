//! Bad input gets a clear answer (status + JSON error), the connection is closed when framing is in doubt, and
//! the server keeps serving. Also: pipelining, HTTP/1.0, `Expect: 100-continue`, upstream failures.

mod common;

use common::*;
use std::io::Write;
use std::time::Duration;

#[test]
fn head_over_16_kib_is_431() {
    let mut s = RelayWithMock::start();
    // Three fields of 6 KiB: each within the 8 KiB field line limit, the head over 16 KiB.
    let big = "a".repeat(6 * 1024);
    let raw = format!(
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: {big}\r\nX-B: {big}\r\nX-C: {big}\r\n\r\n"
    );
    let resp = check_error(&mut s.relay, raw.as_bytes(), 431, false, "head over 16 KiB");
    assert!(
        resp.text().contains("request head exceeds"),
        "{}",
        resp.text()
    );
}

/// The limits on parts of the head, over a real socket: a target over 8 KiB is a 414 (even though the
/// same bytes make the head too long), a field line over 8 KiB a 431; both close the connection.
#[test]
fn a_long_target_is_414_and_a_long_field_line_431() {
    let mut s = RelayWithMock::start();
    let raw = get(&format!("/v1/models?q={}", "q".repeat(20 * 1024)));
    let resp = check_error(&mut s.relay, &raw, 414, true, "target over 8 KiB");
    assert_eq!(resp.json()["error"]["code"], "uri_too_long");
    let raw = format!(
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(9 * 1024)
    );
    let resp = check_error(
        &mut s.relay,
        raw.as_bytes(),
        431,
        true,
        "field line over 8 KiB",
    );
    assert!(resp.text().contains("field line"), "{}", resp.text());
    // Just within both limits: served.
    let target = format!("/healthz?{}", "q".repeat(8 * 1024 - 9));
    assert_eq!(target.len(), 8 * 1024);
    assert_eq!(fetch(s.relay.addr, &get(&target)).status(), 200);
}

#[test]
fn body_over_max_body_bytes_is_413() {
    let mut s = RelayWithMock::start();
    let body = prompt_body(&"p".repeat(2 * SMALL_MAX_BODY), None, None);
    check_error(
        &mut s.relay,
        &stream_request(&body),
        413,
        false,
        "Content-Length body over --max-body-bytes",
    );

    let chunked_body = chunked(body.as_bytes(), 1000);
    let mut raw = b"POST /api/v1/generate-stream HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    raw.extend_from_slice(&chunked_body);
    check_error(
        &mut s.relay,
        &raw,
        413,
        false,
        "chunked body over --max-body-bytes",
    );
}

#[test]
fn unknown_path_is_404() {
    let mut s = RelayWithMock::start();
    check_error(
        &mut s.relay,
        &get("/no/such/path"),
        404,
        false,
        "GET unknown path",
    );
    check_error(
        &mut s.relay,
        &post_json("/api/v1/nope", &small_prompt()),
        404,
        false,
        "POST unknown path",
    );
}

#[test]
fn wrong_method_is_405_with_allow() {
    let mut s = RelayWithMock::start();
    for path in ["/api/v1/generate-stream", "/api/v1/stream"] {
        let resp = check_error(&mut s.relay, &get(path), 405, false, &format!("GET {path}"));
        assert_eq!(
            resp.head.header("allow"),
            Some("POST"),
            "Allow header of GET {path}: {:?}",
            resp.head
        );
    }
    let resp = check_error(
        &mut s.relay,
        &post_json("/healthz", "{}"),
        405,
        false,
        "POST /healthz",
    );
    let allow = resp
        .head
        .header("allow")
        .unwrap_or_else(|| panic!("no Allow header: {:?}", resp.head));
    assert!(
        allow.split(',').any(|m| m.trim() == "GET"),
        "Allow of POST /healthz: {allow:?}"
    );
}

#[test]
fn content_length_with_transfer_encoding_is_400_and_closes() {
    let mut s = RelayWithMock::start();
    let body = small_prompt();
    let mut raw = format!(
        "POST /api/v1/generate-stream HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(&chunked(body.as_bytes(), 16));
    check_error(
        &mut s.relay,
        &raw,
        400,
        true,
        "Content-Length with Transfer-Encoding",
    );
}

#[test]
fn differing_duplicate_content_length_is_400_and_closes() {
    let mut s = RelayWithMock::start();
    let body = small_prompt();
    let raw = format!(
        "POST /api/v1/generate-stream HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len(),
        body.len() + 1
    );
    check_error(
        &mut s.relay,
        raw.as_bytes(),
        400,
        true,
        "differing duplicate Content-Length",
    );
}

#[test]
fn bad_chunk_size_is_400_and_closes() {
    let mut s = RelayWithMock::start();
    let body = small_prompt();
    let cases: [(&str, Vec<u8>); 3] = [
        (
            "non-hex chunk size",
            [b"zz\r\n".as_slice(), body.as_bytes(), b"\r\n0\r\n\r\n"].concat(),
        ),
        (
            "empty chunk-size line",
            [b"\r\n".as_slice(), &chunked(body.as_bytes(), 8)].concat(),
        ),
        (
            "chunk size line of spaces",
            [
                format!("  \r\n{:x}\r\n", body.len()).as_bytes(),
                body.as_bytes(),
                b"\r\n0\r\n\r\n",
            ]
            .concat(),
        ),
    ];
    for (what, chunked_body) in cases {
        check_error(&mut s.relay, &chunked_post(&chunked_body), 400, true, what);
    }
}

#[test]
fn valid_chunked_request_body_streams() {
    // The control case for the chunked-body errors: correct chunked framing is accepted.
    let s = RelayWithMock::start();
    let mut c = Conn::connect(s.relay.addr);
    c.send(&chunked_post(&chunked(small_prompt().as_bytes(), 5)));
    let head = c.expect_head("chunked request body");
    assert_stream_head(&head);
    let body = c.read_chunked_body().expect("read stream");
    assert!(body.complete, "no final chunk: {:?}", lossy(&body.payload));
    assert_eq!(
        sse_data(&body.payload).last().map(String::as_str),
        Some("[DONE]")
    );
}

/// Each mistake in the simple route's body gets a 400 with its own code, naming the field at fault; the
/// connection stays usable.
#[test]
fn body_errors_have_their_code_and_name_the_field() {
    let mut s = RelayWithMock::start();
    for (what, body, code, needle) in [
        (
            "truncated JSON",
            "{\"prompt\": \"hel",
            "invalid_json",
            "JSON",
        ),
        ("not JSON", "prompt=hello", "invalid_json", "JSON"),
        (
            "JSON but not an object",
            "[1,2,3]",
            "invalid_request",
            "object",
        ),
        (
            "prompt of the wrong type",
            "{\"prompt\": 42}",
            "invalid_request",
            "`prompt`",
        ),
        (
            "no prompt",
            "{\"model\": \"x\"}",
            "missing_prompt",
            "field `prompt` (or `messages`) is missing",
        ),
        ("empty body object", "{}", "missing_prompt", "`prompt`"),
        (
            "unknown field",
            r#"{"prompt":"p","temprature":0.5}"#,
            "unknown_field",
            "unknown field `temprature`; accepted: prompt, messages,",
        ),
        (
            "misspelt prompt",
            r#"{"promt":"p"}"#,
            "unknown_field",
            "`promt`",
        ),
        (
            "both prompt and messages",
            r#"{"prompt":"p","messages":[{"role":"user","content":"m"}]}"#,
            "invalid_request",
            "`prompt` and `messages`",
        ),
        (
            "a message with a bad role",
            r#"{"messages":[{"role":"robot","content":"m"}]}"#,
            "invalid_request",
            "`messages[0].role`",
        ),
        (
            "temperature out of range",
            r#"{"prompt":"p","temperature":2.5}"#,
            "invalid_request",
            "`temperature`",
        ),
        (
            "too many stop sequences",
            r#"{"prompt":"p","stop":["a","b","c","d","e"]}"#,
            "invalid_request",
            "`stop`",
        ),
    ] {
        let resp = check_error(&mut s.relay, &stream_request(body), 400, false, what);
        let v = resp.json();
        assert_eq!(v["error"]["code"], code, "{what}: {v}");
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{what}: {v}");
    }
}

#[test]
fn empty_or_whitespace_prompt_is_400() {
    let mut s = RelayWithMock::start();
    for (what, body) in [
        ("empty prompt", prompt_body("", None, None)),
        ("whitespace prompt", prompt_body(" \t\n  ", None, None)),
        ("no messages", r#"{"messages":[]}"#.to_string()),
        (
            "blank message",
            r#"{"messages":[{"role":"user","content":" "}]}"#.to_string(),
        ),
    ] {
        let resp = check_error(&mut s.relay, &stream_request(&body), 400, false, what);
        assert_eq!(resp.json()["error"]["code"], "empty_prompt", "{what}");
    }
}

/// The control case for the body errors: a conversation with every option streams.
#[test]
fn body_with_every_field_streams() {
    let s = RelayWithMock::start();
    let body = r#"{"system":"Be brief.","messages":[{"role":"system","content":"No lists."},
        {"role":"user","content":"hi"},{"role":"assistant","content":"hello"},
        {"role":"user","content":"every option at once"}],"model":"other-model","temperature":0.3,
        "top_p":0.9,"stop":["\n\n"],"max_tokens":3}"#;
    let payload = relay_stream(s.relay.addr, body);
    assert_eq!(
        token_texts(&payload).concat(),
        "every option at",
        "{:?}",
        lossy(&payload)
    );
}

#[test]
fn missing_host_in_http11_is_400() {
    let mut s = RelayWithMock::start();
    check_error(
        &mut s.relay,
        b"GET /healthz HTTP/1.1\r\n\r\n",
        400,
        false,
        "GET without Host",
    );
    let body = small_prompt();
    let raw = format!(
        "POST /api/v1/generate-stream HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    check_error(
        &mut s.relay,
        raw.as_bytes(),
        400,
        false,
        "POST without Host",
    );
}

/// Two POSTs in one write are answered in order on the same connection.
#[test]
fn pipelined_posts_answered_in_order() {
    let s = RelayWithMock::start();
    // The first stream is longer than the second: an out-of-order relay would answer the second one first.
    let (a, b) = ("first pipelined prompt", "second pipelined prompt");
    let expected_a = direct_mock_payload(s.mock.addr, "openai", MODEL, a, 6);
    let expected_b = direct_mock_payload(s.mock.addr, "openai", MODEL, b, 1);

    let mut c = Conn::connect(s.relay.addr);
    let raw = [
        stream_request(&prompt_body(a, None, Some(6))),
        stream_request(&prompt_body(b, None, Some(1))),
    ]
    .concat();
    c.send(&raw);
    for (i, expected) in [expected_a, expected_b].iter().enumerate() {
        let head = c.expect_head(&format!("pipelined response {i}"));
        assert_stream_head(&head);
        let body = c.read_chunked_body().expect("read pipelined body");
        assert!(body.complete, "pipelined response {i}: no final chunk");
        assert_eq!(
            lossy(&body.payload),
            lossy(expected),
            "pipelined response {i} is not the answer to request {i}"
        );
    }
    // The connection stays usable afterwards.
    c.send(&get("/healthz"));
    let resp = c.read_response("GET /healthz after pipelined requests");
    assert_eq!(resp.status(), 200);
}

/// Pipelined small requests: GET /healthz, an error, GET /healthz, in one write.
#[test]
fn pipelined_gets_answered_in_order() {
    let s = RelayWithMock::start();
    let mut c = Conn::connect(s.relay.addr);
    c.send(&[get("/healthz"), get("/no/such/path"), get("/healthz")].concat());
    let statuses: Vec<u16> = (0..3)
        .map(|i| c.read_response(&format!("pipelined GET {i}")).status())
        .collect();
    assert_eq!(statuses, [200, 404, 200]);
}

/// HTTP/1.0 without keep-alive: answered, then the connection is closed.
#[test]
fn http10_without_keep_alive_closes() {
    let s = RelayWithMock::start();
    let mut c = Conn::connect(s.relay.addr);
    c.send(b"GET /healthz HTTP/1.0\r\n\r\n");
    let resp = c.read_response("HTTP/1.0 GET /healthz");
    assert_eq!(resp.status(), 200, "{:?}", resp.head);
    assert!(resp.complete);
    assert!(
        !resp.head.is_chunked(),
        "chunked encoding in a response to HTTP/1.0: {:?}",
        resp.head
    );
    if let Err(why) = c.wait_closed(Duration::from_secs(2)) {
        panic!("HTTP/1.0 request without keep-alive: {why}");
    }
}

/// `Expect: 100-continue`: the relay says `100 Continue` before the client sends the body, then streams.
#[test]
fn expect_100_continue() {
    let s = RelayWithMock::start();
    let body = small_prompt();
    let mut c = Conn::connect(s.relay.addr);
    c.send(
        format!(
            "POST /api/v1/generate-stream HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    c.set_read_timeout(Duration::from_secs(5));
    let interim = c.expect_head("interim response to Expect: 100-continue");
    assert_eq!(interim.start_line, "HTTP/1.1 100 Continue", "{interim:?}");
    c.stream.write_all(body.as_bytes()).expect("send body");
    let head = c.expect_head("stream after 100 Continue");
    assert_stream_head(&head);
    let body = c.read_chunked_body().expect("read stream");
    assert!(body.complete, "no final chunk: {:?}", lossy(&body.payload));
    assert_eq!(
        sse_data(&body.payload).last().map(String::as_str),
        Some("[DONE]")
    );
}

/// The upstream port is closed: 502 with a JSON error; the relay keeps serving.
#[test]
fn upstream_unreachable_is_502() {
    let dead = closed_port_addr();
    // No retry and no breaker: this is about the answer to one failure (they have tests of their own).
    let once = [
        "--model",
        MODEL,
        "--retries",
        "0",
        "--breaker-failures",
        "0",
    ];
    let mut relay = spawn_relay(&format!("http://{dead}"), "openai", &once);
    let body = small_prompt();
    check_error(
        &mut relay,
        &stream_request(&body),
        502,
        false,
        "upstream unreachable",
    );
    // Twice: a failed connect must not poison anything.
    check_error(
        &mut relay,
        &stream_request(&body),
        502,
        false,
        "upstream unreachable, again",
    );
}

/// The upstream answers 500: 502 with a JSON error.
#[test]
fn upstream_non_2xx_is_502() {
    let fake = FakeUpstream::start(4, |_, mut conn| {
        while let Ok(Some(_)) = conn.read_request() {
            let body = r#"{"error":{"message":"upstream exploded"}}"#;
            let resp = format!(
                "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            if conn.stream.write_all(resp.as_bytes()).is_err() {
                return;
            }
        }
    });
    // No retry and no breaker: this is about the answer to one failure (they have tests of their own).
    let once = [
        "--model",
        MODEL,
        "--retries",
        "0",
        "--breaker-failures",
        "0",
    ];
    let mut relay = spawn_relay(&fake.url(), "openai", &once);
    check_error(
        &mut relay,
        &stream_request(&small_prompt()),
        502,
        false,
        "upstream 500",
    );
    check_error(
        &mut relay,
        &stream_request(&small_prompt()),
        502,
        false,
        "upstream 500, again",
    );
}

/// Chunk data not followed by CRLF is a framing error: 400, connection closed.
#[test]
fn chunk_data_without_crlf_is_400_and_closes() {
    let mut s = RelayWithMock::start();
    let body = small_prompt();
    let bad = [
        format!("{:x}\r\n", body.len()).as_bytes(),
        body.as_bytes(),
        b"XX0\r\n\r\n",
    ]
    .concat();
    check_error(
        &mut s.relay,
        &chunked_post(&bad),
        400,
        true,
        "chunk data without CRLF",
    );
}

/// HTTP/1.1 with `Connection: close`: answered, then the connection is closed.
#[test]
fn http11_connection_close_closes() {
    let s = RelayWithMock::start();
    let mut c = Conn::connect(s.relay.addr);
    c.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    let resp = c.read_response("GET /healthz with Connection: close");
    assert_eq!(resp.status(), 200);
    if let Err(why) = c.wait_closed(Duration::from_secs(2)) {
        panic!("Connection: close: {why}");
    }
}

/// A stream requested over HTTP/1.0 cannot use chunked encoding (RFC 9112 section 6.1: a server MUST NOT send
/// Transfer-Encoding to an HTTP/1.0 request): the SSE payload is delimited by closing the connection, also
/// when the client asked for keep-alive.
#[test]
fn http10_stream_is_close_delimited_not_chunked() {
    let s = RelayWithMock::start();
    for connection in ["", "Connection: keep-alive\r\n"] {
        let body = prompt_body("old client", None, Some(3));
        let raw = format!(
            "POST /api/v1/generate-stream HTTP/1.0\r\n{connection}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let mut c = Conn::connect(s.relay.addr);
        c.send(raw.as_bytes());
        let head = c.expect_head("HTTP/1.0 stream");
        assert_eq!(head.status(), 200, "{connection:?}: {head:?}");
        assert!(
            head.header("transfer-encoding").is_none(),
            "{connection:?}: Transfer-Encoding sent in a response to an HTTP/1.0 request: {head:?}"
        );
        let payload = c.read_to_eof().expect("read to EOF");
        assert!(
            payload.ends_with(b"data: [DONE]\n\n"),
            "{connection:?}: payload {:?}",
            lossy(&payload)
        );
        assert_eq!(token_texts(&payload).len(), 3, "{:?}", lossy(&payload));
    }
}

/// The upstream answers garbage, or closes without answering: 502 with a JSON error.
#[test]
fn upstream_garbage_or_silence_is_502() {
    for (what, reply) in [
        (
            "upstream garbage",
            b"this is not HTTP at all\r\n\r\n".as_slice(),
        ),
        ("upstream closes without a response", b"".as_slice()),
    ] {
        let fake = FakeUpstream::start(4, move |_, mut conn| {
            if let Ok(Some(_)) = conn.read_request() {
                let _ = conn.stream.write_all(reply);
            }
        });
        let mut relay = spawn_relay(&fake.url(), "openai", &["--model", MODEL]);
        check_error(
            &mut relay,
            &stream_request(&small_prompt()),
            502,
            false,
            what,
        );
    }
}

/// `HEAD /healthz` gets the head of the GET answer and no body: a GET pipelined behind it on the same
/// connection is answered next, and its body is the only body on the wire.
#[test]
fn head_healthz_has_no_body() {
    let s = RelayWithMock::start();
    let mut c = std::net::TcpStream::connect(s.relay.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(
        b"HEAD /healthz HTTP/1.1\r\nHost: a\r\n\r\nGET /healthz HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .unwrap();
    let body = br#"{"status":"ok"}"#;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.ends_with(body) {
        let n = std::io::Read::read(&mut c, &mut buf).expect("both answers within 5 s");
        assert!(
            n > 0,
            "connection closed early: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    assert_eq!(text.matches("HTTP/1.1 200 OK\r\n").count(), 2, "{text}");
    assert_eq!(text.matches(r#"{"status":"ok"}"#).count(), 1, "{text}");
    let first = text
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(first.contains("content-length: 15"), "{first}");
}

/// An error that closes the connection is followed by a FIN, not a reset, even though the client
/// sent bytes the relay never read (lingering close).
#[test]
fn closing_error_with_unread_input_ends_with_fin_not_reset() {
    let s = RelayWithMock::start();
    let mut c = Conn::connect(s.relay.addr);
    let mut raw = b"POST /api/v1/generate-stream HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n".to_vec();
    raw.extend_from_slice(&vec![b'x'; 256 * 1024]);
    let mut w = c.stream.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = w.write_all(&raw);
    });
    let resp = c.read_response("413 with unread body");
    assert_json_error(&resp, 413, "413 with unread body");
    writer.join().unwrap();
    c.wait_closed(Duration::from_secs(5)).expect("closed");
    assert!(
        !c.reset,
        "the relay reset the connection instead of lingering"
    );
}

/// A request pipelined while a stream is in progress is kept and answered after it.
#[test]
fn request_pipelined_mid_stream_is_answered_next() {
    let s = RelayWithMock::start();
    let mut c = Conn::connect(s.relay.addr);
    c.send(&stream_request(&prompt_body("first", None, Some(6))));
    assert_stream_head(&c.expect_head("first stream"));
    // The relay is streaming now; the next request arrives while it watches the socket.
    c.send(&get("/healthz"));
    let first = c.read_chunked_body().expect("first body");
    assert!(first.complete);
    let resp = c.read_response("GET /healthz pipelined mid-stream");
    assert_eq!(resp.status(), 200);
}
