//! Finding a connection for an exchange: an idle one from the upstream's pool, or a new one to an address
//! of its name, which is resolved off the loop (`relay::dns`).
//!
//! The [`Connector`] hands the connection it found to the exchange itself ([`set_upstream`]) and reports
//! what came of it ([`Found`]); what a failure means for the exchange (another address, a retry, an
//! error for the client) is decided by the caller, `Upstreams`, with the failure policy.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc::Receiver;
use std::time::Duration;

use rustls::ClientConfig;
use rustls::pki_types::ServerName;

use super::dns::{Answer, DnsCache, Lookup, ResolverLink};
use super::exchange::{Failure, Phase};
use super::pool::Pool;
use super::{Entry, RelayStats, UPSTREAM, UpstreamTarget};
use crate::conn::Transport;
use crate::conn::client::ClientState;
use crate::conn::tls::Tls;
use crate::conn::upstream::UpstreamConn;
use crate::reactor::{ConnId, Cx};

type RelayCx = Cx<super::Relay>;

/// What looking for a connection came to.
#[derive(Debug)]
pub(super) enum Found {
    /// The exchange has a connection (in progress, or from the pool).
    Connected,
    /// The exchange waits for the resolver's answer.
    Pending,
    /// No connection: the name did not resolve, or no connect could start.
    Failed(Failure),
}

/// One upstream as a worker sees it: where, its idle connections, its TLS configuration.
struct Upstream {
    target: Arc<UpstreamTarget>,
    pool: Pool,
    /// For `https`: this worker's TLS client configuration (with its own session cache) and the name the
    /// upstream's certificate must carry.
    tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
}

/// Every configured upstream of a worker, and how a connection to one is found.
pub(super) struct Connector {
    /// In configuration order (an exchange names its own by index).
    upstreams: Vec<Upstream>,
    /// This worker's resolved names, and who waits for one.
    dns: DnsCache<ConnId>,
    /// Where the resolver threads send their answers (the waker says when).
    answers: Receiver<Answer>,
    stats: Arc<RelayStats>,
}

impl Connector {
    pub(super) fn new(
        targets: Vec<(Arc<UpstreamTarget>, Option<Arc<ClientConfig>>)>,
        max_idle: usize,
        dns: DnsCache<ConnId, ResolverLink>,
        answers: Receiver<Answer>,
        stats: Arc<RelayStats>,
    ) -> Connector {
        let upstreams = targets
            .into_iter()
            .map(|(target, tls)| Upstream {
                tls: tls.zip(target.tls_name.clone()),
                pool: Pool::new(max_idle),
                target,
            })
            .collect();
        Connector {
            upstreams,
            dns,
            answers,
            stats,
        }
    }

    /// Upstream `via`.
    pub(super) fn target(&self, via: usize) -> Option<&Arc<UpstreamTarget>> {
        self.upstreams.get(via).map(|u| &u.target)
    }

    /// How many upstreams there are.
    pub(super) fn len(&self) -> usize {
        self.upstreams.len()
    }

    /// Idle connections in the pools.
    pub(super) fn pooled(&self) -> usize {
        self.upstreams.iter().map(|u| u.pool.len()).sum()
    }

    /// An idle connection of upstream `via` was closed: it leaves the pool.
    pub(super) fn forget(&mut self, via: usize, id: ConnId) {
        if let Some(u) = self.upstreams.get_mut(via) {
            u.pool.remove(id);
        }
    }

    /// Closes every idle connection, and keeps none from now on (the worker drains).
    pub(super) fn close_pools(&mut self, cx: &mut RelayCx) {
        self.upstreams.iter_mut().for_each(|u| u.pool.close_all(cx));
    }

    /// Parks a connection to upstream `via` that finished an exchange, for the next one.
    pub(super) fn park(&mut self, cx: &mut RelayCx, io: Transport, via: usize, idle: Duration) {
        if let Some(u) = self.upstreams.get_mut(via) {
            u.pool.park(cx, io, via, idle);
        }
    }

    /// Gives the exchange of client `id` (in `Resolving`) a connection: an idle pooled one on a first try,
    /// else a new one to the first address of the upstream's name, if the name is resolved; otherwise the
    /// exchange waits for the resolver (`Pending`).
    pub(super) fn find(&mut self, cx: &mut RelayCx, id: ConnId) -> Found {
        let (attempt, via) = match cx.conns.get(id) {
            Some(Entry::Client(c)) => match &c.state {
                ClientState::Serving(x) if matches!(x.phase, Phase::Resolving { .. }) => {
                    (x.attempt, x.via)
                }
                _ => return Found::Pending,
            },
            _ => return Found::Pending,
        };
        // A retry is for a pooled connection that failed: it goes on a fresh one.
        if attempt == 1
            && let Some(upstream) = self.take_idle(cx, id, via)
        {
            set_upstream(cx, id, upstream, Vec::new());
            return Found::Connected;
        }
        let Some(u) = self.upstreams.get(via) else {
            return Found::Pending;
        };
        let (host, port) = (&u.target.origin.host, u.target.origin.port);
        match self.dns.lookup(host, port, cx.now, id) {
            Lookup::Ready(addrs) => self.connect_to(cx, id, addrs),
            Lookup::Pending => Found::Pending,
            Lookup::Failed(why) => Found::Failed(Failure::Resolve(why)),
        }
    }

    /// The resolver's answers (the worker was woken), each for the clients still waiting for it (a client
    /// may have left, or moved on, while its name was looked up).
    pub(super) fn answers(
        &mut self,
        cx: &RelayCx,
    ) -> Vec<(ConnId, Result<Vec<SocketAddr>, String>)> {
        let mut out = Vec::new();
        while let Ok(answer) = self.answers.try_recv() {
            let (waiters, result) = self.dns.on_answer(answer, cx.now);
            let still_waiting = |id: ConnId| {
                matches!(cx.conns.get(id), Some(Entry::Client(c))
                    if matches!(&c.state, ClientState::Serving(x) if matches!(x.phase, Phase::Resolving { .. })))
            };
            for id in waiters.into_iter().filter(|id| still_waiting(*id)) {
                out.push((id, result.clone()));
            }
        }
        out
    }

    /// Connects the exchange of client `id` to the first of `addrs` that a connect can start to; the rest
    /// are kept, in order, in case that connect fails.
    pub(super) fn connect_to(
        &mut self,
        cx: &mut RelayCx,
        id: ConnId,
        mut addrs: Vec<SocketAddr>,
    ) -> Found {
        let mut last_error = None;
        while !addrs.is_empty() {
            let addr = addrs.remove(0);
            match self.open(cx, id, addr) {
                Ok(upstream) => {
                    set_upstream(cx, id, upstream, addrs);
                    return Found::Connected;
                }
                Err(e) => last_error = Some(e),
            }
        }
        let e = last_error.unwrap_or_else(|| std::io::Error::other("no address to connect to"));
        Found::Failed(Failure::Io(e))
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
}

/// Hands `upstream` to the exchange of client `id`, with the addresses left after it.
fn set_upstream(cx: &mut RelayCx, id: ConnId, upstream: UpstreamConn, fallback: Vec<SocketAddr>) {
    if let Some(Entry::Client(c)) = cx.conns.get_mut(id)
        && let ClientState::Serving(x) = &mut c.state
    {
        if let Some(r) = c.record.as_deref_mut() {
            (r.upstream, r.reused) = (Some(x.via), Some(upstream.reused));
        }
        x.connect(upstream, fallback);
        x.upstream_batch = cx.batch;
    }
}
