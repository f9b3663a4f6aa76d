//! Deadlines: one ordered set per worker.
//!
//! A worker has few kinds of deadline ([`TimerKind`]: a pooled upstream connection expiring, the mock's next
//! token, the end of a lingering close) and
//! needs three things from them: the earliest one (to compute the poll timeout), the due ones (to fire them),
//! and cancelling one (when the thing it guarded happened first). A `BTreeMap` keyed by
//! *(instant, sequence number)* does all three in O(log n) with no cleverness to explain; the sequence number
//! keeps two deadlines at the same instant apart and fires them in the order they were set.
//!
//! A connection that waits on a deadline keeps its [`TimerKey`] in the state that waits, so cancelling is a
//! removal by key, and a timer that fires for a connection which has since closed is dropped by the same
//! generation check as a stale event (see [`super::token`]).
//!
//! The set never reads the clock: callers pass `now`, which the reactor reads once per iteration. That keeps
//! the set testable with made-up instants.

use std::collections::BTreeMap;
use std::time::Instant;

use super::token::ConnId;

/// What a deadline is for; the reactor routes a fired timer by this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerKind {
    /// A pooled upstream connection has been idle for `--upstream-idle-timeout`: close it.
    UpstreamIdle,
    /// The mock upstream's next token is due.
    MockTick,
    /// A client we are closing after its last reply has had its time to read the reply: close it now.
    Linger,
}

/// The handle that cancels one deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TimerKey {
    at: Instant,
    seq: u64,
}

/// An ordered set of `(deadline, connection, kind)`.
#[derive(Default)]
pub struct Timers {
    set: BTreeMap<TimerKey, (ConnId, TimerKind)>,
    next_seq: u64,
}

impl Timers {
    /// Arms a deadline at `at` for `conn`.
    pub fn insert(&mut self, at: Instant, conn: ConnId, kind: TimerKind) -> TimerKey {
        let key = TimerKey {
            at,
            seq: self.next_seq,
        };
        self.next_seq += 1;
        self.set.insert(key, (conn, kind));
        key
    }

    /// Disarms a deadline. Cancelling one that already fired is harmless.
    pub fn cancel(&mut self, key: TimerKey) {
        self.set.remove(&key);
    }

    /// The earliest armed deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.set.first_key_value().map(|(k, _)| k.at)
    }

    /// Removes and returns the earliest deadline if it is due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(ConnId, TimerKind)> {
        match self.set.first_entry() {
            Some(e) if e.key().at <= now => Some(e.remove()),
            _ => None,
        }
    }

    /// Number of armed deadlines.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// True when no deadline is armed.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reactor::token::Conns;
    use std::time::Duration;

    fn ids(n: usize) -> Vec<ConnId> {
        let mut conns = Conns::default();
        (0..n).map(|i| conns.insert_with(|_| i)).collect()
    }

    #[test]
    fn fires_in_deadline_order_then_insertion_order() {
        let t0 = Instant::now();
        let c = ids(3);
        let mut timers = Timers::default();
        timers.insert(t0 + Duration::from_millis(20), c[0], TimerKind::MockTick);
        timers.insert(
            t0 + Duration::from_millis(10),
            c[1],
            TimerKind::UpstreamIdle,
        );
        timers.insert(t0 + Duration::from_millis(10), c[2], TimerKind::MockTick);
        assert_eq!(timers.next_deadline(), Some(t0 + Duration::from_millis(10)));
        assert_eq!(timers.pop_due(t0 + Duration::from_millis(9)), None);
        let now = t0 + Duration::from_millis(15);
        assert_eq!(timers.pop_due(now), Some((c[1], TimerKind::UpstreamIdle)));
        assert_eq!(timers.pop_due(now), Some((c[2], TimerKind::MockTick)));
        assert_eq!(timers.pop_due(now), None);
        assert_eq!(timers.len(), 1);
    }

    #[test]
    fn cancelled_deadlines_never_fire() {
        let t0 = Instant::now();
        let c = ids(2);
        let mut timers = Timers::default();
        let k = timers.insert(t0, c[0], TimerKind::MockTick);
        timers.insert(t0, c[1], TimerKind::MockTick);
        timers.cancel(k);
        timers.cancel(k);
        assert_eq!(timers.pop_due(t0), Some((c[1], TimerKind::MockTick)));
        assert!(timers.is_empty());
        assert_eq!(timers.next_deadline(), None);
    }
}
