//! The relay: the application that ties clients to an upstream model API, as a [`Handler`] of the reactor.
//!
//! ```text
//! client request ─▶ on_request ─▶ routes ─▶ Upstreams::start: pool or connect ─▶ Exchange (in the client)
//!                                                                                     │ Upstreams::pump
//!                            client ◀── writev(size line, payload, CRLF) ◀── body decoder ◀┘ read ≤ room
//! ```
//!
//! A worker's slab holds two kinds of [`Entry`]: a client (with, while a request is relayed, its
//! [`Exchange`], which owns the upstream connection), and an idle upstream connection in the pool. The
//! client's socket is registered as [`CLIENT`], its exchange's upstream socket as [`UPSTREAM`], both under
//! the client's id; so an event on either reaches the one entry that holds both ends.
//!
//! This module is the handler's surface: accepting, routing, timers, closing. The client side of every
//! exchange (reading requests, replying, keep-alive) is the shared driver in [`crate::conn::client`]; the
//! upstream side (pool, connect, pump, relay, failure) is [`Upstreams`], in `upstreams.rs`, and the bytes'
//! hot path is in `forward.rs`.

pub mod admission;
pub mod api;
pub mod auth;
mod connector;
pub mod deadlines;
pub mod dns;
pub mod exchange;
pub mod forward;
pub mod health;
pub mod observe;
mod own;
pub mod passthrough;
pub mod policy;
pub mod pool;
pub mod providers;
pub mod ratelimit;
pub mod rebuild;
pub mod retry;
pub mod routes;
mod settings;
pub mod sse;
pub mod stats;
mod steps;
mod tell;
mod turns;
mod upstreams;
pub mod usage;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use mio::net::TcpStream;

use crate::conn::client::{
    self, AfterReply, ClientApp, ClientConn, ClientState, ClientTimeouts, ClientWait, StreamFraming,
};
use crate::conn::transport::{IdleCheck, Transport, accepted, refuse};
use crate::http::request::{Limits, Request, RequestReader};
use crate::http::response::error_response;
use crate::reactor::{ConnId, Cx, Handler, Ready, Tag, TimerKey};
use auth::{ClientKeys, Refusal};
use deadlines::Wait;
use exchange::Exchange;
use providers::{Origin, Provider, ProviderKey};
use routes::Router;
pub use settings::RelaySettings;
pub use stats::{InFlight, RelayCounts, RelayStats};
pub use upstreams::{Upstreams, UpstreamsConfig};

/// The tag of a client's own socket.
pub const CLIENT: Tag = Tag::MAIN;
/// The tag of the upstream socket owned by a client's exchange.
pub const UPSTREAM: Tag = Tag(1);

/// One upstream: the same for every worker.
#[derive(Debug)]
pub struct UpstreamTarget {
    /// Its name in the configuration and in logs.
    pub name: String,
    pub provider: Provider,
    /// Where: its host is resolved off the loop (`dns`), when a connection is needed.
    pub origin: Origin,
    pub key: Option<ProviderKey>,
    pub default_model: String,
    /// For `https`: the name the upstream's certificate must carry (and the SNI sent).
    pub tls_name: Option<rustls::pki_types::ServerName<'static>>,
    /// How many requests it takes at once, shared by every worker.
    pub gate: Arc<admission::Gate>,
    /// Its circuit breaker, shared by every worker.
    pub health: Arc<health::Health>,
    /// The upstream (its index) that takes a request this one failed before the client got a byte.
    pub fallback: Option<usize>,
}

/// One entry of a relay worker's slab.
///
/// The client is boxed: slab slots are as large as the largest variant, and a client (its request reader,
/// its exchange) is much larger than an idle connection.
pub enum Entry {
    /// A client connection and, while a request is relayed, its exchange and upstream.
    Client(Box<ClientConn<Box<Exchange>>>),
    /// An idle keep-alive connection to an upstream, in its pool.
    Idle(Idle),
}

/// An idle upstream connection, waiting in the pool to be taken or to expire.
pub struct Idle {
    pub io: Transport,
    pub expires: TimerKey,
    /// Which upstream it connects to.
    pub via: usize,
    /// Its place in the worker's count of pooled connections, for as long as it is in the pool.
    pub _pooled: crate::reactor::instrument::Held,
}

/// What a relay deadline is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayTimer {
    /// A client deadline (`conn::client::ClientWait`) passed.
    Client(ClientWait),
    /// An exchange's deadline (`deadlines::Wait`) passed.
    Exchange(Wait),
    /// An idle pooled connection reached `--upstream-idle-timeout`.
    IdleExpired,
}

/// The relay application of one worker.
pub struct Relay {
    limits: Limits,
    router: Router,
    client_keys: Arc<ClientKeys>,
    upstreams: Upstreams,
    inbound_tls: Option<Arc<rustls::ServerConfig>>,
    client_timeouts: ClientTimeouts,
    rate_limiter: Option<Arc<ratelimit::RateLimiter>>,
    stats: Arc<RelayStats>,
    /// Client connections open on this worker (lingering ones included: each holds a descriptor).
    clients: usize,
    /// The descriptor budget: past it, new clients are turned away (`Relay::shed`).
    max_clients: usize,
    /// The process drains: every answer says `Connection: close`, and `/readyz` says 503. Set before the
    /// listeners close (a grace for load balancers), so read at each request rather than told by a wake.
    draining: Arc<AtomicBool>,
    /// This worker's listener is closed (`on_drain`): kept-alive clients close as soon as they are idle
    /// (`ClientApp::draining`), and the pools keep nothing, so that the slab empties.
    closing: bool,
    /// The answer for a client turned away: made once, written with one `write`.
    overloaded: Vec<u8>,
    /// What it measures and logs, and where every worker's figures are (`observe`).
    observe: observe::Observe,
    metrics: Arc<crate::metrics::RelayMetrics>,
    /// The last request answered (taken from its record, not copied), to name it if its handler call
    /// turns out to have been an iteration's slowest (`Handler::describe`).
    last_answered: observe::LastAnswered,
}

impl Relay {
    /// A relay as `settings` say; it resolves names with `resolver` (answers wake the worker through
    /// `remote`), counts what it does in `stats` and measures itself as `observe` says.
    pub fn new(
        settings: RelaySettings,
        stats: Arc<RelayStats>,
        resolver: dns::Resolver,
        remote: crate::reactor::Remote,
        observe: observe::Observe,
    ) -> Relay {
        let metrics = observe.metrics();
        let targets: Vec<Arc<UpstreamTarget>> =
            settings.upstreams.iter().map(|(t, _)| t.clone()).collect();
        let turns = turns::Turns::new(&targets, settings.retry, &remote);
        let (link, answers) = dns::ResolverLink::new(resolver, remote);
        let upstreams = Upstreams::new(UpstreamsConfig {
            turns,
            targets: settings.upstreams,
            max_idle: settings.max_idle,
            dns: dns::DnsCache::new(link, settings.dns.clone()),
            answers,
            idle_timeout: settings.idle_timeout,
            cap: settings.stream_buffer,
            max_head: settings.limits.max_head_bytes,
            timeouts: settings.timeouts,
            stats: stats.clone(),
            metrics: metrics.clone(),
        });
        let mut overloaded = Vec::new();
        let message = "the relay is at its connection limit; retry shortly";
        error_response(
            &mut overloaded,
            503,
            "overloaded",
            message,
            &[("Retry-After", "1")],
            true,
        );
        Relay {
            router: settings.router.with_debug_stall(observe.debug_stall),
            client_keys: settings.client_keys,
            upstreams,
            limits: settings.limits,
            inbound_tls: settings.inbound_tls,
            client_timeouts: settings.client,
            rate_limiter: settings.rate_limiter,
            stats,
            clients: 0,
            max_clients: settings.max_clients,
            draining: settings.draining,
            closing: false,
            overloaded,
            observe,
            metrics,
            last_answered: observe::LastAnswered::default(),
        }
    }

    /// Idle connections in the pool (for tests and statistics).
    pub fn pooled(&self) -> usize {
        self.upstreams.pooled()
    }

    /// Both sides of entry `id`, as far as they can go now: the upstream first (what it produces goes
    /// straight to the client), then the client.
    fn drive(&mut self, cx: &mut Cx<Self>, id: ConnId) {
        self.upstreams.pump(cx, id);
        client::drive(self, cx, id);
    }

    /// Turns a client away at once, before it costs anything but the moment its descriptor is open: a
    /// 503 written without reading the request (`refuse`), then closed. A client of an HTTPS listener
    /// expects a handshake, not a plaintext answer: it is only closed.
    fn shed(&mut self, cx: &mut Cx<Self>, sock: TcpStream, peer: SocketAddr) {
        RelayStats::count(&self.stats.shed);
        log::debug!("{}: {peer}: no room; 503", cx.name());
        if self.inbound_tls.is_none() {
            refuse(sock, &self.overloaded, &mut cx.scratch);
        }
    }
}

impl Handler for Relay {
    type Conn = Entry;
    type Timer = RelayTimer;

    fn on_accept(&mut self, cx: &mut Cx<Self>, sock: TcpStream, peer: SocketAddr) {
        // Regime 2 of the descriptor budget: the streams in flight keep their descriptors.
        if self.clients >= self.max_clients {
            return self.shed(cx, sock, peer);
        }
        let reader = RequestReader::new(self.limits.clone());
        let Some(io) = accepted(sock, self.inbound_tls.as_ref(), cx.name(), peer) else {
            return;
        };
        let client = ClientConn::new(io, peer, reader);
        let Ok(id) = cx.conns.insert_with(|_| Entry::Client(Box::new(client))) else {
            return log::warn!("{}: too many connections; dropping {peer}", cx.name());
        };
        // Counted down in `on_close`, which every entry reaches, this one too if registering fails.
        self.clients += 1;
        if let Some(Entry::Client(c)) = cx.conns.get_mut(id)
            && let Err(e) = c.io.register(&cx.registry, id, CLIENT)
        {
            log::warn!("{}: cannot register client {peer}: {e}", cx.name());
            return cx.close(id);
        }
        client::accepted_client(self, cx, id);
    }

    fn on_ready(&mut self, cx: &mut Cx<Self>, id: ConnId, tag: Tag, ready: Ready) {
        match cx.conns.get_mut(id) {
            Some(Entry::Client(c)) => {
                if tag == UPSTREAM {
                    // An upstream socket registered in this batch has no event in it: the event is for
                    // the socket it replaced (pooled, or dropped for a retry), and would set a wrong flag
                    // (an end-of-file) on the new one. Events with no upstream to go to are harmless.
                    if let ClientState::Serving(x) = &mut c.state
                        && x.upstream_batch != cx.batch
                        && let Some(upstream) = x.upstream()
                    {
                        upstream.io.absorb(ready);
                    }
                } else {
                    c.io.absorb(ready);
                }
                self.drive(cx, id);
            }
            Some(Entry::Idle(idle)) => {
                idle.io.absorb(ready);
                // Readable while idle: the server closed it, or sent bytes nobody asked for.
                if idle.io.check_idle() != IdleCheck::Quiet {
                    cx.close(id);
                }
            }
            None => {}
        }
    }

    fn on_resume(&mut self, cx: &mut Cx<Self>, id: ConnId) {
        self.drive(cx, id);
    }

    /// The resolver answered (the exchanges that waited for a name go on), or an upstream's gate has a
    /// free turn (the exchanges that waited for one go on).
    fn on_wake(&mut self, cx: &mut Cx<Self>) {
        for id in self.upstreams.on_answers(cx) {
            self.drive(cx, id);
        }
        for id in self.upstreams.admit(cx) {
            self.drive(cx, id);
        }
    }

    fn on_timer(&mut self, cx: &mut Cx<Self>, id: ConnId, what: RelayTimer) {
        match (cx.conns.get(id), what) {
            (Some(Entry::Client(_)), RelayTimer::Client(wait)) => {
                client::on_deadline(self, cx, id, wait)
            }
            (Some(Entry::Client(_)), RelayTimer::Exchange(wait)) => {
                let queued = self.upstreams.on_deadline(cx, id, wait);
                if queued {
                    self.drive(cx, id);
                }
            }
            (Some(Entry::Idle(_)), RelayTimer::IdleExpired) => cx.close(id),
            _ => {}
        }
    }

    fn describe(&self, cx: &Cx<Self>, id: ConnId, tag: Tag) -> String {
        let last = self.last_answered.of(id);
        observe::describe(cx.conns.get(id), tag == UPSTREAM, last.as_deref())
    }

    /// Regime 3 of the descriptor budget: the worker is out of descriptors and hands over one client,
    /// accepted with its spare, to be turned away like those past the budget.
    fn on_shed(&mut self, cx: &mut Cx<Self>, sock: TcpStream, peer: SocketAddr) {
        self.shed(cx, sock, peer);
    }

    /// The listener is closed: pooled connections close, and so do idle kept-alive clients (the rest
    /// finish what they are doing; `ClientApp::draining` closes each as it becomes idle). A client that
    /// has not sent its first request yet is left to send it: it may be on its way.
    fn on_drain(&mut self, cx: &mut Cx<Self>) {
        self.closing = true;
        self.upstreams.drain(cx);
        let idle: Vec<ConnId> = cx
            .conns
            .iter()
            .filter(|(_, e)| {
                matches!(e, Entry::Client(c) if matches!(c.state, ClientState::AwaitingRequest))
            })
            .map(|(id, _)| id)
            .collect();
        for id in idle {
            client::drive(self, cx, id);
        }
    }

    fn on_close(&mut self, cx: &mut Cx<Self>, id: ConnId, entry: Entry) {
        if let Entry::Client(_) = entry {
            self.clients = self.clients.saturating_sub(1);
        }
        match entry {
            Entry::Client(mut c) => {
                c.cancel_deadline(&mut cx.timers);
                if let Some(mut r) = c.record.take() {
                    observe::finished(&self.observe, &self.metrics, cx.name(), &c, &mut r, cx.now);
                }
                // Its upstream closes with it: never pooled mid-body.
                if let ClientState::Serving(mut x) = c.state {
                    x.cancel_deadlines(&mut cx.timers);
                }
            }
            Entry::Idle(idle) => {
                cx.timers.cancel(idle.expires);
                self.upstreams.forget(idle.via, id);
            }
        }
    }
}

impl ClientApp for Relay {
    type Work = Box<Exchange>;

    fn client(entry: &mut Entry) -> Option<&mut ClientConn<Box<Exchange>>> {
        match entry {
            Entry::Client(c) => Some(c),
            Entry::Idle(_) => None,
        }
    }

    fn client_timer(wait: ClientWait) -> RelayTimer {
        RelayTimer::Client(wait)
    }

    fn client_timeouts(&self) -> ClientTimeouts {
        self.client_timeouts
    }

    fn count_timeout(&mut self, wait: ClientWait) {
        RelayStats::count(&self.stats.client_timeouts);
        if let Some(what) = crate::metrics::Expiry::of_client(wait) {
            self.metrics.expired(what);
        }
    }

    fn max_head(&self) -> usize {
        self.limits.max_head_bytes
    }

    fn on_request(&mut self, cx: &mut Cx<Self>, id: ConnId, mut req: Request) {
        // Draining: this answer is the connection's last, and says so.
        let draining = self.draining.load(Ordering::Acquire);
        let then = match draining {
            true => AfterReply::Close,
            false => AfterReply::of(&req),
        };
        let Some(Entry::Client(c)) = cx.conns.get_mut(id) else {
            return;
        };
        let framing = StreamFraming::for_request(req.version, then);
        let route = self.router.resolve(&req.method, &req.path);
        if let (Some(r), Ok(to)) = (c.record.as_deref_mut(), &route) {
            r.route = to.route.label();
            // The id goes upstream as the one `X-Request-Id` (a client's unusable one is replaced).
            observe::carry_request_id(&mut req.headers, &r.id.to_string());
        }
        // Who asks, before anything is done for them: without a valid key a request learns nothing, not
        // even whether its path exists. The route only says where this path's SDK puts its key.
        let provider = route
            .as_ref()
            .ok()
            .and_then(|to| self.router.provider_of(to));
        let who = match auth::authenticate(&self.client_keys, &req, provider, c.peer.ip()) {
            Ok(who) => who,
            // The request was read whole, so its framing is sound and the connection stays usable (as
            // after a 404): a client answers the challenge by repeating the request with a key (RFC 9110
            // §11.6.1), on the same connection if it likes.
            Err(refusal) => {
                let message = refusal.message(provider);
                let challenge = [Refusal::CHALLENGE];
                return c.reply_error(Refusal::STATUS, Refusal::CODE, &message, &challenge, then);
            }
        };
        match route {
            Ok(to) if to.route.is_own() => {
                own::answer(c, to.route, &req, draining, then, &self.observe)
            }
            Ok(to) => {
                // Only what would reach an upstream is limited (a probe never is).
                if let Some(Err(wait)) = self.rate_limiter.as_ref().map(|l| l.take(&who, cx.now)) {
                    RelayStats::count(&self.stats.rate_limited);
                    let after = wait.as_secs_f64().ceil().max(1.0).to_string();
                    let message =
                        format!("too many requests from this client; retry after {after} s");
                    let extra = [("Retry-After", after.as_str())];
                    return c.reply_error(429, "rate_limited", &message, &extra, then);
                }
                self.upstreams.start(cx, id, &req, to, framing, who)
            }
            Err(miss) => c.reply_miss(miss, &req.method, then),
        }
    }

    fn on_drained(&mut self, cx: &mut Cx<Self>, id: ConnId) {
        // The bytes held since a read have all been taken: their residence ends now.
        if let Some(held) = exchange::exchange(cx, id).and_then(|x| x.seen.held_since.take()) {
            self.metrics.residence.record_duration(held.elapsed());
        }
        self.upstreams.pump(cx, id);
    }

    fn draining(&self) -> bool {
        self.closing
    }

    fn keeps_records(&self) -> bool {
        true
    }

    fn on_answered(&mut self, cx: &mut Cx<Self>, id: ConnId, record: &mut client::Record) {
        if let Some(Entry::Client(c)) = cx.conns.get(id) {
            observe::finished(&self.observe, &self.metrics, cx.name(), c, record, cx.now);
        }
        self.last_answered.keep(id, record);
    }
}

#[cfg(test)]
mod tests;
