//! Reading `GET /metrics` in tests, with the same reader `tokenpipe top` uses
//! (`metrics::top::expo`); an independent parser checks the format itself (tests/sdk/check_sdks.py).

use super::*;
use tokenpipe::metrics::top::expo::Exposition;

/// One scrape: its text, and its series.
pub struct Scrape {
    pub text: String,
    exposition: Exposition,
}

impl Scrape {
    pub fn parse(text: &str) -> Scrape {
        Scrape {
            text: text.to_string(),
            exposition: Exposition::parse(text),
        }
    }

    /// The sum of the series `name` whose labels include `labels` (0 when there is none).
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let keep = |s: &tokenpipe::metrics::top::expo::Series| {
            labels.iter().all(|(k, v)| s.label(k) == Some(*v))
        };
        self.exposition.total(name, keep).unwrap_or(0.0)
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
