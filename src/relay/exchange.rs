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
//!   request routed ──▶ AwaitingUpstream { request } ──2xx head──▶ Streaming ──body ended──▶ (finished:
//!                            │    ▲                                   │                      upstream to
//!                            │    └─ Retry: same request, new         │ failure              the pool)
//!                            │       connection, attempt + 1          ▼
//!                            └─ failure: BadGateway (502)          FailStream (error event, no last chunk)
//! ```
//!
//! The phase says what the exchange waits for, and each phase holds what only it needs: the request bytes
//! are kept while a retry is possible and freed when the stream starts.

use std::fmt;
use std::io;
use std::time::Instant;

use crate::conn::client::StreamFraming;
use crate::conn::upstream::UpstreamConn;
use crate::http::chunked::ChunkError;
use crate::http::response::ResponseError;
use crate::reactor::{TimerKey, Timers};

/// What a relayed request is waiting for.
pub enum Phase {
    /// No byte of the response has reached the client yet, so a failure can still be a clean 502, or a
    /// retry with `request` (the complete upstream request, head and body).
    AwaitingUpstream { request: Vec<u8> },
    /// The client has the stream's head and body bytes flow. From here there is no retry.
    Streaming,
}

/// One relayed request.
pub struct Exchange {
    /// How the client's response is framed (and what follows it).
    pub framing: StreamFraming,
    pub phase: Phase,
    /// 1 for the first upstream connection tried, 2 for a retry.
    pub attempt: u32,
    /// The connection this attempt uses.
    pub upstream: UpstreamConn,
    /// When the request was routed.
    pub started: Instant,
    /// The deadlines armed for this exchange.
    pub deadlines: Deadlines,
}

impl Exchange {
    /// A new exchange, whose first attempt uses `upstream`.
    pub fn new(
        request: Vec<u8>,
        framing: StreamFraming,
        upstream: UpstreamConn,
        now: Instant,
    ) -> Exchange {
        Exchange {
            framing,
            phase: Phase::AwaitingUpstream { request },
            attempt: 1,
            upstream,
            started: now,
            deadlines: Deadlines::default(),
        }
    }

    /// What the policy says about `failure` now.
    pub fn on_failure(&self, failure: &Failure) -> Decision {
        on_failure(
            &self.phase,
            self.attempt,
            self.upstream.reused,
            self.upstream.response_started(),
            failure,
        )
    }

    /// The response head said 2xx: the stream begins, and the request (no longer needed for a retry) is
    /// freed.
    pub fn start_streaming(&mut self) {
        self.phase = Phase::Streaming;
    }

    /// Starts attempt `attempt + 1` on `upstream`. Only valid before the stream began.
    pub fn retry_on(&mut self, upstream: UpstreamConn) {
        self.attempt += 1;
        self.upstream = upstream;
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
    /// Connecting, writing or reading failed (a refused connect surfaces as the first write's error).
    Io(io::Error),
    /// The TLS handshake failed: an untrusted certificate, a name that does not match, a protocol error.
    Tls(io::Error),
    ClosedBeforeHead,
    BadHead(ResponseError),
    Status(u16),
    BadBody(ChunkError),
    Truncated,
}

impl Failure {
    /// The machine-readable code of the 502 a client gets for it.
    pub fn code(&self) -> &'static str {
        match self {
            Failure::Tls(_) => "upstream_tls_failed",
            _ => "upstream_failed",
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Io(e) => write!(f, "upstream connection failed: {e}"),
            Failure::Tls(e) => write!(f, "upstream TLS handshake failed: {e}"),
            Failure::ClosedBeforeHead => {
                f.write_str("upstream closed the connection before answering")
            }
            Failure::BadHead(e) => write!(f, "upstream sent an invalid response head: {e}"),
            Failure::Status(s) => write!(f, "upstream answered with status {s}"),
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
    /// Send the same request again, on a new connection.
    Retry,
    /// Nothing reached the client yet: answer `502` with the failure.
    BadGateway,
    /// The client has part of the stream: tell it in-band (an SSE `error` event), end *without* the last
    /// chunk and close, so no client can take a truncated answer for a complete one.
    FailStream,
}

/// The failure policy, a pure function of the facts.
///
/// The one retry: a connection taken from the pool that fails before *any* response byte. The server may
/// have closed it while it idled (the keep-alive race: its FIN was in flight when we took it), which says
/// nothing about the server's health, so the request goes once more on a fresh connection. A status
/// answer is never retried (the server did answer), nor a fresh connection's failure, nor anything after
/// the first response byte.
pub fn on_failure(
    phase: &Phase,
    attempt: u32,
    reused: bool,
    response_started: bool,
    failure: &Failure,
) -> Decision {
    match phase {
        Phase::Streaming => Decision::FailStream,
        Phase::AwaitingUpstream { .. }
            if reused
                && !response_started
                && attempt == 1
                && !matches!(failure, Failure::Status(_)) =>
        {
            Decision::Retry
        }
        Phase::AwaitingUpstream { .. } => Decision::BadGateway,
    }
}

#[cfg(test)]
mod tests;
