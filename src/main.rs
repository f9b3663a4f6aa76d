//! The `tokenpipe` binary: command line -> plan -> workers. Everything else lives in the library.

use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;

use tokenpipe::config::{self, Cli, Command, CommonArgs, MockArgs, ServeArgs, UpstreamPlan};
use tokenpipe::mock::script::MockFormat;
use tokenpipe::mock::{MockService, MockStats};
use tokenpipe::reactor::{Service, fdlimit};
use tokenpipe::relay::RelayService;
use tokenpipe::relay::pool::Pool;
use tokenpipe::relay::providers::{self, Origin, Provider};
use tokenpipe::server::{self, Started};

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::MockUpstream(args)) => run_mock(args),
        Some(Command::Serve(args)) => run_relay(args),
        None => run_relay(cli.serve),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tokenpipe: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_mock(args: MockArgs) -> Result<(), String> {
    raise_fd_limit(&args.common);
    let started = start_mock(
        args.listen,
        &args.common,
        args.workers.into(),
        args.format.into(),
        args.tokens,
        args.interval_ms,
    )?;
    announce(started.addr);
    started.wait().map_err(|e| e.to_string())
}

fn run_relay(args: ServeArgs) -> Result<(), String> {
    // The model goes into the upstream's request path: refuse a bad one now rather than fail every request.
    if let Some(model) = &args.model {
        providers::validate_model(model).map_err(|e| format!("--model {model:?}: {e}"))?;
    }
    raise_fd_limit(&args.common);
    let (provider, origin, key) = match args.plan(|k| std::env::var(k).ok())? {
        UpstreamPlan::Remote {
            provider,
            origin,
            key,
        } => (provider, origin, key),
        UpstreamPlan::EmbeddedMock { provider } => {
            let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
            let format = match provider {
                Provider::OpenAi => MockFormat::OpenAi,
                Provider::Gemini => MockFormat::Gemini,
            };
            let mock = start_mock(
                loopback,
                &args.common,
                1,
                format,
                args.mock_tokens,
                args.mock_interval_ms,
            )?;
            let origin = Origin {
                host: "127.0.0.1".into(),
                port: mock.addr.port(),
                base_path: String::new(),
            };
            println!(
                "no API key and no --upstream configured: relaying to the built-in mock upstream at http://{}",
                mock.addr
            );
            // Same rule as for the relay's own workers: if the mock stops, every stream would fail, so
            // the process stops too rather than answer 502 for ever.
            std::thread::spawn(move || {
                let why = mock.wait();
                eprintln!("tokenpipe: the embedded mock upstream stopped: {why:?}");
                std::process::exit(1);
            });
            (provider, origin, None)
        }
    };
    // Resolved once, at start; DNS on a helper thread comes with HTTPS upstreams.
    let addr = (origin.host.as_str(), origin.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve upstream host {}: {e}", origin.host))?
        .next()
        .ok_or_else(|| format!("upstream host {} has no address", origin.host))?;
    let key = key.map(Arc::new);
    let model = args
        .model
        .clone()
        .unwrap_or_else(|| provider.default_model().to_string());
    log::info!(
        "relaying to {provider:?} upstream at http://{}{} ({addr})",
        origin.host_header(),
        origin.base_path
    );
    let started = server::start(
        "relay",
        args.listen,
        args.workers.map_or_else(config::cores, usize::from),
        args.common.settings(),
        |_| {
            Service::Relay(RelayService {
                provider,
                origin: origin.clone(),
                addr,
                key: key.clone(),
                default_model: model.clone(),
                pool: Pool::new(args.upstream_max_conns),
                idle_timeout: Duration::from_secs(args.upstream_idle_timeout),
            })
        },
    )
    .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    announce(started.addr);
    started.wait().map_err(|e| e.to_string())
}

fn start_mock(
    listen: SocketAddr,
    common: &CommonArgs,
    workers: usize,
    format: MockFormat,
    tokens: u32,
    interval_ms: u64,
) -> Result<Started, String> {
    let stats = Arc::new(MockStats::default());
    server::start("mock", listen, workers, common.settings(), |_| {
        Service::Mock(MockService {
            format,
            tokens,
            interval: Duration::from_millis(interval_ms),
            stats: stats.clone(),
        })
    })
    .map_err(|e| format!("mock upstream cannot listen on {listen}: {e}"))
}

fn raise_fd_limit(common: &CommonArgs) {
    if let Err(e) = fdlimit::raise(common.max_fds) {
        log::warn!("could not raise the file descriptor limit: {e}");
    }
}

/// The line scripts and tests wait for: the listener is bound and connections will be accepted.
fn announce(addr: SocketAddr) {
    let mut out = std::io::stdout().lock();
    // Nothing useful can be done if stdout is gone; the server runs on.
    let _ = writeln!(out, "listening on http://{addr}");
    let _ = out.flush();
}
