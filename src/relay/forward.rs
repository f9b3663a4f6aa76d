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
use std::time::Instant;

use super::exchange::{BodySeen, Exchange, Failure};
use crate::conn::client::{ClientConn, ClientState, Record, StreamFraming, send_body};
use crate::conn::{OutBuf, Transport};
use crate::http::body::BodyDecoder;
use crate::metrics::RelayMetrics;

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

/// Whether the pump can go on after a failure was handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flow {
    More,
    Wait,
}

impl Flow {
    /// `then` if this is `More`.
    pub(super) fn and_then(self, then: impl FnOnce() -> Flow) -> Flow {
        match self {
            Flow::More => then(),
            Flow::Wait => Flow::Wait,
        }
    }
}

/// Where a body's payload goes: the client's write side, how its body is framed, and what the exchange
/// notes about what went by.
pub(super) struct Sink<'a, 'c> {
    pub client: &'a mut Client<'c>,
    pub framing: StreamFraming,
    pub seen: &'a mut BodySeen,
}

/// The client side of an exchange, as the upstream steps need it: where its bytes go, and what is
/// noted of them (the worker's metrics, the request's record).
pub(super) struct Client<'a> {
    pub io: &'a mut Transport,
    pub out: &'a mut OutBuf,
    pub metrics: &'a RelayMetrics,
    pub record: &'a mut Option<Box<Record>>,
    /// The status of the response head queued for the client (for the log and the metrics).
    pub status: &'a mut u16,
    /// The loop's clock for this batch.
    pub now: Instant,
}

impl<'a> Client<'a> {
    /// The client side of `c` and its exchange, if it is serving one.
    pub fn split(
        c: &'a mut ClientConn<Box<Exchange>>,
        metrics: &'a RelayMetrics,
        now: Instant,
    ) -> Option<(Client<'a>, &'a mut Exchange)> {
        let ClientConn {
            io,
            out,
            state,
            record,
            status,
            ..
        } = c;
        let ClientState::Serving(x) = state else {
            return None;
        };
        let client = Client {
            io,
            out,
            metrics,
            record,
            status,
            now,
        };
        Some((client, x))
    }

    /// A chunk of `n` payload bytes left for the client; `first_token`: it carried the stream's first
    /// event with content. Per chunk: relaxed atomics only, and nothing when metrics are off.
    #[inline]
    fn noted(&mut self, seen: &mut BodySeen, n: usize, first_token: bool) {
        let (m, now) = (self.metrics, self.now);
        if !m.enabled {
            return;
        }
        m.chunk(n);
        if let Some(last) = seen.last_chunk.replace(now) {
            m.gap.record_duration(now.saturating_duration_since(last));
        }
        if first_token && let Some(r) = self.record.as_deref_mut() {
            r.first_token = Some(now);
            m.ttft
                .record_duration(now.saturating_duration_since(r.started));
        }
    }
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
    to: &mut Sink<'_, '_>,
) -> Outcome {
    ranges.clear();
    let decoded = match decoder.decode(input, ranges) {
        Ok(d) => d,
        Err(e) => return Outcome::Failed(Failure::BadBody(e)),
    };
    let payload = gather(input, ranges);
    let had_token = to.seen.first_content();
    to.seen.saw(payload);
    let c = &mut *to.client;
    if let Err(e) = send_body(c.out, c.io, to.framing, payload, decoded.done) {
        return Outcome::ClientGone(e);
    }
    if !payload.is_empty() {
        let first = !had_token && to.seen.first_content();
        c.noted(to.seen, payload.len(), first);
    }
    if decoded.done {
        to.seen.usage_into(c.record.as_deref_mut());
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

/// Whose shape an error event takes: each client parses the stream of the API it called, so a failure
/// told in-band must be an event that API's SDKs recognise as an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorShape {
    /// The simple route: the project's `event: error` with `{"error":{"code","message"}}`.
    Project,
    /// OpenAI's streams carry errors as a `data:` line with `{"error":{...}}` (the SDKs raise on it).
    OpenAi,
    /// Anthropic's `event: error` with `{"type":"error","error":{"type","message"}}`.
    Anthropic,
    /// Gemini's streams carry a `data:` line with Google's error object `{"error":{"code","message","status"}}`.
    Gemini,
}

impl ErrorShape {
    /// The shape of a pass-through stream of `provider`'s API.
    pub fn of(provider: super::providers::Provider) -> ErrorShape {
        use super::providers::Provider::*;
        match provider {
            OpenAi => ErrorShape::OpenAi,
            Anthropic => ErrorShape::Anthropic,
            Gemini => ErrorShape::Gemini,
        }
    }
}

/// The SSE event that tells a client its stream failed mid-way, in `shape`.
///
/// `at_boundary`: the stream so far ends between two events. If it does not (the upstream broke off inside
/// an event), the event starts with a blank line, or our first line would be glued to that event's last
/// one. SSE has no way to cancel a partial event, so a client sees it end (truncated) and then this one.
pub fn error_event(shape: ErrorShape, failure: &Failure, at_boundary: bool) -> Vec<u8> {
    use serde_json::json;
    let message = failure.to_string();
    let code = failure.code();
    let (event, data) = match shape {
        ErrorShape::Project => (
            Some("error"),
            json!({"error": {"code": code, "message": message}}),
        ),
        ErrorShape::OpenAi => (
            None,
            json!({"error": {"message": message, "type": "upstream_error", "param": null, "code": code}}),
        ),
        ErrorShape::Anthropic => (
            Some("error"),
            json!({"type": "error", "error": {"type": "api_error", "message": message}}),
        ),
        ErrorShape::Gemini => {
            let (status, name) = match failure {
                Failure::Timeout(..) => (504, "DEADLINE_EXCEEDED"),
                _ => (503, "UNAVAILABLE"),
            };
            (
                None,
                json!({"error": {"code": status, "message": message, "status": name}}),
            )
        }
    };
    let mut out = String::new();
    if !at_boundary {
        out.push_str("\n\n");
    }
    if let Some(event) = event {
        out.push_str(&format!("event: {event}\n"));
    }
    out.push_str(&format!("data: {data}\n\n"));
    out.into_bytes()
}

/// The comment that keeps a silent event stream alive through proxies with idle timeouts; every SSE
/// parser ignores it.
pub const KEEPALIVE_COMMENT: &[u8] = b": keep-alive\n\n";

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

    /// The JSON of an error event's `data:` line, and its `event:` name.
    fn parse(ev: &[u8]) -> (Option<String>, serde_json::Value) {
        let text = String::from_utf8(ev.to_vec()).unwrap();
        assert!(text.ends_with("\n\n"), "{text:?}");
        let event = text
            .lines()
            .find_map(|l| l.strip_prefix("event: "))
            .map(String::from);
        let data = text.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
        (event, serde_json::from_str(data).unwrap())
    }

    #[test]
    fn error_events_take_each_apis_shape() {
        let f = Failure::Truncated;
        let (event, data) = parse(&error_event(ErrorShape::Project, &f, true));
        assert_eq!(event.as_deref(), Some("error"));
        assert_eq!(data["error"]["code"], "upstream_failed");
        let (event, data) = parse(&error_event(ErrorShape::OpenAi, &f, true));
        assert_eq!(event, None);
        assert!(data["error"]["message"].is_string());
        let (event, data) = parse(&error_event(ErrorShape::Anthropic, &f, true));
        assert_eq!(event.as_deref(), Some("error"));
        assert_eq!(
            (data["type"].as_str(), data["error"]["type"].as_str()),
            (Some("error"), Some("api_error"))
        );
        let timeout = Failure::Timeout(
            super::super::deadlines::Wait::Idle,
            std::time::Duration::from_secs(2),
        );
        let (_, data) = parse(&error_event(ErrorShape::Gemini, &timeout, true));
        assert_eq!(
            (
                data["error"]["code"].as_i64(),
                data["error"]["status"].as_str()
            ),
            (Some(504), Some("DEADLINE_EXCEEDED"))
        );
    }

    #[test]
    fn a_partial_event_is_ended_before_the_error() {
        let ev = error_event(ErrorShape::Project, &Failure::Truncated, false);
        assert!(ev.starts_with(b"\n\nevent: error\n"));
        assert!(
            error_event(ErrorShape::Project, &Failure::Truncated, true)
                .starts_with(b"event: error\n")
        );
    }
}
