//! Response heads: the ones we write to clients, and the ones we read from upstreams.
//!
//! # Writing
//!
//! Output is appended to a caller-owned `Vec<u8>` (the connection's outgoing buffer), so writing a
//! head costs no allocation of its own once that buffer has grown. Chunk framing for streamed
//! bodies is two tiny pieces around each payload, a size line ([`chunk_size_line`], built on the
//! stack) and a CRLF, so the reactor can send `size line, payload, CRLF` with one `writev` and
//! never copy the payload.
//!
//! # Reading
//!
//! [`parse_response_head`] reads an upstream's reply to our POST. It is stateless: the upstream
//! connection calls it again with the grown buffer until the head is complete. That rescans the
//! head on every call, which is fine here because upstreams are trusted to be reasonably fast and
//! heads are small (bounded by `max_head_bytes`); the client side, which faces untrusted peers,
//! uses the resumable `RequestReader`.
//!
//! As a client we are lenient where the RFC lets us be and strict where two readings of the framing
//! are possible: a response with both Transfer-Encoding and Content-Length, or with differing
//! lengths, is refused rather than guessed at, because guessing wrong means relaying the next
//! response's bytes as this one's body.

use std::fmt;

use super::body::{self, ContentLengthError, Framing};
use super::{header_values, keep_alive, trim_ows};

/// The last chunk of a chunked body, with an empty trailer section.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// How many header fields an upstream response head may have.
const MAX_RESPONSE_HEADERS: usize = 100;

/// Append a status line, the header fields and the blank line that ends the head.
///
/// `headers` are `(name, value)` pairs written exactly as given: the caller must not pass values
/// that come from a peer unchecked, since a CR or LF in them would inject header fields.
pub fn write_head(out: &mut Vec<u8>, status: u16, headers: &[(&str, &str)]) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason(status).as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The canonical reason phrase for `status` (RFC 9110 §15), or `""` for codes without one: the
/// reason phrase is optional in HTTP/1.1 and clients must ignore it.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        422 => "Unprocessable Content",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// Append a complete error response: a JSON body `{"error":{"code":..,"message":..}}`, with
/// `Content-Type: application/json`, `Content-Length`, the `extra` header fields (e.g. `("Allow",
/// "POST")`) and `Connection: close` when `close`.
pub fn error_response(
    out: &mut Vec<u8>,
    status: u16,
    code: &str,
    message: &str,
    extra: &[(&str, &str)],
    close: bool,
) {
    #[derive(serde::Serialize)]
    struct Body<'a> {
        error: Detail<'a>,
    }
    #[derive(serde::Serialize)]
    struct Detail<'a> {
        code: &'a str,
        message: &'a str,
    }
    // serde_json escapes everything, so a message quoting client input cannot break out of the
    // body. Serializing two strings cannot fail; the fallback only keeps this function free of
    // panics.
    let body = serde_json::to_vec(&Body {
        error: Detail { code, message },
    })
    .unwrap_or_else(|_| br#"{"error":{"code":"internal","message":""}}"#.to_vec());
    let length = body.len().to_string();
    let mut headers: Vec<(&str, &str)> = Vec::with_capacity(extra.len() + 3);
    headers.push(("Content-Type", "application/json"));
    headers.push(("Content-Length", &length));
    headers.extend_from_slice(extra);
    if close {
        headers.push(("Connection", "close"));
    }
    write_head(out, status, &headers);
    out.extend_from_slice(&body);
}

/// The chunk-size line for a chunk of `len` bytes (lowercase hex, then CRLF, e.g. `"1a\r\n"`),
/// written into `buf`; returns the used part. 16 hex digits + CRLF fit in 20 bytes for any `usize`.
///
/// ```
/// use tokenpipe::http::response::chunk_size_line;
/// let mut buf = [0u8; 20];
/// assert_eq!(chunk_size_line(26, &mut buf), b"1a\r\n");
/// assert_eq!(chunk_size_line(0, &mut buf), b"0\r\n");
/// ```
pub fn chunk_size_line(len: usize, buf: &mut [u8; 20]) -> &[u8] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    // Digits are written right to left, ending just before the CRLF at the end of `buf`.
    buf[18] = b'\r';
    buf[19] = b'\n';
    let mut start = 18;
    let mut rest = len;
    loop {
        start -= 1;
        buf[start] = HEX[rest % 16];
        rest /= 16;
        if rest == 0 {
            break;
        }
    }
    &buf[start..]
}

/// A parsed upstream response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    /// How the body that follows the head is delimited.
    pub framing: Framing,
    /// Whether the connection may be reused after the body (and only if the body was read to its
    /// end).
    pub keep_alive: bool,
    /// The Content-Type value, if any (e.g. `text/event-stream`).
    pub content_type: Option<String>,
    /// Every header field, in order (a pass-through route forwards the end-to-end ones).
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Why an upstream response head was refused. The upstream connection must be closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseError {
    /// The head (interim responses included) is longer than `max_head_bytes`.
    HeadTooLarge,
    /// More header fields than we accept.
    TooManyHeaders,
    /// httparse rejected the head.
    Malformed(httparse::Error),
    /// A status code below 100.
    BadStatus(u16),
    /// A Content-Length that is not 1+ digits or does not fit in 64 bits.
    BadContentLength,
    /// Several Content-Length values that differ.
    ConflictingContentLength,
    /// Both Transfer-Encoding and Content-Length: a classic smuggling signature.
    TransferEncodingWithContentLength,
    /// Transfer-Encoding in an HTTP/1.0 response, or `chunked` applied twice.
    BadTransferEncoding,
}

impl fmt::Display for ResponseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResponseError::HeadTooLarge => f.write_str("response head too large"),
            ResponseError::TooManyHeaders => f.write_str("too many response header fields"),
            ResponseError::Malformed(error) => write!(f, "malformed response head: {error}"),
            ResponseError::BadStatus(status) => write!(f, "invalid status code {status}"),
            ResponseError::BadContentLength => f.write_str("invalid Content-Length"),
            ResponseError::ConflictingContentLength => {
                f.write_str("conflicting Content-Length values")
            }
            ResponseError::TransferEncodingWithContentLength => {
                f.write_str("both Transfer-Encoding and Content-Length")
            }
            ResponseError::BadTransferEncoding => f.write_str("invalid Transfer-Encoding"),
        }
    }
}

impl std::error::Error for ResponseError {}

/// Parse the head of the response to a POST from `buf`.
///
/// `Ok(None)`: incomplete, call again with more bytes. `Ok(Some((head, consumed)))`: the body
/// starts at `buf[consumed]`. Interim 1xx responses (except 101, which ends HTTP on this
/// connection) are skipped and their bytes included in `consumed`. Since the caller keeps
/// everything until a final head arrives, the `max_head_bytes` limit covers the interim responses
/// too.
pub fn parse_response_head(
    buf: &[u8],
    max_head_bytes: usize,
) -> Result<Option<(ResponseHead, usize)>, ResponseError> {
    let mut start = 0;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
        let mut parsed = httparse::Response::new(&mut headers);
        let end = match parsed.parse(&buf[start..]) {
            Ok(httparse::Status::Complete(len)) => start + len,
            Ok(httparse::Status::Partial) if !buf.is_empty() && buf.len() >= max_head_bytes => {
                return Err(ResponseError::HeadTooLarge);
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(ResponseError::TooManyHeaders),
            Err(error) => return Err(ResponseError::Malformed(error)),
        };
        if end > max_head_bytes {
            return Err(ResponseError::HeadTooLarge);
        }
        let (Some(version), Some(status)) = (parsed.version, parsed.code) else {
            return Err(ResponseError::Malformed(httparse::Error::Status));
        };
        if status < 100 {
            return Err(ResponseError::BadStatus(status));
        }
        if (100..200).contains(&status) && status != 101 {
            // An interim response (100 Continue, 103 Early Hints): the real one follows.
            start = end;
            continue;
        }
        let head = response_head(version, status, parsed.headers)?;
        return Ok(Some((head, end)));
    }
}

/// Apply the client-side framing rules (RFC 9112 §6.3) to a final response head.
fn response_head(
    version: u8,
    status: u16,
    headers: &[httparse::Header<'_>],
) -> Result<ResponseHead, ResponseError> {
    let framing = if (100..200).contains(&status) || status == 204 || status == 304 {
        Framing::None // these never have a body, whatever the framing fields say
    } else {
        let codings = body::transfer_codings(headers);
        let length = body::content_length(headers);
        if codings.present {
            if !matches!(length, Ok(None)) {
                return Err(ResponseError::TransferEncodingWithContentLength);
            }
            if version == 0 || codings.chunked > 1 {
                return Err(ResponseError::BadTransferEncoding);
            }
            // A final coding other than chunked cannot delimit the body: only the close can.
            if codings.last_is_chunked {
                Framing::Chunked
            } else {
                Framing::UntilClose
            }
        } else {
            match length {
                Ok(Some(n)) => Framing::Length(n),
                Ok(None) => Framing::UntilClose,
                Err(ContentLengthError::Invalid) => return Err(ResponseError::BadContentLength),
                Err(ContentLengthError::Conflicting) => {
                    return Err(ResponseError::ConflictingContentLength);
                }
            }
        }
    };
    // A body delimited by the close leaves nothing to reuse; neither does a protocol switch.
    let reusable = framing != Framing::UntilClose && status != 101;
    let content_type = header_values(headers, "content-type")
        .next()
        .map(|value| String::from_utf8_lossy(trim_ows(value)).into_owned());
    Ok(ResponseHead {
        status,
        framing,
        keep_alive: reusable && keep_alive(version, headers),
        content_type,
        headers: super::owned_headers(headers),
    })
}

/// Append `n` in decimal, without going through the formatting machinery.
fn push_decimal(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20]; // u64::MAX has 20 digits
    let mut start = digits.len();
    let mut rest = n;
    loop {
        start -= 1;
        digits[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}
