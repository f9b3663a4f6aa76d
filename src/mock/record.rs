//! The last requests the mock received, served at `GET /debug/requests`, so that a test can check what
//! reached the upstream through the relay: which path and query, which header fields (did the client's
//! `Authorization` stay behind, did the relay's key arrive?), which body.
//!
//! Memory is bounded: the log keeps the last [`KEPT`] requests; of each, the head fields (bounded by the
//! request reader's head limit) and the first [`BODY_KEPT`] bytes of the body. Every request routed is recorded except `GET /debug/requests` itself; each gets a sequence number
//! (`seq`, from 1), so a test can look only at the requests after the ones it saw before.

use std::collections::VecDeque;

use serde::Serialize;

use crate::http::request::Request;

/// Requests kept.
pub const KEPT: usize = 32;

/// Body bytes kept per request.
pub const BODY_KEPT: usize = 4096;

/// The last [`KEPT`] requests, oldest first.
#[derive(Debug, Default)]
pub struct RequestLog {
    /// Requests recorded so far (the last one's `seq`).
    total: u64,
    recent: VecDeque<Seen>,
}

/// One request, as recorded.
#[derive(Debug, Clone, Serialize)]
struct Seen {
    seq: u64,
    method: String,
    path: String,
    query: Option<String>,
    /// Every header field, in order, as `[name, value]` (values as UTF-8, invalid sequences replaced).
    headers: Vec<(String, String)>,
    /// The body's length.
    body_bytes: usize,
    /// Its first [`BODY_KEPT`] bytes, as UTF-8 (invalid sequences replaced).
    body: String,
}

impl RequestLog {
    /// Records `req`, forgetting the oldest request if the log is full.
    pub fn record(&mut self, req: &Request) {
        self.total += 1;
        if self.recent.len() == KEPT {
            self.recent.pop_front();
        }
        let kept = &req.body[..req.body.len().min(BODY_KEPT)];
        self.recent.push_back(Seen {
            seq: self.total,
            method: req.method.clone(),
            path: req.path.clone(),
            query: req.query.clone(),
            headers: req
                .headers
                .iter()
                .map(|(name, value)| (name.clone(), String::from_utf8_lossy(value).into_owned()))
                .collect(),
            body_bytes: req.body.len(),
            body: String::from_utf8_lossy(kept).into_owned(),
        });
    }

    /// The log as `GET /debug/requests` returns it: `{"total":N,"kept":32,"requests":[...]}`, oldest first.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "total": self.total,
            "kept": KEPT,
            "requests": self.recent,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_requests_and_bounds_the_bodies() {
        let mut log = RequestLog::default();
        for i in 0..(KEPT + 3) {
            log.record(&Request {
                method: "POST".into(),
                path: format!("/p{i}"),
                query: (i % 2 == 0).then(|| "alt=sse".to_string()),
                headers: vec![
                    ("Host".into(), b"mock".to_vec()),
                    ("X-Bytes".into(), vec![b'a', 0xff]),
                ],
                body: vec![b'x'; BODY_KEPT + i],
                ..Request::default()
            });
        }
        let v = log.to_json();
        assert_eq!(v["total"], KEPT as u64 + 3);
        let requests = v["requests"].as_array().unwrap();
        assert_eq!(requests.len(), KEPT);
        assert_eq!(requests[0]["seq"], 4);
        assert_eq!(requests[0]["path"], "/p3");
        assert_eq!(requests[0]["query"], serde_json::Value::Null);
        let last = &requests[KEPT - 1];
        assert_eq!(
            (last["seq"].as_u64(), last["path"].as_str()),
            (
                Some(KEPT as u64 + 3),
                Some(format!("/p{}", KEPT + 2).as_str())
            )
        );
        assert_eq!(last["query"], "alt=sse");
        assert_eq!(
            last["headers"],
            serde_json::json!([["Host", "mock"], ["X-Bytes", "a\u{fffd}"]])
        );
        assert_eq!(last["body_bytes"], BODY_KEPT + KEPT + 2);
        assert_eq!(last["body"].as_str().unwrap().len(), BODY_KEPT);
    }
}
