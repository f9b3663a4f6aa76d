//! Passing body bytes from an upstream to a client: decode, gather, frame, write.
//!
//! This is the hot path of the relay, kept apart from the state handling in the parent module. It runs
//! once per upstream read: the body decoder finds the payload inside the bytes just read (framing is
//! skipped, nothing is copied), several payload runs are moved together inside that same buffer, and the
//! client gets them as one chunk through `OutBuf::send_chunk` (one `writev` of size line, payload, CRLF).
//! It is a set of free functions over the parts of the worker it needs, so the bytes can stay in the
//! worker's read buffer while it runs.

use std::io;
use std::ops::Range;

use super::Failure;
use crate::conn::Conn;
use crate::conn::client::ClientConn;
use crate::conn::upstream::UpstreamState;
use crate::http::body::BodyDecoder;
use crate::http::chunked::{ChunkError, Decoded};
use crate::reactor::token::{ConnId, Conns};

/// What went wrong while passing one read to the client.
pub(super) enum RelayError {
    Upstream(ChunkError),
    Client(io::Error),
}

/// What relaying one read came to.
pub(super) enum Relayed {
    /// The body goes on.
    More,
    /// The body ended; `reusable` if the connection may go back to the pool.
    Finished {
        reusable: bool,
    },
    BadBody(ChunkError),
    ClientFailed(io::Error),
    NoClient,
}

/// Decodes `input` (body bytes just read) and sends the payload to the client. A free function over the
/// parts of the worker it needs, so that `input` can live in the worker's read buffer while it runs.
pub(super) fn relay_input(
    conns: &mut Conns<Conn>,
    ranges: &mut Vec<Range<usize>>,
    up: ConnId,
    client: ConnId,
    input: &mut [u8],
) -> Relayed {
    let Some((Conn::Upstream(u), Conn::Client(c))) = conns.pair_mut(up, client) else {
        return Relayed::NoClient;
    };
    let UpstreamState::Body {
        decoder,
        keep_alive,
        ..
    } = &mut u.state
    else {
        return Relayed::NoClient;
    };
    match relay_bytes(decoder, input, ranges, c) {
        // Reusable only if the body ended exactly where our bytes did: anything after it would be a
        // response we never asked for.
        Ok(d) if d.done => Relayed::Finished {
            reusable: *keep_alive && d.consumed == input.len(),
        },
        Ok(_) => Relayed::More,
        Err(RelayError::Upstream(e)) => Relayed::BadBody(e),
        Err(RelayError::Client(e)) => Relayed::ClientFailed(e),
    }
}

/// Decodes one read's worth of body bytes and sends the payload to the client as a single chunk.
///
/// The decoder reports where the payload lies inside `input` (framing is skipped, nothing is copied). When a
/// read holds several upstream chunks, their payloads are moved together at the front of `input` (a
/// `memmove` inside the buffer we just read into) so that one `writev` of three slices sends them all.
fn relay_bytes(
    decoder: &mut BodyDecoder,
    input: &mut [u8],
    ranges: &mut Vec<Range<usize>>,
    client: &mut ClientConn,
) -> Result<Decoded, RelayError> {
    ranges.clear();
    let decoded = decoder
        .decode(input, ranges)
        .map_err(RelayError::Upstream)?;
    let payload = gather(input, ranges);
    client.send_payload(payload).map_err(RelayError::Client)?;
    Ok(decoded)
}

/// Moves the bytes of `ranges` (ascending, disjoint) to the front of `buf` and returns them as one slice.
fn gather<'a>(buf: &'a mut [u8], ranges: &[Range<usize>]) -> &'a [u8] {
    match ranges {
        [] => &[],
        [one] => &buf[one.clone()],
        many => {
            let mut end = 0;
            for r in many {
                // Ranges ascend and never overlap, so each lands at or before where it was.
                buf.copy_within(r.clone(), end);
                end += r.len();
            }
            &buf[..end]
        }
    }
}

/// The SSE event that tells a client its stream failed mid-way.
///
/// It starts with a blank line: the upstream may have broken off inside an event, and without it our
/// `event:` line would be glued to that event's last line. SSE has no way to cancel a partial event, so a
/// client sees it end (truncated) and then this `error` event; after a complete event, the extra blank line
/// is ignored by every SSE parser (an empty line with no data dispatches nothing).
pub(super) fn sse_error_event(failure: &Failure) -> Vec<u8> {
    let data =
        serde_json::json!({"error": {"code": "upstream_failed", "message": failure.to_string()}});
    format!("\n\nevent: error\ndata: {data}\n\n").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gather_joins_payload_ranges_in_order() {
        let mut buf = *b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(gather(&mut buf, &[3..6, 11..13]), b"abcde");
        let mut buf = *b"xyz";
        let one = vec![Range { start: 1, end: 3 }];
        assert_eq!(gather(&mut buf, &one), b"yz");
        assert_eq!(gather(&mut buf, &[]), b"");
    }

    #[test]
    fn error_event_is_one_sse_event_with_json_data() {
        let ev = String::from_utf8(sse_error_event(&Failure::Truncated)).unwrap();
        assert!(ev.starts_with("\n\nevent: error\ndata: {"));
        assert!(ev.ends_with("\n\n"));
        let json: serde_json::Value =
            serde_json::from_str(ev.lines().nth(3).unwrap().trim_start_matches("data: ")).unwrap();
        assert_eq!(json["error"]["code"], "upstream_failed");
    }
}
