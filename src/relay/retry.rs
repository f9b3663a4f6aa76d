//! Trying again before the first byte reached the client: how long to wait, and what an upstream's
//! `Retry-After` asks for.
//!
//! Retries use exponential backoff with jitter: the n-th waits `backoff × 2^(n-1)`, scaled by a random
//! factor between ½ and 1, so that clients that failed together do not come back together. The
//! `Retry-After` (seconds) of a 429 or a 503 replaces the computed wait, but only up to `max_wait`: a
//! request is not held longer than that for a retry (nor past its head deadline); then the answer the
//! upstream gave goes to the client instead.

use std::time::Duration;

use crate::http::headers::value;

/// How the relay tries again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first try (0: none).
    pub max: u32,
    /// The first wait; each next one doubles.
    pub backoff: Duration,
    /// The longest wait for one retry, `Retry-After` included.
    pub max_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max: 2,
            backoff: Duration::from_millis(250),
            max_wait: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry `n` (1 for the first), with `jitter` in [0, 1).
    pub fn backoff(&self, n: u32, jitter: f64) -> Duration {
        let doubled = self
            .backoff
            .saturating_mul(1u32 << n.saturating_sub(1).min(16));
        doubled
            .mul_f64(0.5 + jitter.clamp(0.0, 1.0) / 2.0)
            .min(self.max_wait)
    }
}

/// `Retry-After` as a number of seconds (RFC 9110 §10.2.3); an HTTP date is not taken (the computed
/// backoff applies then).
pub fn retry_after(headers: &[(String, Vec<u8>)]) -> Option<Duration> {
    let text = value(headers, "retry-after")?;
    text.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// A small random number source for jitter (xorshift64*): no dependency, no lock, one per worker. It
/// need not be unpredictable, only spread.
#[derive(Debug, Clone)]
pub struct Jitter(u64);

impl Jitter {
    pub fn new(seed: u64) -> Jitter {
        Jitter(seed | 1)
    }

    /// The next number in [0, 1).
    pub fn sample(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_a_ceiling() {
        let p = RetryPolicy {
            max: 5,
            backoff: Duration::from_millis(100),
            max_wait: Duration::from_secs(1),
        };
        assert_eq!(p.backoff(1, 0.0), Duration::from_millis(50));
        assert!(p.backoff(1, 0.999_999) < Duration::from_millis(100));
        assert_eq!(p.backoff(3, 0.0), Duration::from_millis(200));
        assert_eq!(
            p.backoff(10, 0.5),
            Duration::from_secs(1),
            "capped at max_wait"
        );
        assert_eq!(p.backoff(u32::MAX, 0.5), Duration::from_secs(1));
    }

    #[test]
    fn retry_after_takes_seconds_only() {
        let h = |v: &str| vec![("Retry-After".to_string(), v.as_bytes().to_vec())];
        assert_eq!(retry_after(&h("7")), Some(Duration::from_secs(7)));
        assert_eq!(retry_after(&h(" 0 ")), Some(Duration::ZERO));
        assert_eq!(retry_after(&h("Wed, 21 Oct 2015 07:28:00 GMT")), None);
        assert_eq!(retry_after(&h("-1")), None);
        assert_eq!(retry_after(&[]), None);
    }

    #[test]
    fn jitter_stays_in_range_and_spreads() {
        let mut j = Jitter::new(42);
        let xs: Vec<f64> = (0..1000).map(|_| j.sample()).collect();
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
        let low = xs.iter().filter(|x| **x < 0.5).count();
        assert!((400..600).contains(&low), "{low}");
    }
}
