//! Per-client rate limiting: a token bucket per client, keyed by the client's key if it authenticated,
//! else by its address (`auth::Identity`).
//!
//! A bucket holds up to `burst` tokens and refills at `per_second`; a request takes one, and a request
//! that finds none gets a `429` with `Retry-After` (when the next token will be there). The buckets are
//! shared by every worker, behind one lock held for a lookup and a few arithmetic operations, once per
//! request (never per chunk).
//!
//! Memory is bounded: at most `MAX_CLIENTS` buckets. A bucket that has refilled to `burst` is the same as
//! no bucket, so when the table is full those are dropped first; if that is not enough (a flood of new
//! addresses), the least recently used half goes. A dropped client starts again with a full bucket,
//! which errs on the side of serving.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::auth::Identity;

/// Most clients tracked at once.
pub const MAX_CLIENTS: usize = 100_000;

/// How fast each client may send requests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Tokens added per second.
    pub per_second: f64,
    /// Most tokens a bucket holds: how many requests may come at once after a pause.
    pub burst: f64,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    /// When `tokens` was last brought up to date (and the client last seen).
    at: Instant,
}

/// Every client's bucket.
#[derive(Debug)]
pub struct RateLimiter {
    limit: RateLimit,
    max_clients: usize,
    buckets: Mutex<HashMap<Identity, Bucket>>,
}

impl RateLimiter {
    pub fn new(limit: RateLimit) -> RateLimiter {
        RateLimiter::with_capacity(limit, MAX_CLIENTS)
    }

    fn with_capacity(limit: RateLimit, max_clients: usize) -> RateLimiter {
        RateLimiter {
            limit,
            max_clients: max_clients.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `who` at `now`; `Err(wait)` when there is none, `wait` being when there will be.
    pub fn take(&self, who: &Identity, now: Instant) -> Result<(), Duration> {
        let RateLimit { per_second, burst } = self.limit;
        // A poisoned lock means a panic elsewhere while it was held; the table is still consistent
        // (every update is a single assignment), so go on with it.
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if !buckets.contains_key(who) && buckets.len() >= self.max_clients {
            make_room(&mut buckets, self.limit, now, self.max_clients);
        }
        let bucket = buckets.entry(who.clone()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_second).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / per_second))
        }
    }

    /// Clients tracked now.
    pub fn tracked(&self) -> usize {
        self.buckets.lock().map_or(0, |b| b.len())
    }
}

/// Drops the buckets that have refilled (they mean nothing); if the table is still full, the least
/// recently used half.
fn make_room(buckets: &mut HashMap<Identity, Bucket>, limit: RateLimit, now: Instant, max: usize) {
    buckets.retain(|_, b| {
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens + elapsed * limit.per_second < limit.burst
    });
    if buckets.len() >= max {
        let mut seen: Vec<Instant> = buckets.values().map(|b| b.at).collect();
        seen.sort_unstable();
        let cut = seen[seen.len() / 2];
        buckets.retain(|_, b| b.at > cut);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn ip(n: u32) -> Identity {
        Identity::Ip(IpAddr::V4(Ipv4Addr::from(n)))
    }

    #[test]
    fn a_burst_then_the_rate() {
        let l = RateLimiter::new(RateLimit {
            per_second: 2.0,
            burst: 3.0,
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.take(&ip(1), t0), Ok(()));
        }
        let wait = l.take(&ip(1), t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-6, "{wait:?}");
        assert_eq!(
            l.take(&ip(2), t0),
            Ok(()),
            "another client has its own bucket"
        );
        assert_eq!(l.take(&ip(1), t0 + Duration::from_millis(500)), Ok(()));
        assert!(l.take(&ip(1), t0 + Duration::from_millis(500)).is_err());
        let key = Identity::Key("team-a".into());
        assert_eq!(l.take(&key, t0), Ok(()), "a key is its own client");
    }

    #[test]
    fn the_table_stays_bounded_under_a_flood_of_addresses() {
        let l = RateLimiter::with_capacity(
            RateLimit {
                per_second: 0.001,
                burst: 2.0,
            },
            1000,
        );
        let t0 = Instant::now();
        for n in 0..50_000 {
            let _ = l.take(&ip(n), t0 + Duration::from_micros(u64::from(n)));
            assert!(l.tracked() <= 1000);
        }
        // A client that just used its burst is still limited after the flood.
        let fresh = ip(1_000_000);
        let late = t0 + Duration::from_secs(1);
        assert!(l.take(&fresh, late).is_ok() && l.take(&fresh, late).is_ok());
        assert!(l.take(&fresh, late).is_err());
    }
}
