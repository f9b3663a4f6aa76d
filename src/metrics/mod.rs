//! Metrics: what the relay's workers measure, added up at scrape time, in the Prometheus text format.
//!
//! ```text
//!   worker 0 ── thread-local counts and levels ──(once per iteration)──▶ WorkerStats (atomics) ─┐
//!            ── per chunk: RelayMetrics (relaxed atomics, lock-free histograms) ─────────────────┤
//!   worker 1 ── ... ───────────────────────────────────────────────────────────────────────────┤
//!                                                                     GET /metrics: Registry::render
//! ```
//!
//! Nothing on the hot path takes a lock or allocates: the loop's system-call counts and levels are
//! thread-local cells that the worker publishes once per iteration (`reactor::instrument`), and the relay's
//! per-chunk figures are relaxed atomics only their worker writes (`relay::metrics::RelayMetrics`). A scrape,
//! served by whichever worker accepted it, reads every worker's copy and adds them up: there is no
//! aggregation thread and no shared counter that workers fight over.
//!
//! The exposition is `prometheus-client`'s text encoder (its escaping, `HELP`/`TYPE` lines and `_total`
//! suffixes are right by construction), fed by a `Collector` that reads our figures at scrape time
//! ([`exposition`]). Its own `Histogram` is not used: `observe` takes a mutex, where ours is lock-free
//! (`reactor::instrument::Histogram`). The names are listed, with their meaning, in docs/14.

pub mod exposition;
pub mod process;
mod snapshot;
pub mod top;

use std::sync::{Arc, OnceLock};

use crate::reactor::instrument::WorkerStats;
use crate::relay::metrics::RelayMetrics;
use crate::relay::{RelayStats, UpstreamTarget};

/// Everything a scrape reads: the relay workers' figures, shared by those workers.
#[derive(Debug)]
pub struct Registry {
    /// The relay's process-wide counters (pool, retries, admission, ...).
    pub relay: Arc<RelayStats>,
    /// The upstreams, for their names (labels) and their admission and breaker state.
    pub upstreams: Vec<Arc<UpstreamTarget>>,
    /// Each relay worker's relay figures, by worker index.
    pub workers: Vec<Arc<RelayMetrics>>,
    /// Each relay worker's loop figures, by worker index: set once every worker is built (a worker's
    /// handler, which serves scrapes, is made before its loop is).
    loops: OnceLock<Vec<(String, Arc<WorkerStats>)>>,
    /// The descriptor limit the process runs with.
    pub fd_limit: Option<u64>,
}

impl Registry {
    /// A registry for `workers` relay workers; `enabled`: record the per-chunk figures.
    pub fn new(
        relay: Arc<RelayStats>,
        upstreams: Vec<Arc<UpstreamTarget>>,
        workers: usize,
        enabled: bool,
        fd_limit: Option<u64>,
    ) -> Registry {
        Registry {
            relay,
            upstreams,
            workers: (0..workers)
                .map(|_| Arc::new(RelayMetrics::new(enabled)))
                .collect(),
            loops: OnceLock::new(),
            fd_limit,
        }
    }

    /// The loops' figures, once the workers exist (a second call is ignored).
    pub fn set_loops(&self, loops: Vec<(String, Arc<WorkerStats>)>) {
        let _ = self.loops.set(loops);
    }

    /// The loops' figures (empty before [`Registry::set_loops`]).
    pub fn loops(&self) -> &[(String, Arc<WorkerStats>)] {
        self.loops.get().map_or(&[], Vec::as_slice)
    }

    /// The name of upstream `i`, for a label.
    pub fn upstream_name(&self, i: usize) -> &str {
        self.upstreams.get(i).map_or("unknown", |t| t.name.as_str())
    }

    /// The exposition, in the Prometheus text format (version 0.0.4).
    pub fn render(&self) -> String {
        exposition::render(self)
    }
}

/// The `Content-Type` of [`Registry::render`]'s text.
pub use crate::relay::observe::METRICS_CONTENT_TYPE as CONTENT_TYPE;
