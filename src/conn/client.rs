//! The downstream connection: a client that sends requests and receives (streamed) responses.
//!
//! ```text
//!                      request complete
//!   AwaitingRequest ───────────────────┬──────────────────────────────┐
//!        ▲                             │ fixed answer (error, health) │ the application serves it
//!        │ keep-alive                  ▼                              ▼   (relay exchange, mock stream)
//!        └──────── `out` drained ── Replying ◀───── it is done ───── Serving(W)
//!                                      │                              │ client left / write error
//!                                      │ Close                        ▼
//!                                      └──▶ Lingering ──EOF/deadline──▶ (closed by the reactor)
//! ```
//!
//! The two directions are independent: bytes from the client collect in `inbuf` and are parsed only in
//! `AwaitingRequest` (pipelined requests wait there, answered in order); bytes for the client go through
//! [`OutBuf`], which tries the socket first and keeps only what the socket would not take.
//!
//! [`drive`] is the client driver every application shares. It is a loop of three moves: flush what is
//! queued; *decide* the next step from the connection's state alone ([`decide()`], a pure function of
//! [`Facts`]); *do* it. Only the steps that need the application ([`ClientApp`]) leave this module: a
//! complete request, and a queue that drained under a paused stream.

use std::net::SocketAddr;

mod deciding;
mod framing;
pub mod record;

pub use deciding::{Facts, Next, StateKind, decide};
pub use framing::{AfterReply, StreamFraming};
pub use record::Record;

use super::outbuf::{Flushed, OutBuf};
use super::transport::{ReadOutcome, Transport};
use crate::http::request::{Progress, Request, RequestReader};
use crate::http::response::{error_response, write_head};
use crate::http::route::Miss;
use crate::reactor::{ConnId, Cx, Handler, TURN_BUDGET, TimerKey};

/// How long a client we are closing after its last reply (an error, `Connection: close`, HTTP/1.0) may keep
/// sending before we stop listening. Closing a socket with unread input makes the kernel send a reset,
/// which can destroy the reply before the client reads it; so we half-close, read and discard for a
/// moment, then close (a "lingering close").
pub const LINGER: std::time::Duration = std::time::Duration::from_secs(2);

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Steps of [`drive`] per turn: a few per request (read, parse, answer, flush), so a turn covers a handful
/// of pipelined requests before the client yields.
const CLIENT_STEPS: usize = 4 * TURN_BUDGET;

/// What a client connection is doing.
pub enum ClientState<W> {
    /// Waiting for (the rest of) a request.
    AwaitingRequest,
    /// The application is answering a request; `W` is how far it got (the relay's exchange, the mock's
    /// stream). It ends by calling [`ClientConn::finish`].
    Serving(W),
    /// The whole response is queued in `out`; when it drains, do `then`.
    Replying { then: AfterReply },
    /// The reply is out and our side is shut; discard what the client still sends until it closes or the
    /// deadline passes, so that closing does not reset the connection under an unread reply.
    Lingering { deadline: TimerKey },
}

/// Whether `inbuf` may hold a request the reader has not seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// New bytes arrived (or a request was just taken from the buffer): parse before reading more.
    Unparsed,
    /// The reader has seen all of `inbuf` and needs more bytes.
    NeedMore,
}

/// A downstream connection.
pub struct ClientConn<W> {
    pub peer: SocketAddr,
    pub io: Transport,
    /// Bytes received and not yet consumed by `reader`: a partial head, or requests pipelined behind the
    /// one being answered. Bounded by the head limit plus one read: the reader rejects longer heads, and
    /// while a response is in progress the client is read only while this holds less than a head's worth.
    pub inbuf: Vec<u8>,
    pub input: Input,
    pub reader: RequestReader,
    pub out: OutBuf,
    pub state: ClientState<W>,
    /// The status of the last response queued, for the log.
    pub status: u16,
    /// The deadline of what the client is waiting for (`deadlines::watch`), if any.
    pub deadline: Option<(ClientWait, TimerKey)>,
    /// When the client last took bytes of its response, for the write deadline.
    pub progress_at: Option<std::time::Instant>,
    /// `out.taken()` when the driver last looked.
    pub taken_seen: u64,
    /// Requests read on this connection so far.
    pub served: u32,
    /// It has been answered and kept alive at least once: waiting with nothing buffered, it is idle (a
    /// drain closes it), where a fresh connection's first request may be on its way.
    pub kept_alive: bool,
    /// The request being answered, for the access log and the metrics (`ClientApp::keeps_records`).
    pub record: Option<Box<Record>>,
}

impl<W> ClientConn<W> {
    pub fn new(io: Transport, peer: SocketAddr, reader: RequestReader) -> Self {
        ClientConn {
            peer,
            io,
            inbuf: Vec::new(),
            input: Input::NeedMore,
            reader,
            out: OutBuf::default(),
            state: ClientState::AwaitingRequest,
            status: 0,
            deadline: None,
            progress_at: None,
            taken_seen: 0,
            served: 0,
            kept_alive: false,
            record: None,
        }
    }

    /// Drops the first `n` bytes of `inbuf` (the reader consumed them). The buffer is released when empty,
    /// and shrunk when a few leftover bytes (the start of a pipelined request) sit in a buffer grown for a
    /// large body, so an idle keep-alive connection holds little or no input memory.
    fn consume_inbuf(&mut self, n: usize) {
        if n >= self.inbuf.len() {
            self.inbuf = Vec::new();
        } else if n > 0 {
            self.inbuf.drain(..n);
            if self.inbuf.capacity() > 4 * self.inbuf.len() + 4096 {
                self.inbuf.shrink_to_fit();
            }
        }
    }

    /// Sends `payload` as part of a streamed body framed as `framing`: one chunk, or the bare bytes for a
    /// close-delimited body. With `last`, the body ends here (the last chunk goes in the same `writev`).
    pub fn send_payload(
        &mut self,
        framing: StreamFraming,
        payload: &[u8],
        last: bool,
    ) -> std::io::Result<()> {
        send_body(&mut self.out, &mut self.io, framing, payload, last)
    }

    /// The application is done with its request: what is queued is the whole response, then `then`. The
    /// work is handed back (it may hold timers to cancel).
    pub fn finish(&mut self, then: AfterReply) -> Option<W> {
        match std::mem::replace(&mut self.state, ClientState::Replying { then }) {
            ClientState::Serving(work) => Some(work),
            _ => None,
        }
    }

    /// Releases the deadline this connection holds (it is closing).
    pub fn cancel_deadline<K>(&mut self, timers: &mut crate::reactor::Timers<K>) {
        if let Some((_, key)) = self.deadline.take() {
            timers.cancel(key);
        }
        if let ClientState::Lingering { deadline } = self.state {
            timers.cancel(deadline);
        }
    }

    /// Queues a complete response and enters `Replying`.
    pub fn reply(&mut self, bytes: &[u8], then: AfterReply) {
        self.out.push(bytes);
        self.state = ClientState::Replying { then };
    }

    /// Replies with the project's JSON error shape: `{"error":{"code":..,"message":..}}`.
    pub fn reply_error(
        &mut self,
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
        self.reply(&out, then);
        self.status = status;
    }

    /// The answer to a request no route matched: 404, 405 naming the allowed methods in `Allow`, or 400 for
    /// a path that cannot be forwarded.
    pub fn reply_miss(&mut self, miss: Miss, method: &str, then: AfterReply) {
        match miss {
            Miss::NotFound => self.reply_error(404, "not_found", "no such route", &[], then),
            Miss::BadPath(why) => self.reply_error(400, "bad_path", why, &[], then),
            Miss::MethodNotAllowed(allow) => {
                let msg = format!("method {method} is not allowed here; allowed: {allow}");
                self.reply_error(405, "method_not_allowed", &msg, &[("Allow", allow)], then);
            }
        }
    }

    /// A JSON body with `status`; for `HEAD`, the same head without the body.
    pub fn reply_json(
        &mut self,
        status: u16,
        method: &str,
        body: &serde_json::Value,
        then: AfterReply,
    ) {
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
        write_head(&mut out, status, &headers);
        if method != "HEAD" {
            out.extend_from_slice(body.as_bytes());
        }
        self.reply(&out, then);
        self.status = status;
    }

    /// The facts [`decide`] looks at; `draining` is the application's (`ClientApp::draining`).
    pub fn facts(&self, flushed: Flushed, max_head: usize, draining: bool) -> Facts {
        Facts {
            state: match &self.state {
                ClientState::AwaitingRequest => StateKind::AwaitingRequest,
                ClientState::Serving(_) => StateKind::Serving,
                ClientState::Replying { then } => StateKind::Replying(*then),
                ClientState::Lingering { .. } => StateKind::Lingering,
            },
            flushed,
            readable: self.io.readable(),
            read_closed: self.io.read_closed(),
            input: self.input,
            inbuf_full: self.inbuf.len() >= max_head,
            // Nothing of a next request: no byte buffered, no body being read, no `100 Continue` queued.
            idle: self.kept_alive
                && self.inbuf.is_empty()
                && self.reader.is_idle()
                && self.out.is_empty(),
            draining,
        }
    }
}

/// [`ClientConn::send_payload`] over the two parts it needs, for callers that hold other parts of the
/// connection borrowed at the same time (the relay holds the exchange in `state` while it writes).
pub fn send_body(
    out: &mut OutBuf,
    io: &mut Transport,
    framing: StreamFraming,
    payload: &[u8],
    last: bool,
) -> std::io::Result<()> {
    match framing {
        StreamFraming::Chunked(_) => out.send_chunk(io, payload, last),
        StreamFraming::UntilClose => out.send(io, &[payload]),
    }
}

/// The head of every streamed response: SSE (chunked for HTTP/1.1 clients), with the headers that stop
/// caches and buffering proxies (nginx honours `X-Accel-Buffering: no`) from holding tokens back.
pub fn stream_head(framing: StreamFraming) -> Vec<u8> {
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

// ---------------------------------------------------------------------------------------------------------
// Doing
// ---------------------------------------------------------------------------------------------------------

/// What an application adds to the shared client driver.
pub trait ClientApp: Handler + Sized {
    /// What the application keeps while it serves a request.
    type Work;
    /// The client connection inside one of the application's slab entries.
    fn client(conn: &mut Self::Conn) -> Option<&mut ClientConn<Self::Work>>;
    /// The timer key of a client deadline.
    fn client_timer(wait: ClientWait) -> Self::Timer;
    /// How long a client may take at each step.
    fn client_timeouts(&self) -> ClientTimeouts;
    /// A client deadline passed (for the application's counters).
    fn count_timeout(&mut self, _wait: ClientWait) {}
    /// Longest request head: while a response is in progress, no more than this is read ahead.
    fn max_head(&self) -> usize;
    /// A request is complete: answer it ([`ClientConn::reply`]) or start serving it
    /// (`ClientState::Serving`).
    fn on_request(&mut self, cx: &mut Cx<Self>, id: ConnId, req: Request);
    /// The client's queue drained while serving: a stream paused by backpressure may go on.
    fn on_drained(&mut self, cx: &mut Cx<Self>, id: ConnId);
    /// The application drains (its listener is closed): a kept-alive connection closes as soon as it is
    /// idle, instead of waiting for a next request.
    fn draining(&self) -> bool {
        false
    }
    /// Open a [`Record`] for each request (for an access log, or metrics).
    fn keeps_records(&self) -> bool {
        false
    }
    /// The answer to the request of `record` is out (written whole; the connection stays or lingers).
    fn on_answered(&mut self, _cx: &mut Cx<Self>, _id: ConnId, _record: &mut Record) {}
}

/// Moves client `id` forward as far as it can go now: flush, decide, do; until the decision is to wait, or
/// the turn is used up (then it yields, [`crate::reactor::Context::defer`]). Then the deadline of what it
/// waits for ([`deadlines::watch`]).
pub fn drive<A: ClientApp>(app: &mut A, cx: &mut Cx<A>, id: ConnId) {
    steps(app, cx, id);
    deadlines::watch(app, cx, id);
}

/// Arms the first deadline of a client just accepted and registered (its request head).
pub fn accepted_client<A: ClientApp>(app: &A, cx: &mut Cx<A>, id: ConnId) {
    deadlines::watch(app, cx, id);
}

fn steps<A: ClientApp>(app: &mut A, cx: &mut Cx<A>, id: ConnId) {
    let max_head = app.max_head();
    let draining = app.draining();
    let records = app.keeps_records();
    for _ in 0..CLIENT_STEPS {
        let Some(c) = cx.conns.get_mut(id).and_then(A::client) else {
            return;
        };
        let flushed = match c.out.flush(&mut c.io) {
            Ok(f) => f,
            Err(e) => return gone::<A>(cx, id, &e.to_string()),
        };
        if let Some(r) = &mut c.record
            && r.first_byte.is_none()
            && c.out.taken() > r.taken_before
        {
            r.first_byte = Some(cx.now);
        }
        match decide(&c.facts(flushed, max_head, draining)) {
            Next::Wait => return,
            Next::Parse => {
                let (consumed, progress) = c.reader.advance(&c.inbuf);
                c.consume_inbuf(consumed);
                let peer = c.peer;
                match progress {
                    Ok(Progress::Complete(req)) => {
                        c.served = c.served.saturating_add(1);
                        c.status = 0;
                        if records {
                            c.record = Some(Box::new(Record::new(&req, cx.now, c.out.taken())));
                        }
                        let line = format!("{} {}", req.method, req.path);
                        app.on_request(cx, id, req);
                        if log::log_enabled!(log::Level::Debug) {
                            log_answer::<A>(cx, id, peer, &line);
                        }
                    }
                    Ok(Progress::SendContinue) => c.out.push(CONTINUE),
                    Ok(Progress::NeedMore) => c.input = Input::NeedMore,
                    Err(e) => {
                        // Refused before it was whole: still a request answered, counted and logged.
                        if records {
                            c.record = Some(Box::new(Record::refused(cx.now, c.out.taken())));
                        }
                        c.reply_error(e.status, e.code, &e.message, &[], AfterReply::Close);
                        log::debug!("{}: {peer} bad request -> {e}", cx.name());
                    }
                }
            }
            step @ (Next::Read | Next::Watch | Next::Discard) => {
                match c.io.read(&mut cx.scratch) {
                    ReadOutcome::Data(n) if step != Next::Discard => {
                        c.inbuf.extend_from_slice(&cx.scratch[..n]);
                        c.input = Input::Unparsed;
                    }
                    // Discarded bytes, or an end-of-file: recorded in the readiness, which `decide` reads.
                    ReadOutcome::Data(_) | ReadOutcome::Eof => {}
                    // Nothing more to read: decide again, which now knows it (an idle connection of a
                    // draining application closes then; otherwise the next decision is to wait).
                    ReadOutcome::Drained => {}
                    ReadOutcome::Failed(e) => return gone::<A>(cx, id, &e.to_string()),
                }
            }
            Next::Resume => app.on_drained(cx, id),
            Next::EndReply => {
                c.state = ClientState::AwaitingRequest;
                c.input = Input::Unparsed;
                c.kept_alive = true;
                if let Some(mut record) = c.record.take() {
                    app.on_answered(cx, id, &mut record);
                }
            }
            // Lingering reads at once what is already there (and the end-of-file, if it came).
            Next::Linger => {
                if let Some(mut record) = c.record.take() {
                    app.on_answered(cx, id, &mut record);
                }
                linger::<A>(cx, id)
            }
            Next::Close => return cx.close(id),
            Next::Left => return gone::<A>(cx, id, "client closed its side mid-response"),
        }
    }
    cx.defer(id);
}

/// The client hung up, or its socket failed. The reap phase frees it and whatever it owned.
pub fn gone<A: ClientApp>(cx: &mut Cx<A>, id: ConnId, why: &str) {
    if let Some(c) = cx.conns.get_mut(id).and_then(A::client) {
        let peer = c.peer;
        log::debug!("{}: {peer} gone: {why}", cx.name());
    }
    cx.close(id);
}

/// Logs a request and what it got: a status, or a stream in progress.
fn log_answer<A: ClientApp>(cx: &mut Cx<A>, id: ConnId, peer: SocketAddr, line: &str) {
    let answer = match cx
        .conns
        .get_mut(id)
        .and_then(A::client)
        .map(|c| (&c.state, c.status))
    {
        Some((ClientState::Serving(_), _)) => "serving".to_string(),
        Some((_, status)) => status.to_string(),
        None => "closed".to_string(),
    };
    log::debug!("{}: {peer} {line} -> {answer}", cx.name());
}

/// Half-closes, then reads and discards until the client closes or [`LINGER`] passes.
fn linger<A: ClientApp>(cx: &mut Cx<A>, id: ConnId) {
    let at = cx.now + LINGER;
    let Some(c) = cx.conns.get_mut(id).and_then(A::client) else {
        return;
    };
    if c.io.shutdown_write().is_err() {
        return cx.close(id);
    }
    c.inbuf = Vec::new();
    let deadline = cx
        .timers
        .insert(at, id, A::client_timer(ClientWait::Linger));
    if let Some(c) = cx.conns.get_mut(id).and_then(A::client) {
        c.state = ClientState::Lingering { deadline };
    }
}

mod deadlines;
pub use deadlines::{ClientTimeouts, ClientWait, WaitFacts, on_deadline, wanted};

#[cfg(test)]
mod tests;
