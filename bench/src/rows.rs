//! A figure over the runs ([`Stat`]: its median and range) and one row of the tables ([`Row`]: a relay at
//! a level in a scenario).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::measure::Sample;

/// A figure over the runs: its median and its range.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Stat {
    /// The median and range of the values that are numbers; `None` if none is.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Stat> {
        let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Stat {
            median,
            min: v[0],
            max: v[n - 1],
            n,
        })
    }

    /// `7.12 (6.90–7.40)`, or `7.12` for one run.
    pub fn show(&self, decimals: usize) -> String {
        if self.n > 1 && self.min != self.max {
            format!(
                "{:.d$} ({:.d$}–{:.d$})",
                self.median,
                self.min,
                self.max,
                d = decimals
            )
        } else {
            format!("{:.d$}", self.median, d = decimals)
        }
    }
}

pub(crate) fn show(stat: Option<Stat>, decimals: usize) -> String {
    stat.map_or("–".to_string(), |s| s.show(decimals))
}

/// The runs of one relay in one scenario at one level, summed up.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub scenario: String,
    pub peer: String,
    pub streams: u64,
    pub workers: usize,
    pub interval_ms: u64,
    pub tokens: u32,
    pub runs: usize,
    /// Runs that could not be done, with the first reason.
    pub failed_runs: usize,
    pub first_error: Option<String>,
    pub cpu_us_per_chunk: Option<Stat>,
    pub cpu_ticks_us_per_chunk: Option<Stat>,
    pub kib_per_stream: Option<Stat>,
    pub peak_rss_mib: Option<Stat>,
    pub own_syscalls_per_chunk: Option<Stat>,
    pub syscalls_per_chunk: Option<Stat>,
    pub ttfe_p50_us: Option<Stat>,
    pub ttfe_p99_us: Option<Stat>,
    /// The time to first event minus the direct-to-mock one (the median of the direct runs).
    pub added_ttfe_p50_us: Option<Stat>,
    pub added_ttfe_p99_us: Option<Stat>,
    pub started: u64,
    pub sustained: u64,
    pub failed_streams: u64,
    /// CPU per chunk over tokenpipe's, and over the floor's (medians), at the same level.
    pub cpu_vs_tokenpipe: Option<f64>,
    pub cpu_vs_floor: Option<f64>,
    /// strace runs: each system call's calls per chunk (medians).
    pub syscalls_by_name: BTreeMap<String, f64>,
}

impl Row {
    pub(crate) fn new(samples: &[&Sample]) -> Row {
        let s0 = samples[0];
        let ok: Vec<&&Sample> = samples.iter().filter(|s| s.error.is_none()).collect();
        let stat = |f: &dyn Fn(&Sample) -> Option<f64>| Stat::of(ok.iter().filter_map(|s| f(s)));
        let mut syscalls_by_name = BTreeMap::new();
        let names: std::collections::BTreeSet<&String> =
            ok.iter().flat_map(|s| s.syscalls.keys()).collect();
        for name in names {
            let per_chunk = Stat::of(ok.iter().map(|s| {
                s.syscalls.get(name).copied().unwrap_or(0) as f64 / s.chunks.max(1) as f64
            }));
            if let Some(st) = per_chunk {
                syscalls_by_name.insert(name.clone(), st.median);
            }
        }
        Row {
            scenario: s0.scenario.clone(),
            peer: s0.peer.clone(),
            streams: s0.streams,
            workers: s0.workers,
            interval_ms: s0.interval_ms,
            tokens: s0.tokens,
            runs: samples.len(),
            failed_runs: samples.len() - ok.len(),
            first_error: samples.iter().find_map(|s| s.error.clone()),
            cpu_us_per_chunk: stat(&|s| s.cpu_us_per_chunk),
            cpu_ticks_us_per_chunk: stat(&|s| s.cpu_ticks_us_per_chunk),
            kib_per_stream: stat(&|s| s.kib_per_stream),
            peak_rss_mib: stat(&|s| s.peak_rss_kib.map(|k| k as f64 / 1024.0)),
            own_syscalls_per_chunk: stat(&|s| s.own_syscalls_per_chunk),
            syscalls_per_chunk: stat(&|s| s.syscalls_per_chunk),
            ttfe_p50_us: stat(&|s| s.ttfe_p50_us.map(|v| v as f64)),
            ttfe_p99_us: stat(&|s| s.ttfe_p99_us.map(|v| v as f64)),
            added_ttfe_p50_us: None,
            added_ttfe_p99_us: None,
            started: ok.iter().map(|s| s.started).sum(),
            sustained: ok.iter().map(|s| s.sustained).sum(),
            failed_streams: ok.iter().map(|s| s.failed).sum(),
            cpu_vs_tokenpipe: None,
            cpu_vs_floor: None,
            syscalls_by_name,
        }
    }

    pub(crate) fn cpu(&self) -> Option<f64> {
        self.cpu_us_per_chunk.map(|s| s.median)
    }

    /// "1000/1000 (100%)" of the streams started, over all runs.
    pub(crate) fn sustained_text(&self) -> String {
        if self.started == 0 {
            return "–".to_string();
        }
        format!(
            "{}/{} ({:.1}%)",
            self.sustained,
            self.started,
            100.0 * self.sustained as f64 / self.started as f64
        )
    }

    pub(crate) fn errors_text(&self) -> String {
        match (self.failed_streams, self.failed_runs) {
            (0, 0) => "0".to_string(),
            (f, 0) => f.to_string(),
            (f, r) => format!("{f} (+{r} run(s) failed)"),
        }
    }
}

/// The scenario whose direct-to-mock runs a scenario's time to first event is compared with: the mock
/// and the load generator are placed the same way in both.
pub(crate) fn reference_scenario(scenario: &str) -> &str {
    match scenario {
        "ttfe-one-core" | "ttfe-two-cores" => scenario,
        _ => "load",
    }
}
