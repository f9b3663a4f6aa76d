//! The upstream side of a relay worker: where generations go, the keep-alive pool, and the pump that moves
//! each exchange's upstream connection forward.
//!
//! [`Upstreams::pump`] moves one exchange as far as it can: write the request, read the head, then read body
//! bytes into the worker's scratch buffer and pass them on (`forward.rs`). It reads only while the client's
//! unsent bytes are below the stream cap (`--stream-buffer-bytes`), and at most the room that is left, so a
//! slow client costs about the cap: when the cap is reached the upstream is simply not read, TCP flow
//! control pushes back on the model server, and the client driver calls `pump` again once the client's
//! queue has drained completely (so that new payload again goes out by `writev` straight from the read
//! buffer instead of being copied behind a backlog). The cap is exceeded by a little: chunk framing, the
//! stream head, and the body bytes that arrive in the same read as the response head (one read, once).
//!
//! An exchange ends in one of three ways, each in one function: the body ends ([`Upstreams::finish`]: the
//! last chunk goes out with the last payload, and the connection goes to the pool if nothing is left
//! unread); the upstream fails ([`Upstreams::fail`], which does what [`super::exchange::on_failure`]
//! decides: retry, 502, or an in-band error and no last chunk); or the client leaves (the reap drops the
//! client, its exchange and the upstream with it: never pooled mid-body).

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use rustls::pki_types::ServerName;

use super::exchange::{Decision, Exchange, Failure, Phase};
use super::forward::{self, Outcome, sse_error_event};
use super::pool::Pool;
use super::{Entry, Idle, RelayStats, RelayTimer, UPSTREAM, UpstreamTarget, api, providers};
use crate::conn::client::{
    AfterReply, ClientConn, ClientState, StreamFraming, send_body, stream_head,
};
use crate::conn::tls::{self, Handshake, Tls};
use crate::conn::transport::{IdleCheck, ReadOutcome, Transport};
use crate::conn::upstream::{HeadProgress, SendProgress, UpstreamConn, UpstreamState};
use crate::reactor::{ConnId, Cx, TURN_BUDGET, Tag};

type RelayCx = Cx<super::Relay>;

/// Whether a step of the pump can be followed by another now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    More,
    Wait,
}

/// A worker's upstream side.
pub struct Upstreams {
    target: Arc<UpstreamTarget>,
    pool: Pool,
    /// How long a pooled connection may idle (`--upstream-idle-timeout`).
    idle_timeout: Duration,
    /// Most bytes a client may have queued before its upstream is no longer read (`--stream-buffer-bytes`).
    cap: usize,
    /// Longest response head accepted.
    max_head: usize,
    /// Payload ranges found by the body decoder in the last read; reused to avoid an allocation per read.
    ranges: Vec<Range<usize>>,
    stats: Arc<RelayStats>,
    /// For an `https` upstream: this worker's TLS client configuration (with its own session cache) and
    /// the name the upstream's certificate must carry.
    tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
}

impl Upstreams {
    pub fn new(
        target: Arc<UpstreamTarget>,
        pool: Pool,
        idle_timeout: Duration,
        cap: usize,
        max_head: usize,
        stats: Arc<RelayStats>,
    ) -> Result<Self, String> {
        let tls = match &target.roots {
            Some(roots) if target.origin.tls => Some((
                tls::client_config(roots.clone())?,
                tls::server_name(&target.origin.host)?,
            )),
            _ => None,
        };
        Ok(Upstreams {
            target,
            pool,
            idle_timeout,
            cap,
            max_head,
            ranges: Vec::new(),
            stats,
            tls,
        })
    }

    /// Idle connections in the pool.
    pub fn pooled(&self) -> usize {
        self.pool.len()
    }

    /// An idle connection was closed (expired, or the server closed it): it leaves the pool.
    pub fn forget(&mut self, id: ConnId) {
        self.pool.remove(id);
    }

    /// Starts relaying a generation for client `id`: validate, build the upstream request, get a
    /// connection. The client gets no head yet: it goes out when the upstream answers 2xx, so that a
    /// failure before that is still a clean 502.
    pub fn start(&mut self, cx: &mut RelayCx, id: ConnId, body: &[u8], framing: StreamFraming) {
        let then = framing.after();
        let t = &self.target;
        let request = api::parse_generate(body).and_then(|g| {
            providers::build_request(t.provider, &t.origin, t.key.as_ref(), &g, &t.default_model)
        });
        let request = match request {
            Ok(request) => request,
            Err(e) => {
                if let Some(Entry::Client(c)) = cx.conns.get_mut(id) {
                    c.reply_error(e.status, e.code, &e.message, &[], then);
                }
                return;
            }
        };
        let opened = self.open(cx, id);
        let Some(Entry::Client(c)) = cx.conns.get_mut(id) else {
            return;
        };
        match opened {
            Ok(upstream) => {
                let x = Exchange::new(request, framing, upstream, cx.now);
                c.state = ClientState::Serving(Box::new(x));
            }
            Err(e) => {
                let msg = format!("cannot connect to the upstream: {e}");
                c.reply_error(502, "upstream_unavailable", &msg, &[], then);
                let peer = c.peer;
                return log::warn!("{}: {peer} {msg}", cx.name());
            }
        }
        self.pump(cx, id);
    }

    /// An idle pooled connection, or a new one; registered as the [`UPSTREAM`] socket of client `id`.
    fn open(&mut self, cx: &mut RelayCx, id: ConnId) -> std::io::Result<UpstreamConn> {
        while let Some(idle_id) = self.pool.take() {
            if !matches!(cx.conns.get(idle_id), Some(Entry::Idle(_))) {
                continue;
            }
            let Some(Entry::Idle(idle)) = cx.conns.take(idle_id) else {
                continue;
            };
            cx.timers.cancel(idle.expires);
            let mut io = idle.io;
            // Closed or spoken to while idle, with its edge not dispatched yet: drop it (closing it).
            if io.check_idle() != IdleCheck::Quiet
                || io.reregister(&cx.registry, id, UPSTREAM).is_err()
            {
                continue;
            }
            RelayStats::count(&self.stats.reuses);
            return Ok(UpstreamConn::reuse(io));
        }
        self.connect_for(cx, id)
    }

    /// Moves the upstream side of client `id` forward until it has to wait (for its socket, or for the
    /// client to drain), or until it has had its turn ([`TURN_BUDGET`] steps) and yields.
    pub fn pump(&mut self, cx: &mut RelayCx, id: ConnId) {
        for _ in 0..TURN_BUDGET {
            match self.step(cx, id) {
                Outcome::Continue => {}
                Outcome::Wait => return,
                Outcome::Finished { reusable } => return self.finish(cx, id, reusable),
                Outcome::Failed(failure) => {
                    if self.fail(cx, id, failure) == Flow::Wait {
                        return;
                    }
                }
                Outcome::ClientGone(e) => {
                    return crate::conn::client::gone::<super::Relay>(cx, id, &e.to_string());
                }
            }
        }
        cx.defer(id);
    }

    /// One step: write the request, or read once (head or body) and pass on what came.
    fn step(&mut self, cx: &mut RelayCx, id: ConnId) -> Outcome {
        let Some(Entry::Client(c)) = cx.conns.get_mut(id) else {
            return Outcome::Wait;
        };
        let ClientConn { io, out, state, .. } = &mut **c;
        let ClientState::Serving(x) = state else {
            return Outcome::Wait;
        };
        // Records a TLS session could not write earlier go first.
        if let Err(e) = x.upstream.io.flush() {
            return Outcome::Failed(Failure::Io(e));
        }
        let mut client = Client { io, out };
        match x.upstream.state {
            UpstreamState::Handshaking => match x.upstream.handshake() {
                Ok(Handshake::Done) => {
                    let resumed = x.upstream.io.tls().and_then(|t| t.resumed());
                    let counter = if resumed == Some(true) {
                        &self.stats.tls_resumed
                    } else {
                        &self.stats.tls_full
                    };
                    RelayStats::count(counter);
                    Outcome::Continue
                }
                Ok(Handshake::Blocked) => Outcome::Wait,
                // A refused connect surfaces here too, as the ClientHello's write error.
                Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                    Outcome::Failed(Failure::Tls(e))
                }
                Err(e) => Outcome::Failed(Failure::Io(e)),
            },
            UpstreamState::Sending { .. } => send_request(x),
            UpstreamState::AwaitingHead { .. } => read_head(
                x,
                &mut client,
                &mut cx.scratch,
                self.max_head,
                &mut self.ranges,
            ),
            UpstreamState::Body { .. } => {
                read_body(x, &mut client, &mut cx.scratch, self.cap, &mut self.ranges)
            }
        }
    }

    /// The body ended (its last chunk is queued or sent): the exchange is over, and its connection goes to
    /// the pool if it may carry another exchange and nothing is left unread, or is closed.
    fn finish(&mut self, cx: &mut RelayCx, id: ConnId, reusable: bool) {
        let Some(Entry::Client(c)) = cx.conns.get_mut(id) else {
            return;
        };
        let then = match &c.state {
            ClientState::Serving(x) => x.framing.after(),
            _ => return,
        };
        let peer = c.peer;
        let Some(mut x) = c.finish(then) else {
            return;
        };
        log::debug!(
            "{}: {peer} stream complete in {:.1} ms",
            cx.name(),
            cx.now.saturating_duration_since(x.started).as_secs_f64() * 1e3
        );
        x.cancel_deadlines(&mut cx.timers);
        RelayStats::count(&self.stats.completed);
        let mut io = x.upstream.into_transport();
        // The read that ended the body may have been cut short by the stream cap, so bytes may follow it.
        if reusable && io.check_idle() == IdleCheck::Quiet {
            self.park(cx, io);
        }
    }

    /// Puts an idle connection in the pool (or closes it, by dropping it, if the pool is full).
    fn park(&mut self, cx: &mut RelayCx, io: Transport) {
        if self.pool.is_full() {
            return;
        }
        let at = cx.now + self.idle_timeout;
        let timers = &mut cx.timers;
        let Ok(idle_id) = cx.conns.insert_with(|idle_id| {
            let expires = timers.insert(at, idle_id, RelayTimer::IdleExpired);
            Entry::Idle(Idle { io, expires })
        }) else {
            return;
        };
        let Some(Entry::Idle(idle)) = cx.conns.get_mut(idle_id) else {
            return;
        };
        if idle.io.reregister(&cx.registry, idle_id, Tag::MAIN).is_ok() {
            self.pool.put(idle_id);
        } else {
            cx.close(idle_id);
        }
    }

    /// The exchange of client `id` failed: do what the policy decides. Returns `More` when a retry is under
    /// way (the pump goes on with it).
    fn fail(&mut self, cx: &mut RelayCx, id: ConnId, failure: Failure) -> Flow {
        let decision = match cx.conns.get(id) {
            Some(Entry::Client(c)) => match &c.state {
                ClientState::Serving(x) => x.on_failure(&failure),
                _ => return Flow::Wait,
            },
            _ => return Flow::Wait,
        };
        let (mut decision, mut failure) = (decision, failure);
        if decision == Decision::Retry {
            log::debug!(
                "{}: reused upstream connection failed ({failure}); retrying on a new one",
                cx.name()
            );
            match self.connect_for(cx, id) {
                Ok(upstream) => {
                    RelayStats::count(&self.stats.retries);
                    if let Some(Entry::Client(c)) = cx.conns.get_mut(id)
                        && let ClientState::Serving(x) = &mut c.state
                    {
                        x.retry_on(upstream);
                    }
                    return Flow::More;
                }
                // No connection for the retry: the client gets a 502 with that reason.
                Err(e) => (decision, failure) = (Decision::BadGateway, Failure::Io(e)),
            }
        }
        RelayStats::count(&self.stats.failed);
        let name = cx.name().to_string();
        let Some(Entry::Client(c)) = cx.conns.get_mut(id) else {
            return Flow::Wait;
        };
        let ClientState::Serving(x) = &c.state else {
            return Flow::Wait;
        };
        let framing = x.framing;
        let peer = c.peer;
        log::warn!("{name}: {peer}: {failure}");
        match decision {
            Decision::FailStream => {
                // Mid-stream: say so in-band, then end without the last chunk, so the client sees a failed
                // transfer rather than a short but seemingly complete stream.
                let event = sse_error_event(&failure);
                let sent = send_body(&mut c.out, &mut c.io, framing, &event, false);
                if let Some(mut x) = c.finish(AfterReply::Close) {
                    x.cancel_deadlines(&mut cx.timers);
                }
                if sent.is_err() {
                    cx.close(id);
                }
            }
            // A retry that got its connection returned above; one that did not is a 502 by now.
            Decision::BadGateway | Decision::Retry => {
                if let Some(mut x) = c.finish(framing.after()) {
                    x.cancel_deadlines(&mut cx.timers);
                }
                let message = failure.to_string();
                c.reply_error(502, failure.code(), &message, &[], framing.after());
            }
        }
        Flow::Wait
    }

    /// A new connection (never a pooled one), registered as the [`UPSTREAM`] socket of client `id`.
    fn connect_for(&mut self, cx: &mut RelayCx, id: ConnId) -> std::io::Result<UpstreamConn> {
        RelayStats::count(&self.stats.connects);
        let tls = match &self.tls {
            Some((config, name)) => Some(Tls::client(config.clone(), name.clone())?),
            None => None,
        };
        let mut upstream = UpstreamConn::connect(self.target.addr, tls)?;
        upstream.io.register(&cx.registry, id, UPSTREAM)?;
        Ok(upstream)
    }
}

/// The client's two write-side parts, borrowed while its exchange is borrowed too.
struct Client<'a> {
    io: &'a mut Transport,
    out: &'a mut crate::conn::OutBuf,
}

/// `Sending`: write the request (it stays in the exchange while a retry is possible).
fn send_request(x: &mut Exchange) -> Outcome {
    let Phase::AwaitingUpstream { request } = &x.phase else {
        return Outcome::Wait;
    };
    match x.upstream.write_request(request) {
        Ok(SendProgress::Done) => Outcome::Continue,
        Ok(SendProgress::Blocked) => Outcome::Wait,
        Err(e) => Outcome::Failed(Failure::Io(e)),
    }
}

/// `AwaitingHead`: read, parse, and on a 2xx head start the client's stream.
fn read_head(
    x: &mut Exchange,
    client: &mut Client<'_>,
    scratch: &mut [u8],
    max_head: usize,
    ranges: &mut Vec<Range<usize>>,
) -> Outcome {
    if !x.upstream.io.readable() {
        return Outcome::Wait;
    }
    let n = match x.upstream.io.read(scratch) {
        ReadOutcome::Data(n) => n,
        ReadOutcome::Drained => return Outcome::Wait,
        ReadOutcome::Eof => return Outcome::Failed(Failure::ClosedBeforeHead),
        ReadOutcome::Failed(e) => return Outcome::Failed(Failure::Io(e)),
    };
    let (head, mut rest) = match x.upstream.on_head_bytes(&scratch[..n], max_head) {
        Ok(HeadProgress::NeedMore) => return Outcome::Continue,
        Ok(HeadProgress::Complete { head, rest }) => (head, rest),
        Err(e) => return Outcome::Failed(Failure::BadHead(e)),
    };
    if !(200..300).contains(&head.status) {
        return Outcome::Failed(Failure::Status(head.status));
    }
    x.start_streaming();
    // Queued, not written: it leaves with the first payload in one `writev` if some came with the head;
    // otherwise at once, since the first token may be seconds away and the client should know the stream
    // is live.
    client.out.push(&stream_head(x.framing));
    let UpstreamState::Body {
        decoder,
        keep_alive,
    } = &mut x.upstream.state
    else {
        return Outcome::Wait;
    };
    if rest.is_empty() {
        return match client.out.flush(client.io) {
            Ok(_) => Outcome::Continue,
            Err(e) => Outcome::ClientGone(e),
        };
    }
    forward::relay(
        decoder,
        *keep_alive,
        &mut rest,
        ranges,
        client.out,
        client.io,
        x.framing,
    )
}

/// `Body`: read at most the room the client has left, and relay it.
fn read_body(
    x: &mut Exchange,
    client: &mut Client<'_>,
    scratch: &mut [u8],
    cap: usize,
    ranges: &mut Vec<Range<usize>>,
) -> Outcome {
    let room = cap.saturating_sub(client.out.len()).min(scratch.len());
    let UpstreamConn { io, state, .. } = &mut x.upstream;
    let UpstreamState::Body {
        decoder,
        keep_alive,
    } = state
    else {
        return Outcome::Wait;
    };
    if room == 0 || !io.readable() {
        // Paused by backpressure (the client driver resumes us), or nothing to read (an event will come).
        return Outcome::Wait;
    }
    match io.read(&mut scratch[..room]) {
        ReadOutcome::Data(n) => {
            let input = &mut scratch[..n];
            forward::relay(
                decoder,
                *keep_alive,
                input,
                ranges,
                client.out,
                client.io,
                x.framing,
            )
        }
        ReadOutcome::Drained => Outcome::Wait,
        ReadOutcome::Eof => match decoder.on_eof() {
            // A close-delimited body ends here, and the client's body with it.
            Ok(()) => match send_body(client.out, client.io, x.framing, &[], true) {
                Ok(()) => Outcome::Finished { reusable: false },
                Err(e) => Outcome::ClientGone(e),
            },
            Err(_) => Outcome::Failed(Failure::Truncated),
        },
        ReadOutcome::Failed(e) => Outcome::Failed(Failure::Io(e)),
    }
}
