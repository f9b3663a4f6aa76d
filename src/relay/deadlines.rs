//! The deadlines of an exchange: one per wait, each an entry in the worker's one timer set.
//!
//! An exchange waits for one thing at a time on its upstream: the name and the connection
//! ([`Wait::Connect`]), the TLS handshake ([`Wait::Handshake`]), the response head ([`Wait::Head`]), the
//! first real event ([`Wait::FirstToken`]), then each next read ([`Wait::Idle`]). So one *step* slot holds
//! the deadline of the current wait, and moving on replaces it. Two more run beside it: the optional
//! deadline of the whole exchange ([`Wait::Total`]) and the keep-alive comment of an event stream
//! ([`Wait::KeepAlive`]).
//!
//! Which wait is current is a pure function of the exchange's facts ([`wanted`]); after each pump the
//! relay calls [`ExchangeTimers::expect`] with it, which touches the timer set only when the wait changed.
//! Waits that restart with every read (idle, keep-alive) are not re-armed per read, which would cost a
//! tree removal and insertion per relayed chunk: the read only records the instant ([`ExchangeTimers::read_at`]),
//! and when the deadline fires it is checked against that instant and moved forward if the stream was not
//! silent for long enough ([`ExchangeTimers::check`]). A deadline then fires at most once per period of a
//! live stream.

use std::time::{Duration, Instant};

use crate::reactor::{ConnId, TimerKey, Timers};

/// How long each upstream wait may take (docs/10-deadlines.md; the options of `config::timeouts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamTimeouts {
    pub connect: Duration,
    pub handshake: Duration,
    pub head: Duration,
    pub first_token: Duration,
    pub idle: Duration,
    /// The whole exchange (`None`: no limit).
    pub total: Option<Duration>,
    /// The interval of keep-alive comments on a silent event stream (`None`: none).
    pub sse_keepalive: Option<Duration>,
}

impl Default for UpstreamTimeouts {
    fn default() -> Self {
        UpstreamTimeouts {
            connect: Duration::from_secs(10),
            handshake: Duration::from_secs(10),
            head: Duration::from_secs(600),
            first_token: Duration::from_secs(300),
            idle: Duration::from_secs(120),
            total: None,
            sse_keepalive: Some(Duration::from_secs(15)),
        }
    }
}

impl UpstreamTimeouts {
    /// The deadline of `wait` (the keep-alive interval is not a deadline: the idle one stands for it).
    pub fn limit(&self, wait: Wait) -> Duration {
        match wait {
            Wait::Connect => self.connect,
            Wait::Handshake => self.handshake,
            Wait::Head => self.head,
            Wait::FirstToken => self.first_token,
            Wait::Idle | Wait::KeepAlive => self.idle,
            Wait::Total => self.total.unwrap_or_default(),
            // Armed with their own instants (`ExchangeTimers::arm_step`); never through this.
            Wait::Queue | Wait::Backoff => Duration::ZERO,
        }
    }
}

/// What an exchange may be waiting for, each with its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// The upstream's name and a connection to it.
    Connect,
    /// The TLS handshake.
    Handshake,
    /// The response head, from the start of the request.
    Head,
    /// The first real event of the body (or its first byte, for a body that is not an event stream).
    FirstToken,
    /// The next body bytes.
    Idle,
    /// The end of the whole exchange.
    Total,
    /// Time for a keep-alive comment, if the stream is still silent.
    KeepAlive,
    /// A turn at the upstream (its queue's deadline).
    Queue,
    /// The end of a retry's backoff (not a failure: the next try begins).
    Backoff,
}

impl Wait {
    /// How the wait is named in errors and logs.
    pub fn name(self) -> &'static str {
        match self {
            Wait::Connect => "connect",
            Wait::Handshake => "TLS handshake",
            Wait::Head => "response head",
            Wait::FirstToken => "first token",
            Wait::Idle => "next data (idle)",
            Wait::Total => "whole stream",
            Wait::KeepAlive => "keep-alive",
            Wait::Queue => "turn at the upstream",
            Wait::Backoff => "retry",
        }
    }
}

/// The facts [`wanted`] decides from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepFacts {
    /// Waiting in the upstream's queue for a turn.
    pub queued: bool,
    /// Waiting out a retry's backoff.
    pub backing_off: bool,
    /// The response head reached the client (the body is flowing, or about to).
    pub streaming: bool,
    /// There is an upstream connection (not resolving a name).
    pub connection: bool,
    /// The connection is established (the socket turned writable).
    pub connected: bool,
    /// The TLS handshake is in progress.
    pub handshaking: bool,
    /// The first real event (or body byte) has come.
    pub first_token: bool,
}

/// The step wait of an exchange with these facts.
pub fn wanted(f: StepFacts) -> Wait {
    match f {
        StepFacts { queued: true, .. } => Wait::Queue,
        StepFacts {
            backing_off: true, ..
        } => Wait::Backoff,
        StepFacts {
            streaming: true,
            first_token,
            ..
        } => {
            if first_token {
                Wait::Idle
            } else {
                Wait::FirstToken
            }
        }
        StepFacts {
            connection: false, ..
        }
        | StepFacts {
            connected: false, ..
        } => Wait::Connect,
        StepFacts {
            handshaking: true, ..
        } => Wait::Handshake,
        _ => Wait::Head,
    }
}

/// What a fired deadline means now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fired {
    /// The wait really took too long.
    Expired(Wait),
    /// The stream was not silent for long enough: moved forward, nothing to do.
    NotYet,
    /// Time for a keep-alive comment (the caller sends it if it can, then calls
    /// [`ExchangeTimers::kept_alive`]).
    KeepAlive,
    /// A deadline this exchange no longer holds (it moved on since).
    Stale,
}

/// The deadlines one exchange holds.
#[derive(Debug, Default)]
pub struct ExchangeTimers {
    /// The current step wait, its deadline, and when it began.
    step: Option<(Wait, TimerKey)>,
    total: Option<TimerKey>,
    keepalive: Option<TimerKey>,
    /// The last upstream read with data (or the start of the current wait).
    last_read: Option<Instant>,
    /// The last keep-alive comment sent.
    last_keepalive: Option<Instant>,
}

impl ExchangeTimers {
    /// Makes `wait` the current step wait (arming its deadline if it is a new one), arms the total
    /// deadline once, and the keep-alive timer while `keepalive` (an event stream whose head the client
    /// has) and the option is on.
    #[allow(clippy::too_many_arguments)]
    pub fn expect<K: Copy>(
        &mut self,
        timers: &mut Timers<K>,
        t: &UpstreamTimeouts,
        wait: Wait,
        keepalive: bool,
        now: Instant,
        id: ConnId,
        key: impl Fn(Wait) -> K,
    ) {
        if self.step.map(|(w, _)| w) != Some(wait) {
            if let Some((_, old)) = self.step.take() {
                timers.cancel(old);
            }
            // Idle and first-token waits restart from the last read; the others from now.
            self.last_read = Some(now);
            self.step = Some((wait, timers.insert(now + t.limit(wait), id, key(wait))));
        }
        if self.total.is_none()
            && let Some(total) = t.total
        {
            self.total = Some(timers.insert(now + total, id, key(Wait::Total)));
        }
        match (keepalive, t.sse_keepalive, self.keepalive) {
            (true, Some(every), None) => {
                let from = self.quiet_since().unwrap_or(now);
                self.keepalive = Some(timers.insert(from + every, id, key(Wait::KeepAlive)));
            }
            (false, _, Some(armed)) => {
                timers.cancel(armed);
                self.keepalive = None;
            }
            _ => {}
        }
    }

    /// Makes `wait` the current step wait with its deadline at `at` (the waits whose length is not an
    /// option: a place in a queue, a backoff). [`ExchangeTimers::expect`] then leaves it alone while the
    /// facts still want it.
    pub fn arm_step<K: Copy>(
        &mut self,
        timers: &mut Timers<K>,
        wait: Wait,
        at: Instant,
        id: ConnId,
        key: impl Fn(Wait) -> K,
    ) {
        if let Some((_, old)) = self.step.take() {
            timers.cancel(old);
        }
        self.step = Some((wait, timers.insert(at, id, key(wait))));
    }

    /// An upstream read brought data at `now`: idle and keep-alive waits restart from here.
    pub fn read_at(&mut self, now: Instant) {
        self.last_read = Some(now);
    }

    /// A keep-alive comment went out at `now`.
    pub fn kept_alive(&mut self, now: Instant) {
        self.last_keepalive = Some(now);
    }

    /// What the deadline for `wait`, fired at `now`, means; re-arms the ones that restart with reads.
    pub fn check<K: Copy>(
        &mut self,
        timers: &mut Timers<K>,
        t: &UpstreamTimeouts,
        wait: Wait,
        now: Instant,
        id: ConnId,
        key: impl Fn(Wait) -> K,
    ) -> Fired {
        match wait {
            Wait::Total => {
                self.total = None;
                Fired::Expired(Wait::Total)
            }
            Wait::KeepAlive => {
                let (Some(every), Some(_)) = (t.sse_keepalive, self.keepalive.take()) else {
                    return Fired::Stale;
                };
                let from = self.quiet_since().unwrap_or(now);
                if now.saturating_duration_since(from) >= every {
                    // The caller sends one (or cannot); the next is due one interval on.
                    self.keepalive = Some(timers.insert(now + every, id, key(Wait::KeepAlive)));
                    Fired::KeepAlive
                } else {
                    self.keepalive = Some(timers.insert(from + every, id, key(Wait::KeepAlive)));
                    Fired::NotYet
                }
            }
            step => {
                if self.step.map(|(w, _)| w) != Some(step) {
                    return Fired::Stale;
                }
                self.step = None;
                let restarts = matches!(step, Wait::Idle);
                match self.last_read {
                    Some(read) if restarts && now.saturating_duration_since(read) < t.idle => {
                        self.step = Some((step, timers.insert(read + t.idle, id, key(step))));
                        Fired::NotYet
                    }
                    _ => Fired::Expired(step),
                }
            }
        }
    }

    /// The latest of the last read and the last keep-alive comment.
    fn quiet_since(&self) -> Option<Instant> {
        self.last_read.max(self.last_keepalive)
    }

    /// Releases every deadline (the exchange ended, or its client left).
    pub fn cancel_all<K>(&mut self, timers: &mut Timers<K>) {
        let keys = [
            self.step.take().map(|(_, k)| k),
            self.total.take(),
            self.keepalive.take(),
        ];
        for key in keys.into_iter().flatten() {
            timers.cancel(key);
        }
    }

    /// The current step wait (for tests and logs).
    pub fn current(&self) -> Option<Wait> {
        self.step.map(|(w, _)| w)
    }
}

#[cfg(test)]
mod tests;
