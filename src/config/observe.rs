//! The options of observability: metrics, the access log, the teaching stall route.

use clap::Args;

use crate::relay::observe::AccessLog;

/// How the relay observes itself (`--no-metrics`, `--access-log`, `--debug-stall-route`).
#[derive(Args, Debug, Clone)]
pub struct ObserveArgs {
    /// Do not record the per-chunk figures (chunks, bytes, event gaps, residence, first token) nor read
    /// the token usage from the streams: for measuring what that costs. GET /metrics still answers, with
    /// those figures at zero.
    #[arg(long, env = "TOKENPIPE_NO_METRICS", action = clap::ArgAction::SetTrue,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub no_metrics: bool,
    /// One line per request at info level (target tokenpipe::access): method, path (no query), status,
    /// bytes, duration, time to first byte and first token, upstream, connection reused, token usage,
    /// request id. It never holds a key or a prompt. json, text or off.
    #[arg(long, env = "TOKENPIPE_ACCESS_LOG", default_value = "text", value_name = "FORMAT",
          value_parser = ["json", "text", "off"])]
    pub access_log: String,
    /// Serve GET /debug/stall?ms=N, which blocks a worker's loop for N ms (at most 10000): a teaching
    /// aid, to watch the slow-iteration warning and the loop histograms catch a stall. Never in
    /// production: any client that may reach it can stop a worker.
    #[arg(long, env = "TOKENPIPE_DEBUG_STALL_ROUTE", action = clap::ArgAction::SetTrue,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub debug_stall_route: bool,
}

impl ObserveArgs {
    pub(super) fn observe(&self) -> ObserveConfig {
        ObserveConfig {
            metrics: !self.no_metrics,
            access_log: AccessLog::parse(&self.access_log).unwrap_or_default(),
            debug_stall: self.debug_stall_route,
        }
    }
}

/// What the relay records and logs of itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObserveConfig {
    /// Record the per-chunk figures.
    pub metrics: bool,
    pub access_log: AccessLog,
    /// Serve `/debug/stall`.
    pub debug_stall: bool,
}

impl Default for ObserveConfig {
    fn default() -> Self {
        ObserveConfig {
            metrics: true,
            access_log: AccessLog::Text,
            debug_stall: false,
        }
    }
}
