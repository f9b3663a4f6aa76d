//! One relayed request: the [`Exchange`] between a client and an upstream, and what to do when the
//! upstream fails ([`on_failure`]).
//!
//! An exchange lives inside its client's connection (`ClientState::Serving(Exchange)`) and *owns* its
//! upstream connection. So the link between client and upstream is not stored as two ids that must agree:
//! it is the ownership itself. Both sockets are registered under the client's slab entry, told apart by
//! their tag (`relay::CLIENT`, `relay::UPSTREAM`), so an event on either finds the whole exchange with one
//! lookup; when the client goes, its exchange and the upstream go with it (never pooled mid-body), and a
//! retry replaces `upstream` in place.
//!
//! ```text
//!                                        ┌─ NextAddress: the name's next address ─┐
//!                                        ▼                      connect failed  │
//!   request ──▶ Resolving ──addresses──▶ AwaitingUpstream { request, upstream } ─┘ ──2xx head──▶ Streaming
//!   routed        ▲   │ (a pooled           │    │                                              │
//!                 │   │  connection skips   │    └─ failure: BadGateway (502)                   │ failure
//!                 │   │  the resolving)     │                                                   ▼
//!                 │   └─ no address: 502    └─ Retry (a stale pooled connection):       FailStream (error
//!                 └──────────────────────────── same request, new connection            event, no last chunk)
//! ```
//!
//! The phase says what the exchange waits for, and each phase holds what only it needs: no connection
//! while the name is resolved; the request bytes while a retry is possible (freed when the stream starts);
//! the addresses not tried yet while a connect may still fail.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::admission::{Permit, Ticket};
use super::auth::Identity;
use super::deadlines::{ExchangeTimers, StepFacts, UpstreamTimeouts, wanted};
use super::health::Probe;
use super::sse::SseWatch;
use super::usage::{Dialect, UsageWatch};
use crate::conn::client::{Record, StreamFraming};
use crate::conn::upstream::{UpstreamConn, UpstreamState};
use crate::reactor::{ConnId, Conns, Timers};

/// What a relayed request is waiting for.
pub enum Phase {
    /// The upstream's name is being resolved (off the loop); no connection yet. `request` is the
    /// complete upstream request, head and body.
    Resolving { request: Vec<u8> },
    /// On `upstream` (connecting, or with the request on its way); no byte of the response has reached the
    /// client yet, so a failure can still be a clean 502, or another try with `request`. `fallback`: the
    /// name's other addresses, tried in order if this connect fails.
    AwaitingUpstream {
        request: Vec<u8>,
        upstream: UpstreamConn,
        fallback: Vec<SocketAddr>,
    },
    /// The client has the stream's head and body bytes flow from `upstream`. From here there is no retry.
    Streaming { upstream: UpstreamConn },
}

/// What the relayed body has shown so far: for the first-token deadline, and for where bytes of our own
/// (a keep-alive comment, an error event) may go.
#[derive(Debug, Default)]
pub struct BodySeen {
    /// The event stream's frames (`None` for a body that is not an event stream, or before the head).
    pub sse: Option<SseWatch>,
    /// The first real event (for an event stream) or the first payload byte (for another body) has gone
    /// to the client.
    pub first_token: bool,
    /// When the last chunk left for the client (for the gap between events).
    pub last_chunk: Option<Instant>,
    /// When the oldest read whose bytes the client's socket has not taken yet returned (for the
    /// residence time, recorded when the queue drains).
    pub held_since: Option<Instant>,
    /// The first event with content, and the usage, as the stream's own fields say (`relay::usage`; an
    /// event stream only). Boxed: it is a few hundred bytes, and only streams have one.
    pub usage: Option<Box<UsageWatch>>,
}

impl BodySeen {
    /// Takes a payload on its way to the client.
    pub fn saw(&mut self, payload: &[u8]) {
        match &mut self.sse {
            Some(watch) => {
                watch.feed(payload);
                self.first_token = watch.first_event();
            }
            None => self.first_token |= !payload.is_empty(),
        }
        if let Some(usage) = &mut self.usage {
            usage.feed(payload);
        }
    }

    /// The first content has gone to the client: an event that carries content (not a role, a
    /// `response.created` or a ping) in an event stream, the first payload byte of another body.
    pub fn first_content(&self) -> bool {
        match &self.usage {
            Some(usage) => usage.first_token(),
            None => self.first_token,
        }
    }

    /// Writes the usage the stream reported so far, if any, into `record` (its end, or its cut).
    pub fn usage_into(&self, record: Option<&mut Record>) {
        let (Some(watch), Some(record)) = (&self.usage, record) else {
            return;
        };
        if let Some(u) = watch.usage() {
            record.usage = Some(crate::conn::client::record::Usage {
                model: watch.model().map(Box::from),
                input: u.input,
                output: u.output,
            });
        }
    }

    /// Bytes of our own can go to the client now without landing inside an upstream event.
    pub fn at_boundary(&self) -> bool {
        self.sse.as_ref().is_some_and(SseWatch::at_boundary)
    }
}

/// What a relayed request is, which decides what its client's head says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `POST /api/v1/generate-stream`: our SSE head on a 2xx answer, a 502 that says why on any other.
    Generate,
    /// A provider's own API: the upstream's status and fields, whatever they are. `head`: the request
    /// was a `HEAD`, whose answer has no body whatever its fields say (RFC 9110 §9.3.2).
    PassThrough { head: bool },
}

/// One relayed request.
pub struct Exchange {
    pub kind: Kind,
    /// The API whose events the body carries, for its usage (`relay::usage`): the upstream's provider,
    /// and for OpenAI, which of its APIs the path asks for.
    pub dialect: Dialect,
    /// The client's body is an event stream, so a failure mid-way can be told in-band (an SSE `error`
    /// event); any other body can only be cut short. Known once the upstream's head is in.
    pub event_stream: bool,
    /// Which upstream serves it (its index in the configuration).
    pub via: usize,
    /// How the client's response is framed (and what follows it).
    pub framing: StreamFraming,
    pub phase: Phase,
    /// 1 for the first try, 2 for the retry after a stale pooled connection.
    pub attempt: u32,
    /// The request may be sent twice: its method is idempotent, or the client sent an `Idempotency-Key`
    /// (and so accepts, or dedupes, a repeat). Any other request is sent again only if none of it left.
    pub replayable: bool,
    /// When the request was routed.
    pub started: Instant,
    /// Who asked (`auth::authenticate`): what a per-client limit counts, and releases when the exchange
    /// ends.
    pub client: Identity,
    /// The reactor batch (`Context::batch`) in which the current upstream socket was registered under
    /// the client's id: events of that batch for the upstream token are for the socket it replaced.
    pub upstream_batch: u64,
    /// The deadlines armed for this exchange (`relay::deadlines`).
    pub timers: ExchangeTimers,
    /// What the relayed body has shown so far.
    pub seen: BodySeen,
    /// Its turn at the upstream (`relay::admission`); given back when the exchange ends or moves on.
    pub permit: Option<Permit>,
    /// Its place in the upstream's queue while it waits for a turn.
    pub ticket: Option<Ticket>,
    /// It is the one request a half-open circuit breaker let through (`relay::health`).
    pub probe: Option<Probe>,
    /// Waiting out a retry's backoff.
    pub backing_off: bool,
    /// Retries after a failed try (not counting the stale-connection retry, which is `attempt`).
    pub retries: u32,
    /// Upstreams it moved to after the first failed (bounded by the number of upstreams).
    pub hops: usize,
    /// What a 5xx or 429 answer leads to on this try, decided when the try starts: when `Some`, such an
    /// answer is not passed on but tried again (or elsewhere), provided its `Retry-After` is within
    /// the wait allowed.
    pub retry_room: Option<RetryRoom>,
    /// The `Retry-After` of the last status answer that is being retried.
    pub retry_after: Option<Duration>,
    /// The status of the last response head, once one came.
    pub status: Option<u16>,
    /// What the request was made from, to make it again for a fallback upstream (kept only when the
    /// upstream has a fallback, and only until the stream begins).
    pub rebuild: Option<Box<super::rebuild::Rebuild>>,
    /// Its place in the relay's gauge of exchanges in flight (set by whoever starts it with the relay's
    /// counters; tests leave it out).
    pub in_flight: Option<super::InFlight>,
}

impl Exchange {
    /// A new exchange for `request`; it starts by finding a connection (`Resolving`).
    pub fn new(
        kind: Kind,
        via: usize,
        request: Vec<u8>,
        framing: StreamFraming,
        now: Instant,
        client: Identity,
    ) -> Exchange {
        Exchange {
            client,
            replayable: false,
            kind,
            dialect: Dialect::OpenAi,
            event_stream: kind == Kind::Generate,
            via,
            framing,
            phase: Phase::Resolving { request },
            attempt: 1,
            started: now,
            upstream_batch: 0,
            permit: None,
            ticket: None,
            probe: None,
            backing_off: false,
            retries: 0,
            hops: 0,
            retry_room: None,
            retry_after: None,
            status: None,
            rebuild: None,
            timers: ExchangeTimers::default(),
            seen: BodySeen::default(),
            in_flight: None,
        }
    }

    /// The upstream connection, once there is one.
    pub fn upstream(&mut self) -> Option<&mut UpstreamConn> {
        match &mut self.phase {
            Phase::Resolving { .. } => None,
            Phase::AwaitingUpstream { upstream, .. } | Phase::Streaming { upstream } => {
                Some(upstream)
            }
        }
    }

    /// Takes the upstream connection out of a finished exchange.
    pub fn into_upstream(self) -> Option<UpstreamConn> {
        match self.phase {
            Phase::Resolving { .. } => None,
            Phase::AwaitingUpstream { upstream, .. } | Phase::Streaming { upstream } => {
                Some(upstream)
            }
        }
    }

    /// Tries `upstream` next, with `fallback` the addresses left after it (replacing a connection that
    /// failed before answering, if there was one). Only before the stream began.
    pub fn connect(&mut self, upstream: UpstreamConn, fallback: Vec<SocketAddr>) {
        let request = match std::mem::replace(
            &mut self.phase,
            Phase::Resolving {
                request: Vec::new(),
            },
        ) {
            Phase::Resolving { request } | Phase::AwaitingUpstream { request, .. } => request,
            // Streaming holds no request any more: nothing to send again.
            streaming @ Phase::Streaming { .. } => {
                self.phase = streaming;
                return;
            }
        };
        self.phase = Phase::AwaitingUpstream {
            request,
            upstream,
            fallback,
        };
    }

    /// The addresses left to try after a failed connect, in order (taken out: they go back with the next
    /// [`Exchange::connect`]).
    pub fn take_fallback(&mut self) -> Vec<SocketAddr> {
        match &mut self.phase {
            Phase::AwaitingUpstream { fallback, .. } => std::mem::take(fallback),
            _ => Vec::new(),
        }
    }

    /// The response head said 2xx: the stream begins, and the request (no longer needed for a retry) is
    /// freed.
    pub fn start_streaming(&mut self) {
        if let Phase::AwaitingUpstream { .. } = self.phase
            && let Phase::AwaitingUpstream { upstream, .. } = std::mem::replace(
                &mut self.phase,
                Phase::Resolving {
                    request: Vec::new(),
                },
            )
        {
            self.phase = Phase::Streaming { upstream };
        }
    }

    /// Starts attempt `attempt + 1`: the failed connection goes, and the exchange looks for another.
    pub fn retry(&mut self) {
        if let Phase::AwaitingUpstream { .. } = self.phase {
            self.attempt += 1;
            self.release_connection();
        }
    }

    /// Waits out a backoff before trying again: the connection (if any) and the turn go, the request
    /// stays.
    pub fn back_off(&mut self) {
        self.release_connection();
        self.permit = None;
        self.backing_off = true;
    }

    /// Moves to upstream `via` (a fallback) with `request`, made for it: a fresh start there, with no
    /// connection, turn or probe of the upstream it leaves.
    pub fn move_to(&mut self, via: usize, request: Vec<u8>) {
        self.phase = Phase::Resolving { request };
        self.via = via;
        self.hops += 1;
        (self.permit, self.ticket, self.probe) = (None, None, None);
        (self.attempt, self.retries, self.retry_after) = (1, 0, None);
    }

    /// Back to `Resolving` with the request, from `AwaitingUpstream` (the connection is dropped).
    fn release_connection(&mut self) {
        if let Phase::AwaitingUpstream { .. } = self.phase
            && let Phase::AwaitingUpstream { request, .. } = std::mem::replace(
                &mut self.phase,
                Phase::Resolving {
                    request: Vec::new(),
                },
            )
        {
            self.phase = Phase::Resolving { request };
        }
    }

    /// What the policy says about `failure` now; `backoff` is the wait the next retry would take, if the
    /// upstream gave no `Retry-After`.
    pub fn on_failure(&self, failure: &Failure, backoff: Duration) -> Decision {
        let (reused, sent, started, fallback) = match &self.phase {
            Phase::Resolving { .. } => (false, false, false, false),
            Phase::AwaitingUpstream {
                upstream, fallback, ..
            } => (
                upstream.reused,
                upstream.request_sent(),
                upstream.response_started(),
                !fallback.is_empty(),
            ),
            Phase::Streaming { .. } => (false, true, true, false),
        };
        let room = self.retry_room.unwrap_or(RetryRoom {
            retries_left: false,
            fallback: false,
            max_wait: Duration::ZERO,
        });
        let wait = match failure {
            Failure::Status(..) => self.retry_after.unwrap_or(backoff),
            _ => backoff,
        };
        let facts = Facts {
            streaming: matches!(self.phase, Phase::Streaming { .. }),
            attempt: self.attempt,
            reused,
            replayable: self.replayable,
            request_sent: sent,
            response_started: started,
            fallback,
            retries_left: room.retries_left,
            fallback_upstream: room.fallback,
            wait,
            max_wait: room.max_wait,
        };
        on_failure(&facts, failure)
    }

    /// What decides the exchange's current deadline (`deadlines::wanted`).
    pub fn step_facts(&self) -> StepFacts {
        let none = StepFacts {
            queued: self.ticket.is_some(),
            backing_off: self.backing_off,
            streaming: false,
            connection: false,
            connected: false,
            handshaking: false,
            first_token: false,
        };
        match &self.phase {
            Phase::Resolving { .. } => none,
            Phase::AwaitingUpstream { upstream, .. } => StepFacts {
                connection: true,
                connected: upstream.io.connected() || upstream.request_sent(),
                handshaking: matches!(upstream.state, UpstreamState::Handshaking),
                ..none
            },
            Phase::Streaming { .. } => StepFacts {
                streaming: true,
                connection: true,
                connected: true,
                first_token: self.seen.first_token,
                ..none
            },
        }
    }

    /// Arms the deadline of what the exchange waits for now, if that changed (`ExchangeTimers::expect`);
    /// `id` is its client's.
    pub fn watch(
        &mut self,
        timers: &mut Timers<super::RelayTimer>,
        timeouts: &UpstreamTimeouts,
        now: Instant,
        id: ConnId,
    ) {
        let wait = wanted(self.step_facts());
        let keepalive = self.seen.sse.is_some() && matches!(self.phase, Phase::Streaming { .. });
        let key = super::RelayTimer::Exchange;
        self.timers
            .expect(timers, timeouts, wait, keepalive, now, id, key);
    }

    /// Releases the exchange's deadlines (it ended, or its client left).
    pub fn cancel_deadlines<K>(&mut self, timers: &mut Timers<K>) {
        self.timers.cancel_all(timers);
    }
}

pub use super::policy::{Decision, Facts, Failure, RetryRoom, on_failure, retryable};

/// The exchange of client `id`, if it is being served.
pub fn exchange(cx: &mut crate::reactor::Cx<super::Relay>, id: ConnId) -> Option<&mut Exchange> {
    exchange_in(&mut cx.conns, id)
}

/// [`exchange`] over the slab alone, for callers that use other parts of the context meanwhile.
pub fn exchange_in(conns: &mut Conns<super::Entry>, id: ConnId) -> Option<&mut Exchange> {
    match conns.get_mut(id) {
        Some(super::Entry::Client(c)) => match &mut c.state {
            crate::conn::client::ClientState::Serving(x) => Some(x),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests;
