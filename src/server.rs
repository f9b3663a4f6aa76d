//! Assembly: from a [`Config`] to running workers, and back to a stop.
//!
//! [`Server::start`] is what the binary, the tests and the benchmarks call. It raises the descriptor limit
//! and grows the descriptor table (`reactor::fdlimit`), starts the resolver threads (names are resolved
//! off the loop, when a connection is first needed), starts the embedded mock when
//! no upstream is configured, binds one listening socket per worker and starts each worker on its own
//! thread, serving the relay. It returns a [`Running`]: the bound addresses, the workers' figures, a way to
//! wait for the first worker that stops, and a way to stop them all.
//!
//! Each worker has its own listener bound to the same address with `SO_REUSEPORT`, so the kernel spreads
//! incoming connections across workers and no worker ever touches another's sockets: there is no shared
//! accept queue, no lock and no hand-off. Binding port 0 would give every socket a different port, so the
//! first socket binds and the others bind to the port it got. Where the kernel does not balance
//! `SO_REUSEPORT` listeners (macOS and the BSDs other than FreeBSD's `SO_REUSEPORT_LB`), the workers share
//! one listening socket instead: each registers its own duplicate, the first to accept gets the
//! connection, and the others find the backlog empty.
//!
//! All listeners are bound before any worker starts, so once [`Running::addr`] is known (and printed),
//! connections succeed: the kernel queues them until the workers accept.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;

mod listeners;
mod targets;
use targets::upstream_targets;

pub use listeners::bind_listeners;

use crate::config::{Config, FdLimit, LoopConfig, MockConfig, UpstreamConfig, UpstreamSpec};
use crate::conn::tls;
use crate::mock::script::MockFormat;
use crate::mock::{Mock, MockStats};
use crate::reactor::instrument::{StatsSnapshot, WorkerStats};
use crate::reactor::{Handler, Remote, Worker, fdlimit};
use crate::relay::auth::{self, ClientKeys};
use crate::relay::dns::{CacheConfig, Resolver};
use crate::relay::providers::{Origin, Provider};
use crate::relay::ratelimit::RateLimiter;
use crate::relay::{Relay, RelayCounts, RelaySettings, RelayStats, UpstreamTarget};

/// Descriptors a process needs besides its streams: standard streams, and per worker its listener, its
/// epoll instance and its waker; plus two for one stream, or nothing could be served.
fn fds_needed(workers: usize) -> u64 {
    3 + 3 * workers as u64 + 2
}

/// Starts servers.
pub struct Server;

impl Server {
    /// Starts the relay described by `config` (and, if it says so, the embedded mock it relays to), with
    /// the system's name resolution on resolver threads.
    pub fn start(config: Config) -> Result<Running, String> {
        let resolver = Resolver::new().map_err(|e| format!("cannot start the resolver: {e}"))?;
        Server::start_with(config, resolver)
    }

    /// [`Server::start`] with a resolver of the caller's (a test's slow or failing one).
    pub fn start_with(config: Config, resolver: Resolver) -> Result<Running, String> {
        // First of all, before any socket is opened: a relay open to anyone is refused.
        let keyed = !config.client_keys.is_empty();
        auth::check_exposure(config.listen, keyed, config.allow_unauthenticated)?;
        let client_keys = Arc::new(ClientKeys::new(&config.client_keys)?);
        log_client_keys(&client_keys, config.listen);
        let mock_workers = usize::from(matches!(
            config.upstream,
            UpstreamConfig::EmbeddedMock { .. }
        ));
        prepare_fds(&config.common, config.workers + mock_workers)?;
        let (to, exits) = mpsc::channel();
        let mut group = Running {
            addr: config.listen,
            mock_addr: None,
            mock_stats: None,
            relay_stats: None,
            upstreams: Vec::new(),
            workers: Vec::new(),
            exits,
        };
        let (specs, routes, generate) = match config.upstream.clone() {
            UpstreamConfig::Remote {
                upstreams,
                routes,
                generate,
            } => (upstreams, routes, generate),
            UpstreamConfig::EmbeddedMock {
                provider,
                model,
                tokens,
                interval,
            } => {
                let mock = MockConfig {
                    listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                    workers: 1,
                    format: match provider {
                        Provider::Gemini => MockFormat::Gemini,
                        Provider::OpenAi | Provider::Anthropic => MockFormat::OpenAi,
                    },
                    tokens,
                    interval,
                    common: config.common.clone(),
                };
                let stats = Arc::new(MockStats::default());
                let addr = spawn_mock(&mock, stats.clone(), &to, &mut group.workers)?;
                group.mock_addr = Some(addr);
                group.mock_stats = Some(stats);
                let origin = Origin {
                    tls: false,
                    host: "127.0.0.1".into(),
                    port: addr.port(),
                    base_path: String::new(),
                };
                let mut spec = UpstreamSpec::new("mock", provider, origin);
                spec.model = model;
                (vec![spec], Vec::new(), None)
            }
        };
        let (targets, router) = upstream_targets(
            &specs,
            &routes,
            generate.as_deref(),
            (config.admission, config.breaker),
        )?;
        let settings = RelaySettings {
            limits: config.common.limits.clone(),
            stream_buffer: config.common.stream_buffer,
            max_idle: config.pool_max_idle,
            idle_timeout: config.idle_timeout,
            inbound_tls: inbound_tls(&config.common)?,
            dns: CacheConfig {
                ttl: config.dns_ttl,
                ..CacheConfig::default()
            },
            upstreams: Vec::new(),
            router,
            client: config.common.client,
            timeouts: config.timeouts,
            retry: config.retry,
            rate_limiter: config.rate_limit.map(|l| Arc::new(RateLimiter::new(l))),
            client_keys,
        };
        let listeners = bind_listeners(config.listen, config.workers, config.common.backlog)
            .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
        group.addr = listeners[0].local_addr().map_err(|e| e.to_string())?;
        let stats = Arc::new(RelayStats::default());
        group.relay_stats = Some(stats.clone());
        group.upstreams = targets.iter().map(|(t, _)| t.clone()).collect();
        for (i, listener) in listeners.into_iter().enumerate() {
            // Each worker its own TLS configurations, and with them its own session caches.
            let mut settings = settings.clone();
            for (target, roots) in &targets {
                let tls = match roots {
                    Some(roots) => Some(tls::client_config(roots.clone())?),
                    None => None,
                };
                settings.upstreams.push((target.clone(), tls));
            }
            let (stats, resolver) = (stats.clone(), resolver.clone());
            let make = move |remote| Relay::new(settings, stats, resolver, remote);
            spawn(
                format!("relay-{i}"),
                listener,
                &config.common,
                make,
                &to,
                &mut group.workers,
            )?;
        }
        Ok(group)
    }

    /// Starts the mock upstream on its own.
    pub fn start_mock(config: MockConfig) -> Result<Running, String> {
        prepare_fds(&config.common, config.workers)?;
        let (to, exits) = mpsc::channel();
        let stats = Arc::new(MockStats::default());
        let mut workers = Vec::new();
        let addr = spawn_mock(&config, stats.clone(), &to, &mut workers)?;
        Ok(Running {
            addr,
            mock_addr: Some(addr),
            mock_stats: Some(stats),
            relay_stats: None,
            upstreams: Vec::new(),
            workers,
            exits,
        })
    }
}

/// Says at start whether clients need a key (names only; a key is never logged).
fn log_client_keys(keys: &ClientKeys, listen: SocketAddr) {
    if keys.is_empty() && !listen.ip().to_canonical().is_loopback() {
        log::warn!(
            "no client keys: anyone who reaches {listen} is served (--allow-unauthenticated)"
        );
    } else if keys.is_empty() {
        log::info!("no client keys: every client is served (listening on loopback only)");
    } else {
        log::info!("clients need a key: {} configured ({keys:?})", keys.len());
    }
}

/// The listener's TLS configuration, when `--tls-cert` and `--tls-key` are given.
fn inbound_tls(common: &LoopConfig) -> Result<Option<Arc<rustls::ServerConfig>>, String> {
    match &common.tls {
        Some((cert, key)) => tls::server_config(cert, key).map(Some),
        None => Ok(None),
    }
}

/// Raises the descriptor limit and grows the table (both process-wide), and refuses a limit too low to
/// serve anything.
fn prepare_fds(common: &LoopConfig, workers: usize) -> Result<(), String> {
    let FdLimit::Raise(wanted) = common.fd_limit else {
        return Ok(());
    };
    let limit = match fdlimit::raise(wanted) {
        Ok(limit) => limit.after,
        Err(e) => {
            log::warn!("could not raise the file descriptor limit: {e}");
            return Ok(());
        }
    };
    let needed = fds_needed(workers);
    if limit < needed {
        return Err(format!(
            "--max-fds {limit} is too low: {workers} worker(s) need at least {needed} file descriptors \
             to listen and serve one stream"
        ));
    }
    if let Err(e) = fdlimit::grow_table(limit) {
        log::warn!("could not grow the descriptor table: {e}");
    }
    Ok(())
}

fn spawn_mock(
    config: &MockConfig,
    stats: Arc<MockStats>,
    to: &Sender<Exit>,
    workers: &mut Vec<WorkerHandle>,
) -> Result<SocketAddr, String> {
    let tls = inbound_tls(&config.common)?;
    let listeners = bind_listeners(config.listen, config.workers, config.common.backlog)
        .map_err(|e| format!("mock upstream cannot listen on {}: {e}", config.listen))?;
    let addr = listeners[0].local_addr().map_err(|e| e.to_string())?;
    for (i, listener) in listeners.into_iter().enumerate() {
        let mock = Mock::new(
            config.format,
            config.tokens,
            config.interval,
            config.common.limits.clone(),
            config.common.stream_buffer,
            stats.clone(),
        )
        .with_tls(tls.clone())
        .with_client_timeouts(config.common.client);
        spawn(
            format!("mock-{i}"),
            listener,
            &config.common,
            |_| mock,
            to,
            workers,
        )?;
    }
    Ok(addr)
}

/// A worker's name and result when it stopped.
type Exit = (String, io::Result<()>);

/// One running worker.
struct WorkerHandle {
    remote: Remote,
    stats: Arc<WorkerStats>,
    thread: JoinHandle<()>,
}

fn spawn<H>(
    name: String,
    listener: TcpListener,
    common: &LoopConfig,
    make: impl FnOnce(Remote) -> H,
    to: &Sender<Exit>,
    workers: &mut Vec<WorkerHandle>,
) -> Result<(), String>
where
    H: Handler + Send + 'static,
    H::Conn: Send,
    H::Timer: Send,
{
    let fail = |e: io::Error| format!("cannot start worker {name}: {e}");
    let mut worker = Worker::build(name.clone(), common.loop_warn, make).map_err(fail)?;
    worker.listen(listener).map_err(fail)?;
    let report = ExitReport {
        name: name.clone(),
        result: None,
        to: to.clone(),
    };
    let remote = worker.remote();
    let stats = worker.stats();
    let thread = std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            // Moved whole into the thread (a closure would otherwise capture only the field it assigns), so
            // it is dropped here: when the loop returns, or when the thread unwinds.
            let mut report = report;
            report.result = Some(worker.run());
        })
        .map_err(fail)?;
    workers.push(WorkerHandle {
        remote,
        stats,
        thread,
    });
    Ok(())
}

/// Reports a worker's end on drop, which also happens when its thread unwinds from a panic.
struct ExitReport {
    name: String,
    result: Option<io::Result<()>>,
    to: Sender<Exit>,
}

impl Drop for ExitReport {
    fn drop(&mut self) {
        let result = self
            .result
            .take()
            .unwrap_or_else(|| Err(io::Error::other("panicked")));
        // The receiver may be gone if the process is already stopping; nothing to do then.
        let _ = self.to.send((std::mem::take(&mut self.name), result));
    }
}

/// Running workers.
pub struct Running {
    addr: SocketAddr,
    mock_addr: Option<SocketAddr>,
    mock_stats: Option<Arc<MockStats>>,
    relay_stats: Option<Arc<RelayStats>>,
    /// The relay's upstreams, for their admission and breaker figures.
    upstreams: Vec<Arc<UpstreamTarget>>,
    workers: Vec<WorkerHandle>,
    exits: Receiver<Exit>,
}

/// How busy an upstream is now, and how its breaker has fared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamLoad {
    pub name: String,
    /// Requests holding a permit (in flight).
    pub in_flight: usize,
    /// Requests waiting for a turn.
    pub queued: usize,
    /// Times its circuit breaker opened.
    pub breaker_opened: u64,
}

impl Running {
    /// The bound address (with the real port when `:0` was asked).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The mock's address: the embedded mock of a relay, or the mock itself.
    pub fn mock_addr(&self) -> Option<SocketAddr> {
        self.mock_addr
    }

    /// The mock's counters, as `GET /stats` serves them.
    pub fn mock_stats(&self) -> Option<serde_json::Value> {
        self.mock_stats.as_ref().map(|s| s.snapshot())
    }

    /// What the relay's workers did (none for a mock on its own).
    pub fn relay_stats(&self) -> Option<RelayCounts> {
        self.relay_stats.as_ref().map(|s| s.snapshot())
    }

    /// Each upstream's load now (none for a mock on its own).
    pub fn upstream_load(&self) -> Vec<UpstreamLoad> {
        self.upstreams
            .iter()
            .map(|t| UpstreamLoad {
                name: t.name.clone(),
                in_flight: t.gate.in_flight(),
                queued: t.gate.queued(),
                breaker_opened: t.health.times_opened(),
            })
            .collect()
    }

    /// Every worker's figures, added up (published once per loop iteration).
    pub fn stats(&self) -> StatsSnapshot {
        self.workers
            .iter()
            .map(|w| w.stats.snapshot())
            .fold(StatsSnapshot::default(), |a, b| a + b)
    }

    /// Waits until any worker stops, and says why. A worker only stops on a fatal error (or a bug that
    /// panicked it); running on with fewer workers would hide that, so the caller should exit.
    pub fn wait(self) -> Result<(), String> {
        match self.exits.recv() {
            Ok((name, Ok(()))) => Err(format!("worker {name} stopped")),
            Ok((name, Err(e))) => Err(format!("worker {name} failed: {e}")),
            Err(_) => Err("all workers are gone".into()),
        }
    }

    /// Stops every worker and waits for their threads. Connections still open are closed.
    pub fn stop(self) {
        for w in &self.workers {
            if let Err(e) = w.remote.stop() {
                log::warn!("cannot wake a worker to stop it: {e}");
            }
        }
        for w in self.workers {
            let _ = w.thread.join();
        }
    }
}
