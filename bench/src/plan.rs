//! What is run: the load at each concurrency level, the scenarios, the runs, and which CPU each process
//! is pinned to. Every figure here is a choice; the reasons are in the comments and in
//! `docs/benchmarks.md`.

use serde::Serialize;

use crate::peers::Peer;

/// The mock's pause between two events when the load allows it: 20 ms, 50 tokens a second per stream,
/// a fast model.
const FAST_PACE_MS: u64 = 20;
/// The whole load's events per second, at most: above 600 streams the pace slows so that the events per
/// second stay at this. On two cores the mock and the load generator share one core, and at 30,000 events
/// a second they use about half of it, so they are never the bottleneck (the direct-to-mock runs check
/// it); a one-core relay then has room to show its cost per chunk without being saturated (the Python
/// peer is, from 100 streams on).
const MAX_EVENTS_PER_S: u64 = 30_000;
/// Tokens per answer: the same at every level, so that the costs of a stream's start (accept, parse,
/// connect or pool, close) weigh the same in the cost per chunk everywhere: 20 tokens are 23 events
/// (the tokens, the finish chunk, the usage chunk, `[DONE]`).
const TOKENS: u32 = 20;
/// Streams at the largest level, at most (issue 9: 9,000 with a 20,000-descriptor limit).
const MAX_STREAMS: u64 = 9_000;

/// One concurrency level: `streams` in flight against a mock answering `tokens` tokens, one event every
/// `interval_ms`.
///
/// The load is an open loop: streams start at an even rate, `streams` per stream length, so that once
/// the first ones end, `streams` are in flight, and stay so for `steady_ms` before the starts stop. (A
/// closed loop would start them all at once, and since the mock paces every stream alike, all of them
/// would then send their events in the same instant, for the whole run: a relay would find hundreds of
/// events per wakeup, which real streams, started at different times, never give it.) One stream is a
/// closed loop of one, for `steady_ms`.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Level {
    pub streams: u64,
    pub interval_ms: u64,
    pub tokens: u32,
    /// How long `streams` streams are in flight together.
    pub steady_ms: u64,
}

impl Level {
    /// The level of `streams`, at the pace the event budget allows.
    pub fn new(streams: u64, tokens: u32, steady_ms: u64) -> Level {
        let interval_ms = FAST_PACE_MS.max(streams * 1000 / MAX_EVENTS_PER_S);
        Level {
            streams,
            interval_ms,
            tokens,
            steady_ms,
        }
    }

    /// How long one stream lasts: its first event leaves with the head, then one event per interval.
    pub fn stream_ms(&self) -> u64 {
        (u64::from(self.tokens) + 2) * self.interval_ms
    }

    /// Stream starts per second: `streams` in flight, by Little's law.
    pub fn rate(&self) -> f64 {
        self.streams as f64 * 1000.0 / self.stream_ms().max(1) as f64
    }

    /// How long streams keep starting: the ramp up (one stream's length), then the steady part.
    pub fn starts_ms(&self) -> u64 {
        self.stream_ms() + self.steady_ms
    }

    /// The streams started in all.
    pub fn total(&self) -> u64 {
        (self.rate() * self.starts_ms() as f64 / 1000.0).round() as u64
    }

    /// How long a load at this level takes: up, steady, and down again.
    pub fn load_ms(&self) -> u64 {
        if self.streams <= 1 {
            self.steady_ms + self.stream_ms()
        } else {
            2 * self.stream_ms() + self.steady_ms
        }
    }
}

/// The CPUs each process runs on.
#[derive(Debug, Clone, Serialize)]
pub struct Layout {
    /// A one-worker relay.
    pub relay: Vec<usize>,
    /// A two-worker relay.
    pub relay_two: Vec<usize>,
    pub mock: Vec<usize>,
    pub loadgen: Vec<usize>,
    /// The time-to-first-event probe with everything on one core.
    pub one_core: Vec<usize>,
}

impl Layout {
    /// On two CPUs: the relay alone on the first, the mock and the load generator on the second (they
    /// use about half of it at the largest load); a two-worker relay on both. With four or more, each has
    /// its own. On one CPU nothing is pinned.
    pub fn for_cpus(cpus: &[usize]) -> Layout {
        let c = |i: usize| vec![cpus[i]];
        match cpus.len() {
            0 | 1 => Layout {
                relay: vec![],
                relay_two: vec![],
                mock: vec![],
                loadgen: vec![],
                one_core: vec![],
            },
            2 | 3 => Layout {
                relay: c(0),
                relay_two: vec![cpus[0], cpus[1]],
                mock: c(cpus.len() - 1),
                loadgen: c(cpus.len() - 1),
                one_core: c(0),
            },
            _ => Layout {
                relay: c(0),
                relay_two: vec![cpus[0], cpus[1]],
                mock: c(2),
                loadgen: c(3),
                one_core: c(0),
            },
        }
    }
}

/// The system call counting runs of one level.
#[derive(Debug, Clone, Serialize)]
pub struct SyscallRuns {
    pub level: Level,
    pub perf: Vec<Peer>,
    pub strace: Vec<Peer>,
}

/// Everything one `compare` does.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub quick: bool,
    /// Repetitions of every measurement; the relays' order rotates from one run to the next.
    pub runs: usize,
    /// The main comparison, one worker each.
    pub levels: Vec<Level>,
    /// `--workers 2`: tokenpipe against the multi-threaded tokio peers.
    pub workers_two: Vec<Level>,
    /// tokenpipe in front of the mock over TLS, against the same over plain TCP.
    pub tls: Vec<Level>,
    /// Separate runs that count system calls, at each level: which peers `perf stat` counts, and which
    /// run under `strace -c -f`.
    pub syscalls: Vec<SyscallRuns>,
    /// Streams of each time-to-first-event probe at one stream (one after the other).
    pub ttfe_streams: u64,
    /// The open-loop probe that measures the time to first event while a level's load runs: starts per
    /// second.
    pub probe_rate: f64,
    pub layout: Layout,
    /// The descriptor limit every process gets, and the largest level it allows.
    pub fd_limit: u64,
}

impl Plan {
    /// The full run (about 15 minutes on two cores) or the quick one (about a minute).
    pub fn new(quick: bool, runs: Option<usize>, fd_limit: u64, cpus: &[usize]) -> Plan {
        let layout = Layout::for_cpus(cpus);
        // Each stream holds two descriptors in a relay (its client and its upstream connection), one in
        // the load generator and one in the mock; 2,000 are left for everything else.
        let largest = (fd_limit.saturating_sub(2_000) / 2).min(MAX_STREAMS) / 100 * 100;
        if quick {
            let level = |streams| Level::new(streams, 10, 1_000);
            return Plan {
                quick,
                runs: runs.unwrap_or(1),
                levels: vec![level(1), level(100)],
                workers_two: vec![],
                tls: vec![],
                syscalls: vec![],
                ttfe_streams: 300,
                probe_rate: 100.0,
                layout,
                fd_limit,
            };
        }
        let level = |streams| Level::new(streams, TOKENS, 1_500);
        let mut levels = vec![level(1), level(100), level(1_000)];
        if largest > 1_000 {
            levels.push(level(largest));
        }
        // The targets are set at 1,000 streams and at the largest level: the other scenarios run there.
        let high: Vec<Level> = levels
            .iter()
            .copied()
            .filter(|l| l.streams >= 1_000)
            .collect();
        let all = Peer::RELAYS.to_vec();
        // Counting runs are shorter: the same streams at the same pace, with a steady part of 0.5 s.
        let syscalls = high
            .iter()
            .map(|&l| Level {
                steady_ms: 500,
                ..l
            })
            .map(|level| {
                if level.streams == 1_000 {
                    SyscallRuns {
                        level,
                        perf: all.clone(),
                        strace: all.clone(),
                    }
                } else {
                    // At the largest level the Python peer cannot keep up at all (its streams time
                    // out), and the others would crawl under the tracer: strace only tokenpipe (the
                    // target) and the floor (what the kernel costs).
                    SyscallRuns {
                        level,
                        perf: all
                            .iter()
                            .copied()
                            .filter(|&p| p != Peer::PythonFastapi)
                            .collect(),
                        strace: vec![Peer::Tokenpipe, Peer::Floor],
                    }
                }
            })
            .collect();
        Plan {
            quick,
            runs: runs.unwrap_or(3),
            levels,
            workers_two: high.clone(),
            tls: high,
            syscalls,
            ttfe_streams: 500,
            probe_rate: 100.0,
            layout,
            fd_limit,
        }
    }

    /// About how long the whole comparison takes, in seconds, for `relays` relays: every load plus about
    /// 1.5 s to start, warm up and stop a relay, python's slowness not counted.
    pub fn estimate_s(&self, relays: usize) -> f64 {
        let run = |l: &Level| l.load_ms() as f64 / 1000.0 + 1.5;
        let runs = self.runs as f64;
        let with_direct = (relays + 1) as f64;
        let ttfe = 2.0 * with_direct * runs * 2.0;
        let levels: f64 = self
            .levels
            .iter()
            .map(|l| with_direct * runs * run(l))
            .sum();
        let two: f64 = self.workers_two.iter().map(|l| 3.0 * runs * run(l)).sum();
        let tls: f64 = self.tls.iter().map(|l| 2.0 * runs * run(l)).sum();
        let syscalls: f64 = self
            .syscalls
            .iter()
            .map(|r| (r.perf.len() + r.strace.len()) as f64 * run(&r.level))
            .sum();
        ttfe + levels + two + tls + syscalls
    }

    /// The largest level of the main comparison.
    pub fn largest(&self) -> u64 {
        self.levels.iter().map(|l| l.streams).max().unwrap_or(1)
    }
}
