//! Deadlines: one ordered set per worker.
//!
//! A loop needs three things from its deadlines: the earliest one (to compute the poll timeout), the due
//! ones (to fire them), and cancelling one (when the thing it guarded happened first). A `BTreeMap` keyed by
//! *(instant, sequence number)* does all three in O(log n) with no cleverness to explain; the sequence
//! number keeps two deadlines at the same instant apart and fires them in the order they were set.
//!
//! What a deadline is *for* is the application's business: the set is generic over a key `K` that the
//! application chooses (the relay's `RelayTimer`, the mock's `MockTimer`, an example's own enum), and the
//! reactor hands it back to [`super::Handler::on_timer`] untouched.
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

/// The handle that cancels one deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimerKey {
    at: Instant,
    seq: u64,
}

impl TimerKey {
    /// When the deadline falls due.
    pub fn at(self) -> Instant {
        self.at
    }
}

/// An ordered set of `(deadline, connection, what)`.
pub struct Timers<K> {
    set: BTreeMap<TimerKey, (ConnId, K)>,
    next_seq: u64,
}

impl<K> Default for Timers<K> {
    fn default() -> Self {
        Timers {
            set: BTreeMap::new(),
            next_seq: 0,
        }
    }
}

impl<K> Timers<K> {
    /// Arms a deadline at `at` for `conn`.
    pub fn insert(&mut self, at: Instant, conn: ConnId, what: K) -> TimerKey {
        let key = TimerKey {
            at,
            seq: self.next_seq,
        };
        self.next_seq += 1;
        self.set.insert(key, (conn, what));
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

    /// Removes and returns the earliest deadline if it is due at `now`, with the instant it was due at.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, ConnId, K)> {
        match self.set.first_entry() {
            Some(e) if e.key().at <= now => {
                let at = e.key().at;
                let (conn, what) = e.remove();
                Some((at, conn, what))
            }
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
        (0..n).map(|i| conns.insert_with(|_| i).unwrap()).collect()
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Kind {
        A,
        B,
    }

    #[test]
    fn fires_in_deadline_order_then_insertion_order() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let c = ids(3);
        let mut timers = Timers::default();
        timers.insert(t0 + ms(20), c[0], Kind::A);
        timers.insert(t0 + ms(10), c[1], Kind::B);
        timers.insert(t0 + ms(10), c[2], Kind::A);
        assert_eq!(timers.next_deadline(), Some(t0 + ms(10)));
        assert_eq!(timers.pop_due(t0 + ms(9)), None);
        let now = t0 + ms(15);
        assert_eq!(timers.pop_due(now), Some((t0 + ms(10), c[1], Kind::B)));
        assert_eq!(timers.pop_due(now), Some((t0 + ms(10), c[2], Kind::A)));
        assert_eq!(timers.pop_due(now), None);
        assert_eq!(timers.len(), 1);
    }

    #[test]
    fn cancelled_deadlines_never_fire() {
        let t0 = Instant::now();
        let c = ids(2);
        let mut timers = Timers::default();
        let k = timers.insert(t0, c[0], Kind::A);
        timers.insert(t0, c[1], Kind::A);
        timers.cancel(k);
        timers.cancel(k);
        assert_eq!(timers.pop_due(t0), Some((t0, c[1], Kind::A)));
        assert!(timers.is_empty());
        assert_eq!(timers.next_deadline(), None);
    }
}
