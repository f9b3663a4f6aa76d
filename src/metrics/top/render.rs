//! Figures to text: one line per refresh ([`row`], under [`header`] and the [`LEGEND`]) for logs and
//! pipes, and a whole screen ([`screen`]) for a terminal. Pure: the caller says the time and what to show.

use std::fmt::Write as _;
use std::time::Duration;

use super::figures::{Figures, Recent};

/// What each column means; printed once above the rows (each line starts with `#`, so that a log can
/// be filtered), and at the foot of the screen.
pub const LEGEND: &[&str] = &[
    "# time: UTC | streams: relayed requests in progress | chunk/s: writes of payload to clients per \
     second | bytes/s: payload bytes relayed per second",
    "# ttft50/ttft99: time to first token, p50/p99 of the streams whose first token left this \
     interval | gap99: p99 of the time between two chunks of one stream",
    "# busy: share of wall time the event loops were busy (all workers; per worker in the last \
     column) | slow: iterations over --loop-warn-ms | sys/chk: system calls per relayed chunk",
    "# 2xx/s 4xx/s 5xx/s: requests answered per second, by status (/metrics itself not counted) | \
     sockets: listener/client/upstream idle/upstream active (top's own scrape is one client)",
    "# fds/max: descriptors the process has open, and its limit | rss: resident memory | \
     -: nothing to show (no event, or no earlier scrape)",
];

/// Column names and widths (each column is right-aligned in its width; one blank between columns).
const COLUMNS: &[(&str, usize)] = &[
    ("time", 8),
    ("streams", 7),
    ("chunk/s", 7),
    ("bytes/s", 8),
    ("ttft50", 7),
    ("ttft99", 7),
    ("gap99", 7),
    ("busy", 6),
    ("slow", 4),
    ("sys/chk", 7),
    ("2xx/s", 6),
    ("4xx/s", 5),
    ("5xx/s", 5),
    ("sockets", 11),
    ("fds/max", 12),
    ("rss", 8),
];

/// The title of the last column, which has as many values as there are workers.
const BY_WORKER: &str = "busy by worker";

/// The column names, aligned as [`row`] aligns the values.
pub fn header() -> String {
    let names: Vec<String> = COLUMNS.iter().map(|(n, _)| n.to_string()).collect();
    format!("{}  {BY_WORKER}", line(&names))
}

/// One row: the figures of one interval, `time` its end (`HH:MM:SS`).
pub fn row(time: &str, f: &Figures) -> String {
    let n = |v: Option<f64>| v.map_or_else(dash, |v| format!("{v:.0}"));
    let requests = |pick: fn(&super::figures::Requests) -> f64| {
        f.requests.as_ref().map(pick).map_or_else(dash, rate)
    };
    let fds = &f.fds;
    let sockets = [
        fds.listener,
        fds.client,
        fds.upstream_idle,
        fds.upstream_active,
    ]
    .map(n)
    .join("/");
    let values = [
        time.to_string(),
        n(f.streams),
        f.chunks_per_sec.map_or_else(dash, rate),
        f.bytes_per_sec.map_or_else(dash, bytes),
        duration(f.ttft.p50),
        duration(f.ttft.p99),
        duration(f.event_gap.p99),
        f.busy.map_or_else(dash, percent),
        n(f.slow_iterations),
        f.syscalls_per_chunk
            .map_or_else(dash, |v| format!("{v:.1}")),
        requests(|r| r.ok),
        requests(|r| r.client_error),
        requests(|r| r.server_error),
        sockets,
        format!("{}/{}", n(fds.process), n(fds.max)),
        f.rss_bytes.map_or_else(dash, bytes),
    ];
    let workers: Vec<String> = f.busy_by_worker.iter().map(|(_, b)| percent(*b)).collect();
    format!("{}  {}", line(&values), workers.join(" "))
        .trim_end()
        .to_string()
}

/// A line in plain mode saying that this refresh has no figures, and why.
pub fn problem_row(time: &str, url: &str, why: &str, interval: Duration) -> String {
    format!(
        "{time:>8} cannot read {url}: {why}; trying again every {}",
        interval_text(interval)
    )
}

/// What the whole screen shows.
pub struct Frame<'a> {
    pub url: &'a str,
    pub interval: Duration,
    /// The time of this refresh, `HH:MM:SS` (UTC).
    pub time: &'a str,
    /// The latest figures, or why there are none this time.
    pub latest: Result<&'a Figures, &'a str>,
    /// The latest rows, oldest first, as [`row`] writes them.
    pub history: &'a [String],
}

/// A full screen: the cursor goes home, every line is written over the last screen's and the rest is
/// erased, so that nothing flickers.
pub fn screen(frame: &Frame<'_>) -> String {
    const BOLD: &str = "\x1b[1m";
    const DIM: &str = "\x1b[2m";
    const RESET: &str = "\x1b[0m";
    let mut lines = vec![format!(
        "{BOLD}tokenpipe top{RESET}  {}  every {}  {} UTC  (Ctrl-C to quit)",
        frame.url,
        interval_text(frame.interval),
        frame.time
    )];
    lines.push(String::new());
    match frame.latest {
        Ok(f) => lines.extend(summary(f)),
        Err(why) => {
            lines.push(format!("{BOLD}cannot read {}{RESET}: {why}", frame.url));
            lines.push(format!(
                "trying again every {} (is the relay running, and is this its address?)",
                interval_text(frame.interval)
            ));
        }
    }
    lines.push(String::new());
    lines.push(format!("{BOLD}{}{RESET}", header()));
    lines.extend(frame.history.iter().cloned());
    lines.push(String::new());
    lines.extend(LEGEND.iter().map(|l| format!("{DIM}{l}{RESET}")));
    let mut out = String::from("\x1b[H");
    for l in lines {
        // Erase what the last screen left to the right of this line.
        let _ = writeln!(out, "{l}\x1b[K");
    }
    out.push_str("\x1b[J");
    out
}

/// The figures of the screen's upper part, one subject per line.
fn summary(f: &Figures) -> Vec<String> {
    let n = |v: Option<f64>| v.map_or_else(dash, |v| format!("{v:.0}"));
    let requests = f.requests.map_or_else(dash, |r| {
        format!(
            "2xx {}  4xx {}  5xx {}",
            rate(r.ok),
            rate(r.client_error),
            rate(r.server_error)
        )
    });
    let workers: Vec<String> = f
        .busy_by_worker
        .iter()
        .map(|(w, b)| format!("{w} {}", percent(*b)))
        .collect();
    let fds = &f.fds;
    vec![
        format!(
            "streams      {} active   clients {}   requests/s  {requests}",
            n(f.streams),
            n(f.clients)
        ),
        format!(
            "relayed      {} chunks/s   {}/s   {} system calls per chunk",
            f.chunks_per_sec.map_or_else(dash, rate),
            f.bytes_per_sec.map_or_else(dash, bytes),
            f.syscalls_per_chunk
                .map_or_else(dash, |v| format!("{v:.1}"))
        ),
        format!("first token  {}", recent(&f.ttft, "first tokens")),
        format!("event gap    {}", recent(&f.event_gap, "gaps")),
        format!(
            "loop busy    {} overall   {}   slow iterations {}",
            f.busy.map_or_else(dash, percent),
            workers.join("  "),
            n(f.slow_iterations)
        ),
        format!(
            "sockets      listener {}  client {}  upstream idle {}  upstream active {}   \
             process fds {} of {}",
            n(fds.listener),
            n(fds.client),
            n(fds.upstream_idle),
            n(fds.upstream_active),
            n(fds.process),
            n(fds.max)
        ),
        format!(
            "memory       {} resident",
            f.rss_bytes.map_or_else(dash, bytes)
        ),
    ]
}

/// `p50 X  p99 Y  (N what this interval)`.
fn recent(r: &Recent, what: &str) -> String {
    let count = r.count.map_or_else(dash, |c| c.to_string());
    format!(
        "p50 {}  p99 {}  ({count} {what} this interval)",
        duration(r.p50),
        duration(r.p99)
    )
}

/// Values right-aligned in the [`COLUMNS`]' widths.
fn line(values: &[String]) -> String {
    let mut out = String::new();
    for (i, (value, (_, width))) in values.iter().zip(COLUMNS).enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let _ = write!(out, "{value:>width$}");
    }
    out
}

fn dash() -> String {
    "-".to_string()
}

/// A rate: `0`, `0.4`, `12.3`, `412`, `12.3k`, `1.2M`.
pub fn rate(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".to_string()
    } else if a < 100.0 {
        format!("{v:.1}")
    } else if a < 10_000.0 {
        format!("{v:.0}")
    } else if a < 10_000_000.0 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{:.1}M", v / 1e6)
    }
}

/// Bytes, in binary units: `512B`, `51.2KiB`, `3.1MiB`, `1.2GiB`.
pub fn bytes(v: f64) -> String {
    const KIB: f64 = 1024.0;
    match v.abs() {
        a if a < KIB => format!("{v:.0}B"),
        a if a < KIB * KIB => format!("{:.1}KiB", v / KIB),
        a if a < KIB * KIB * KIB => format!("{:.1}MiB", v / (KIB * KIB)),
        _ => format!("{:.1}GiB", v / (KIB * KIB * KIB)),
    }
}

/// A share as a percentage: `1.2%`.
pub fn percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

/// A duration in seconds, in the unit that reads best: `8.5µs`, `250µs`, `12.3ms`, `250ms`, `1.20s`;
/// `-` for none.
pub fn duration(seconds: Option<f64>) -> String {
    match seconds {
        None => dash(),
        Some(s) if s < 10e-6 => format!("{:.1}µs", s * 1e6),
        Some(s) if s < 1e-3 => format!("{:.0}µs", s * 1e6),
        Some(s) if s < 0.1 => format!("{:.1}ms", s * 1e3),
        Some(s) if s < 1.0 => format!("{:.0}ms", s * 1e3),
        Some(s) => format!("{s:.2}s"),
    }
}

/// An interval as options write it: `500ms`, `1s`, `2s`, `1500ms`.
pub fn interval_text(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// The time of day of `since_epoch` (a `SystemTime` since the Unix epoch), `HH:MM:SS` UTC.
pub fn clock(since_epoch: Duration) -> String {
    let s = since_epoch.as_secs() % 86_400;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}
