//! The relay: what ties a client to an upstream.
//!
//! ```text
//! client request ─▶ start_relay ─▶ pool.take() or connect ─▶ [upstream Sending ─▶ AwaitingHead ─▶ Body]
//!                                                                                        │ read ≤ room
//!                            client ◀── writev(size line, payload, CRLF) ◀── body decoder ◀┘
//! ```
//!
//! [`Worker::pump`] moves an upstream connection forward as far as it can: write the request, read the head,
//! then read body bytes into the worker's scratch buffer, decode them (chunked, Content-Length or
//! close-delimited) and pass the payload to the client as one chunk per read. It reads only while the
//! client's unsent bytes are below the stream cap (`--stream-buffer-bytes`), and at most the room that is
//! left, so a slow client costs about the cap: when the cap is reached the upstream is simply not read,
//! TCP flow control pushes back on the model server, and [`Worker::drive_client`] calls `pump` again once
//! the client's queue has drained completely (so that new payload again goes out by `writev` straight
//! from the read buffer instead of being copied behind a backlog). The cap is exceeded by a little: chunk
//! framing, and the body bytes that arrive in the same read as the response head (at most one read, once).
//!
//! A stream ends in one of three ways, each in one function: the body ends ([`Worker::finish_stream`]: last
//! chunk to the client, connection to the pool if the body ended exactly at the end of what was read); the
//! upstream fails ([`Worker::upstream_failed`]: a 502 if the client has no head yet, otherwise an SSE error
//! event and no last chunk, so a truncated stream can never pass for a complete one); or the client leaves
//! (the reap phase closes the upstream: never pooled mid-body).

pub mod api;
pub mod downstream;
mod forward;
pub mod pool;
pub mod providers;
pub mod routes;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::conn::client::{ClientState, Source, StreamFraming};
use crate::conn::upstream::{SendProgress, UpstreamState};
use crate::conn::{Conn, ReadOutcome, UpstreamConn, read_once};
use crate::http::body::BodyDecoder;
use crate::http::chunked::ChunkError;
use crate::http::response::parse_response_head;
use crate::reactor::timers::TimerKind;
use crate::reactor::token::ConnId;
use crate::reactor::{Service, TURN_BUDGET, Worker};
use forward::{Relayed, relay_input, sse_error_event};
use pool::Pool;
use providers::{Origin, Provider, ProviderKey};

/// Where a relay worker sends generations.
pub struct RelayService {
    pub provider: Provider,
    pub origin: Origin,
    /// The origin's address, resolved once at start.
    pub addr: SocketAddr,
    pub key: Option<Arc<ProviderKey>>,
    pub default_model: String,
    pub pool: Pool,
    /// How long a pooled connection may idle before we close it (`--upstream-idle-timeout`).
    pub idle_timeout: Duration,
}

/// Why an upstream exchange failed.
#[derive(Debug)]
enum Failure {
    Io(io::Error),
    ClosedBeforeHead,
    BadHead(String),
    Status(u16),
    BadBody(ChunkError),
    Truncated,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Io(e) => write!(f, "upstream connection failed: {e}"),
            Failure::ClosedBeforeHead => {
                f.write_str("upstream closed the connection before answering")
            }
            Failure::BadHead(e) => write!(f, "upstream sent an invalid response head: {e}"),
            Failure::Status(s) => write!(f, "upstream answered with status {s}"),
            Failure::BadBody(e) => write!(f, "upstream sent an invalid body: {e}"),
            Failure::Truncated => {
                f.write_str("upstream closed the connection before the body ended")
            }
        }
    }
}

impl Worker {
    /// Starts relaying a generation for `client`: validate, build the upstream request, get a connection.
    pub(crate) fn start_relay(&mut self, client: ConnId, body: &[u8], framing: StreamFraming) {
        let then = framing.after();
        let Service::Relay(relay) = &self.service else {
            return;
        };
        let request = api::parse_generate(body).and_then(|g| {
            providers::build_request(
                relay.provider,
                &relay.origin,
                relay.key.as_deref(),
                &g,
                &relay.default_model,
            )
        });
        let request = match request {
            Ok(r) => r,
            Err(e) => return self.reply_error(client, e.status, e.code, &e.message, &[], then),
        };
        let up = match self.upstream_for(client, request) {
            Ok(up) => up,
            Err(e) => {
                let msg = format!("cannot connect to the upstream: {e}");
                return self.reply_error(client, 502, "upstream_unavailable", &msg, &[], then);
            }
        };
        if let Some(Conn::Client(c)) = self.conns.get_mut(client) {
            // No head yet: it goes out when the upstream answers 2xx, so a failure before that is a clean 502.
            c.state = ClientState::Streaming {
                source: Source::Upstream(up),
                framing,
            };
        }
        self.pump(up);
    }

    /// An idle pooled connection, or a new one.
    fn upstream_for(&mut self, client: ConnId, request: Vec<u8>) -> io::Result<ConnId> {
        let Service::Relay(relay) = &mut self.service else {
            return Err(io::ErrorKind::Unsupported.into());
        };
        while let Some(up) = relay.pool.take() {
            if let Some(Conn::Upstream(u)) = self.conns.get_mut(up) {
                if let UpstreamState::Idle { expires } = u.state {
                    self.timers.cancel(expires);
                }
                u.state = UpstreamState::Sending {
                    client,
                    request,
                    written: 0,
                };
                u.reused = true;
                return Ok(up);
            }
        }
        let addr = relay.addr;
        self.connect_upstream(addr, client, request)
    }

    fn connect_upstream(
        &mut self,
        addr: SocketAddr,
        client: ConnId,
        request: Vec<u8>,
    ) -> io::Result<ConnId> {
        let conn = UpstreamConn::connect(addr, client, request)?;
        let up = self.conns.insert_with(|_| Conn::Upstream(conn));
        if let Err(e) = self.register(up) {
            self.close(up);
            return Err(e);
        }
        Ok(up)
    }

    /// An upstream socket's readiness changed.
    pub(crate) fn on_upstream_ready(&mut self, up: ConnId) {
        let client = match self.conns.get(up) {
            Some(Conn::Upstream(u)) => u.state.client(),
            _ => None,
        };
        self.pump(up);
        // If the stream ended (or failed, or moved to a retry connection), the client has work to do.
        if let Some(client) = client
            && !self.is_streaming_from(client, up)
        {
            self.drive_client(client);
        }
    }

    fn is_streaming_from(&self, client: ConnId, up: ConnId) -> bool {
        matches!(
            self.conns.get(client),
            Some(Conn::Client(c)) if matches!(
                c.state,
                ClientState::Streaming { source: Source::Upstream(u), .. } if u == up
            )
        )
    }

    /// Moves an upstream connection forward until it has to wait (for the socket, or for the client to
    /// drain), or until it has had its turn ([`TURN_BUDGET`] steps) and yields to the other connections.
    pub(crate) fn pump(&mut self, up: ConnId) {
        for _ in 0..TURN_BUDGET {
            let Some(Conn::Upstream(u)) = self.conns.get(up) else {
                return;
            };
            // The link is recorded on both sides; the client's side is the authority. An exchange whose
            // client no longer streams from it (gone, or moved to a retry connection) has no one to serve.
            if let Some(client) = u.state.client()
                && !self.is_streaming_from(client, up)
            {
                return self.close(up);
            }
            let Some(Conn::Upstream(u)) = self.conns.get_mut(up) else {
                return;
            };
            let more = match &mut u.state {
                UpstreamState::Sending { .. } => match u.write_request() {
                    Ok(SendProgress::Blocked) => false,
                    Ok(SendProgress::Done) => {
                        u.request_sent();
                        true
                    }
                    Err(e) => {
                        self.upstream_failed(up, Failure::Io(e));
                        false
                    }
                },
                UpstreamState::AwaitingHead { .. } => self.read_head(up),
                UpstreamState::Body { .. } => self.read_body(up),
                UpstreamState::Idle { .. } => self.check_idle(up),
            };
            if !more {
                return;
            }
        }
        self.defer(up);
    }

    /// Reads and parses the response head. Returns true to keep pumping.
    fn read_head(&mut self, up: ConnId) -> bool {
        let max_head = self.settings.limits.max_head_bytes;
        let Some(Conn::Upstream(u)) = self.conns.get_mut(up) else {
            return false;
        };
        let UpstreamState::AwaitingHead { client, head, .. } = &mut u.state else {
            return false;
        };
        if !u.ready.readable {
            return false;
        }
        let client = *client;
        match read_once(&mut u.sock, &mut u.ready, &mut self.scratch) {
            ReadOutcome::Data(n) => head.extend_from_slice(&self.scratch[..n]),
            ReadOutcome::Drained => return false,
            ReadOutcome::Eof => {
                self.upstream_failed(up, Failure::ClosedBeforeHead);
                return false;
            }
            ReadOutcome::Failed(e) => {
                self.upstream_failed(up, Failure::Io(e));
                return false;
            }
        }
        let (resp, consumed) = match parse_response_head(head, max_head) {
            Ok(None) => return true,
            Ok(Some(parsed)) => parsed,
            Err(e) => {
                self.upstream_failed(up, Failure::BadHead(e.to_string()));
                return false;
            }
        };
        if !(200..300).contains(&resp.status) {
            self.upstream_failed(up, Failure::Status(resp.status));
            return false;
        }
        let mut rest = head.split_off(consumed);
        u.state = UpstreamState::Body {
            client,
            decoder: BodyDecoder::new(resp.framing),
            keep_alive: resp.keep_alive,
        };
        self.send_stream_head(client);
        // Body bytes that came with the head.
        let relayed = relay_input(&mut self.conns, &mut self.payload, up, client, &mut rest);
        self.after_relay(up, client, relayed)
    }

    /// Reads body bytes, at most the room the client has left, and relays them. Returns true to keep pumping.
    fn read_body(&mut self, up: ConnId) -> bool {
        let cap = self.settings.stream_buffer;
        let Some(Conn::Upstream(u)) = self.conns.get_mut(up) else {
            return false;
        };
        let Some(client) = u.state.client() else {
            return false;
        };
        let Some((Conn::Upstream(u), Conn::Client(c))) = self.conns.pair_mut(up, client) else {
            // The client is closing; its reap closes this connection too.
            return false;
        };
        let room = cap.saturating_sub(c.out.len()).min(self.scratch.len());
        if room == 0 || !u.ready.readable {
            // Paused by backpressure (drive_client resumes us), or nothing to read (an event will come).
            return false;
        }
        let UpstreamState::Body { decoder, .. } = &mut u.state else {
            return false;
        };
        match read_once(&mut u.sock, &mut u.ready, &mut self.scratch[..room]) {
            ReadOutcome::Data(n) => {
                let input = &mut self.scratch[..n];
                let relayed = relay_input(&mut self.conns, &mut self.payload, up, client, input);
                self.after_relay(up, client, relayed)
            }
            ReadOutcome::Drained => false,
            ReadOutcome::Eof => {
                match decoder.on_eof() {
                    Ok(()) => self.finish_stream(up, client, false),
                    Err(_) => self.upstream_failed(up, Failure::Truncated),
                }
                false
            }
            ReadOutcome::Failed(e) => {
                self.upstream_failed(up, Failure::Io(e));
                false
            }
        }
    }

    /// Acts on what relaying one read came to. Returns true to keep pumping.
    fn after_relay(&mut self, up: ConnId, client: ConnId, relayed: Relayed) -> bool {
        match relayed {
            Relayed::More => true,
            Relayed::Finished { reusable } => {
                self.finish_stream(up, client, reusable);
                false
            }
            Relayed::BadBody(e) => {
                self.upstream_failed(up, Failure::BadBody(e));
                false
            }
            Relayed::ClientFailed(e) => {
                self.client_gone(client, &e.to_string());
                false
            }
            // The client is closing; its reap closes this connection too.
            Relayed::NoClient => false,
        }
    }

    /// Queues the streamed response's head, once the upstream said 2xx.
    fn send_stream_head(&mut self, client: ConnId) {
        if let Some(Conn::Client(c)) = self.conns.get_mut(client)
            && let ClientState::Streaming { framing, .. } = c.state
        {
            // Flushed at once: the first token may be seconds away, and the client should know we're live.
            c.out.push(&downstream::stream_head(framing));
            if let Err(e) = c.flush() {
                self.client_gone(client, &e.to_string());
            }
        }
    }

    /// The body ended properly: last chunk to the client, the connection to the pool or closed.
    fn finish_stream(&mut self, up: ConnId, client: ConnId, reusable: bool) {
        if let Some(Conn::Client(c)) = self.conns.get_mut(client) {
            c.end_stream();
        }
        log::debug!(
            "{}: stream for client {client:?} complete; upstream {up:?} {}",
            self.name,
            if reusable { "reusable" } else { "closing" }
        );
        let expires_at = self.now;
        let reusable = reusable && self.nothing_unread(up);
        let Service::Relay(relay) = &mut self.service else {
            return;
        };
        if reusable && relay.pool.put(up) {
            let expires =
                self.timers
                    .insert(expires_at + relay.idle_timeout, up, TimerKind::UpstreamIdle);
            if let Some(Conn::Upstream(u)) = self.conns.get_mut(up) {
                u.state = UpstreamState::Idle { expires };
            }
        } else {
            self.close(up);
        }
    }

    /// True when the socket holds nothing past the body we just finished. The read that ended the body may
    /// have been cut short by the stream cap, so the edge that announced further bytes (or the server's FIN)
    /// may be spent already; one more read settles it. A connection with anything unread must not be pooled:
    /// the next exchange would take those bytes for its response.
    fn nothing_unread(&mut self, up: ConnId) -> bool {
        let Some(Conn::Upstream(u)) = self.conns.get_mut(up) else {
            return false;
        };
        let mut probe = [0u8; 1];
        !u.ready.readable
            || matches!(
                read_once(&mut u.sock, &mut u.ready, &mut probe),
                ReadOutcome::Drained
            )
    }

    /// The exchange on `up` failed: close it and tell its client, or retry once on a new connection when a
    /// reused one failed before the first response byte (the server closed it while it idled in our pool).
    fn upstream_failed(&mut self, up: ConnId, failure: Failure) {
        let Some(Conn::Upstream(u)) = self.conns.get_mut(up) else {
            return;
        };
        let client = u.state.client();
        let before_head = matches!(
            u.state,
            UpstreamState::Sending { .. } | UpstreamState::AwaitingHead { .. }
        );
        let retry = match &mut u.state {
            UpstreamState::Sending { request, .. } if u.reused => Some(std::mem::take(request)),
            UpstreamState::AwaitingHead { head, retry, .. } if head.is_empty() => retry.take(),
            _ => None,
        };
        self.close(up);
        let Some(client) = client else {
            return;
        };
        if let Some(request) = retry
            && self.is_streaming_from(client, up)
            && let Service::Relay(relay) = &self.service
            && !matches!(failure, Failure::Status(_))
        {
            log::debug!(
                "{}: reused upstream connection failed ({failure}); retrying on a new one",
                self.name
            );
            let addr = relay.addr;
            if let Ok(new) = self.connect_upstream(addr, client, request) {
                if let Some(Conn::Client(c)) = self.conns.get_mut(client)
                    && let ClientState::Streaming { source, .. } = &mut c.state
                {
                    *source = Source::Upstream(new);
                }
                return self.pump(new);
            }
        }
        log::warn!("{}: {failure}", self.name);
        let Some(Conn::Client(c)) = self.conns.get_mut(client) else {
            return;
        };
        let ClientState::Streaming { framing, .. } = c.state else {
            return;
        };
        if before_head {
            self.reply_error(
                client,
                502,
                "upstream_failed",
                &failure.to_string(),
                &[],
                framing.after(),
            );
        } else {
            // Mid-stream: say so in-band, then end without the last chunk, so the client sees a failed
            // transfer rather than a short but seemingly complete stream.
            let event = sse_error_event(&failure);
            if c.send_payload(&event).is_err() {
                return self.close(client);
            }
            c.fail_stream();
        }
    }

    /// An idle pooled connection became readable: the server closed it (or sent bytes nobody asked for).
    /// Either way it can no longer be used.
    fn check_idle(&mut self, up: ConnId) -> bool {
        let Some(Conn::Upstream(u)) = self.conns.get_mut(up) else {
            return false;
        };
        if !u.ready.readable {
            return false;
        }
        match read_once(&mut u.sock, &mut u.ready, &mut self.scratch) {
            ReadOutcome::Drained => {}
            ReadOutcome::Data(_) | ReadOutcome::Eof | ReadOutcome::Failed(_) => self.close(up),
        }
        false
    }

    pub(crate) fn on_upstream_idle_timeout(&mut self, up: ConnId) {
        if let Some(Conn::Upstream(u)) = self.conns.get(up)
            && matches!(u.state, UpstreamState::Idle { .. })
        {
            self.close(up);
        }
    }

    /// Reap-phase clean-up of an upstream connection.
    pub(crate) fn on_upstream_freed(&mut self, id: ConnId, u: UpstreamConn) {
        if let UpstreamState::Idle { expires } = u.state {
            self.timers.cancel(expires);
            if let Service::Relay(relay) = &mut self.service {
                relay.pool.remove(id);
            }
        }
    }
}
