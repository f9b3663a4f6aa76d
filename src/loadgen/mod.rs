//! `tokenpipe loadgen`: a streaming HTTP load generator on the relay's own reactor.
//!
//! It opens streams to a URL (over http or https), reads them to their end as a client of a model API
//! would, and reports what it measured: time to first byte, to first event and to completion, the gaps
//! between events, how many streams were *sustained* (no gap above `--sustain-factor` times the
//! upstream's `--pacing-ms`), and why the others failed. It is what the benchmark drives every relay
//! with, so it must cost little per stream (thousands of streams on two cores) and tell the truth about
//! latency under load (the open loop, `schedule`).
//!
//! It is an application of the reactor, like the relay and the mock (docs/15): each worker thread turns
//! its own [`Worker`] whose handler is a [`Generator`], and each stream is an entry of that worker's slab,
//! a [`LoadStream`] built on the relay's upstream client (`conn::upstream::UpstreamConn`, its transport,
//! TLS and body decoder) and on the relay's SSE watch (`relay::sse::SseWatch`, through
//! [`events::EventCounter`]).
//!
//! ```text
//! run(plan)                                      the main thread
//!  +- LoadTarget::new: parse the URL, resolve it, write the request's bytes once, TLS roots
//!  +- one thread per worker: Worker<Generator>   streams and totals shared out (schedule::share)
//!  |    begin -> turn, turn, ... until finished  Schedule says when to start, LoadStream::step reads
//!  |    -> its Tally                              counts and histograms, no lock
//!  +- the progress line, once a second, from each worker's Live
//!  `- Tally::merge -> Report: the table, or one JSON object (--json)
//! ```
//!
//! Modules: [`schedule`] (when streams start), [`stream`] (one stream's steps), [`events`] (what an event
//! is), [`generator`] (the handler), [`tally`] (what is counted), [`report`] (what is said), [`target`]
//! (what is asked of whom), [`progress`] (the line), [`pin`] (`--cpus`).

pub mod events;
pub mod generator;
pub mod pin;
pub mod progress;
pub mod report;
pub mod schedule;
pub mod stream;
pub mod tally;
pub mod target;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use crate::conn::tls;
use crate::reactor::{Worker, fdlimit};

pub use generator::{Generator, WorkerPlan};
use progress::{Counts, Live};
pub use report::Report;
use schedule::{Schedule, share};
pub use stream::LoadStream;
use tally::Tally;
use target::LoadTarget;

/// How a run starts its streams.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// `--streams N`: N in flight, each replaced when it ends.
    Closed { streams: u64 },
    /// `--rate R`: R starts per second, whatever the others do.
    Open { rate: f64 },
}

/// What a run does: the options of `tokenpipe loadgen`, checked (`config::loadgen`).
#[derive(Debug, Clone)]
pub struct Plan {
    pub url: String,
    pub method: String,
    /// Extra header fields, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Extra CA certificates (PEM) for an https URL.
    pub ca: Option<PathBuf>,
    pub mode: Mode,
    /// Most streams started, all workers together.
    pub total: Option<u64>,
    /// No stream starts after this.
    pub duration: Duration,
    /// A stream not ended this long after its origin fails.
    pub timeout: Duration,
    pub workers: usize,
    /// CPUs to run on; worker `w` takes `cpus[w % len]`.
    pub cpus: Vec<usize>,
    pub keep_alive: bool,
    /// The upstream's pause between events, if known: sustained streams are judged against it.
    pub pacing: Option<Duration>,
    pub sustain_factor: u32,
    pub json: bool,
    pub quiet: bool,
}

/// How busy one iteration of a worker's loop may be before it says so. A load generator's own delays are
/// measured (the start lag) rather than warned about, so only a very slow one is worth a line.
const LOOP_WARN: Duration = Duration::from_millis(250);

/// What the run's own deadline adds to `--duration` and `--timeout`: room for the last streams' ends to
/// be read before everything still open is cut.
const HARD_STOP_MARGIN: Duration = Duration::from_secs(1);

impl Plan {
    /// The largest gap between two events of a sustained stream; `None` without `--pacing-ms`.
    pub fn gap_limit(&self) -> Option<Duration> {
        self.pacing.map(|p| p.saturating_mul(self.sustain_factor))
    }

    /// Workers that have something to do: a closed loop of fewer streams than workers needs fewer.
    pub fn workers_used(&self) -> usize {
        match self.mode {
            Mode::Closed { streams } => {
                let streams = self.total.map_or(streams, |t| streams.min(t));
                self.workers
                    .min(usize::try_from(streams).unwrap_or(usize::MAX))
                    .max(1)
            }
            Mode::Open { .. } => self.workers.max(1),
        }
    }

    /// Worker `w`'s schedule (of `workers`), from `t0`.
    pub fn schedule(&self, w: usize, workers: usize, t0: Instant) -> Schedule {
        let (w, n) = (w as u64, workers as u64);
        match self.mode {
            Mode::Closed { streams } => {
                let streams = self.total.map_or(streams, |t| streams.min(t));
                let total = self.total.map(|t| share(t, n, w));
                Schedule::closed(t0, self.duration, share(streams, n, w), total)
            }
            Mode::Open { rate } => Schedule::open(t0, self.duration, rate, (w, n), self.total),
        }
    }

    /// A plan with the defaults of the command line, for tests.
    #[cfg(test)]
    pub fn example(url: &str, mode: Mode) -> Plan {
        Plan {
            url: url.to_string(),
            method: "POST".to_string(),
            headers: Vec::new(),
            body: br#"{"prompt":"Tell me a story.","max_tokens":20}"#.to_vec(),
            ca: None,
            mode,
            total: None,
            duration: Duration::from_secs(10),
            timeout: Duration::from_secs(60),
            workers: 1,
            cpus: Vec::new(),
            keep_alive: false,
            pacing: None,
            sustain_factor: 10,
            json: false,
            quiet: true,
        }
    }
}

/// Runs `plan` and prints its report (the table, or JSON with `--json`) on stdout; a progress line on
/// stderr while it runs, when both are terminals and not `--quiet`. Exit status 0 once a run has taken
/// place, whatever its streams did (the report says); 1 if it could not run.
pub fn main(plan: &Plan) -> ExitCode {
    let progress =
        !plan.quiet && std::io::stdout().is_terminal() && std::io::stderr().is_terminal();
    match run(plan, progress) {
        Ok(report) => {
            let text = match plan.json {
                true => report.json() + "\n",
                false => report.human(),
            };
            // Nothing useful is left to do if stdout is gone.
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tokenpipe loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `plan` (module docs) and returns its report; `progress` shows the line on stderr.
pub fn run(plan: &Plan, progress: bool) -> Result<Report, String> {
    let target = LoadTarget::new(plan)?;
    prepare_fds(plan);
    if !plan.cpus.is_empty() {
        // The main thread too: it only shows progress, but should not take a core the benchmark keeps
        // for the server. The workers pin themselves one CPU each below.
        pin::pin_current_thread(&plan.cpus).map_err(|e| format!("--cpus: {e}"))?;
    }
    let workers = plan.workers_used();
    let mut plans = Vec::with_capacity(workers);
    for _ in 0..workers {
        // Each worker has its own TLS configuration, hence its own session cache: no lock between them.
        let tls = match &target.tls {
            Some((roots, name)) => Some((tls::client_config(roots.clone())?, name.clone())),
            None => None,
        };
        plans.push(tls);
    }
    let t0 = Instant::now();
    let (done_tx, done_rx) = mpsc::channel();
    let mut lives = Vec::with_capacity(workers);
    let mut threads = Vec::with_capacity(workers);
    for (w, tls) in plans.into_iter().enumerate() {
        let live = Arc::new(Live::default());
        lives.push(live.clone());
        let worker_plan = WorkerPlan {
            addr: target.addr,
            request: target.request.clone(),
            tls,
            schedule: plan.schedule(w, workers, t0),
            timeout: plan.timeout,
            hard_stop: t0 + plan.duration + plan.timeout + HARD_STOP_MARGIN,
            keep_alive: plan.keep_alive,
            gap_limit: plan.gap_limit(),
        };
        let cpu = (!plan.cpus.is_empty()).then(|| plan.cpus[w % plan.cpus.len()]);
        let done = done_tx.clone();
        let name = format!("loadgen-{w}");
        let spawned = thread::Builder::new().name(name.clone()).spawn(move || {
            let result = work(name, worker_plan, cpu, &live);
            // The main thread waits for every worker's answer; it is gone only if it gave up.
            let _ = done.send(result);
        });
        threads.push(spawned.map_err(|e| format!("cannot start a worker thread: {e}"))?);
    }
    drop(done_tx);
    let tallies = wait(&done_rx, workers, &lives, t0, progress);
    let elapsed = t0.elapsed();
    for t in threads {
        t.join()
            .map_err(|_| "a worker thread panicked".to_string())?;
    }
    let mut all = Tally::new(plan.gap_limit());
    for tally in tallies? {
        all.merge(&tally);
    }
    Ok(Report::new(plan, &all, elapsed))
}

/// One worker thread: pin it, build its loop, run its part of the plan to the end.
fn work(name: String, plan: WorkerPlan, cpu: Option<usize>, live: &Live) -> Result<Tally, String> {
    if let Some(cpu) = cpu {
        pin::pin_current_thread(&[cpu]).map_err(|e| format!("{name}: --cpus {cpu}: {e}"))?;
    }
    let generator = Generator::new(plan);
    let mut worker = Worker::new(name.clone(), LOOP_WARN, generator)
        .map_err(|e| format!("{name}: cannot make its event loop: {e}"))?;
    let (generator, cx) = worker.parts();
    generator.begin(cx);
    while !worker.handler().finished() {
        worker
            .turn(None)
            .map_err(|e| format!("{name}: poll failed: {e}"))?;
        worker.handler().publish(live);
    }
    Ok(worker.handler().take_tally())
}

/// Collects the workers' tallies, showing the progress line once a second meanwhile.
fn wait(
    done: &mpsc::Receiver<Result<Tally, String>>,
    workers: usize,
    lives: &[Arc<Live>],
    t0: Instant,
    progress: bool,
) -> Result<Vec<Tally>, String> {
    let mut tallies = Vec::with_capacity(workers);
    let mut shown = false;
    let (mut before, mut at) = (Counts::default(), t0);
    while tallies.len() < workers {
        let next = at + Duration::from_secs(1);
        match done.recv_timeout(next.saturating_duration_since(Instant::now())) {
            Ok(result) => tallies.push(result?),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let now = lives
                    .iter()
                    .fold(Counts::default(), |sum, l| sum + l.read());
                let since = at.elapsed();
                at = Instant::now();
                if progress {
                    let line = progress::line(t0.elapsed(), now, before, since);
                    // `\r` and erase-to-end: the line is rewritten in place.
                    eprint!("\r{line}\x1b[K");
                    shown = true;
                }
                before = now;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err("a worker thread ended without its figures".to_string());
            }
        }
    }
    if shown {
        eprintln!();
    }
    Ok(tallies)
}

/// Raises the descriptor limit to the hard limit and grows the table to it, as the relay does
/// (`reactor::fdlimit`: each stream is a descriptor, and a table that grows while threads run stalls
/// them). Says so when the limit is below what a closed loop will hold open.
fn prepare_fds(plan: &Plan) {
    let limit = match fdlimit::raise(None) {
        Ok(limit) => limit.after,
        Err(e) => {
            log::warn!("could not raise the file descriptor limit: {e}");
            return;
        }
    };
    if let Err(e) = fdlimit::grow_table(limit) {
        log::warn!("could not grow the descriptor table: {e}");
    }
    if let Mode::Closed { streams } = plan.mode
        && streams + 16 > limit
    {
        log::warn!(
            "the file descriptor limit ({limit}) is below --streams {streams}: the streams past it \
             will fail to connect; raise it with `ulimit -n`"
        );
    }
}
