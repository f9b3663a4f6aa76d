//! The circuit breaker of an upstream: after a run of failures, stop sending it requests for a while.
//!
//! ```text
//!            N failures in a row                 cooldown passed
//!   Closed ─────────────────────▶ Open ─────────────────────────▶ Half-open: one probe goes through
//!     ▲                            ▲                                    │
//!     └──── the probe succeeds ────┼────────────────────────────────────┤
//!                                  └──────── the probe fails ───────────┘
//! ```
//!
//! While it is open, a request fails fast (a 503 naming the upstream, `Retry-After` the time left), or
//! goes to the route's fallback upstream, instead of waiting for a connect or a deadline that will fail
//! too. One [`Health`] per upstream is shared by every worker: the counts are atomics, touched once per
//! exchange. The probe is a [`Probe`] held by the one exchange that got it; dropping it without a verdict
//! (its client left) lets the next request probe instead, so the breaker cannot stay half-open for ever.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// When the breaker opens, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    /// Failures in a row that open it (0: never).
    pub failures: u32,
    /// How long it stays open before a probe.
    pub cooldown: Duration,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        BreakerPolicy {
            failures: 5,
            cooldown: Duration::from_secs(30),
        }
    }
}

/// The breaker of one upstream.
#[derive(Debug)]
pub struct Health {
    policy: BreakerPolicy,
    /// The instant the other times count from.
    epoch: Instant,
    consecutive: AtomicU32,
    /// Milliseconds after `epoch` until which the breaker is open (0: closed).
    open_until: AtomicU64,
    /// A probe is out.
    probing: AtomicBool,
    /// Times it opened (a counter for the metrics).
    opened: AtomicU64,
}

/// What the breaker says of a request now.
#[derive(Debug)]
pub enum Verdict {
    /// Closed: go.
    Pass,
    /// Half-open: go, as the probe.
    Probe(Probe),
    /// Open: do not go; it may let a probe through after `retry_after`.
    Open { retry_after: Duration },
}

/// The one request let through a half-open breaker.
#[derive(Debug)]
pub struct Probe {
    health: Arc<Health>,
    done: bool,
}

impl Health {
    pub fn new(policy: BreakerPolicy) -> Arc<Health> {
        Arc::new(Health {
            policy,
            epoch: Instant::now(),
            consecutive: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            probing: AtomicBool::new(false),
            opened: AtomicU64::new(0),
        })
    }

    fn ms(&self, at: Instant) -> u64 {
        // At least 1, so that 0 keeps meaning "closed".
        (at.saturating_duration_since(self.epoch).as_millis() as u64).max(1)
    }

    /// Times the breaker opened.
    pub fn times_opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// Whether a request may go to the upstream at `now`.
    pub fn check(self: &Arc<Health>, now: Instant) -> Verdict {
        let until = self.open_until.load(Ordering::Acquire);
        if self.policy.failures == 0 || until == 0 {
            return Verdict::Pass;
        }
        let now_ms = self.ms(now);
        if now_ms < until {
            return Verdict::Open {
                retry_after: Duration::from_millis(until - now_ms),
            };
        }
        match self
            .probing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Verdict::Probe(Probe {
                health: self.clone(),
                done: false,
            }),
            // Another request is the probe: wait for its verdict.
            Err(_) => Verdict::Open {
                retry_after: Duration::from_secs(1),
            },
        }
    }

    /// A request that went through (not the probe) succeeded: the run of failures ends.
    pub fn success(&self) {
        self.consecutive.store(0, Ordering::Release);
    }

    /// A request that went through (not the probe) failed at `now`: the breaker opens after enough in a
    /// row.
    pub fn failure(&self, now: Instant) {
        let run = self.consecutive.fetch_add(1, Ordering::AcqRel) + 1;
        if self.policy.failures > 0
            && run >= self.policy.failures
            && self.open_until.load(Ordering::Acquire) == 0
        {
            self.open(now);
        }
    }

    fn open(&self, now: Instant) {
        let until = self.ms(now + self.policy.cooldown);
        self.open_until.store(until, Ordering::Release);
        self.opened.fetch_add(1, Ordering::Relaxed);
        log::warn!(
            "circuit breaker open: no request for {:?} after {} failures in a row",
            self.policy.cooldown,
            self.consecutive.load(Ordering::Acquire)
        );
    }
}

impl Probe {
    /// The probe succeeded: the breaker closes.
    pub fn success(mut self) {
        self.done = true;
        let h = &self.health;
        h.consecutive.store(0, Ordering::Release);
        h.open_until.store(0, Ordering::Release);
        h.probing.store(false, Ordering::Release);
        log::info!("circuit breaker closed: the probe succeeded");
    }

    /// The probe failed at `now`: the breaker opens for another cooldown.
    pub fn failure(mut self, now: Instant) {
        self.done = true;
        let h = &self.health;
        h.open(now);
        h.probing.store(false, Ordering::Release);
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        if !self.done {
            // No verdict (the client left): the next request probes instead.
            self.health.probing.store(false, Ordering::Release);
        }
    }
}

/// Gives an upstream's breaker the verdict of one request: `failed_at` the instant it failed, `None` if
/// it succeeded. The probe's verdict if the request held it, else one more (or one less) in the run.
pub fn record(probe: &mut Option<Probe>, health: Option<&Health>, failed_at: Option<Instant>) {
    match (probe.take(), health, failed_at) {
        (Some(probe), _, Some(at)) => probe.failure(at),
        (Some(probe), _, None) => probe.success(),
        (None, Some(health), Some(at)) => health.failure(at),
        (None, Some(health), None) => health.success(),
        (None, None, _) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(failures: u32) -> Arc<Health> {
        Health::new(BreakerPolicy {
            failures,
            cooldown: Duration::from_secs(10),
        })
    }

    #[test]
    fn opens_after_n_failures_then_lets_one_probe_through() {
        let h = health(3);
        let t0 = Instant::now();
        for _ in 0..2 {
            h.failure(t0);
            assert!(matches!(h.check(t0), Verdict::Pass));
        }
        h.failure(t0);
        match h.check(t0 + Duration::from_secs(4)) {
            Verdict::Open { retry_after } => {
                assert!(
                    retry_after <= Duration::from_secs(6) && retry_after > Duration::from_secs(5)
                )
            }
            other => panic!("{other:?}"),
        }
        let later = t0 + Duration::from_secs(11);
        let Verdict::Probe(probe) = h.check(later) else {
            panic!("no probe after the cooldown");
        };
        assert!(
            matches!(h.check(later), Verdict::Open { .. }),
            "one probe at a time"
        );
        probe.success();
        assert!(matches!(h.check(later), Verdict::Pass));
        assert_eq!(h.times_opened(), 1);
    }

    #[test]
    fn a_failed_probe_reopens_and_an_abandoned_one_frees_the_slot() {
        let h = health(1);
        let t0 = Instant::now();
        h.failure(t0);
        let t1 = t0 + Duration::from_secs(11);
        let Verdict::Probe(probe) = h.check(t1) else {
            panic!()
        };
        probe.failure(t1);
        assert!(matches!(
            h.check(t1 + Duration::from_secs(5)),
            Verdict::Open { .. }
        ));
        let t2 = t1 + Duration::from_secs(11);
        let Verdict::Probe(probe) = h.check(t2) else {
            panic!()
        };
        drop(probe);
        assert!(
            matches!(h.check(t2), Verdict::Probe(_)),
            "the abandoned probe's slot is free"
        );
    }

    #[test]
    fn a_success_ends_the_run_and_zero_never_opens() {
        let h = health(2);
        let t0 = Instant::now();
        h.failure(t0);
        h.success();
        h.failure(t0);
        assert!(matches!(h.check(t0), Verdict::Pass));
        let off = health(0);
        for _ in 0..100 {
            off.failure(t0);
        }
        assert!(matches!(off.check(t0), Verdict::Pass));
    }
}
