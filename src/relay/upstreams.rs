//! The upstream side of a relay worker: where generations go, the names resolved off the loop, the
//! keep-alive pool, and the pump that moves each exchange's upstream connection forward.
//!
//! An exchange first needs a connection ([`Upstreams::connect`]): an idle one from the pool, or a new one
//! to an address of the upstream's name. The name is looked up in the worker's [`DnsCache`]; a miss sends
//! a query to the resolver threads and the exchange waits in `Phase::Resolving` until the answer arrives
//! through the worker's waker ([`Upstreams::on_answers`]). The loop never waits for a name.
//!
//! [`Upstreams::pump`] moves one exchange as far as it can: shake hands (TLS), write the request, read the
//! head, then read body bytes into the worker's scratch buffer and pass them on (`steps.rs`, `forward.rs`).
//! It reads only while the client's unsent bytes are below the stream cap (`--stream-buffer-bytes`), and at
//! most the room that is left, so a slow client costs about the cap: when the cap is reached the upstream is
//! simply not read, TCP flow control pushes back on the model server, and the client driver calls `pump`
//! again once the client's queue has drained completely. The cap is exceeded by a little: chunk framing,
//! the stream head, and the body bytes that arrive in the same read as the response head (one read, once).
//!
//! An exchange ends in one of three ways, each in one function: the body ends ([`Upstreams::finish`]: the
//! last chunk goes out with the last payload, and the connection goes to the pool if nothing is left
//! unread); the upstream fails ([`Upstreams::fail`], which does what [`super::exchange::on_failure`]
//! decides: the next address, a retry, a 502, or an in-band error and no last chunk); or the client leaves
//! (the reap drops the client, its exchange and the upstream with it: never pooled mid-body).

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::sync::mpsc::Receiver;
use std::time::Duration;

use rustls::ClientConfig;

use super::connector::{Connector, Found};
use super::deadlines::{Fired, UpstreamTimeouts, Wait, wanted};
use super::dns::{Answer, DnsCache, ResolverLink};
use super::exchange::{Decision, Exchange, Failure, Kind, Phase};
use super::forward::{ErrorShape, Outcome};
use super::routes::{Route, Target};
use super::steps::{self, Client, Shaken};
use super::{Entry, RelayStats, RelayTimer, UpstreamTarget, api, passthrough, providers, tell};
use crate::conn::client::{ClientConn, ClientState, StreamFraming};
use crate::conn::transport::IdleCheck;
use crate::conn::upstream::UpstreamState;
use crate::http::headers::value;
use crate::http::request::Request;
use crate::reactor::{ConnId, Cx, TURN_BUDGET};

type RelayCx = Cx<super::Relay>;

/// Whether the pump can go on after a failure was handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    More,
    Wait,
}

/// A worker's upstream side.
pub struct Upstreams {
    /// Every configured upstream, and how a connection to one is found.
    conn: Connector,
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
}

/// What the upstream side of a worker is built from.
pub struct UpstreamsConfig {
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
}

impl Upstreams {
    pub fn new(c: UpstreamsConfig) -> Self {
        Upstreams {
            conn: Connector::new(c.targets, c.max_idle, c.dns, c.answers, c.stats.clone()),
            idle_timeout: c.idle_timeout,
            cap: c.cap,
            max_head: c.max_head,
            timeouts: c.timeouts,
            ranges: Vec::new(),
            stats: c.stats,
        }
    }

    /// A client was too slow (the counters live with the upstream side's).
    pub fn count_client_timeout(&self) {
        RelayStats::count(&self.stats.client_timeouts);
    }

    /// Idle connections in the pools.
    pub fn pooled(&self) -> usize {
        self.conn.pooled()
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
    ) {
        let Some(t) = self.conn.target(to.upstream) else {
            return;
        };
        let (kind, request) = match to.route {
            Route::PassThrough => (
                Kind::PassThrough {
                    head: req.method == "HEAD",
                },
                passthrough::build_request(t.provider, &t.origin, t.key.as_ref(), req, to.path),
            ),
            Route::Generate | Route::Healthz => (
                Kind::Generate,
                api::parse_generate(&req.body).and_then(|g| {
                    let (key, model) = (t.key.as_ref(), &t.default_model);
                    providers::build_request(t.provider, &t.origin, key, &g, model)
                }),
            ),
        };
        let Some(Entry::Client(c)) = cx.conns.get_mut(id) else {
            return;
        };
        match request {
            Ok(request) => {
                let mut x = Exchange::new(kind, to.upstream, request, framing, cx.now);
                x.replayable = matches!(req.method.as_str(), "GET" | "HEAD" | "OPTIONS")
                    || value(&req.headers, "idempotency-key").is_some();
                c.state = ClientState::Serving(Box::new(x));
            }
            Err(e) => return c.reply_error(e.status, e.code, &e.message, &[], framing.after()),
        }
        if self.connect(cx, id) == Flow::More {
            self.pump(cx, id);
        } else {
            self.watch(cx, id);
        }
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
        let Some(Entry::Client(c)) = cx.conns.get_mut(id) else {
            return;
        };
        let ClientState::Serving(x) = &mut c.state else {
            return;
        };
        let wait = wanted(x.step_facts());
        let keepalive = x.seen.sse.is_some() && matches!(x.phase, Phase::Streaming { .. });
        let timers = &mut cx.timers;
        x.timers.expect(
            timers,
            &self.timeouts,
            wait,
            keepalive,
            cx.now,
            id,
            RelayTimer::Exchange,
        );
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
            Fired::Expired(wait) => {
                RelayStats::count(&self.stats.timeouts);
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
        let ClientConn { io, out, state, .. } = &mut **c;
        let ClientState::Serving(x) = state else {
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
        let mut client = Client { io, out };
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
        let decision = match cx.conns.get(id) {
            Some(Entry::Client(c)) => match &c.state {
                ClientState::Serving(x) => x.on_failure(&failure),
                _ => return Flow::Wait,
            },
            _ => return Flow::Wait,
        };
        match decision {
            Decision::NextAddress => {
                let fallback = match cx.conns.get_mut(id) {
                    Some(Entry::Client(c)) => match &mut c.state {
                        ClientState::Serving(x) => x.take_fallback(),
                        _ => Vec::new(),
                    },
                    _ => Vec::new(),
                };
                log::debug!("{}: {failure}; trying the next address", cx.name());
                return self.connect_to(cx, id, fallback);
            }
            Decision::Retry => {
                log::debug!(
                    "{}: pooled upstream connection failed ({failure}); retrying",
                    cx.name()
                );
                RelayStats::count(&self.stats.retries);
                if let Some(Entry::Client(c)) = cx.conns.get_mut(id)
                    && let ClientState::Serving(x) = &mut c.state
                {
                    x.retry();
                }
                return self.connect(cx, id);
            }
            Decision::BadGateway | Decision::FailStream => {}
        }
        self.give_up(cx, id, decision, failure);
        Flow::Wait
    }

    /// Tells the client its exchange failed ([`tell::failure`]), in the error shape of the API it called.
    fn give_up(&mut self, cx: &mut RelayCx, id: ConnId, decision: Decision, failure: Failure) {
        RelayStats::count(&self.stats.failed);
        let shape = match cx.conns.get(id) {
            Some(Entry::Client(c)) => match &c.state {
                ClientState::Serving(x) => match x.kind {
                    Kind::Generate => ErrorShape::Project,
                    Kind::PassThrough { .. } => self
                        .conn
                        .target(x.via)
                        .map_or(ErrorShape::Project, |t| ErrorShape::of(t.provider)),
                },
                _ => return,
            },
            _ => return,
        };
        tell::failure(cx, id, decision, &failure, shape);
    }
}
