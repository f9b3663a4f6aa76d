//! Assembly: from a [`Config`] to running workers, and back to a stop.
//!
//! [`Server::start`] is what the binary, the tests and the benchmarks call. It raises the descriptor limit
//! and grows the descriptor table (`reactor::fdlimit`), starts the resolver threads (names are resolved
//! off the loop, when a connection is first needed), starts the embedded mock when
//! no upstream is configured, binds one listening socket per worker and starts each worker on its own
//! thread, serving the relay. It returns a [`Running`]: the bound addresses, the workers' figures, a way to
//! drain them (what the binary does on SIGTERM or SIGINT, [`signals`]), a way to wait until they are done,
//! and a way to stop them all at once.
//!
//! Two more things are decided here, once: each relay worker's descriptor budget ([`budget`]: how many
//! clients it serves before it turns new ones away with a 503), and who watches the workers
//! ([`supervisor`]: one thread that hears every worker's end and runs a drain).
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
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;

pub mod budget;
mod listeners;
pub mod signals;
pub mod supervisor;
mod targets;

pub use listeners::bind_listeners;
use listeners::{inbound_tls, log_client_keys};
pub use supervisor::{Drained, Drainer};

use crate::config::{Config, DrainPlan, LoopConfig, MockConfig, UpstreamConfig, UpstreamSpec};
use crate::conn::tls;
use crate::metrics::Registry;
use crate::mock::script::MockFormat;
use crate::mock::{Mock, MockStats};
use crate::reactor::instrument::{StatsSnapshot, WorkerStats};
use crate::reactor::{Handler, Remote, Worker};
use crate::relay::auth::{self, ClientKeys};
use crate::relay::dns::{CacheConfig, Resolver};
use crate::relay::observe::Observe;
use crate::relay::providers::{Origin, Provider};
use crate::relay::ratelimit::RateLimiter;
use crate::relay::{Relay, RelayCounts, RelaySettings, RelayStats, UpstreamTarget};
use budget::{Inputs, client_budget, prepare_fds, too_low};
use supervisor::{Member, Note, Supervisor};
use targets::upstream_targets;

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
        let embedded = matches!(config.upstream, UpstreamConfig::EmbeddedMock { .. });
        let mock_workers = usize::from(embedded);
        let limit = prepare_fds(&config.common, config.workers + mock_workers)?;
        let (to, notes) = mpsc::channel();
        let mut crew = Crew::default();
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
                    // The relay reaches its embedded mock in the clear, whatever its own listener speaks.
                    common: LoopConfig {
                        tls: None,
                        ..config.common.clone()
                    },
                };
                let stats = Arc::new(MockStats::default());
                // Behind the relay: stopped once the relay's workers have drained, not drained itself.
                let addr = spawn_mock(&mock, stats.clone(), &to, &mut crew, false)?;
                crew.mock = Some((addr, stats));
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
        crew.upstreams = targets.iter().map(|(t, _)| t.clone()).collect();
        let budget = client_budget(
            &config.common,
            limit,
            &Inputs {
                limit: limit.unwrap_or(u64::MAX),
                relay_workers: config.workers,
                mock_workers,
                upstreams: specs.len(),
                max_idle: config.pool_max_idle,
                embedded_mock: embedded,
                max_clients: config.max_clients,
            },
        )?;
        let draining = Arc::new(AtomicBool::new(false));
        let settings = RelaySettings {
            limits: config.common.limits.clone(),
            stream_buffer: config.common.stream_buffer,
            max_idle: budget.max_idle,
            idle_timeout: config.idle_timeout,
            inbound_tls: inbound_tls(&config.common)?,
            dns: CacheConfig {
                ttl: config.dns_ttl,
                ..CacheConfig::default()
            },
            upstreams: Vec::new(),
            router,
            max_clients: budget.clients,
            draining: draining.clone(),
            client: config.common.client,
            timeouts: config.timeouts,
            retry: config.retry,
            rate_limiter: config.rate_limit.map(|l| Arc::new(RateLimiter::new(l))),
            client_keys,
        };
        let listeners = bind_listeners(config.listen, config.workers, config.common.backlog)
            .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
        let addr = listeners[0].local_addr().map_err(|e| e.to_string())?;
        let stats = Arc::new(RelayStats::default());
        let registry = Arc::new(Registry::new(
            stats.clone(),
            crew.upstreams.clone(),
            listeners.len(),
            config.observe.metrics,
            limit,
        ));
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
            let scrape = registry.clone();
            let observe = Observe {
                metrics: registry.workers[i].clone(),
                scrape: Arc::new(move || scrape.render()),
                upstreams: crew.upstreams.iter().map(|t| t.name.clone()).collect(),
                access_log: config.observe.access_log,
                debug_stall: config.observe.debug_stall,
            };
            let make = move |remote| Relay::new(settings, stats, resolver, remote, observe);
            let name = format!("relay-{i}");
            spawn(name, listener, &config.common, make, &to, &mut crew, true)?;
        }
        let loops = crew.workers.iter().filter(|w| w.name.starts_with("relay-"));
        registry.set_loops(loops.map(|w| (w.name.clone(), w.stats.clone())).collect());
        crew.registry = Some(registry);
        crew.launch(addr, Some(stats), to, notes, draining, config.common.drain)
    }

    /// Starts the mock upstream on its own.
    pub fn start_mock(config: MockConfig) -> Result<Running, String> {
        let limit = prepare_fds(&config.common, config.workers)?;
        // A mock has no budget; it needs its reserve and one connection.
        let needed = budget::reserved(config.workers) + 1;
        if let Some(limit) = limit.filter(|&l| l < needed) {
            return Err(too_low(&config.common, limit, needed, config.workers));
        }
        let (to, notes) = mpsc::channel();
        let stats = Arc::new(MockStats::default());
        let mut crew = Crew::default();
        let addr = spawn_mock(&config, stats.clone(), &to, &mut crew, true)?;
        crew.mock = Some((addr, stats));
        let draining = Arc::new(AtomicBool::new(false));
        crew.launch(addr, None, to, notes, draining, config.common.drain)
    }
}

/// The workers started so far, and the embedded (or standalone) mock's address and counters.
#[derive(Default)]
struct Crew {
    workers: Vec<WorkerHandle>,
    mock: Option<(SocketAddr, Arc<MockStats>)>,
    /// The relay's upstreams, for their admission and breaker figures.
    upstreams: Vec<Arc<UpstreamTarget>>,
    /// The relay's metrics (none for a mock on its own).
    registry: Option<Arc<Registry>>,
}

impl Crew {
    /// Starts the supervisor over the workers and hands them over as a [`Running`].
    fn launch(
        self,
        addr: SocketAddr,
        relay_stats: Option<Arc<RelayStats>>,
        to: Sender<Note>,
        notes: Receiver<Note>,
        draining: Arc<AtomicBool>,
        plan: DrainPlan,
    ) -> Result<Running, String> {
        let supervisor = Supervisor {
            notes,
            crew: self
                .workers
                .iter()
                .map(|w| Member {
                    name: w.name.clone(),
                    remote: w.remote.clone(),
                    front: w.front,
                    running: true,
                })
                .collect(),
            relay: relay_stats.clone(),
        };
        let supervisor = std::thread::Builder::new()
            .name("supervisor".into())
            .spawn(move || supervisor.run())
            .map_err(|e| format!("cannot start the supervisor thread: {e}"))?;
        Ok(Running {
            addr,
            mock_addr: self.mock.as_ref().map(|(a, _)| *a),
            mock_stats: self.mock.map(|(_, s)| s),
            relay_stats,
            registry: self.registry,
            upstreams: self.upstreams,
            workers: self.workers,
            drainer: Drainer::new(to, draining),
            plan,
            supervisor,
        })
    }
}

/// Starts the mock's workers; `front`: it faces clients and drains (a mock on its own), rather than
/// being stopped after the relay (the embedded mock).
fn spawn_mock(
    config: &MockConfig,
    stats: Arc<MockStats>,
    to: &Sender<Note>,
    crew: &mut Crew,
    front: bool,
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
        let name = format!("mock-{i}");
        spawn(name, listener, &config.common, |_| mock, to, crew, front)?;
    }
    Ok(addr)
}

/// One running worker.
struct WorkerHandle {
    name: String,
    remote: Remote,
    stats: Arc<WorkerStats>,
    thread: JoinHandle<()>,
    /// It faces clients and drains (see `supervisor`).
    front: bool,
}

fn spawn<H>(
    name: String,
    listener: TcpListener,
    common: &LoopConfig,
    make: impl FnOnce(Remote) -> H,
    to: &Sender<Note>,
    crew: &mut Crew,
    front: bool,
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
    crew.workers.push(WorkerHandle {
        name,
        remote,
        stats,
        thread,
        front,
    });
    Ok(())
}

/// Reports a worker's end on drop, which also happens when its thread unwinds from a panic.
struct ExitReport {
    name: String,
    result: Option<io::Result<()>>,
    to: Sender<Note>,
}

impl Drop for ExitReport {
    fn drop(&mut self) {
        let result = self
            .result
            .take()
            .unwrap_or_else(|| Err(io::Error::other("panicked")));
        // The receiver may be gone if the process is already stopping; nothing to do then.
        let _ = self
            .to
            .send(Note::Exit(std::mem::take(&mut self.name), result));
    }
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

/// Running workers.
pub struct Running {
    addr: SocketAddr,
    mock_addr: Option<SocketAddr>,
    mock_stats: Option<Arc<MockStats>>,
    relay_stats: Option<Arc<RelayStats>>,
    registry: Option<Arc<Registry>>,
    /// The relay's upstreams, for their admission and breaker figures.
    upstreams: Vec<Arc<UpstreamTarget>>,
    workers: Vec<WorkerHandle>,
    drainer: Drainer,
    /// The configured drain (`--drain-grace`, `--drain-timeout`), for the binary's signal thread.
    plan: DrainPlan,
    supervisor: JoinHandle<Result<Drained, String>>,
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

    /// The relay's metrics exposition now, as `GET /metrics` gives it (none for a mock on its own).
    pub fn metrics(&self) -> Option<String> {
        self.registry.as_ref().map(|r| r.render())
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

    /// Starts a graceful drain and returns at once (see [`Drainer::drain`]); [`Running::wait`] returns
    /// when it is over. The binary's signal thread does the same through [`Running::drainer`].
    pub fn drain(&self, plan: DrainPlan) {
        self.drainer.drain(plan);
    }

    /// A handle that starts the drain from another thread.
    pub fn drainer(&self) -> Drainer {
        self.drainer.clone()
    }

    /// The drain the configuration asks for (`--drain-grace`, `--drain-timeout`).
    pub fn drain_plan(&self) -> DrainPlan {
        self.plan
    }

    /// Waits until the server is done. `Ok` after a drain, with what it did. `Err` when a worker stopped
    /// on its own: only a fatal error (or a bug that panicked it) does that, and running on with fewer
    /// workers would hide it, so the caller should exit.
    pub fn wait(self) -> Result<Drained, String> {
        self.supervisor
            .join()
            .unwrap_or_else(|_| Err("the supervisor thread panicked".into()))
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
