//! A histogram that a worker fills without a lock and any thread reads: fixed bucket bounds, one relaxed
//! atomic per bucket.
//!
//! Why not a crate's histogram: `prometheus-client`'s `Histogram::observe` takes a mutex, and an
//! `hdrhistogram::Histogram` needs `&mut` to record, so another thread could read it only behind a lock.
//! Recording here is a bounded search over at most [`MAX_BOUNDS`] bounds and two relaxed `fetch_add`s (the
//! bucket and the sum), on a cache line only its worker writes; a scrape reads the buckets while the worker
//! goes on, so a reading may be one observation behind in some bucket, never wrong by more.
//!
//! The bounds are those Prometheus exports as `le` (upper, inclusive); values above the last one land in
//! the overflow bucket (`+Inf`). Percentiles are estimated from the buckets ([`HistogramSnapshot::quantile`]),
//! as Prometheus' `histogram_quantile` does.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The most bounds a histogram may have.
pub const MAX_BOUNDS: usize = 72;

/// The steps of one decade of [`DURATION_BOUNDS`], in tenths: 1, 1.5, 2, 2.5, 3, 4, 5, 6, 8.
const DECADE: [u64; 9] = [10, 15, 20, 25, 30, 40, 50, 60, 80];

/// Bounds for durations, in nanoseconds: 10 µs to 800 s, nine steps per decade (at most 50 % apart).
/// They cover a loop iteration (microseconds), a first token (hundreds of milliseconds to seconds) and a
/// whole answer (minutes). Steps this fine matter when values crowd one bucket: an interpolated
/// percentile (`HistogramSnapshot::quantile`) can only say where in its bucket a value might be, so a
/// 50 ms gap between events must not read as 99 ms.
pub const DURATION_BOUNDS: &[u64] = &duration_bounds();

const fn duration_bounds() -> [u64; 72] {
    let mut out = [0; 72];
    let mut decade = 1_000; // 10 µs = 10 tenths of 1 µs
    let mut i = 0;
    while i < 72 {
        out[i] = DECADE[i % 9] * decade;
        i += 1;
        if i % 9 == 0 {
            decade *= 10;
        }
    }
    out
}

/// Bounds for small counts (events per wakeup): powers of two up to 1024.
pub const COUNT_BOUNDS: &[u64] = &[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];

/// A histogram of `u64` values (nanoseconds, or counts) over fixed bounds.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [u64],
    /// `buckets[i]` counts values `<= bounds[i]` and `> bounds[i - 1]`; the last one, values above every
    /// bound. Only `bounds.len() + 1` are used.
    buckets: [AtomicU64; MAX_BOUNDS + 1],
    sum: AtomicU64,
}

/// A copy of a [`Histogram`]; copies of histograms with the same bounds add up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistogramSnapshot {
    pub bounds: &'static [u64],
    /// Per bucket, not cumulative; one more than `bounds` (the overflow).
    pub buckets: Vec<u64>,
    /// The sum of every value recorded (it wraps after 2^64: 584 years of nanoseconds).
    pub sum: u64,
}

impl Histogram {
    /// An empty histogram over `bounds` (ascending, at most [`MAX_BOUNDS`]; more are ignored).
    pub fn new(bounds: &'static [u64]) -> Histogram {
        Histogram {
            bounds: &bounds[..bounds.len().min(MAX_BOUNDS)],
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum: AtomicU64::new(0),
        }
    }

    /// An empty histogram of durations ([`DURATION_BOUNDS`]).
    pub fn durations() -> Histogram {
        Histogram::new(DURATION_BOUNDS)
    }

    /// Records one value.
    #[inline]
    pub fn record(&self, value: u64) {
        let i = self.bounds.partition_point(|&b| b < value);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    /// Records one duration, in nanoseconds.
    #[inline]
    pub fn record_duration(&self, d: Duration) {
        self.record(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Reads the buckets.
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            bounds: self.bounds,
            buckets: self.buckets[..=self.bounds.len()]
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            sum: self.sum.load(Ordering::Relaxed),
        }
    }
}

impl HistogramSnapshot {
    /// An empty snapshot over `bounds`.
    pub fn empty(bounds: &'static [u64]) -> HistogramSnapshot {
        HistogramSnapshot {
            bounds,
            buckets: vec![0; bounds.len() + 1],
            sum: 0,
        }
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Adds `other`'s counts (same bounds; a snapshot over other bounds is ignored).
    pub fn add(&mut self, other: &HistogramSnapshot) {
        if other.bounds != self.bounds {
            return;
        }
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.sum = self.sum.saturating_add(other.sum);
    }

    /// What happened between `earlier` and `self` (for rates and recent percentiles).
    pub fn since(&self, earlier: &HistogramSnapshot) -> HistogramSnapshot {
        HistogramSnapshot {
            bounds: self.bounds,
            buckets: self
                .buckets
                .iter()
                .zip(earlier.buckets.iter().chain(std::iter::repeat(&0)))
                .map(|(a, b)| a.saturating_sub(*b))
                .collect(),
            sum: self.sum.saturating_sub(earlier.sum),
        }
    }

    /// Values above `bound` (exactly, when `bound` is one of the bounds).
    pub fn count_above(&self, bound: u64) -> u64 {
        let i = self.bounds.partition_point(|&b| b <= bound);
        self.buckets[i..].iter().sum()
    }

    /// The `q`-quantile (0..=1), interpolated linearly inside its bucket as Prometheus'
    /// `histogram_quantile` does; `None` when empty. A quantile in the overflow bucket is the last bound.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut below = 0u64;
        for (i, &n) in self.buckets.iter().enumerate() {
            if n > 0 && (below + n) as f64 >= rank {
                let Some(&upper) = self.bounds.get(i) else {
                    return self.bounds.last().map(|&b| b as f64);
                };
                let lower = if i == 0 { 0 } else { self.bounds[i - 1] };
                let within = ((rank - below as f64) / n as f64).clamp(0.0, 1.0);
                return Some(lower as f64 + (upper - lower) as f64 * within);
            }
            below += n;
        }
        self.bounds.last().map(|&b| b as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_land_in_the_bucket_whose_bound_is_inclusive() {
        let h = Histogram::new(&[10, 20]);
        for v in [0, 10, 11, 20, 21, 1000] {
            h.record(v);
        }
        let s = h.snapshot();
        assert_eq!(s.buckets, vec![2, 2, 2]);
        assert_eq!(s.count(), 6);
        assert_eq!(s.sum, 1062);
    }

    #[test]
    fn snapshots_add_and_subtract() {
        let h = Histogram::durations();
        h.record_duration(Duration::from_micros(7));
        let before = h.snapshot();
        h.record_duration(Duration::from_millis(60));
        h.record_duration(Duration::from_millis(60));
        let after = h.snapshot();
        let recent = after.since(&before);
        assert_eq!(recent.count(), 2);
        assert_eq!(recent.count_above(50_000_000), 2);
        assert_eq!(after.count_above(50_000_000), 2);
        assert_eq!(
            after.count_above(60_000_000),
            0,
            "60 ms is a bound, inclusive"
        );
        let mut total = HistogramSnapshot::empty(DURATION_BOUNDS);
        total.add(&after);
        total.add(&after);
        assert_eq!(total.count(), 6);
    }

    #[test]
    fn the_duration_bounds_ascend_from_10us_to_800s() {
        assert_eq!(DURATION_BOUNDS.len(), MAX_BOUNDS);
        assert_eq!(DURATION_BOUNDS[0], 10_000);
        assert_eq!(DURATION_BOUNDS[8], 80_000);
        assert_eq!(DURATION_BOUNDS[9], 100_000);
        assert_eq!(*DURATION_BOUNDS.last().unwrap(), 800_000_000_000);
        assert!(
            DURATION_BOUNDS
                .windows(2)
                .all(|w| w[0] < w[1] && w[1] * 2 <= w[0] * 3)
        );
    }

    #[test]
    fn quantiles_interpolate_inside_the_bucket() {
        let h = Histogram::new(&[100, 200, 300]);
        for _ in 0..50 {
            h.record(150);
        }
        for _ in 0..50 {
            h.record(250);
        }
        let s = h.snapshot();
        assert_eq!(s.quantile(0.5), Some(200.0));
        assert_eq!(s.quantile(0.75), Some(250.0));
        assert_eq!(s.quantile(1.0), Some(300.0));
        assert_eq!(HistogramSnapshot::empty(&[1]).quantile(0.5), None);
        h.record(10_000);
        assert_eq!(
            h.snapshot().quantile(1.0),
            Some(300.0),
            "overflow: the last bound"
        );
    }
}
