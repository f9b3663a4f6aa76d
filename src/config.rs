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

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use crate::http::request::Limits;
use crate::mock::script::MockFormat;
use crate::relay::auth::{self, ClientKey, ClientKeys};
use crate::relay::providers::{self, Provider, ProviderKey, parse_upstream_url};

mod common;
pub mod duration;
pub use common::CommonArgs;
mod listen;
pub use listen::parse_listen;
pub mod file;
pub mod loadgen;
pub mod observe;
pub mod precedence;
pub mod resilience;
pub mod resolved;
pub mod timeouts;

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

// One value per process, made at start: a boxed variant would only add noise for clap.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the relay (the default).
    Serve(Box<ServeArgs>),
    /// Run the built-in mock LLM upstream on its own.
    ///
    /// It answers the providers' own paths (OpenAI, Gemini, Anthropic), streamed or whole, with
    /// deterministic tokens. Any request may ask it to fail, for tests, with a spec in a header field
    /// `x-mock-fault: SPEC`, a query parameter `mock_fault=SPEC`, or `[fault: SPEC]` in the prompt. SPEC is
    /// KEY=VALUE items separated by commas: status=503, retry-after=1, head-delay=500ms,
    /// first-token-delay=2s, stall-after=3, reset-after=3 (or =request), bad-chunk-after=3,
    /// error-after=3, close-idle=1s, and times=N,key=NAME to fail only the first N requests of a key.
    /// A malformed spec gets a 400 that names the problem. See docs/04-the-mock-upstream.md.
    MockUpstream(MockArgs),
    /// Check a --config file: every error, with its line.
    ///
    /// Reads the file as `serve` would, environment included (each key_env must be set). Prints
    /// `FILE: ok (N upstreams, M routes)` and exits with status 0, or prints every error as
    /// `FILE:LINE: message` on stderr and exits with status 1.
    CheckConfig(CheckArgs),
    /// Load a streaming HTTP endpoint and report what it did: time to first byte, to first event and to
    /// completion, gaps between events, streams sustained, failures by reason.
    ///
    /// A closed loop (--streams N in flight) or an open loop (--rate R starts per second, latency from
    /// when each was due), bounded by --total and --duration; each stream by --timeout. On the relay's
    /// own event loop and upstream client. --json prints one JSON object (see the README). See
    /// docs/15-a-load-generator-on-the-same-reactor.md.
    Loadgen(loadgen::LoadgenArgs),
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
    #[command(flatten)]
    pub timeouts: timeouts::UpstreamTimeoutArgs,
    #[command(flatten)]
    pub resilience: resilience::ResilienceArgs,
    #[command(flatten)]
    pub observe: observe::ObserveArgs,
    /// Upstream base URL, http:// or https://, e.g. http://127.0.0.1:9000 [default: the provider's API
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
    /// A key clients must present to be served (repeatable; the variable takes a comma-separated list):
    /// `Authorization: Bearer KEY`, or where the provider's SDK puts its key. At least 16 visible ASCII
    /// characters, e.g. from `openssl rand -hex 32`. A command line is visible to other users of the
    /// machine (`ps`): prefer the variable or --client-keys-file.
    #[arg(long = "client-key", env = "TOKENPIPE_CLIENT_KEYS", value_name = "KEY",
          value_delimiter = ',', value_parser = Secret::parse, hide_env_values = true)]
    pub client_key: Vec<Secret>,
    /// A file of client keys: one per line, `KEY` or `NAME KEY` (the name shows in logs instead of the
    /// key); blank lines and lines starting with # are ignored. Used with --client-key, the keys of both.
    #[arg(long, env = "TOKENPIPE_CLIENT_KEYS_FILE", value_name = "FILE")]
    pub client_keys_file: Option<PathBuf>,
    /// Serve clients without keys on a non-loopback address, which is refused otherwise: for a relay
    /// behind a front end that authenticates clients itself.
    #[arg(long, env = "TOKENPIPE_ALLOW_UNAUTHENTICATED", action = clap::ArgAction::SetTrue,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_unauthenticated: bool,
    /// Which options were given rather than defaulted (filled by [`Cli::parse_sourced`]).
    #[arg(skip)]
    pub given: Given,
}

/// A secret from the command line or the environment, as clap hands it over. It never prints itself (the
/// options derive `Debug`); it is checked later, by [`ClientKey::new`], whose errors never repeat it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Always accepted here: clap would print a refused value in its error.
    fn parse(s: &str) -> Result<Secret, String> {
        Ok(Secret(s.trim().to_string()))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
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
        match &self.config {
            Some(path) => precedence::with_file(self, path, &env),
            None => self.finish(self.upstream_from_options(&env)?),
        }
    }

    /// The [`Config`] of these options with `upstream`.
    fn finish(&self, upstream: UpstreamConfig) -> Result<Config, String> {
        // Here, after a config file's settings are in: the grace and the timeout may come from either.
        self.common.check_drain()?;
        Ok(Config {
            listen: self.listen,
            workers: self.workers.map_or_else(cores, usize::from),
            upstream,
            pool_max_idle: self.upstream_max_conns,
            idle_timeout: Duration::from_secs(self.upstream_idle_timeout),
            dns_ttl: Duration::from_secs(self.dns_ttl),
            timeouts: self.timeouts.timeouts(),
            admission: self.resilience.admission(),
            retry: self.resilience.retry(),
            breaker: self.resilience.breaker(),
            rate_limit: self.resilience.rate_limit(),
            max_clients: self.max_clients,
            common: self.common.loop_settings(),
            client_keys: self.client_keys()?,
            allow_unauthenticated: self.allow_unauthenticated,
            observe: self.observe.observe(),
        })
    }

    /// The keys of `--client-key` (in order), then those of `--client-keys-file`. A bad key is named by its
    /// position, never shown.
    fn client_keys(&self) -> Result<Vec<ClientKey>, String> {
        let mut keys = Vec::new();
        for (i, Secret(key)) in self.client_key.iter().enumerate() {
            let key = ClientKey::new(None, key).map_err(|e| {
                format!("--client-key (TOKENPIPE_CLIENT_KEYS) number {}: {e}", i + 1)
            })?;
            keys.push(key);
        }
        if let Some(path) = &self.client_keys_file {
            keys.extend(auth::read_key_file(path)?);
        }
        // A key or a name twice is refused now, rather than when the server starts.
        ClientKeys::new(&keys)?;
        Ok(keys)
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

#[cfg(test)]
#[path = "config/tests_client_keys.rs"]
mod tests_client_keys;
