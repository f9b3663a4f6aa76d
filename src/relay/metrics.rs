//! What one relay worker records as it relays: [`RelayMetrics`].
//!
//! Two speeds. The per-chunk figures (chunks, bytes, the gap between events, the residence time) are
//! relaxed atomics and lock-free histograms that only this worker writes. The per-request figures whose
//! labels are open sets (requests by route, upstream and status; tokens by upstream and model; upstream
//! failures by kind) go into maps behind this worker's own mutex, taken once when a request ends: only a
//! scrape ever contends for it, and the maps are bounded ([`MAX_MODELS`]), so no input grows them for ever.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::reactor::instrument::{Histogram, HistogramSnapshot};

/// Distinct models a worker keeps token counts for; usage of any further model counts as `other`. A
/// model name comes from the upstream's stream, and a label set must not grow with whatever it says.
pub const MAX_MODELS: usize = 64;

/// Longest model name kept as a label (longer: `other`).
pub const MAX_MODEL_LEN: usize = 128;

/// A deadline that expired, by what it bounded (the `kind` label of `tokenpipe_deadlines_expired_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    ClientHead,
    ClientBody,
    ClientKeepAlive,
    ClientWrite,
    Connect,
    Handshake,
    ResponseHead,
    FirstToken,
    Idle,
    Total,
    Queue,
}

impl Expiry {
    pub const ALL: [Expiry; 11] = [
        Expiry::ClientHead,
        Expiry::ClientBody,
        Expiry::ClientKeepAlive,
        Expiry::ClientWrite,
        Expiry::Connect,
        Expiry::Handshake,
        Expiry::ResponseHead,
        Expiry::FirstToken,
        Expiry::Idle,
        Expiry::Total,
        Expiry::Queue,
    ];

    /// Its label value.
    pub fn name(self) -> &'static str {
        match self {
            Expiry::ClientHead => "client_head",
            Expiry::ClientBody => "client_body",
            Expiry::ClientKeepAlive => "client_keepalive",
            Expiry::ClientWrite => "client_write",
            Expiry::Connect => "upstream_connect",
            Expiry::Handshake => "upstream_tls_handshake",
            Expiry::ResponseHead => "upstream_head",
            Expiry::FirstToken => "first_token",
            Expiry::Idle => "upstream_idle",
            Expiry::Total => "stream_total",
            Expiry::Queue => "queue",
        }
    }
}

impl From<crate::relay::deadlines::Wait> for Expiry {
    fn from(wait: crate::relay::deadlines::Wait) -> Expiry {
        use crate::relay::deadlines::Wait;
        match wait {
            Wait::Connect => Expiry::Connect,
            Wait::Handshake => Expiry::Handshake,
            Wait::Head => Expiry::ResponseHead,
            Wait::FirstToken => Expiry::FirstToken,
            Wait::Idle | Wait::KeepAlive => Expiry::Idle,
            Wait::Total => Expiry::Total,
            Wait::Queue | Wait::Backoff => Expiry::Queue,
        }
    }
}

impl Expiry {
    /// The expiry of a client deadline (`None` for the end of a lingering close, which is no failure).
    pub fn of_client(wait: crate::conn::client::ClientWait) -> Option<Expiry> {
        use crate::conn::client::ClientWait;
        match wait {
            ClientWait::Head => Some(Expiry::ClientHead),
            ClientWait::Body => Some(Expiry::ClientBody),
            ClientWait::KeepAlive => Some(Expiry::ClientKeepAlive),
            ClientWait::Write => Some(Expiry::ClientWrite),
            ClientWait::Linger => None,
        }
    }
}

/// When a client left: before its response head went out, or in the middle of its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Departure {
    BeforeHead,
    MidStream,
}

/// The labels of one request's count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestKey {
    /// `generate`, `passthrough`, `healthz`, ... (`routes::Route::label`), or `none` for a request that
    /// matched no route or was refused before routing.
    pub route: &'static str,
    /// The upstream's index, if the request was routed to one.
    pub upstream: Option<usize>,
    pub status: u16,
}

/// Input and output tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    pub input: u64,
    pub output: u64,
}

#[derive(Debug, Default)]
struct Labeled {
    requests: HashMap<RequestKey, u64>,
    /// By (upstream index, model); at most [`MAX_MODELS`] (upstream, model) pairs per worker, then
    /// `other` (a scrape adds up to that many per worker).
    tokens: HashMap<(usize, Box<str>), Tokens>,
    /// By (upstream index, failure kind).
    failures: HashMap<(usize, &'static str), u64>,
}

/// A copy of the labeled counts, for a scrape.
#[derive(Debug, Default, Clone)]
pub struct LabeledCounts {
    pub requests: Vec<(RequestKey, u64)>,
    pub tokens: Vec<((usize, Box<str>), Tokens)>,
    pub failures: Vec<((usize, &'static str), u64)>,
}

/// One relay worker's figures.
#[derive(Debug)]
pub struct RelayMetrics {
    /// Record the per-chunk figures (`--no-metrics` turns them off, for measuring what they cost).
    pub enabled: bool,
    /// Chunks written to clients (one `writev` of payload, possibly several upstream chunks gathered).
    pub chunks: AtomicU64,
    /// Payload bytes written to clients (without the chunk framing).
    pub bytes: AtomicU64,
    /// Request complete to the first byte of the response taken by the client's socket.
    pub ttfb: Histogram,
    /// Request complete to the first event that carries content leaving for the client.
    pub ttft: Histogram,
    /// Between two chunks of one stream leaving for the client.
    pub gap: Histogram,
    /// Upstream read returned to client write returned, for the bytes of that read.
    pub residence: Histogram,
    /// Request complete to its response written out (or cut).
    pub duration: Histogram,
    deadlines: [AtomicU64; Expiry::ALL.len()],
    departures: [AtomicU64; 2],
    labeled: Mutex<Labeled>,
}

impl RelayMetrics {
    pub fn new(enabled: bool) -> RelayMetrics {
        RelayMetrics {
            enabled,
            chunks: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            ttfb: Histogram::durations(),
            ttft: Histogram::durations(),
            gap: Histogram::durations(),
            residence: Histogram::durations(),
            duration: Histogram::durations(),
            deadlines: std::array::from_fn(|_| AtomicU64::new(0)),
            departures: std::array::from_fn(|_| AtomicU64::new(0)),
            labeled: Mutex::default(),
        }
    }

    /// One chunk of `bytes` payload bytes left for a client.
    #[inline]
    pub fn chunk(&self, bytes: usize) {
        self.chunks.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub fn expired(&self, what: Expiry) {
        self.deadlines[what as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn departed(&self, when: Departure) {
        self.departures[when as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn expiries(&self, what: Expiry) -> u64 {
        self.deadlines[what as usize].load(Ordering::Relaxed)
    }

    pub fn departures(&self, when: Departure) -> u64 {
        self.departures[when as usize].load(Ordering::Relaxed)
    }

    /// A request ended with `key`, after `took`; `tokens` is its usage, when the stream said.
    pub fn request(&self, key: RequestKey, took: Duration, usage: Option<(&str, Tokens)>) {
        self.duration.record_duration(took);
        let mut labeled = self.lock();
        *labeled.requests.entry(key).or_default() += 1;
        if let (Some(upstream), Some((model, tokens))) = (key.upstream, usage) {
            let known = labeled.tokens.contains_key(&(upstream, Box::from(model)));
            let room = labeled.tokens.len() < MAX_MODELS;
            let model = match model.len() <= MAX_MODEL_LEN && (known || room) {
                true => model,
                false => "other",
            };
            let t = labeled.tokens.entry((upstream, model.into())).or_default();
            t.input += tokens.input;
            t.output += tokens.output;
        }
    }

    /// Upstream `upstream` failed with a failure of `kind` (`policy::Failure::kind`).
    pub fn failure(&self, upstream: usize, kind: &'static str) {
        *self.lock().failures.entry((upstream, kind)).or_default() += 1;
    }

    /// The labeled counts now.
    pub fn labeled(&self) -> LabeledCounts {
        let l = self.lock();
        LabeledCounts {
            requests: l.requests.iter().map(|(k, v)| (*k, *v)).collect(),
            tokens: l.tokens.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            failures: l.failures.iter().map(|(k, v)| (*k, *v)).collect(),
        }
    }

    /// The maps are counts only: a thread that panicked while holding the lock left them usable.
    fn lock(&self) -> std::sync::MutexGuard<'_, Labeled> {
        self.labeled.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The five histograms, in the order of [`HISTOGRAMS`].
    pub fn histograms(&self) -> [HistogramSnapshot; 5] {
        [
            self.ttfb.snapshot(),
            self.ttft.snapshot(),
            self.gap.snapshot(),
            self.residence.snapshot(),
            self.duration.snapshot(),
        ]
    }
}

/// The relay histograms' names and help, in the order of [`RelayMetrics::histograms`].
pub const HISTOGRAMS: [(&str, &str); 5] = [
    (
        "tokenpipe_time_to_first_byte",
        "Request complete to the first byte of the response taken by the client's socket.",
    ),
    (
        "gen_ai_server_time_to_first_token",
        "Request complete to the first event that carries content (not a role, a created or a ping event) \
         leaving for the client.",
    ),
    (
        "tokenpipe_relay_event_gap",
        "Time between two chunks of one stream leaving for the client.",
    ),
    (
        "tokenpipe_relay_residence",
        "Upstream read returned to client write returned, for the bytes of that read.",
    ),
    (
        "tokenpipe_http_request_duration",
        "Request complete to its response written out, or cut.",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_beyond_the_bound_count_as_other() {
        let m = RelayMetrics::new(true);
        let key = RequestKey {
            route: "generate",
            upstream: Some(0),
            status: 200,
        };
        let t = Tokens {
            input: 2,
            output: 3,
        };
        for i in 0..MAX_MODELS + 10 {
            m.request(key, Duration::ZERO, Some((&format!("model-{i}"), t)));
        }
        m.request(key, Duration::ZERO, Some(("model-0", t)));
        m.request(key, Duration::ZERO, Some((&"x".repeat(500), t)));
        let l = m.labeled();
        assert_eq!(l.tokens.len(), MAX_MODELS + 1, "the bound, and `other`");
        let other = l.tokens.iter().find(|((_, m), _)| &**m == "other").unwrap();
        assert_eq!(other.1.output, 11 * 3);
        let first = l
            .tokens
            .iter()
            .find(|((_, m), _)| &**m == "model-0")
            .unwrap();
        assert_eq!(
            first.1.input, 4,
            "a known model still counts after the bound"
        );
        assert_eq!(l.requests, vec![(key, MAX_MODELS as u64 + 12)]);
    }
}
