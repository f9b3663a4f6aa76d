//! The client side of every exchange: read a request, route it, answer it, keep the connection alive.
//!
//! [`Worker::drive_client`] is the one entry point, called whenever something may have changed for a client:
//! its socket became readable or writable, its upstream produced bytes, a mock token fell due. It is a loop
//! that asks the connection's state what to do next ([`Step`]), does it, and stops when the answer is "wait".
//! Everything a readiness change can unblock is tried in a fixed order: write what is queued; if the queue
//! drained, finish the reply or resume the paused stream; then read.
//!
//! Reading depends on the state. `AwaitingRequest` parses. While a response is in progress the connection
//! still reads (up to one head's worth of pipelined bytes, kept for later), and the kernel's hang-up report
//! (`Readiness::read_closed`) covers the case where it has stopped reading, so a client that hangs up is
//! noticed at once and its upstream closed at once, rather than at the next token. A client that shuts its
//! side while its stream runs is treated as gone, as nginx does by default; after a complete reply, what it
//! sent before closing is still answered.

use super::routes::{self, Miss, Route, Table};
use crate::conn::client::{AfterReply, ClientConn, ClientState, Source, StreamFraming};
use crate::conn::{Conn, ReadOutcome, read_once};
use crate::http::request::{HttpError, Progress, Request};
use crate::http::response::{error_response, write_head};
use crate::reactor::timers::TimerKind;
use crate::reactor::token::ConnId;
use crate::reactor::{Service, TURN_BUDGET, Worker};

/// How long a client we are closing after its last reply (an error, `Connection: close`, HTTP/1.0) may keep
/// sending before we stop listening.
/// Closing a socket with unread input makes the kernel send a reset, which can destroy the reply before the
/// client reads it; so we half-close, read and discard for a moment, then close (a "lingering close").
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Steps of [`Worker::drive_client`] per turn: a few per request (read, parse, answer, flush), so a turn
/// covers a handful of pipelined requests before the client yields.
const CLIENT_STEPS: usize = 4 * TURN_BUDGET;

/// What a client connection should do next.
enum Step {
    /// The state changed; look again.
    Again,
    /// Nothing to do until the next event or timer.
    Wait,
    /// Read request bytes into the input buffer and parse them.
    ReadRequest,
    /// A request is complete.
    Request(Request),
    /// The request could not be parsed.
    BadRequest(HttpError),
    /// The response is in progress: read only to notice the client leaving.
    Watch,
    /// The reply is out and the connection must close: half-close and linger.
    Linger,
    /// Close now: the client has closed its side and nothing it sent is left to answer.
    Close,
    /// The client closed its side while its stream was running: it left.
    Left,
    /// Lingering: read and discard until the client closes.
    Discard,
    /// The client drained its queue: let the paused stream produce more.
    ResumeUpstream(ConnId),
    ResumeMock,
}

impl Worker {
    /// Moves a client connection forward as far as it can go now.
    pub(crate) fn drive_client(&mut self, id: ConnId) {
        // A stream is resumed at most once per call: if it produced nothing, looping again would spin.
        let mut resumed = false;
        let max_head = self.settings.limits.max_head_bytes;
        // Bounded like every handler's turn: a client pipelining requests as fast as it reads the answers
        // would otherwise keep the worker to itself.
        for _ in 0..CLIENT_STEPS {
            let Some(Conn::Client(c)) = self.conns.get_mut(id) else {
                return;
            };
            if let Err(e) = c.flush() {
                return self.client_gone(id, &e.to_string());
            }
            let step = next_step(c, &mut resumed, max_head);
            match step {
                Step::Again => {}
                Step::Wait => return,
                Step::ReadRequest | Step::Watch | Step::Discard => {
                    let keep = !matches!(step, Step::Discard);
                    match self.read_client(id, keep) {
                        // End-of-file is recorded in the readiness flags; `next_step` decides what it
                        // means in the current state.
                        ReadOutcome::Data(_) | ReadOutcome::Eof => {}
                        ReadOutcome::Drained => return,
                        ReadOutcome::Failed(e) => return self.client_gone(id, &e.to_string()),
                    }
                }
                Step::Request(req) => {
                    // A new response may resume its stream once more in this call.
                    resumed = false;
                    self.handle_request(id, req);
                }
                Step::BadRequest(e) => {
                    log::debug!("{}: bad request: {} {}", self.name, e.status, e.message);
                    self.reply_error(id, e.status, e.code, &e.message, &[], AfterReply::Close);
                }
                Step::Linger => return self.start_linger(id),
                Step::Close => return self.close(id),
                Step::Left => return self.client_gone(id, "client closed its side mid-stream"),
                Step::ResumeUpstream(up) => self.pump(up),
                Step::ResumeMock => self.mock_pump(id),
            }
        }
        self.defer(id);
    }

    fn read_client(&mut self, id: ConnId, keep: bool) -> ReadOutcome {
        let Some(Conn::Client(c)) = self.conns.get_mut(id) else {
            return ReadOutcome::Drained;
        };
        if keep {
            c.read_into_inbuf(&mut self.scratch)
        } else {
            read_once(&mut c.sock, &mut c.ready, &mut self.scratch)
        }
    }

    /// The client hung up or its socket failed. The reap phase takes its upstream along.
    pub(crate) fn client_gone(&mut self, id: ConnId, why: &str) {
        log::debug!("{}: client {id:?} gone: {why}", self.name);
        self.close(id);
    }

    fn handle_request(&mut self, id: ConnId, req: Request) {
        let then = if req.keep_alive {
            AfterReply::KeepAlive
        } else {
            AfterReply::Close
        };
        let framing = StreamFraming::for_request(req.version, then);
        let table = match &self.service {
            Service::Relay(_) => Table::Relay,
            Service::Mock(m) => {
                m.stats.on_request();
                Table::Mock
            }
        };
        match routes::resolve(table, &req.method, &req.path) {
            Err(Miss::NotFound) => {
                self.reply_error(id, 404, "not_found", "no such route", &[], then)
            }
            Err(Miss::MethodNotAllowed(allow)) => {
                let msg = format!(
                    "method {} is not allowed here; allowed: {allow}",
                    req.method
                );
                self.reply_error(
                    id,
                    405,
                    "method_not_allowed",
                    &msg,
                    &[("Allow", allow)],
                    then,
                );
            }
            Ok(Route::Healthz) => {
                let body = serde_json::json!({"status": "ok"});
                self.reply_json(id, &req.method, &body, then)
            }
            Ok(Route::MockStats) => {
                let stats = match &self.service {
                    Service::Mock(m) => m.stats.snapshot(),
                    Service::Relay(_) => serde_json::Value::Null,
                };
                self.reply_json(id, &req.method, &stats, then);
            }
            Ok(Route::Generate) => self.start_relay(id, &req.body, framing),
            Ok(Route::MockGenerate) => self.start_mock(id, &req.body, framing),
        }
    }

    /// Queues a complete response and enters `Replying`. The caller's `drive_client` loop writes it.
    pub(crate) fn reply(&mut self, id: ConnId, bytes: &[u8], then: AfterReply) {
        if let Some(Conn::Client(c)) = self.conns.get_mut(id) {
            c.out.push(bytes);
            c.state = ClientState::Replying { then };
        }
    }

    /// Replies with the project's JSON error shape: `{"error":{"code":..,"message":..}}`.
    pub(crate) fn reply_error(
        &mut self,
        id: ConnId,
        status: u16,
        code: &str,
        message: &str,
        extra: &[(&str, &str)],
        then: AfterReply,
    ) {
        let mut out = Vec::new();
        error_response(
            &mut out,
            status,
            code,
            message,
            extra,
            then == AfterReply::Close,
        );
        self.reply(id, &out, then);
    }

    /// A `200` with a JSON body; for `HEAD`, the same head without the body.
    fn reply_json(&mut self, id: ConnId, method: &str, body: &serde_json::Value, then: AfterReply) {
        let body = body.to_string();
        let len = body.len().to_string();
        let mut out = Vec::with_capacity(128 + body.len());
        let mut headers = vec![
            ("Content-Type", "application/json"),
            ("Content-Length", len.as_str()),
        ];
        if then == AfterReply::Close {
            headers.push(("Connection", "close"));
        }
        write_head(&mut out, 200, &headers);
        if method != "HEAD" {
            out.extend_from_slice(body.as_bytes());
        }
        self.reply(id, &out, then);
    }

    /// Queues the head of a streamed (SSE) response and enters `Streaming`.
    pub(crate) fn begin_stream(&mut self, id: ConnId, source: Source, framing: StreamFraming) {
        if let Some(Conn::Client(c)) = self.conns.get_mut(id) {
            c.out.push(&stream_head(framing));
            c.state = ClientState::Streaming { source, framing };
        }
    }

    fn start_linger(&mut self, id: ConnId) {
        let deadline = self.now + LINGER;
        let Some(Conn::Client(c)) = self.conns.get_mut(id) else {
            return;
        };
        if c.sock.shutdown(std::net::Shutdown::Write).is_err() {
            return self.close(id);
        }
        c.inbuf = Vec::new();
        let key = self.timers.insert(deadline, id, TimerKind::Linger);
        c.state = ClientState::Lingering { deadline: key };
        // Read what is already there (and the EOF, if the client closed first).
        self.drive_client(id);
    }

    /// Reap-phase clean-up of a client: what it was tied to goes too.
    pub(crate) fn on_client_freed(&mut self, _id: ConnId, c: Box<ClientConn>) {
        if let Service::Mock(m) = &self.service {
            m.stats.on_close();
        }
        match c.state {
            // Never pool a connection mid-body: its next bytes would be the rest of this body.
            ClientState::Streaming {
                source: Source::Upstream(up),
                ..
            } => self.close(up),
            ClientState::Streaming {
                source: Source::Mock(m),
                ..
            } => m.cancel(&mut self.timers),
            ClientState::Lingering { deadline } => self.timers.cancel(deadline),
            ClientState::AwaitingRequest | ClientState::Replying { .. } => {}
        }
    }
}

/// The head of every streamed response: SSE (chunked for HTTP/1.1 clients), with the headers that stop
/// caches and buffering proxies (nginx honours `X-Accel-Buffering: no`) from holding tokens back.
pub(crate) fn stream_head(framing: StreamFraming) -> Vec<u8> {
    let mut head = Vec::with_capacity(192);
    let mut headers = vec![
        ("Content-Type", "text/event-stream"),
        ("Cache-Control", "no-cache"),
        ("X-Accel-Buffering", "no"),
    ];
    if let StreamFraming::Chunked(_) = framing {
        headers.push(("Transfer-Encoding", "chunked"));
    }
    if framing.after() == AfterReply::Close {
        headers.push(("Connection", "close"));
    }
    write_head(&mut head, 200, &headers);
    head
}

/// Decides the next step from the connection's state alone.
fn next_step(c: &mut ClientConn, resumed: &mut bool, max_head: usize) -> Step {
    let drained = c.out.is_empty();
    let ready = c.ready;
    match &mut c.state {
        // A client that shuts its side mid-stream has left (as nginx assumes too): stop the stream.
        ClientState::Streaming { .. } if ready.read_closed => Step::Left,
        ClientState::Replying { then } if drained => match then {
            AfterReply::KeepAlive => {
                c.state = ClientState::AwaitingRequest;
                Step::Again
            }
            AfterReply::Close => Step::Linger,
        },
        ClientState::Streaming { source, .. } if drained && !*resumed => {
            *resumed = true;
            match source {
                Source::Upstream(up) => Step::ResumeUpstream(*up),
                Source::Mock(_) => Step::ResumeMock,
            }
        }
        ClientState::AwaitingRequest => {
            let (consumed, progress) = c.reader.advance(&c.inbuf);
            c.consume_inbuf(consumed);
            match progress {
                Err(e) => Step::BadRequest(e),
                Ok(Progress::Complete(req)) => Step::Request(req),
                Ok(Progress::SendContinue) => {
                    c.out.push(CONTINUE);
                    Step::Again
                }
                Ok(Progress::NeedMore) if ready.readable => Step::ReadRequest,
                // Every request the client sent before closing its side has been answered.
                Ok(Progress::NeedMore) if ready.read_closed => Step::Close,
                Ok(Progress::NeedMore) => Step::Wait,
            }
        }
        ClientState::Lingering { .. } if ready.readable => Step::Discard,
        ClientState::Lingering { .. } if ready.read_closed => Step::Close,
        ClientState::Replying { .. } | ClientState::Streaming { .. }
            if ready.readable && !ready.read_closed && c.inbuf.len() < max_head =>
        {
            Step::Watch
        }
        _ => Step::Wait,
    }
}
