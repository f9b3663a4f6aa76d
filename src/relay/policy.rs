//! The failure policy: why an exchange failed ([`Failure`]), and what to do about it ([`on_failure`], a
//! pure function of the [`Facts`]: another address, a retry now or after a wait, the fallback upstream,
//! or an error for the client).

use std::fmt;
use std::io;
use std::time::Duration;

use super::deadlines::Wait;
use crate::http::chunked::ChunkError;
use crate::http::response::ResponseError;

/// What another try of an exchange may do, as seen when the try starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryRoom {
    /// A retry on the same upstream is left.
    pub retries_left: bool,
    /// A fallback upstream is there.
    pub fallback: bool,
    /// The longest wait before a retry (the policy's, and what the head deadline leaves).
    pub max_wait: Duration,
}

impl RetryRoom {
    /// A `status` answer (with its `Retry-After`) is tried again rather than passed on.
    pub fn takes(&self, status: u16, retry_after: Option<Duration>) -> bool {
        let retryable = status >= 500 || status == 429;
        let wait_ok = retry_after.is_none_or(|r| r <= self.max_wait);
        retryable && (self.fallback || (self.retries_left && wait_ok))
    }
}

/// Why an upstream exchange failed.
#[derive(Debug)]
pub enum Failure {
    /// The upstream's name did not resolve (the message says why).
    Resolve(String),
    /// Connecting, writing or reading failed (a refused connect surfaces as the first write's error).
    Io(io::Error),
    /// The TLS handshake failed: an untrusted certificate, a name that does not match, a protocol error.
    Tls(io::Error),
    ClosedBeforeHead,
    BadHead(ResponseError),
    /// The upstream refused the simple route's request: its status, and what its error body said.
    Status(u16, String),
    BadBody(ChunkError),
    Truncated,
    /// A wait took longer than its deadline.
    Timeout(Wait, std::time::Duration),
    /// The upstream has no turn for it: its queue was full, or its wait there passed `Some(deadline)`.
    Busy(Option<Duration>),
    /// The upstream's circuit breaker is open; it may let a request through after this.
    Unavailable(Duration),
}

impl Failure {
    /// Its kind, as the metrics label it (`tokenpipe_upstream_failures_total{kind}`).
    pub fn kind(&self) -> &'static str {
        match self {
            Failure::Resolve(_) => "resolve",
            Failure::Io(_) => "io",
            Failure::Tls(_) => "tls",
            Failure::ClosedBeforeHead => "closed_before_head",
            Failure::BadHead(_) => "bad_head",
            Failure::Status(..) => "status",
            Failure::BadBody(_) => "bad_framing",
            Failure::Truncated => "truncated",
            Failure::Timeout(..) => "timeout",
            Failure::Busy(_) => "busy",
            Failure::Unavailable(_) => "breaker_open",
        }
    }

    /// The machine-readable code of the error a client gets for it.
    pub fn code(&self) -> &'static str {
        match self {
            Failure::Resolve(_) => "upstream_unresolved",
            Failure::Status(..) => "upstream_status",
            Failure::Tls(_) => "upstream_tls_failed",
            Failure::Timeout(..) => "upstream_timeout",
            Failure::Busy(_) => "upstream_busy",
            Failure::Unavailable(_) => "upstream_unavailable",
            _ => "upstream_failed",
        }
    }

    /// When the client may try again, for a `Retry-After` (RFC 9110 §10.2.3): a busy upstream soon, an
    /// open breaker when it lets a probe through.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Failure::Busy(_) => Some(Duration::from_secs(1)),
            Failure::Unavailable(left) => Some(*left),
            _ => None,
        }
    }

    /// Whether the upstream was at fault (for its circuit breaker): it failed or answered with a 5xx. Not
    /// a 4xx or 429 answer (it is up, and said no), nor our own refusals (a full queue, an open breaker).
    pub fn counts_against_upstream(&self) -> bool {
        match self {
            Failure::Status(status, _) => *status >= 500,
            Failure::Busy(_) | Failure::Unavailable(_) => false,
            _ => true,
        }
    }

    /// The status a client gets for it before its stream began: 504 when the upstream was too slow (RFC
    /// 9110 §15.6.5), 503 when it had no turn for the request or its breaker is open (§15.6.4), else 502.
    pub fn status(&self) -> u16 {
        match self {
            Failure::Timeout(..) => 504,
            Failure::Busy(_) | Failure::Unavailable(_) => 503,
            _ => 502,
        }
    }

    /// A connection that never got established: another address of the name may do better.
    pub fn is_connect_failure(&self) -> bool {
        use io::ErrorKind::*;
        match self {
            Failure::Io(e) => matches!(
                e.kind(),
                ConnectionRefused
                    | HostUnreachable
                    | NetworkUnreachable
                    | AddrNotAvailable
                    | TimedOut
                    | NotConnected
            ),
            Failure::Timeout(Wait::Connect, _) => true,
            _ => false,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Resolve(why) => write!(f, "upstream name resolution failed: {why}"),
            Failure::Io(e) => write!(f, "upstream connection failed: {e}"),
            Failure::Tls(e) => write!(f, "upstream TLS handshake failed: {e}"),
            Failure::ClosedBeforeHead => {
                f.write_str("upstream closed the connection before answering")
            }
            Failure::BadHead(e) => write!(f, "upstream sent an invalid response head: {e}"),
            Failure::Status(s, detail) if detail.is_empty() => {
                write!(f, "upstream answered with status {s}")
            }
            Failure::Status(s, detail) => write!(f, "upstream answered with status {s}: {detail}"),
            Failure::BadBody(e) => write!(f, "upstream sent an invalid body: {e}"),
            Failure::Truncated => {
                f.write_str("upstream closed the connection before the body ended")
            }
            Failure::Busy(None) => f.write_str("upstream is at capacity and its queue is full"),
            Failure::Busy(Some(waited)) => write!(
                f,
                "upstream is at capacity: no turn within {}",
                crate::config::duration::show(*waited)
            ),
            Failure::Unavailable(left) => write!(
                f,
                "upstream is failing (circuit breaker open for another {} s)",
                left.as_secs().max(1)
            ),
            Failure::Timeout(wait, limit) => write!(
                f,
                "upstream timed out waiting for the {} ({})",
                wait.name(),
                crate::config::duration::show(*limit)
            ),
        }
    }
}

/// What to do about a failed upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Connect to the name's next address.
    NextAddress,
    /// Send the same request again, on a new connection.
    Retry,
    /// Wait, then send the request again (on the same upstream).
    Backoff(Duration),
    /// Send the request to the fallback upstream.
    Fallback,
    /// Nothing reached the client yet: answer with the failure (502, 503 or 504).
    BadGateway,
    /// The client has part of the stream: tell it in-band (an SSE `error` event), end *without* the last
    /// chunk and close, so no client can take a truncated answer for a complete one.
    FailStream,
}

/// What the failure policy looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    /// The client has the stream's head.
    pub streaming: bool,
    pub attempt: u32,
    /// The connection came from the pool.
    pub reused: bool,
    /// The request may be sent twice (`Exchange::replayable`).
    pub replayable: bool,
    /// Some byte of the request was written.
    pub request_sent: bool,
    /// Some byte of the response arrived.
    pub response_started: bool,
    /// Addresses of the name are left to try.
    pub fallback: bool,
    /// A retry on the same upstream is left ([`RetryRoom`]).
    pub retries_left: bool,
    /// A fallback upstream is there.
    pub fallback_upstream: bool,
    /// How long a retry would wait: the upstream's `Retry-After`, else the next backoff.
    pub wait: Duration,
    /// The longest wait allowed before a retry.
    pub max_wait: Duration,
}

/// The failure policy, a pure function of the facts. In this order:
///
/// 1. Once the stream began, nothing can be taken back: `FailStream`.
/// 2. A connect that failed (refused, unreachable, timed out) moves to the name's next address, if one
///    is left.
/// 3. The stale-connection retry: a connection taken from the pool that fails before *any* response
///    byte. The server may have closed it while it idled (the keep-alive race: its FIN was in flight when
///    we took it), which says nothing about the server's health, so the request goes once more on a fresh
///    connection at once; but only if sending it twice is safe: it is replayable, or none of it was
///    written. A POST the server read in full may have started a billed generation before the server
///    died, and we cannot tell that apart from the race (the rule of Go's `net/http` transport,
///    `shouldRetryRequest`).
/// 4. A retry after a wait (`Backoff`), on the same upstream, while retries are left and the wait is
///    allowed: for a failure that says the upstream could not take the request now and that a repeat
///    cannot duplicate ([`retryable`]): a failed connect, a 5xx or a 429 answer.
/// 5. The fallback upstream, for those and for the failures a retry here would not mend (a full queue,
///    an open breaker, a TLS failure).
/// 6. Everything else (a 4xx answer, a request the upstream may have started on) is an error response:
///    `502`, or `504` for a deadline, `503` when the upstream is busy or its breaker is open.
pub fn on_failure(f: &Facts, failure: &Failure) -> Decision {
    if f.streaming {
        Decision::FailStream
    } else if f.fallback && !f.reused && failure.is_connect_failure() {
        Decision::NextAddress
    } else if f.reused
        && !f.response_started
        && (f.replayable || !f.request_sent)
        && f.attempt == 1
        && !matches!(failure, Failure::Status(..) | Failure::Timeout(..))
    {
        Decision::Retry
    } else if f.retries_left && f.wait <= f.max_wait && retryable(f, failure) {
        Decision::Backoff(f.wait)
    } else if f.fallback_upstream
        && (retryable(f, failure)
            || matches!(
                failure,
                Failure::Busy(_) | Failure::Unavailable(_) | Failure::Tls(_)
            ))
    {
        Decision::Fallback
    } else {
        Decision::BadGateway
    }
}

/// A failure after which the same request may go again without risk of running twice: nothing was
/// processed (a connect that failed, a name that did not resolve, a 5xx or 429 answer, which says so), or
/// the request is safe to repeat, or none of it was sent.
pub fn retryable(f: &Facts, failure: &Failure) -> bool {
    let unsent = f.replayable || !f.request_sent;
    match failure {
        Failure::Status(status, _) => *status >= 500 || *status == 429,
        Failure::Resolve(_) => true,
        Failure::Timeout(Wait::Connect | Wait::Handshake, _) => true,
        failure if failure.is_connect_failure() => true,
        Failure::Io(_) | Failure::ClosedBeforeHead | Failure::BadHead(_) => unsent,
        Failure::Timeout(Wait::Head, _) => unsent,
        _ => false,
    }
}
