//! What the relay workers did, added up across them: [`RelayStats`], and the gauge of exchanges in flight
//! that a drain reads ([`InFlight`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// What the relay workers did, added up across them (relaxed atomics, touched once per exchange, never per
/// chunk). The metrics endpoint will export them; tests read them to see inside the pool.
#[derive(Debug, Default)]
pub struct RelayStats {
    pub(super) connects: AtomicU64,
    pub(super) reuses: AtomicU64,
    pub(super) retries: AtomicU64,
    pub(super) completed: AtomicU64,
    pub(super) failed: AtomicU64,
    pub(super) tls_full: AtomicU64,
    pub(super) tls_resumed: AtomicU64,
    pub(super) shed: AtomicU64,
    pub(super) timeouts: AtomicU64,
    pub(super) keepalives: AtomicU64,
    pub(super) client_timeouts: AtomicU64,
    pub(super) queued: AtomicU64,
    pub(super) refused: AtomicU64,
    pub(super) queue_timeouts: AtomicU64,
    pub(super) backoffs: AtomicU64,
    pub(super) fallbacks: AtomicU64,
    pub(super) rate_limited: AtomicU64,
    /// A gauge, not a counter: moved only by [`InFlight`].
    in_flight: AtomicU64,
}

/// A copy of [`RelayStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayCounts {
    /// New upstream connections opened (retries included).
    pub connects: u64,
    /// Exchanges that took an idle connection from the pool.
    pub reuses: u64,
    /// Exchanges sent again on a fresh connection after a pooled one failed before answering.
    pub retries: u64,
    /// Streams whose body ended properly.
    pub completed: u64,
    /// Exchanges that failed (a 502, or a stream that broke off).
    pub failed: u64,
    /// TLS handshakes with an upstream that were full ones.
    pub tls_full: u64,
    /// TLS handshakes with an upstream that resumed an earlier session.
    pub tls_resumed: u64,
    /// Clients turned away with a 503 `overloaded` (on an HTTPS listener: only closed), past the
    /// descriptor budget or with the spare descriptor when none was left (`shed_503` for the metrics).
    pub shed: u64,
    /// Exchanges that failed because an upstream wait passed its deadline.
    pub timeouts: u64,
    /// Keep-alive comments sent on silent event streams.
    pub keepalives: u64,
    /// Clients dropped or answered 408 because they were too slow (head, body, taking their response).
    pub client_timeouts: u64,
    /// Requests that waited in an upstream's queue for a turn.
    pub queued: u64,
    /// Requests refused a turn at once (a full queue, an open breaker).
    pub refused: u64,
    /// Requests refused because their turn did not come within the queue's deadline.
    pub queue_timeouts: u64,
    /// Retries after a backoff (a failed connect, a 5xx, a 429).
    pub backoffs: u64,
    /// Requests moved to a fallback upstream.
    pub fallbacks: u64,
    /// Requests refused with 429 by the per-client rate limit.
    pub rate_limited: u64,
    /// Exchanges in progress now, from routing to their end (a gauge).
    pub in_flight: u64,
}

impl RelayStats {
    pub fn snapshot(&self) -> RelayCounts {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RelayCounts {
            connects: get(&self.connects),
            reuses: get(&self.reuses),
            retries: get(&self.retries),
            completed: get(&self.completed),
            failed: get(&self.failed),
            tls_full: get(&self.tls_full),
            tls_resumed: get(&self.tls_resumed),
            shed: get(&self.shed),
            timeouts: get(&self.timeouts),
            keepalives: get(&self.keepalives),
            client_timeouts: get(&self.client_timeouts),
            queued: get(&self.queued),
            refused: get(&self.refused),
            queue_timeouts: get(&self.queue_timeouts),
            backoffs: get(&self.backoffs),
            fallbacks: get(&self.fallbacks),
            rate_limited: get(&self.rate_limited),
            in_flight: get(&self.in_flight),
        }
    }

    pub(super) fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// One exchange in the `in_flight` gauge, from its start to its drop: however it ends (its body, a
/// failure, its client leaving, or its worker stopped with it), dropping the exchange takes it out, so the
/// gauge cannot drift.
pub struct InFlight(Arc<RelayStats>);

impl InFlight {
    pub fn new(stats: &Arc<RelayStats>) -> InFlight {
        stats.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(stats.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gauge_follows_the_guards() {
        let stats = Arc::new(RelayStats::default());
        let a = InFlight::new(&stats);
        let b = InFlight::new(&stats);
        assert_eq!(stats.snapshot().in_flight, 2);
        drop(a);
        assert_eq!(stats.snapshot().in_flight, 1);
        drop(b);
        assert_eq!(stats.snapshot().in_flight, 0);
    }
}
