//! The options the relay and the mock share: limits, loop health, inbound TLS, the client's deadlines,
//! the drain.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::*;

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
    #[command(flatten)]
    pub client_timeouts: timeouts::ClientTimeoutArgs,
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
    pub(super) fn loop_settings(&self) -> LoopConfig {
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
            client: self.client_timeouts.timeouts(),
            drain: DrainPlan {
                grace: self.drain_grace,
                timeout: self.drain_timeout,
            },
        }
    }

    /// A grace as long as the whole drain would leave no time for the streams to finish.
    pub(super) fn check_drain(&self) -> Result<(), String> {
        if !self.drain_grace.is_zero() && self.drain_grace >= self.drain_timeout {
            return Err(format!(
                "--drain-grace ({:?}) must be shorter than --drain-timeout ({:?}), which it is part of",
                self.drain_grace, self.drain_timeout
            ));
        }
        Ok(())
    }
}
