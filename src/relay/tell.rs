//! What a client is told about its exchange that is not the upstream's answer: that it failed, or, while
//! its event stream is silent, that it is still alive.

use std::io;

use super::Entry;
use super::connector::Connector;
use super::exchange::{Decision, Exchange, Failure, Kind};
use super::forward::{ErrorShape, KEEPALIVE_COMMENT, error_event};
use crate::conn::client::{AfterReply, ClientState, send_body};
use crate::conn::{OutBuf, Transport};
use crate::reactor::{ConnId, Cx};

type RelayCx = Cx<super::Relay>;

/// Tells client `id` its exchange failed, and ends the exchange.
///
/// - Before the response head (`BadGateway`): a clean error response, 502, or 504 for a deadline, in the
///   relay's JSON shape; a keep-alive client keeps its connection.
/// - Mid-stream (`FailStream`): in an event stream, an error event in `shape` (the called API's own, so
///   its SDK raises it), then the connection ends *without* the last chunk, so no client can take a
///   truncated answer for a complete one. Another body (a pass-through JSON answer) can only be cut short.
pub(super) fn failure(
    cx: &mut RelayCx,
    id: ConnId,
    decision: Decision,
    failure: &Failure,
    upstreams: &Connector,
) {
    let name = cx.name().to_string();
    let Some(Entry::Client(c)) = cx.conns.get_mut(id) else {
        return;
    };
    let ClientState::Serving(x) = &c.state else {
        return;
    };
    // The error shape of the API the client called.
    let shape = match x.kind {
        Kind::Generate => ErrorShape::Project,
        Kind::PassThrough { .. } => upstreams
            .target(x.via)
            .map_or(ErrorShape::Project, |t| ErrorShape::of(t.provider)),
    };
    let framing = x.framing;
    log::warn!("{name}: {}: {failure}", c.peer);
    if decision == Decision::FailStream {
        let sent = match x.event_stream {
            true => {
                let event = error_event(shape, failure, x.seen.at_boundary());
                send_body(&mut c.out, &mut c.io, framing, &event, false)
            }
            false => Ok(()),
        };
        if let Some(mut x) = c.finish(AfterReply::Close) {
            x.cancel_deadlines(&mut cx.timers);
            // What it used until it broke is used all the same.
            x.seen.usage_into(c.record.as_deref_mut());
        }
        if let Some(r) = c.record.as_deref_mut() {
            r.cut = Some(failure.code());
        }
        if sent.is_err() {
            cx.close(id);
        }
    } else {
        if let Some(mut x) = c.finish(framing.after()) {
            x.cancel_deadlines(&mut cx.timers);
        }
        let message = failure.to_string();
        let (status, code) = (failure.status(), failure.code());
        // A busy upstream, or an open breaker, says when to come back.
        let retry_after = failure
            .retry_after()
            .map(|d| d.as_secs().max(1).to_string());
        let extra: Vec<(&str, &str)> = retry_after
            .iter()
            .map(|s| ("Retry-After", s.as_str()))
            .collect();
        c.reply_error(status, code, &message, &extra, framing.after());
    }
}

/// Sends a keep-alive comment on the silent event stream of `x`, if it can go now: between two events,
/// and not behind bytes the client has not taken (a client that does not read needs none, and its write
/// deadline is what applies to it). True when it went.
pub(super) fn keep_alive(io: &mut Transport, out: &mut OutBuf, x: &Exchange) -> io::Result<bool> {
    if !(x.seen.at_boundary() && out.is_empty()) {
        return Ok(false);
    }
    send_body(out, io, x.framing, KEEPALIVE_COMMENT, false)?;
    Ok(true)
}
