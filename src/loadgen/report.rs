//! The figures of a run, for people (a table) and for machines (one JSON object, `--json`).
//!
//! [`Report`] is built from the merged [`Tally`] of the workers and the plan they ran; serialized, it is
//! the JSON object that the benchmark reads. **Its field names are an interface**: the README documents
//! each one, and a change to them is a change of `schema`. Times are whole microseconds (`*_us`); rates
//! are per second; a figure that cannot be computed (a percentile of no stream, the sustained count
//! without `--pacing-ms`) is `null`, never a made-up zero.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::tally::{Reason, Tally, micros};
use super::{Mode, Plan};

/// The version of the JSON's shape: raised when a field changes meaning or goes away (adding one does not).
pub const SCHEMA: u32 = 1;

/// The whole report (module docs; the README lists the fields).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema: u32,
    pub url: String,
    pub method: String,
    /// `closed` (`--streams`) or `open` (`--rate`).
    pub mode: &'static str,
    /// Closed loop: streams in flight.
    pub streams: Option<u64>,
    /// Open loop: starts per second asked for.
    pub rate: Option<f64>,
    /// `--total`, if given.
    pub total: Option<u64>,
    pub duration_s: f64,
    pub timeout_s: f64,
    pub workers: usize,
    pub keep_alive: bool,
    /// From the first start to the end of the last stream.
    pub elapsed_s: f64,
    pub started: u64,
    pub completed: u64,
    pub failed: Failed,
    /// Statuses of the `status` failures: `{"500": 40}`.
    pub statuses: BTreeMap<String, u64>,
    /// The first error message of each failure reason that occurred.
    pub errors: BTreeMap<String, String>,
    /// Events (SSE frames with data, not pings) of every stream.
    pub events: u64,
    /// Fewest and most events of a completed stream.
    pub events_per_stream: Option<MinMax>,
    pub events_per_s: f64,
    /// Starts per second, between the first start and the last.
    pub started_per_s: Option<f64>,
    pub completed_per_s: f64,
    pub first_byte_us: Latency,
    pub first_event_us: Latency,
    pub completion_us: Latency,
    pub gap_us: Latency,
    pub start_lag_us: Latency,
    /// `null` without `--pacing-ms`.
    pub sustained: Option<Sustained>,
}

/// Failures by reason (`tally::Reason`), and all of them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Failed {
    pub total: u64,
    pub connect: u64,
    pub tls: u64,
    pub io: u64,
    pub protocol: u64,
    pub status: u64,
    pub truncated: u64,
    pub timeout: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MinMax {
    pub min: u32,
    pub max: u32,
}

/// Percentiles of one histogram, in microseconds; `null` when it holds nothing.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Latency {
    pub count: u64,
    pub p50: Option<u64>,
    pub p90: Option<u64>,
    pub p99: Option<u64>,
    pub max: Option<u64>,
    pub mean: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sustained {
    /// Completed streams with no gap between events above `gap_limit_us`.
    pub count: u64,
    /// Of the streams started.
    pub percent: f64,
    pub gap_limit_us: u64,
    pub pacing_us: u64,
    pub factor: u32,
}

impl Latency {
    /// The percentiles of `h`.
    pub fn of(h: &Histogram<u64>) -> Latency {
        let at = |q: f64| (!h.is_empty()).then(|| h.value_at_quantile(q));
        Latency {
            count: h.len(),
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: (!h.is_empty()).then(|| h.max()),
            mean: (!h.is_empty()).then(|| h.mean().round() as u64),
        }
    }
}

/// `n` per second of `elapsed` (0 for no time at all).
fn per_second(n: u64, elapsed: Duration) -> f64 {
    match elapsed.as_secs_f64() {
        s if s > 0.0 => n as f64 / s,
        _ => 0.0,
    }
}

impl Report {
    /// The report of `plan`, whose workers counted `tally` in `elapsed`.
    pub fn new(plan: &Plan, tally: &Tally, elapsed: Duration) -> Report {
        let count = |r: Reason| tally.failed[r as usize];
        let failed = Failed {
            total: tally.failed_total(),
            connect: count(Reason::Connect),
            tls: count(Reason::Tls),
            io: count(Reason::Io),
            protocol: count(Reason::Protocol),
            status: count(Reason::Status),
            truncated: count(Reason::Truncated),
            timeout: count(Reason::Timeout),
        };
        // Between the first start and the last there are `started - 1` intervals.
        let started_per_s = match tally.starts {
            Some((first, last)) if last > first => {
                Some((tally.started - 1) as f64 / (last - first).as_secs_f64())
            }
            _ => None,
        };
        let sustained = tally
            .gap_limit
            .zip(plan.pacing)
            .map(|(limit, pacing)| Sustained {
                count: tally.sustained,
                percent: match tally.started {
                    0 => 0.0,
                    n => 100.0 * tally.sustained as f64 / n as f64,
                },
                gap_limit_us: micros(limit),
                pacing_us: micros(pacing),
                factor: plan.sustain_factor,
            });
        let (mode, streams, rate) = match plan.mode {
            Mode::Closed { streams } => ("closed", Some(streams), None),
            Mode::Open { rate } => ("open", None, Some(rate)),
        };
        Report {
            schema: SCHEMA,
            url: plan.url.clone(),
            method: plan.method.clone(),
            mode,
            streams,
            rate,
            total: plan.total,
            duration_s: plan.duration.as_secs_f64(),
            timeout_s: plan.timeout.as_secs_f64(),
            workers: plan.workers,
            keep_alive: plan.keep_alive,
            elapsed_s: elapsed.as_secs_f64(),
            started: tally.started,
            completed: tally.completed,
            failed,
            statuses: (tally.statuses.iter())
                .map(|(s, n)| (s.to_string(), *n))
                .collect(),
            errors: (tally.errors.iter())
                .map(|(r, m)| (r.name().to_string(), m.clone()))
                .collect(),
            events: tally.events,
            events_per_stream: (tally.completed > 0).then_some(MinMax {
                min: tally.events_min,
                max: tally.events_max,
            }),
            events_per_s: per_second(tally.events, elapsed),
            started_per_s,
            completed_per_s: per_second(tally.completed, elapsed),
            first_byte_us: Latency::of(&tally.first_byte),
            first_event_us: Latency::of(&tally.first_event),
            completion_us: Latency::of(&tally.completion),
            gap_us: Latency::of(&tally.gap),
            start_lag_us: Latency::of(&tally.start_lag),
            sustained,
        }
    }

    /// The report as one line of JSON.
    pub fn json(&self) -> String {
        // Plain numbers, strings and maps with string keys: serializing cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The report as a table for people.
    pub fn human(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = self.write_human(&mut out);
        out
    }

    fn write_human(&self, out: &mut String) -> std::fmt::Result {
        writeln!(out, "tokenpipe loadgen: {} {}", self.method, self.url)?;
        let load = match (self.streams, self.rate) {
            (Some(n), _) => format!("closed loop, {n} streams in flight"),
            (_, Some(r)) => format!("open loop, {r} streams/s"),
            _ => String::new(),
        };
        let total = self
            .total
            .map_or(String::new(), |t| format!(", {t} at most"));
        let conns = match self.keep_alive {
            true => "connections kept alive",
            false => "a connection per stream",
        };
        writeln!(
            out,
            "  {load}{total}, for {}s at most; {} worker(s), {conns}; took {:.2} s",
            self.duration_s, self.workers, self.elapsed_s
        )?;
        writeln!(
            out,
            "streams    {} started, {} completed, {} failed",
            self.started, self.completed, self.failed.total
        )?;
        let f = &self.failed;
        for (name, n) in [
            ("connect", f.connect),
            ("tls", f.tls),
            ("io", f.io),
            ("protocol", f.protocol),
            ("status", f.status),
            ("truncated", f.truncated),
            ("timeout", f.timeout),
        ] {
            if n > 0 {
                let first = self.errors.get(name).map_or("", String::as_str);
                writeln!(out, "  failed   {name:<10} {n:>8}   first: {first}")?;
            }
        }
        let per_stream = match self.events_per_stream {
            Some(MinMax { min, max }) if min == max => format!(" ({min} per completed stream)"),
            Some(MinMax { min, max }) => format!(" ({min} to {max} per completed stream)"),
            None => String::new(),
        };
        writeln!(
            out,
            "events     {}{per_stream}, {:.1}/s",
            self.events, self.events_per_s
        )?;
        let started = self
            .started_per_s
            .map_or("-".to_string(), |r| format!("{r:.1}/s"));
        writeln!(
            out,
            "rate       started {started}, completed {:.1}/s",
            self.completed_per_s
        )?;
        writeln!(
            out,
            "{:<14}{:>10}{:>10}{:>10}{:>10}{:>9}",
            "(ms)", "p50", "p90", "p99", "max", "count"
        )?;
        for (name, l) in [
            ("first byte", &self.first_byte_us),
            ("first event", &self.first_event_us),
            ("completion", &self.completion_us),
            ("event gap", &self.gap_us),
            ("start lag", &self.start_lag_us),
        ] {
            let ms =
                |v: Option<u64>| v.map_or("-".to_string(), |us| format!("{:.3}", us as f64 / 1e3));
            writeln!(
                out,
                "{name:<14}{:>10}{:>10}{:>10}{:>10}{:>9}",
                ms(l.p50),
                ms(l.p90),
                ms(l.p99),
                ms(l.max),
                l.count
            )?;
        }
        match &self.sustained {
            Some(s) => writeln!(
                out,
                "sustained  {} of {} streams ({:.1}%): no gap above {} ms ({} x {} ms pacing)",
                s.count,
                self.started,
                s.percent,
                s.gap_limit_us as f64 / 1e3,
                s.factor,
                s.pacing_us as f64 / 1e3
            ),
            None => writeln!(out, "sustained  not judged: give --pacing-ms"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    const MS: Duration = Duration::from_millis(1);

    fn plan() -> Plan {
        Plan {
            pacing: Some(2 * MS),
            sustain_factor: 10,
            total: Some(4),
            ..Plan::example("http://127.0.0.1:1/x", Mode::Closed { streams: 2 })
        }
    }

    fn tally() -> Tally {
        let t0 = Instant::now();
        let mut t = Tally::new(Some(20 * MS));
        for i in 0..4 {
            t.start(t0 + i * 10 * MS, t0 + i * 10 * MS);
        }
        for took in [100, 200, 300] {
            t.first_byte.saturating_record(1_000);
            t.first_event.saturating_record(2_000);
            t.complete(took * MS, 8, MS);
            t.events += 8;
        }
        t.refused(500);
        t
    }

    #[test]
    fn the_json_has_the_documented_fields() {
        let report = Report::new(&plan(), &tally(), Duration::from_secs(2));
        let v: serde_json::Value = serde_json::from_str(&report.json()).expect("JSON");
        assert_eq!(v["schema"], 1);
        assert_eq!(v["mode"], "closed");
        assert_eq!(v["streams"], 2);
        assert!(v["rate"].is_null());
        assert_eq!(
            (v["started"].as_u64(), v["completed"].as_u64()),
            (Some(4), Some(3))
        );
        assert_eq!(v["failed"]["total"], 1);
        assert_eq!(v["failed"]["status"], 1);
        assert_eq!(v["failed"]["timeout"], 0);
        assert_eq!(v["statuses"]["500"], 1);
        assert_eq!(v["errors"]["status"], "status 500");
        assert_eq!(v["events"], 24);
        assert_eq!(v["events_per_stream"]["min"], 8);
        assert_eq!(v["events_per_s"], 12.0);
        assert_eq!(v["completed_per_s"], 1.5);
        // Four starts 10 ms apart: three intervals in 30 ms.
        let rate = v["started_per_s"].as_f64().expect("a rate");
        assert!((rate - 100.0).abs() < 1e-6, "{rate}");
        assert_eq!(v["completion_us"]["count"], 3);
        assert_eq!(
            v["completion_us"]["p50"], 200_063,
            "three digits: 200 ms's bucket"
        );
        assert_eq!(v["first_byte_us"]["p99"], 1_000);
        assert!(
            v["gap_us"]["p50"].is_null(),
            "no gap recorded: null, not zero"
        );
        assert_eq!(v["sustained"]["count"], 3);
        assert_eq!(v["sustained"]["percent"], 75.0);
        assert_eq!(v["sustained"]["gap_limit_us"], 20_000);
        for key in [
            "url",
            "method",
            "total",
            "duration_s",
            "timeout_s",
            "workers",
            "keep_alive",
        ] {
            assert!(v.get(key).is_some(), "{key}");
        }
        for key in ["elapsed_s", "first_event_us", "start_lag_us"] {
            assert!(v.get(key).is_some(), "{key}");
        }
    }

    #[test]
    fn without_pacing_sustained_is_null() {
        let plan = Plan {
            pacing: None,
            ..plan()
        };
        let report = Report::new(&plan, &Tally::new(None), Duration::ZERO);
        let v: serde_json::Value = serde_json::from_str(&report.json()).expect("JSON");
        assert!(v["sustained"].is_null());
        assert!(v["events_per_stream"].is_null());
        assert!(v["started_per_s"].is_null());
        assert_eq!(v["events_per_s"], 0.0);
        assert!(report.human().contains("not judged"));
    }

    #[test]
    fn the_table_names_every_figure() {
        let text = Report::new(&plan(), &tally(), Duration::from_secs(2)).human();
        for needle in [
            "4 started, 3 completed, 1 failed",
            "status",
            "first: status 500",
            "24 (8 per completed stream), 12.0/s",
            "first byte",
            "first event",
            "completion",
            "event gap",
            "start lag",
            "sustained  3 of 4 streams (75.0%): no gap above 20 ms (10 x 2 ms pacing)",
        ] {
            assert!(text.contains(needle), "{needle:?} in\n{text}");
        }
    }
}
