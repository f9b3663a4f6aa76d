//! Name resolution off the event loop: a small pool of resolver threads ([`Resolver`]) for the whole
//! process and, on each worker, a cache that remembers answers and who is waiting for one ([`DnsCache`]).
//!
//! # Why off the loop
//!
//! A worker serves every stream of its thread from one loop, so one call that blocks stalls them all.
//! `getaddrinfo` (std's [`ToSocketAddrs`]) blocks: for microseconds when the answer is in `/etc/hosts`,
//! for seconds when a nameserver does not answer (`resolv.conf`'s timeout, times its attempts, times its
//! servers). std has no asynchronous form of it. So lookups run on threads of their own, and a worker only
//! does what cannot block: look in its cache, put a query on a bounded queue, read answers from a channel.
//!
//! # How the pieces fit
//!
//! ```text
//!  a worker thread (no locks)                                  resolver threads (one pool per process)
//!  DnsCache::lookup(host, port, now, waiter)
//!    IP literal, or fresh entry ─▶ Lookup::Ready(addrs)
//!    failure cached ─────────────▶ Lookup::Failed(why)
//!    else remember the waiter ───▶ Lookup::Pending
//!      (first waiter of the name only) Ask::ask ── Query ──▶ bounded queue ──▶ lookup(host, port)
//!                                                                              │    (blocks here)
//!                                                     the worker's channel ◀── Answer
//!  Handler::on_wake ◀── mio Waker (token::WAKER) ◀─────────── Remote::wake ◀───┘
//!    for each Answer on the channel: DnsCache::on_answer ─▶ (waiters, result): resume each waiter
//! ```
//!
//! The answer is sent on the channel *before* the worker is woken, so the `on_wake` that follows finds it.
//! Wakes coalesce (one `on_wake` may stand for several answers, or for none: `Remote::stop` wakes too), so
//! `on_wake` drains the channel with `try_recv` until it is empty. Setup, in `Server::start` and a handler:
//!
//! ```text
//! let resolver = Resolver::new()?;                                   // once per process
//! let (link, answers) = ResolverLink::new(resolver.clone(), worker.remote());   // per worker
//! let dns: DnsCache<ConnId> = DnsCache::new(link, CacheConfig::default());   // kept by the handler
//! ```
//!
//! A waiter is whatever the application needs to resume (a `ConnId`). It may be gone by the time the
//! answer comes: a `ConnId`'s generation check makes resuming a departed client find nothing (chapter 1).
//!
//! # Choices
//!
//! - **One query per name.** However many waiters pile up for one (host, port), one query is in flight
//!   for it per worker; the answer resumes them all, in the order they came.
//! - **A fixed TTL.** `getaddrinfo` gives addresses, not their DNS time to live, so an answer is kept for a
//!   fixed [`CacheConfig::ttl`] ([`DEFAULT_TTL`], 60 s), and a failure for [`CacheConfig::negative_ttl`]
//!   ([`DEFAULT_NEGATIVE_TTL`], 5 s), so that a dead name does not send every request to the resolver.
//! - **A few threads.** Thanks to the cache the load is a handful of lookups a minute: one thread would
//!   keep up. But a thread does one lookup at a time, so one name whose nameserver does not answer would
//!   hold every other new name behind it for its whole timeout. [`DEFAULT_THREADS`] (4) threads share one
//!   queue: three names may hang and the fourth thread still answers the rest. Idle threads sleep.
//! - **Bounded.** At most [`DEFAULT_QUEUE`] queries wait for a thread (more are refused at once with an
//!   error, not queued without end); a cache holds at most [`DEFAULT_CAPACITY`] names, and makes room by
//!   dropping the entry closest to expiry (the oldest, expired entries first). Names still being resolved
//!   are never dropped: their waiters would never hear back; when they fill the cache, lookups fail.
//! - **Sans-IO cache.** The cache never reads the clock (`now` is passed in, like everywhere in the protocol
//!   code) and reaches the resolver only through the [`Ask`] trait, so its tests run in simulated time.
//!
//! What it does not do: no TTLs from DNS itself, no resolver of its own (`getaddrinfo` decides, from
//! `/etc/hosts`, `resolv.conf` and `nsswitch.conf`), and no happy eyeballs: the addresses come in
//! `getaddrinfo`'s order, and the caller tries them in that order. Two workers asking
//! for the same new name send a query each (the caches share nothing). The threads end when every
//! [`Resolver`] handle is gone (a [`ResolverLink`] holds one); a lookup in progress finishes first.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::reactor::Remote;

/// Resolver threads started by [`Resolver::new`] and [`Resolver::with_lookup`].
pub const DEFAULT_THREADS: usize = 4;
/// Most resolver threads [`Resolver::spawn`] starts, whatever it is asked.
pub const MAX_THREADS: usize = 4;
/// Queries that may wait for a free resolver thread before more are refused.
pub const DEFAULT_QUEUE: usize = 256;
/// How long an answer is used ([`CacheConfig::ttl`]).
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);
/// How long a failure is remembered ([`CacheConfig::negative_ttl`]).
pub const DEFAULT_NEGATIVE_TTL: Duration = Duration::from_secs(5);
/// Most names one cache holds ([`CacheConfig::capacity`]).
pub const DEFAULT_CAPACITY: usize = 1024;
/// Longest TTL a cache applies: `Instant + Duration` panics on overflow, so a TTL is capped (one day).
pub const MAX_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// What the resolver threads call to resolve a name: [`system_lookup`] (`getaddrinfo`) unless a test
/// injects its own.
pub type LookupFn = dyn Fn(&str, u16) -> io::Result<Vec<SocketAddr>> + Send + Sync;

/// The addresses of `host:port` from the system resolver (`getaddrinfo`, through [`ToSocketAddrs`]). Blocks.
pub fn system_lookup(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    Ok((host, port).to_socket_addrs()?.collect())
}

/// What a name resolved to: its addresses (never an empty list), or why there are none.
pub type Resolved = Result<Vec<SocketAddr>, String>;

/// The answer to one query, with the (host, port) it is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub host: String,
    pub port: u16,
    pub result: Resolved,
}

/// One query on the resolver's queue, with where to answer it.
struct Query {
    host: String,
    port: u16,
    answers: Sender<Answer>,
    remote: Remote,
}

/// A handle to the process's resolver threads. Clones share the threads, which end when the last handle is
/// dropped.
#[derive(Clone)]
pub struct Resolver {
    queries: SyncSender<Query>,
    queue: usize,
}

impl Resolver {
    /// [`DEFAULT_THREADS`] threads resolving with `getaddrinfo`, [`DEFAULT_QUEUE`] queries queued at most.
    pub fn new() -> io::Result<Resolver> {
        Resolver::spawn(DEFAULT_THREADS, DEFAULT_QUEUE, system_lookup)
    }

    /// As [`Resolver::new`], resolving with `lookup` instead (tests make it slow, or fail).
    pub fn with_lookup<F>(lookup: F) -> io::Result<Resolver>
    where
        F: Fn(&str, u16) -> io::Result<Vec<SocketAddr>> + Send + Sync + 'static,
    {
        Resolver::spawn(DEFAULT_THREADS, DEFAULT_QUEUE, lookup)
    }

    /// `threads` threads (1 to [`MAX_THREADS`]) that take queries from one queue where at most `queue`
    /// wait, and answer each with `lookup`. Fails only if a thread cannot be started.
    pub fn spawn<F>(threads: usize, queue: usize, lookup: F) -> io::Result<Resolver>
    where
        F: Fn(&str, u16) -> io::Result<Vec<SocketAddr>> + Send + Sync + 'static,
    {
        let (queries, inbox) = mpsc::sync_channel(queue);
        let inbox = Arc::new(Mutex::new(inbox));
        let lookup: Arc<LookupFn> = Arc::new(lookup);
        for i in 0..threads.clamp(1, MAX_THREADS) {
            let (inbox, lookup) = (inbox.clone(), lookup.clone());
            // On an error the threads already started end at once: `queries` is dropped on return.
            thread::Builder::new()
                .name(format!("resolver-{i}"))
                .spawn(move || serve(&inbox, &*lookup))?;
        }
        Ok(Resolver { queries, queue })
    }

    /// Queues a lookup of `host:port`. Its [`Answer`] will be sent on `answers`, then `remote` woken. Never
    /// blocks: a full queue refuses the query with an error (as does a resolver whose threads are gone).
    pub fn query(
        &self,
        host: &str,
        port: u16,
        answers: &Sender<Answer>,
        remote: &Remote,
    ) -> Result<(), String> {
        let query = Query {
            host: host.to_owned(),
            port,
            answers: answers.clone(),
            remote: remote.clone(),
        };
        match self.queries.try_send(query) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(format!(
                "cannot resolve {host}: the resolver is busy ({} lookups queued)",
                self.queue
            )),
            Err(TrySendError::Disconnected(_)) => {
                Err(format!("cannot resolve {host}: the resolver has stopped"))
            }
        }
    }
}

/// One resolver thread: answers queries until every [`Resolver`] is gone.
fn serve(inbox: &Mutex<Receiver<Query>>, lookup: &LookupFn) {
    loop {
        // The lock is held while waiting for a query, never during a lookup: a thread stuck in a slow lookup
        // leaves the queue to the others. (Nothing panics under the lock; a poisoned one ends the thread.)
        let next = match inbox.lock() {
            Ok(inbox) => inbox.recv(),
            Err(_) => return,
        };
        let Ok(Query {
            host,
            port,
            answers,
            remote,
        }) = next
        else {
            return; // every Resolver handle is gone
        };
        // A panicking lookup must not take the thread with it, nor leave its waiters waiting for ever.
        let result = match catch_unwind(AssertUnwindSafe(|| lookup(&host, port))) {
            Ok(Ok(addrs)) => some_address(&host, Ok(addrs)),
            Ok(Err(e)) => Err(format!("cannot resolve {host}: {e}")),
            Err(_) => Err(format!("cannot resolve {host}: the lookup panicked")),
        };
        // Answer first, then wake: the worker's `on_wake` must find the answer. A worker that has gone away
        // dropped its receiver; then nobody waits and nobody needs waking.
        if answers.send(Answer { host, port, result }).is_ok() {
            let _ = remote.wake();
        }
    }
}

/// A result as waiters see it: an empty list of addresses is a failure too.
fn some_address(host: &str, result: Resolved) -> Resolved {
    match result {
        Ok(addrs) if addrs.is_empty() => Err(format!("{host} has no address")),
        other => other,
    }
}

/// How a [`DnsCache`] reaches a resolver: the one door to the outside, so the cache can be tested alone.
pub trait Ask {
    /// Sends a query for `host:port`, whose [`Answer`] will reach [`DnsCache::on_answer`] later; or says
    /// why it cannot (a full queue).
    fn ask(&mut self, host: &str, port: u16) -> Result<(), String>;
}

/// A worker's link to the [`Resolver`]: its queries carry the worker's answer channel and its [`Remote`].
pub struct ResolverLink {
    resolver: Resolver,
    answers: Sender<Answer>,
    remote: Remote,
}

impl ResolverLink {
    /// The link of the worker that `remote` wakes, and the channel its `on_wake` drains.
    pub fn new(resolver: Resolver, remote: Remote) -> (ResolverLink, Receiver<Answer>) {
        let (answers, inbox) = mpsc::channel();
        let link = ResolverLink {
            resolver,
            answers,
            remote,
        };
        (link, inbox)
    }
}

impl Ask for ResolverLink {
    fn ask(&mut self, host: &str, port: u16) -> Result<(), String> {
        self.resolver.query(host, port, &self.answers, &self.remote)
    }
}

/// What [`DnsCache::lookup`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The addresses, in the resolver's order: from an IP literal or a fresh entry.
    Ready(Vec<SocketAddr>),
    /// A query is on its way; the waiter is resumed by [`DnsCache::on_answer`].
    Pending,
    /// A failure still remembered, or no query could be sent (the waiter was not kept).
    Failed(String),
}

/// A cache's limits. The TTLs are fixed (`getaddrinfo` tells no TTL) and capped at [`MAX_TTL`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// How long addresses are used before the name is resolved again ([`DEFAULT_TTL`]).
    pub ttl: Duration,
    /// How long a failure is answered from the cache ([`DEFAULT_NEGATIVE_TTL`]).
    pub negative_ttl: Duration,
    /// Most names kept, at least one ([`DEFAULT_CAPACITY`]).
    pub capacity: usize,
}

impl Default for CacheConfig {
    fn default() -> CacheConfig {
        CacheConfig {
            ttl: DEFAULT_TTL,
            negative_ttl: DEFAULT_NEGATIVE_TTL,
            capacity: DEFAULT_CAPACITY,
        }
    }
}

/// What the cache holds for one (host, port).
enum Entry<W> {
    /// A query is in flight; these wait for its answer, first come first.
    Waiting(Vec<W>),
    /// An answer (addresses or a failure), used until `expires`.
    Known { result: Resolved, expires: Instant },
}

/// One worker's resolved names, and who waits for the names being resolved. Used on the worker's thread
/// only: no lock. `W` is whatever names a waiter (a `ConnId`).
pub struct DnsCache<W, A = ResolverLink> {
    asker: A,
    config: CacheConfig,
    entries: HashMap<(String, u16), Entry<W>>,
}

impl<W, A: Ask> DnsCache<W, A> {
    /// An empty cache that sends its queries through `asker`.
    pub fn new(asker: A, config: CacheConfig) -> DnsCache<W, A> {
        let config = CacheConfig {
            ttl: config.ttl.min(MAX_TTL),
            negative_ttl: config.negative_ttl.min(MAX_TTL),
            capacity: config.capacity.max(1),
        };
        DnsCache {
            asker,
            config,
            entries: HashMap::new(),
        }
    }

    /// The addresses of `host:port` at `now`. An IP literal (`127.0.0.1`, `::1`, `[::1]`) is answered at
    /// once and never cached. Otherwise a fresh entry answers; else `waiter` is kept until the answer, and
    /// a query is sent if none is in flight for this name already. `waiter` is dropped unless `Pending`.
    pub fn lookup(&mut self, host: &str, port: u16, now: Instant, waiter: W) -> Lookup {
        if let Some(ip) = literal(host) {
            return Lookup::Ready(vec![SocketAddr::new(ip, port)]);
        }
        let key = (host.to_owned(), port);
        match self.entries.get_mut(&key) {
            Some(Entry::Waiting(waiters)) => {
                waiters.push(waiter);
                return Lookup::Pending;
            }
            Some(Entry::Known { result, expires }) if now < *expires => {
                return match result {
                    Ok(addrs) => Lookup::Ready(addrs.clone()),
                    Err(why) => Lookup::Failed(why.clone()),
                };
            }
            // Expired: asked again below, and replaced in place.
            Some(Entry::Known { .. }) => {}
            None => {
                if !self.make_room() {
                    return Lookup::Failed(format!(
                        "cannot resolve {host}: {} names are being resolved already",
                        self.entries.len()
                    ));
                }
            }
        }
        // A refused query leaves the cache as it was: the next lookup asks again.
        if let Err(why) = self.asker.ask(host, port) {
            return Lookup::Failed(why);
        }
        self.entries.insert(key, Entry::Waiting(vec![waiter]));
        Lookup::Pending
    }

    /// Takes in the answer to a query: remembers it (addresses for the TTL, a failure for the negative TTL,
    /// from `now`) and gives back who waited for it, to resume with the result. An answer nobody asked for
    /// is passed back without waiters and not cached.
    pub fn on_answer(&mut self, answer: Answer, now: Instant) -> (Vec<W>, Resolved) {
        let Answer { host, port, result } = answer;
        let result = some_address(&host, result);
        let key = (host, port);
        if !matches!(self.entries.get(&key), Some(Entry::Waiting(_))) {
            return (Vec::new(), result);
        }
        let ttl = match result {
            Ok(_) => self.config.ttl,
            Err(_) => self.config.negative_ttl,
        };
        let known = Entry::Known {
            result: result.clone(),
            expires: now + ttl,
        };
        match self.entries.insert(key, known) {
            Some(Entry::Waiting(waiters)) => (waiters, result),
            _ => (Vec::new(), result),
        }
    }

    /// Names held (resolved or being resolved).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no name is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Room for one more name: drops the answered entry closest to expiry if the cache is full. False if
    /// every entry is still being resolved. A scan, only when a *new* name meets a full cache.
    fn make_room(&mut self) -> bool {
        if self.entries.len() < self.config.capacity {
            return true;
        }
        let oldest = self
            .entries
            .iter()
            .filter_map(|(key, entry)| match entry {
                Entry::Known { expires, .. } => Some((*expires, key)),
                Entry::Waiting(_) => None,
            })
            .min_by_key(|(expires, _)| *expires)
            .map(|(_, key)| key.clone());
        match oldest {
            Some(key) => self.entries.remove(&key).is_some(),
            None => false,
        }
    }
}

/// The address `host` spells, if it is an IP literal: `127.0.0.1`, `::1`, or `[::1]` as in a URL.
fn literal(host: &str) -> Option<IpAddr> {
    match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(inner) => inner.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
        None => host.parse().ok(),
    }
}

#[cfg(test)]
mod tests;
