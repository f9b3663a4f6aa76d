//! The `tokenpipe` binary: command line -> configuration -> `Server::start`, then wait; SIGTERM or SIGINT
//! drains (`server::signals`) and the process exits with status 0 once the drain is over. Everything else
//! lives in the library.

use std::io::Write;
use std::process::ExitCode;

use tokenpipe::Server;
use tokenpipe::config::{Cli, Command};
use tokenpipe::server::signals;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse_sourced();
    let started = match cli.command {
        Some(Command::CheckConfig(args)) => {
            // The report is the whole output; a closed pipe leaves nothing else to do.
            return match args.run(|k| std::env::var(k).ok()) {
                Ok(report) => {
                    let _ = writeln!(std::io::stdout(), "{report}");
                    ExitCode::SUCCESS
                }
                Err(report) => {
                    let _ = writeln!(std::io::stderr(), "{report}");
                    ExitCode::FAILURE
                }
            };
        }
        Some(Command::Loadgen(args)) => {
            return match args.plan() {
                Ok(plan) => tokenpipe::loadgen::main(&plan),
                Err(e) => {
                    let _ = writeln!(std::io::stderr(), "tokenpipe loadgen: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Some(Command::MockUpstream(args)) => Server::start_mock(args.config()),
        Some(Command::Serve(args)) => args
            .config(|k| std::env::var(k).ok())
            .and_then(Server::start),
        None => cli
            .serve
            .config(|k| std::env::var(k).ok())
            .and_then(Server::start),
    };
    let result = started.and_then(|running| {
        // Before the `listening on` line: a signal sent once it is printed must find the handlers.
        signals::drain_on_signals(running.drainer(), running.drain_plan())
            .map_err(|e| format!("cannot watch for signals: {e}"))?;
        let mut out = std::io::stdout().lock();
        // Nothing useful can be done if stdout is gone; the server runs on.
        if running.mock_addr() != Some(running.addr()) && let Some(mock) = running.mock_addr() {
            let _ = writeln!(
                out,
                "no API key and no --upstream configured: relaying to the built-in mock upstream at http://{mock}"
            );
        }
        // The line scripts and tests wait for: the listener is bound and connections will be accepted.
        let _ = writeln!(out, "listening on http://{}", running.addr());
        let _ = out.flush();
        drop(out);
        running.wait()
    });
    match result {
        // Drained: the supervisor logged what it did.
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tokenpipe: {e}");
            ExitCode::FAILURE
        }
    }
}
