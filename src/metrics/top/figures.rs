//! Two scrapes in, one row of figures out: a pure function ([`Figures::between`]), no I/O, no clock.
//!
//! Gauges (streams, descriptors, memory) are read from the later scrape. Everything else is a rate or a
//! ratio over the interval between the two: counters are subtracted (a counter that went down means the
//! relay restarted, and its new value is what happened since), and the percentiles come from the
//! histograms' bucket deltas, so that they describe this interval only, not the relay's whole life. They
//! are interpolated inside their bucket as Prometheus' `histogram_quantile` does, by the relay's own
//! [`HistogramSnapshot::quantile`] (the `le` bounds, in seconds, become nanoseconds).
//!
//! A figure the scrapes cannot give (a metric missing, no earlier scrape, no chunk to divide by, a value
//! that is not a number) is `None`, shown as `-`.

use std::sync::Mutex;
use std::time::Duration;

use super::expo::{Bucket, Exposition, Series};
use crate::reactor::instrument::{COUNT_BOUNDS, DURATION_BOUNDS, HistogramSnapshot};

/// The metric names read (docs/14 lists them all).
pub mod names {
    pub const STREAMS: &str = "tokenpipe_streams_active";
    pub const CLIENTS: &str = "tokenpipe_client_connections";
    pub const CHUNKS: &str = "tokenpipe_relayed_chunks_total";
    pub const BYTES: &str = "tokenpipe_relayed_bytes_total";
    pub const TTFT: &str = "gen_ai_server_time_to_first_token_seconds";
    pub const EVENT_GAP: &str = "tokenpipe_relay_event_gap_seconds";
    pub const BUSY_SUM: &str = "tokenpipe_loop_busy_seconds_sum";
    pub const SLOW: &str = "tokenpipe_loop_slow_iterations_total";
    pub const SYSCALLS: &str = "tokenpipe_syscalls_total";
    pub const OPEN_FDS: &str = "tokenpipe_open_fds";
    pub const PROCESS_FDS: &str = "process_open_fds";
    pub const MAX_FDS: &str = "process_max_fds";
    pub const RSS: &str = "process_resident_memory_bytes";
    pub const REQUESTS: &str = "tokenpipe_http_requests_total";
}

/// Percentiles of the values a histogram recorded during the interval, in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Recent {
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    /// How many values were recorded.
    pub count: Option<u64>,
}

/// Requests answered per second, by status class. Scrapes of `/metrics` (this tool's own, and
/// Prometheus') are left out, so that an idle relay shows no traffic.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Requests {
    pub ok: f64,
    pub client_error: f64,
    pub server_error: f64,
    /// 1xx and 3xx, and statuses that are not a number.
    pub other: f64,
}

/// File descriptors: the relay workers' sockets by kind, and the whole process's.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Fds {
    pub listener: Option<f64>,
    pub client: Option<f64>,
    pub upstream_idle: Option<f64>,
    pub upstream_active: Option<f64>,
    pub process: Option<f64>,
    pub max: Option<f64>,
}

/// One displayed row: what the relay did between two scrapes, and its levels at the second.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    /// Wall time between the two scrapes, in seconds (0 without an earlier scrape).
    pub seconds: f64,
    pub streams: Option<f64>,
    pub clients: Option<f64>,
    pub chunks_per_sec: Option<f64>,
    pub bytes_per_sec: Option<f64>,
    /// Time to first token of the streams that got their first token during the interval.
    pub ttft: Recent,
    /// Time between two chunks of one stream, during the interval.
    pub event_gap: Recent,
    /// Share of wall time the loops were busy, all workers together (0..=1).
    pub busy: Option<f64>,
    /// The same, per worker, by its name.
    pub busy_by_worker: Vec<(String, f64)>,
    /// Loop iterations over the warning threshold during the interval.
    pub slow_iterations: Option<f64>,
    /// System calls of every kind per chunk relayed.
    pub syscalls_per_chunk: Option<f64>,
    pub requests: Option<Requests>,
    pub fds: Fds,
    pub rss_bytes: Option<f64>,
}

impl Figures {
    /// The figures of the interval from `earlier` to `later`, `elapsed` apart (wall time, measured by the
    /// caller). Without an earlier scrape, or with no time between them, only the levels are known.
    pub fn between(earlier: Option<&Exposition>, later: &Exposition, elapsed: Duration) -> Figures {
        let level = |name: &str| later.sum(name).filter(|v| v.is_finite());
        let fd = |kind: &str| {
            later
                .total(names::OPEN_FDS, |s| s.label("kind") == Some(kind))
                .filter(|v| v.is_finite())
        };
        let mut figures = Figures {
            streams: level(names::STREAMS),
            clients: level(names::CLIENTS),
            fds: Fds {
                listener: fd("listener"),
                client: fd("client"),
                upstream_idle: fd("upstream_idle"),
                upstream_active: fd("upstream_active"),
                process: level(names::PROCESS_FDS),
                max: level(names::MAX_FDS),
            },
            rss_bytes: level(names::RSS),
            ..Figures::default()
        };
        let seconds = elapsed.as_secs_f64();
        let Some(earlier) = earlier.filter(|_| seconds > 0.0) else {
            return figures;
        };
        figures.seconds = seconds;
        let all = |_: &Series| true;
        let increase = |name: &str| increase(earlier.sum(name), later.sum(name));
        let per_sec = |v: Option<f64>| finite(v.map(|v| v / seconds));
        let chunks = increase(names::CHUNKS);
        figures.chunks_per_sec = per_sec(chunks);
        figures.bytes_per_sec = per_sec(increase(names::BYTES));
        figures.syscalls_per_chunk = match (increase(names::SYSCALLS), chunks) {
            (Some(calls), Some(chunks)) if chunks > 0.0 => finite(Some(calls / chunks)),
            _ => None,
        };
        figures.slow_iterations = finite(increase(names::SLOW));
        figures.ttft = recent(earlier, later, names::TTFT, all);
        figures.event_gap = recent(earlier, later, names::EVENT_GAP, all);
        figures.requests = requests(earlier, later, seconds);
        (figures.busy_by_worker, figures.busy) = busy(earlier, later, seconds);
        figures
    }
}

/// `v` if it is a number (not NaN, not infinite).
fn finite(v: Option<f64>) -> Option<f64> {
    v.filter(|v| v.is_finite())
}

/// How much a counter grew from `earlier` to `later`; a counter that went down was reset (the relay
/// restarted), and its later value is what happened since.
fn increase(earlier: Option<f64>, later: Option<f64>) -> Option<f64> {
    let (earlier, later) = (earlier?, later?);
    let grew = if later >= earlier {
        later - earlier
    } else {
        later
    };
    finite(Some(grew)).filter(|v| *v >= 0.0)
}

/// The loops' busy share: per worker, the growth of its busy-seconds sum over the wall time; overall, the
/// same for all of them over `workers × wall time`. Clamped to 0..=1: a worker publishes its figures
/// once per iteration, so an interval may catch a little more than its own share of one iteration.
fn busy(
    earlier: &Exposition,
    later: &Exposition,
    seconds: f64,
) -> (Vec<(String, f64)>, Option<f64>) {
    let before = earlier.by_label(names::BUSY_SUM, "worker");
    let mut by_worker = Vec::new();
    for (worker, now) in later.by_label(names::BUSY_SUM, "worker") {
        let then = before.iter().find(|(w, _)| *w == worker).map(|(_, v)| *v);
        if let Some(grew) = increase(then, Some(now)) {
            by_worker.push((worker, (grew / seconds).clamp(0.0, 1.0)));
        }
    }
    let overall = (!by_worker.is_empty())
        .then(|| by_worker.iter().map(|(_, b)| b).sum::<f64>() / by_worker.len() as f64);
    (by_worker, finite(overall))
}

/// Requests per second by status class, `/metrics` left out; `None` without the counter.
fn requests(earlier: &Exposition, later: &Exposition, seconds: f64) -> Option<Requests> {
    let counted = |s: &Series| s.label("route") != Some("metrics");
    later.total(names::REQUESTS, counted)?;
    let mut rates = Requests::default();
    for s in later.series(names::REQUESTS).iter().filter(|s| counted(s)) {
        // The same series in the earlier scrape; a new series started from nothing.
        let then = earlier
            .series(names::REQUESTS)
            .iter()
            .find(|e| e.labels == s.labels)
            .map_or(0.0, |e| e.value);
        let Some(rate) = increase(Some(then), Some(s.value)).map(|v| v / seconds) else {
            continue;
        };
        let class = match s.label("status").and_then(|st| st.bytes().next()) {
            Some(b'2') => &mut rates.ok,
            Some(b'4') => &mut rates.client_error,
            Some(b'5') => &mut rates.server_error,
            _ => &mut rates.other,
        };
        *class += rate;
    }
    Some(rates)
}

/// p50 and p99 of what histogram `base` recorded between the scrapes.
fn recent(
    earlier: &Exposition,
    later: &Exposition,
    base: &str,
    keep: impl Fn(&Series) -> bool,
) -> Recent {
    let Some(now) = snapshot(&later.buckets(base, &keep)) else {
        return Recent::default();
    };
    let interval = match snapshot(&earlier.buckets(base, &keep)) {
        // A histogram whose count went down was reset: all of its later values are new.
        Some(then) if then.bounds == now.bounds && then.count() <= now.count() => now.since(&then),
        _ => now,
    };
    let seconds = |ns: Option<f64>| finite(ns.map(|ns| ns / 1e9));
    Recent {
        p50: seconds(interval.quantile(0.5)),
        p99: seconds(interval.quantile(0.99)),
        count: Some(interval.count()),
    }
}

/// The buckets as a [`HistogramSnapshot`] (per-bucket counts, bounds in nanoseconds), or `None` if they
/// cannot be one: no finite bound, a bound below zero, two bounds that are the same nanosecond.
pub fn snapshot(buckets: &[Bucket]) -> Option<HistogramSnapshot> {
    let finite_buckets: Vec<&Bucket> = buckets.iter().filter(|b| b.le.is_finite()).collect();
    if finite_buckets.is_empty() || finite_buckets.len() > MAX_INTERNED_LEN {
        return None;
    }
    let mut bounds = Vec::with_capacity(finite_buckets.len());
    for b in &finite_buckets {
        if b.le < 0.0 || b.le * 1e9 > u64::MAX as f64 {
            return None;
        }
        let ns = (b.le * 1e9).round() as u64;
        if bounds.last().is_some_and(|&last| last >= ns) {
            return None;
        }
        bounds.push(ns);
    }
    // Counts are whole numbers; `as` saturates (and makes NaN 0), and a cumulative count that goes down
    // (garbage) adds nothing to its bucket.
    let count = |v: f64| v.max(0.0) as u64;
    let mut per_bucket = Vec::with_capacity(bounds.len() + 1);
    let mut below = 0u64;
    for b in &finite_buckets {
        let cumulative = count(b.cumulative);
        per_bucket.push(cumulative.saturating_sub(below));
        below = below.max(cumulative);
    }
    let inf = buckets.iter().find(|b| b.le == f64::INFINITY);
    per_bucket.push(inf.map_or(0, |b| count(b.cumulative).saturating_sub(below)));
    Some(HistogramSnapshot {
        bounds: intern(bounds)?,
        buckets: per_bucket,
        sum: 0,
    })
}

/// The most bound sets [`intern`] keeps, and the longest one.
const MAX_INTERNED: usize = 16;
const MAX_INTERNED_LEN: usize = crate::reactor::instrument::histogram::MAX_BOUNDS;

/// `bounds` with the `'static` lifetime that [`HistogramSnapshot`] wants: the relay's own bound sets as
/// they are; any other set is leaked once and kept (a relay of another version may have other bounds),
/// at most [`MAX_INTERNED`] of them, so that hostile scrapes cannot make the process grow.
fn intern(bounds: Vec<u64>) -> Option<&'static [u64]> {
    if bounds == DURATION_BOUNDS {
        return Some(DURATION_BOUNDS);
    }
    if bounds == COUNT_BOUNDS {
        return Some(COUNT_BOUNDS);
    }
    static INTERNED: Mutex<Vec<&'static [u64]>> = Mutex::new(Vec::new());
    // A poisoned lock only means another thread panicked while holding it: the list is still whole.
    let mut interned = INTERNED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(&known) = interned.iter().find(|&&b| b == bounds.as_slice()) {
        return Some(known);
    }
    if interned.len() >= MAX_INTERNED {
        return None;
    }
    let leaked: &'static [u64] = Box::leak(bounds.into_boxed_slice());
    interned.push(leaked);
    Some(leaked)
}
