//! Message bodies: how their end is found (RFC 9112 §6.3), and one decoder for every way.
//!
//! HTTP/1.1 has exactly three ways to say where a body ends, and the receiver must pick one from
//! the head before reading a single body byte:
//!
//! 1. `Transfer-Encoding: chunked`: the body frames itself ([`ChunkedDecoder`]).
//! 2. `Content-Length: N`: exactly N bytes follow.
//! 3. Neither (responses only): the body runs until the server closes the connection.
//!
//! [`Framing`] names the choice; [`BodyDecoder`] reads a body framed that way, with the same
//! "ranges in, consumed out" contract as the chunked decoder, so a connection can stream any body
//! through one code path. The helpers at the bottom reduce the framing header fields to facts
//! (`content_length`, `transfer_codings`); `request.rs` and `response.rs` apply their side's
//! rules to those facts, because a server and a client must react differently to the same oddity.

use std::fmt;
use std::ops::Range;

use super::chunked::{ChunkError, ChunkedDecoder, Decoded};
use super::{header_values, list_elements, trim_ows};

/// How a message body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body at all (a request without Content-Length/Transfer-Encoding, a 204 or 304, a 1xx).
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Everything until the peer closes the connection (responses only).
    UntilClose,
}

/// The peer closed the connection before the body was complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncated;

impl fmt::Display for Truncated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("connection closed before the end of the message body")
    }
}

impl std::error::Error for Truncated {}

/// Reads one body with the given [`Framing`]. Each variant holds exactly what its framing needs.
///
/// ```text
///   Length { remaining } --remaining reaches 0--> Done
///   Chunked(decoder)     --final CRLF decoded-->  (decoder reports done)
///   UntilClose           --peer closes-->         (on_eof says Ok)
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyDecoder {
    /// A chunked body; the decoder knows whether it is done.
    Chunked(ChunkedDecoder),
    /// A Content-Length body. Invariant: `remaining > 0` (a finished one becomes `Done`).
    Length { remaining: u64 },
    /// A body that ends when the connection does.
    UntilClose,
    /// The body is complete (or there never was one).
    Done,
}

impl BodyDecoder {
    /// A decoder for a body delimited as `framing` says.
    pub fn new(framing: Framing) -> Self {
        match framing {
            Framing::None | Framing::Length(0) => BodyDecoder::Done,
            Framing::Length(remaining) => BodyDecoder::Length { remaining },
            Framing::Chunked => BodyDecoder::Chunked(ChunkedDecoder::new()),
            Framing::UntilClose => BodyDecoder::UntilClose,
        }
    }

    /// Same contract as [`ChunkedDecoder::decode`]: payload ranges within `input` are appended to
    /// `payload`; `consumed` is `input.len()` unless the body ended inside `input`.
    pub fn decode(
        &mut self,
        input: &[u8],
        payload: &mut Vec<Range<usize>>,
    ) -> Result<Decoded, ChunkError> {
        match self {
            BodyDecoder::Chunked(decoder) => decoder.decode(input, payload),
            BodyDecoder::Length { remaining } => {
                let take = usize::try_from(*remaining).map_or(input.len(), |r| r.min(input.len()));
                if take > 0 {
                    payload.push(0..take);
                }
                // `take <= remaining`; a usize always fits in a u64.
                *remaining -= take as u64;
                if *remaining == 0 {
                    *self = BodyDecoder::Done;
                    return Ok(Decoded {
                        consumed: take,
                        done: true,
                    });
                }
                Ok(Decoded {
                    consumed: take,
                    done: false,
                })
            }
            BodyDecoder::UntilClose => {
                if !input.is_empty() {
                    payload.push(0..input.len());
                }
                Ok(Decoded {
                    consumed: input.len(),
                    done: false,
                })
            }
            BodyDecoder::Done => Ok(Decoded {
                consumed: 0,
                done: true,
            }),
        }
    }

    /// The peer closed the connection. `Ok` if that ends the body properly (it runs until close, or
    /// it was already complete); `Err(Truncated)` if bytes are missing.
    pub fn on_eof(&self) -> Result<(), Truncated> {
        match self {
            BodyDecoder::UntilClose | BodyDecoder::Done => Ok(()),
            BodyDecoder::Chunked(decoder) if decoder.is_done() => Ok(()),
            BodyDecoder::Chunked(_) | BodyDecoder::Length { .. } => Err(Truncated),
        }
    }

    /// Payload bytes announced and not yet delivered: the rest of a Content-Length body, or of the current
    /// chunk. Lets a reader refuse a body that is bound to exceed its limit before the bytes arrive.
    pub fn announced_bytes(&self) -> u64 {
        match self {
            BodyDecoder::Chunked(d) => d.announced_bytes(),
            BodyDecoder::Length { remaining } => *remaining,
            BodyDecoder::UntilClose | BodyDecoder::Done => 0,
        }
    }

    /// True once the whole body has been decoded. Never true for `UntilClose`: only EOF ends that.
    pub fn is_done(&self) -> bool {
        match self {
            BodyDecoder::Chunked(decoder) => decoder.is_done(),
            BodyDecoder::Done => true,
            BodyDecoder::Length { .. } | BodyDecoder::UntilClose => false,
        }
    }
}

/// Why the Content-Length header field(s) cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ContentLengthError {
    /// A value that is not 1+ decimal digits, or does not fit in a `u64`.
    Invalid,
    /// Several values that differ (as separate fields or as a comma list).
    Conflicting,
}

/// The message's Content-Length, if it has one (RFC 9110 §8.6).
///
/// Senders sometimes duplicate the field (`Content-Length: 5, 5` or two identical fields); that is
/// harmless and accepted. Differing values mean two parsers could pick different ones, so they are
/// an error. Unlike most list fields, empty elements are rejected: nothing legitimate sends `5,`.
pub(crate) fn content_length(
    headers: &[httparse::Header<'_>],
) -> Result<Option<u64>, ContentLengthError> {
    let mut found: Option<u64> = None;
    for value in header_values(headers, "content-length") {
        for element in value.split(|&b| b == b',') {
            let length = parse_decimal(trim_ows(element)).ok_or(ContentLengthError::Invalid)?;
            match found {
                Some(previous) if previous != length => {
                    return Err(ContentLengthError::Conflicting);
                }
                _ => found = Some(length),
            }
        }
    }
    Ok(found)
}

/// 1+ ASCII digits as a `u64`; `None` for anything else (signs, spaces, hex, overflow).
fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &b| {
        let digit = b.checked_sub(b'0').filter(|d| *d <= 9)?;
        acc.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// What the Transfer-Encoding header field(s) say, reduced to the facts framing decisions need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct TransferCodings {
    /// At least one Transfer-Encoding field is present (even an empty one).
    pub present: bool,
    /// The last coding listed is `chunked`, i.e. the body is self-delimiting.
    pub last_is_chunked: bool,
    /// How many times `chunked` is listed (more than once is forbidden).
    pub chunked: usize,
    /// How many codings other than `chunked` are listed (gzip, deflate, or anything unknown).
    pub others: usize,
}

/// Summarize the Transfer-Encoding fields: codings across all fields, in order (RFC 9112 §6.1).
/// Coding names are case-insensitive; a coding with parameters (`chunked;x=1`) is not `chunked`.
pub(crate) fn transfer_codings(headers: &[httparse::Header<'_>]) -> TransferCodings {
    let mut codings = TransferCodings::default();
    for value in header_values(headers, "transfer-encoding") {
        codings.present = true;
        for coding in list_elements(value) {
            let is_chunked = coding.eq_ignore_ascii_case(b"chunked");
            if is_chunked {
                codings.chunked += 1;
            } else {
                codings.others += 1;
            }
            codings.last_is_chunked = is_chunked;
        }
    }
    codings
}
