//! The progress line: what the workers have done so far, shown once a second on a terminal.
//!
//! Each worker publishes its counts into its own [`Live`] between two turns of its loop (relaxed atomic
//! stores: the line needs no ordering between them, only fresh numbers), and the main thread sums them
//! for the line. Nothing is shared on a stream's path: a worker never waits for the display.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// One worker's counts, for the progress line.
#[derive(Debug, Default)]
pub struct Live {
    started: AtomicU64,
    active: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
    events: AtomicU64,
}

/// Counts read from [`Live`]s.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub started: u64,
    pub active: u64,
    pub completed: u64,
    pub failed: u64,
    pub events: u64,
}

impl Live {
    /// Publishes a worker's counts.
    pub fn set(&self, started: u64, active: u64, completed: u64, failed: u64, events: u64) {
        self.started.store(started, Relaxed);
        self.active.store(active, Relaxed);
        self.completed.store(completed, Relaxed);
        self.failed.store(failed, Relaxed);
        self.events.store(events, Relaxed);
    }

    /// The counts last published.
    pub fn read(&self) -> Counts {
        Counts {
            started: self.started.load(Relaxed),
            active: self.active.load(Relaxed),
            completed: self.completed.load(Relaxed),
            failed: self.failed.load(Relaxed),
            events: self.events.load(Relaxed),
        }
    }
}

impl std::ops::Add for Counts {
    type Output = Counts;
    fn add(self, o: Counts) -> Counts {
        Counts {
            started: self.started + o.started,
            active: self.active + o.active,
            completed: self.completed + o.completed,
            failed: self.failed + o.failed,
            events: self.events + o.events,
        }
    }
}

/// The line for `now`, `elapsed` into the run, given the counts a second (`since`) before, without its
/// line end: the caller rewrites it in place (`\r`, and erase to the end of the line).
pub fn line(elapsed: Duration, now: Counts, before: Counts, since: Duration) -> String {
    let events_per_s = match since.as_secs_f64() {
        s if s > 0.0 => now.events.saturating_sub(before.events) as f64 / s,
        _ => 0.0,
    };
    format!(
        "{:>6.1}s  active {:>6}  done {:>8}  failed {:>6}  events {:>9.0}/s",
        elapsed.as_secs_f64(),
        now.active,
        now.completed,
        now.failed,
        events_per_s
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_shows_the_sum_and_the_last_seconds_event_rate() {
        let (a, b) = (Live::default(), Live::default());
        a.set(10, 4, 5, 1, 100);
        b.set(20, 6, 13, 1, 300);
        let now = a.read() + b.read();
        assert_eq!(now.active, 10);
        let before = Counts {
            events: 100,
            ..Counts::default()
        };
        let text = line(
            Duration::from_millis(2500),
            now,
            before,
            Duration::from_secs(2),
        );
        assert_eq!(
            text,
            "   2.5s  active     10  done       18  failed      2  events       150/s"
        );
    }
}
