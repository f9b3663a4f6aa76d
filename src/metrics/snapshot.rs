//! What a scrape reads: every worker's figures, copied and added up at once ([`Snapshot::take`]), so that
//! the encoding (`exposition`) works on plain values.

use super::Registry;
use super::process::Process;
use crate::reactor::instrument::{DURATION_BOUNDS, HistogramSnapshot, Level, Syscall};
use crate::relay::metrics::{Departure, Expiry, HISTOGRAMS, LabeledCounts, Tokens};

/// Everything a scrape shows, read at once (the reading is the only part that touches shared state).
#[derive(Debug)]
pub(super) struct Snapshot {
    pub(super) upstreams: Vec<String>,
    pub(super) relay: crate::relay::RelayCounts,
    pub(super) chunks: u64,
    pub(super) bytes: u64,
    pub(super) histograms: Vec<HistogramSnapshot>,
    pub(super) labeled: LabeledCounts,
    pub(super) expiries: Vec<(Expiry, u64)>,
    pub(super) departures: [u64; 2],
    pub(super) loops: Vec<LoopFigures>,
    pub(super) syscalls: Vec<(Syscall, u64)>,
    pub(super) levels: Vec<(Level, i64)>,
    pub(super) listeners: u64,
    pub(super) load: Vec<(usize, usize, u64)>,
    pub(super) fd_limit: Option<u64>,
    pub(super) process: Process,
}

#[derive(Debug)]
pub(super) struct LoopFigures {
    pub(super) worker: String,
    pub(super) iterations: u64,
    pub(super) slow: u64,
    pub(super) histograms: [HistogramSnapshot; 4],
}

impl Snapshot {
    pub(super) fn take(r: &Registry) -> Snapshot {
        let mut histograms: Vec<HistogramSnapshot> = (0..HISTOGRAMS.len())
            .map(|_| HistogramSnapshot::empty(DURATION_BOUNDS))
            .collect();
        let mut labeled = LabeledCounts::default();
        let (mut chunks, mut bytes) = (0, 0);
        let mut expiries: Vec<(Expiry, u64)> = Expiry::ALL.iter().map(|&e| (e, 0)).collect();
        let mut departures = [0; 2];
        for w in &r.workers {
            chunks += w.chunks.load(std::sync::atomic::Ordering::Relaxed);
            bytes += w.bytes.load(std::sync::atomic::Ordering::Relaxed);
            for (sum, h) in histograms.iter_mut().zip(w.histograms()) {
                sum.add(&h);
            }
            let l = w.labeled();
            merge(&mut labeled.requests, l.requests);
            merge_tokens(&mut labeled.tokens, l.tokens);
            merge(&mut labeled.failures, l.failures);
            for (e, n) in &mut expiries {
                *n += w.expiries(*e);
            }
            departures[0] += w.departures(Departure::BeforeHead);
            departures[1] += w.departures(Departure::MidStream);
        }
        let mut syscalls: Vec<(Syscall, u64)> = Syscall::ALL.iter().map(|&k| (k, 0)).collect();
        let mut levels: Vec<(Level, i64)> = Level::ALL.iter().map(|&l| (l, 0)).collect();
        let mut loops = Vec::new();
        let mut listeners = 0;
        for (name, stats) in r.loops() {
            let snap = stats.snapshot();
            for (k, n) in &mut syscalls {
                *n += snap.syscalls.get(*k);
            }
            for (l, n) in &mut levels {
                *n += stats.level(*l);
            }
            listeners += u64::from(stats.listening());
            let h = &stats.histograms;
            loops.push(LoopFigures {
                worker: name.clone(),
                iterations: snap.iterations,
                slow: snap.slow_iterations,
                histograms: [
                    h.poll_wait.snapshot(),
                    h.busy.snapshot(),
                    h.events.snapshot(),
                    h.timer_lateness.snapshot(),
                ],
            });
        }
        Snapshot {
            upstreams: r.upstreams.iter().map(|t| t.name.clone()).collect(),
            relay: r.relay.snapshot(),
            chunks,
            bytes,
            histograms,
            labeled,
            expiries,
            departures,
            loops,
            syscalls,
            levels,
            listeners,
            load: r
                .upstreams
                .iter()
                .map(|t| (t.gate.in_flight(), t.gate.queued(), t.health.times_opened()))
                .collect(),
            fd_limit: r.fd_limit,
            process: Process::read(),
        }
    }

    pub(super) fn upstream(&self, i: usize) -> &str {
        self.upstreams.get(i).map_or("unknown", String::as_str)
    }

    pub(super) fn level(&self, level: Level) -> i64 {
        self.levels
            .iter()
            .find(|(l, _)| *l == level)
            .map_or(0, |(_, n)| *n)
    }
}

fn merge<K: PartialEq>(into: &mut Vec<(K, u64)>, from: Vec<(K, u64)>) {
    for (k, n) in from {
        match into.iter_mut().find(|(key, _)| *key == k) {
            Some((_, total)) => *total += n,
            None => into.push((k, n)),
        }
    }
}

fn merge_tokens(
    into: &mut Vec<((usize, Box<str>), Tokens)>,
    from: Vec<((usize, Box<str>), Tokens)>,
) {
    for (k, t) in from {
        match into.iter_mut().find(|(key, _)| *key == k) {
            Some((_, total)) => {
                total.input += t.input;
                total.output += t.output;
            }
            None => into.push((k, t)),
        }
    }
}
