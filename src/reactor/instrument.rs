//! Loop-latency measurement.
//!
//! A reactor has one thread doing everything, so one slow handler delays every connection of the worker.
//! The number that tells an operator this is happening is the *busy time* of an iteration: from the moment
//! `poll` returned to the moment the loop is ready to wait again. We measure it every iteration (it starts at
//! the clock read the loop makes after `poll` anyway, and costs one more read at the end) and warn, with the duration and the batch size, when it passes
//! `--loop-warn-ms`. Histograms and Prometheus export come with the metrics work; the hook is here.

use std::time::Duration;

/// Per-worker loop statistics.
pub struct LoopStats {
    warn_after: Duration,
    /// Iterations run so far.
    pub iterations: u64,
    /// The longest busy time seen.
    pub max_busy: Duration,
    /// Iterations whose busy time passed `warn_after`.
    pub slow_iterations: u64,
}

impl LoopStats {
    /// Statistics that warn about iterations busier than `warn_after`.
    pub fn new(warn_after: Duration) -> Self {
        LoopStats {
            warn_after,
            iterations: 0,
            max_busy: Duration::ZERO,
            slow_iterations: 0,
        }
    }

    /// Records one iteration; returns true (and logs a warning) when it was too slow.
    pub fn record(&mut self, worker: &str, busy: Duration, events: usize) -> bool {
        self.iterations += 1;
        self.max_busy = self.max_busy.max(busy);
        if busy <= self.warn_after {
            return false;
        }
        self.slow_iterations += 1;
        log::warn!(
            "{worker}: loop iteration busy for {:.1} ms handling {events} events (over --loop-warn-ms {})",
            busy.as_secs_f64() * 1e3,
            self.warn_after.as_millis()
        );
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_iterations_over_the_threshold_count_as_slow() {
        let mut s = LoopStats::new(Duration::from_millis(10));
        assert!(!s.record("w", Duration::from_millis(10), 3));
        assert!(s.record("w", Duration::from_millis(11), 3));
        assert_eq!((s.iterations, s.slow_iterations), (2, 1));
        assert_eq!(s.max_busy, Duration::from_millis(11));
    }
}
