//! What the mock counts and remembers, shared by all its workers through an `Arc`: counters (relaxed
//! atomics: they are statistics, not synchronization), served at `GET /stats`; the last requests, served at
//! `GET /debug/requests` ([`super::record`]); and how many requests each key of a `times` fault has made
//! ([`KeyCounts`]). The last two sit behind locks held only to record one thing or to copy it out.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::fault::KeyCounts;
use super::record::RequestLog;
use crate::http::request::Request;

/// The mock's counters, request log and `times` counts (see the module docs).
#[derive(Default, Debug)]
pub struct MockStats {
    pub(super) connections: AtomicU64,
    pub(super) closed: AtomicU64,
    pub(super) requests: AtomicU64,
    pub(super) streams_completed: AtomicU64,
    pub(super) bytes_sent: AtomicU64,
    /// Requests answered with a fault.
    pub(super) faults: AtomicU64,
    recent: Mutex<RequestLog>,
    /// The requests of each `times` fault's key so far.
    pub(super) keys: KeyCounts,
}

impl MockStats {
    /// The counters as the JSON that `GET /stats` returns.
    pub fn snapshot(&self) -> serde_json::Value {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let connections = get(&self.connections);
        serde_json::json!({
            "connections": connections,
            "open_connections": connections.saturating_sub(get(&self.closed)),
            "requests": get(&self.requests),
            "streams_completed": get(&self.streams_completed),
            "bytes_sent": get(&self.bytes_sent),
            "faults": get(&self.faults),
        })
    }

    /// The last requests, as `GET /debug/requests` returns them.
    pub fn recent_requests(&self) -> serde_json::Value {
        self.log().to_json()
    }

    pub(super) fn record(&self, req: &Request) {
        self.log().record(req);
    }

    /// The log, even if a thread panicked while holding it (a log is never left half-written).
    fn log(&self) -> std::sync::MutexGuard<'_, RequestLog> {
        self.recent.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}
