//! Reading `GET /metrics` in tests: a small reader of the Prometheus text format, enough for the series
//! tokenpipe writes (an independent parser checks the format itself: tests/sdk/test_metrics.py).

use super::*;

/// One series: its name, its labels, its value.
pub type Series = (String, Vec<(String, String)>, f64);

/// One scrape: every series.
#[derive(Debug, Clone)]
pub struct Scrape {
    pub series: Vec<Series>,
    pub text: String,
}

impl Scrape {
    /// Parses exposition `text`. Panics on a line it cannot read.
    pub fn parse(text: &str) -> Scrape {
        let mut series = Vec::new();
        for line in text.lines() {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (head, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("line {line:?}"));
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                v => v
                    .parse()
                    .unwrap_or_else(|e| panic!("value of {line:?}: {e}")),
            };
            let (name, labels) = match head.split_once('{') {
                None => (head.to_string(), Vec::new()),
                Some((name, rest)) => {
                    let rest = rest
                        .strip_suffix('}')
                        .unwrap_or_else(|| panic!("labels of {line:?}"));
                    let labels = rest
                        .split("\",")
                        .filter(|p| !p.is_empty())
                        .map(|p| {
                            let (k, v) =
                                p.split_once("=\"").unwrap_or_else(|| panic!("label {p:?}"));
                            (k.to_string(), v.trim_end_matches('"').to_string())
                        })
                        .collect();
                    (name.to_string(), labels)
                }
            };
            series.push((name, labels, value));
        }
        Scrape {
            series,
            text: text.to_string(),
        }
    }

    /// The sum of the series `name` whose labels include `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.series
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(_, _, v)| v)
            .sum()
    }

    /// Whether any series is called `name`.
    pub fn has(&self, name: &str) -> bool {
        self.series.iter().any(|(n, _, _)| n == name)
    }
}

/// `GET /metrics` from the relay at `addr`.
pub fn scrape(addr: SocketAddr) -> Scrape {
    let resp = fetch(addr, &get("/metrics"));
    assert_eq!(resp.status(), 200, "GET /metrics: {}", resp.text());
    let ctype = resp.head.header("content-type").unwrap_or("").to_string();
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    Scrape::parse(&resp.text())
}
