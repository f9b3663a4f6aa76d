//! Every option, its default and its environment variable, and how they combine into a plan.
//!
//! The command line is parsed by `clap`; [`ServeArgs::plan`] then decides where generations go, in this
//! order: `--upstream` if given; otherwise the provider's public API if its key is set (`GEMINI_API_KEY`,
//! `OPENAI_API_KEY`); otherwise the built-in mock upstream, started inside the same process, so that
//! `cargo run --release` works on a machine with no key and no network.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::http::request::Limits;
use crate::mock::script::MockFormat;
use crate::reactor::Settings;
use crate::relay::providers::{Origin, Provider, ProviderKey, parse_upstream_url};

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
}

/// Provider names on the command line.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderArg {
    Openai,
    Gemini,
}

impl From<ProviderArg> for Provider {
    fn from(p: ProviderArg) -> Self {
        match p {
            ProviderArg::Openai => Provider::OpenAi,
            ProviderArg::Gemini => Provider::Gemini,
        }
    }
}

impl From<ProviderArg> for MockFormat {
    fn from(p: ProviderArg) -> Self {
        match p {
            ProviderArg::Openai => MockFormat::OpenAi,
            ProviderArg::Gemini => MockFormat::Gemini,
        }
    }
}

/// Options shared by the relay and the mock: limits and loop health.
#[derive(Args, Debug, Clone)]
pub struct CommonArgs {
    /// Soft limit for open file descriptors [default: the hard limit].
    #[arg(long, env = "TOKENPIPE_MAX_FDS")]
    pub max_fds: Option<u64>,
    /// Warn when one loop iteration is busy for longer than this.
    #[arg(
        long,
        env = "TOKENPIPE_LOOP_WARN_MS",
        default_value_t = 10,
        value_name = "MS"
    )]
    pub loop_warn_ms: u64,
    /// Most bytes held per stream that the client has not read yet; the upstream is not read past it.
    #[arg(long, env = "TOKENPIPE_STREAM_BUFFER_BYTES", default_value_t = 64 * 1024, value_name = "BYTES")]
    pub stream_buffer_bytes: usize,
    /// Largest accepted request body (413 above it).
    #[arg(long, env = "TOKENPIPE_MAX_BODY_BYTES", default_value_t = 1024 * 1024, value_name = "BYTES")]
    pub max_body_bytes: usize,
}

/// The longest duration any option accepts (a day). Durations are added to `Instant`s, which panics on
/// overflow, so no option may be unbounded.
pub const MAX_SECS: u64 = 24 * 60 * 60;

/// The number of cores, the relay's default worker count.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl CommonArgs {
    /// Settings for the workers.
    pub fn settings(&self) -> Settings {
        Settings {
            limits: Limits {
                max_body_bytes: self.max_body_bytes,
                ..Limits::default()
            },
            stream_buffer: self.stream_buffer_bytes.max(1),
            loop_warn: Duration::from_millis(self.loop_warn_ms),
        }
    }
}

/// Options of `tokenpipe serve`.
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on; `127.0.0.1:0` picks a free port (the chosen one is printed).
    #[arg(long, env = "TOKENPIPE_LISTEN", default_value = "127.0.0.1:8080")]
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
    /// Request shape and auth of the upstream [default: gemini if GEMINI_API_KEY is set, else openai].
    #[arg(long, env = "TOKENPIPE_PROVIDER", value_enum)]
    pub provider: Option<ProviderArg>,
    /// Model used when a request names none [default: the provider's default model].
    #[arg(long, env = "TOKENPIPE_MODEL")]
    pub model: Option<String>,
    /// Close pooled upstream connections idle for this long.
    #[arg(
        long,
        env = "TOKENPIPE_UPSTREAM_IDLE_TIMEOUT",
        default_value_t = 30,
        value_name = "SECS",
        value_parser = clap::value_parser!(u64).range(1..=MAX_SECS)
    )]
    pub upstream_idle_timeout: u64,
    /// Most idle keep-alive connections each worker keeps to the upstream.
    #[arg(
        long,
        env = "TOKENPIPE_UPSTREAM_MAX_CONNS",
        default_value_t = 64,
        value_name = "N"
    )]
    pub upstream_max_conns: usize,
    /// Tokens per answer of the embedded mock (used when no upstream is configured).
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub mock_tokens: u32,
    /// Pause between tokens of the embedded mock.
    #[arg(long, default_value_t = 50, value_name = "MS", value_parser = clap::value_parser!(u64).range(0..=MAX_SECS * 1000))]
    pub mock_interval_ms: u64,
}

/// Options of `tokenpipe mock-upstream`.
#[derive(Args, Debug, Clone)]
pub struct MockArgs {
    /// Address to listen on; `127.0.0.1:0` picks a free port (the chosen one is printed).
    #[arg(long, default_value = "127.0.0.1:9090")]
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

/// Where the relay sends generations.
#[derive(Debug)]
pub enum UpstreamPlan {
    /// A configured upstream.
    Remote {
        provider: Provider,
        origin: Origin,
        key: Option<ProviderKey>,
    },
    /// No key and no `--upstream`: start the mock in-process and relay to it.
    EmbeddedMock { provider: Provider },
}

impl ServeArgs {
    /// Decides the upstream from the options and the environment (`GEMINI_API_KEY`, `OPENAI_API_KEY`).
    pub fn plan(&self, env: impl Fn(&str) -> Option<String>) -> Result<UpstreamPlan, String> {
        let key_var = |p: Provider| match p {
            Provider::OpenAi => "OPENAI_API_KEY",
            Provider::Gemini => "GEMINI_API_KEY",
        };
        let key_of = |p: Provider| env(key_var(p)).filter(|k| !k.trim().is_empty());
        let provider = match self.provider {
            Some(p) => p.into(),
            None if key_of(Provider::Gemini).is_some() => Provider::Gemini,
            None => Provider::OpenAi,
        };
        let key = key_of(provider)
            .map(|k| ProviderKey::new(k.trim()).map_err(|e| format!("{}: {e}", key_var(provider))))
            .transpose()?;
        let url = match (&self.upstream, &key) {
            (Some(url), _) => url.clone(),
            (None, Some(_)) => match provider {
                Provider::OpenAi => "https://api.openai.com".to_string(),
                Provider::Gemini => "https://generativelanguage.googleapis.com".to_string(),
            },
            (None, None) => return Ok(UpstreamPlan::EmbeddedMock { provider }),
        };
        let origin = parse_upstream_url(&url).map_err(|e| format!("--upstream {url}: {e}"))?;
        Ok(UpstreamPlan::Remote {
            provider,
            origin,
            key,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(args: &[&str]) -> ServeArgs {
        let cli =
            Cli::try_parse_from(std::iter::once("tokenpipe").chain(args.iter().copied())).unwrap();
        match cli.command {
            Some(Command::Serve(s)) => s,
            None => cli.serve,
            Some(other) => panic!("not serve: {other:?}"),
        }
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn no_key_and_no_upstream_means_the_embedded_mock() {
        let plan = serve(&[]).plan(no_env).unwrap();
        assert!(matches!(
            plan,
            UpstreamPlan::EmbeddedMock {
                provider: Provider::OpenAi
            }
        ));
        assert_eq!(serve(&[]).listen.to_string(), "127.0.0.1:8080");
    }

    #[test]
    fn serve_is_the_default_subcommand() {
        let a = serve(&["--listen", "127.0.0.1:0", "--workers", "1"]);
        let b = serve(&["serve", "--listen", "127.0.0.1:0", "--workers", "1"]);
        assert_eq!(a.listen, b.listen);
        assert_eq!(a.workers, Some(1));
        assert!(Cli::try_parse_from(["tokenpipe", "--workers", "0"]).is_err());
    }

    #[test]
    fn a_gemini_key_picks_gemini_and_its_https_api_is_refused_for_now() {
        let env = |k: &str| (k == "GEMINI_API_KEY").then(|| "k".to_string());
        let err = serve(&[]).plan(env).unwrap_err();
        assert!(err.contains("https"), "{err}");
    }

    #[test]
    fn explicit_upstream_with_key() {
        let env = |k: &str| (k == "OPENAI_API_KEY").then(|| "sk-test".to_string());
        let plan = serve(&["--upstream", "http://127.0.0.1:9000/base"])
            .plan(env)
            .unwrap();
        let UpstreamPlan::Remote {
            provider,
            origin,
            key,
        } = plan
        else {
            panic!("not remote");
        };
        assert_eq!(provider, Provider::OpenAi);
        assert_eq!(origin.port, 9000);
        assert_eq!(key.unwrap().expose(), "sk-test");
    }

    #[test]
    fn durations_are_bounded() {
        assert!(
            Cli::try_parse_from([
                "tokenpipe",
                "--upstream-idle-timeout",
                "18446744073709551615"
            ])
            .is_err()
        );
        assert!(Cli::try_parse_from(["tokenpipe", "--upstream-idle-timeout", "0"]).is_err());
        assert!(
            Cli::try_parse_from([
                "tokenpipe",
                "mock-upstream",
                "--interval-ms",
                "999999999999"
            ])
            .is_err()
        );
    }

    #[test]
    fn mock_upstream_options() {
        let cli = Cli::try_parse_from([
            "tokenpipe",
            "mock-upstream",
            "--listen",
            "127.0.0.1:0",
            "--tokens",
            "5",
            "--interval-ms",
            "0",
            "--format",
            "gemini",
        ])
        .unwrap();
        let Some(Command::MockUpstream(m)) = cli.command else {
            panic!("not mock-upstream");
        };
        assert_eq!(
            (m.tokens, m.interval_ms, m.format),
            (5, 0, ProviderArg::Gemini)
        );
    }
}
