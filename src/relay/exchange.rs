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

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use crate::conn::client::StreamFraming;
use crate::conn::upstream::UpstreamConn;
use crate::http::chunked::ChunkError;
use crate::http::response::ResponseError;
use crate::reactor::{TimerKey, Timers};

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
    /// The reactor batch (`Context::batch`) in which the current upstream socket was registered under
    /// the client's id: events of that batch for the upstream token are for the socket it replaced.
    pub upstream_batch: u64,
    /// The deadlines armed for this exchange.
    pub deadlines: Deadlines,
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
    ) -> Exchange {
        Exchange {
            replayable: false,
            kind,
            event_stream: kind == Kind::Generate,
            via,
            framing,
            phase: Phase::Resolving { request },
            attempt: 1,
            started: now,
            upstream_batch: 0,
            deadlines: Deadlines::default(),
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
        if let Phase::AwaitingUpstream { .. } = self.phase
            && let Phase::AwaitingUpstream { request, .. } = std::mem::replace(
                &mut self.phase,
                Phase::Resolving {
                    request: Vec::new(),
                },
            )
        {
            self.attempt += 1;
            self.phase = Phase::Resolving { request };
        }
    }

    /// What the policy says about `failure` now.
    pub fn on_failure(&self, failure: &Failure) -> Decision {
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
        let facts = Facts {
            streaming: matches!(self.phase, Phase::Streaming { .. }),
            attempt: self.attempt,
            reused,
            replayable: self.replayable,
            request_sent: sent,
            response_started: started,
            fallback,
        };
        on_failure(&facts, failure)
    }

    /// Releases the exchange's deadlines (it ended, or its client left).
    pub fn cancel_deadlines<K>(&mut self, timers: &mut Timers<K>) {
        self.deadlines.cancel_all(timers);
    }
}

/// The waits an exchange may put a deadline on, one slot each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// The upstream's connect (and, later, its TLS handshake).
    Connect,
    /// The upstream's response head.
    Head,
    /// The next body bytes.
    Idle,
}

/// One armed deadline per [`Wait`] at most. Arming a slot that holds one replaces it.
#[derive(Debug, Default)]
pub struct Deadlines {
    slots: [Option<TimerKey>; 3],
}

impl Deadlines {
    /// Arms `wait` at `at` for entry `id`, replacing what the slot held.
    pub fn arm<K>(
        &mut self,
        timers: &mut Timers<K>,
        wait: Wait,
        at: Instant,
        id: crate::reactor::ConnId,
        key: K,
    ) {
        let slot = &mut self.slots[wait as usize];
        if let Some(old) = slot.take() {
            timers.cancel(old);
        }
        *slot = Some(timers.insert(at, id, key));
    }

    /// Disarms `wait` (what it guarded happened).
    pub fn disarm<K>(&mut self, timers: &mut Timers<K>, wait: Wait) {
        if let Some(key) = self.slots[wait as usize].take() {
            timers.cancel(key);
        }
    }

    /// Disarms every slot.
    pub fn cancel_all<K>(&mut self, timers: &mut Timers<K>) {
        for key in self.slots.iter_mut().filter_map(Option::take) {
            timers.cancel(key);
        }
    }

    /// True when `wait` is armed.
    pub fn is_armed(&self, wait: Wait) -> bool {
        self.slots[wait as usize].is_some()
    }
}

/// Why an upstream exchange failed.
#[derive(Debug)]
pub enum Failure {
    /// The upstream's name did not resolve (the message says why).
    Resolve(String),
    /// Connecting, writing or reading failed (a refused connect surfaces as the first write's error).
    Io(io::Error),
    /// The TLS handshake failed: an untrusted certificate, a name that does not match, a protocol error.
    Tls(io::Error),
    ClosedBeforeHead,
    BadHead(ResponseError),
    /// The upstream refused the simple route's request: its status, and what its error body said.
    Status(u16, String),
    BadBody(ChunkError),
    Truncated,
}

impl Failure {
    /// The machine-readable code of the 502 a client gets for it.
    pub fn code(&self) -> &'static str {
        match self {
            Failure::Resolve(_) => "upstream_unresolved",
            Failure::Status(..) => "upstream_status",
            Failure::Tls(_) => "upstream_tls_failed",
            _ => "upstream_failed",
        }
    }

    /// A connection that never got established: another address of the name may do better.
    pub fn is_connect_failure(&self) -> bool {
        use io::ErrorKind::*;
        matches!(self, Failure::Io(e) if matches!(
            e.kind(),
            ConnectionRefused | HostUnreachable | NetworkUnreachable | AddrNotAvailable | TimedOut | NotConnected
        ))
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Resolve(why) => write!(f, "upstream name resolution failed: {why}"),
            Failure::Io(e) => write!(f, "upstream connection failed: {e}"),
            Failure::Tls(e) => write!(f, "upstream TLS handshake failed: {e}"),
            Failure::ClosedBeforeHead => {
                f.write_str("upstream closed the connection before answering")
            }
            Failure::BadHead(e) => write!(f, "upstream sent an invalid response head: {e}"),
            Failure::Status(s, detail) if detail.is_empty() => {
                write!(f, "upstream answered with status {s}")
            }
            Failure::Status(s, detail) => write!(f, "upstream answered with status {s}: {detail}"),
            Failure::BadBody(e) => write!(f, "upstream sent an invalid body: {e}"),
            Failure::Truncated => {
                f.write_str("upstream closed the connection before the body ended")
            }
        }
    }
}

/// What to do about a failed upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Connect to the name's next address.
    NextAddress,
    /// Send the same request again, on a new connection.
    Retry,
    /// Nothing reached the client yet: answer `502` with the failure.
    BadGateway,
    /// The client has part of the stream: tell it in-band (an SSE `error` event), end *without* the last
    /// chunk and close, so no client can take a truncated answer for a complete one.
    FailStream,
}

/// What the failure policy looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    /// The client has the stream's head.
    pub streaming: bool,
    pub attempt: u32,
    /// The connection came from the pool.
    pub reused: bool,
    /// The request may be sent twice ([`Exchange::replayable`]).
    pub replayable: bool,
    /// Some byte of the request was written.
    pub request_sent: bool,
    /// Some byte of the response arrived.
    pub response_started: bool,
    /// Addresses of the name are left to try.
    pub fallback: bool,
}

/// The failure policy, a pure function of the facts.
///
/// - Once the stream began, nothing can be taken back: `FailStream`.
/// - A connect that failed (refused, unreachable) moves to the name's next address, if one is left.
/// - The one retry: a connection taken from the pool that fails before *any* response byte. The server
///   may have closed it while it idled (the keep-alive race: its FIN was in flight when we took it), which
///   says nothing about the server's health, so the request goes once more on a fresh connection; but
///   only if sending it twice is safe: it is replayable, or none of it was written. A POST the server
///   read in full may have started a billed generation before the server died, and we cannot tell that
///   apart from the race (the rule of Go's `net/http` transport, `shouldRetryRequest`).
/// - Everything else, a status answer included (the server did answer), is a `502`.
pub fn on_failure(f: &Facts, failure: &Failure) -> Decision {
    if f.streaming {
        Decision::FailStream
    } else if f.fallback && !f.reused && failure.is_connect_failure() {
        Decision::NextAddress
    } else if f.reused
        && !f.response_started
        && (f.replayable || !f.request_sent)
        && f.attempt == 1
        && !matches!(failure, Failure::Status(..))
    {
        Decision::Retry
    } else {
        Decision::BadGateway
    }
}

#[cfg(test)]
mod tests;
