//! The upstream side of a relay worker: it takes each exchange from a turn at its upstream to its end.
//!
//! A try of an exchange ([`Upstreams::begin`]) asks for a turn (`relay::turns`: the breaker, the gate,
//! the queue), then a connection (`relay::connector`: the pool, or a new one once the name is resolved off
//! the loop), then [`Upstreams::pump`] moves it as far as it can: shake hands (TLS), write the request,
//! read the head, then read body bytes into the worker's scratch buffer and pass them on (`steps.rs`,
//! `forward.rs`). It reads only while the client's unsent bytes are below the stream cap, and at most the
//! room left, so a slow client costs about the cap: the upstream is simply not read, TCP flow control
//! pushes back on the model server, and the client driver pumps again once the client has drained.
//! After each pump, [`Upstreams::watch`] arms the deadline of what the exchange now waits for.
//!
//! An exchange ends in one of three ways, each in one function: the body ends ([`Upstreams::finish`]: the
//! connection goes to the pool if nothing is left unread); the upstream fails ([`Upstreams::fail`], which
//! does what the failure policy decides: the next address, a retry now or after a backoff, the fallback
//! upstream, an error response, or an in-band error and no last chunk); or the client leaves (the reap
//! drops the client, its exchange and the upstream with it: never pooled mid-body).

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::sync::mpsc::Receiver;
use std::time::Duration;

use rustls::ClientConfig;

use super::auth::Identity;
use super::connector::{Connector, Found};
use super::deadlines::{Fired, UpstreamTimeouts, Wait};
use super::dns::{Answer, DnsCache, ResolverLink};
use super::exchange::{Decision, Failure, Phase, RetryRoom, exchange_in};
use super::forward::{Client, Flow, Outcome};
use super::health;
use super::metrics::{Expiry, RelayMetrics};
use super::rebuild;
use super::routes::Target;
use super::steps::{self, Shaken};
use super::turns::{Asked, Turns};
use super::{Entry, InFlight, RelayStats, RelayTimer, UpstreamTarget, tell};
use crate::conn::client::{ClientConn, ClientState, StreamFraming};
use crate::conn::transport::IdleCheck;
use crate::conn::upstream::UpstreamState;
use crate::http::request::Request;
use crate::reactor::{ConnId, Cx, TURN_BUDGET};

type RelayCx = Cx<super::Relay>;

/// A worker's upstream side.
pub struct Upstreams {
    /// Every configured upstream, and how a connection to one is found.
    conn: Connector,
    /// Turns at the upstreams: this worker's waiters, and the retry policy.
    turns: Turns,
    /// How long a pooled connection may idle (`--upstream-idle-timeout`).
    idle_timeout: Duration,
    /// Most bytes a client may have queued before its upstream is no longer read (`--stream-buffer-bytes`).
    cap: usize,
    /// Longest response head accepted.
    max_head: usize,
    /// How long each wait of an exchange may take.
    timeouts: UpstreamTimeouts,
    /// Payload ranges found by the body decoder in the last read; reused to avoid an allocation per read.
    ranges: Vec<Range<usize>>,
    stats: Arc<RelayStats>,
    metrics: Arc<RelayMetrics>,
}

/// What the upstream side of a worker is built from.
pub struct UpstreamsConfig {
    /// This worker's admission queues and retry policy.
    pub(super) turns: Turns,
    /// Each upstream, with this worker's TLS client configuration for it (`https` only).
    pub targets: Vec<(Arc<UpstreamTarget>, Option<Arc<ClientConfig>>)>,
    /// Most idle connections kept per upstream.
    pub max_idle: usize,
    pub dns: DnsCache<ConnId, ResolverLink>,
    pub answers: Receiver<Answer>,
    pub idle_timeout: Duration,
    pub cap: usize,
    pub max_head: usize,
    pub timeouts: UpstreamTimeouts,
    pub stats: Arc<RelayStats>,
    pub metrics: Arc<RelayMetrics>,
}

impl Upstreams {
    pub fn new(c: UpstreamsConfig) -> Self {
        Upstreams {
            turns: c.turns,
            conn: Connector::new(c.targets, c.max_idle, c.dns, c.answers, c.stats.clone()),
            idle_timeout: c.idle_timeout,
            cap: c.cap,
            max_head: c.max_head,
            timeouts: c.timeouts,
            ranges: Vec::new(),
            stats: c.stats,
            metrics: c.metrics,
        }
    }

    /// Idle connections in the pools.
    pub fn pooled(&self) -> usize {
        self.conn.pooled()
    }

    /// The worker drains: the idle connections close, and the pools keep none from now on.
    pub fn drain(&mut self, cx: &mut RelayCx) {
        self.conn.close_pools(cx);
    }

    /// An idle connection of upstream `via` was closed (expired, or the server closed it): it leaves
    /// the pool.
    pub fn forget(&mut self, via: usize, id: ConnId) {
        self.conn.forget(via, id);
    }

    /// Starts relaying `req` for client `id`: build the upstream request (a generation from the simple
    /// route's body, or the client's own request passed through), then find a connection. The client
    /// gets no head yet: it goes out when the upstream answers, so that a failure before that is still a
    /// clean 502.
    pub fn start(
        &mut self,
        cx: &mut RelayCx,
        id: ConnId,
        req: &Request,
        to: Target<'_>,
        framing: StreamFraming,
        who: Identity,
    ) {
        let Some(t) = self.conn.target(to.upstream) else {
            return;
        };
        let made = rebuild::exchange_for(t, req, &to, (framing, cx.now), who);
        let Some(Entry::Client(c)) = cx.conns.get_mut(id) else {
            return;
        };
        match made {
            Ok(mut x) => {
                x.in_flight = Some(InFlight::new(&self.stats));
                c.state = ClientState::Serving(Box::new(x));
            }
            Err(e) => return c.reply_error(e.status, e.code, &e.message, &[], framing.after()),
        }
        self.begin(cx, id);
    }

    /// A try of the exchange of client `id` begins (its first, after a backoff, or at a fallback): ask
    /// for a turn, then find a connection and pump; or wait (in the queue, for a name).
    fn begin(&mut self, cx: &mut RelayCx, id: ConnId) {
        if self.ask(cx, id) == Flow::More && self.connect(cx, id) == Flow::More {
            self.pump(cx, id);
        } else {
            self.watch(cx, id);
        }
    }

    /// Asks the exchange's upstream for a turn ([`Turns::ask`]), after noting what another try could do
    /// ([`RetryRoom`]). `More` when it holds a permit.
    fn ask(&mut self, cx: &mut RelayCx, id: ConnId) -> Flow {
        let (n_upstreams, now) = (self.conn.len(), cx.now);
        let Some(x) = exchange_in(&mut cx.conns, id) else {
            return Flow::Wait;
        };
        let Some(target) = self.conn.target(x.via).cloned() else {
            return Flow::Wait;
        };
        let head_left = (x.started + self.timeouts.head).saturating_duration_since(now);
        x.retry_room = Some(RetryRoom {
            retries_left: x.retries < self.turns.policy.max,
            fallback: target.fallback.is_some() && x.rebuild.is_some() && x.hops < n_upstreams,
            max_wait: self.turns.policy.max_wait.min(head_left),
        });
        match self.turns.ask(&target, x, id, now) {
            Asked::Go => Flow::More,
            Asked::Queued(limit) => {
                RelayStats::count(&self.stats.queued);
                let at = now + limit;
                x.timers
                    .arm_step(&mut cx.timers, Wait::Queue, at, id, RelayTimer::Exchange);
                Flow::Wait
            }
            Asked::No(failure) => {
                RelayStats::count(&self.stats.refused);
                self.fail(cx, id, failure)
            }
        }
    }

    /// A permit was given back somewhere: this worker's waiters take the free turns, in order. Returns the
    /// clients to drive.
    pub fn admit(&mut self, cx: &mut RelayCx) -> Vec<ConnId> {
        let admitted = self.turns.admit(&self.conn, &mut cx.conns);
        for &id in &admitted {
            if self.connect(cx, id) == Flow::More {
                self.steps(cx, id);
            }
            self.watch(cx, id);
        }
        admitted
    }

    /// Gives the exchange of client `id` (in `Resolving`) a connection ([`Connector::find`]); a failure
    /// to find one is the exchange's failure.
    fn connect(&mut self, cx: &mut RelayCx, id: ConnId) -> Flow {
        match self.conn.find(cx, id) {
            Found::Connected => Flow::More,
            Found::Pending => Flow::Wait,
            Found::Failed(failure) => self.fail(cx, id, failure),
        }
    }

    /// Connects the exchange of client `id` to the first of `addrs` ([`Connector::connect_to`]).
    fn connect_to(&mut self, cx: &mut RelayCx, id: ConnId, addrs: Vec<SocketAddr>) -> Flow {
        match self.conn.connect_to(cx, id, addrs) {
            Found::Connected => Flow::More,
            Found::Pending => Flow::Wait,
            Found::Failed(failure) => self.fail(cx, id, failure),
        }
    }

    /// Answers from the resolver threads (the worker was woken): every exchange that waited for one
    /// connects, or fails. Returns the clients to drive.
    pub fn on_answers(&mut self, cx: &mut RelayCx) -> Vec<ConnId> {
        let answered = self.conn.answers(cx);
        for (id, result) in &answered {
            match result {
                Ok(addrs) => {
                    self.connect_to(cx, *id, addrs.clone());
                }
                Err(why) => {
                    self.fail(cx, *id, Failure::Resolve(why.clone()));
                }
            }
        }
        answered.into_iter().map(|(id, _)| id).collect()
    }

    /// Moves the upstream side of client `id` forward until it has to wait (for its socket, a name, or the
    /// client to drain), or until it has had its turn ([`TURN_BUDGET`] steps) and yields.
    pub fn pump(&mut self, cx: &mut RelayCx, id: ConnId) {
        self.steps(cx, id);
        self.watch(cx, id);
    }

    fn steps(&mut self, cx: &mut RelayCx, id: ConnId) {
        for _ in 0..TURN_BUDGET {
            match self.step(cx, id) {
                Outcome::Continue => {}
                Outcome::Wait => return,
                Outcome::Finished { reusable } => return self.finish(cx, id, reusable),
                Outcome::Failed(failure) => {
                    if self.fail(cx, id, failure) == Flow::Wait {
                        return;
                    }
                }
                Outcome::ClientGone(e) => {
                    return crate::conn::client::gone::<super::Relay>(cx, id, &e.to_string());
                }
            }
        }
        cx.defer(id);
    }

    /// Arms the deadline of what the exchange of client `id` waits for now, if that changed
    /// (`deadlines::ExchangeTimers::expect`).
    fn watch(&mut self, cx: &mut RelayCx, id: ConnId) {
        let (now, timeouts) = (cx.now, &self.timeouts);
        if let Some(x) = exchange_in(&mut cx.conns, id) {
            x.watch(&mut cx.timers, timeouts, now, id);
        }
    }

    /// The exchange of client `id` reached its deadline for `wait`: it fails (a 504 before its head, an
    /// error event after), or, for a silent event stream, the client gets a keep-alive comment. True when
    /// the client should be driven (something was queued for it).
    pub fn on_deadline(&mut self, cx: &mut RelayCx, id: ConnId, wait: Wait) -> bool {
        let Some(Entry::Client(c)) = cx.conns.get_mut(id) else {
            return false;
        };
        let ClientConn { io, out, state, .. } = &mut **c;
        let ClientState::Serving(x) = state else {
            return false;
        };
        if out.len() >= self.cap {
            // Paused by backpressure: the relay, not the upstream, stopped reading (the client is slow,
            // and its own write deadline judges it). That is no silence of the upstream's.
            x.timers.read_at(cx.now);
        }
        let timers = &mut cx.timers;
        let fired = x.timers.check(
            timers,
            &self.timeouts,
            wait,
            cx.now,
            id,
            RelayTimer::Exchange,
        );
        match fired {
            Fired::Stale | Fired::NotYet => false,
            Fired::KeepAlive => {
                match tell::keep_alive(io, out, x) {
                    Ok(true) => {
                        x.timers.kept_alive(cx.now);
                        RelayStats::count(&self.stats.keepalives);
                    }
                    Ok(false) => {}
                    Err(e) => crate::conn::client::gone::<super::Relay>(cx, id, &e.to_string()),
                }
                false
            }
            Fired::Expired(Wait::Backoff) => {
                x.backing_off = false;
                self.begin(cx, id);
                true
            }
            Fired::Expired(Wait::Queue) => {
                let waited = self
                    .conn
                    .target(x.via)
                    .map(|t| t.gate.limits().queue_timeout);
                x.ticket = None;
                RelayStats::count(&self.stats.queue_timeouts);
                self.metrics.expired(Expiry::Queue);
                self.fail(cx, id, Failure::Busy(waited));
                self.pump(cx, id);
                true
            }
            Fired::Expired(wait) => {
                RelayStats::count(&self.stats.timeouts);
                self.metrics.expired(Expiry::from(wait));
                let limit = self.timeouts.limit(wait);
                self.fail(cx, id, Failure::Timeout(wait, limit));
                // A connect timeout may have moved on to the next address: let it run.
                self.pump(cx, id);
                true
            }
        }
    }

    /// One step of the state the exchange's connection is in.
    fn step(&mut self, cx: &mut RelayCx, id: ConnId) -> Outcome {
        let Some(Entry::Client(c)) = cx.conns.get_mut(id) else {
            return Outcome::Wait;
        };
        let Some((mut client, x)) = Client::split(c, &self.metrics, cx.now) else {
            return Outcome::Wait;
        };
        let Some(upstream) = x.upstream() else {
            // Resolving: the resolver's answer resumes it.
            return Outcome::Wait;
        };
        // Records a TLS session could not write earlier go first.
        if let Err(e) = upstream.io.flush() {
            return Outcome::Failed(Failure::Io(e));
        }
        match upstream.state {
            UpstreamState::Handshaking => match steps::handshake(upstream) {
                Ok(None) => Outcome::Wait,
                Ok(Some(shaken)) => {
                    RelayStats::count(match shaken {
                        Shaken::Full => &self.stats.tls_full,
                        Shaken::Resumed => &self.stats.tls_resumed,
                    });
                    Outcome::Continue
                }
                Err(outcome) => outcome,
            },
            UpstreamState::Sending { .. } => steps::send_request(x, &mut cx.scratch),
            UpstreamState::AwaitingHead { .. } => {
                let (max_head, ranges) = (self.max_head, &mut self.ranges);
                let outcome = steps::read_head(x, &mut client, &mut cx.scratch, max_head, ranges);
                if !matches!(outcome, Outcome::Wait) {
                    x.timers.read_at(cx.now);
                }
                if matches!(x.phase, Phase::Streaming { .. }) && x.status.is_some_and(|s| s < 500) {
                    // An answer that is not a server error: the upstream is up (the breaker hears so).
                    let health = self.conn.target(x.via).map(|t| &*t.health);
                    health::record(&mut x.probe, health, None);
                }
                outcome
            }
            UpstreamState::Body { .. } => {
                let outcome =
                    steps::read_body(x, &mut client, &mut cx.scratch, self.cap, &mut self.ranges);
                // Anything but `Wait` means bytes came: the stream is not silent (comments and pings
                // included, which is what the idle deadline wants).
                if !matches!(outcome, Outcome::Wait) {
                    x.timers.read_at(cx.now);
                }
                outcome
            }
        }
    }

    /// The body ended (its last chunk is queued or sent): the exchange is over, and its connection goes to
    /// the pool if it may carry another exchange and nothing is left unread, or is closed.
    fn finish(&mut self, cx: &mut RelayCx, id: ConnId, reusable: bool) {
        let Some(Entry::Client(c)) = cx.conns.get_mut(id) else {
            return;
        };
        let then = match &c.state {
            ClientState::Serving(x) => x.framing.after(),
            _ => return,
        };
        let peer = c.peer;
        let Some(mut x) = c.finish(then) else {
            return;
        };
        // Bytes still held for the client are still resident: their time ends when the answer is out.
        if let Some(r) = c.record.as_deref_mut() {
            r.held_since = x.seen.held_since;
        }
        let via = x.via;
        log::debug!(
            "{}: {peer} stream complete in {:.1} ms",
            cx.name(),
            cx.now.saturating_duration_since(x.started).as_secs_f64() * 1e3
        );
        x.cancel_deadlines(&mut cx.timers);
        RelayStats::count(&self.stats.completed);
        let Some(upstream) = x.into_upstream() else {
            return;
        };
        let mut io = upstream.into_transport();
        // The read that ended the body may have been cut short by the stream cap, so bytes may follow it.
        if reusable && io.check_idle() == IdleCheck::Quiet {
            self.conn.park(cx, io, via, self.idle_timeout);
        }
    }

    /// The exchange of client `id` failed: do what the policy decides. Returns `More` when another
    /// connection is under way (the pump goes on with it).
    fn fail(&mut self, cx: &mut RelayCx, id: ConnId, failure: Failure) -> Flow {
        let now = cx.now;
        let name = cx.name().to_string();
        let Some(x) = exchange_in(&mut cx.conns, id) else {
            return Flow::Wait;
        };
        self.metrics.failure(x.via, failure.kind());
        // The upstream's breaker hears of it first (the probe's verdict, or one more in a row).
        if failure.counts_against_upstream() {
            let health = self.conn.target(x.via).map(|t| &*t.health);
            health::record(&mut x.probe, health, Some(now));
        }
        let backoff = self.turns.backoff(x.retries + 1);
        let decision = x.on_failure(&failure, backoff);
        match decision {
            Decision::NextAddress => {
                let fallback = x.take_fallback();
                log::debug!("{name}: {failure}; trying the next address");
                return self.connect_to(cx, id, fallback);
            }
            Decision::Retry => {
                log::debug!("{name}: pooled upstream connection failed ({failure}); retrying");
                RelayStats::count(&self.stats.retries);
                x.retry();
                return self.connect(cx, id);
            }
            Decision::Backoff(wait) => {
                log::debug!("{name}: {failure}; retrying in {wait:?}");
                RelayStats::count(&self.stats.backoffs);
                x.retries += 1;
                // No turn is held while waiting: others may use it meanwhile.
                x.back_off();
                x.timers.arm_step(
                    &mut cx.timers,
                    Wait::Backoff,
                    now + wait,
                    id,
                    RelayTimer::Exchange,
                );
                return Flow::Wait;
            }
            Decision::Fallback => {
                if let Some((from, to)) = rebuild::fall_back(&self.conn, x) {
                    log::warn!("{name}: upstream {from} failed ({failure}); trying {to}");
                    RelayStats::count(&self.stats.fallbacks);
                    return self.ask(cx, id).and_then(|| self.connect(cx, id));
                }
            }
            Decision::BadGateway | Decision::FailStream => {}
        }
        self.give_up(cx, id, decision, failure);
        Flow::Wait
    }

    /// Tells the client its exchange failed ([`tell::failure`]).
    fn give_up(&mut self, cx: &mut RelayCx, id: ConnId, decision: Decision, failure: Failure) {
        RelayStats::count(&self.stats.failed);
        tell::failure(cx, id, decision, &failure, &self.conn);
    }
}
