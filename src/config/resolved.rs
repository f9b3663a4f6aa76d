//! What the options make: the [`Config`] that `tokenpipe::Server::start` takes, and its parts. Built from
//! the command line and the environment by `ServeArgs::config` (with a `--config` file, by
//! [`super::file`] too), or directly by tests and benchmarks.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::conn::client::ClientTimeouts;
use crate::http::request::Limits;
use crate::mock::script::MockFormat;
use crate::relay::admission::AdmissionLimits;
use crate::relay::auth::ClientKey;
use crate::relay::deadlines::UpstreamTimeouts;
use crate::relay::health::BreakerPolicy;
use crate::relay::providers::{Origin, Provider, ProviderKey};
use crate::relay::ratelimit::RateLimit;
use crate::relay::retry::RetryPolicy;

/// What a server does with the process's descriptor limit at start (a process-wide setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FdLimit {
    /// Set the soft `RLIMIT_NOFILE` to this (`None`: the hard limit) and grow the descriptor table to it.
    Raise(Option<u64>),
    /// Leave the process as it is (a test or a program that embeds a server and owns its limits).
    Keep,
}

/// How a server drains on SIGTERM or SIGINT (`Running::drain`): for `grace` it keeps accepting while
/// `/readyz` answers 503, then its listeners close; at `timeout` after the start, what is left is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainPlan {
    pub grace: Duration,
    pub timeout: Duration,
}

impl Default for DrainPlan {
    fn default() -> Self {
        DrainPlan {
            grace: Duration::ZERO,
            timeout: Duration::from_secs(30),
        }
    }
}

/// What every server needs, relay or mock: its listener, its loop, its limits.
#[derive(Debug, Clone)]
pub struct LoopConfig {
    pub fd_limit: FdLimit,
    /// Listen backlog (`None`: the kernel's maximum, `somaxconn`).
    pub backlog: Option<u32>,
    /// An iteration busier than this is logged.
    pub loop_warn: Duration,
    /// Request limits (head size, body size, header count).
    pub limits: Limits,
    /// Most bytes held for one stream that its client has not taken yet.
    pub stream_buffer: usize,
    /// Serve HTTPS with this certificate chain and key (PEM files).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// How long a client may take at each step.
    pub client: ClientTimeouts,
    /// How to drain (`--drain-grace`, `--drain-timeout`).
    pub drain: DrainPlan,
}

impl Default for LoopConfig {
    fn default() -> Self {
        LoopConfig {
            fd_limit: FdLimit::Raise(None),
            backlog: None,
            loop_warn: Duration::from_millis(10),
            limits: Limits::default(),
            stream_buffer: 64 * 1024,
            tls: None,
            client: ClientTimeouts::default(),
            drain: DrainPlan::default(),
        }
    }
}

/// The built-in mock: what it says and how fast.
#[derive(Debug, Clone)]
pub struct MockConfig {
    pub listen: SocketAddr,
    pub workers: usize,
    pub format: MockFormat,
    /// Tokens per answer, unless a request asks for fewer.
    pub tokens: u32,
    /// Pause between events (zero: as fast as the client reads).
    pub interval: Duration,
    pub common: LoopConfig,
}

/// One upstream the relay sends to.
#[derive(Debug, Clone)]
pub struct UpstreamSpec {
    /// Its name in the configuration file, routes and logs (`default` for the command line's one).
    pub name: String,
    pub provider: Provider,
    pub origin: Origin,
    pub key: Option<ProviderKey>,
    /// Extra CA certificates (PEM) its certificate may chain to, for `https`.
    pub ca: Option<PathBuf>,
    /// The model the simple route asks for when a request names none.
    pub model: String,
    /// How many requests it takes at once (`None`: the global `--upstream-max-concurrent` and friends).
    pub admission: Option<AdmissionLimits>,
    /// The upstream (by name) that takes a request this one failed before its first byte reached the
    /// client.
    pub fallback: Option<String>,
}

impl UpstreamSpec {
    /// An upstream called `name`, with no key, no extra CA and the provider's default model.
    pub fn new(name: &str, provider: Provider, origin: Origin) -> UpstreamSpec {
        UpstreamSpec {
            name: name.to_string(),
            provider,
            origin,
            key: None,
            ca: None,
            model: provider.default_model().to_string(),
            admission: None,
            fallback: None,
        }
    }
}

/// Requests whose path starts with `prefix` go to the upstream called `upstream`, with the prefix
/// removed (so `/local/v1/chat/completions` under `/local` is `/v1/chat/completions` there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    pub prefix: String,
    pub upstream: String,
}

/// Where the relay sends requests.
#[derive(Debug, Clone)]
pub enum UpstreamConfig {
    /// Configured upstreams (at least one), the routes that pick one, and the one that serves
    /// `/api/v1/generate-stream` (`None`: the first).
    Remote {
        upstreams: Vec<UpstreamSpec>,
        routes: Vec<RouteSpec>,
        generate: Option<String>,
    },
    /// No key and no `--upstream`: the mock, started in the same process, in `provider`'s shape.
    EmbeddedMock {
        provider: Provider,
        model: String,
        tokens: u32,
        interval: Duration,
    },
}

/// Everything `tokenpipe::Server::start` needs to run the relay.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub workers: usize,
    pub upstream: UpstreamConfig,
    /// Most idle keep-alive connections per upstream and worker.
    pub pool_max_idle: usize,
    /// How long a pooled connection may idle.
    pub idle_timeout: Duration,
    /// How long a resolved name is used.
    pub dns_ttl: Duration,
    /// How long an upstream may take at each step.
    pub timeouts: UpstreamTimeouts,
    /// How many requests each upstream takes at once, unless its own spec says otherwise.
    pub admission: AdmissionLimits,
    /// How failed requests are tried again.
    pub retry: RetryPolicy,
    /// When an upstream's circuit breaker opens.
    pub breaker: BreakerPolicy,
    /// How fast each client may send requests (`None`: no limit).
    pub rate_limit: Option<RateLimit>,
    /// Most clients served at once by the whole process (`--max-clients`); `None`: as many as the
    /// descriptor limit allows (`server::budget`).
    pub max_clients: Option<u64>,
    pub common: LoopConfig,
    /// The keys clients must present (`relay::auth`); none: every client is served, which only a loopback
    /// listener or `allow_unauthenticated` permits. `ClientKey` prints no secret, so `Debug` stays safe.
    pub client_keys: Vec<ClientKey>,
    /// Listen beyond loopback without client keys (`--allow-unauthenticated`).
    pub allow_unauthenticated: bool,
    /// Metrics, the access log, the stall route.
    pub observe: super::observe::ObserveConfig,
}

impl Config {
    /// A relay on `listen` (one worker) in front of one `provider` upstream at `origin`, with every other
    /// option at its default: the usual start for a test or a benchmark.
    pub fn new(listen: SocketAddr, provider: Provider, origin: Origin) -> Config {
        Config {
            listen,
            workers: 1,
            upstream: UpstreamConfig::Remote {
                upstreams: vec![UpstreamSpec::new("default", provider, origin)],
                routes: Vec::new(),
                generate: None,
            },
            pool_max_idle: 64,
            idle_timeout: Duration::from_secs(30),
            dns_ttl: Duration::from_secs(60),
            timeouts: UpstreamTimeouts::default(),
            admission: AdmissionLimits::default(),
            retry: RetryPolicy::default(),
            breaker: BreakerPolicy::default(),
            rate_limit: None,
            max_clients: None,
            common: LoopConfig::default(),
            client_keys: Vec::new(),
            allow_unauthenticated: false,
            observe: super::observe::ObserveConfig::default(),
        }
    }

    /// The first configured upstream, to adjust (`None` with the embedded mock).
    pub fn first_upstream(&mut self) -> Option<&mut UpstreamSpec> {
        match &mut self.upstream {
            UpstreamConfig::Remote { upstreams, .. } => upstreams.first_mut(),
            UpstreamConfig::EmbeddedMock { .. } => None,
        }
    }
}
