//! Passing body bytes from an upstream to a client: decode, gather, frame, write.
//!
//! This is the hot path of the relay, kept apart from the state handling in `upstreams.rs`. It runs once
//! per upstream read: the body decoder finds the payload inside the bytes just read (framing is skipped,
//! nothing is copied), several payload runs are moved together inside that same buffer, and the client gets
//! them as one chunk through [`OutBuf::send_chunk`] (one `writev` of size line, payload, CRLF, and the last
//! chunk too when the body ended in this read). These are free functions over exactly the parts they need,
//! so the bytes can stay in the worker's read buffer while they run.

use std::io;
use std::ops::Range;

use super::exchange::Failure;
use crate::conn::client::{StreamFraming, send_body};
use crate::conn::{OutBuf, Transport};
use crate::http::body::BodyDecoder;

/// What one step of an exchange's upstream side came to.
#[derive(Debug)]
pub(super) enum Outcome {
    /// Go on: there may be more to do now.
    Continue,
    /// Wait for an event (the socket) or for the client to drain (backpressure).
    Wait,
    /// The body ended and its last chunk is on its way; `reusable` if the connection may serve another
    /// exchange.
    Finished { reusable: bool },
    /// The upstream failed.
    Failed(Failure),
    /// Writing to the client failed: it is gone.
    ClientGone(io::Error),
}

/// Decodes `input` (body bytes just read) and sends the payload to the client as a single chunk, with the
/// last chunk behind it when the body ended.
///
/// When a read holds several upstream chunks, their payloads are moved together at the front of `input`
/// (a `memmove` inside the buffer we just read into) so that one `writev` sends them all.
pub(super) fn relay(
    decoder: &mut BodyDecoder,
    keep_alive: bool,
    input: &mut [u8],
    ranges: &mut Vec<Range<usize>>,
    out: &mut OutBuf,
    client: &mut Transport,
    framing: StreamFraming,
) -> Outcome {
    ranges.clear();
    let decoded = match decoder.decode(input, ranges) {
        Ok(d) => d,
        Err(e) => return Outcome::Failed(Failure::BadBody(e)),
    };
    let payload = gather(input, ranges);
    if let Err(e) = send_body(out, client, framing, payload, decoded.done) {
        return Outcome::ClientGone(e);
    }
    if decoded.done {
        // Reusable only if the body ended exactly where our bytes did: anything after it would be a
        // response we never asked for.
        Outcome::Finished {
            reusable: keep_alive && decoded.consumed == input.len(),
        }
    } else {
        Outcome::Continue
    }
}

/// Moves the bytes of `ranges` (ascending, disjoint) to the front of `buf` and returns them as one slice.
pub fn gather<'a>(buf: &'a mut [u8], ranges: &[Range<usize>]) -> &'a [u8] {
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
