//! Unit tests for the response side: heads we write, and upstream heads we read.
//!
//! Test code only: its parent declares it `#[cfg(test)]`.

use super::body::Framing;
use super::response::{
    LAST_CHUNK, ResponseError, ResponseHead, chunk_size_line, error_response, parse_response_head,
    reason, write_head,
};

const MAX: usize = 16 * 1024;

fn parse(input: &[u8]) -> Result<Option<(ResponseHead, usize)>, ResponseError> {
    parse_response_head(input, MAX)
}

/// The head of a complete response, checked to end exactly where `body` starts.
fn head(head: &str, body: &str) -> ResponseHead {
    let input = format!("{head}{body}");
    let (parsed, consumed) = parse(input.as_bytes())
        .unwrap()
        .expect("head should be complete");
    assert_eq!(consumed, head.len());
    parsed
}

#[test]
fn writes_a_status_line_and_headers() {
    let mut out = b"previous".to_vec();
    write_head(
        &mut out,
        200,
        &[
            ("Content-Type", "text/event-stream"),
            ("Transfer-Encoding", "chunked"),
        ],
    );
    assert_eq!(
        out,
        b"previousHTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    let mut bare = Vec::new();
    write_head(&mut bare, 599, &[]);
    assert_eq!(bare, b"HTTP/1.1 599 \r\n\r\n");
}

#[test]
fn reason_phrases_are_canonical() {
    assert_eq!(reason(100), "Continue");
    assert_eq!(reason(413), "Content Too Large");
    assert_eq!(reason(431), "Request Header Fields Too Large");
    assert_eq!(reason(501), "Not Implemented");
    assert_eq!(reason(799), "");
}

#[test]
fn error_responses_carry_a_json_body() {
    let mut out = Vec::new();
    error_response(
        &mut out,
        405,
        "method_not_allowed",
        "use \"POST\"\r\nX: injected",
        &[("Allow", "POST")],
        true,
    );
    let text = String::from_utf8(out).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let lines: Vec<&str> = head.split("\r\n").collect();
    assert_eq!(lines[0], "HTTP/1.1 405 Method Not Allowed");
    assert!(lines.contains(&"Content-Type: application/json"));
    assert!(lines.contains(&format!("Content-Length: {}", body.len()).as_str()));
    assert!(lines.contains(&"Allow: POST"));
    assert!(lines.contains(&"Connection: close"));
    assert!(
        !lines.iter().any(|l| l.starts_with("X:")),
        "the message must not inject a header"
    );
    let json: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(json["error"]["code"], "method_not_allowed");
    assert_eq!(json["error"]["message"], "use \"POST\"\r\nX: injected");

    let mut open = Vec::new();
    error_response(&mut open, 404, "not_found", "no route", &[], false);
    assert!(!String::from_utf8(open).unwrap().contains("Connection"));
}

#[test]
fn chunk_size_lines_are_lowercase_hex() {
    let mut buf = [0u8; 20];
    assert_eq!(chunk_size_line(0, &mut buf), b"0\r\n");
    assert_eq!(chunk_size_line(1, &mut buf), b"1\r\n");
    assert_eq!(chunk_size_line(26, &mut buf), b"1a\r\n");
    assert_eq!(chunk_size_line(4096, &mut buf), b"1000\r\n");
    assert_eq!(
        chunk_size_line(usize::MAX, &mut buf),
        format!("{:x}\r\n", usize::MAX).as_bytes()
    );
    assert_eq!(LAST_CHUNK, b"0\r\n\r\n");
}

#[test]
fn incomplete_heads_need_more() {
    let full = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n";
    for end in 0..full.len() {
        assert_eq!(parse(&full[..end]), Ok(None), "at {end}");
    }
}

#[test]
fn framing_follows_rfc_9112() {
    let chunked = head(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/event-stream\r\n\r\n",
        "5\r\n",
    );
    assert_eq!(
        chunked,
        ResponseHead {
            status: 200,
            framing: Framing::Chunked,
            keep_alive: true,
            content_type: Some("text/event-stream".into()),
            headers: vec![
                ("Transfer-Encoding".into(), b"chunked".to_vec()),
                ("Content-Type".into(), b"text/event-stream".to_vec()),
            ],
        }
    );
    assert_eq!(
        head("HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", "{}").framing,
        Framing::Length(12)
    );
    assert_eq!(
        head("HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\n", "").framing,
        Framing::Length(3)
    );
    assert_eq!(
        head("HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n", "").framing,
        Framing::None
    );
    assert_eq!(
        head(
            "HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
            ""
        )
        .framing,
        Framing::None
    );
    let gzip = head(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        "",
    );
    assert_eq!(
        (gzip.framing, gzip.keep_alive),
        (Framing::UntilClose, false)
    );
    let gzip_chunked = head(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        "",
    );
    assert_eq!(gzip_chunked.framing, Framing::Chunked);
    let close_delimited = head("HTTP/1.1 200 OK\r\n\r\n", "data");
    assert_eq!(
        (close_delimited.framing, close_delimited.keep_alive),
        (Framing::UntilClose, false)
    );
    assert_eq!(close_delimited.content_type, None);
}

#[test]
fn keep_alive_follows_version_and_connection() {
    assert!(
        !head(
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            ""
        )
        .keep_alive
    );
    assert!(!head("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", "").keep_alive);
    assert!(
        head(
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
            ""
        )
        .keep_alive
    );
}

#[test]
fn interim_responses_are_skipped() {
    let input = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n\
                 HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi";
    let (parsed, consumed) = parse(input.as_bytes()).unwrap().unwrap();
    assert_eq!(parsed.status, 200);
    assert_eq!(&input[consumed..], "hi");
    // Only the interim response so far: still incomplete.
    assert_eq!(parse(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 2"), Ok(None));
}

#[test]
fn switching_protocols_is_returned_not_skipped() {
    let switched = head("HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n", "");
    assert_eq!(
        (switched.status, switched.framing, switched.keep_alive),
        (101, Framing::None, false)
    );
}

#[test]
fn ambiguous_framing_is_refused() {
    let refuse = |input: &str| parse(input.as_bytes()).unwrap_err();
    assert_eq!(
        refuse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"),
        ResponseError::TransferEncodingWithContentLength
    );
    assert_eq!(
        refuse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
        ResponseError::ConflictingContentLength
    );
    assert_eq!(
        refuse("HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n"),
        ResponseError::ConflictingContentLength
    );
    assert_eq!(
        refuse("HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n"),
        ResponseError::BadContentLength
    );
    assert_eq!(
        refuse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"),
        ResponseError::BadTransferEncoding
    );
    assert_eq!(
        refuse("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
        ResponseError::BadTransferEncoding
    );
}

#[test]
fn malformed_heads_are_refused() {
    assert!(matches!(
        parse(b"HTTP/2 200 OK\r\n\r\n"),
        Err(ResponseError::Malformed(_))
    ));
    assert!(matches!(
        parse(b"HTTP/1.1 2x0 OK\r\n\r\n"),
        Err(ResponseError::Malformed(_))
    ));
    assert_eq!(
        parse(b"HTTP/1.1 099 Odd\r\n\r\n"),
        Err(ResponseError::BadStatus(99))
    );
    let many: String = (0..101).map(|i| format!("X-{i}: v\r\n")).collect();
    let input = format!("HTTP/1.1 200 OK\r\n{many}\r\n");
    assert_eq!(parse(input.as_bytes()), Err(ResponseError::TooManyHeaders));
    assert!(!ResponseError::TooManyHeaders.to_string().is_empty());
}

#[test]
fn heads_are_bounded_including_interim_responses() {
    let input = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    assert!(parse_response_head(input, input.len()).unwrap().is_some());
    assert_eq!(
        parse_response_head(input, input.len() - 1),
        Err(ResponseError::HeadTooLarge)
    );
    // Incomplete and already at the limit: it can only end beyond it.
    assert_eq!(
        parse_response_head(&input[..20], 20),
        Err(ResponseError::HeadTooLarge)
    );
    assert_eq!(parse_response_head(&input[..20], 21), Ok(None));
    let interim = b"HTTP/1.1 100 Continue\r\n\r\n".repeat(10);
    assert_eq!(
        parse_response_head(&interim, 200),
        Err(ResponseError::HeadTooLarge)
    );
}
