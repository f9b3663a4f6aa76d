//! Sans-IO HTTP/1.1: bytes in, results out. No sockets, no clocks.
//!
//! # Why sans-IO
//!
//! Everything in this module is a pure function or a small state machine over byte slices. Nothing
//! here reads a socket, allocates a connection, or looks at the time. That buys three things:
//!
//! - **Testability.** Every parser is tested by feeding it raw protocol bytes, split at every
//!   possible boundary, without a socket in sight (see the `tests_*` files).
//! - **Reuse.** The same code serves the client side (requests in, responses out) and the upstream
//!   side (requests out, responses in), on our reactor or on the tokio baselines.
//! - **Clear ownership of I/O.** The reactor owns sockets and buffers; this module only tells it
//!   how many bytes it used and what they meant. A connection's state machine decides what to do
//!   with the answer.
//!
//! # Map
//!
//! ```text
//!  client bytes --> request::RequestReader --> Progress::{NeedMore, SendContinue, Complete}
//!                       | head: httparse + our framing rules (RFC 9112 §6)
//!                       | body: body::BodyDecoder (Content-Length or chunked::ChunkedDecoder)
//!
//!  upstream bytes --> response::parse_response_head --> ResponseHead { framing, .. }
//!                 --> body::BodyDecoder --> payload ranges (never copied)
//!
//!  our output <-- response::{write_head, error_response, chunk_size_line, LAST_CHUNK}
//! ```
//!
//! # Rules that hold everywhere
//!
//! - No input can panic: parsers return errors and never `unwrap()` on input; all of it is safe Rust.
//! - Memory is bounded by explicit limits ([`request::Limits`], `max_head_bytes`, the chunked
//!   decoder's caps). A peer can make us refuse its input, never make us hold more of it.
//! - When two readings of the framing are possible (Content-Length *and* Transfer-Encoding,
//!   differing lengths, a bare LF in chunk framing), the message is rejected: tolerating ambiguity
//!   is what makes request smuggling possible.

pub mod body;
pub mod chunked;
mod head_scan;
pub mod headers;
pub mod request;
pub mod response;
pub mod route;
pub mod sse;

pub use body::{BodyDecoder, Framing, Truncated};
pub use chunked::{ChunkError, ChunkedDecoder, Decoded};
pub use request::{HttpError, Limits, Progress, Request, RequestReader};
pub use response::{ResponseError, ResponseHead, parse_response_head};

#[cfg(test)]
mod tests_chunked;
#[cfg(test)]
mod tests_limits;
#[cfg(test)]
mod tests_props;
#[cfg(test)]
mod tests_request;
#[cfg(test)]
mod tests_response;

/// The values of every header field called `name` (case-insensitive), in order.
pub(crate) fn header_values<'h>(
    headers: &'h [httparse::Header<'_>],
    name: &'h str,
) -> impl Iterator<Item = &'h [u8]> {
    headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

/// Strip optional whitespace (OWS = SP / HTAB, RFC 9110 §5.6.3) from both ends.
pub(crate) fn trim_ows(mut value: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = value {
        value = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = value {
        value = rest;
    }
    value
}

/// The non-empty elements of a comma-separated list value (RFC 9110 §5.6.1), trimmed.
/// Recipients must accept empty elements ("a, , b"), so they are skipped rather than rejected.
pub(crate) fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|e| !e.is_empty())
}

/// Whether any `name` header field lists `token` (case-insensitive), e.g. `Connection: keep-alive,
/// close`.
pub(crate) fn has_token(headers: &[httparse::Header<'_>], name: &str, token: &str) -> bool {
    header_values(headers, name)
        .flat_map(list_elements)
        .any(|element| element.eq_ignore_ascii_case(token.as_bytes()))
}

/// The header fields as owned pairs, names as sent.
pub(crate) fn owned_headers(headers: &[httparse::Header<'_>]) -> Vec<(String, Vec<u8>)> {
    headers
        .iter()
        .map(|h| (h.name.to_owned(), h.value.to_owned()))
        .collect()
}

/// Whether a message of this HTTP/1.x minor `version` keeps its connection open afterwards (RFC
/// 9112 §9.3): HTTP/1.1 unless `Connection: close`; HTTP/1.0 only with `Connection: keep-alive`.
pub(crate) fn keep_alive(version: u8, headers: &[httparse::Header<'_>]) -> bool {
    if has_token(headers, "connection", "close") {
        return false;
    }
    version >= 1 || has_token(headers, "connection", "keep-alive")
}
