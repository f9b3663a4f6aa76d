//! The built-in mock LLM upstream: a second application of the reactor, beside the relay.
//!
//! `tokenpipe mock-upstream` answers each provider's own API paths in that provider's shape, streamed or not,
//! with deterministic tokens ([`generation`]): OpenAI's Chat Completions, Completions, Responses, embeddings
//! and models ([`openai`], [`responses`], [`embeddings`]), Gemini's `generateContent` and
//! `streamGenerateContent` ([`gemini`]), Anthropic's Messages ([`anthropic`]). So the relay can be run,
//! tested and benchmarked with no API key and no network, and the providers' own SDKs can be pointed at it.
//! A stream is one SSE event per chunk, one event per `--interval-ms`: it is driven by a timer
//! ([`MockTimer::Tick`]) instead of an upstream socket, which makes the mock a small example of a
//! [`Handler`]. With `--interval-ms 0` it writes as fast as the client takes the bytes, honouring the same
//! per-stream cap as the relay, which makes it a fire hose for backpressure tests.
//!
//! Any request may ask it to fail in one exact way ([`fault`]): an error status, a late head or first
//! token, a stream that stalls, resets, breaks its framing or reports an error after K tokens, an idle
//! connection closed early; for the first N requests of a key only. Delays are timers too: the loop never
//! sleeps.
//!
//! It shares the client driver with the relay ([`crate::conn::client::drive`]); what is its own is routing
//! ([`routes`]), what each request gets ([`answer`], sans-IO, which calls the provider modules), the answer
//! in progress ([`MockWork`], the `Serving` state of its clients, and [`MockStream`]), and what it counts
//! and remembers ([`MockStats`], served at `GET /stats`, and the last requests, at `GET /debug/requests`,
//! [`record`]) so tests can check, for instance, that the relay reuses its upstream connections or what
//! reached the upstream.

pub mod answer;
pub mod anthropic;
pub mod embeddings;
pub mod fault;
pub mod gemini;
pub mod generation;
pub mod openai;
pub mod record;
pub mod responses;
pub mod routes;
pub mod script;
pub mod sse;
pub mod stats;
pub mod stream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mio::net::TcpStream;

use crate::conn::client::{
    self, AfterReply, ClientApp, ClientConn, ClientState, ClientTimeouts, ClientWait,
};
use crate::conn::transport::accepted;
use crate::http::request::{Limits, Request, RequestReader};
use crate::reactor::{ConnId, Cx, Handler, Ready, TURN_BUDGET, Tag, TimerKey};
use answer::{Answer, Decision};
use fault::{BAD_CHUNK, Cut, Fault};
use routes::Route;
use script::MockFormat;
pub use stats::MockStats;
pub use stream::{Delivery, MockStream, MockWork, Step};

/// What a mock deadline is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MockTimer {
    /// The next step of an answer is due: the head after a `head-delay`, a stream's first event after a
    /// `first-token-delay`, its next event after the interval.
    Tick,
    /// A client deadline (`conn::client::ClientWait`) passed.
    Client(ClientWait),
    /// `close-idle`: the connection may have been idle long enough since its answer.
    CloseIdle,
}

/// A mock worker's slab entry: a client, and the `close-idle` deadline of its last answer.
pub struct MockConn {
    client: ClientConn<MockWork>,
    /// Armed when an answer that asked for `close-idle=D` is queued, until the next request: the deadline,
    /// and D.
    close_idle: Option<(TimerKey, Duration)>,
}

/// Boxed, so that the slab's slots stay small.
pub type Entry = Box<MockConn>;

/// The mock application of one worker.
pub struct Mock {
    /// `--format`: whose error body a fault injected at the shared `GET /v1/models` gets. Every other path
    /// belongs to one provider and answers in its shape.
    format: MockFormat,
    /// Tokens per answer, unless the request asks for fewer.
    tokens: u32,
    /// Pause between events; zero means "as fast as the client reads".
    interval: Duration,
    limits: Limits,
    /// Most bytes queued per client before the stream waits for it to drain.
    cap: usize,
    stats: Arc<MockStats>,
    /// Where events and whole replies are composed before they are sent.
    compose: Vec<u8>,
    /// Terminate TLS on accepted connections.
    tls: Option<Arc<rustls::ServerConfig>>,
    /// How long a client may take at each step.
    client_timeouts: ClientTimeouts,
    /// The worker drains (`on_drain`): kept-alive clients close when idle.
    draining: bool,
}

impl Mock {
    pub fn new(
        format: MockFormat,
        tokens: u32,
        interval: Duration,
        limits: Limits,
        cap: usize,
        stats: Arc<MockStats>,
    ) -> Mock {
        Mock {
            format,
            tokens,
            interval,
            limits,
            cap,
            stats,
            compose: Vec::new(),
            tls: None,
            client_timeouts: ClientTimeouts::default(),
            draining: false,
        }
    }

    /// Gives clients these deadlines instead of the defaults.
    pub fn with_client_timeouts(mut self, timeouts: ClientTimeouts) -> Mock {
        self.client_timeouts = timeouts;
        self
    }

    /// Serves HTTPS with `config` (`mock-upstream --tls-cert/--tls-key`), so that the relay's TLS path is
    /// tested end to end on loopback.
    pub fn with_tls(mut self, config: Option<Arc<rustls::ServerConfig>>) -> Mock {
        self.tls = config;
        self
    }

    /// Answers a provider endpoint with what `answer` decides: now, or when the fault's head delay is over.
    fn serve(&mut self, cx: &mut Cx<Self>, id: ConnId, endpoint: routes::Endpoint, req: &Request) {
        let Decision { answer, fault } =
            answer::answer(endpoint, req, self.format, self.tokens, &self.stats.keys);
        let delivery = Delivery::of(req);
        if !fault.is_none() {
            MockStats::add(&self.stats.faults, 1);
            log::debug!(
                "{}: {} {} asks for {fault}",
                cx.name(),
                req.method,
                req.path
            );
        }
        let Some(delay) = fault.head_delay else {
            return self.begin(cx, id, answer, fault, delivery);
        };
        let Some(conn) = cx.conns.get_mut(id) else {
            return;
        };
        let held = stream::Held {
            answer,
            fault,
            delivery,
        };
        // `delay` is at most `fault::MAX_DELAY`: the sum cannot overflow.
        let wake = cx.timers.insert(cx.now + delay, id, MockTimer::Tick);
        conn.client.state = ClientState::Serving(MockWork::Held { held, wake });
    }

    /// Sends what was decided: resets the connection (`reset-after=request`), queues a whole reply, or
    /// starts a stream.
    fn begin(&mut self, cx: &mut Cx<Self>, id: ConnId, answer: Answer, fault: Fault, d: Delivery) {
        if fault.cut == Some(Cut::ResetBeforeHead) {
            return reset(cx, id);
        }
        let Some(conn) = cx.conns.get_mut(id) else {
            return;
        };
        let c = &mut conn.client;
        match answer {
            Answer::Reply(reply) => {
                self.compose.clear();
                reply.write(d.head_only, d.then == AfterReply::Close, &mut self.compose);
                c.reply(&self.compose, d.then);
                c.status = reply.status;
                arm_close_idle(cx, id, fault.close_idle);
            }
            Answer::Stream(script) => {
                // The head is queued and leaves with the first event (`pump`), in one write; unless a
                // first-token delay holds the event back, and the client driver sends the head alone.
                c.out.push(&client::stream_head(d.framing));
                let mut stream = MockStream::new(script, d.framing, &fault);
                if let Some(delay) = fault.first_token_delay {
                    stream.tick = Some(cx.timers.insert(cx.now + delay, id, MockTimer::Tick));
                }
                c.state = ClientState::Serving(MockWork::Streaming(stream));
                self.pump(cx, id);
            }
        }
    }

    /// Sends events while the interval, the stream cap and the turn budget allow. The last event leaves
    /// with the last chunk, in one write. A fault takes the place of an event ([`Step`]).
    fn pump(&mut self, cx: &mut Cx<Self>, id: ConnId) {
        for _ in 0..TURN_BUDGET {
            let Some(conn) = cx.conns.get_mut(id) else {
                return;
            };
            let c = &mut conn.client;
            let ClientState::Serving(MockWork::Streaming(m)) = &mut c.state else {
                return;
            };
            if m.tick.is_some() || c.out.len() >= self.cap {
                // Waiting for the interval, or for the client to drain (the driver calls us again).
                return;
            }
            self.compose.clear();
            let last = match m.step(&mut self.compose) {
                Step::Send { last } => last,
                Step::Stall => {
                    c.state = ClientState::Serving(MockWork::Stalled);
                    return;
                }
                Step::BadChunk => {
                    c.state = ClientState::Serving(MockWork::Stalled);
                    if let Err(e) = c.out.send(&mut c.io, &[BAD_CHUNK]) {
                        client::gone::<Self>(cx, id, &e.to_string());
                    }
                    return;
                }
                // An abort throws away what is still queued: the reset waits until the events before it
                // have left (the driver calls `on_drained`, which pumps again, and the step is repeated).
                Step::Reset if !c.out.is_empty() => return,
                Step::Reset => return reset(cx, id),
            };
            if !last && !self.interval.is_zero() {
                m.tick = Some(
                    cx.timers
                        .insert(cx.now + self.interval, id, MockTimer::Tick),
                );
            }
            let (framing, close_idle) = (m.framing, m.close_idle);
            if let Err(e) = c.send_payload(framing, &self.compose, last) {
                return client::gone::<Self>(cx, id, &e.to_string());
            }
            MockStats::add(&self.stats.bytes_sent, self.compose.len() as u64);
            if last {
                c.finish(framing.after());
                arm_close_idle(cx, id, close_idle);
                MockStats::add(&self.stats.streams_completed, 1);
                return;
            }
        }
        // Had its turn (only a zero-interval stream to a fast reader gets here): let the others run.
        cx.defer(id);
    }
}

/// `close-idle`, when its deadline falls due: closes the connection if it has been idle since its answer,
/// or waits once more while its client is still reading that answer. A request on its way (bytes of it
/// arrived) keeps it open.
fn close_if_idle(cx: &mut Cx<Mock>, id: ConnId) {
    let Some(conn) = cx.conns.get_mut(id) else {
        return;
    };
    let Some((_, after)) = conn.close_idle.take() else {
        return;
    };
    match conn.client.state {
        ClientState::AwaitingRequest if conn.client.inbuf.is_empty() => cx.close(id),
        ClientState::Replying { .. } => arm_close_idle(cx, id, Some(after)),
        _ => {}
    }
}

/// `close-idle=D`, for the answer just queued: arms the deadline that closes the connection once it has
/// been idle for D. `D` is at most `fault::MAX_DELAY`, so `now + D` cannot overflow.
fn arm_close_idle(cx: &mut Cx<Mock>, id: ConnId, after: Option<Duration>) {
    let Some(after) = after else {
        return;
    };
    let key = cx.timers.insert(cx.now + after, id, MockTimer::CloseIdle);
    if let Some(conn) = cx.conns.get_mut(id) {
        conn.close_idle = Some((key, after));
    }
}

/// `reset-after`: closes the connection so that the client reads a reset (RST) rather than an end of file.
fn reset(cx: &mut Cx<Mock>, id: ConnId) {
    let failed = match cx.conns.get_mut(id) {
        Some(conn) => conn.client.io.abort_on_close().err(),
        None => return,
    };
    if let Some(e) = failed {
        // The close below is then an ordinary one: the client still sees the answer cut short.
        log::warn!("{}: cannot reset a connection: {e}", cx.name());
    }
    cx.close(id);
}

impl Handler for Mock {
    type Conn = Entry;
    type Timer = MockTimer;

    fn on_accept(&mut self, cx: &mut Cx<Self>, sock: TcpStream, peer: SocketAddr) {
        MockStats::add(&self.stats.connections, 1);
        let reader = RequestReader::new(self.limits.clone());
        let Some(io) = accepted(sock, self.tls.as_ref(), cx.name(), peer) else {
            MockStats::add(&self.stats.closed, 1);
            return;
        };
        let conn = MockConn {
            client: ClientConn::new(io, peer, reader),
            close_idle: None,
        };
        let Ok(id) = cx.conns.insert_with(|_| Box::new(conn)) else {
            MockStats::add(&self.stats.closed, 1);
            return log::warn!("{}: too many connections; dropping {peer}", cx.name());
        };
        if let Some(conn) = cx.conns.get_mut(id)
            && let Err(e) = conn.client.io.register(&cx.registry, id, Tag::MAIN)
        {
            log::warn!("{}: cannot register client {peer}: {e}", cx.name());
            return cx.close(id);
        }
        client::accepted_client(self, cx, id);
    }

    fn on_ready(&mut self, cx: &mut Cx<Self>, id: ConnId, _tag: Tag, ready: Ready) {
        if let Some(conn) = cx.conns.get_mut(id) {
            conn.client.io.absorb(ready);
            client::drive(self, cx, id);
        }
    }

    fn on_resume(&mut self, cx: &mut Cx<Self>, id: ConnId) {
        self.pump(cx, id);
        client::drive(self, cx, id);
    }

    fn on_timer(&mut self, cx: &mut Cx<Self>, id: ConnId, what: MockTimer) {
        let Some(conn) = cx.conns.get_mut(id) else {
            return;
        };
        match (what, &mut conn.client.state) {
            (MockTimer::Tick, ClientState::Serving(MockWork::Streaming(m))) => {
                m.tick = None;
                self.pump(cx, id);
            }
            // The head delay is over: what it held back goes out as if it had just been decided.
            (MockTimer::Tick, ClientState::Serving(work)) => {
                let Some(held) = work.take_held() else {
                    return;
                };
                self.begin(cx, id, held.answer, held.fault, held.delivery);
            }
            (MockTimer::Client(wait), _) => return client::on_deadline(self, cx, id, wait),
            (MockTimer::CloseIdle, _) => return close_if_idle(cx, id),
            _ => return,
        }
        client::drive(self, cx, id);
    }

    /// Like the relay: idle kept-alive clients close now, the others when they become idle.
    fn on_drain(&mut self, cx: &mut Cx<Self>) {
        self.draining = true;
        let idle: Vec<ConnId> = cx
            .conns
            .iter()
            .filter(|(_, c)| matches!(c.client.state, ClientState::AwaitingRequest))
            .map(|(id, _)| id)
            .collect();
        for id in idle {
            client::drive(self, cx, id);
        }
    }

    fn on_close(&mut self, cx: &mut Cx<Self>, _id: ConnId, mut conn: Entry) {
        MockStats::add(&self.stats.closed, 1);
        // The client's own deadline (a lingering close's included), then the answer's and the idle one.
        conn.client.cancel_deadline(&mut cx.timers);
        let work_timer = match &conn.client.state {
            ClientState::Serving(work) => work.timer(),
            _ => None,
        };
        let idle_timer = conn.close_idle.map(|(key, _)| key);
        for key in [work_timer, idle_timer].into_iter().flatten() {
            cx.timers.cancel(key);
        }
    }
}

impl ClientApp for Mock {
    type Work = MockWork;

    fn client(conn: &mut Entry) -> Option<&mut ClientConn<MockWork>> {
        Some(&mut conn.client)
    }

    fn client_timer(wait: ClientWait) -> MockTimer {
        MockTimer::Client(wait)
    }

    fn client_timeouts(&self) -> ClientTimeouts {
        self.client_timeouts
    }

    fn max_head(&self) -> usize {
        self.limits.max_head_bytes
    }

    fn on_request(&mut self, cx: &mut Cx<Self>, id: ConnId, req: Request) {
        MockStats::add(&self.stats.requests, 1);
        let Some(conn) = cx.conns.get_mut(id) else {
            return;
        };
        // A request: the connection is not idle, whatever the last answer asked for.
        if let Some((key, _)) = conn.close_idle.take() {
            cx.timers.cancel(key);
        }
        let route = routes::resolve(&req.method, &req.path);
        if route != Ok(Route::Requests) {
            self.stats.record(&req);
        }
        let then = AfterReply::of(&req);
        let json = match route {
            Ok(Route::Api(endpoint)) => return self.serve(cx, id, endpoint, &req),
            Ok(Route::Stats) => self.stats.snapshot(),
            Ok(Route::Requests) => self.stats.recent_requests(),
            Ok(Route::Healthz) => serde_json::json!({"status": "ok"}),
            Err(miss) => return conn.client.reply_miss(miss, &req.method, then),
        };
        conn.client.reply_json(200, &req.method, &json, then);
    }

    fn on_drained(&mut self, cx: &mut Cx<Self>, id: ConnId) {
        self.pump(cx, id);
    }

    fn draining(&self) -> bool {
        self.draining
    }
}

#[cfg(test)]
mod tests;
