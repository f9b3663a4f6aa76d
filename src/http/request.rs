//! Reading requests on the server side: head, framing rules, body, limits.
//!
//! [`RequestReader`] turns a connection's incoming bytes into [`Request`]s, one at a time, for as
//! many pipelined requests as arrive. It is *resumable*: the reactor calls
//! [`RequestReader::advance`] after every read with whatever is buffered, however small, and the
//! reader continues where it stopped.
//!
//! # The buffer contract
//!
//! The caller owns the input buffer. `advance(buf)` returns how many bytes of `buf` it consumed;
//! the caller drops exactly those and passes the rest, plus anything newly read, next time. While
//! the head is incomplete the reader consumes nothing (the head is parsed in one piece, from the
//! caller's buffer), so the caller holds at most [`Limits::max_head_bytes`] of it. Once the head is
//! parsed, every body byte is consumed as soon as it is seen, and the payload is accumulated in the
//! request (at most [`Limits::max_body_bytes`]). So a connection's memory is bounded whatever its
//! peer sends.
//!
//! # Why it is cheap for tiny reads
//!
//! A slow or hostile client may send one byte per packet. The reader remembers how far it already
//! searched for the blank line that ends the head, and where the line it is in began (`HeadScan`), so
//! each call looks only at new bytes; httparse runs once, on the complete head. Body bytes are decoded exactly once, because
//! they are consumed when decoded.
//!
//! # Framing rules (RFC 9112 §6.3), and why each one rejects
//!
//! Request smuggling needs two parsers that disagree about where a request ends. So whenever the
//! framing could be read two ways, the request is refused with `close: true`: after a framing error
//! we cannot know where the next request starts, so the connection must not be reused.
//!
//! | Input                                              | Answer                    |
//! |----------------------------------------------------|---------------------------|
//! | request target longer than `max_target_bytes`      | 414 `uri_too_long`        |
//! | head longer than `max_head_bytes`, a field line    | 431 `header_too_large`    |
//! | longer than `max_field_line_bytes`, too many fields|                           |
//! | malformed head (httparse error), bad Host          | 400 `bad_request`         |
//! | Transfer-Encoding with Content-Length              | 400 `bad_framing`         |
//! | Transfer-Encoding in HTTP/1.0                      | 400 `bad_framing`         |
//! | final coding not `chunked`, `chunked` twice        | 400 `bad_framing`         |
//! | another coding before `chunked` (`gzip, chunked`)  | 501 `not_implemented`     |
//! | Content-Length not digits, or differing values     | 400 `bad_framing`         |
//! | Content-Length above `max_body_bytes`              | 413 `body_too_large`      |
//! | malformed chunked body                             | 400 `bad_chunk`           |
//! | chunked body growing above `max_body_bytes`        | 413 `body_too_large`      |

use std::fmt;
use std::ops::Range;

use super::body::{self, BodyDecoder, ContentLengthError, Framing};
use super::head_scan::{HeadLimits, HeadScan, HeadSearch, leading_empty_lines};
use super::{header_values, keep_alive, trim_ows};

/// Payload ranges whose capacity a reader keeps between reads (see `RequestReader::advance`).
const KEPT_RANGES: usize = 16;

/// Bounds on what one request may make us hold.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Longest request head (request line + header fields + blank line), in bytes.
    pub max_head_bytes: usize,
    /// Largest request body (the payload, after removing chunk framing), in bytes.
    pub max_body_bytes: usize,
    /// Most header fields in one head.
    pub max_headers: usize,
    /// Longest request target (the path and query, or an absolute URL), in bytes: 414 above it. It bounds
    /// what a request line alone can make a route, a log line or an upstream request carry.
    pub max_target_bytes: usize,
    /// Longest header field line (name, colon and value, without the line ending), in bytes: 431 above it.
    pub max_field_line_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head_bytes: 16 * 1024,
            max_body_bytes: 1024 * 1024,
            max_headers: 64,
            max_target_bytes: 8 * 1024,
            max_field_line_bytes: 8 * 1024,
        }
    }
}

/// A complete request, as the relay needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The request target's path without its query (`/v1/generate` for `/v1/generate?alt=sse`). An
    /// absolute-form target (`http://host/p?q`, RFC 9112 §3.2.2) is reduced to its path (`/p`); `*` passes
    /// through unchanged.
    pub path: String,
    /// The query without its `?`, if the target had one.
    pub query: Option<String>,
    /// The minor version of HTTP/1.x: 0 or 1. An HTTP/1.0 client cannot read a chunked response.
    pub version: u8,
    /// Whether the connection may carry another request after this one's response.
    pub keep_alive: bool,
    /// Every header field, in order, names as sent (a pass-through route forwards the end-to-end ones).
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body payload (chunk framing removed).
    pub body: Vec<u8>,
}

/// A request we refuse, with everything needed to answer it (see `response::error_response`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    /// The HTTP status to answer with.
    pub status: u16,
    /// A short machine-readable reason, e.g. `"body_too_large"`.
    pub code: &'static str,
    /// A human-readable explanation.
    pub message: String,
    /// The connection must be closed after the answer: framing is in doubt, or the rest of the
    /// input cannot be trusted.
    pub close: bool,
}

impl HttpError {
    /// An error after which the connection is closed (every error this reader produces today).
    fn closing(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        HttpError {
            status,
            code,
            message: message.into(),
            close: true,
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.message)
    }
}

impl std::error::Error for HttpError {}

/// What [`RequestReader::advance`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// Everything given was used (or must be kept, for an incomplete head): read more, then call
    /// again.
    NeedMore,
    /// The head asked for `Expect: 100-continue` and a body follows: reply `100 Continue` now, then
    /// call `advance` again (body bytes may already be buffered). Reported exactly once per
    /// request.
    SendContinue,
    /// A whole request. The reader is ready for the next one; call `advance` again with the rest of
    /// the buffer, since a pipelined request may already be in it.
    Complete(Request),
}

/// Reads requests from one connection. See the module docs for the buffer contract.
#[derive(Debug)]
pub struct RequestReader {
    limits: Limits,
    state: ReadState,
    /// Payload ranges from the body decoder; kept across calls only to reuse its allocation.
    ranges: Vec<Range<usize>>,
}

/// ```text
///   AwaitingHead --head parsed--> ReadingBody --body done--> AwaitingHead (next request)
///        |                            |
///        +-------- any error ---------+-----> Failed (terminal: the connection must close)
/// ```
#[derive(Debug)]
enum ReadState {
    /// Looking for the end of the head in the caller's buffer, checking its limits on the way. The scan
    /// resumes where it stopped (`HeadScan`); the caller re-presents those bytes, unconsumed.
    AwaitingHead(HeadScan),
    /// The head is parsed and consumed; reading its body. Boxed: a connection spends most of its life
    /// between requests, and the reader is part of every connection's memory.
    ReadingBody(Box<PendingRequest>),
    /// An error was reported. The same error is returned on every further call.
    Failed(HttpError),
}

/// A request whose head is parsed and whose body is still arriving.
#[derive(Debug)]
struct PendingRequest {
    /// The request so far. Invariant: `request.body.len() <= max_body_bytes`.
    request: Request,
    decoder: BodyDecoder,
}

impl RequestReader {
    /// A reader waiting for the first request head.
    pub fn new(limits: Limits) -> Self {
        RequestReader {
            limits,
            state: ReadState::AwaitingHead(HeadScan::default()),
            ranges: Vec::new(),
        }
    }

    /// Read from `buf`: the connection's unconsumed input, starting where the previous call's
    /// consumed count left off (the caller drops consumed bytes, keeps the rest, and appends new
    /// ones).
    ///
    /// Returns `(consumed, progress)`. The count comes first and outside the `Result` because it is
    /// meaningful even on `NeedMore` (body bytes are consumed as they are decoded). After an error
    /// the reader stays failed and the count is irrelevant: every error closes the connection.
    pub fn advance(&mut self, buf: &[u8]) -> (usize, Result<Progress, HttpError>) {
        let mut consumed = 0;
        let result = self.step(buf, &mut consumed);
        if let Err(error) = &result {
            self.state = ReadState::Failed(error.clone());
        }
        (consumed, result)
    }

    /// True when no request is partly read by the reader: no body is outstanding and no error
    /// happened. At EOF, the client closed cleanly if this holds and the caller's buffer holds no
    /// request bytes.
    pub fn is_idle(&self) -> bool {
        matches!(self.state, ReadState::AwaitingHead(_))
    }

    /// Body bytes held by the reader for the request being read (never more than `max_body_bytes`).
    pub fn body_bytes_held(&self) -> usize {
        match &self.state {
            ReadState::ReadingBody(pending) => pending.request.body.len(),
            _ => 0,
        }
    }

    fn step(&mut self, buf: &[u8], consumed: &mut usize) -> Result<Progress, HttpError> {
        loop {
            match &mut self.state {
                ReadState::Failed(error) => return Err(error.clone()),
                ReadState::AwaitingHead(scan) => {
                    if scan.is_fresh() {
                        // RFC 9112 §2.2: ignore empty lines before a request line (some clients
                        // send an extra CRLF after a body). They are consumed so they cost no
                        // memory.
                        *consumed += leading_empty_lines(buf);
                    }
                    let rest = &buf[*consumed..];
                    let limits = &self.limits;
                    let head_len = match scan.advance(rest, head_limits(limits)) {
                        HeadSearch::Found(len) => len,
                        HeadSearch::NotYet => return Ok(Progress::NeedMore),
                        HeadSearch::TooLong => {
                            return Err(too_large(format!(
                                "request head exceeds {} bytes",
                                limits.max_head_bytes
                            )));
                        }
                        HeadSearch::FieldTooLong => {
                            return Err(too_large(format!(
                                "a header field line exceeds {} bytes",
                                limits.max_field_line_bytes
                            )));
                        }
                        HeadSearch::TargetTooLong => {
                            return Err(HttpError::closing(
                                414,
                                "uri_too_long",
                                format!("request target exceeds {} bytes", limits.max_target_bytes),
                            ));
                        }
                    };
                    let head = parse_head(&rest[..head_len], &self.limits)?;
                    *consumed += head_len;
                    let expect_continue = head.expect_continue;
                    self.state = ReadState::ReadingBody(Box::new(PendingRequest {
                        request: head.request,
                        decoder: BodyDecoder::new(head.framing),
                    }));
                    if expect_continue {
                        return Ok(Progress::SendContinue);
                    }
                }
                ReadState::ReadingBody(pending) => {
                    let rest = &buf[*consumed..];
                    self.ranges.clear();
                    let decoded = pending
                        .decoder
                        .decode(rest, &mut self.ranges)
                        .map_err(|e| {
                            HttpError::closing(
                                400,
                                "bad_chunk",
                                format!("malformed chunked body: {e}"),
                            )
                        })?;
                    for range in self.ranges.drain(..) {
                        // Invariant: the decoder only reports ranges within `rest`.
                        let payload = &rest[range];
                        if pending.request.body.len() + payload.len() > self.limits.max_body_bytes {
                            return Err(HttpError::closing(
                                413,
                                "body_too_large",
                                format!(
                                    "request body exceeds {} bytes",
                                    self.limits.max_body_bytes
                                ),
                            ));
                        }
                        pending.request.body.extend_from_slice(payload);
                    }
                    // A body of tiny chunks can leave thousands of ranges behind; the connection may then
                    // idle for minutes, so don't keep their capacity.
                    self.ranges.shrink_to(KEPT_RANGES);
                    *consumed += decoded.consumed;
                    let announced =
                        pending.request.body.len() as u64 + pending.decoder.announced_bytes();
                    if announced > self.limits.max_body_bytes as u64 {
                        // A chunk size line promised more than the limit allows: refuse now rather
                        // than wait for bytes we would refuse anyway.
                        return Err(HttpError::closing(
                            413,
                            "body_too_large",
                            format!("request body exceeds {} bytes", self.limits.max_body_bytes),
                        ));
                    }
                    if !decoded.done {
                        return Ok(Progress::NeedMore);
                    }
                    let request = std::mem::take(&mut pending.request);
                    self.state = ReadState::AwaitingHead(HeadScan::default());
                    return Ok(Progress::Complete(request));
                }
            }
        }
    }
}

/// A parsed head: the request without its body, how the body is framed, and whether to send `100`.
struct ParsedHead {
    request: Request,
    framing: Framing,
    expect_continue: bool,
}

/// Parse a complete head (`bytes` ends with its blank line) and apply the framing rules.
fn parse_head(bytes: &[u8], limits: &Limits) -> Result<ParsedHead, HttpError> {
    // One allocation per request head; httparse needs somewhere to put the field slices. A field
    // line takes at least 3 bytes ("a:\n"), so a head cannot hold more than `len / 3` of them:
    // capping there keeps a generous `max_headers` setting from costing memory on every request.
    let slots = limits.max_headers.min(bytes.len() / 3 + 1);
    let mut headers = vec![httparse::EMPTY_HEADER; slots];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(bytes) {
        // Both parsers must agree on where the head ends; a disagreement is exactly what smuggling
        // exploits.
        Ok(httparse::Status::Complete(len)) if len == bytes.len() => {}
        Ok(_) => return Err(bad_request("request head is malformed")),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(too_large(format!(
                "request has more than {} header fields",
                limits.max_headers
            )));
        }
        Err(error) => return Err(bad_request(format!("malformed request head: {error}"))),
    }
    let (Some(method), Some(target), Some(version)) = (parsed.method, parsed.path, parsed.version)
    else {
        return Err(bad_request("request head is malformed"));
    };
    let headers = parsed.headers;

    // RFC 9112 §3.2: an HTTP/1.1 request has exactly one Host; any request has at most one.
    match header_values(headers, "host").count() {
        0 if version >= 1 => return Err(bad_request("HTTP/1.1 request without Host")),
        0 | 1 => {}
        _ => return Err(bad_request("several Host header fields")),
    }

    let framing = request_framing(version, headers, limits)?;
    let has_body = matches!(framing, Framing::Chunked | Framing::Length(1..));
    // RFC 9110 §10.1.1: a server must ignore 100-continue from HTTP/1.0 clients.
    let expect_continue = has_body
        && version >= 1
        && header_values(headers, "expect")
            .any(|v| trim_ows(v).eq_ignore_ascii_case(b"100-continue"));

    let target = origin_form(target);
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query.to_owned())),
        None => (target, None),
    };
    let path = if path.is_empty() { "/" } else { path }.to_owned();
    let request = Request {
        method: method.to_owned(),
        path,
        query,
        version,
        keep_alive: keep_alive(version, headers),
        headers: super::owned_headers(headers),
        body: Vec::new(), // grows as bytes arrive, never from a length the client merely claims
    };
    Ok(ParsedHead {
        request,
        framing,
        expect_continue,
    })
}

/// Decide how the request body is delimited (RFC 9112 §6.3), refusing anything ambiguous.
fn request_framing(
    version: u8,
    headers: &[httparse::Header<'_>],
    limits: &Limits,
) -> Result<Framing, HttpError> {
    let codings = body::transfer_codings(headers);
    let length = body::content_length(headers);
    if codings.present {
        if !matches!(length, Ok(None)) {
            return Err(bad_framing("both Transfer-Encoding and Content-Length"));
        }
        if version == 0 {
            return Err(bad_framing("Transfer-Encoding in an HTTP/1.0 request"));
        }
        if !codings.last_is_chunked {
            return Err(bad_framing("final transfer coding is not chunked"));
        }
        if codings.others > 0 {
            return Err(HttpError::closing(
                501,
                "not_implemented",
                "only the chunked transfer coding is supported",
            ));
        }
        if codings.chunked > 1 {
            return Err(bad_framing("chunked applied more than once"));
        }
        return Ok(Framing::Chunked);
    }
    match length {
        Ok(None) => Ok(Framing::None),
        Ok(Some(n)) if n > u64::try_from(limits.max_body_bytes).unwrap_or(u64::MAX) => {
            Err(HttpError::closing(
                413,
                "body_too_large",
                format!("request body exceeds {} bytes", limits.max_body_bytes),
            ))
        }
        Ok(Some(n)) => Ok(Framing::Length(n)),
        Err(ContentLengthError::Invalid) => Err(bad_framing("invalid Content-Length")),
        Err(ContentLengthError::Conflicting) => {
            Err(bad_framing("conflicting Content-Length values"))
        }
    }
}

/// The origin-form part of a request target: servers must accept the absolute form
/// (`http://host:port/path?query`, RFC 9112 §3.2.2), whose path is what routing needs.
fn origin_form(target: &str) -> &str {
    let lower = |n: usize| target.get(..n).map(str::to_ascii_lowercase);
    let rest = if lower(7).as_deref() == Some("http://") {
        &target[7..]
    } else if lower(8).as_deref() == Some("https://") {
        &target[8..]
    } else {
        return target;
    };
    // `http://host` or `http://host?q` have an empty path, which the caller reads as `/`.
    rest.find(['/', '?']).map_or("", |i| &rest[i..])
}

/// The limits the head scan checks, from the reader's.
fn head_limits(limits: &Limits) -> HeadLimits {
    HeadLimits {
        max_head: limits.max_head_bytes,
        max_target: limits.max_target_bytes,
        max_field_line: limits.max_field_line_bytes,
    }
}

/// A 431: the head, one of its lines, or its number of fields is over a limit.
fn too_large(message: String) -> HttpError {
    HttpError::closing(431, "header_too_large", message)
}

fn bad_request(message: impl Into<String>) -> HttpError {
    HttpError::closing(400, "bad_request", message)
}

fn bad_framing(message: impl Into<String>) -> HttpError {
    HttpError::closing(400, "bad_framing", message)
}

// A test of the reader's private buffers lives next door.
#[cfg(test)]
#[path = "tests_reader_memory.rs"]
mod tests_reader_memory;
