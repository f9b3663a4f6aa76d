//! The chunked transfer coding decoder (RFC 9112 §7.1), as a resumable byte state machine.
//!
//! A chunked body looks like this on the wire:
//!
//! ```text
//! 1a;name=value\r\n          chunk-size in hex, optional chunk extensions, CRLF
//! <26 bytes of payload>\r\n  chunk-data, then exactly CRLF
//! 0\r\n                      the last chunk has size 0
//! Trailer-Field: x\r\n       optional trailer section (we skip it)
//! \r\n                       an empty line ends the body
//! ```
//!
//! # Why a byte state machine
//!
//! Bytes arrive from a socket in arbitrary pieces: a size line can be split between two reads, and
//! so can its CRLF. Instead of buffering until "enough" has arrived (which needs a buffer and a
//! rescan), the decoder remembers exactly where it stopped in a small `State` enum and continues
//! from there with the next byte. The result is independent of how the input was split: the
//! property tests check every split point.
//!
//! # Why the payload is never copied
//!
//! The relay forwards payload bytes to a client. [`ChunkedDecoder::decode`] returns the *ranges* of
//! `input` that are payload and skips the framing around them; the caller decides whether to copy,
//! forward with `writev`, or accumulate. Decoding costs no allocation beyond the caller's range
//! vector.
//!
//! # Why so strict
//!
//! Chunked framing is where request smuggling lives: if two parsers on the path (a proxy and us)
//! disagree about where a body ends, an attacker can hide a second request inside the first. Every
//! byte that is not exactly what the grammar allows is an error here: an empty chunk-size line, a
//! bare LF, anything other than CRLF after chunk data, a size that does not fit in 64 bits. Lenient
//! parsing is what makes smuggling work.
//!
//! # Memory bound
//!
//! The decoder holds a few integers, whatever the input. Extensions and trailers are skipped, not
//! stored, and their lengths are capped ([`MAX_EXTENSION_BYTES`], [`MAX_TRAILER_BYTES`]) so that a
//! peer cannot keep us busy forever on a line that never ends.

use std::fmt;
use std::ops::Range;

/// The longest chunk extension we accept on one size line: everything between the last hex digit
/// and the CR, whitespace included. Extensions carry nothing we use, so this only bounds the work
/// per line.
pub const MAX_EXTENSION_BYTES: usize = 4096;

/// The longest trailer section we accept: all trailer field lines with their CRLFs, not counting
/// the final empty line. Trailers are skipped, never stored, so this bounds time rather than
/// memory.
pub const MAX_TRAILER_BYTES: usize = 8 * 1024;

/// 16 hex digits are 64 bits, so no chunk size that we accept can overflow a `u64`.
const MAX_SIZE_DIGITS: u8 = 16;

/// What [`ChunkedDecoder::decode`] (and [`super::body::BodyDecoder::decode`]) did with one piece of
/// input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    /// Bytes of the input that belong to this body. Equal to the input length unless `done`.
    pub consumed: usize,
    /// The body ended within (or before) this input: `input[consumed..]` belongs to the next
    /// message.
    pub done: bool,
}

/// Why a chunked body was rejected. After an error the decoder keeps returning the same error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkError {
    /// A byte that is neither a hex digit nor allowed after one in a chunk-size line.
    BadSize,
    /// A size line with no hex digit at all (for example a bare CRLF where a size was expected).
    EmptySize,
    /// More than 16 hex digits: the size would not fit in a `u64`.
    SizeOverflow,
    /// A line did not end with CRLF, or chunk data was not followed by exactly CRLF.
    MissingCrlf,
    /// A control character inside a chunk extension.
    BadExtension,
    /// A chunk extension longer than [`MAX_EXTENSION_BYTES`].
    ExtensionTooLong,
    /// A control character inside a trailer field line.
    BadTrailer,
    /// A trailer section longer than [`MAX_TRAILER_BYTES`].
    TrailerTooLong,
}

impl fmt::Display for ChunkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            ChunkError::BadSize => "invalid character in chunk size",
            ChunkError::EmptySize => "empty chunk size",
            ChunkError::SizeOverflow => "chunk size too large",
            ChunkError::MissingCrlf => "chunk line not terminated by CRLF",
            ChunkError::BadExtension => "invalid character in chunk extension",
            ChunkError::ExtensionTooLong => "chunk extension too long",
            ChunkError::BadTrailer => "invalid character in trailer section",
            ChunkError::TrailerTooLong => "trailer section too long",
        };
        f.write_str(text)
    }
}

impl std::error::Error for ChunkError {}

/// Where the decoder stands. Each variant is named after what it waits for and carries only what it
/// needs.
///
/// ```text
///       +------------------------------------------------------------------------------+
///       v                                                                              |
///     Size <--hex digit (loop)                                                         |
///       |                                                                              |
///       +--SP/HTAB/";"--> Extension <--BWS, ";", extension text (loop)                 |
///       |                   |                                                          |
///       +--CR--> SizeLf <---+--CR (only after a ";")                                   |
///                  |                                                                   |
///                  +--LF, size > 0--> Data --size bytes--> DataCr --CR--> DataLf --LF--+
///                  |
///                  +--LF, size = 0--> TrailerStart --CR--> FinalLf --LF--> Done
///                                      |       ^
///                            other byte|       +--LF-- TrailerLf
///                                      v                  ^
///                                  TrailerLine ----CR-----+
///                                  (loop: field bytes, ignored)
/// ```
///
/// Any byte not on an arrow moves to `Failed`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Reading chunk-size hex digits. Invariant: `digits <= 16`, so `value` never overflowed.
    Size { value: u64, digits: u8 },
    /// After the size digits, before CR: BWS, then `;` and extensions. `len` counts bytes since the
    /// last digit (bounded by [`MAX_EXTENSION_BYTES`]); `after_semicolon` is false while only BWS
    /// has been seen.
    Extension {
        value: u64,
        len: usize,
        after_semicolon: bool,
    },
    /// Saw the CR that ends a size line; the LF must follow.
    SizeLf { value: u64 },
    /// Inside chunk data. Invariant: `remaining > 0`.
    Data { remaining: u64 },
    /// Chunk data is complete; a CR must follow.
    DataCr,
    /// Saw the CR after chunk data; the LF must follow.
    DataLf,
    /// At the start of a line in the trailer section (a trailer field, or the final empty line).
    /// `total` counts trailer bytes so far.
    TrailerStart { total: usize },
    /// Inside a trailer field line, which we skip.
    TrailerLine { total: usize },
    /// Saw the CR ending a trailer field line; the LF must follow.
    TrailerLf { total: usize },
    /// Saw the CR of the final empty line; its LF ends the body.
    FinalLf,
    /// The body is complete.
    Done,
    /// The body was malformed; the error is reported again on every call.
    Failed(ChunkError),
}

/// Decodes one chunked body, resumably. See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkedDecoder {
    state: State,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    /// A decoder positioned before the first chunk-size line.
    pub fn new() -> Self {
        ChunkedDecoder {
            state: State::Size {
                value: 0,
                digits: 0,
            },
        }
    }

    /// Decode as much of `input` as possible.
    ///
    /// For every run of payload bytes, its range *within `input`* is appended to `payload` (the
    /// vector is not cleared). Returns how much of `input` was used: all of it, unless the body
    /// ended inside `input`, in which case `done` is true and `consumed` is the index just after
    /// the final CRLF. Once done, further calls return `consumed: 0, done: true`. Once failed,
    /// further calls return the same error.
    ///
    /// The payload is found, not copied: the ranges point into `input`, whatever the split.
    ///
    /// ```
    /// use tokenpipe::http::chunked::ChunkedDecoder;
    /// let mut decoder = ChunkedDecoder::new();
    /// let mut ranges = Vec::new();
    /// let first = b"5\r\nhel";
    /// let d = decoder.decode(first, &mut ranges).expect("well-formed chunked bytes");
    /// assert_eq!((d.consumed, d.done), (first.len(), false));
    /// assert_eq!(&first[ranges[0].clone()], b"hel");
    ///
    /// ranges.clear();
    /// let rest = b"lo\r\n0\r\n\r\nGET /next";
    /// let d = decoder.decode(rest, &mut ranges).expect("well-formed chunked bytes");
    /// assert!(d.done);
    /// assert_eq!(&rest[ranges[0].clone()], b"lo");
    /// assert_eq!(&rest[d.consumed..], b"GET /next"); // the next message is not ours
    /// ```
    pub fn decode(
        &mut self,
        input: &[u8],
        payload: &mut Vec<Range<usize>>,
    ) -> Result<Decoded, ChunkError> {
        match &self.state {
            State::Done => {
                return Ok(Decoded {
                    consumed: 0,
                    done: true,
                });
            }
            State::Failed(error) => return Err(error.clone()),
            _ => {}
        }
        let mut i = 0;
        while i < input.len() {
            if let State::Data { remaining } = self.state {
                // The one place where many bytes are handled at once: payload is skipped over, not
                // scanned.
                let available = input.len() - i;
                let take = usize::try_from(remaining).map_or(available, |r| r.min(available));
                payload.push(i..i + take);
                i += take;
                // `take <= remaining`, and a usize always fits in a u64 on the platforms Rust
                // supports.
                let left = remaining - take as u64;
                self.state = if left == 0 {
                    State::DataCr
                } else {
                    State::Data { remaining: left }
                };
                continue;
            }
            let byte = input[i];
            i += 1;
            match next_state(&self.state, byte) {
                Ok(State::Done) => {
                    self.state = State::Done;
                    return Ok(Decoded {
                        consumed: i,
                        done: true,
                    });
                }
                Ok(next) => self.state = next,
                Err(error) => {
                    self.state = State::Failed(error.clone());
                    return Err(error);
                }
            }
        }
        Ok(Decoded {
            consumed: input.len(),
            done: false,
        })
    }

    /// True once the final CRLF of the body has been decoded.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Payload bytes the current chunk has announced but not yet delivered. A reader that bounds a body
    /// checks this as soon as a size line has been read, so that a peer announcing an enormous chunk is refused at
    /// once instead of being waited for.
    pub fn announced_bytes(&self) -> u64 {
        match self.state {
            // Counted only once the size line is complete and accepted: while it is still being read, a
            // later byte may yet make it an error, and the verdict must not depend on how input was split.
            State::Data { remaining } => remaining,
            _ => 0,
        }
    }
}

/// The transition table for every state except `Data` (which `decode` handles a run at a time):
/// given where we are and the next byte, where do we go?
fn next_state(state: &State, byte: u8) -> Result<State, ChunkError> {
    match *state {
        State::Size { value, digits } => size_byte(value, digits, byte),
        State::Extension {
            value,
            len,
            after_semicolon,
        } => extension_byte(value, len, after_semicolon, byte),
        State::SizeLf { value } => match byte {
            b'\n' if value == 0 => Ok(State::TrailerStart { total: 0 }),
            b'\n' => Ok(State::Data { remaining: value }),
            _ => Err(ChunkError::MissingCrlf),
        },
        State::DataCr => expect(byte, b'\r', State::DataLf),
        State::DataLf => expect(
            byte,
            b'\n',
            State::Size {
                value: 0,
                digits: 0,
            },
        ),
        State::TrailerStart { total } => match byte {
            b'\r' => Ok(State::FinalLf),
            _ => trailer_byte(total, byte),
        },
        State::TrailerLine { total } => trailer_byte(total, byte),
        State::TrailerLf { total } => expect(byte, b'\n', State::TrailerStart { total: total + 1 }),
        State::FinalLf => expect(byte, b'\n', State::Done),
        // `decode` never calls us in these states; answering consistently keeps this function
        // total.
        State::Data { remaining } => Ok(State::Data { remaining }),
        State::Done => Ok(State::Done),
        State::Failed(ref error) => Err(error.clone()),
    }
}

/// The byte must be `wanted` (a CR or LF of a line ending); anything else is a framing error.
fn expect(byte: u8, wanted: u8, next: State) -> Result<State, ChunkError> {
    if byte == wanted {
        Ok(next)
    } else {
        Err(ChunkError::MissingCrlf)
    }
}

/// A byte of the chunk-size line, before any extension.
fn size_byte(value: u64, digits: u8, byte: u8) -> Result<State, ChunkError> {
    if let Some(digit) = hex_value(byte) {
        if digits == MAX_SIZE_DIGITS {
            return Err(ChunkError::SizeOverflow);
        }
        // Cannot overflow: at most 15 digits (60 bits) were accumulated before this one.
        return Ok(State::Size {
            value: (value << 4) | u64::from(digit),
            digits: digits + 1,
        });
    }
    if digits == 0 {
        // Nothing where the size should be. httparse's chunk parser accepts an empty size line as
        // 0; accepting it would let "\r\n" end a body that another parser sees continuing.
        return Err(match byte {
            b'\r' | b'\n' | b';' | b' ' | b'\t' => ChunkError::EmptySize,
            _ => ChunkError::BadSize,
        });
    }
    match byte {
        b'\r' => Ok(State::SizeLf { value }),
        b' ' | b'\t' => Ok(State::Extension {
            value,
            len: 1,
            after_semicolon: false,
        }),
        b';' => Ok(State::Extension {
            value,
            len: 1,
            after_semicolon: true,
        }),
        b'\n' => Err(ChunkError::MissingCrlf),
        _ => Err(ChunkError::BadSize),
    }
}

/// A byte after the size digits: BWS (only before the first `;`), then extension text up to the CR.
///
/// The extension grammar (`;name=value`, values possibly quoted) is not parsed, because nothing in
/// it is used. Scanning to the CR is still exact: a quoted-string may not contain CR or LF either,
/// so no valid extension can hide a line ending. Control characters are rejected so that a bare LF
/// cannot end a line.
fn extension_byte(
    value: u64,
    len: usize,
    after_semicolon: bool,
    byte: u8,
) -> Result<State, ChunkError> {
    if byte == b'\r' && after_semicolon {
        return Ok(State::SizeLf { value });
    }
    // Invariant: `len <= MAX_EXTENSION_BYTES` (the CR that ends the line is not part of the
    // extension).
    if len >= MAX_EXTENSION_BYTES {
        return Err(ChunkError::ExtensionTooLong);
    }
    let len = len + 1;
    match byte {
        b'\n' => Err(ChunkError::MissingCrlf),
        b' ' | b'\t' => Ok(State::Extension {
            value,
            len,
            after_semicolon,
        }),
        b';' => Ok(State::Extension {
            value,
            len,
            after_semicolon: true,
        }),
        // Before the `;` only whitespace is allowed ("1a \r\n" and "1a x" are not chunk-size
        // lines).
        _ if !after_semicolon => Err(ChunkError::BadSize),
        _ if is_control(byte) => Err(ChunkError::BadExtension),
        _ => Ok(State::Extension {
            value,
            len,
            after_semicolon,
        }),
    }
}

/// A byte of a trailer field line (whose contents we ignore), or its CR.
fn trailer_byte(total: usize, byte: u8) -> Result<State, ChunkError> {
    if total >= MAX_TRAILER_BYTES {
        return Err(ChunkError::TrailerTooLong);
    }
    match byte {
        b'\r' => Ok(State::TrailerLf { total: total + 1 }),
        b'\n' => Err(ChunkError::MissingCrlf),
        _ if is_control(byte) => Err(ChunkError::BadTrailer),
        _ => Ok(State::TrailerLine { total: total + 1 }),
    }
}

/// CTL characters other than HTAB (RFC 5234 CTL: 0x00-0x1F and 0x7F).
fn is_control(byte: u8) -> bool {
    (byte < 0x20 && byte != b'\t') || byte == 0x7f
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}
