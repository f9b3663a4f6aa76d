//! From the runs to the figures: medians with their spread (min-max over the runs), the ratios, the
//! Markdown tables, and the targets of issue 9 with PASS or MISS.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::measure::Sample;
use crate::peers::Peer;
pub use crate::rows::{Row, Stat};
use crate::rows::{reference_scenario, show};
pub use crate::targets::Target;
use crate::targets::targets;

/// Everything the report shows, and the raw runs.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub rows: Vec<Row>,
    pub targets: Vec<Target>,
    /// Warnings about the measurement itself (the control failed, a run failed).
    pub warnings: Vec<String>,
}

impl Summary {
    pub fn new(samples: &[Sample], largest: u64) -> Summary {
        let mut groups: BTreeMap<(String, u64, usize), Vec<&Sample>> = BTreeMap::new();
        for s in samples {
            let order = Peer::from_name(&s.peer).map_or(99, |p| p as usize);
            groups
                .entry((s.scenario.clone(), s.streams, order))
                .or_default()
                .push(s);
        }
        let mut rows: Vec<Row> = groups.values().map(|g| Row::new(g)).collect();

        // Added time to first event: each run's percentile minus the direct runs' median.
        for (i, row) in rows.clone().iter().enumerate() {
            let reference = rows.iter().find(|r| {
                r.peer == "direct"
                    && r.scenario == reference_scenario(&row.scenario)
                    && r.streams == row.streams
            });
            let Some(reference) = reference else { continue };
            let (Some(d50), Some(d99)) = (reference.ttfe_p50_us, reference.ttfe_p99_us) else {
                continue;
            };
            let runs: Vec<&Sample> = samples
                .iter()
                .filter(|s| {
                    s.scenario == row.scenario
                        && s.peer == row.peer
                        && s.streams == row.streams
                        && s.error.is_none()
                })
                .collect();
            rows[i].added_ttfe_p50_us = Stat::of(
                runs.iter()
                    .filter_map(|s| s.ttfe_p50_us)
                    .map(|v| v as f64 - d50.median),
            );
            rows[i].added_ttfe_p99_us = Stat::of(
                runs.iter()
                    .filter_map(|s| s.ttfe_p99_us)
                    .map(|v| v as f64 - d99.median),
            );
        }

        // CPU ratios at the same level: to tokenpipe in the same scenario, to the floor of the main one.
        for i in 0..rows.len() {
            let find = |scenario: &str, peer: &str| {
                rows.iter()
                    .find(|r| {
                        r.scenario == scenario && r.peer == peer && r.streams == rows[i].streams
                    })
                    .and_then(Row::cpu)
            };
            let tokenpipe = find(&rows[i].scenario, "tokenpipe");
            let floor = find("load", "floor");
            if let Some(cpu) = rows[i].cpu() {
                rows[i].cpu_vs_tokenpipe = tokenpipe.map(|t| cpu / t);
                rows[i].cpu_vs_floor = floor.map(|f| cpu / f);
            }
        }

        let mut warnings = Vec::new();
        for r in &rows {
            if r.peer == "direct"
                && r.started > 0
                && r.sustained < r.started
                && r.scenario == "load"
            {
                warnings.push(format!(
                    "CONTROL: direct to the mock at {} streams sustained only {}: the mock or the load \
                     generator could not keep up, so the relays' figures at this level are bounded by them",
                    r.streams,
                    r.sustained_text()
                ));
            }
            if let Some(e) = &r.first_error {
                warnings.push(format!(
                    "{} {} at {} streams: {} of {} run(s) failed: {}",
                    r.scenario,
                    r.peer,
                    r.streams,
                    r.failed_runs,
                    r.runs,
                    e.lines().next().unwrap_or("")
                ));
            }
        }
        let targets = targets(&rows, largest);
        Summary {
            rows,
            targets,
            warnings,
        }
    }

    fn row(&self, scenario: &str, peer: &str, streams: u64) -> Option<&Row> {
        self.rows
            .iter()
            .find(|r| r.scenario == scenario && r.peer == peer && r.streams == streams)
    }

    fn levels(&self, scenario: &str) -> Vec<u64> {
        let mut levels: Vec<u64> = self
            .rows
            .iter()
            .filter(|r| r.scenario == scenario)
            .map(|r| r.streams)
            .collect();
        levels.dedup();
        levels
    }

    /// The Markdown tables.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let ratio = |r: Option<f64>| r.map_or("–".to_string(), |x| format!("{x:.2}x"));
        // System calls per chunk: perf's count at full speed, else strace's (slowed: marked ~), else
        // tokenpipe's own count of its socket and epoll calls (marked *).
        let syscalls = |r: &Row| -> String {
            let perf = self
                .row("syscalls", &r.peer, r.streams)
                .and_then(|s| s.syscalls_per_chunk);
            let strace = self
                .row("strace", &r.peer, r.streams)
                .and_then(|s| s.syscalls_per_chunk);
            match (perf, strace, r.own_syscalls_per_chunk) {
                (Some(p), _, _) => p.show(2),
                (None, Some(s), _) => format!("~{}", s.show(2)),
                (None, None, Some(own)) => format!("{}*", own.show(2)),
                _ => "–".to_string(),
            }
        };

        let _ = writeln!(md, "### One worker each\n");
        let _ = writeln!(
            md,
            "| streams | relay | CPU µs/chunk | vs tokenpipe | vs floor | peak RSS MiB | KiB/stream | \
             syscalls/chunk | added TTFE p50 µs | added TTFE p99 µs | sustained | errors |"
        );
        let _ = writeln!(
            md,
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for streams in self.levels("load") {
            for r in self
                .rows
                .iter()
                .filter(|r| r.scenario == "load" && r.streams == streams)
            {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    r.streams,
                    r.peer,
                    show(r.cpu_us_per_chunk, 2),
                    ratio(r.cpu_vs_tokenpipe),
                    ratio(r.cpu_vs_floor),
                    show(r.peak_rss_mib, 1),
                    // At one stream the growth is a page or two of noise, not a cost per stream.
                    if r.streams > 1 {
                        show(r.kib_per_stream, 2)
                    } else {
                        "–".to_string()
                    },
                    syscalls(r),
                    show(r.added_ttfe_p50_us, 0),
                    show(r.added_ttfe_p99_us, 0),
                    r.sustained_text(),
                    r.errors_text()
                );
            }
        }
        let _ = writeln!(
            md,
            "\nMedians over the runs, (min–max) when they differ. Added TTFE: the probe's time to first \
             event through the relay minus direct to the mock (`direct` shows its absolute figures). \
             syscalls/chunk: every system call of the relay, counted by `perf stat -e \
             raw_syscalls:sys_enter` in a separate run; `~`: by `strace -c -f` (slowed down, so fewer \
             calls per chunk); `*`: tokenpipe's own count (`tokenpipe_syscalls_total`: its socket and \
             epoll calls only), where neither ran."
        );
        for r in self
            .rows
            .iter()
            .filter(|r| r.scenario == "load" && r.peer == "direct" && r.ttfe_p50_us.is_some())
        {
            let _ = writeln!(
                md,
                "Direct to the mock at {} streams: TTFE p50 {} µs, p99 {} µs.",
                r.streams,
                show(r.ttfe_p50_us, 0),
                show(r.ttfe_p99_us, 0)
            );
        }

        if !self.levels("ttfe-one-core").is_empty() || !self.levels("ttfe-two-cores").is_empty() {
            let _ = writeln!(md, "\n### Added time to first event at one stream (µs)\n");
            let _ = writeln!(
                md,
                "| relay | one core: p50 | one core: p99 | separate cores: p50 | separate cores: p99 |"
            );
            let _ = writeln!(md, "|---|---:|---:|---:|---:|");
            let peers: Vec<String> = self
                .rows
                .iter()
                .filter(|r| r.scenario == "ttfe-one-core" || r.scenario == "ttfe-two-cores")
                .map(|r| r.peer.clone())
                .fold(Vec::new(), |mut v, p| {
                    if !v.contains(&p) {
                        v.push(p);
                    }
                    v
                });
            for peer in peers {
                let one = self.row("ttfe-one-core", &peer, 1);
                let two = self.row("ttfe-two-cores", &peer, 1);
                let cell = |r: Option<&Row>, p99: bool| -> String {
                    let Some(r) = r else { return "–".to_string() };
                    if peer == "direct" {
                        // The reference itself: its absolute figures.
                        let s = if p99 { r.ttfe_p99_us } else { r.ttfe_p50_us };
                        return format!("({} absolute)", show(s, 0));
                    }
                    show(
                        if p99 {
                            r.added_ttfe_p99_us
                        } else {
                            r.added_ttfe_p50_us
                        },
                        0,
                    )
                };
                let _ = writeln!(
                    md,
                    "| {peer} | {} | {} | {} | {} |",
                    cell(one, false),
                    cell(one, true),
                    cell(two, false),
                    cell(two, true)
                );
            }
        }

        if !self.levels("workers-2").is_empty() {
            let _ = writeln!(md, "\n### Two workers each (`--workers 2`, both cores)\n");
            let _ = writeln!(
                md,
                "| streams | relay | CPU µs/chunk | vs tokenpipe | peak RSS MiB | KiB/stream | TTFE p50 µs | \
                 TTFE p99 µs | sustained | errors |"
            );
            let _ = writeln!(md, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|");
            for r in self.rows.iter().filter(|r| r.scenario == "workers-2") {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    r.streams,
                    r.peer,
                    show(r.cpu_us_per_chunk, 2),
                    ratio(r.cpu_vs_tokenpipe),
                    show(r.peak_rss_mib, 1),
                    show(r.kib_per_stream, 2),
                    show(r.ttfe_p50_us, 0),
                    show(r.ttfe_p99_us, 0),
                    r.sustained_text(),
                    r.errors_text()
                );
            }
        }

        if !self.levels("upstream-tls").is_empty() {
            let _ = writeln!(
                md,
                "\n### TLS to the upstream: tokenpipe, plain against TLS\n"
            );
            let _ = writeln!(
                md,
                "| streams | upstream | CPU µs/chunk | TLS/plain | peak RSS MiB | KiB/stream | TTFE p50 µs | \
                 TTFE p99 µs | sustained | errors |"
            );
            let _ = writeln!(md, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|");
            for streams in self.levels("upstream-tls") {
                let plain = self.row("upstream-plain", "tokenpipe", streams);
                for (name, r) in [
                    ("plain", plain),
                    ("TLS", self.row("upstream-tls", "tokenpipe", streams)),
                ] {
                    let Some(r) = r else { continue };
                    let vs = match (r.cpu(), plain.and_then(Row::cpu)) {
                        (Some(c), Some(p)) => format!("{:.2}x", c / p),
                        _ => "–".to_string(),
                    };
                    let _ = writeln!(
                        md,
                        "| {} | {name} | {} | {vs} | {} | {} | {} | {} | {} | {} |",
                        r.streams,
                        show(r.cpu_us_per_chunk, 2),
                        show(r.peak_rss_mib, 1),
                        show(r.kib_per_stream, 2),
                        show(r.ttfe_p50_us, 0),
                        show(r.ttfe_p99_us, 0),
                        r.sustained_text(),
                        r.errors_text()
                    );
                }
            }
        }

        // The relays and levels whose system calls were counted, in table order.
        let counted: std::collections::BTreeSet<(u64, usize, &str)> = self
            .rows
            .iter()
            .filter(|r| r.scenario == "syscalls" || r.scenario == "strace")
            .map(|r| {
                let order = Peer::from_name(&r.peer).map_or(99, |p| p as usize);
                (r.streams, order, r.peer.as_str())
            })
            .collect();
        if !counted.is_empty() {
            let _ = writeln!(md, "\n### System calls per chunk (separate runs)\n");
            let _ = writeln!(
                md,
                "| streams | relay | all (perf) | by name (perf), per chunk | all (strace -c -f, slowed) |"
            );
            let _ = writeln!(md, "|---:|---|---:|---|---:|");
            for (streams, _, peer) in counted {
                let cell = |scenario: &str| match self.row(scenario, peer, streams) {
                    Some(r) => match (r.syscalls_per_chunk, &r.first_error) {
                        (Some(s), _) => s.show(2),
                        (None, Some(e)) => format!("failed: {}", e.lines().next().unwrap_or("")),
                        _ => "–".to_string(),
                    },
                    None => "–".to_string(),
                };
                let by_name = self
                    .row("syscalls", peer, streams)
                    .map_or(String::new(), |r| {
                        let mut named: Vec<(&String, &f64)> = r
                            .syscalls_by_name
                            .iter()
                            .filter(|(n, v)| *n != "total" && **v >= 0.005)
                            .collect();
                        named.sort_by(|a, b| b.1.total_cmp(a.1));
                        let total = r.syscalls_by_name.get("total").copied().unwrap_or(0.0);
                        let other = total - named.iter().map(|(_, v)| **v).sum::<f64>();
                        let mut parts: Vec<String> =
                            named.iter().map(|(n, v)| format!("{n} {v:.2}")).collect();
                        if other >= 0.005 {
                            parts.push(format!("other {other:.2}"));
                        }
                        parts.join(", ")
                    });
                let _ = writeln!(
                    md,
                    "| {streams} | {peer} | {} | {by_name} | {} |",
                    cell("syscalls"),
                    cell("strace")
                );
            }
            let _ = writeln!(
                md,
                "\nperf counts every call in the kernel (`raw_syscalls:sys_enter`, and one tracepoint per \
                 named call) while the relay runs at full speed. strace stops the relay at every call, so \
                 it runs several times slower, events pile up between its reads, and one read or write \
                 carries several: its calls per chunk are fewer. The figures are all-in: accepting, \
                 connecting and closing each stream's connections count too, over the stream's events."
            );
        }

        let _ = writeln!(md, "\n### Targets (issue 9)\n");
        for t in &self.targets {
            let _ = writeln!(md, "- **{}** {}: {}", t.verdict, t.what, t.detail);
        }
        if !self.warnings.is_empty() {
            let _ = writeln!(md, "\n### Warnings\n");
            for w in &self.warnings {
                let _ = writeln!(md, "- {w}");
            }
        }
        md
    }
}
