//! The supervisor: one thread per server that hears every worker's end, and runs the drain.
//!
//! Each worker's thread reports its end on a channel (`ExitReport`), and a drain is asked for on the same
//! channel ([`Drainer::drain`], which `Running::drain` and the binary's signal thread call), so one thread
//! sees both, in order, and nothing else decides when the server is done:
//!
//! ```text
//!  Drainer::drain ─ sets the draining flag at once: answers say Connection: close, /readyz says 503
//!        │
//!        └─ Note::Drain ─┐
//!  ExitReport ─ Note::Exit ┴─▶ channel ─▶ Supervisor::run
//!                                           at start + grace:    Remote::drain, each front worker
//!                                           front workers gone:  Remote::stop, the embedded mock
//!                                           at start + timeout:  Remote::stop, every worker left (cut)
//!                                           ▼
//!                              Running::wait returns Ok(Drained), or Err(why)
//! ```
//!
//! *Front* workers face clients and drain: the relay's, or a mock's started on its own. The embedded mock
//! is behind the relay: its listener must stay open while a relay worker may still need an upstream
//! connection, so it is stopped only once every front worker has left. A drained worker leaves when its
//! slab is empty (`reactor::Remote::drain`); at the timeout, `Remote::stop` drops what is left, and a
//! client whose stream is cut sees its connection close without the last chunk: a failed transfer.
//!
//! Without a drain, the first worker to stop is an error, as it always was: running on with fewer workers
//! would hide it. A worker that fails *during* a drain is one too.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use crate::config::DrainPlan;
use crate::reactor::Remote;
use crate::relay::{RelayCounts, RelayStats};

/// How long stopped workers get to end their threads before the supervisor reports without them (a
/// stopped worker ends within one iteration; this only bounds the exit if one is stuck).
const STOP_WAIT: Duration = Duration::from_secs(1);

/// What the supervisor hears.
pub enum Note {
    /// A worker's thread ended: its name and what `Worker::run` returned.
    Exit(String, io::Result<()>),
    /// Drain as planned (the first request counts; later ones change nothing).
    Drain(DrainPlan),
}

/// What a drain did, as `Running::wait` reports it (the relay's figures; zeros for a mock).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drained {
    /// Exchanges in flight when the drain began.
    pub in_flight: u64,
    /// Streams that ended properly during the drain.
    pub completed: u64,
    /// Exchanges that failed on their own during the drain (an upstream error).
    pub failed: u64,
    /// Exchanges still in flight at the timeout, cut when their worker was stopped.
    pub cut: u64,
    /// From the start of the drain to the end of the last worker.
    pub took: Duration,
}

/// Starts a drain from any thread.
#[derive(Clone)]
pub struct Drainer {
    notes: Sender<Note>,
    draining: Arc<AtomicBool>,
}

impl Drainer {
    pub(super) fn new(notes: Sender<Note>, draining: Arc<AtomicBool>) -> Drainer {
        Drainer { notes, draining }
    }

    /// Starts a drain and returns at once. The draining flag is set before this returns, so an answer
    /// given after it says `Connection: close` and `/readyz` says 503; the listeners close `plan.grace`
    /// later, and `Running::wait` returns when the drain is over.
    pub fn drain(&self, plan: DrainPlan) {
        self.draining.store(true, Ordering::Release);
        // The supervisor is gone only once every worker is: then there is nothing left to drain.
        let _ = self.notes.send(Note::Drain(plan));
    }
}

/// A worker as the supervisor sees it.
pub struct Member {
    pub name: String,
    pub remote: Remote,
    /// Faces clients and drains (else: the embedded mock, stopped after the front).
    pub front: bool,
    pub running: bool,
}

/// A drain in progress.
struct Drain {
    plan: DrainPlan,
    started: Instant,
    /// The front workers were told to drain (at the end of the grace).
    doors_closed: bool,
    /// Every worker left was stopped (at the timeout, or the mock once the front had left).
    stopped: Option<Instant>,
    at_start: RelayCounts,
    cut: u64,
}

impl Drain {
    /// When the supervisor must act if no worker reports first.
    fn next_deadline(&self) -> Instant {
        match (self.doors_closed, self.stopped) {
            (false, _) => self.started + self.plan.grace.min(self.plan.timeout),
            (true, None) => self.started + self.plan.timeout,
            (true, Some(at)) => at + STOP_WAIT,
        }
    }
}

/// The thread that waits for the workers' ends and runs the drain.
pub struct Supervisor {
    pub notes: Receiver<Note>,
    pub crew: Vec<Member>,
    pub relay: Option<Arc<RelayStats>>,
}

impl Supervisor {
    /// Runs until the server is done: `Ok` after a drain, `Err` when a worker stopped on its own.
    pub fn run(mut self) -> Result<Drained, String> {
        let mut drain: Option<Drain> = None;
        loop {
            let note = match drain.as_ref().map(Drain::next_deadline) {
                None => self.notes.recv().ok(),
                Some(at) => {
                    match self
                        .notes
                        .recv_timeout(at.saturating_duration_since(Instant::now()))
                    {
                        Ok(note) => Some(note),
                        Err(RecvTimeoutError::Timeout) => {
                            if let Some(d) = &mut drain
                                && let Some(done) = self.on_deadline(d)
                            {
                                return Ok(done);
                            }
                            continue;
                        }
                        Err(RecvTimeoutError::Disconnected) => None,
                    }
                }
            };
            let Some(note) = note else {
                return Err("all workers are gone".into());
            };
            match note {
                Note::Drain(plan) => {
                    if drain.is_none() {
                        drain = Some(self.start(plan));
                    }
                }
                Note::Exit(name, result) => {
                    let Some(d) = drain.as_mut() else {
                        return Err(match result {
                            Ok(()) => format!("worker {name} stopped"),
                            Err(e) => format!("worker {name} failed: {e}"),
                        });
                    };
                    if let Err(e) = result {
                        return Err(format!("worker {name} failed while draining: {e}"));
                    }
                    if let Some(done) = self.left(d, &name) {
                        return Ok(done);
                    }
                }
            }
        }
    }

    fn counts(&self) -> RelayCounts {
        self.relay
            .as_ref()
            .map_or_else(RelayCounts::default, |s| s.snapshot())
    }

    /// The drain begins: one line for the log, and the timer for the end of the grace.
    fn start(&self, plan: DrainPlan) -> Drain {
        let at_start = self.counts();
        let what = match self.relay {
            Some(_) => format!(" ({} in flight)", at_start.in_flight),
            None => String::new(),
        };
        log::info!(
            "draining{what}: the listeners close in {:.1} s, what is left is cut in {:.1} s",
            plan.grace.min(plan.timeout).as_secs_f64(),
            plan.timeout.as_secs_f64()
        );
        Drain {
            plan,
            started: Instant::now(),
            doors_closed: false,
            stopped: None,
            at_start,
            cut: 0,
        }
    }

    /// A deadline passed: close the doors (end of the grace), or cut what is left (the timeout), or stop
    /// waiting for workers that do not end (returns the report then).
    fn on_deadline(&mut self, d: &mut Drain) -> Option<Drained> {
        if !d.doors_closed {
            d.doors_closed = true;
            for m in self.crew.iter().filter(|m| m.front && m.running) {
                if let Err(e) = m.remote.drain() {
                    log::warn!("cannot wake worker {} to drain it: {e}", m.name);
                }
            }
            return None;
        }
        if d.stopped.is_none() {
            d.cut = self.counts().in_flight;
            self.stop(d, |_| true);
            return None;
        }
        let stuck: Vec<&str> = self
            .crew
            .iter()
            .filter(|m| m.running)
            .map(|m| m.name.as_str())
            .collect();
        log::warn!("workers {stuck:?} did not stop within {STOP_WAIT:?}; exiting without them");
        Some(self.report(d))
    }

    /// Stops the running workers that `which` picks.
    fn stop(&self, d: &mut Drain, which: impl Fn(&Member) -> bool) {
        d.stopped = Some(Instant::now());
        for m in self.crew.iter().filter(|m| m.running && which(m)) {
            if let Err(e) = m.remote.stop() {
                log::warn!("cannot wake worker {} to stop it: {e}", m.name);
            }
        }
    }

    /// Worker `name` ended during the drain; once the front has left the mock is stopped, and once every
    /// worker has left the drain is over (returns the report).
    fn left(&mut self, d: &mut Drain, name: &str) -> Option<Drained> {
        if let Some(m) = self.crew.iter_mut().find(|m| m.name == name) {
            m.running = false;
        }
        if self.crew.iter().any(|m| m.front && m.running) {
            return None;
        }
        if self.crew.iter().any(|m| m.running) {
            if d.stopped.is_none() {
                self.stop(d, |m| !m.front);
            }
            return None;
        }
        Some(self.report(d))
    }

    /// The figures of the drain, and its last log line.
    fn report(&self, d: &Drain) -> Drained {
        let now = self.counts();
        let done = Drained {
            in_flight: d.at_start.in_flight,
            completed: now.completed.saturating_sub(d.at_start.completed),
            failed: now.failed.saturating_sub(d.at_start.failed),
            cut: d.cut,
            took: d.started.elapsed(),
        };
        match self.relay {
            Some(_) => log::info!(
                "drained in {:.1} s: completed {}, failed {}, cut {}",
                done.took.as_secs_f64(),
                done.completed,
                done.failed,
                done.cut
            ),
            None => log::info!("drained in {:.1} s", done.took.as_secs_f64()),
        }
        done
    }
}
