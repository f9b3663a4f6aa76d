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
use rustls::pki_types::ServerName;

use super::dns::{Answer, DnsCache, Lookup, ResolverLink};
use super::exchange::{Decision, Exchange, Failure, Kind, Phase};
use super::forward::{Outcome, sse_error_event};
use super::pool::Pool;
use super::routes::{Route, Target};
use super::steps::{self, Client, Shaken};
use super::{Entry, InFlight, RelayStats, UPSTREAM, UpstreamTarget, api, passthrough, providers};
use crate::conn::client::{AfterReply, ClientConn, ClientState, StreamFraming, send_body};
use crate::conn::tls::Tls;
use crate::conn::transport::IdleCheck;
use crate::conn::upstream::{UpstreamConn, UpstreamState};
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

/// One upstream as a worker sees it: where, its idle connections, its TLS configuration.
struct Upstream {
    target: Arc<UpstreamTarget>,
    pool: Pool,
    /// For `https`: this worker's TLS client configuration (with its own session cache) and the name the
    /// upstream's certificate must carry.
    tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
}

/// A worker's upstream side.
pub struct Upstreams {
    /// Every configured upstream, in configuration order (an exchange names its own by index).
    upstreams: Vec<Upstream>,
    /// This worker's resolved names, and who waits for one.
    dns: DnsCache<ConnId>,
    /// Where the resolver threads send their answers (the waker says when).
    answers: Receiver<Answer>,
    /// How long a pooled connection may idle (`--upstream-idle-timeout`).
    idle_timeout: Duration,
    /// Most bytes a client may have queued before its upstream is no longer read (`--stream-buffer-bytes`).
    cap: usize,
    /// Longest response head accepted.
    max_head: usize,
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
    pub stats: Arc<RelayStats>,
}

impl Upstreams {
    pub fn new(c: UpstreamsConfig) -> Self {
        let upstreams = c
            .targets
            .into_iter()
            .map(|(target, tls)| Upstream {
                tls: tls.zip(target.tls_name.clone()),
                pool: Pool::new(c.max_idle),
                target,
            })
            .collect();
        Upstreams {
            upstreams,
            dns: c.dns,
            answers: c.answers,
            idle_timeout: c.idle_timeout,
            cap: c.cap,
            max_head: c.max_head,
            ranges: Vec::new(),
            stats: c.stats,
        }
    }

    /// Idle connections in the pools.
    pub fn pooled(&self) -> usize {
        self.upstreams.iter().map(|u| u.pool.len()).sum()
    }

    /// The worker drains: the idle connections close, and the pools keep none from now on.
    pub fn drain(&mut self, cx: &mut RelayCx) {
        self.upstreams.iter_mut().for_each(|u| u.pool.close_all(cx));
    }

    /// An idle connection of upstream `via` was closed (expired, or the server closed it): it leaves
    /// the pool.
    pub fn forget(&mut self, via: usize, id: ConnId) {
        if let Some(u) = self.upstreams.get_mut(via) {
            u.pool.remove(id);
        }
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
        let Some(t) = self.upstreams.get(to.upstream).map(|u| &u.target) else {
            return;
        };
        let (kind, request) = match to.route {
            Route::PassThrough => (
                Kind::PassThrough {
                    head: req.method == "HEAD",
                },
                passthrough::build_request(t.provider, &t.origin, t.key.as_ref(), req, to.path),
            ),
            Route::Generate | Route::Healthz | Route::Readyz => (
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
                x.in_flight = Some(InFlight::new(&self.stats));
                c.state = ClientState::Serving(Box::new(x));
            }
            Err(e) => return c.reply_error(e.status, e.code, &e.message, &[], framing.after()),
        }
        if self.connect(cx, id) == Flow::More {
            self.pump(cx, id);
        }
    }

    /// Gives the exchange of client `id` (in `Resolving`) a connection: an idle pooled one on a first try,
    /// else a new one to the first address of the upstream's name, if the name is resolved; otherwise the
    /// exchange waits for the resolver (`Wait`).
    fn connect(&mut self, cx: &mut RelayCx, id: ConnId) -> Flow {
        let (attempt, via) = match cx.conns.get(id) {
            Some(Entry::Client(c)) => match &c.state {
                ClientState::Serving(x) if matches!(x.phase, Phase::Resolving { .. }) => {
                    (x.attempt, x.via)
                }
                _ => return Flow::Wait,
            },
            _ => return Flow::Wait,
        };
        // A retry is for a pooled connection that failed: it goes on a fresh one.
        if attempt == 1
            && let Some(upstream) = self.take_idle(cx, id, via)
        {
            set_upstream(cx, id, upstream, Vec::new());
            return Flow::More;
        }
        let Some(u) = self.upstreams.get(via) else {
            return Flow::Wait;
        };
        let (host, port) = (&u.target.origin.host, u.target.origin.port);
        match self.dns.lookup(host, port, cx.now, id) {
            Lookup::Ready(addrs) => self.connect_to(cx, id, addrs),
            Lookup::Pending => Flow::Wait,
            Lookup::Failed(why) => self.fail(cx, id, Failure::Resolve(why)),
        }
    }

    /// Answers from the resolver threads (the worker was woken): every exchange that waited for one
    /// connects, or fails. Returns the clients to drive.
    pub fn on_answers(&mut self, cx: &mut RelayCx) -> Vec<ConnId> {
        let mut ready = Vec::new();
        while let Ok(answer) = self.answers.try_recv() {
            let (waiters, result) = self.dns.on_answer(answer, cx.now);
            // A client may have left, or moved on, while its name was looked up.
            let still_waiting = |cx: &RelayCx, id: ConnId| {
                matches!(cx.conns.get(id), Some(Entry::Client(c))
                    if matches!(&c.state, ClientState::Serving(x) if matches!(x.phase, Phase::Resolving { .. })))
            };
            for id in waiters {
                if !still_waiting(cx, id) {
                    continue;
                }
                match &result {
                    Ok(addrs) => {
                        self.connect_to(cx, id, addrs.clone());
                    }
                    Err(why) => {
                        self.fail(cx, id, Failure::Resolve(why.clone()));
                    }
                }
                ready.push(id);
            }
        }
        ready
    }

    /// Connects the exchange of client `id` to the first of `addrs` that a connect can start to; the rest
    /// are kept, in order, in case that connect fails.
    fn connect_to(&mut self, cx: &mut RelayCx, id: ConnId, mut addrs: Vec<SocketAddr>) -> Flow {
        let mut last_error = None;
        while !addrs.is_empty() {
            let addr = addrs.remove(0);
            match self.open(cx, id, addr) {
                Ok(upstream) => {
                    set_upstream(cx, id, upstream, addrs);
                    return Flow::More;
                }
                Err(e) => last_error = Some(e),
            }
        }
        let e = last_error.unwrap_or_else(|| std::io::Error::other("no address to connect to"));
        self.fail(cx, id, Failure::Io(e))
    }

    /// An idle pooled connection to upstream `via`, given to client `id`.
    fn take_idle(&mut self, cx: &mut RelayCx, id: ConnId, via: usize) -> Option<UpstreamConn> {
        let io = self.upstreams.get_mut(via)?.pool.take_for(cx, id)?;
        RelayStats::count(&self.stats.reuses);
        Some(UpstreamConn::reuse(io))
    }

    /// A new connection to `addr` (with TLS for `https`), registered as the [`UPSTREAM`] socket of `id`.
    fn open(
        &mut self,
        cx: &mut RelayCx,
        id: ConnId,
        addr: SocketAddr,
    ) -> std::io::Result<UpstreamConn> {
        RelayStats::count(&self.stats.connects);
        let via = match cx.conns.get(id) {
            Some(Entry::Client(c)) => match &c.state {
                ClientState::Serving(x) => x.via,
                _ => 0,
            },
            _ => 0,
        };
        let Some(u) = self.upstreams.get(via) else {
            return Err(std::io::Error::other("no such upstream"));
        };
        let tls = match (&u.tls, u.target.origin.tls) {
            (Some((config, name)), _) => Some(Tls::client(config.clone(), name.clone())?),
            (None, false) => None,
            // Fail closed: an `https` origin is never dialled in clear text, whatever a library caller
            // left out of its settings (the key would cross the network unencrypted).
            (None, true) => {
                return Err(std::io::Error::other(
                    "an https upstream without a TLS client configuration",
                ));
            }
        };
        let mut upstream = UpstreamConn::connect(addr, tls)?;
        upstream.io.register(&cx.registry, id, UPSTREAM)?;
        Ok(upstream)
    }

    /// Moves the upstream side of client `id` forward until it has to wait (for its socket, a name, or the
    /// client to drain), or until it has had its turn ([`TURN_BUDGET`] steps) and yields.
    pub fn pump(&mut self, cx: &mut RelayCx, id: ConnId) {
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
            UpstreamState::Sending { .. } => steps::send_request(x),
            UpstreamState::AwaitingHead { .. } => {
                let (max_head, ranges) = (self.max_head, &mut self.ranges);
                steps::read_head(x, &mut client, &mut cx.scratch, max_head, ranges)
            }
            UpstreamState::Body { .. } => {
                steps::read_body(x, &mut client, &mut cx.scratch, self.cap, &mut self.ranges)
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
        if reusable
            && io.check_idle() == IdleCheck::Quiet
            && let Some(u) = self.upstreams.get_mut(via)
        {
            u.pool.park(cx, io, via, self.idle_timeout);
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

    /// Tells the client its exchange failed: a 502 before the stream began, an in-band error after.
    fn give_up(&mut self, cx: &mut RelayCx, id: ConnId, decision: Decision, failure: Failure) {
        RelayStats::count(&self.stats.failed);
        let name = cx.name().to_string();
        let Some(Entry::Client(c)) = cx.conns.get_mut(id) else {
            return;
        };
        let ClientState::Serving(x) = &c.state else {
            return;
        };
        let framing = x.framing;
        let peer = c.peer;
        log::warn!("{name}: {peer}: {failure}");
        if decision == Decision::FailStream {
            // Mid-stream: say so in-band in an event stream, then end without the last chunk, so the client
            // sees a failed transfer rather than a short but seemingly complete one. Another body (a
            // pass-through JSON answer) can only be cut short.
            let sent = match x.event_stream {
                true => send_body(
                    &mut c.out,
                    &mut c.io,
                    framing,
                    &sse_error_event(&failure),
                    false,
                ),
                false => Ok(()),
            };
            if let Some(mut x) = c.finish(AfterReply::Close) {
                x.cancel_deadlines(&mut cx.timers);
            }
            if sent.is_err() {
                cx.close(id);
            }
        } else {
            if let Some(mut x) = c.finish(framing.after()) {
                x.cancel_deadlines(&mut cx.timers);
            }
            let message = failure.to_string();
            c.reply_error(502, failure.code(), &message, &[], framing.after());
        }
    }
}

/// Hands `upstream` to the exchange of client `id`, with the addresses left after it.
fn set_upstream(cx: &mut RelayCx, id: ConnId, upstream: UpstreamConn, fallback: Vec<SocketAddr>) {
    if let Some(Entry::Client(c)) = cx.conns.get_mut(id)
        && let ClientState::Serving(x) = &mut c.state
    {
        x.connect(upstream, fallback);
        x.upstream_batch = cx.batch;
    }
}
