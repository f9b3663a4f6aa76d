//! One measured run: a fresh relay in front of the mock, warmed up with one stream, then loaded by
//! `tokenpipe loadgen` while the benchmark reads the relay's CPU time and memory from `/proc`.
//!
//! ```text
//!   start relay ── warm-up stream ── idle figures ── load ──────────────────────── end figures ── stop
//!                                                    │  probe (open loop, 1 token)  │
//!                                                    └─ RssAnon every 10 ms ────────┘
//! ```
//!
//! Three kinds of run share that shape:
//! - [`load_run`]: N streams in flight (an open loop, see [`Level`]); the figures per chunk and per
//!   stream; and, from a second, light load generator (the probe) started once the N are in flight, the
//!   time to first event of new streams at that load;
//! - [`ttfe_run`]: one stream at a time, many times, against a mock that answers at once: the time to
//!   first event at one stream;
//! - [`perf_run`] and [`strace_run`]: a load run with the relay's system calls counted, in the kernel by
//!   `perf stat` (the total, at full speed) or by `strace -c -f` (by name, but slowed down); their
//!   other figures are not used.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::http;
use crate::loadgen::{self, Load, Report, Shape};
use crate::peers::{self, Peer, Relay, Tools, Upstream};
use crate::plan::{Level, Plan};
use crate::procs::Proc;
use crate::sys::{self, Cpu, Memory};

/// How often the relay's memory is read during a load.
const SAMPLE_EVERY: Duration = Duration::from_millis(10);

/// The state every run needs: the tools, the plan, where the logs go, and a counter that names runs.
pub struct Bench {
    pub tools: Tools,
    pub plan: Plan,
    pub logs: PathBuf,
    seq: usize,
}

impl Bench {
    pub fn new(tools: Tools, plan: Plan, logs: PathBuf) -> Bench {
        Bench {
            tools,
            plan,
            logs,
            seq: 0,
        }
    }

    /// A fresh name for a run's files: `042-load-1000-nginx-r2`.
    fn tag(&mut self, what: &str) -> String {
        self.seq += 1;
        format!("{:03}-{what}", self.seq)
    }
}

/// tokenpipe's mock upstream, running.
pub struct Mock {
    _proc: Proc,
    pub upstream: Upstream,
}

/// Starts the mock: `tokens` tokens per answer, one event every `interval_ms` (0: as fast as the reader
/// takes them), one worker on `cpus`; over TLS with the test certificate if `tls` is given.
pub fn start_mock(
    b: &mut Bench,
    interval_ms: u64,
    tokens: u32,
    cpus: &[usize],
    tls: Option<&crate::pki::Pki>,
) -> Result<Mock, String> {
    let tag = b.tag(&format!("mock-{interval_ms}ms"));
    let mut cmd = Command::new(b.tools.tokenpipe());
    cmd.args(["mock-upstream", "--listen", "127.0.0.1:0", "--workers", "1"])
        .args(["--tokens", &tokens.to_string()])
        .args(["--interval-ms", &interval_ms.to_string()]);
    if let Some(pki) = tls {
        cmd.arg("--tls-cert")
            .arg(&pki.cert)
            .arg("--tls-key")
            .arg(&pki.key);
    }
    let log = b.logs.join(format!("{tag}.log"));
    let mut proc = Proc::start("mock", cmd, cpus, &log, &log)?;
    let port = proc.wait_listening(Duration::from_secs(10))?;
    let upstream = match tls {
        Some(pki) => Upstream {
            url: format!("https://localhost:{port}"),
            port,
            ca: Some(pki.ca.clone()),
        },
        None => Upstream {
            url: format!("http://127.0.0.1:{port}"),
            port,
            ca: None,
        },
    };
    Ok(Mock {
        _proc: proc,
        upstream,
    })
}

/// What a run is.
#[derive(Debug, Clone)]
pub struct Spec<'a> {
    /// `load`, `workers-2`, `upstream-plain`, `upstream-tls`, `strace`, `ttfe-one-core`,
    /// `ttfe-two-cores`.
    pub scenario: &'static str,
    pub peer: Peer,
    pub level: Level,
    pub run: usize,
    pub workers: usize,
    pub relay_cpus: &'a [usize],
    pub loadgen_cpus: &'a [usize],
    pub upstream: &'a Upstream,
}

/// Everything one run measured; `None` where a figure does not apply or could not be taken. Written as
/// it is into `raw.json`.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Sample {
    pub scenario: String,
    pub peer: String,
    pub streams: u64,
    pub run: usize,
    pub workers: usize,
    pub interval_ms: u64,
    pub tokens: u32,
    /// The 1-minute load average when the run started: the machine's other work.
    pub load_average: f64,
    /// Why the run could not be done or finished.
    pub error: Option<String>,

    /// Events received by the load generators (the load and the probe): the relayed chunks.
    pub chunks: u64,
    /// Relay CPU (all threads, user + system) over the load, per chunk, from the threads' schedstat.
    pub cpu_us_per_chunk: Option<f64>,
    /// The same from `utime + stime` (10 ms ticks): the cross-check.
    pub cpu_ticks_us_per_chunk: Option<f64>,
    pub cpu_s: Option<f64>,
    /// RssAnon after the warm-up, before the load.
    pub rss_idle_kib: Option<u64>,
    /// The largest RssAnon seen during the load.
    pub rss_load_kib: Option<u64>,
    /// (rss_load - rss_idle) / streams.
    pub kib_per_stream: Option<f64>,
    /// VmHWM at the end: the peak of the whole resident set.
    pub peak_rss_kib: Option<u64>,
    /// tokenpipe's own count of its system calls (GET /metrics) per chunk.
    pub own_syscalls_per_chunk: Option<f64>,

    /// Streams started, completed and sustained by the load (not the probe), and failures of both.
    pub started: u64,
    pub completed: u64,
    pub sustained: u64,
    pub failed: u64,
    pub errors: BTreeMap<String, String>,
    /// The load's own time to first event and gaps.
    pub load_ttfe_p50_us: Option<u64>,
    pub load_ttfe_p99_us: Option<u64>,
    pub gap_p50_us: Option<u64>,
    pub gap_p99_us: Option<u64>,
    pub gap_max_us: Option<u64>,
    /// The probe's time to first event (or the one-stream run's): what "added TTFE" is computed from.
    pub ttfe_p50_us: Option<u64>,
    pub ttfe_p99_us: Option<u64>,
    pub ttfe_count: u64,

    /// strace runs: system calls per chunk, and the calls by name.
    pub syscalls_per_chunk: Option<f64>,
    pub syscalls: BTreeMap<String, u64>,

    /// loadgen's reports, whole.
    pub load: Option<serde_json::Value>,
    pub probe: Option<serde_json::Value>,
}

impl Sample {
    pub(crate) fn new(s: &Spec) -> Sample {
        Sample {
            scenario: s.scenario.to_string(),
            peer: s.peer.name().to_string(),
            streams: s.level.streams,
            run: s.run,
            workers: s.workers,
            interval_ms: s.level.interval_ms,
            tokens: s.level.tokens,
            load_average: sys::load_average(),
            ..Sample::default()
        }
    }

    /// Calls by name from a tracer, and per chunk from their `total`; `None` when there is no total.
    pub(crate) fn set_syscalls(&mut self, calls: BTreeMap<String, u64>) -> Option<()> {
        let total = *calls.get("total")?;
        self.syscalls = calls;
        self.syscalls_per_chunk = Some(total as f64 / self.chunks.max(1) as f64);
        Some(())
    }

    pub(crate) fn note_load(&mut self, r: &Report) {
        self.started = r.started;
        self.completed = r.completed;
        self.sustained = r.sustained();
        self.failed += r.failed.total;
        self.errors.extend(r.errors.clone());
        self.load_ttfe_p50_us = r.first_event_us.p50;
        self.load_ttfe_p99_us = r.first_event_us.p99;
        self.gap_p50_us = r.gap_us.p50;
        self.gap_p99_us = r.gap_us.p99;
        self.gap_max_us = r.gap_us.max;
        self.chunks += r.events;
        self.load = Some(r.raw.clone());
    }
}

/// The relay started for `s` and warmed up, with its tag (for file names).
pub(crate) fn prepare(b: &mut Bench, s: &Spec) -> Result<(Relay, String), String> {
    let tag = b.tag(&format!(
        "{}-{}-{}-r{}",
        s.scenario,
        s.level.streams,
        s.peer.name(),
        s.run
    ));
    let relay = peers::start(
        s.peer,
        &b.tools,
        s.upstream,
        s.workers,
        s.relay_cpus,
        &b.logs,
        &tag,
    )?;
    // One short stream first: the relay faults in its code paths, makes its first buffers and, where it
    // pools, its first upstream connection, so that the idle figures are those of a relay in service.
    let warm = Load {
        url: relay.url(),
        body: peers::body(s.peer, 1),
        shape: Shape::Closed {
            streams: 1,
            total: Some(1),
        },
        duration: Duration::from_secs(1),
        timeout: Duration::from_millis(4 * s.level.interval_ms) + Duration::from_secs(10),
        pacing_ms: s.level.interval_ms,
        cpus: s.loadgen_cpus.to_vec(),
        ca: None,
    };
    let json = b.logs.join(format!("{tag}-warm.json"));
    let proc = warm.start(
        &b.tools.tokenpipe(),
        "loadgen (warm-up)",
        &json,
        &b.logs.join(format!("{tag}-warm.log")),
    )?;
    let report = loadgen::finish(proc, &warm, &json)?;
    if report.completed != 1 {
        return Err(format!(
            "{}: the warm-up stream did not complete: {:?}",
            s.peer.name(),
            report.errors
        ));
    }
    Ok((relay, tag))
}

/// The main load of a level: an open loop that keeps `streams` in flight for the level's steady part
/// (see [`Level`]); one stream is a closed loop of one.
pub(crate) fn main_load(s: &Spec, relay: &Relay) -> Load {
    let level = &s.level;
    let stream = Duration::from_millis(level.stream_ms());
    let shape = if level.streams <= 1 {
        Shape::Closed {
            streams: 1,
            total: None,
        }
    } else {
        Shape::Open {
            rate: level.rate(),
            total: level.total(),
        }
    };
    let duration = if level.streams <= 1 {
        Duration::from_millis(level.steady_ms)
    } else {
        Duration::from_millis(level.starts_ms())
    };
    Load {
        url: relay.url(),
        body: peers::body(s.peer, level.tokens),
        shape,
        duration,
        // A stream's length and 5 s: a stream that late has had gaps far above ten times the pace, so
        // it is not sustained anyway; cutting it keeps a relay that cannot keep up (the Python peer) from
        // stretching the run.
        timeout: stream + Duration::from_secs(5),
        pacing_ms: level.interval_ms,
        cpus: s.loadgen_cpus.to_vec(),
        ca: None,
    }
}

/// The probe: new one-token streams at `rate` per second for a while, in an open loop, so that each
/// one's time to first event is measured from when it was due.
fn probe_load(s: &Spec, relay: &Relay, rate: f64, window: Duration) -> Load {
    Load {
        url: relay.url(),
        body: peers::body(s.peer, 1),
        shape: Shape::Open {
            rate,
            total: ((rate * window.as_secs_f64()).round() as u64).max(1),
        },
        duration: window,
        timeout: Duration::from_millis(4 * s.level.interval_ms) + Duration::from_secs(10),
        pacing_ms: s.level.interval_ms,
        cpus: s.loadgen_cpus.to_vec(),
        ca: None,
    }
}

/// A load run (see the module's docs).
pub fn load_run(b: &mut Bench, s: &Spec) -> Sample {
    let mut sample = Sample::new(s);
    if let Err(e) = load_run_into(b, s, &mut sample) {
        sample.error = Some(e);
    }
    sample
}

fn load_run_into(b: &mut Bench, s: &Spec, sample: &mut Sample) -> Result<(), String> {
    let (relay, tag) = prepare(b, s)?;
    let pid = relay.pid();
    let own_before = (s.peer == Peer::Tokenpipe)
        .then(|| http::own_counters(relay.port))
        .flatten();
    let idle = pid.map(Memory::of).transpose().map_err(|e| e.to_string())?;
    let cpu_before = pid.map(Cpu::of).transpose().map_err(|e| e.to_string())?;

    let load = main_load(s, &relay);
    let load_json = b.logs.join(format!("{tag}-load.json"));
    let tokenpipe = b.tools.tokenpipe();
    let load_log = b.logs.join(format!("{tag}-load.log"));
    let mut load_proc = load.start(&tokenpipe, "loadgen", &load_json, &load_log)?;

    // The probe runs in the steady part of the load, when all the streams are in flight (2 s at most).
    // At one stream there is no load to probe under: the one-stream runs measure that.
    let probe = (s.level.streams > 1).then(|| {
        let window = Duration::from_millis(s.level.steady_ms).min(Duration::from_secs(2));
        let at = Duration::from_millis(s.level.stream_ms());
        (at, probe_load(s, &relay, b.plan.probe_rate, window))
    });
    let probe_json = b.logs.join(format!("{tag}-probe.json"));
    let mut probe_proc = None;

    let started = Instant::now();
    let bound = load.bound();
    let mut rss_load = idle.map_or(0, |m| m.rss_anon_kib);
    loop {
        if let Some(pid) = pid
            && let Ok(m) = Memory::of(pid)
        {
            rss_load = rss_load.max(m.rss_anon_kib);
        }
        if let Some((at, probe)) = &probe
            && probe_proc.is_none()
            && started.elapsed() >= *at
        {
            let log = b.logs.join(format!("{tag}-probe.log"));
            probe_proc = Some(probe.start(&tokenpipe, "loadgen (probe)", &probe_json, &log)?);
        }
        if load_proc.exited().is_some() || started.elapsed() > bound {
            break;
        }
        std::thread::sleep(SAMPLE_EVERY);
    }
    let report = loadgen::finish(load_proc, &load, &load_json)?;
    sample.note_load(&report);
    if let (Some(proc), Some((_, probe))) = (probe_proc, &probe) {
        let p = loadgen::finish(proc, probe, &probe_json)?;
        sample.chunks += p.events;
        sample.failed += p.failed.total;
        sample.ttfe_p50_us = p.first_event_us.p50;
        sample.ttfe_p99_us = p.first_event_us.p99;
        sample.ttfe_count = p.first_event_us.count;
        sample.probe = Some(p.raw);
    }

    if let (Some(pid), Some(before), Some(idle)) = (pid, cpu_before, idle) {
        let cpu = Cpu::of(pid).map_err(|e| e.to_string())?.since(before);
        let end = Memory::of(pid).map_err(|e| e.to_string())?;
        let chunks = sample.chunks.max(1) as f64;
        sample.cpu_us_per_chunk = Some(cpu.sched_ns as f64 / 1e3 / chunks);
        sample.cpu_ticks_us_per_chunk = Some(cpu.ticks_ns as f64 / 1e3 / chunks);
        sample.cpu_s = Some(cpu.sched_ns as f64 / 1e9);
        sample.rss_idle_kib = Some(idle.rss_anon_kib);
        sample.rss_load_kib = Some(rss_load.max(end.rss_anon_kib));
        sample.kib_per_stream =
            Some(rss_load.saturating_sub(idle.rss_anon_kib) as f64 / s.level.streams.max(1) as f64);
        sample.peak_rss_kib = Some(end.hwm_kib);
    }
    if let (Some(before), Some(after)) = (own_before, http::own_counters(relay.port)) {
        sample.own_syscalls_per_chunk =
            Some((after.syscalls - before.syscalls) / sample.chunks.max(1) as f64);
    }
    Ok(())
}

/// A one-stream run: `ttfe_streams` one-token streams, one after the other, each one's time to first event
/// measured (the mock answers at once: `--interval-ms 0`).
pub fn ttfe_run(b: &mut Bench, s: &Spec) -> Sample {
    let mut sample = Sample::new(s);
    let result = (|| -> Result<(), String> {
        let (relay, tag) = prepare(b, s)?;
        let load = Load {
            url: relay.url(),
            body: peers::body(s.peer, 1),
            shape: Shape::Closed {
                streams: 1,
                total: Some(b.plan.ttfe_streams),
            },
            duration: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
            pacing_ms: 1,
            cpus: s.loadgen_cpus.to_vec(),
            ca: None,
        };
        let json = b.logs.join(format!("{tag}-ttfe.json"));
        let proc = load.start(
            &b.tools.tokenpipe(),
            "loadgen (ttfe)",
            &json,
            &b.logs.join(format!("{tag}-ttfe.log")),
        )?;
        let report = loadgen::finish(proc, &load, &json)?;
        sample.note_load(&report);
        // Sustained is not judged here: a mock that answers at once has no pace.
        sample.sustained = report.completed;
        sample.ttfe_p50_us = report.first_event_us.p50;
        sample.ttfe_p99_us = report.first_event_us.p99;
        sample.ttfe_count = report.first_event_us.count;
        drop(relay);
        Ok(())
    })();
    if let Err(e) = result {
        sample.error = Some(e);
    }
    sample
}
