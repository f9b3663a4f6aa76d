//! The targets of issue 9, checked against the rows: PASS, MISS, or NOT MEASURED, with the figures.

use serde::Serialize;

use crate::rows::Row;

/// A target of issue 9, checked.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub what: String,
    /// `PASS`, `MISS`, or `NOT MEASURED`.
    pub verdict: String,
    pub detail: String,
}

/// The targets, at 1,000 streams and at the largest level.
pub(crate) fn targets(rows: &[Row], largest: u64) -> Vec<Target> {
    let find = |scenario: &str, peer: &str, streams: u64| {
        rows.iter()
            .find(|r| r.scenario == scenario && r.peer == peer && r.streams == streams)
    };
    let mut out = Vec::new();
    let mut levels = vec![1_000];
    if largest > 1_000 {
        levels.push(largest);
    }
    let verdict = |ok: bool| if ok { "PASS" } else { "MISS" }.to_string();
    let not_measured = |what: String, why: &str| Target {
        what,
        verdict: "NOT MEASURED".to_string(),
        detail: why.to_string(),
    };
    for &n in &levels {
        let tp = find("load", "tokenpipe", n);
        for (peer, limit) in [("tokio-hyper", 0.67), ("nginx", 0.8)] {
            let what = format!("CPU/chunk at {n} streams ≤ {limit}x {peer}");
            match (
                tp.and_then(Row::cpu),
                find("load", peer, n).and_then(Row::cpu),
            ) {
                (Some(t), Some(p)) => out.push(Target {
                    what,
                    verdict: verdict(t / p <= limit),
                    detail: format!("{:.2}x ({t:.2} µs against {p:.2} µs)", t / p),
                }),
                _ => out.push(not_measured(what, "a run is missing")),
            }
        }
        let what = format!("memory per stream at {n} streams ≤ 1/10 of tokio-hyper");
        match (
            tp.and_then(|r| r.kib_per_stream),
            find("load", "tokio-hyper", n).and_then(|r| r.kib_per_stream),
        ) {
            (Some(t), Some(h)) => out.push(Target {
                what,
                verdict: verdict(t.median <= h.median / 10.0),
                detail: format!(
                    "{:.2} KiB against {:.2} KiB ({:.2}x)",
                    t.median,
                    h.median,
                    t.median / h.median
                ),
            }),
            _ => out.push(not_measured(what, "a run is missing")),
        }
        let what = format!("system calls per chunk at {n} streams ≤ 2.0");
        let perf = find("syscalls", "tokenpipe", n).and_then(|r| r.syscalls_per_chunk);
        let strace = find("strace", "tokenpipe", n).and_then(|r| r.syscalls_per_chunk);
        let own = tp.and_then(|r| r.own_syscalls_per_chunk);
        let others = |s: &str| -> String {
            let mut parts = vec![];
            if let Some(x) = strace {
                parts.push(format!("strace (slowed) {:.2}", x.median));
            }
            if let Some(x) = own {
                parts.push(format!(
                    "tokenpipe's own count of its socket and epoll calls {:.2}",
                    x.median
                ));
            }
            if parts.is_empty() {
                s.to_string()
            } else {
                format!("{s}; {}", parts.join("; "))
            }
        };
        match (perf, strace.or(own)) {
            (Some(p), _) => out.push(Target {
                what,
                verdict: verdict(p.median <= 2.0),
                detail: others(&format!(
                    "{:.2} (perf: every call of the process, at full speed)",
                    p.median
                )),
            }),
            (None, Some(x)) => out.push(Target {
                what,
                verdict: verdict(x.median <= 2.0),
                detail: others(&format!("{:.2} without perf's count", x.median)),
            }),
            _ => out.push(not_measured(what, "no system call count")),
        }
    }
    let what = "added time to first event at 1 stream on one core < 50 µs at p99".to_string();
    match find("ttfe-one-core", "tokenpipe", 1).and_then(|r| r.added_ttfe_p99_us) {
        Some(a) => out.push(Target {
            what,
            verdict: verdict(a.median < 50.0),
            detail: format!("{:.0} µs (p50 {})", a.median, {
                find("ttfe-one-core", "tokenpipe", 1)
                    .and_then(|r| r.added_ttfe_p50_us)
                    .map_or("–".to_string(), |s| format!("{:.0} µs", s.median))
            }),
        }),
        None => out.push(not_measured(what, "no one-core run")),
    }
    let what = format!("every stream sustained at the largest level ({largest} streams)");
    match find("load", "tokenpipe", largest) {
        Some(r) if r.started > 0 => out.push(Target {
            what,
            verdict: verdict(
                r.sustained == r.started && r.failed_streams == 0 && r.failed_runs == 0,
            ),
            detail: format!(
                "{} over {} run(s), {} errors",
                r.sustained_text(),
                r.runs,
                r.errors_text()
            ),
        }),
        _ => out.push(not_measured(what, "no run at that level")),
    }
    out
}
