//! When streams start: the closed loop and the open loop, as pure functions of the clock.
//!
//! **Closed loop** (`--streams N`): N streams are in flight, and each one that ends is replaced at once.
//! The load follows the server: if it slows down, streams last longer and fewer start. That is the right
//! question for "how many streams can it hold", and the wrong one for latency under a given load: a client
//! that waits for an answer before sending the next request does not send while the server stalls, so the
//! requests that would have queued behind the stall are never made, and never measured. That is
//! *coordinated omission*: the load generator and the server agree, silently, to leave out the worst times.
//!
//! **Open loop** (`--rate R`): stream `k` is due at `t0 + k / R`, whatever happened to the others, as
//! users arriving independently would be. A server that falls behind then has streams queue up in front
//! of it, and their latency is measured from when they were *due*, not from when the load generator got
//! round to starting them ([`Schedule::take`] returns that instant as the stream's origin). Whatever delay
//! the load generator adds itself is reported too, as the start lag.
//!
//! Both are bounded in count (`--total`) and time (`--duration`): no stream starts at or after the end.
//! With several workers each has its own [`Schedule`]: closed-loop streams and totals are shared out
//! ([`share`]), and worker `w` of `W` takes the open loop's starts `k` with `k % W == w`, so together
//! they keep the one rate, on one timeline.
//!
//! Nothing here reads the clock or touches a socket: `now` comes in, so the tests step simulated time.

use std::time::{Duration, Instant};

/// One worker's part of the plan for starting streams (module docs).
#[derive(Debug, Clone)]
pub struct Schedule {
    way: Way,
    /// No stream starts at or after this instant.
    end: Instant,
    /// Streams this worker has started.
    started: u64,
}

/// The two ways of starting streams.
#[derive(Debug, Clone)]
enum Way {
    /// Keep `streams` in flight, `total` at most.
    Closed { streams: u64, total: Option<u64> },
    /// Start `k` at `t0 + k / rate`, for this worker's `k`: `next`, then every `stride`, below `limit`.
    Open {
        t0: Instant,
        rate: f64,
        next: u64,
        stride: u64,
        limit: Option<u64>,
    },
}

/// Part `i` of `n` things shared out among `parts` as evenly as can be (the first ones get one more).
/// Monotonic in `n`: a larger `n` never gives a part less.
pub fn share(n: u64, parts: u64, i: u64) -> u64 {
    debug_assert!(i < parts);
    (n + parts - 1 - i) / parts
}

impl Schedule {
    /// A closed loop from `t0` for `duration`: `streams` in flight, `total` at most (for one worker:
    /// its share of each, [`share`]).
    pub fn closed(t0: Instant, duration: Duration, streams: u64, total: Option<u64>) -> Schedule {
        Schedule {
            way: Way::Closed { streams, total },
            end: t0 + duration,
            started: 0,
        }
    }

    /// Worker `worker`'s part of an open loop of `rate` starts per second (more than zero) from `t0` for
    /// `duration`, `total` starts at most for all `workers` together.
    pub fn open(
        t0: Instant,
        duration: Duration,
        rate: f64,
        (worker, workers): (u64, u64),
        total: Option<u64>,
    ) -> Schedule {
        Schedule {
            way: Way::Open {
                t0,
                rate,
                next: worker,
                stride: workers.max(1),
                limit: total,
            },
            end: t0 + duration,
            started: 0,
        }
    }

    /// The origin of a stream to start now, with `active` in flight, counted as started; `None` if none
    /// is to start now. Closed loop: `now`. Open loop: when the next start was due, which may be earlier
    /// than `now` (the load generator was busy, or the timer fired late): latency is measured from there.
    pub fn take(&mut self, now: Instant, active: u64) -> Option<Instant> {
        let origin = match &mut self.way {
            Way::Closed { streams, total } => {
                let room = active < *streams && total.is_none_or(|t| self.started < t);
                (room && now < self.end).then_some(now)?
            }
            Way::Open {
                t0,
                rate,
                next,
                stride,
                limit,
            } => {
                let due = due_at(*t0, *rate, *next);
                let room = limit.is_none_or(|l| *next < l);
                if !(room && due <= now && due < self.end) {
                    return None;
                }
                *next += *stride;
                due
            }
        };
        self.started += 1;
        Some(origin)
    }

    /// When the next start falls due: `None` in a closed loop (starts follow ends, not the clock) and
    /// once no start is left.
    pub fn next_due(&self) -> Option<Instant> {
        match &self.way {
            Way::Closed { .. } => None,
            Way::Open {
                t0,
                rate,
                next,
                limit,
                ..
            } => {
                let due = due_at(*t0, *rate, *next);
                (limit.is_none_or(|l| *next < l) && due < self.end).then_some(due)
            }
        }
    }

    /// No stream will start from `now` on, whatever ends: the count or the time is used up.
    pub fn exhausted(&self, now: Instant) -> bool {
        match &self.way {
            Way::Closed { total, .. } => {
                now >= self.end || total.is_some_and(|t| self.started >= t)
            }
            Way::Open { .. } => self.next_due().is_none(),
        }
    }

    /// Streams started so far.
    pub fn started(&self) -> u64 {
        self.started
    }

    /// True for a closed loop (whose slots may keep their connection, `--keep-alive`).
    pub fn is_closed(&self) -> bool {
        matches!(self.way, Way::Closed { .. })
    }
}

/// When start `k` of an open loop at `rate` per second is due. `k / rate` is at most the run's duration
/// (a day), well inside what a `Duration` holds; a float's 53 bits keep it exact to far below a
/// microsecond.
fn due_at(t0: Instant, rate: f64, k: u64) -> Instant {
    t0 + Duration::from_secs_f64(k as f64 / rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn shares_add_up_and_differ_by_one_at_most() {
        for n in 0..50 {
            for parts in 1..7 {
                let all: Vec<u64> = (0..parts).map(|i| share(n, parts, i)).collect();
                assert_eq!(all.iter().sum::<u64>(), n, "{n} in {parts}");
                assert!(all.iter().max().unwrap() - all.iter().min().unwrap() <= 1);
                // Monotonic: a worker's share of a total is at least its share of the streams.
                for (i, s) in all.iter().enumerate() {
                    assert!(share(n + 1, parts, i as u64) >= *s);
                }
            }
        }
    }

    #[test]
    fn a_closed_loop_fills_its_slots_and_stops_at_the_total() {
        let t0 = Instant::now();
        let mut s = Schedule::closed(t0, Duration::from_secs(10), 3, Some(5));
        let mut active = 0;
        while let Some(origin) = s.take(t0, active) {
            assert_eq!(origin, t0, "a closed loop measures from the start itself");
            active += 1;
        }
        assert_eq!((active, s.started()), (3, 3), "three slots");
        assert!(!s.exhausted(t0));
        // Two end: two more start; then the total is reached.
        active -= 2;
        let later = t0 + 5 * MS;
        assert_eq!(s.take(later, active), Some(later));
        assert_eq!(s.take(later, active + 1), Some(later));
        assert_eq!(s.take(later, 2), None, "the total is used up");
        assert!(s.exhausted(later));
        assert_eq!(s.next_due(), None, "a closed loop has no timer");
    }

    #[test]
    fn a_closed_loop_stops_starting_at_its_end() {
        let t0 = Instant::now();
        let mut s = Schedule::closed(t0, Duration::from_secs(1), 2, None);
        assert!(s.take(t0, 0).is_some());
        let end = t0 + Duration::from_secs(1);
        assert_eq!(s.take(end - MS, 1), Some(end - MS));
        assert!(!s.exhausted(end - MS));
        assert_eq!(s.take(end, 0), None);
        assert!(s.exhausted(end));
    }

    /// Simulated time: the open loop starts on its own timeline whatever the streams do, and a late
    /// timer starts every stream that fell due, each with the instant it was due.
    #[test]
    fn an_open_loop_keeps_its_timeline_when_the_timer_is_late() {
        let t0 = Instant::now();
        let mut s = Schedule::open(t0, Duration::from_secs(1), 50.0, (0, 1), None);
        assert_eq!(s.next_due(), Some(t0));
        assert_eq!(s.take(t0, 0), Some(t0));
        assert_eq!(s.take(t0, 1), None, "the next is 20 ms away");
        assert_eq!(s.next_due(), Some(t0 + 20 * MS));
        // The loop was busy for 65 ms: three starts fell due; each keeps its own origin. Nothing
        // depends on how many are in flight.
        let late = t0 + 85 * MS;
        let origins: Vec<Instant> = std::iter::from_fn(|| s.take(late, 1_000)).collect();
        assert_eq!(
            origins,
            [t0 + 20 * MS, t0 + 40 * MS, t0 + 60 * MS, t0 + 80 * MS]
        );
        assert_eq!(s.next_due(), Some(t0 + 100 * MS));
    }

    #[test]
    fn an_open_loop_starts_rate_times_duration_streams() {
        let t0 = Instant::now();
        let mut s = Schedule::open(t0, Duration::from_secs(1), 50.0, (0, 1), None);
        let mut now = t0;
        while let Some(due) = s.next_due() {
            now = now.max(due);
            assert!(s.take(now, 0).is_some());
        }
        assert_eq!(s.started(), 50, "k / 50 < 1 s for k in 0..50");
        assert!(s.exhausted(now));
    }

    #[test]
    fn workers_share_an_open_loop_on_one_timeline() {
        let t0 = Instant::now();
        let second = Duration::from_secs(1);
        let mut all = Vec::new();
        for w in 0..3 {
            let mut s = Schedule::open(t0, second, 10.0, (w, 3), Some(8));
            while let Some(due) = s.next_due() {
                all.push(s.take(due, 0).expect("due"));
            }
        }
        all.sort();
        let expected: Vec<Instant> = (0..8).map(|k| t0 + k * 100 * MS).collect();
        assert_eq!(
            all, expected,
            "the total caps all workers together, on the one timeline"
        );
    }
}
