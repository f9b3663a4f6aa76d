//! What one worker counted: how streams ended, and histograms of their times.
//!
//! Each worker keeps its own [`Tally`] and writes to it without a lock; the main thread merges them
//! when the workers are done ([`Tally::merge`]). Times are recorded in microseconds into
//! `hdrhistogram`s, which keep three significant digits at any magnitude in a fixed size (about 220 KiB
//! each, for the range up to a day): a stream costs its tally nothing, however long it runs.
//!
//! Which streams each figure covers:
//!
//! - **time to first byte**, **time to first event** and **time to completion** are of the streams that
//!   were answered with a 2xx status: the quick 500 of a failing server would otherwise pass for speed.
//!   Each is measured from the stream's origin (its start, or in the open loop when it was due);
//! - **gaps** between consecutive events are recorded as the events arrive, straight into the
//!   histogram, for every stream, including one that fails later;
//! - **sustained** streams completed with no gap above the limit (`--pacing-ms` times
//!   `--sustain-factor`); a stream keeps its largest gap for that, not a list of them.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Why a stream failed. The names are the report's (`failed.<name>` in the JSON): keep them stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reason {
    /// The connection could not be made (refused, unreachable, out of descriptors or ports).
    Connect,
    /// The TLS handshake failed (an untrusted certificate, a wrong name, a protocol error).
    Tls,
    /// The connection failed or closed after it was made and before the response head was whole.
    Io,
    /// The response head or its chunked framing could not be parsed.
    Protocol,
    /// The response head had a status other than 2xx.
    Status,
    /// The body was cut: the connection closed or failed before the last chunk.
    Truncated,
    /// The stream's `--timeout` passed, or the run's own deadline.
    Timeout,
}

impl Reason {
    /// Every reason, in the report's order.
    pub const ALL: [Reason; 7] = [
        Reason::Connect,
        Reason::Tls,
        Reason::Io,
        Reason::Protocol,
        Reason::Status,
        Reason::Truncated,
        Reason::Timeout,
    ];

    /// The reason's name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Reason::Connect => "connect",
            Reason::Tls => "tls",
            Reason::Io => "io",
            Reason::Protocol => "protocol",
            Reason::Status => "status",
            Reason::Truncated => "truncated",
            Reason::Timeout => "timeout",
        }
    }
}

/// The longest time a histogram holds, in microseconds: a day, the longest any duration option allows.
const MAX_MICROS: u64 = 24 * 60 * 60 * 1_000_000;

/// A latency histogram in microseconds, 1 us to a day, three significant digits.
pub fn micros_histogram() -> Histogram<u64> {
    // Fixed bounds, valid (low >= 1, high >= 2 * low, 3 digits): the constructor cannot fail on them.
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid histogram bounds")
}

/// `d` in whole microseconds, for a histogram (which saturates at its top).
pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// One worker's figures (module docs).
pub struct Tally {
    pub started: u64,
    pub completed: u64,
    /// Failures by reason, indexed as [`Reason::ALL`].
    pub failed: [u64; Reason::ALL.len()],
    /// The statuses of the `status` failures, and how many of each.
    pub statuses: BTreeMap<u16, u64>,
    /// The first message of each failure reason, to say what went wrong (only the first: a failing run
    /// would otherwise store one per stream).
    pub errors: BTreeMap<Reason, String>,
    /// Events of every stream, completed or not.
    pub events: u64,
    /// Fewest and most events of a completed stream (`u32::MAX` and 0 while none completed).
    pub events_min: u32,
    pub events_max: u32,
    /// Completed streams with no gap above `gap_limit`.
    pub sustained: u64,
    /// The largest gap a sustained stream may have had; `None`: not judged (no `--pacing-ms`).
    pub gap_limit: Option<Duration>,
    pub first_byte: Histogram<u64>,
    pub first_event: Histogram<u64>,
    pub completion: Histogram<u64>,
    pub gap: Histogram<u64>,
    /// How late each stream started after its origin: the load generator's own delay.
    pub start_lag: Histogram<u64>,
    /// The first and the last start, for the achieved start rate.
    pub starts: Option<(Instant, Instant)>,
}

impl fmt::Debug for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tally")
            .field("started", &self.started)
            .field("completed", &self.completed)
            .field("failed", &self.failed)
            .field("events", &self.events)
            .field("sustained", &self.sustained)
            .finish_non_exhaustive()
    }
}

impl Tally {
    /// An empty tally that judges streams sustained against `gap_limit`.
    pub fn new(gap_limit: Option<Duration>) -> Tally {
        Tally {
            started: 0,
            completed: 0,
            failed: [0; Reason::ALL.len()],
            statuses: BTreeMap::new(),
            errors: BTreeMap::new(),
            events: 0,
            events_min: u32::MAX,
            events_max: 0,
            sustained: 0,
            gap_limit,
            first_byte: micros_histogram(),
            first_event: micros_histogram(),
            completion: micros_histogram(),
            gap: micros_histogram(),
            start_lag: micros_histogram(),
            starts: None,
        }
    }

    /// A stream due at `origin` started at `at`.
    pub fn start(&mut self, origin: Instant, at: Instant) {
        self.started += 1;
        self.start_lag
            .saturating_record(micros(at.saturating_duration_since(origin)));
        self.starts = Some(match self.starts {
            None => (at, at),
            Some((first, last)) => (first.min(at), last.max(at)),
        });
    }

    /// A stream failed for `reason`; `detail` says how, kept if it is the first of its reason.
    pub fn fail(&mut self, reason: Reason, detail: impl fmt::Display) {
        self.failed[reason as usize] += 1;
        self.errors
            .entry(reason)
            .or_insert_with(|| detail.to_string());
    }

    /// A stream was answered with `status`, not a 2xx.
    pub fn refused(&mut self, status: u16) {
        *self.statuses.entry(status).or_default() += 1;
        self.fail(Reason::Status, format!("status {status}"));
    }

    /// A stream completed: its last chunk came `took` after its origin, with `events` events and its
    /// largest gap `max_gap`.
    pub fn complete(&mut self, took: Duration, events: u32, max_gap: Duration) {
        self.completed += 1;
        self.completion.saturating_record(micros(took));
        self.events_min = self.events_min.min(events);
        self.events_max = self.events_max.max(events);
        if self.gap_limit.is_some_and(|limit| max_gap <= limit) {
            self.sustained += 1;
        }
    }

    /// Failures, all reasons together.
    pub fn failed_total(&self) -> u64 {
        self.failed.iter().sum()
    }

    /// Adds `other`'s figures to these.
    pub fn merge(&mut self, other: &Tally) {
        self.started += other.started;
        self.completed += other.completed;
        for (mine, theirs) in self.failed.iter_mut().zip(other.failed) {
            *mine += theirs;
        }
        for (status, n) in &other.statuses {
            *self.statuses.entry(*status).or_default() += n;
        }
        for (reason, message) in &other.errors {
            self.errors
                .entry(*reason)
                .or_insert_with(|| message.clone());
        }
        self.events += other.events;
        self.events_min = self.events_min.min(other.events_min);
        self.events_max = self.events_max.max(other.events_max);
        self.sustained += other.sustained;
        for (mine, theirs) in [
            (&mut self.first_byte, &other.first_byte),
            (&mut self.first_event, &other.first_event),
            (&mut self.completion, &other.completion),
            (&mut self.gap, &other.gap),
            (&mut self.start_lag, &other.start_lag),
        ] {
            // Same bounds on both sides: adding cannot fail.
            let _ = mine.add(theirs);
        }
        self.starts = match (self.starts, other.starts) {
            (Some((a, b)), Some((c, d))) => Some((a.min(c), b.max(d))),
            (one, other) => one.or(other),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn sustained_means_completed_with_no_gap_over_the_limit() {
        let mut t = Tally::new(Some(20 * MS));
        t.complete(100 * MS, 8, 20 * MS);
        t.complete(100 * MS, 8, 21 * MS);
        t.complete(100 * MS, 1, Duration::ZERO);
        assert_eq!((t.completed, t.sustained), (3, 2));
        assert_eq!((t.events_min, t.events_max), (1, 8));
        // Without a pacing nothing is judged.
        let mut t = Tally::new(None);
        t.complete(100 * MS, 8, Duration::ZERO);
        assert_eq!(t.sustained, 0);
    }

    #[test]
    fn failures_keep_their_first_message_and_statuses() {
        let mut t = Tally::new(None);
        t.fail(Reason::Connect, "refused");
        t.fail(Reason::Connect, "refused again");
        t.refused(500);
        t.refused(500);
        t.refused(429);
        assert_eq!(t.failed[Reason::Connect as usize], 2);
        assert_eq!(t.failed_total(), 5);
        assert_eq!(t.errors[&Reason::Connect], "refused");
        assert_eq!(t.statuses, BTreeMap::from([(429, 1), (500, 2)]));
    }

    #[test]
    fn merging_adds_everything_up() {
        let t0 = Instant::now();
        let mut a = Tally::new(Some(MS));
        a.start(t0, t0 + MS);
        a.complete(10 * MS, 3, Duration::ZERO);
        a.gap.saturating_record(500);
        let mut b = Tally::new(Some(MS));
        b.start(t0 + 5 * MS, t0 + 5 * MS);
        b.start(t0 + 9 * MS, t0 + 9 * MS);
        b.complete(30 * MS, 5, Duration::ZERO);
        b.refused(503);
        b.gap.saturating_record(1500);
        a.merge(&b);
        assert_eq!((a.started, a.completed, a.failed_total()), (3, 2, 1));
        assert_eq!((a.events_min, a.events_max, a.sustained), (3, 5, 2));
        assert_eq!(a.completion.len(), 2);
        assert_eq!(a.gap.len(), 2);
        assert_eq!(a.starts, Some((t0 + MS, t0 + 9 * MS)));
        assert_eq!(a.statuses[&503], 1);
        // The lag of the first start: 1 ms.
        assert_eq!(a.start_lag.max(), a.start_lag.highest_equivalent(1000));
    }
}
