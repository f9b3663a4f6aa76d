//! The record of the request a client connection is answering: what the access log line and the
//! per-request metrics say of it once its response is out ([`Record`]), and its request id.
//!
//! The driver opens a record when a request is complete (if the application keeps records), notes when the
//! client's socket took the first byte of the answer, and hands the record back to the application when
//! the answer is out (`ClientApp::on_answered`); an application that closes a connection mid-answer takes
//! the record itself. The application fills in what only it knows: the route, the upstream, the first
//! token, the usage. Nothing of the request's content is kept: the path without its query (a Gemini key
//! may travel there), the method, and the id.

use std::cell::Cell;
use std::hash::{BuildHasher, RandomState};
use std::time::{Duration, Instant};

use crate::http::headers::value;
use crate::http::request::Request;

/// The longest request id taken from a client; a longer or stranger one is replaced by ours.
pub const MAX_REQUEST_ID: usize = 128;

/// What is known of one request, from its arrival to the end of its answer.
#[derive(Debug, Clone)]
pub struct Record {
    /// When the request was complete.
    pub started: Instant,
    /// The method, when it is one of RFC 9110's (others are logged as `OTHER`): no allocation.
    pub method: &'static str,
    /// The path without its query.
    pub path: Box<str>,
    /// The client's `X-Request-Id` when it is a plain token, else one we made ([`request_id`]).
    pub id: RequestId,
    /// The route's label (`"none"` until routed).
    pub route: &'static str,
    /// The upstream the request went to (its index), if any.
    pub upstream: Option<usize>,
    /// The upstream connection was taken from the pool.
    pub reused: Option<bool>,
    /// The client's socket took the first byte of the answer.
    pub first_byte: Option<Instant>,
    /// The first event that carries content left for the client.
    pub first_token: Option<Instant>,
    /// Tokens used and the model, as the stream reported them.
    pub usage: Option<Usage>,
    /// Why the answer was cut short, if it was (a failed stream, a client that left).
    pub cut: Option<&'static str>,
    /// `out.taken()` when the request was complete: the answer's bytes are what the socket took since.
    pub taken_before: u64,
}

/// Token usage as a stream reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    pub model: Option<Box<str>>,
    pub input: u64,
    pub output: u64,
}

impl Record {
    /// The record of `req`, complete at `now`, on a connection whose socket has taken `taken` bytes.
    pub fn new(req: &Request, now: Instant, taken: u64) -> Record {
        Record {
            started: now,
            method: known_method(&req.method),
            path: req.path.as_str().into(),
            id: request_id(req),
            route: "none",
            upstream: None,
            reused: None,
            first_byte: None,
            first_token: None,
            usage: None,
            cut: None,
            taken_before: taken,
        }
    }

    /// From the request to `at`.
    pub fn since_start(&self, at: Option<Instant>) -> Option<Duration> {
        at.map(|t| t.saturating_duration_since(self.started))
    }
}

/// A request id: the client's, or one we made (kept as its number, written out only when logged or sent,
/// so that making one costs no allocation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestId {
    Given(Box<str>),
    Made(u128),
}

impl std::fmt::Display for RequestId {
    /// A made id in the 8-4-4-4-12 shape of a UUID (random-looking, not a real UUIDv4).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestId::Given(id) => f.write_str(id),
            RequestId::Made(n) => {
                let hex = format!("{n:032x}");
                let p = |r: std::ops::Range<usize>| &hex[r];
                write!(
                    f,
                    "{}-{}-{}-{}-{}",
                    p(0..8),
                    p(8..12),
                    p(12..16),
                    p(16..20),
                    p(20..32)
                )
            }
        }
    }
}

/// The request id of `req`: its `X-Request-Id` if that is 1 to [`MAX_REQUEST_ID`] characters of
/// letters, digits and `-_.:`, so that it can go into a log line and an upstream request as it is;
/// otherwise a new one.
pub fn request_id(req: &Request) -> RequestId {
    match value(&req.headers, "x-request-id") {
        Some(id) if is_plain_id(id.as_bytes()) => RequestId::Given(id.into()),
        _ => new_id(),
    }
}

/// `method` as one of RFC 9110's methods, or `OTHER`.
fn known_method(method: &str) -> &'static str {
    const METHODS: [&str; 8] = [
        "GET", "POST", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE",
    ];
    METHODS
        .iter()
        .find(|m| **m == method)
        .copied()
        .unwrap_or("OTHER")
}

fn is_plain_id(id: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID).contains(&id.len())
        && id
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

thread_local! {
    /// A per-thread sequence, started at a random point: ids are unique without any shared state.
    static NEXT: Cell<u64> = Cell::new(RandomState::new().hash_one(std::thread::current().id()));
}

/// A new id.
pub fn new_id() -> RequestId {
    let n = NEXT.with(|c| {
        let n = c.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        c.set(n);
        n
    });
    let (a, b) = (mix(n), mix(n ^ 0xD1B5_4A32_D192_ED03));
    RequestId::Made((u128::from(a) << 64) | u128::from(b))
}

/// SplitMix64's finalizer: spreads a counter's bits over the whole word.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(id: Option<&[u8]>) -> Request {
        Request {
            method: "GET".into(),
            path: "/x".into(),
            query: None,
            version: 1,
            keep_alive: true,
            headers: id
                .map(|id| ("X-Request-Id".to_string(), id.to_vec()))
                .into_iter()
                .collect(),
            body: Vec::new(),
        }
    }

    #[test]
    fn a_plain_client_id_is_kept_and_anything_else_replaced() {
        let given = request_id(&req(Some(b"abc-123_x.y:z")));
        assert_eq!(given.to_string(), "abc-123_x.y:z");
        for bad in [
            &b""[..],
            b"a b",
            b"a\r\nX-Evil: 1",
            b"\"quoted\"",
            &[b'a'; 129],
        ] {
            let id = request_id(&req(Some(bad))).to_string();
            assert_eq!(id.len(), 36, "{bad:?} -> {id}");
            assert!(is_plain_id(id.as_bytes()));
        }
        assert_eq!(request_id(&req(None)).to_string().len(), 36);
        assert_eq!(
            RequestId::Made(0x0123_4567_89ab_cdef_0011_2233_4455_6677).to_string(),
            "01234567-89ab-cdef-0011-223344556677"
        );
    }

    #[test]
    fn methods_are_named_without_allocating() {
        assert_eq!(known_method("POST"), "POST");
        assert_eq!(known_method("post"), "OTHER");
        assert_eq!(known_method("BREW"), "OTHER");
    }

    #[test]
    fn new_ids_differ() {
        let ids: std::collections::HashSet<String> =
            (0..1000).map(|_| new_id().to_string()).collect();
        assert_eq!(ids.len(), 1000);
    }
}
