//! The exchange and its failure policy in simulated time: response bytes and instants in, decisions out.
//! The upstream connection here is a real loopback socket that is never read or written: every byte goes
//! through the sans-IO entry points (`UpstreamConn::on_head_bytes`, the policy).
//!
//! Test code only: its parent declares it `#[cfg(test)]`.

use super::*;
use crate::conn::Transport;
use crate::conn::client::AfterReply;
use crate::conn::upstream::{HeadProgress, UpstreamState};
use std::io;
use std::time::Duration;

/// An upstream connection whose socket is never used (a connect to a loopback listener).
fn upstream(reused: bool) -> (UpstreamConn, std::net::TcpListener) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let io = Transport::connect(listener.local_addr().unwrap()).unwrap();
    let mut up = if reused {
        UpstreamConn::reuse(io)
    } else {
        UpstreamConn {
            io,
            state: UpstreamState::Sending { written: 0 },
            reused,
            answered_early: false,
        }
    };
    up.state = UpstreamState::AwaitingHead { head: Vec::new() };
    (up, listener)
}

fn exchange(reused: bool) -> (Exchange, std::net::TcpListener) {
    let (up, l) = upstream(reused);
    let framing = StreamFraming::Chunked(AfterReply::KeepAlive);
    let request = b"POST / HTTP/1.1\r\n\r\n".to_vec();
    let who = Identity::Ip([127, 0, 0, 1].into());
    let mut x = Exchange::new(Kind::Generate, 0, request, framing, Instant::now(), who);
    assert!(matches!(x.phase, Phase::Resolving { .. }));
    assert!(
        x.upstream().is_none(),
        "no connection while the name is resolved"
    );
    x.connect(up, Vec::new());
    (x, l)
}

fn up(x: &mut Exchange) -> &mut UpstreamConn {
    x.upstream().expect("a connection")
}

/// Facts with no retry and no fallback left, for the rules before them.
fn no_retries() -> Facts {
    Facts {
        streaming: false,
        attempt: 1,
        reused: false,
        replayable: false,
        request_sent: false,
        response_started: false,
        fallback: false,
        retries_left: false,
        fallback_upstream: false,
        wait: Duration::ZERO,
        max_wait: Duration::ZERO,
    }
}

fn io_error() -> Failure {
    Failure::Io(io::ErrorKind::ConnectionReset.into())
}

#[test]
fn the_policy_retries_only_a_pooled_connection_that_never_answered() {
    let facts = |attempt, reused, response_started| Facts {
        streaming: false,
        attempt,
        reused,
        replayable: true,
        request_sent: true,
        response_started,
        fallback: false,
        ..no_retries()
    };
    let d = |attempt, reused, started, f: &Failure| on_failure(&facts(attempt, reused, started), f);
    assert_eq!(d(1, true, false, &io_error()), Decision::Retry);
    assert_eq!(
        d(1, true, false, &Failure::ClosedBeforeHead),
        Decision::Retry
    );
    assert_eq!(
        d(1, false, false, &io_error()),
        Decision::BadGateway,
        "a fresh connection failed"
    );
    assert_eq!(
        d(2, true, false, &io_error()),
        Decision::BadGateway,
        "only one retry"
    );
    assert_eq!(
        d(1, true, true, &Failure::ClosedBeforeHead),
        Decision::BadGateway,
        "it had answered"
    );
    assert_eq!(
        d(1, true, false, &Failure::Status(503, String::new())),
        Decision::BadGateway,
        "a status is an answer"
    );
    // A request that must not be sent twice (a POST without an `Idempotency-Key`) is retried only if
    // none of it was written: the server may have started on it.
    let post = |request_sent| Facts {
        replayable: false,
        request_sent,
        ..facts(1, true, false)
    };
    assert_eq!(
        on_failure(&post(true), &Failure::ClosedBeforeHead),
        Decision::BadGateway,
        "a POST the server may have read is not sent twice"
    );
    assert_eq!(
        on_failure(&post(false), &io_error()),
        Decision::Retry,
        "nothing of it left: safe to send"
    );
    let streaming = Facts {
        streaming: true,
        ..facts(1, true, false)
    };
    for f in [
        io_error(),
        Failure::Truncated,
        Failure::BadBody(crate::http::chunked::ChunkError::BadSize),
    ] {
        assert_eq!(on_failure(&streaming, &f), Decision::FailStream);
    }
}

/// A refused connect moves to the name's next address; a failure after the connect, or on a pooled
/// connection, does not.
#[test]
fn a_refused_connect_tries_the_next_address() {
    let refused = Failure::Io(io::ErrorKind::ConnectionRefused.into());
    let fresh = Facts {
        streaming: false,
        attempt: 1,
        reused: false,
        replayable: false,
        request_sent: false,
        response_started: false,
        fallback: true,
        ..no_retries()
    };
    assert_eq!(on_failure(&fresh, &refused), Decision::NextAddress);
    assert_eq!(
        on_failure(
            &Facts {
                fallback: false,
                ..fresh
            },
            &refused
        ),
        Decision::BadGateway
    );
    assert_eq!(
        on_failure(&fresh, &io_error()),
        Decision::BadGateway,
        "a reset is not a failed connect"
    );
    assert_eq!(
        on_failure(&fresh, &Failure::Status(502, String::new())),
        Decision::BadGateway
    );
    let tls = Failure::Tls(io::Error::new(
        io::ErrorKind::InvalidData,
        "TLS: bad certificate",
    ));
    assert_eq!(
        on_failure(&fresh, &tls),
        Decision::BadGateway,
        "another address has the same certificate"
    );
    assert_eq!(tls.code(), "upstream_tls_failed");
    assert_eq!(
        Failure::Resolve("no such name".into()).code(),
        "upstream_unresolved"
    );
}

/// A response head split at every byte gives the same result, once: the head, the body bytes that came
/// with it, and the move to `Body`; the exchange then streams and no longer keeps its request.
#[test]
fn a_head_split_anywhere_starts_the_stream_once() {
    let response = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n";
    let head_end = response.windows(4).rposition(|w| w == b"\r\n\r\n").unwrap() + 4;
    for split in 0..=response.len() {
        let (mut x, _l) = exchange(false);
        let mut got = None;
        for part in [&response[..split], &response[split..]] {
            match up(&mut x).on_head_bytes(part, 16 * 1024).unwrap() {
                HeadProgress::NeedMore => {}
                HeadProgress::Complete { head, rest } => {
                    assert!(got.is_none(), "split {split}: two heads");
                    got = Some((head.status, rest));
                }
            }
            if got.is_some() {
                break;
            }
        }
        let (status, rest) = got.unwrap_or_else(|| panic!("split {split}: no head"));
        assert_eq!(
            status, 200,
            "split {split}: the interim 100 was not skipped"
        );
        let expected = if split >= head_end {
            &response[head_end..split]
        } else {
            &response[head_end..]
        };
        assert_eq!(rest, expected, "split {split}");
        assert!(matches!(
            up(&mut x).state,
            UpstreamState::Body {
                keep_alive: true,
                ..
            }
        ));
        assert!(up(&mut x).response_started());
        assert!(matches!(x.phase, Phase::AwaitingUpstream { .. }));
        x.start_streaming();
        assert!(
            matches!(x.phase, Phase::Streaming { .. }),
            "the request is freed with the phase"
        );
        assert_eq!(
            x.on_failure(&Failure::Truncated, Duration::ZERO),
            Decision::FailStream
        );
    }
}

/// A pooled connection that fails before answering is retried once, on a fresh connection; if that one
/// fails too, the client gets a 502.
#[test]
fn a_stale_pooled_connection_gets_one_retry() {
    let (mut x, _l) = exchange(true);
    assert_eq!(
        x.on_failure(&Failure::ClosedBeforeHead, Duration::ZERO),
        Decision::BadGateway,
        "the POST was written: not replayable"
    );
    x.replayable = true;
    assert_eq!(x.attempt, 1);
    assert_eq!(
        x.on_failure(&Failure::ClosedBeforeHead, Duration::ZERO),
        Decision::Retry
    );
    x.retry();
    assert_eq!(x.attempt, 2);
    assert!(
        matches!(x.phase, Phase::Resolving { ref request } if !request.is_empty()),
        "back to finding a connection, request kept"
    );
    let (fresh, _l2) = upstream(false);
    x.connect(fresh, Vec::new());
    assert_eq!(
        x.on_failure(&Failure::ClosedBeforeHead, Duration::ZERO),
        Decision::BadGateway
    );
}

/// A garbage head is a failure to report, never a panic, and it is the same wherever the bytes split.
#[test]
fn a_bad_head_is_an_error_at_any_split() {
    let response = b"HTTP/1.1 abc\r\n\r\n";
    for split in 0..=response.len() {
        let (mut x, _l) = exchange(false);
        let first = up(&mut x).on_head_bytes(&response[..split], 1024);
        let result = match first {
            Ok(HeadProgress::NeedMore) => up(&mut x).on_head_bytes(&response[split..], 1024),
            other => other,
        };
        assert!(result.is_err(), "split {split}: {result:?}");
    }
}

/// Retries after a wait: for failures that say nothing was done (a refused connect, a 5xx, a 429), while
/// retries are left and the wait is allowed; never a 4xx, and never a POST the upstream may have started.
#[test]
fn backoff_retries_only_what_cannot_run_twice() {
    let room = Facts {
        retries_left: true,
        wait: Duration::from_millis(200),
        max_wait: Duration::from_secs(5),
        request_sent: true,
        ..no_retries()
    };
    let backoff = Decision::Backoff(Duration::from_millis(200));
    let refused = Failure::Io(io::ErrorKind::ConnectionRefused.into());
    assert_eq!(on_failure(&room, &refused), backoff);
    assert_eq!(
        on_failure(&room, &Failure::Status(503, String::new())),
        backoff
    );
    assert_eq!(
        on_failure(&room, &Failure::Status(429, String::new())),
        backoff
    );
    assert_eq!(
        on_failure(&room, &Failure::Status(400, String::new())),
        Decision::BadGateway,
        "a 4xx is never retried"
    );
    assert_eq!(
        on_failure(&room, &Failure::ClosedBeforeHead),
        Decision::BadGateway,
        "a POST the upstream read may have started"
    );
    let replayable = Facts {
        replayable: true,
        ..room
    };
    assert_eq!(on_failure(&replayable, &Failure::ClosedBeforeHead), backoff);
    let too_long = Facts {
        wait: Duration::from_secs(6),
        ..room
    };
    assert_eq!(
        on_failure(&too_long, &Failure::Status(429, String::new())),
        Decision::BadGateway,
        "a Retry-After beyond the wait allowed is not waited for"
    );
    let none_left = Facts {
        retries_left: false,
        ..room
    };
    assert_eq!(on_failure(&none_left, &refused), Decision::BadGateway);
    let streaming = Facts {
        streaming: true,
        ..room
    };
    assert_eq!(
        on_failure(&streaming, &refused),
        Decision::FailStream,
        "once a byte went: never"
    );
}

/// The fallback upstream takes what a retry would, and what a retry here would not mend.
#[test]
fn the_fallback_takes_what_retries_cannot_mend() {
    let fb = Facts {
        fallback_upstream: true,
        request_sent: true,
        ..no_retries()
    };
    for f in [
        Failure::Io(io::ErrorKind::ConnectionRefused.into()),
        Failure::Status(500, String::new()),
        Failure::Busy(None),
        Failure::Unavailable(Duration::from_secs(3)),
        Failure::Tls(io::Error::other("bad certificate")),
    ] {
        assert_eq!(on_failure(&fb, &f), Decision::Fallback, "{f}");
    }
    assert_eq!(
        on_failure(&fb, &Failure::Status(404, String::new())),
        Decision::BadGateway
    );
    let retry_first = Facts {
        retries_left: true,
        max_wait: Duration::from_secs(1),
        ..fb
    };
    assert!(matches!(
        on_failure(&retry_first, &Failure::Status(500, String::new())),
        Decision::Backoff(_)
    ));
}
