//! Unit tests for `RequestReader`: every status rule, and the classic request smuggling shapes.
//!
//! Test code only: its parent declares it `#[cfg(test)]`.

use super::request::{HttpError, Limits, Progress, Request, RequestReader};

/// What a connection observes from the reader, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Event {
    Continue,
    Request(Request),
    Error(HttpError),
}

/// Feed `pieces` to a fresh reader the way a connection would: append each piece to a buffer, call
/// `advance` until it needs more, drop what it consumed. Also checks the memory contract on every
/// call.
pub(super) fn feed_pieces(limits: &Limits, pieces: &[&[u8]]) -> Vec<Event> {
    let mut reader = RequestReader::new(limits.clone());
    let mut buf: Vec<u8> = Vec::new();
    let mut events = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            let (consumed, result) = reader.advance(&buf);
            assert!(consumed <= buf.len(), "consumed more than it was given");
            buf.drain(..consumed);
            assert!(
                reader.body_bytes_held() <= limits.max_body_bytes,
                "body held beyond the limit"
            );
            match result {
                Ok(Progress::NeedMore) => {
                    // The caller never has to keep more than one head's worth of bytes.
                    assert!(
                        buf.is_empty() || buf.len() < limits.max_head_bytes,
                        "left {} bytes",
                        buf.len()
                    );
                    break;
                }
                Ok(Progress::SendContinue) => events.push(Event::Continue),
                Ok(Progress::Complete(request)) => events.push(Event::Request(request)),
                Err(error) => {
                    events.push(Event::Error(error));
                    return events;
                }
            }
        }
    }
    events
}

/// Feed `input` in pieces of `step` bytes.
pub(super) fn feed(limits: &Limits, input: &[u8], step: usize) -> Vec<Event> {
    let pieces: Vec<&[u8]> = input.chunks(step.max(1)).collect();
    feed_pieces(limits, &pieces)
}

/// Feed `input` in one piece and in single bytes; both must agree. Returns the events.
fn run(input: &[u8]) -> Vec<Event> {
    let limits = Limits::default();
    let whole = feed(&limits, input, input.len());
    assert_eq!(
        whole,
        feed(&limits, input, 1),
        "byte-by-byte feeding disagrees"
    );
    whole
}

fn only_request(input: &[u8]) -> Request {
    match run(input).as_slice() {
        [Event::Request(request)] => request.clone(),
        other => panic!("expected one request, got {other:?}"),
    }
}

/// The single error `input` provokes, checked to close the connection.
fn error(input: &[u8]) -> HttpError {
    match run(input).last() {
        Some(Event::Error(error)) => {
            assert!(error.close, "{error} should close the connection");
            error.clone()
        }
        other => panic!("expected an error, got {other:?}"),
    }
}

fn assert_status(input: &[u8], status: u16, code: &str) {
    let error = error(input);
    assert_eq!((error.status, error.code), (status, code), "{error}");
}

#[test]
fn reads_a_get_with_query() {
    let request = only_request(b"GET /v1/models?alt=sse&x=1 HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(request.method, "GET");
    assert_eq!(request.path, "/v1/models");
    assert_eq!(request.query.as_deref(), Some("alt=sse&x=1"));
    assert!(request.keep_alive);
    assert!(request.body.is_empty());
}

#[test]
fn reads_content_length_and_chunked_bodies() {
    let request = only_request(b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!(request.body, b"hello");
    assert_eq!(request.query, None);
    let chunked = b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
                    3;x=y\r\nhel\r\n2\r\nlo\r\n0\r\nTrailer: 1\r\n\r\n";
    assert_eq!(only_request(chunked).body, b"hello");
}

#[test]
fn reads_pipelined_requests() {
    let input = b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi\
                  GET /b HTTP/1.1\r\nHost: a\r\n\r\n";
    let events = run(input);
    assert!(matches!(&events[..], [Event::Request(a), Event::Request(b)]
            if a.body == b"hi" && b.path == "/b"));
}

#[test]
fn an_incomplete_head_is_left_in_the_callers_buffer() {
    let mut reader = RequestReader::new(Limits::default());
    let head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    for end in 1..head.len() {
        assert_eq!(
            reader.advance(&head[..end]),
            (0, Ok(Progress::NeedMore)),
            "at {end}"
        );
    }
    let (consumed, result) = reader.advance(head);
    assert_eq!(consumed, head.len());
    assert!(matches!(result, Ok(Progress::Complete(_))));
}

#[test]
fn body_bytes_are_consumed_as_they_arrive() {
    let mut reader = RequestReader::new(Limits::default());
    let head = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nab";
    assert_eq!(reader.advance(head), (head.len(), Ok(Progress::NeedMore)));
    assert!(!reader.is_idle());
    assert_eq!(reader.body_bytes_held(), 2);
    let (consumed, result) = reader.advance(b"cdGET");
    assert_eq!(consumed, 2);
    assert_eq!(
        result.unwrap(),
        Progress::Complete(Request {
            method: "POST".into(),
            path: "/".into(),
            query: None,
            version: 1,
            keep_alive: true,
            headers: vec![
                ("Host".into(), b"a".to_vec()),
                ("Content-Length".into(), b"4".to_vec()),
            ],
            body: b"abcd".to_vec(),
        })
    );
    assert!(reader.is_idle());
}

#[test]
fn empty_lines_before_a_request_are_ignored() {
    let events =
        run(b"\r\n\r\n\nGET / HTTP/1.1\r\nHost: a\r\n\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(events.len(), 2);
}

#[test]
fn lf_only_heads_are_accepted_like_httparse_does() {
    assert_eq!(only_request(b"GET /lf HTTP/1.1\nHost: a\n\n").path, "/lf");
}

#[test]
fn keep_alive_follows_version_and_connection_tokens() {
    let keep = |head: &str| only_request(head.as_bytes()).keep_alive;
    assert!(keep("GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
    assert!(!keep(
        "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    ));
    assert!(!keep(
        "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, CLOSE\r\n\r\n"
    ));
    assert!(keep(
        "GET / HTTP/1.1\r\nHost: a\r\nConnection: closed\r\n\r\n"
    ));
    assert!(!keep("GET / HTTP/1.0\r\n\r\n"));
    assert!(keep("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
    assert!(keep(
        "GET / HTTP/1.0\r\nConnection: foo, keep-alive\r\n\r\n"
    ));
    assert!(!keep(
        "GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n"
    ));
}

#[test]
fn expect_continue_is_reported_once_when_a_body_follows() {
    let events =
        run(b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\nx");
    assert!(matches!(&events[..], [Event::Continue, Event::Request(r)] if r.body == b"x"));
    let chunked = run(b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\
                        Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    assert!(matches!(&chunked[..], [Event::Continue, Event::Request(_)]));
    // No body, or an HTTP/1.0 client: nothing to wait for.
    let no_body =
        run(b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n");
    assert!(matches!(&no_body[..], [Event::Request(_)]));
    let old = run(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx");
    assert!(matches!(&old[..], [Event::Request(_)]));
}

#[test]
fn head_too_long_is_431() {
    let limits = Limits {
        max_head_bytes: 64,
        ..Limits::default()
    };
    let long = format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n", "a".repeat(64));
    let events = feed(&limits, long.as_bytes(), 1);
    assert!(matches!(&events[..], [Event::Error(e)]
            if e.status == 431 && e.code == "header_too_large" && e.close));
    // A head of exactly the limit is fine.
    let exact = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
        "a".repeat(64 - 32)
    );
    assert_eq!(exact.len(), 64);
    assert!(matches!(
        &feed(&limits, exact.as_bytes(), 1)[..],
        [Event::Request(_)]
    ));
}

#[test]
fn too_many_headers_is_431() {
    let limits = Limits {
        max_headers: 2,
        ..Limits::default()
    };
    let events = feed(
        &limits,
        b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n",
        7,
    );
    assert!(matches!(&events[..], [Event::Error(e)] if e.status == 431 && e.close));
}

#[test]
fn content_length_above_the_limit_is_413_before_reading_the_body() {
    let limits = Limits {
        max_body_bytes: 4,
        ..Limits::default()
    };
    let mut reader = RequestReader::new(limits.clone());
    let (_, result) = reader.advance(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n");
    let error = result.unwrap_err();
    assert_eq!(
        (error.status, error.code, error.close),
        (413, "body_too_large", true)
    );
    let ok = feed(
        &limits,
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nabcd",
        1,
    );
    assert!(matches!(&ok[..], [Event::Request(_)]));
}

#[test]
fn chunked_body_growing_above_the_limit_is_413() {
    let limits = Limits {
        max_body_bytes: 4,
        ..Limits::default()
    };
    let input = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
                  3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
    for step in [1, 5, input.len()] {
        let events = feed(&limits, input, step);
        assert!(
            matches!(&events[..], [Event::Error(e)] if e.status == 413 && e.close),
            "{events:?}"
        );
    }
}

#[test]
fn transfer_encoding_with_content_length_is_rejected() {
    // CL.TE and TE.CL: the two halves of the classic smuggling attack.
    assert_status(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
        400,
        "bad_framing",
    );
    assert_status(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n\
          8\r\nSMUGGLED\r\n0\r\n\r\n",
        400,
        "bad_framing",
    );
    // Even an invalid Content-Length next to Transfer-Encoding.
    assert_status(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: x\r\n\r\n",
        400,
        "bad_framing",
    );
}

#[test]
fn obfuscated_transfer_encodings_are_rejected() {
    // TE.TE: a second, odd Transfer-Encoding that one parser honours and another ignores.
    for te in [
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: x",
        "Transfer-Encoding: xchunked",
        "Transfer-Encoding: chunked, identity",
        "Transfer-Encoding: chunked;q=1",
        "Transfer-Encoding: chunked, chunked",
        "Transfer-Encoding:",
    ] {
        let input = format!("POST / HTTP/1.1\r\nHost: a\r\n{te}\r\n\r\n0\r\n\r\n");
        assert_status(input.as_bytes(), 400, "bad_framing");
    }
    // Whitespace before the colon is a parse error, not a differently named field.
    assert_status(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n",
        400,
        "bad_request",
    );
    // Case does not matter for the coding name.
    let request = only_request(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ChUnKeD\r\n\r\n1\r\nz\r\n0\r\n\r\n",
    );
    assert_eq!(request.body, b"z");
}

#[test]
fn other_codings_before_chunked_are_501() {
    assert_status(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        501,
        "not_implemented",
    );
    assert_status(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
        501,
        "not_implemented",
    );
}

#[test]
fn transfer_encoding_in_http_1_0_is_rejected() {
    assert_status(
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
        "bad_framing",
    );
}

#[test]
fn invalid_content_lengths_are_400() {
    for value in [
        "+5",
        "-1",
        "0x5",
        "5 5",
        "5,",
        "",
        "1e3",
        "99999999999999999999999",
    ] {
        let input = format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {value}\r\n\r\n");
        assert_status(input.as_bytes(), 400, "bad_framing");
    }
}

#[test]
fn differing_content_lengths_are_400_and_identical_ones_are_fine() {
    assert_status(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        400,
        "bad_framing",
    );
    assert_status(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 2\r\n\r\n",
        400,
        "bad_framing",
    );
    let fields = only_request(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\ncontent-length: 2\r\n\r\nok",
    );
    assert_eq!(fields.body, b"ok");
    let list = only_request(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2 ,2\r\n\r\nok");
    assert_eq!(list.body, b"ok");
}

#[test]
fn bad_chunks_are_400() {
    let prefix = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
    for body in [
        "\r\n",
        "5\r\nhello\r\n\r\n",
        "z\r\n",
        "5\nhello\n0\n\n",
        "1\r\nab\r\n",
        "10000000000000000\r\n",
    ] {
        let input = format!("{prefix}{body}");
        assert_status(input.as_bytes(), 400, "bad_chunk");
    }
}

#[test]
fn malformed_heads_are_400() {
    for head in [
        "G(ET / HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET / HTTP/2.0\r\nHost: a\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n folded\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nBad Name: 1\r\n\r\n",
        "GET\r\n\r\n",
        "\rGET / HTTP/1.1\r\n\r\n",
    ] {
        assert_status(head.as_bytes(), 400, "bad_request");
    }
}

#[test]
fn host_is_required_once_in_http_1_1() {
    assert_status(b"GET / HTTP/1.1\r\n\r\n", 400, "bad_request");
    assert_status(
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        400,
        "bad_request",
    );
    assert_eq!(only_request(b"GET /old HTTP/1.0\r\n\r\n").path, "/old");
}

#[test]
fn an_error_is_sticky_and_closes() {
    let mut reader = RequestReader::new(Limits::default());
    let (_, first) = reader.advance(b"GET / HTTP/1.1\r\n\r\n");
    let first = first.unwrap_err();
    assert_eq!(
        reader.advance(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
        (0, Err(first))
    );
    assert!(!reader.is_idle());
}

#[test]
fn errors_display_their_status_and_code() {
    let error = error(b"GET / HTTP/1.1\r\n\r\n");
    assert!(
        error.to_string().starts_with("400 bad_request: "),
        "{error}"
    );
}

#[test]
fn a_huge_max_headers_setting_costs_nothing_per_request() {
    let limits = Limits {
        max_headers: usize::MAX,
        ..Limits::default()
    };
    let events = feed(&limits, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 1);
    assert!(matches!(&events[..], [Event::Request(_)]));
}

#[test]
fn absolute_form_targets_route_by_their_path() {
    let req = only_request(b"GET http://127.0.0.1:8080/healthz?x=1 HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(
        (req.path.as_str(), req.query.as_deref()),
        ("/healthz", Some("x=1"))
    );
    let req = only_request(b"GET HTTPS://example.com HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(req.path, "/");
    let req = only_request(b"GET http://example.com?q=1 HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(
        (req.path.as_str(), req.query.as_deref()),
        ("/", Some("q=1"))
    );
    let req = only_request(b"GET /plain HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(req.path, "/plain");
}

#[test]
fn a_chunk_announcing_more_than_the_body_limit_is_refused_at_once() {
    let limits = Limits {
        max_body_bytes: 100,
        ..Limits::default()
    };
    let mut reader = RequestReader::new(limits);
    let input =
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n7fffffffffffffff\r\n";
    let (_, result) = reader.advance(input);
    assert_eq!(result.unwrap_err().status, 413);
    // Exactly at the limit is fine.
    let mut reader = RequestReader::new(Limits {
        max_body_bytes: 4,
        ..Limits::default()
    });
    let input =
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n";
    let (_, result) = reader.advance(input);
    assert!(matches!(result, Ok(Progress::Complete(_))), "{result:?}");
}
