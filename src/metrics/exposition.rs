//! The exposition: every figure of a [`Registry`], read now and written as Prometheus text by
//! `prometheus-client`'s encoder. One [`Collector`] reads them all at scrape time, so the figures are
//! ours (lock-free where they are recorded) and only the text format is the crate's.
//!
//! Names follow Prometheus' conventions (base units: seconds and bytes; counters end in `_total`, which the
//! encoder adds) and, where a figure is one of theirs, OpenTelemetry's GenAI semantic conventions
//! (`gen_ai_server_time_to_first_token_seconds`, `gen_ai_client_token_usage` with `gen_ai_token_type`).

use std::fmt::Error;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

use super::Registry;
use super::snapshot::Snapshot;
use crate::reactor::instrument::{HistogramSnapshot, Level, Syscall};
use crate::relay::metrics::{HISTOGRAMS, RequestKey, Tokens};

/// Renders `registry` as Prometheus text.
pub fn render(registry: &Registry) -> String {
    let mut prom = prometheus_client::registry::Registry::default();
    prom.register_collector(Box::new(Scrape(Snapshot::take(registry))));
    let mut text = String::with_capacity(16 * 1024);
    // Writing to a `String` cannot fail; an encoder error would be ours, and leaves what was written.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &prom);
    text
}

#[derive(Debug)]
struct Scrape(Snapshot);

/// A counter with no labels.
fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> Result<(), Error> {
    let c = ConstCounter::new(value);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

/// A gauge with no labels.
fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, value: i64) -> Result<(), Error> {
    let g = ConstGauge::new(value);
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

/// A counter with one label, one series per value.
fn counters<'a>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    series: impl IntoIterator<Item = (&'a str, u64)>,
) -> Result<(), Error> {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, n) in series {
        ConstCounter::new(n).encode(m.encode_family(&[(label, value)])?)?;
    }
    Ok(())
}

/// Buckets in the encoder's form: upper bounds in `scale` units (nanoseconds to seconds: 1e-9), counts
/// per bucket, the overflow as `+Inf`.
fn buckets(h: &HistogramSnapshot, scale: f64) -> Vec<(f64, u64)> {
    h.bounds
        .iter()
        .map(|&b| b as f64 * scale)
        .chain(std::iter::once(f64::INFINITY))
        .zip(h.buckets.iter().copied())
        .collect()
}

fn histogram(
    m: &mut prometheus_client::encoding::MetricEncoder,
    h: &HistogramSnapshot,
    scale: f64,
) -> Result<(), Error> {
    m.encode_histogram::<NoLabelSet>(h.sum as f64 * scale, h.count(), &buckets(h, scale), None)
}

const NANOS: f64 = 1e-9;

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), Error> {
        let s = &self.0;
        requests(&mut e, s)?;
        streams(&mut e, s)?;
        upstreams(&mut e, s)?;
        for ((name, help), h) in HISTOGRAMS.iter().zip(&s.histograms) {
            let mut m =
                e.encode_descriptor(name, help, Some(&Unit::Seconds), MetricType::Histogram)?;
            histogram(&mut m, h, NANOS)?;
        }
        tokens(&mut e, s)?;
        loops(&mut e, s)?;
        descriptors(&mut e, s)?;
        failures(&mut e, s)?;
        Ok(())
    }
}

fn requests(e: &mut DescriptorEncoder, s: &Snapshot) -> Result<(), Error> {
    let help = "Requests answered, by route, upstream and status (counted when the response is written out \
                or cut).";
    let mut m = e.encode_descriptor("tokenpipe_http_requests", help, None, MetricType::Counter)?;
    let mut rows: Vec<&(RequestKey, u64)> = s.labeled.requests.iter().collect();
    rows.sort_by_key(|(k, _)| (k.route, k.upstream, k.status));
    for (k, n) in rows {
        let upstream = k.upstream.map_or("none", |i| s.upstream(i));
        let status = k.status.to_string();
        let labels = [
            ("route", k.route),
            ("upstream", upstream),
            ("status", status.as_str()),
        ];
        ConstCounter::new(*n).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn streams(e: &mut DescriptorEncoder, s: &Snapshot) -> Result<(), Error> {
    let r = &s.relay;
    let clients = s.level(Level::ClientSockets);
    gauge(
        e,
        "tokenpipe_client_connections",
        "Client connections open.",
        clients,
    )?;
    let active = i64::try_from(r.in_flight).unwrap_or(i64::MAX);
    gauge(
        e,
        "tokenpipe_streams_active",
        "Relayed requests in progress, from routing to their end.",
        active,
    )?;
    let help = "Chunks written to clients: one writev of payload, which may gather several upstream chunks.";
    counter(e, "tokenpipe_relayed_chunks", help, s.chunks)?;
    counter(
        e,
        "tokenpipe_relayed_bytes",
        "Payload bytes written to clients (without chunk framing).",
        s.bytes,
    )?;
    let help =
        "Streams completed (their last chunk sent) and failed (a 502, or a stream cut mid-way).";
    counters(
        e,
        "tokenpipe_streams",
        help,
        "outcome",
        [("completed", r.completed), ("failed", r.failed)],
    )?;
    let held = s.level(Level::HeldBytes);
    gauge(
        e,
        "tokenpipe_relay_buffered_bytes",
        "Bytes queued for clients that their sockets have not taken.",
        held,
    )?;
    let help =
        "Connections with bytes queued that their peer has not taken: streams under backpressure.";
    gauge(
        e,
        "tokenpipe_streams_backpressured",
        help,
        s.level(Level::HeldBuffers),
    )?;
    let help = "Keep-alive comments sent on silent event streams.";
    counter(e, "tokenpipe_sse_keepalives", help, r.keepalives)?;
    let help =
        "Clients that left before their response head went out, or in the middle of their stream.";
    let d = s.departures;
    counters(
        e,
        "tokenpipe_client_disconnects",
        help,
        "phase",
        [("before_head", d[0]), ("mid_stream", d[1])],
    )?;
    let help = "Deadlines that expired, by what they bounded.";
    counters(
        e,
        "tokenpipe_deadlines_expired",
        help,
        "kind",
        s.expiries.iter().map(|(k, n)| (k.name(), *n)),
    )?;
    let help = "Requests refused before reaching an upstream: 429 rate limit, 503 shed past the descriptor \
                budget, 503 with a full queue or an open breaker, 503 after the queue's deadline.";
    let refusals = [
        ("rate_limited", r.rate_limited),
        ("shed", r.shed),
        ("refused", r.refused),
        ("queue_timeout", r.queue_timeouts),
    ];
    counters(e, "tokenpipe_requests_refused", help, "reason", refusals)?;
    Ok(())
}

fn upstreams(e: &mut DescriptorEncoder, s: &Snapshot) -> Result<(), Error> {
    let r = &s.relay;
    let pooled = s.level(Level::PooledUpstreams);
    let open = s.level(Level::UpstreamSockets);
    let help = "Upstream connections open, by state: idle in a pool, or in use by an exchange.";
    let mut m = e.encode_descriptor(
        "tokenpipe_upstream_connections",
        help,
        None,
        MetricType::Gauge,
    )?;
    for (state, n) in [("idle", pooled), ("in_use", open - pooled)] {
        ConstGauge::new(n).encode(m.encode_family(&[("state", state)])?)?;
    }
    counter(
        e,
        "tokenpipe_upstream_connects",
        "New upstream connections opened.",
        r.connects,
    )?;
    counter(
        e,
        "tokenpipe_upstream_reuses",
        "Exchanges that took an idle pooled connection.",
        r.reuses,
    )?;
    let help = "TLS handshakes with upstreams, full or resumed.";
    let kinds = [("full", r.tls_full), ("resumed", r.tls_resumed)];
    counters(e, "tokenpipe_upstream_tls_handshakes", help, "kind", kinds)?;
    let help =
        "Requests sent again: on a fresh connection after a stale pooled one, or after a backoff.";
    counters(
        e,
        "tokenpipe_upstream_retries",
        help,
        "kind",
        [("stale_connection", r.retries), ("backoff", r.backoffs)],
    )?;
    counter(
        e,
        "tokenpipe_upstream_fallbacks",
        "Requests moved to a fallback upstream.",
        r.fallbacks,
    )?;
    counter(
        e,
        "tokenpipe_upstream_queued",
        "Requests that waited in an upstream's queue for a turn.",
        r.queued,
    )?;
    let help = "Requests holding a turn at each upstream now.";
    let mut m = e.encode_descriptor(
        "tokenpipe_upstream_in_flight",
        help,
        None,
        MetricType::Gauge,
    )?;
    for (i, (in_flight, _, _)) in s.load.iter().enumerate() {
        let n = i64::try_from(*in_flight).unwrap_or(i64::MAX);
        ConstGauge::new(n).encode(m.encode_family(&[("upstream", s.upstream(i))])?)?;
    }
    let help = "Requests waiting for a turn at each upstream now.";
    let mut m = e.encode_descriptor(
        "tokenpipe_upstream_queue_depth",
        help,
        None,
        MetricType::Gauge,
    )?;
    for (i, (_, queued, _)) in s.load.iter().enumerate() {
        let n = i64::try_from(*queued).unwrap_or(i64::MAX);
        ConstGauge::new(n).encode(m.encode_family(&[("upstream", s.upstream(i))])?)?;
    }
    let help = "Times each upstream's circuit breaker opened.";
    let mut m = e.encode_descriptor(
        "tokenpipe_upstream_breaker_opened",
        help,
        None,
        MetricType::Counter,
    )?;
    for (i, (_, _, opened)) in s.load.iter().enumerate() {
        ConstCounter::new(*opened).encode(m.encode_family(&[("upstream", s.upstream(i))])?)?;
    }
    Ok(())
}

fn tokens(e: &mut DescriptorEncoder, s: &Snapshot) -> Result<(), Error> {
    let help = "Tokens used, as the upstream's stream reported them (OpenAI usage, Gemini usageMetadata, \
                Anthropic message_start and message_delta), by upstream, model and token type.";
    let mut m =
        e.encode_descriptor("gen_ai_client_token_usage", help, None, MetricType::Counter)?;
    let mut rows: Vec<&((usize, Box<str>), Tokens)> = s.labeled.tokens.iter().collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    for ((upstream, model), t) in rows {
        for (kind, n) in [("input", t.input), ("output", t.output)] {
            let labels = [
                ("upstream", s.upstream(*upstream)),
                ("gen_ai_response_model", model),
                ("gen_ai_token_type", kind),
            ];
            ConstCounter::new(n).encode(m.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

fn loops(e: &mut DescriptorEncoder, s: &Snapshot) -> Result<(), Error> {
    const LOOP: [(&str, &str, bool); 4] = [
        (
            "tokenpipe_loop_poll_wait",
            "Time each iteration slept in epoll_wait.",
            true,
        ),
        (
            "tokenpipe_loop_busy",
            "Time each iteration was busy, from its wakeup to its next poll.",
            true,
        ),
        (
            "tokenpipe_loop_events_per_wakeup",
            "Events each epoll_wait returned.",
            false,
        ),
        (
            "tokenpipe_loop_timer_lateness",
            "How long after its deadline each timer fired.",
            true,
        ),
    ];
    for (i, (name, help, seconds)) in LOOP.iter().enumerate() {
        let unit = seconds.then_some(Unit::Seconds);
        let mut m = e.encode_descriptor(name, help, unit.as_ref(), MetricType::Histogram)?;
        for l in &s.loops {
            let scale = if *seconds { NANOS } else { 1.0 };
            let labels = [("worker", l.worker.as_str())];
            let mut f = m.encode_family(&labels)?;
            histogram(&mut f, &l.histograms[i], scale)?;
        }
    }
    let help = "Loop iterations run, per worker.";
    counters(
        e,
        "tokenpipe_loop_iterations",
        help,
        "worker",
        s.loops.iter().map(|l| (l.worker.as_str(), l.iterations)),
    )?;
    let help = "Loop iterations busy for longer than --loop-warn-ms, per worker.";
    counters(
        e,
        "tokenpipe_loop_slow_iterations",
        help,
        "worker",
        s.loops.iter().map(|l| (l.worker.as_str(), l.slow)),
    )?;
    let help = "System calls made by the relay workers, by kind (poll is epoll_wait, register is epoll_ctl).";
    let calls = s
        .syscalls
        .iter()
        .filter(|(k, _)| *k != Syscall::ReadWouldBlock);
    counters(
        e,
        "tokenpipe_syscalls",
        help,
        "kind",
        calls.map(|(k, n)| (k.name(), *n)),
    )?;
    let help = "Reads that found nothing (EAGAIN), already counted in tokenpipe_syscalls_total{kind=\"read\"}.";
    let would_block = s
        .syscalls
        .iter()
        .find(|(k, _)| *k == Syscall::ReadWouldBlock)
        .map_or(0, |(_, n)| *n);
    counter(e, "tokenpipe_reads_would_block", help, would_block)?;
    Ok(())
}

fn descriptors(e: &mut DescriptorEncoder, s: &Snapshot) -> Result<(), Error> {
    let pooled = s.level(Level::PooledUpstreams);
    let kinds = [
        ("listener", s.listeners as i64),
        ("client", s.level(Level::ClientSockets)),
        ("upstream_idle", pooled),
        ("upstream_active", s.level(Level::UpstreamSockets) - pooled),
    ];
    let help = "Sockets the relay workers hold, by kind (as of each worker's last loop iteration).";
    let mut m = e.encode_descriptor("tokenpipe_open_fds", help, None, MetricType::Gauge)?;
    for (kind, n) in kinds {
        ConstGauge::new(n).encode(m.encode_family(&[("kind", kind)])?)?;
    }
    let p = &s.process;
    if let Some(n) = p.open_fds {
        gauge(
            e,
            "process_open_fds",
            "Open file descriptors of the whole process.",
            n as i64,
        )?;
    }
    if let Some(n) = s.fd_limit {
        gauge(
            e,
            "process_max_fds",
            "The descriptor limit (RLIMIT_NOFILE) the process runs with.",
            n as i64,
        )?;
    }
    if let Some(n) = p.resident_bytes {
        gauge(
            e,
            "process_resident_memory_bytes",
            "Resident memory of the process.",
            n as i64,
        )?;
    }
    if let Some(secs) = p.cpu_seconds {
        let c = ConstCounter::new(secs);
        let help = "User and system CPU time of the process.";
        c.encode(e.encode_descriptor("process_cpu_seconds", help, None, c.metric_type())?)?;
    }
    Ok(())
}

fn failures(e: &mut DescriptorEncoder, s: &Snapshot) -> Result<(), Error> {
    let help =
        "Upstream failures, by upstream and kind, whether or not a retry or a fallback followed.";
    let mut m = e.encode_descriptor(
        "tokenpipe_upstream_failures",
        help,
        None,
        MetricType::Counter,
    )?;
    let mut rows: Vec<&((usize, &str), u64)> = s.labeled.failures.iter().collect();
    rows.sort();
    for ((upstream, kind), n) in rows {
        let labels = [("upstream", s.upstream(*upstream)), ("kind", *kind)];
        ConstCounter::new(*n).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}
