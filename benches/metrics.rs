//! What recording the relay's figures costs per relayed chunk, against the relay's CPU per chunk (about
//! 8-10 µs on the machine of docs/14), and why the histograms are ours and not `prometheus-client`'s.
//!
//! Run with `cargo bench --bench metrics` (add `-- --warm-up-time 1 --measurement-time 2` for a quick look).
//!
//! # Cases
//!
//! - `histogram/ours`: `instrument::Histogram::record`, what every per-chunk histogram does;
//! - `histogram/prometheus_client`: the crate's `Histogram::observe` over the same bounds, which takes a
//!   mutex per observation (uncontended here: the best case for it);
//! - `chunk/all`: everything `--no-metrics` turns off for one chunk of one event: the chunk and byte
//!   counters, the gap histogram, the residence time (two clock reads and a histogram), and the usage
//!   watch fed one OpenAI content event (past its first token);
//! - `chunk/clock`: the two `Instant::now()` of the residence time alone, for scale.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use tokenpipe::metrics::RelayMetrics;
use tokenpipe::reactor::instrument::{DURATION_BOUNDS, Histogram};
use tokenpipe::relay::usage::{Dialect, UsageWatch};

const EVENT: &[u8] = br#"data: {"id":"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT","object":"chat.completion.chunk","created":1741569952,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{"content":" relay"},"logprobs":null,"finish_reason":null}],"usage":null}

"#;

fn histograms(c: &mut Criterion) {
    let mut g = c.benchmark_group("histogram");
    let ours = Histogram::durations();
    let mut v = 1u64;
    g.bench_function("ours", |b| {
        b.iter(|| {
            v = v.wrapping_mul(6364136223846793005).wrapping_add(1);
            ours.record(black_box(v >> 34));
        })
    });
    let bounds = DURATION_BOUNDS.iter().map(|&ns| ns as f64 * 1e-9);
    let theirs = prometheus_client::metrics::histogram::Histogram::new(bounds);
    g.bench_function("prometheus_client", |b| {
        b.iter(|| {
            v = v.wrapping_mul(6364136223846793005).wrapping_add(1);
            theirs.observe(black_box((v >> 34) as f64 * 1e-9));
        })
    });
    g.finish();
}

fn chunk(c: &mut Criterion) {
    let mut g = c.benchmark_group("chunk");
    let m = RelayMetrics::new(true);
    let mut watch = UsageWatch::new(Dialect::OpenAi);
    // Past the opening: the first token went by.
    watch.feed(EVENT);
    let mut last = Instant::now();
    g.bench_function("all", |b| {
        b.iter(|| {
            let read_at = Instant::now();
            watch.feed(black_box(EVENT));
            m.chunk(black_box(EVENT.len()));
            let now = read_at + Duration::from_micros(20);
            m.gap.record_duration(now.saturating_duration_since(last));
            last = now;
            m.residence.record_duration(read_at.elapsed());
        })
    });
    g.bench_function("clock", |b| {
        b.iter(|| {
            let read_at = Instant::now();
            black_box(read_at.elapsed())
        })
    });
    g.finish();
}

criterion_group!(benches, histograms, chunk);
criterion_main!(benches);
