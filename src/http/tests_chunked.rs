//! Unit tests for the chunked decoder and the body decoder, speaking raw wire bytes.
//!
//! Test code only: its parent declares it `#[cfg(test)]`.

use super::body::{BodyDecoder, Framing, Truncated};
use super::chunked::{ChunkError, ChunkedDecoder, Decoded, MAX_EXTENSION_BYTES, MAX_TRAILER_BYTES};

/// Decode `input` in one call; return the payload bytes and what `decode` reported.
fn decode(input: &[u8]) -> Result<(Vec<u8>, Decoded), ChunkError> {
    let mut decoder = ChunkedDecoder::new();
    let mut ranges = Vec::new();
    let decoded = decoder.decode(input, &mut ranges)?;
    let payload = ranges.into_iter().flat_map(|r| input[r].to_vec()).collect();
    Ok((payload, decoded))
}

fn error_of(input: &[u8]) -> ChunkError {
    decode(input).expect_err("input should be rejected")
}

#[test]
fn decodes_a_simple_body_and_stops_at_its_end() {
    let (payload, decoded) = decode(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\nGET /next").unwrap();
    assert_eq!(payload, b"hello world");
    assert_eq!(
        decoded,
        Decoded {
            consumed: 26,
            done: true
        }
    );
}

#[test]
fn hex_sizes_are_case_insensitive_and_may_have_leading_zeros() {
    let body = [
        b"1A\r\n".as_slice(),
        &[b'x'; 26],
        b"\r\n000a\r\n",
        &[b'y'; 10],
        b"\r\n0\r\n\r\n",
    ]
    .concat();
    let (payload, decoded) = decode(&body).unwrap();
    assert_eq!(payload.len(), 36);
    assert!(decoded.done);
}

#[test]
fn accepts_extensions_and_whitespace_before_the_semicolon() {
    let body = b"3;name=value\r\nabc\r\n2 \t;a;b=\"q;uoted\"\r\nde\r\n0;last\r\n\r\n";
    let (payload, decoded) = decode(body).unwrap();
    assert_eq!(payload, b"abcde");
    assert_eq!(decoded.consumed, body.len());
}

#[test]
fn skips_trailers() {
    let body = b"2\r\nhi\r\n0\r\nChecksum: abc\r\nOther: x\r\n\r\nNEXT";
    let (payload, decoded) = decode(body).unwrap();
    assert_eq!(payload, b"hi");
    assert_eq!(
        decoded,
        Decoded {
            consumed: body.len() - 4,
            done: true
        }
    );
}

#[test]
fn incomplete_input_is_consumed_entirely() {
    let (payload, decoded) = decode(b"5\r\nhel").unwrap();
    assert_eq!(payload, b"hel");
    assert_eq!(
        decoded,
        Decoded {
            consumed: 6,
            done: false
        }
    );
}

#[test]
fn after_done_nothing_more_is_consumed() {
    let mut decoder = ChunkedDecoder::default();
    let mut ranges = Vec::new();
    assert!(decoder.decode(b"0\r\n\r\n", &mut ranges).unwrap().done);
    assert!(decoder.is_done());
    let again = decoder.decode(b"5\r\nhello", &mut ranges).unwrap();
    assert_eq!(
        again,
        Decoded {
            consumed: 0,
            done: true
        }
    );
    assert!(ranges.is_empty());
}

#[test]
fn payload_ranges_are_appended_not_replacing() {
    let mut decoder = ChunkedDecoder::new();
    let mut ranges = Vec::new();
    ranges.push(100..101); // left by an earlier call
    decoder.decode(b"2\r\nab\r\n", &mut ranges).unwrap();
    assert_eq!(ranges, vec![100..101, 3..5]);
}

#[test]
fn rejects_an_empty_size_line() {
    // httparse's parse_chunk_size accepts this as 0; a smuggler would love us to agree.
    assert_eq!(error_of(b"\r\n"), ChunkError::EmptySize);
    assert_eq!(error_of(b"5\r\nhello\r\n\r\n"), ChunkError::EmptySize);
    assert_eq!(error_of(b";ext\r\n"), ChunkError::EmptySize);
    assert_eq!(error_of(b" 5\r\n"), ChunkError::EmptySize);
}

#[test]
fn rejects_bad_sizes() {
    assert_eq!(error_of(b"x\r\n"), ChunkError::BadSize);
    assert_eq!(error_of(b"-1\r\n"), ChunkError::BadSize);
    assert_eq!(error_of(b"+1\r\n"), ChunkError::BadSize);
    assert_eq!(error_of(b"0x5\r\n"), ChunkError::BadSize);
    assert_eq!(error_of(b"5g\r\n"), ChunkError::BadSize);
    // Whitespace is only allowed before a `;`.
    assert_eq!(error_of(b"5 \r\n"), ChunkError::BadSize);
    assert_eq!(error_of(b"5 6\r\n"), ChunkError::BadSize);
}

#[test]
fn rejects_sizes_that_do_not_fit_in_64_bits() {
    assert!(decode(b"ffffffffffffffff\r\n").is_ok());
    assert_eq!(error_of(b"10000000000000000\r\n"), ChunkError::SizeOverflow);
    assert_eq!(error_of(b"00000000000000001\r\n"), ChunkError::SizeOverflow);
}

#[test]
fn rejects_bare_lf_and_missing_crlf() {
    assert_eq!(error_of(b"5\nhello\r\n"), ChunkError::MissingCrlf);
    assert_eq!(error_of(b"5\r\nhello\n0\r\n\r\n"), ChunkError::MissingCrlf);
    assert_eq!(error_of(b"5\r\nhelloX\r\n"), ChunkError::MissingCrlf);
    assert_eq!(error_of(b"5\r\nhello\r\r\n"), ChunkError::MissingCrlf);
    assert_eq!(error_of(b"5;a\nhello"), ChunkError::MissingCrlf);
    assert_eq!(error_of(b"0\r\n\n"), ChunkError::MissingCrlf);
    assert_eq!(error_of(b"0\r\nTrailer: x\n\r\n"), ChunkError::MissingCrlf);
    assert_eq!(error_of(b"0\r\n\rX"), ChunkError::MissingCrlf);
    assert_eq!(error_of(b"5\rX"), ChunkError::MissingCrlf);
}

#[test]
fn rejects_control_characters_in_extensions_and_trailers() {
    assert_eq!(error_of(b"1;a\x00b\r\n"), ChunkError::BadExtension);
    assert_eq!(error_of(b"0\r\nName: \x7f\r\n\r\n"), ChunkError::BadTrailer);
}

#[test]
fn bounds_extensions() {
    let ok = [
        b"1;".as_slice(),
        &vec![b'a'; MAX_EXTENSION_BYTES - 1],
        b"\r\nx\r\n0\r\n\r\n",
    ]
    .concat();
    assert!(decode(&ok).unwrap().1.done);
    let long = [b"1;".as_slice(), &vec![b'a'; MAX_EXTENSION_BYTES]].concat();
    assert_eq!(error_of(&long), ChunkError::ExtensionTooLong);
    // Endless BWS counts too.
    let spaces = [b"1".as_slice(), &vec![b' '; MAX_EXTENSION_BYTES + 1]].concat();
    assert_eq!(error_of(&spaces), ChunkError::ExtensionTooLong);
}

#[test]
fn bounds_trailers() {
    let line = b"X-Pad: aaaaaaaaaaaaaaaaaaaaaaa\r\n";
    assert_eq!(
        MAX_TRAILER_BYTES % line.len(),
        0,
        "the first body must fill the limit exactly"
    );
    let fits = [
        b"0\r\n".as_slice(),
        &line.repeat(MAX_TRAILER_BYTES / line.len()),
        b"\r\n",
    ]
    .concat();
    assert!(decode(&fits).unwrap().1.done);
    let too_long = [
        b"0\r\n".as_slice(),
        &line.repeat(MAX_TRAILER_BYTES / line.len() + 1),
    ]
    .concat();
    assert_eq!(error_of(&too_long), ChunkError::TrailerTooLong);
}

#[test]
fn an_error_is_sticky() {
    let mut decoder = ChunkedDecoder::new();
    let mut ranges = Vec::new();
    assert_eq!(decoder.decode(b"z", &mut ranges), Err(ChunkError::BadSize));
    assert_eq!(
        decoder.decode(b"0\r\n\r\n", &mut ranges),
        Err(ChunkError::BadSize)
    );
    assert!(!decoder.is_done());
}

#[test]
fn errors_display_as_text() {
    assert_eq!(ChunkError::EmptySize.to_string(), "empty chunk size");
    assert!(!Truncated.to_string().is_empty());
}

#[test]
fn length_body_stops_at_its_length() {
    let mut body = BodyDecoder::new(Framing::Length(5));
    let mut ranges = Vec::new();
    assert_eq!(
        body.decode(b"he", &mut ranges).unwrap(),
        Decoded {
            consumed: 2,
            done: false
        }
    );
    assert_eq!(body.on_eof(), Err(Truncated));
    assert_eq!(
        body.decode(b"lloGET", &mut ranges).unwrap(),
        Decoded {
            consumed: 3,
            done: true
        }
    );
    assert_eq!(ranges, vec![0..2, 0..3]);
    assert!(body.is_done());
    assert_eq!(body.on_eof(), Ok(()));
    assert_eq!(
        body.decode(b"more", &mut ranges).unwrap(),
        Decoded {
            consumed: 0,
            done: true
        }
    );
}

#[test]
fn empty_bodies_are_done_at_once() {
    for framing in [Framing::None, Framing::Length(0)] {
        let mut body = BodyDecoder::new(framing);
        assert!(body.is_done());
        let mut ranges = Vec::new();
        assert_eq!(
            body.decode(b"abc", &mut ranges).unwrap(),
            Decoded {
                consumed: 0,
                done: true
            }
        );
        assert!(ranges.is_empty());
    }
}

#[test]
fn until_close_takes_everything_and_ends_at_eof() {
    let mut body = BodyDecoder::new(Framing::UntilClose);
    let mut ranges = Vec::new();
    assert_eq!(
        body.decode(b"abc", &mut ranges).unwrap(),
        Decoded {
            consumed: 3,
            done: false
        }
    );
    assert_eq!(
        body.decode(b"", &mut ranges).unwrap(),
        Decoded {
            consumed: 0,
            done: false
        }
    );
    assert_eq!(ranges, vec![0..3]);
    assert!(!body.is_done());
    assert_eq!(body.on_eof(), Ok(()));
}

#[test]
fn chunked_body_is_truncated_by_eof_until_its_last_chunk() {
    let mut body = BodyDecoder::new(Framing::Chunked);
    let mut ranges = Vec::new();
    body.decode(b"3\r\nabc\r\n0\r\n", &mut ranges).unwrap();
    assert_eq!(body.on_eof(), Err(Truncated));
    assert!(body.decode(b"\r\n", &mut ranges).unwrap().done);
    assert_eq!(body.on_eof(), Ok(()));
    assert!(body.is_done());
}

#[test]
fn huge_length_does_not_overflow() {
    let mut body = BodyDecoder::new(Framing::Length(u64::MAX));
    let mut ranges = Vec::new();
    assert_eq!(
        body.decode(b"abc", &mut ranges).unwrap(),
        Decoded {
            consumed: 3,
            done: false
        }
    );
    assert_eq!(
        body,
        BodyDecoder::Length {
            remaining: u64::MAX - 3
        }
    );
}
