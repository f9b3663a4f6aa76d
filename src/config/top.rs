//! The options of `tokenpipe top`, which watches a running relay through its `/metrics`
//! (`crate::metrics::top`).

use std::time::Duration;

use clap::Args;

use super::parse_duration;
use crate::metrics::top::{MetricsUrl, TopOptions};

/// The shortest `--interval`: polling faster than this would measure mostly the scrapes themselves.
const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// Options of `tokenpipe top`.
#[derive(Args, Debug, Clone)]
pub struct TopArgs {
    /// The relay to watch: http://HOST:PORT (its /metrics is read) or the full URL of a metrics path.
    /// Plain http:// only: https:// is refused.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8080",
          value_parser = MetricsUrl::parse)]
    pub url: MetricsUrl,
    /// Time between two refreshes: 500ms, 1s, 2s... (at least 100ms).
    #[arg(long, value_name = "DUR", default_value = "1s", value_parser = parse_interval)]
    pub interval: Duration,
    /// Stop after N refreshes [default: run until Ctrl-C].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// One line per refresh, with a legend and column names first, and no screen clearing: for logs and
    /// pipes [default when stdout is not a terminal].
    #[arg(long)]
    pub plain: bool,
}

impl TopArgs {
    /// How `top` runs; `stdout_is_terminal` decides the mode when `--plain` is not given.
    pub fn options(&self, stdout_is_terminal: bool) -> TopOptions {
        TopOptions {
            target: self.url.clone(),
            interval: self.interval,
            count: self.count,
            plain: self.plain || !stdout_is_terminal,
        }
    }
}

/// `--interval`: a duration ([`parse_duration`]) of at least [`MIN_INTERVAL`].
fn parse_interval(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d < MIN_INTERVAL => Err(format!("{s:?}: at least 100ms")),
        d => Ok(d),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Cli, Command};

    fn top(args: &[&str]) -> Result<super::TopArgs, clap::Error> {
        let argv = ["tokenpipe", "top"].iter().chain(args);
        match Cli::try_parse_sourced(argv)?.command {
            Some(Command::Top(args)) => Ok(args),
            other => panic!("not top: {other:?}"),
        }
    }

    #[test]
    fn defaults_watch_the_default_listener_every_second() {
        let args = top(&[]).unwrap();
        let o = args.options(true);
        assert_eq!(o.target.url(), "http://127.0.0.1:8080/metrics");
        assert_eq!(o.interval.as_millis(), 1000);
        assert_eq!(o.count, None);
        assert!(!o.plain, "a terminal gets the screen");
        assert!(args.options(false).plain, "a pipe gets plain lines");
    }

    #[test]
    fn options_are_read() {
        let a = top(&[
            "--url",
            "http://localhost:9000",
            "--interval",
            "500ms",
            "--count",
            "3",
            "--plain",
        ])
        .unwrap();
        let o = a.options(true);
        assert_eq!(o.target.url(), "http://localhost:9000/metrics");
        assert_eq!(o.interval.as_millis(), 500);
        assert_eq!(o.count, Some(3));
        assert!(o.plain);
        assert_eq!(top(&["--interval", "2s"]).unwrap().interval.as_secs(), 2);
    }

    #[test]
    fn bad_values_are_refused_with_a_reason() {
        let https = top(&["--url", "https://127.0.0.1:8080"]).unwrap_err();
        assert!(
            https.to_string().contains("https is not supported"),
            "{https}"
        );
        for bad in [
            ["--interval", "10ms"],
            ["--interval", "1.5s"],
            ["--count", "0"],
        ] {
            assert!(top(&bad).is_err(), "{bad:?}");
        }
    }
}
