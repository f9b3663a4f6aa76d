//! Every option, its default and its environment variable, and the [`Config`] they make.
//!
//! The command line is parsed by `clap` into [`ServeArgs`] / [`MockArgs`]; [`ServeArgs::config`] then checks
//! what clap cannot (values that could never serve a request) and decides where generations go, in this
//! order: `--upstream` if given; otherwise the provider's public HTTPS API if its key is set
//! (`GEMINI_API_KEY`, `OPENAI_API_KEY`); otherwise the built-in mock upstream, started inside the same process, so that
//! `cargo run --release` works on a machine with no key and no network. The result, a [`Config`], is what
//! `tokenpipe::Server::start` takes: tests and benchmarks build one directly ([`resolved`]).
//!
//! With `--config FILE` (or `TOKENPIPE_CONFIG`), the upstreams and routes are the file's ([`mod@file`]), and
//! **precedence** is: for every other option, a value given on the command line or in the option's
//! environment variable wins over the file, and the file wins over the option's default. Which values were
//! given is what clap's `ArgMatches::value_source` says; [`Cli::parse_sourced`] records it in
//! [`ServeArgs::given`]. The upstream options (`--upstream`, `--provider`, `--model`, `--upstream-ca`) are
//! refused next to `--config`, and the `*_API_KEY` variables are read only where the file's `key_env`
//! names them. `tokenpipe check-config FILE` reads a file as `serve` would and reports every problem.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use crate::http::request::Limits;
use crate::mock::script::MockFormat;
use crate::relay::providers::{self, Provider, ProviderKey, parse_upstream_url};

pub mod duration;
pub mod file;
pub mod precedence;
pub mod resolved;

pub use duration::parse_duration;
pub use precedence::Given;
pub use resolved::{
    Config, DrainPlan, FdLimit, LoopConfig, MockConfig, RouteSpec, UpstreamConfig, UpstreamSpec,
};

/// Relays streamed LLM responses (SSE over chunked HTTP/1.1) on a hand-written mio event loop.
#[derive(Parser, Debug)]
#[command(name = "tokenpipe", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Options of `serve`, which is what runs when no subcommand is given.
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the relay (the default).
    Serve(ServeArgs),
    /// Run the built-in mock LLM upstream on its own.
    MockUpstream(MockArgs),
    /// Check a --config file: every error, with its line.
    ///
    /// Reads the file as `serve` would, environment included (each key_env must be set). Prints
    /// `FILE: ok (N upstreams, M routes)` and exits with status 0, or prints every error as
    /// `FILE:LINE: message` on stderr and exits with status 1.
    CheckConfig(CheckArgs),
}

/// Options of `tokenpipe check-config`.
#[derive(Args, Debug, Clone)]
pub struct CheckArgs {
    /// The TOML file to check.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

impl CheckArgs {
    /// The report on the file, `Ok` if it is valid, with `env` as the environment.
    pub fn run(&self, env: impl Fn(&str) -> Option<String>) -> Result<String, String> {
        file::check(&self.file, &env)
    }
}

impl Cli {
    /// [`Cli::parse`] (exiting on `--help` or an error), and which serve options were given
    /// ([`ServeArgs::given`]), for `--config`'s precedence.
    pub fn parse_sourced() -> Cli {
        let matches = Cli::command().get_matches();
        Cli::from_matches(&matches).unwrap_or_else(|e| e.exit())
    }

    /// [`Cli::try_parse_from`], and which serve options were given.
    pub fn try_parse_sourced<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Cli::from_matches(&Cli::command().try_get_matches_from(args)?)
    }

    fn from_matches(matches: &ArgMatches) -> Result<Cli, clap::Error> {
        let mut cli = Cli::from_arg_matches(matches)?;
        cli.serve.given = Given::of(matches);
        if let (Some(Command::Serve(args)), Some(sub)) =
            (&mut cli.command, matches.subcommand_matches("serve"))
        {
            args.given = Given::of(sub);
        }
        Ok(cli)
    }
}

/// Provider names on the command line.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderArg {
    Openai,
    Gemini,
    Anthropic,
}

impl From<ProviderArg> for Provider {
    fn from(p: ProviderArg) -> Self {
        match p {
            ProviderArg::Openai => Provider::OpenAi,
            ProviderArg::Gemini => Provider::Gemini,
            ProviderArg::Anthropic => Provider::Anthropic,
        }
    }
}

impl From<ProviderArg> for MockFormat {
    fn from(p: ProviderArg) -> Self {
        match p {
            ProviderArg::Gemini => MockFormat::Gemini,
            // Anthropic's own path (`/v1/messages`) is answered in its shape whatever the format says.
            ProviderArg::Openai | ProviderArg::Anthropic => MockFormat::OpenAi,
        }
    }
}

/// The longest duration any option accepts (a day). Durations are added to `Instant`s, which panics on
/// overflow, so no option may be unbounded.
pub const MAX_SECS: u64 = 24 * 60 * 60;

/// The number of cores, the relay's default worker count.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Parses `--listen`: `HOST:PORT` (`127.0.0.1:8080`, `[::1]:8080`, `localhost:8080`) or a bare `PORT`
/// (on 127.0.0.1). A host name is resolved once, here; its first IPv4 address is preferred.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let expected =
        "expected HOST:PORT (e.g. 127.0.0.1:8080, localhost:8080, [::1]:8080) or a bare PORT";
    let s = s.trim();
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        let port: u16 = s
            .parse()
            .map_err(|_| format!("port {s} is out of range (0-65535)"))?;
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!("{s:?}: {expected}"));
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{s:?}: port {port:?} is not a number from 0 to 65535"))?;
    if host.is_empty() {
        return Err(format!("{s:?}: {expected}"));
    }
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("{s:?}: cannot resolve {host:?}: {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("{s:?}: {host:?} has no address"))
}

/// Options shared by the relay and the mock: limits and loop health.
#[derive(Args, Debug, Clone)]
pub struct CommonArgs {
    /// Soft limit for open file descriptors [default: the hard limit].
    #[arg(long, env = "TOKENPIPE_MAX_FDS", value_name = "N")]
    pub max_fds: Option<u64>,
    /// Pending connections the kernel may queue per listener [default: the kernel's maximum, somaxconn].
    #[arg(long, env = "TOKENPIPE_BACKLOG", value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub backlog: Option<u32>,
    /// Warn when one loop iteration is busy for longer than this.
    #[arg(long, env = "TOKENPIPE_LOOP_WARN_MS", default_value_t = 10, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(0..=MAX_SECS * 1000))]
    pub loop_warn_ms: u64,
    /// Most bytes held per stream that the client has not read yet; the upstream is not read past it.
    #[arg(long, env = "TOKENPIPE_STREAM_BUFFER_BYTES", default_value_t = 64 * 1024, value_name = "BYTES",
          value_parser = clap::value_parser!(u64).range(1..=1 << 30))]
    pub stream_buffer_bytes: u64,
    /// Largest accepted request body (413 above it).
    #[arg(long, env = "TOKENPIPE_MAX_BODY_BYTES", default_value_t = 1024 * 1024, value_name = "BYTES",
          value_parser = clap::value_parser!(u64).range(1..=1 << 30))]
    pub max_body_bytes: u64,
    /// Serve HTTPS: the listener's certificate chain (PEM); needs --tls-key.
    #[arg(
        long,
        env = "TOKENPIPE_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// Serve HTTPS: the private key (PEM) of --tls-cert.
    #[arg(
        long,
        env = "TOKENPIPE_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// On SIGTERM or SIGINT, how long streams in flight may take to finish, from the signal to the exit
    /// (--drain-grace included); whatever is left then is cut, and the process exits with status 0. A
    /// second signal exits at once (status 128 + the signal: 143 for SIGTERM, 130 for SIGINT).
    /// 500ms, 30s, 2m, 1h, or a bare number of seconds.
    #[arg(long, env = "TOKENPIPE_DRAIN_TIMEOUT", default_value = "30s", value_name = "DURATION",
          value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// On SIGTERM or SIGINT, how long to keep accepting, with GET /readyz answering 503 and every answer
    /// saying Connection: close, before the listener closes: the time a load balancer needs to see the
    /// 503 and stop sending (its probe interval times its failure threshold). 0: close at once.
    #[arg(long, env = "TOKENPIPE_DRAIN_GRACE", default_value = "0s", value_name = "DURATION",
          value_parser = parse_duration)]
    pub drain_grace: Duration,
}

impl CommonArgs {
    fn loop_settings(&self) -> LoopConfig {
        LoopConfig {
            fd_limit: FdLimit::Raise(self.max_fds),
            backlog: self.backlog,
            loop_warn: Duration::from_millis(self.loop_warn_ms),
            limits: Limits {
                max_body_bytes: usize::try_from(self.max_body_bytes).unwrap_or(usize::MAX),
                ..Limits::default()
            },
            stream_buffer: usize::try_from(self.stream_buffer_bytes).unwrap_or(usize::MAX),
            tls: self.tls_cert.clone().zip(self.tls_key.clone()),
            drain: DrainPlan {
                grace: self.drain_grace,
                timeout: self.drain_timeout,
            },
        }
    }

    /// A grace as long as the whole drain would leave no time for the streams to finish.
    fn check_drain(&self) -> Result<(), String> {
        if !self.drain_grace.is_zero() && self.drain_grace >= self.drain_timeout {
            return Err(format!(
                "--drain-grace ({:?}) must be shorter than --drain-timeout ({:?}), which it is part of",
                self.drain_grace, self.drain_timeout
            ));
        }
        Ok(())
    }
}

/// Options of `tokenpipe serve`.
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on: HOST:PORT, or a bare PORT on 127.0.0.1; port 0 picks a free one (printed).
    #[arg(long, env = "TOKENPIPE_LISTEN", default_value = "127.0.0.1:8080", value_parser = parse_listen)]
    pub listen: SocketAddr,
    /// Worker threads, each with its own event loop and SO_REUSEPORT listener [default: number of cores].
    #[arg(long, env = "TOKENPIPE_WORKERS", value_parser = clap::value_parser!(u16).range(1..))]
    pub workers: Option<u16>,
    #[command(flatten)]
    pub common: CommonArgs,
    /// Upstream base URL (http:// only for now), e.g. http://127.0.0.1:9000 [default: the provider's API
    /// when its key is set, else the built-in mock].
    #[arg(long, env = "TOKENPIPE_UPSTREAM", value_name = "URL")]
    pub upstream: Option<String>,
    /// Request shape and auth of the upstream [default: gemini if GEMINI_API_KEY is set, else anthropic if
    /// only ANTHROPIC_API_KEY is, else openai].
    #[arg(long, env = "TOKENPIPE_PROVIDER", value_enum)]
    pub provider: Option<ProviderArg>,
    /// Model used when a request names none [default: the provider's default model].
    #[arg(long, env = "TOKENPIPE_MODEL")]
    pub model: Option<String>,
    /// How long a resolved upstream name is used before it is looked up again (failures: 5 s).
    #[arg(long, env = "TOKENPIPE_DNS_TTL", default_value_t = 60, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..=MAX_SECS))]
    pub dns_ttl: u64,
    /// Extra CA certificates (PEM) an https:// upstream's certificate may chain to, besides the
    /// built-in Mozilla roots: for a self-hosted model server with a private CA.
    #[arg(long, env = "TOKENPIPE_UPSTREAM_CA", value_name = "FILE")]
    pub upstream_ca: Option<PathBuf>,
    /// Close pooled upstream connections idle for this long.
    #[arg(long, env = "TOKENPIPE_UPSTREAM_IDLE_TIMEOUT", default_value_t = 30, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..=MAX_SECS))]
    pub upstream_idle_timeout: u64,
    /// Most idle keep-alive connections each worker keeps to the upstream (0: none).
    #[arg(
        long,
        env = "TOKENPIPE_UPSTREAM_MAX_CONNS",
        default_value_t = 64,
        value_name = "N"
    )]
    pub upstream_max_conns: usize,
    /// Most client connections served at once, for the whole process (each worker takes its share,
    /// rounded up); past it a new client gets a fast 503 (overloaded, Retry-After: 1) instead of taking
    /// descriptors from the streams in flight [default: derived from the descriptor limit; see
    /// docs/12-drain-and-the-fd-budget.md].
    #[arg(long, env = "TOKENPIPE_MAX_CLIENTS", value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_clients: Option<u64>,
    /// Tokens per answer of the embedded mock (used when no upstream is configured).
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub mock_tokens: u32,
    /// Pause between tokens of the embedded mock.
    #[arg(long, default_value_t = 50, value_name = "MS", value_parser = clap::value_parser!(u64).range(0..=MAX_SECS * 1000))]
    pub mock_interval_ms: u64,
    /// A TOML file of named upstreams and the routes between them (see examples/tokenpipe.toml).
    /// Precedence: an option given on the command line or in its environment variable wins over the
    /// file's global settings (listen, workers, ...), and the file wins over the defaults.
    ///
    /// The file describes the upstreams: --upstream, --provider, --model and --upstream-ca are refused
    /// with it, and API keys are read only from the variables its key_env entries name. Check a file with
    /// `tokenpipe check-config FILE`.
    #[arg(long, env = "TOKENPIPE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Which options were given rather than defaulted (filled by [`Cli::parse_sourced`]).
    #[arg(skip)]
    pub given: Given,
}

/// Options of `tokenpipe mock-upstream`.
#[derive(Args, Debug, Clone)]
pub struct MockArgs {
    /// Address to listen on: HOST:PORT, or a bare PORT on 127.0.0.1; port 0 picks a free one (printed).
    #[arg(long, default_value = "127.0.0.1:9090", value_parser = parse_listen)]
    pub listen: SocketAddr,
    /// Worker threads.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub workers: u16,
    #[command(flatten)]
    pub common: CommonArgs,
    /// Tokens per answer (a request's max_tokens / maxOutputTokens may ask for fewer).
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub tokens: u32,
    /// Pause between events; 0 sends as fast as the client reads.
    #[arg(long, default_value_t = 50, value_name = "MS", value_parser = clap::value_parser!(u64).range(0..=MAX_SECS * 1000))]
    pub interval_ms: u64,
    /// Which provider's stream shape to imitate.
    #[arg(long, value_enum, default_value = "openai")]
    pub format: ProviderArg,
}

impl MockArgs {
    /// The mock's configuration.
    pub fn config(&self) -> MockConfig {
        MockConfig {
            listen: self.listen,
            workers: usize::from(self.workers),
            format: self.format.into(),
            tokens: self.tokens,
            interval: Duration::from_millis(self.interval_ms),
            common: self.common.loop_settings(),
        }
    }
}

impl ServeArgs {
    /// Checks the options and decides the upstream, with `env` as the environment (`GEMINI_API_KEY`,
    /// `OPENAI_API_KEY`, or with `--config` the variables the file's `key_env` entries name).
    pub fn config(&self, env: impl Fn(&str) -> Option<String>) -> Result<Config, String> {
        self.common.check_drain()?;
        match &self.config {
            Some(path) => precedence::with_file(self, path, &env),
            None => Ok(self.finish(self.upstream_from_options(&env)?)),
        }
    }

    /// The [`Config`] of these options with `upstream`.
    fn finish(&self, upstream: UpstreamConfig) -> Config {
        Config {
            listen: self.listen,
            workers: self.workers.map_or_else(cores, usize::from),
            upstream,
            pool_max_idle: self.upstream_max_conns,
            idle_timeout: Duration::from_secs(self.upstream_idle_timeout),
            dns_ttl: Duration::from_secs(self.dns_ttl),
            max_clients: self.max_clients,
            common: self.common.loop_settings(),
        }
    }

    /// The upstream the options and the provider keys in the environment make: `--upstream`, else the
    /// provider's API if its key is set, else the embedded mock.
    fn upstream_from_options(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<UpstreamConfig, String> {
        // The model goes into the upstream's request path: refuse a bad one now rather than fail every request.
        if let Some(model) = &self.model {
            providers::validate_model(model).map_err(|e| format!("--model {model:?}: {e}"))?;
        }
        let key_var = Provider::key_var;
        let key_of = |p: Provider| env(key_var(p)).filter(|k| !k.trim().is_empty());
        let provider = match self.provider {
            Some(p) => p.into(),
            None if key_of(Provider::Gemini).is_some() => Provider::Gemini,
            None if key_of(Provider::Anthropic).is_some() && key_of(Provider::OpenAi).is_none() => {
                Provider::Anthropic
            }
            None => Provider::OpenAi,
        };
        let key = key_of(provider)
            .map(|k| ProviderKey::new(k.trim()).map_err(|e| format!("{}: {e}", key_var(provider))))
            .transpose()?;
        let model = self
            .model
            .clone()
            .unwrap_or_else(|| provider.default_model().to_string());
        let url = match (&self.upstream, &key) {
            (Some(url), _) => Some(url.as_str()),
            (None, Some(_)) => Some(provider.public_api()),
            (None, None) => None,
        };
        let upstream = match url {
            Some(url) => {
                let origin = parse_upstream_url(url).map_err(|e| match self.upstream {
                    Some(_) => format!("--upstream {url}: {e}"),
                    None => e,
                })?;
                let mut spec = UpstreamSpec::new("default", provider, origin);
                (spec.key, spec.ca, spec.model) = (key, self.upstream_ca.clone(), model);
                UpstreamConfig::Remote {
                    upstreams: vec![spec],
                    routes: Vec::new(),
                    generate: None,
                }
            }
            None => UpstreamConfig::EmbeddedMock {
                provider,
                model,
                tokens: self.mock_tokens,
                interval: Duration::from_millis(self.mock_interval_ms),
            },
        };
        Ok(upstream)
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
#[path = "config/tests_cli_file.rs"]
mod tests_cli_file;
