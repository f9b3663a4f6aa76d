//! The client's decisions, from facts alone: no socket, no clock. Each rule of [`decide`] has its case,
//! and an exhaustive sweep over every combination of facts checks the invariants the driver relies on.
//!
//! Test code only: its parent declares it `#[cfg(test)]`.

use super::*;

fn facts(state: StateKind) -> Facts {
    Facts {
        state,
        flushed: Flushed::Empty,
        readable: false,
        read_closed: false,
        input: Input::NeedMore,
        inbuf_full: false,
        idle: false,
        draining: false,
    }
}

const KEEP: StateKind = StateKind::Replying(AfterReply::KeepAlive);
const CLOSE: StateKind = StateKind::Replying(AfterReply::Close);

#[test]
fn awaiting_a_request() {
    let f = facts(StateKind::AwaitingRequest);
    assert_eq!(decide(&f), Next::Wait);
    assert_eq!(
        decide(&Facts {
            readable: true,
            ..f
        }),
        Next::Read
    );
    assert_eq!(
        decide(&Facts {
            input: Input::Unparsed,
            readable: true,
            ..f
        }),
        Next::Parse
    );
    // Requests sent before the client closed its side are answered before we close.
    let closed = Facts {
        read_closed: true,
        ..f
    };
    // And what we still hold for it (a `100 Continue`, TLS records) leaves first.
    assert_eq!(
        decide(&Facts {
            flushed: Flushed::Pending,
            ..closed
        }),
        Next::Wait
    );
    assert_eq!(
        decide(&Facts {
            flushed: Flushed::Drained,
            ..closed
        }),
        Next::Close
    );
    assert_eq!(
        decide(&Facts {
            input: Input::Unparsed,
            ..closed
        }),
        Next::Parse
    );
    assert_eq!(decide(&closed), Next::Close);
    // Unread bytes before the end-of-file come first.
    assert_eq!(
        decide(&Facts {
            readable: true,
            ..closed
        }),
        Next::Read
    );
}

#[test]
fn serving_a_request() {
    let f = facts(StateKind::Serving);
    assert_eq!(decide(&f), Next::Wait);
    assert_eq!(
        decide(&Facts {
            flushed: Flushed::Drained,
            ..f
        }),
        Next::Resume
    );
    assert_eq!(
        decide(&Facts {
            flushed: Flushed::Empty,
            ..f
        }),
        Next::Wait,
        "an empty queue that was already empty resumes nothing: the stream was not paused for it"
    );
    assert_eq!(
        decide(&Facts {
            readable: true,
            ..f
        }),
        Next::Watch
    );
    assert_eq!(
        decide(&Facts {
            readable: true,
            inbuf_full: true,
            ..f
        }),
        Next::Wait
    );
    // Leaving beats everything, even a queue that just drained.
    assert_eq!(
        decide(&Facts {
            read_closed: true,
            flushed: Flushed::Drained,
            ..f
        }),
        Next::Left
    );
    // Pipelined bytes are not parsed while a response is in progress.
    assert_eq!(
        decide(&Facts {
            input: Input::Unparsed,
            ..f
        }),
        Next::Wait
    );
}

#[test]
fn replying() {
    for flushed in [Flushed::Empty, Flushed::Drained] {
        assert_eq!(
            decide(&Facts {
                flushed,
                ..facts(KEEP)
            }),
            Next::EndReply
        );
        assert_eq!(
            decide(&Facts {
                flushed,
                ..facts(CLOSE)
            }),
            Next::Linger
        );
        // A client that closed its side after a complete reply is not "gone": it is answered.
        assert_eq!(
            decide(&Facts {
                flushed,
                read_closed: true,
                ..facts(KEEP)
            }),
            Next::EndReply
        );
    }
    let pending = Facts {
        flushed: Flushed::Pending,
        ..facts(KEEP)
    };
    assert_eq!(decide(&pending), Next::Wait);
    assert_eq!(
        decide(&Facts {
            readable: true,
            ..pending
        }),
        Next::Watch
    );
}

#[test]
fn lingering() {
    let f = facts(StateKind::Lingering);
    assert_eq!(decide(&f), Next::Wait);
    assert_eq!(
        decide(&Facts {
            readable: true,
            ..f
        }),
        Next::Discard
    );
    assert_eq!(
        decide(&Facts {
            read_closed: true,
            ..f
        }),
        Next::Close
    );
    assert_eq!(
        decide(&Facts {
            readable: true,
            read_closed: true,
            ..f
        }),
        Next::Discard
    );
    // `close_notify` (or a record before it) is still held: the client is not closed on yet. The next
    // writable edge drives it out; the linger deadline bounds the wait.
    assert_eq!(
        decide(&Facts {
            read_closed: true,
            flushed: Flushed::Pending,
            ..f
        }),
        Next::Wait
    );
}

/// Every combination of three booleans.
fn triples() -> impl Iterator<Item = (bool, bool, bool)> {
    (0..8).map(|i| (i & 1 != 0, i & 2 != 0, i & 4 != 0))
}

/// Every combination of facts, against the invariants the driver's loop relies on.
#[test]
fn invariants_over_every_combination() {
    let states = [
        StateKind::AwaitingRequest,
        StateKind::Serving,
        KEEP,
        CLOSE,
        StateKind::Lingering,
    ];
    let flushes = [Flushed::Empty, Flushed::Drained, Flushed::Pending];
    let bools = [false, true];
    for state in states {
        for flushed in flushes {
            for readable in bools {
                for read_closed in bools {
                    for input in [Input::Unparsed, Input::NeedMore] {
                        for (inbuf_full, idle, draining) in triples() {
                            let f = Facts {
                                state,
                                flushed,
                                readable,
                                read_closed,
                                input,
                                inbuf_full,
                                idle,
                                draining,
                            };
                            let next = decide(&f);
                            let why = format!("{f:?} -> {next:?}");
                            // Reading only when the socket may have something.
                            if matches!(next, Next::Read | Next::Watch | Next::Discard) {
                                assert!(readable, "{why}");
                            }
                            // Parsing only between requests, and only new input.
                            if next == Next::Parse {
                                assert!(
                                    state == StateKind::AwaitingRequest && input == Input::Unparsed,
                                    "{why}"
                                );
                            }
                            // Resuming only a stream whose queue just drained.
                            if next == Next::Resume {
                                assert!(
                                    state == StateKind::Serving && flushed == Flushed::Drained,
                                    "{why}"
                                );
                            }
                            // Closing, leaving: only once the client has shut its side.
                            if matches!(next, Next::Close | Next::Left) {
                                assert!(read_closed, "{why}");
                            }
                            // A close we choose never drops what we hold for the client (the tail
                            // of a reply, `close_notify`, TLS records): it waits until all is out.
                            // Only a client that left loses it.
                            if next == Next::Close {
                                assert!(flushed != Flushed::Pending, "{why}");
                            }
                            // A reply is never cut short: it ends only when all of it was written.
                            if matches!(next, Next::EndReply | Next::Linger) {
                                assert!(flushed != Flushed::Pending, "{why}");
                            }
                            // Closed for a drain only when idle: never a fresh connection, never mid-request.
                            if next == Next::Linger && state == StateKind::AwaitingRequest {
                                assert!(draining && idle && !readable, "{why}");
                            }
                            // Nothing read past a head's worth while a response is in progress.
                            if next == Next::Watch {
                                assert!(!inbuf_full, "{why}");
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn framing_follows_the_version_and_fixes_what_comes_after() {
    assert_eq!(
        StreamFraming::for_request(1, AfterReply::KeepAlive),
        StreamFraming::Chunked(AfterReply::KeepAlive)
    );
    assert_eq!(
        StreamFraming::for_request(0, AfterReply::KeepAlive),
        StreamFraming::UntilClose
    );
    assert_eq!(StreamFraming::UntilClose.after(), AfterReply::Close);
    let head = String::from_utf8(stream_head(StreamFraming::UntilClose)).unwrap();
    assert!(
        !head.contains("Transfer-Encoding") && head.contains("Connection: close"),
        "{head}"
    );
    let head =
        String::from_utf8(stream_head(StreamFraming::Chunked(AfterReply::KeepAlive))).unwrap();
    assert!(
        head.contains("Transfer-Encoding: chunked") && !head.contains("Connection"),
        "{head}"
    );
}

/// Draining, a kept-alive connection that waits with nothing to read closes (lingering); a fresh one, or
/// one with bytes to read, or one mid-request, is served; without a drain nothing changes.
#[test]
fn a_drain_closes_idle_kept_alive_connections_only() {
    let idle = Facts {
        idle: true,
        draining: true,
        ..facts(StateKind::AwaitingRequest)
    };
    assert_eq!(decide(&idle), Next::Linger);
    assert_eq!(
        decide(&Facts {
            idle: false,
            ..idle
        }),
        Next::Wait
    );
    assert_eq!(
        decide(&Facts {
            draining: false,
            ..idle
        }),
        Next::Wait
    );
    assert_eq!(
        decide(&Facts {
            readable: true,
            ..idle
        }),
        Next::Read
    );
    assert_eq!(
        decide(&Facts {
            input: Input::Unparsed,
            ..idle
        }),
        Next::Parse
    );
    // Other states finish what they do.
    assert_eq!(
        decide(&Facts {
            state: StateKind::Serving,
            ..idle
        }),
        Next::Wait
    );
}
