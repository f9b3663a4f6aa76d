//! Two hand-written scrapes, two seconds apart, and the figures they must give; the parser's reading of
//! the format.

use std::time::Duration;

use super::expo::{Bucket, Exposition};
use super::figures::{Figures, Requests, snapshot};
use crate::reactor::instrument::DURATION_BOUNDS;

pub(super) const EARLIER: &str = r#"# HELP tokenpipe_streams_active Relayed requests in progress.
# TYPE tokenpipe_streams_active gauge
tokenpipe_streams_active 2
tokenpipe_client_connections 3
tokenpipe_relayed_chunks_total 100
tokenpipe_relayed_bytes_total 10000
# TYPE gen_ai_server_time_to_first_token_seconds histogram
gen_ai_server_time_to_first_token_seconds_bucket{le="0.001"} 1
gen_ai_server_time_to_first_token_seconds_bucket{le="0.01"} 3
gen_ai_server_time_to_first_token_seconds_bucket{le="0.1"} 4
gen_ai_server_time_to_first_token_seconds_bucket{le="+Inf"} 4
gen_ai_server_time_to_first_token_seconds_sum 0.05
gen_ai_server_time_to_first_token_seconds_count 4
tokenpipe_relay_event_gap_seconds_bucket{le="0.005"} 0
tokenpipe_relay_event_gap_seconds_bucket{le="0.01"} 10
tokenpipe_relay_event_gap_seconds_bucket{le="0.025"} 10
tokenpipe_relay_event_gap_seconds_bucket{le="+Inf"} 10
tokenpipe_loop_busy_seconds_sum{worker="relay-0"} 1.0
tokenpipe_loop_busy_seconds_count{worker="relay-0"} 100
tokenpipe_loop_busy_seconds_sum{worker="relay-1"} 2.0
tokenpipe_loop_slow_iterations_total{worker="relay-0"} 1
tokenpipe_loop_slow_iterations_total{worker="relay-1"} 0
tokenpipe_syscalls_total{kind="poll"} 300
tokenpipe_syscalls_total{kind="read"} 500
tokenpipe_syscalls_total{kind="writev"} 100
tokenpipe_http_requests_total{route="generate",upstream="mock",status="200"} 10
tokenpipe_http_requests_total{route="generate",upstream="mock",status="429"} 2
tokenpipe_http_requests_total{route="metrics",upstream="none",status="200"} 5
tokenpipe_open_fds{kind="listener"} 2
tokenpipe_open_fds{kind="client"} 3
tokenpipe_open_fds{kind="upstream_idle"} 1
tokenpipe_open_fds{kind="upstream_active"} 2
process_open_fds 30
process_max_fds 1024
process_resident_memory_bytes 9437184
"#;

/// Two seconds later: 400 chunks, 10 first tokens between 10 and 100 ms, 100 gaps (50 up to 10 ms, 50
/// up to 25 ms), relay-0 busy 0.5 s and relay-1 0.1 s, 1200 system calls, 20 answers of 200, 2 of 429,
/// 4 of 502 (a new series), and two more scrapes of /metrics.
pub(super) const LATER: &str = r#"# HELP tokenpipe_streams_active Relayed requests in progress.
# TYPE tokenpipe_streams_active gauge
tokenpipe_streams_active 5
tokenpipe_client_connections 6
tokenpipe_relayed_chunks_total 500
tokenpipe_relayed_bytes_total 50000
# TYPE gen_ai_server_time_to_first_token_seconds histogram
gen_ai_server_time_to_first_token_seconds_bucket{le="0.001"} 1
gen_ai_server_time_to_first_token_seconds_bucket{le="0.01"} 3
gen_ai_server_time_to_first_token_seconds_bucket{le="0.1"} 14
gen_ai_server_time_to_first_token_seconds_bucket{le="+Inf"} 14
gen_ai_server_time_to_first_token_seconds_sum 0.6
gen_ai_server_time_to_first_token_seconds_count 14
tokenpipe_relay_event_gap_seconds_bucket{le="0.005"} 0
tokenpipe_relay_event_gap_seconds_bucket{le="0.01"} 60
tokenpipe_relay_event_gap_seconds_bucket{le="0.025"} 110
tokenpipe_relay_event_gap_seconds_bucket{le="+Inf"} 110
tokenpipe_loop_busy_seconds_sum{worker="relay-0"} 1.5
tokenpipe_loop_busy_seconds_count{worker="relay-0"} 300
tokenpipe_loop_busy_seconds_sum{worker="relay-1"} 2.1
tokenpipe_loop_slow_iterations_total{worker="relay-0"} 3
tokenpipe_loop_slow_iterations_total{worker="relay-1"} 1
tokenpipe_syscalls_total{kind="poll"} 300
tokenpipe_syscalls_total{kind="read"} 1300
tokenpipe_syscalls_total{kind="writev"} 500
tokenpipe_http_requests_total{route="generate",upstream="mock",status="200"} 30
tokenpipe_http_requests_total{route="generate",upstream="mock",status="429"} 4
tokenpipe_http_requests_total{route="generate",upstream="mock",status="502"} 4
tokenpipe_http_requests_total{route="metrics",upstream="none",status="200"} 7
tokenpipe_open_fds{kind="listener"} 2
tokenpipe_open_fds{kind="client"} 6
tokenpipe_open_fds{kind="upstream_idle"} 1
tokenpipe_open_fds{kind="upstream_active"} 5
process_open_fds 40
process_max_fds 1024
process_resident_memory_bytes 10485760
"#;

fn close(actual: Option<f64>, expected: f64) -> bool {
    actual.is_some_and(|a| (a - expected).abs() < 1e-9 * expected.abs().max(1.0))
}

macro_rules! assert_close {
    ($actual:expr, $expected:expr) => {
        assert!(
            close($actual, $expected),
            "{} = {:?}, expected {}",
            stringify!($actual),
            $actual,
            $expected
        )
    };
}

pub(super) fn two_seconds() -> Figures {
    let (earlier, later) = (Exposition::parse(EARLIER), Exposition::parse(LATER));
    assert_eq!((earlier.unreadable, later.unreadable), (0, 0));
    Figures::between(Some(&earlier), &later, Duration::from_secs(2))
}

#[test]
fn two_scrapes_make_one_row_of_figures() {
    let f = two_seconds();
    assert_close!(Some(f.seconds), 2.0);
    // Levels: the later scrape's.
    assert_close!(f.streams, 5.0);
    assert_close!(f.clients, 6.0);
    assert_close!(f.fds.listener, 2.0);
    assert_close!(f.fds.client, 6.0);
    assert_close!(f.fds.upstream_idle, 1.0);
    assert_close!(f.fds.upstream_active, 5.0);
    assert_close!(f.fds.process, 40.0);
    assert_close!(f.fds.max, 1024.0);
    assert_close!(f.rss_bytes, 10485760.0);
    // Rates: the growth over two seconds.
    assert_close!(f.chunks_per_sec, 200.0);
    assert_close!(f.bytes_per_sec, 20000.0);
    assert_close!(f.syscalls_per_chunk, 1200.0 / 400.0);
    assert_close!(f.slow_iterations, 3.0);
    // Busy: 0.5 s and 0.1 s of 2 s; overall, 0.6 s of 2 workers × 2 s.
    assert_eq!(f.busy_by_worker.len(), 2);
    assert_eq!(f.busy_by_worker[0].0, "relay-0");
    assert_close!(Some(f.busy_by_worker[0].1), 0.25);
    assert_close!(Some(f.busy_by_worker[1].1), 0.05);
    assert_close!(f.busy, 0.15);
    // Requests: /metrics left out; the 502 series is new, so all of it is this interval's.
    let r = f.requests.expect("requests");
    assert_eq!(
        r,
        Requests {
            ok: 10.0,
            client_error: 1.0,
            server_error: 2.0,
            other: 0.0
        }
    );
}

#[test]
fn percentiles_come_from_the_buckets_of_the_interval() {
    let f = two_seconds();
    // The 4 earlier first tokens (all at or under 0.1 s, 3 of them under 0.01 s) are not this interval's:
    // the 10 new ones all lie in (0.01, 0.1], interpolated linearly.
    assert_eq!(f.ttft.count, Some(10));
    assert_close!(f.ttft.p50, 0.01 + 0.09 * 0.5);
    assert_close!(f.ttft.p99, 0.01 + 0.09 * 0.99);
    // 50 gaps in (0.005, 0.01] and 50 in (0.01, 0.025].
    assert_eq!(f.event_gap.count, Some(100));
    assert_close!(f.event_gap.p50, 0.01);
    assert_close!(f.event_gap.p99, 0.01 + 0.015 * (49.0 / 50.0));
}

#[test]
fn without_an_earlier_scrape_only_levels_are_known() {
    let later = Exposition::parse(LATER);
    let f = Figures::between(None, &later, Duration::from_secs(2));
    assert_close!(f.streams, 5.0);
    assert_close!(f.fds.process, 40.0);
    assert_eq!(f.chunks_per_sec, None);
    assert_eq!(f.ttft.p50, None);
    assert_eq!(f.busy, None);
    assert_eq!(f.requests, None);
    // No time between the scrapes: no rate either (rather than a division by zero).
    let earlier = Exposition::parse(EARLIER);
    let f = Figures::between(Some(&earlier), &later, Duration::ZERO);
    assert_eq!(f.chunks_per_sec, None);
}

#[test]
fn a_relay_that_restarted_counts_from_zero() {
    // Scrapes in the other order: every counter went down, as after a restart.
    let (earlier, later) = (Exposition::parse(LATER), Exposition::parse(EARLIER));
    let f = Figures::between(Some(&earlier), &later, Duration::from_secs(2));
    assert_close!(f.chunks_per_sec, 50.0);
    assert_eq!(f.ttft.count, Some(4), "the whole reset histogram is new");
    assert!(f.busy.is_some_and(|b| (0.0..=1.0).contains(&b)));
}

#[test]
fn an_idle_interval_has_rates_of_zero_and_no_percentiles() {
    let same = Exposition::parse(LATER);
    let f = Figures::between(Some(&same), &same, Duration::from_secs(1));
    assert_close!(f.chunks_per_sec.map(|v| v + 1.0), 1.0);
    assert_eq!(f.syscalls_per_chunk, None, "no chunk to divide by");
    assert_eq!(f.ttft.count, Some(0));
    assert_eq!((f.ttft.p50, f.ttft.p99), (None, None));
    assert_close!(f.busy.map(|v| v + 1.0), 1.0);
}

#[test]
fn missing_metrics_are_missing_figures() {
    let earlier = Exposition::parse("tokenpipe_streams_active 1\n");
    let later = Exposition::parse("tokenpipe_streams_active 2\n");
    let f = Figures::between(Some(&earlier), &later, Duration::from_secs(1));
    assert_close!(f.streams, 2.0);
    assert_eq!(f.chunks_per_sec, None);
    assert_eq!(f.fds.max, None);
    assert_eq!(f.busy, None);
    assert!(f.busy_by_worker.is_empty());
}

#[test]
fn the_relays_own_bounds_are_its_duration_bounds() {
    // The relay writes its bounds as `le` seconds, with float noise ("30.000000000000004").
    let buckets: Vec<Bucket> = DURATION_BOUNDS
        .iter()
        .enumerate()
        .map(|(i, &ns)| Bucket {
            le: ns as f64 * 1e-9,
            cumulative: i as f64,
        })
        .chain(std::iter::once(Bucket {
            le: f64::INFINITY,
            cumulative: 100.0,
        }))
        .collect();
    let s = snapshot(&buckets).expect("a histogram");
    assert_eq!(s.bounds, DURATION_BOUNDS);
    assert_eq!(s.buckets.len(), DURATION_BOUNDS.len() + 1);
    assert_eq!(s.count(), 100);
    // Bounds that cannot be nanoseconds in order: no histogram, no panic.
    let bad = |le: f64| Bucket {
        le,
        cumulative: 1.0,
    };
    assert!(snapshot(&[bad(-1.0)]).is_none());
    assert!(snapshot(&[bad(1e-12), bad(2e-12)]).is_none());
    assert!(snapshot(&[bad(f64::INFINITY)]).is_none());
}

#[test]
fn the_parser_reads_the_format() {
    let text = "# HELP a x\n\
                a_total 3\n\
                a_total{kind=\"x\"} 4 1700000000000\n\
                b{path=\"/a,b\",q=\"say \\\"hi\\\"\\n\\\\\" , } +Inf\n\
                c{le=\"0.5\"}\t-Inf\n\
                d NaN\n\
                  e   1.5e3  \n\
                {no_name=\"x\"} 1\n\
                f{unclosed=\"x} 1\n\
                g 1 2 3\n\
                h{k=v} 1\n\
                i 1 not-a-time\n\
                9j 1\n";
    let e = Exposition::parse(text);
    assert_eq!(e.sum("a_total"), Some(7.0));
    let b = &e.series("b")[0];
    assert_eq!(b.label("path"), Some("/a,b"));
    assert_eq!(b.label("q"), Some("say \"hi\"\n\\"));
    assert_eq!(b.value, f64::INFINITY);
    assert_eq!(e.sum("c"), Some(f64::NEG_INFINITY));
    assert!(e.sum("d").is_some_and(f64::is_nan));
    assert_eq!(e.sum("e"), Some(1500.0));
    assert_eq!(e.unreadable, 6, "{e:?}");
    assert_eq!(e.by_label("a_total", "kind"), vec![("x".to_string(), 4.0)]);
}

#[test]
fn buckets_add_up_across_workers_in_order() {
    let e = Exposition::parse(
        "h_bucket{worker=\"a\",le=\"+Inf\"} 3\nh_bucket{worker=\"a\",le=\"1\"} 2\n\
         h_bucket{worker=\"b\",le=\"1\"} 5\nh_bucket{worker=\"b\",le=\"+Inf\"} 5\n\
         h_bucket{worker=\"b\",le=\"zero\"} 5\n",
    );
    let b = e.buckets("h", |_| true);
    let pairs: Vec<(f64, f64)> = b.iter().map(|b| (b.le, b.cumulative)).collect();
    assert_eq!(pairs, vec![(1.0, 7.0), (f64::INFINITY, 8.0)]);
}
