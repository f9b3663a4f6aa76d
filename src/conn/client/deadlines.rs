//! The client's deadlines: one per wait, so that a slow or silent client holds its connection for a
//! bounded time whatever it does.
//!
//! | the client is...                               | wait        | then                      |
//! |------------------------------------------------|-------------|---------------------------|
//! | connected, or between requests with a partial head | `Head`  | 408, close                |
//! | between requests, nothing sent (keep-alive)    | `KeepAlive` | close                     |
//! | sending a body                                 | `Body`      | 408, close                |
//! | not taking the bytes of its response           | `Write`     | dropped (its work too)    |
//!
//! Head and body deadlines are *total*: they start when the wait starts and are not extended by
//! trickled bytes, which is what defeats a slowloris client. The write deadline is about *progress*: it
//! expires only when the client took no byte for its whole length. Since a streaming client takes bytes
//! all the time, it is not re-armed per write (a tree removal and insertion per chunk): the driver notes
//! the instant it last saw progress ([`ClientConn::progress_at`]), and a deadline that fires early moves
//! itself to one period after that instant.
//!
//! [`watch`] runs at the end of every [`super::drive`]: it computes the wait from the connection's state
//! ([`wanted`], a pure function) and arms or replaces the deadline only when the wait changed. The
//! lingering close keeps its own deadline in `ClientState::Lingering`.

use std::time::Duration;

use super::{ClientApp, ClientConn, ClientState};
use crate::reactor::{ConnId, Cx};

/// How long a client may take at each step (the options of `config::timeouts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientTimeouts {
    pub head: Duration,
    pub body: Duration,
    pub keepalive: Duration,
    pub write: Duration,
}

impl Default for ClientTimeouts {
    fn default() -> Self {
        ClientTimeouts {
            head: Duration::from_secs(10),
            body: Duration::from_secs(60),
            keepalive: Duration::from_secs(75),
            write: Duration::from_secs(60),
        }
    }
}

/// What a client connection may be waiting for, each with its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientWait {
    /// A request head (the first on the connection, or one that has begun).
    Head,
    /// The body of a request whose head is in.
    Body,
    /// The next request on an idle keep-alive connection.
    KeepAlive,
    /// The client to take bytes of its response.
    Write,
    /// The end of a lingering close.
    Linger,
}

/// The facts [`wanted`] decides from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitFacts {
    pub awaiting_request: bool,
    pub lingering: bool,
    /// The request reader holds a head and waits for the body.
    pub in_body: bool,
    /// Bytes of a request are waiting to be parsed (a head has begun).
    pub head_begun: bool,
    /// Requests this connection has sent before.
    pub served: bool,
    /// Response bytes are waiting for the client to take them.
    pub output_pending: bool,
}

/// The wait of a client connection with these facts (`None`: nothing the client must do, for instance
/// while its response streams and it keeps up).
pub fn wanted(f: WaitFacts) -> Option<ClientWait> {
    if f.lingering {
        None
    } else if f.output_pending {
        Some(ClientWait::Write)
    } else if !f.awaiting_request {
        None
    } else if f.in_body {
        Some(ClientWait::Body)
    } else if f.head_begun || !f.served {
        Some(ClientWait::Head)
    } else {
        Some(ClientWait::KeepAlive)
    }
}

/// The facts of client `c`, for [`wanted`].
fn wait_facts<W>(c: &ClientConn<W>) -> WaitFacts {
    WaitFacts {
        awaiting_request: matches!(c.state, ClientState::AwaitingRequest),
        lingering: matches!(c.state, ClientState::Lingering { .. }),
        in_body: !c.reader.is_idle(),
        head_begun: !c.inbuf.is_empty(),
        served: c.served > 0,
        output_pending: !c.out.is_empty() || c.io.holds_output(),
    }
}

/// Arms the deadline of what client `id` waits for now, if that changed; notes write progress.
pub fn watch<A: ClientApp>(app: &A, cx: &mut Cx<A>, id: ConnId) {
    let timeouts = app.client_timeouts();
    let now = cx.now;
    let Some(c) = cx.conns.get_mut(id).and_then(A::client) else {
        return;
    };
    let taken = c.out.taken();
    if taken != c.taken_seen {
        c.taken_seen = taken;
        c.progress_at = Some(now);
    }
    let want = wanted(wait_facts(c));
    if c.deadline.map(|(w, _)| w) == want {
        return;
    }
    if let Some((_, old)) = c.deadline.take() {
        cx.timers.cancel(old);
    }
    let Some(wait) = want else {
        return;
    };
    let limit = match wait {
        ClientWait::Head => timeouts.head,
        ClientWait::Body => timeouts.body,
        ClientWait::KeepAlive => timeouts.keepalive,
        ClientWait::Write | ClientWait::Linger => timeouts.write,
    };
    if wait == ClientWait::Write {
        // Progress is counted from the moment the client stopped keeping up.
        c.progress_at = Some(now);
    }
    let key = cx.timers.insert(now + limit, id, A::client_timer(wait));
    if let Some(c) = cx.conns.get_mut(id).and_then(A::client) {
        c.deadline = Some((wait, key));
    }
}

/// What to do about client `id`'s deadline for `wait`, which fell due.
pub fn on_deadline<A: ClientApp>(app: &mut A, cx: &mut Cx<A>, id: ConnId, wait: ClientWait) {
    let timeouts = app.client_timeouts();
    let now = cx.now;
    let Some(c) = cx.conns.get_mut(id).and_then(A::client) else {
        return;
    };
    if wait == ClientWait::Linger {
        if matches!(c.state, ClientState::Lingering { .. }) {
            cx.close(id);
        }
        return;
    }
    if c.deadline.map(|(w, _)| w) != Some(wait) {
        return; // Replaced since: a stale deadline.
    }
    c.deadline = None;
    let peer = c.peer;
    let name = cx.name().to_string();
    let Some(c) = cx.conns.get_mut(id).and_then(A::client) else {
        return;
    };
    match wait {
        ClientWait::Head | ClientWait::Body => {
            let (what, limit) = match wait {
                ClientWait::Head => ("request head", timeouts.head),
                _ => ("request body", timeouts.body),
            };
            let message = format!(
                "the {what} did not arrive within {}",
                crate::config::duration::show(limit)
            );
            log::debug!("{name}: {peer}: {message}");
            app.count_timeout(wait);
            // A request begun and abandoned is one answered (408), counted and logged like any other;
            // a connection that sent nothing at all is not a request.
            let begun = !c.inbuf.is_empty() || !c.reader.is_idle();
            if begun && app.keeps_records() {
                let record = super::Record::refused(cx.now, c.out.taken());
                c.record = Some(Box::new(record));
            }
            // The request is abandoned: no byte of it is parsed any more, and the connection closes.
            c.inbuf = Vec::new();
            c.reply_error(
                408,
                "request_timeout",
                &message,
                &[],
                super::AfterReply::Close,
            );
            super::drive(app, cx, id);
        }
        ClientWait::KeepAlive => {
            log::debug!("{name}: {peer}: idle keep-alive connection closed");
            cx.close(id);
        }
        ClientWait::Write => {
            let since = c.progress_at.unwrap_or(now);
            if now.saturating_duration_since(since) < timeouts.write {
                // The client took bytes meanwhile: wait one period from its last progress.
                let key = cx
                    .timers
                    .insert(since + timeouts.write, id, A::client_timer(wait));
                c.deadline = Some((wait, key));
                return;
            }
            app.count_timeout(wait);
            super::gone::<A>(
                cx,
                id,
                &format!(
                    "took no byte of its response for {}",
                    crate::config::duration::show(timeouts.write)
                ),
            );
        }
        ClientWait::Linger => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_follows_the_state() {
        let f = WaitFacts {
            awaiting_request: true,
            lingering: false,
            in_body: false,
            head_begun: false,
            served: false,
            output_pending: false,
        };
        assert_eq!(wanted(f), Some(ClientWait::Head), "a new connection");
        let f = WaitFacts { served: true, ..f };
        assert_eq!(wanted(f), Some(ClientWait::KeepAlive));
        let f = WaitFacts {
            head_begun: true,
            ..f
        };
        assert_eq!(wanted(f), Some(ClientWait::Head));
        let f = WaitFacts { in_body: true, ..f };
        assert_eq!(wanted(f), Some(ClientWait::Body));
        let serving = WaitFacts {
            awaiting_request: false,
            in_body: false,
            ..f
        };
        assert_eq!(wanted(serving), None, "a stream the client keeps up with");
        let behind = WaitFacts {
            output_pending: true,
            ..serving
        };
        assert_eq!(wanted(behind), Some(ClientWait::Write));
        let lingering = WaitFacts {
            lingering: true,
            ..behind
        };
        assert_eq!(wanted(lingering), None, "the linger deadline rules");
    }
}
