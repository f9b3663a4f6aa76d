//! Admission, retries and the circuit breaker: the options that decide what happens when an upstream is
//! busy or failing (docs/11-backpressure-admission-and-shedding.md).

use std::time::Duration;

use clap::Args;

use super::duration::parse_positive_duration;
use crate::relay::admission::AdmissionLimits;
use crate::relay::health::BreakerPolicy;
use crate::relay::ratelimit::RateLimit;
use crate::relay::retry::RetryPolicy;

/// How many requests each upstream gets, retries, and the breaker.
#[derive(Args, Debug, Clone)]
pub struct ResilienceArgs {
    /// Most requests in flight to each upstream, across workers (0: no cap). Requests beyond it wait
    /// in a queue; per instance, so N instances allow N times this.
    #[arg(
        long,
        env = "TOKENPIPE_UPSTREAM_MAX_CONCURRENT",
        default_value_t = 0,
        value_name = "N"
    )]
    pub upstream_max_concurrent: usize,
    /// Most requests waiting for a turn at each upstream; beyond it, 503 with Retry-After at once.
    #[arg(
        long,
        env = "TOKENPIPE_UPSTREAM_QUEUE",
        default_value_t = 64,
        value_name = "N"
    )]
    pub upstream_queue: usize,
    /// How long a request may wait for its turn; then 503 with Retry-After.
    #[arg(long, env = "TOKENPIPE_UPSTREAM_QUEUE_TIMEOUT", default_value = "5s",
          value_name = "DURATION", value_parser = parse_positive_duration)]
    pub upstream_queue_timeout: Duration,
    /// Retries, before the first byte reaches the client, after a failed connect, a 5xx or a 429
    /// (never another 4xx, never once the stream began).
    #[arg(long, env = "TOKENPIPE_RETRIES", default_value_t = 2, value_name = "N",
          value_parser = clap::value_parser!(u32).range(0..=10))]
    pub retries: u32,
    /// The first retry's wait; each next one doubles, with jitter.
    #[arg(long, env = "TOKENPIPE_RETRY_BACKOFF", default_value = "250ms",
          value_name = "DURATION", value_parser = parse_positive_duration)]
    pub retry_backoff: Duration,
    /// The longest wait for one retry; an upstream's Retry-After beyond it is not waited for (its
    /// answer goes to the client).
    #[arg(long, env = "TOKENPIPE_RETRY_MAX_WAIT", default_value = "5s",
          value_name = "DURATION", value_parser = parse_positive_duration)]
    pub retry_max_wait: Duration,
    /// Failures in a row that open an upstream's circuit breaker (0: never): requests then fail fast
    /// with 503, or go to its fallback, until a probe succeeds.
    #[arg(
        long,
        env = "TOKENPIPE_BREAKER_FAILURES",
        default_value_t = 5,
        value_name = "N"
    )]
    pub breaker_failures: u32,
    /// Requests per second each client may send (by client key, else by address; 0: no limit). Past it,
    /// 429 with Retry-After. Per instance: N instances allow N times this.
    #[arg(long, env = "TOKENPIPE_RATE_LIMIT", default_value_t = 0.0, value_name = "RPS",
          value_parser = parse_rate)]
    pub rate_limit: f64,
    /// How many requests a client may send at once after a pause [default: the rate, at least 1].
    #[arg(long, env = "TOKENPIPE_RATE_BURST", value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub rate_burst: Option<u32>,
    /// How long an open breaker waits before it lets one probe through.
    #[arg(long, env = "TOKENPIPE_BREAKER_COOLDOWN", default_value = "30s",
          value_name = "DURATION", value_parser = parse_positive_duration)]
    pub breaker_cooldown: Duration,
}

impl ResilienceArgs {
    pub fn admission(&self) -> AdmissionLimits {
        AdmissionLimits {
            max_concurrent: (self.upstream_max_concurrent > 0)
                .then_some(self.upstream_max_concurrent),
            queue: self.upstream_queue,
            queue_timeout: self.upstream_queue_timeout,
        }
    }

    pub fn retry(&self) -> RetryPolicy {
        RetryPolicy {
            max: self.retries,
            backoff: self.retry_backoff,
            max_wait: self.retry_max_wait,
        }
    }

    pub fn rate_limit(&self) -> Option<RateLimit> {
        (self.rate_limit > 0.0).then(|| RateLimit {
            per_second: self.rate_limit,
            burst: self
                .rate_burst
                .map_or(self.rate_limit.ceil().max(1.0), f64::from),
        })
    }

    pub fn breaker(&self) -> BreakerPolicy {
        BreakerPolicy {
            failures: self.breaker_failures,
            cooldown: self.breaker_cooldown,
        }
    }
}

/// A rate: a number of requests per second, from 0 (off) to a million (the config file's `rate_limit` too).
pub fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if (0.0..=1e6).contains(&r) => Ok(r),
        _ => Err(format!(
            "{s:?}: expected requests per second, from 0 (off) to 1000000"
        )),
    }
}
