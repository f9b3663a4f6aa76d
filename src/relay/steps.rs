//! One step of an exchange's upstream side, per state of its connection: shake hands, write the request,
//! read the head, read the body. Free functions over exactly the parts each needs (the exchange, the
//! client's write side, the worker's read buffer), so that the bytes can stay in that buffer while they
//! run; `Upstreams::step` picks the one the connection's state calls for.

use std::io;
use std::ops::Range;
use std::time::Instant;

use super::exchange::{Exchange, Failure, Kind, Phase};
use super::forward::{self, Client, Outcome, Sink};
use super::passthrough;
use super::retry;
use super::sse::SseWatch;
use super::usage::UsageWatch;
use crate::conn::client::{send_body, stream_head};
use crate::conn::tls::Handshake;
use crate::conn::transport::ReadOutcome;
use crate::conn::upstream::{HeadProgress, SendProgress, UpstreamConn, UpstreamState};
use crate::http::body::BodyDecoder;

/// The client's two write-side parts, borrowed while its exchange is borrowed too.
/// How a handshake that finished went, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shaken {
    Full,
    Resumed,
}

/// `Handshaking`: move the TLS handshake on. `Ok(Some(_))` when it finished in this step.
pub(super) fn handshake(upstream: &mut UpstreamConn) -> Result<Option<Shaken>, Outcome> {
    match upstream.handshake() {
        Ok(Handshake::Done) => {
            let resumed = upstream.io.tls().and_then(|t| t.resumed()) == Some(true);
            Ok(Some(if resumed {
                Shaken::Resumed
            } else {
                Shaken::Full
            }))
        }
        Ok(Handshake::Blocked) => Ok(None),
        // A certificate, name or protocol failure: rustls's reason, for the client's 502.
        Err(e) if e.kind() == io::ErrorKind::InvalidData => Err(Outcome::Failed(Failure::Tls(e))),
        // A refused connect surfaces here too, as the ClientHello's write error.
        Err(e) => Err(Outcome::Failed(Failure::Io(e))),
    }
}

/// `Sending`: write the request (it stays in the exchange while a retry is possible).
///
/// A server may answer before it has read all of the request (an early `413` for a body too large, a
/// `400`) and stop reading it: the write then blocks, or fails with a broken pipe or a reset, while the
/// answer waits to be read. That answer is what the client gets, not a 502: the bytes are read here and
/// become the start of the response head ([`UpstreamConn::answer_early`]). Reading first, rather than
/// switching on a readable socket alone, keeps a TLS session ticket (readable, but no plaintext) from
/// being taken for an answer.
pub(super) fn send_request(x: &mut Exchange, scratch: &mut [u8]) -> Outcome {
    let Phase::AwaitingUpstream {
        request, upstream, ..
    } = &mut x.phase
    else {
        return Outcome::Wait;
    };
    let write_error = match upstream.write_request(request) {
        Ok(SendProgress::Done) => return Outcome::Continue,
        Ok(SendProgress::Blocked) if !(upstream.request_sent() && upstream.io.readable()) => {
            return Outcome::Wait;
        }
        Ok(SendProgress::Blocked) => None,
        Err(e)
            if upstream.request_sent()
                && matches!(
                    e.kind(),
                    io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
                ) =>
        {
            Some(e)
        }
        Err(e) => return Outcome::Failed(Failure::Io(e)),
    };
    match upstream.io.read(scratch) {
        ReadOutcome::Data(n) => {
            upstream.answer_early(&scratch[..n]);
            Outcome::Continue
        }
        ReadOutcome::Drained => match write_error {
            None => Outcome::Wait,
            Some(e) => Outcome::Failed(Failure::Io(e)),
        },
        ReadOutcome::Eof => {
            Outcome::Failed(write_error.map_or(Failure::ClosedBeforeHead, Failure::Io))
        }
        ReadOutcome::Failed(e) => Outcome::Failed(Failure::Io(write_error.unwrap_or(e))),
    }
}

/// `AwaitingHead`: read and parse the head; then the client's head (ours for the simple route, the
/// upstream's for a pass-through) and the body bytes that came with it. A head that began as an early
/// answer may be whole in the bytes already held: those are parsed even when the socket has nothing new.
pub(super) fn read_head(
    x: &mut Exchange,
    client: &mut Client<'_>,
    scratch: &mut [u8],
    max_head: usize,
    ranges: &mut Vec<Range<usize>>,
) -> Outcome {
    let Some(upstream) = x.upstream() else {
        return Outcome::Wait;
    };
    let early = upstream.answered_early;
    let (n, ended) = match upstream.io.readable() {
        false => (0, false),
        true => match upstream.io.read(scratch) {
            ReadOutcome::Data(n) => (n, false),
            ReadOutcome::Drained => (0, false),
            ReadOutcome::Eof => (0, true),
            ReadOutcome::Failed(e) => return Outcome::Failed(Failure::Io(e)),
        },
    };
    if n == 0 && !early {
        return match ended {
            true => Outcome::Failed(Failure::ClosedBeforeHead),
            false => Outcome::Wait,
        };
    }
    let (head, mut rest) = match upstream.on_head_bytes(&scratch[..n], max_head) {
        Ok(HeadProgress::NeedMore) if ended => return Outcome::Failed(Failure::ClosedBeforeHead),
        Ok(HeadProgress::NeedMore) if n == 0 => return Outcome::Wait,
        Ok(HeadProgress::NeedMore) => return Outcome::Continue,
        Ok(HeadProgress::Complete { head, rest }) => (head, rest),
        Err(e) => return Outcome::Failed(Failure::BadHead(e)),
    };
    let (framing, kind) = (x.framing, x.kind);
    let event_stream = match kind {
        Kind::Generate => true,
        Kind::PassThrough { .. } => head
            .content_type
            .as_deref()
            .is_some_and(|t| t.trim_start().starts_with("text/event-stream")),
    };
    // A 5xx or 429 that another try may mend (`RetryRoom::takes`) is not passed on: the exchange tries
    // again, here after a wait or at the fallback upstream. Otherwise the simple route answers a non-2xx
    // with a 502 that says what the upstream said, and a pass-through passes it as it is.
    x.status = Some(head.status);
    // `Retry-After` means something on a 429 and a 503 (RFC 6585 §4, RFC 9110 §10.2.3), not on another 5xx.
    let retry_after = match head.status {
        429 | 503 => retry::retry_after(&head.headers),
        _ => None,
    };
    let retried = x
        .retry_room
        .is_some_and(|r| r.takes(head.status, retry_after));
    let refused = retried || (kind == Kind::Generate && !(200..300).contains(&head.status));
    if refused {
        x.retry_after = retry_after;
    }
    let Some((decoder, keep_alive)) = body_of(x) else {
        return Outcome::Wait;
    };
    let has_body = !decoder.is_done() && kind != (Kind::PassThrough { head: true });
    if !has_body {
        // A HEAD's answer, a 204, a 304, a `Content-Length: 0`: nothing follows the head.
        *decoder = crate::http::body::BodyDecoder::new(crate::http::body::Framing::None);
    }
    match kind {
        Kind::Generate | Kind::PassThrough { .. } if refused => {
            // The error body is small and, as a rule, came with the head.
            ranges.clear();
            let detail = match decoder.decode(&rest, ranges) {
                Ok(_) => {
                    let body: Vec<u8> = ranges
                        .iter()
                        .flat_map(|r| rest[r.clone()].to_vec())
                        .collect();
                    passthrough::error_detail(&body)
                }
                Err(_) => String::new(),
            };
            return Outcome::Failed(Failure::Status(head.status, detail));
        }
        // Queued, not written: it leaves with the first payload in one `writev` if some came with the
        // head; otherwise at once, since the first token may be seconds away and the client should know
        // the stream is live.
        Kind::Generate => {
            client.out.push(&stream_head(framing));
            *client.status = 200;
        }
        Kind::PassThrough { .. } => {
            client.out.push(&passthrough::response_head(
                head.status,
                &head.headers,
                framing,
                has_body,
            ));
            *client.status = head.status;
        }
    }
    let reusable = keep_alive && rest.is_empty();
    x.event_stream = event_stream;
    if event_stream {
        x.seen.sse = Some(SseWatch::default());
        // The usage and the first token are read on a side path that `--no-metrics` turns off too.
        if client.metrics.enabled {
            x.seen.usage = Some(Box::new(UsageWatch::new(x.dialect)));
        }
    }
    x.start_streaming();
    if !has_body && kind == Kind::Generate {
        // A 2xx with no body (a 204, a `Content-Length: 0`) to the simple route: our head announced a
        // chunked stream, so it must be ended, or the client waits for ever and its next response on the
        // connection would be read as part of this body. The upstream said it was complete: so is ours.
        return match send_body(client.out, client.io, framing, &[], true) {
            Ok(()) => Outcome::Finished { reusable },
            Err(e) => Outcome::ClientGone(e),
        };
    }
    if !has_body || rest.is_empty() {
        // Nothing follows the head (a 204, a 304, a `Content-Length: 0`), or nothing came with it yet.
        return match client.out.flush(client.io) {
            Ok(_) if !has_body => Outcome::Finished { reusable },
            Ok(_) => Outcome::Continue,
            Err(e) => Outcome::ClientGone(e),
        };
    }
    let Exchange { phase, seen, .. } = x;
    let Some((decoder, keep_alive)) = decoder_of(phase) else {
        return Outcome::Wait;
    };
    let mut to = Sink {
        client,
        framing,
        seen,
    };
    forward::relay(decoder, keep_alive, &mut rest, ranges, &mut to)
}

/// The body decoder of the exchange's connection, and whether the connection may be reused after it.
fn body_of(x: &mut Exchange) -> Option<(&mut crate::http::body::BodyDecoder, bool)> {
    decoder_of(&mut x.phase)
}

/// [`body_of`] over the phase alone, for callers that hold other fields of the exchange too.
fn decoder_of(phase: &mut Phase) -> Option<(&mut crate::http::body::BodyDecoder, bool)> {
    match phase {
        Phase::AwaitingUpstream { upstream, .. } | Phase::Streaming { upstream } => {
            match &mut upstream.state {
                UpstreamState::Body {
                    decoder,
                    keep_alive,
                } => Some((decoder, *keep_alive)),
                _ => None,
            }
        }
        Phase::Resolving { .. } => None,
    }
}

/// `Body`: read at most the room the client has left, and relay it.
pub(super) fn read_body(
    x: &mut Exchange,
    client: &mut Client<'_>,
    scratch: &mut [u8],
    cap: usize,
    ranges: &mut Vec<Range<usize>>,
) -> Outcome {
    let room = cap.saturating_sub(client.out.len()).min(scratch.len());
    let framing = x.framing;
    let Exchange { phase, seen, .. } = x;
    let Phase::Streaming {
        upstream: UpstreamConn { io, state, .. },
    } = phase
    else {
        return Outcome::Wait;
    };
    let UpstreamState::Body {
        decoder,
        keep_alive,
    } = state
    else {
        return Outcome::Wait;
    };
    if room == 0 || !io.readable() {
        // Paused by backpressure (the client driver resumes us), or nothing to read (an event will come).
        return Outcome::Wait;
    }
    match io.read(&mut scratch[..room]) {
        ReadOutcome::Data(n) => {
            let read_at = client.metrics.enabled.then(Instant::now);
            let mut to = Sink {
                client,
                framing,
                seen,
            };
            let outcome = forward::relay(decoder, *keep_alive, &mut scratch[..n], ranges, &mut to);
            // Residence: from the read to the write that took its bytes; now if the socket took them
            // all, else when the client's queue drains (`Relay::on_drained`).
            if let Some(at) = read_at {
                match client.out.is_empty() {
                    true => client.metrics.residence.record_duration(at.elapsed()),
                    false => _ = seen.held_since.get_or_insert(at),
                }
            }
            outcome
        }
        ReadOutcome::Drained => Outcome::Wait,
        // A close-delimited body over TLS whose end came without `close_notify`: nothing but the close
        // could end it, and this close may be a cut (the upstream crashed, a FIN was injected). Passing
        // it on with a last chunk would make a truncated answer look complete. Length-framed and chunked
        // bodies need no such check: their framing says whether they are complete.
        ReadOutcome::Eof if matches!(decoder, BodyDecoder::UntilClose) && !io.eof_was_clean() => {
            Outcome::Failed(Failure::Truncated)
        }
        ReadOutcome::Eof => match decoder.on_eof() {
            // A close-delimited body ends here, and the client's body with it.
            Ok(()) => match send_body(client.out, client.io, framing, &[], true) {
                Ok(()) => Outcome::Finished { reusable: false },
                Err(e) => Outcome::ClientGone(e),
            },
            Err(_) => Outcome::Failed(Failure::Truncated),
        },
        ReadOutcome::Failed(e) => Outcome::Failed(Failure::Io(e)),
    }
}
