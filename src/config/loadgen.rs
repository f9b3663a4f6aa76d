//! The options of `tokenpipe loadgen`, and the checks that turn them into a [`Plan`].
//!
//! They live here, with the other options, and not in `loadgen/`: the configuration row knows the
//! applications (chapter 5), and the load generator knows only the plain [`Plan`] it is given, so that a
//! benchmark or a test can build one without a command line.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::duration::parse_positive_duration;
use crate::loadgen::{Mode, Plan, pin};

/// The body sent when neither `--body` nor `--body-file` is given: the relay's own route's shape.
pub const DEFAULT_BODY: &str = r#"{"prompt":"Tell me a story.","max_tokens":20}"#;

/// Options of `tokenpipe loadgen`.
#[derive(Args, Debug, Clone)]
pub struct LoadgenArgs {
    /// The URL every stream asks, http:// or https://.
    #[arg(
        long,
        value_name = "URL",
        default_value = "http://127.0.0.1:8080/api/v1/generate-stream"
    )]
    pub url: String,
    /// The request method.
    #[arg(long, default_value = "POST")]
    pub method: String,
    /// The request body, sent as it is with Content-Type: application/json
    /// [default: {"prompt":"Tell me a story.","max_tokens":20}].
    #[arg(long, value_name = "JSON", conflicts_with = "body_file")]
    pub body: Option<String>,
    /// Send this file's bytes as the request body.
    #[arg(long, value_name = "FILE")]
    pub body_file: Option<PathBuf>,
    /// An extra header field, 'Name: value' (repeatable); one named like ours (Host, Accept,
    /// Content-Type, Connection, User-Agent) replaces it.
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// Extra CA certificates (PEM) an https:// URL's certificate may chain to, besides the built-in
    /// Mozilla roots (as the relay's --upstream-ca).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Closed loop: keep N streams in flight, each replaced when it ends [default: 1].
    #[arg(long, value_name = "N", conflicts_with = "rate",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub streams: Option<u64>,
    /// Open loop: start R streams per second, whatever the others do; latency is measured from when
    /// each was due, so that a server's queueing is not hidden (coordinated omission).
    #[arg(long, value_name = "R", value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Start at most M streams in all.
    #[arg(long, value_name = "M", value_parser = clap::value_parser!(u64).range(1..))]
    pub total: Option<u64>,
    /// Start no stream after this; streams in flight then may finish (within --timeout).
    /// 500ms, 30s, 2m, 1h, or a bare number of seconds.
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = parse_positive_duration)]
    pub duration: Duration,
    /// A stream that has not ended this long after it started (was due, in the open loop) fails.
    #[arg(long, default_value = "60s", value_name = "DURATION", value_parser = parse_positive_duration)]
    pub timeout: Duration,
    /// Worker threads, each with its own event loop; the streams are shared out among them.
    #[arg(long, default_value_t = 1, value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..))]
    pub workers: u16,
    /// Run on these CPUs only (e.g. 0,1); worker N is pinned to the Nth (round robin). Linux only.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub cpus: Vec<usize>,
    /// Closed loop: a completed stream's connection carries the next stream of its slot, instead of a
    /// new connection per stream.
    #[arg(long)]
    pub keep_alive: bool,
    /// The upstream's pause between events: a stream is sustained if no gap between its events
    /// exceeded --sustain-factor times this [default: not judged].
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..=24 * 3600 * 1000))]
    pub pacing_ms: Option<u64>,
    /// See --pacing-ms.
    #[arg(long, default_value_t = 10, value_name = "F",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub sustain_factor: u32,
    /// Print the report as one JSON object (the README lists its fields).
    #[arg(long)]
    pub json: bool,
    /// No progress line (it is shown only when stdout and stderr are terminals anyway).
    #[arg(long)]
    pub quiet: bool,
}

/// `--rate`: more than zero, at most a million starts per second.
fn parse_rate(s: &str) -> Result<f64, String> {
    let rate: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?}: expected a number of streams per second"))?;
    if !(rate > 0.0 && rate <= 1e6) {
        return Err(format!("{s:?}: must be more than 0 and at most 1000000"));
    }
    Ok(rate)
}

/// A token (RFC 9110 §5.6.2): what a method and a field name are made of.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// `Name: value`, checked: a bad name or a line break in the value would break the request's framing.
fn parse_header(h: &str) -> Result<(String, String), String> {
    let (name, value) = h
        .split_once(':')
        .ok_or_else(|| format!("--header {h:?}: expected 'Name: value'"))?;
    let (name, value) = (name.trim(), value.trim());
    if !is_token(name) {
        return Err(format!(
            "--header {h:?}: {name:?} is not a valid field name"
        ));
    }
    if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        return Err(format!("--header {h:?}: a value cannot hold CR, LF or NUL"));
    }
    Ok((name.to_string(), value.to_string()))
}

impl LoadgenArgs {
    /// The checked [`Plan`]; an error names the option at fault.
    pub fn plan(&self) -> Result<Plan, String> {
        let method = self.method.trim().to_ascii_uppercase();
        if !is_token(&method) {
            return Err(format!("--method {:?}: not a valid method", self.method));
        }
        let headers = (self.headers.iter())
            .map(|h| parse_header(h))
            .collect::<Result<Vec<_>, _>>()?;
        let body = match (&self.body, &self.body_file) {
            (Some(body), _) => body.clone().into_bytes(),
            (None, Some(path)) => {
                std::fs::read(path).map_err(|e| format!("--body-file {}: {e}", path.display()))?
            }
            (None, None) => DEFAULT_BODY.as_bytes().to_vec(),
        };
        let mode = match self.rate {
            Some(rate) => Mode::Open { rate },
            None => Mode::Closed {
                streams: self.streams.unwrap_or(1),
            },
        };
        if self.keep_alive && self.rate.is_some() {
            return Err(
                "--keep-alive keeps a closed loop's connections: use it with --streams, \
                        not --rate"
                    .to_string(),
            );
        }
        if let Some(cpu) = self.cpus.iter().find(|&&c| c > pin::MAX_CPU) {
            return Err(format!("--cpus: CPU {cpu} is above {}", pin::MAX_CPU));
        }
        Ok(Plan {
            url: self.url.trim().to_string(),
            method,
            headers,
            body,
            ca: self.ca.clone(),
            mode,
            total: self.total,
            duration: self.duration,
            timeout: self.timeout,
            workers: usize::from(self.workers),
            cpus: self.cpus.clone(),
            keep_alive: self.keep_alive,
            pacing: self.pacing_ms.map(Duration::from_millis),
            sustain_factor: self.sustain_factor,
            json: self.json,
            quiet: self.quiet,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Cli, Command};

    fn plan(args: &[&str]) -> Result<Plan, String> {
        let mut all = vec!["tokenpipe", "loadgen"];
        all.extend_from_slice(args);
        match Cli::try_parse_sourced(all)
            .map_err(|e| e.to_string())?
            .command
        {
            Some(Command::Loadgen(args)) => args.plan(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_defaults_are_one_stream_for_ten_seconds() {
        let p = plan(&[]).unwrap();
        assert_eq!(p.url, "http://127.0.0.1:8080/api/v1/generate-stream");
        assert_eq!(p.method, "POST");
        assert_eq!(p.mode, Mode::Closed { streams: 1 });
        assert_eq!(p.body, DEFAULT_BODY.as_bytes());
        assert_eq!(
            (p.duration, p.timeout),
            (Duration::from_secs(10), Duration::from_secs(60))
        );
        assert_eq!((p.workers, p.sustain_factor, p.pacing), (1, 10, None));
        assert!(!p.keep_alive && !p.json && !p.quiet && p.total.is_none());
    }

    #[test]
    fn every_option_reaches_the_plan() {
        let p = plan(&[
            "--url",
            "https://h/x",
            "--method",
            "put",
            "--body",
            "{}",
            "-H",
            "A: b",
            "--header",
            "X-Y:  z ",
            "--streams",
            "20",
            "--total",
            "40",
            "--duration",
            "2s",
            "--timeout",
            "500ms",
            "--workers",
            "2",
            "--cpus",
            "0,1",
            "--keep-alive",
            "--pacing-ms",
            "5",
            "--sustain-factor",
            "4",
            "--json",
            "--quiet",
            "--ca",
            "/ca.pem",
        ])
        .unwrap();
        assert_eq!((p.url.as_str(), p.method.as_str()), ("https://h/x", "PUT"));
        assert_eq!(p.body, b"{}");
        assert_eq!(
            p.headers,
            [("A".into(), "b".into()), ("X-Y".into(), "z".into())]
        );
        assert_eq!((p.mode, p.total), (Mode::Closed { streams: 20 }, Some(40)));
        assert_eq!(
            (p.duration, p.timeout),
            (Duration::from_secs(2), Duration::from_millis(500))
        );
        assert_eq!((p.workers, p.cpus.as_slice()), (2, &[0, 1][..]));
        assert_eq!(p.gap_limit(), Some(Duration::from_millis(20)));
        assert!(p.keep_alive && p.json && p.quiet && p.ca.is_some());
        let open = plan(&["--rate", "50", "--duration", "1s"]).unwrap();
        assert_eq!(open.mode, Mode::Open { rate: 50.0 });
    }

    #[test]
    fn what_cannot_run_is_refused_with_its_option() {
        for (args, why) in [
            (
                &["--streams", "2", "--rate", "5"][..],
                "cannot be used with",
            ),
            (&["--rate", "0"], "more than 0"),
            (&["--rate", "abc"], "streams per second"),
            (&["--streams", "0"], "--streams"),
            (&["--total", "0"], "--total"),
            (&["--duration", "0s"], "more than zero"),
            (&["--body", "x", "--body-file", "f"], "cannot be used with"),
            (
                &["--body-file", "/nonexistent/body.json"],
                "/nonexistent/body.json",
            ),
            (&["--header", "no colon"], "Name: value"),
            (&["--header", "bad name: v"], "not a valid field name"),
            (&["--method", "GE T"], "--method"),
            (&["--rate", "5", "--keep-alive"], "--keep-alive"),
            (&["--cpus", "999999"], "--cpus"),
            (&["--sustain-factor", "0"], "--sustain-factor"),
        ] {
            let e = plan(args).expect_err(&format!("{args:?}"));
            assert!(e.contains(why), "{args:?}: {e}");
        }
    }
}
