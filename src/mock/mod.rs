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
//! It shares the client driver with the relay ([`crate::conn::client::drive`]); what is its own is routing
//! ([`routes`]), what each request gets ([`answer`], sans-IO, which calls the provider modules), the stream
//! ([`MockStream`], the `Serving` state of its clients), and what it counts and remembers ([`MockStats`],
//! served at `GET /stats`, and the last requests, at `GET /debug/requests`, [`record`]) so tests can check,
//! for instance, that the relay reuses its upstream connections or what reached the upstream.

pub mod answer;
pub mod anthropic;
pub mod embeddings;
pub mod gemini;
pub mod generation;
pub mod openai;
pub mod record;
pub mod responses;
pub mod routes;
pub mod script;
pub mod sse;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mio::net::TcpStream;

use crate::conn::client::{self, AfterReply, ClientApp, ClientConn, ClientState, StreamFraming};
use crate::conn::transport::accepted;
use crate::http::request::{Limits, Request, RequestReader};
use crate::reactor::{ConnId, Cx, Handler, Ready, TURN_BUDGET, Tag, TimerKey};
use answer::Answer;
use record::RequestLog;
use routes::Route;
use script::{MockFormat, MockScript};

/// Counters shared by all mock workers (relaxed atomics: they are statistics, not synchronization), and the
/// log of the last requests (behind a lock held only to record one or to copy the log out).
#[derive(Default, Debug)]
pub struct MockStats {
    connections: AtomicU64,
    closed: AtomicU64,
    requests: AtomicU64,
    streams_completed: AtomicU64,
    bytes_sent: AtomicU64,
    recent: Mutex<RequestLog>,
}

impl MockStats {
    /// The counters as the JSON that `GET /stats` returns.
    pub fn snapshot(&self) -> serde_json::Value {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let connections = get(&self.connections);
        serde_json::json!({
            "connections": connections,
            "open_connections": connections.saturating_sub(get(&self.closed)),
            "requests": get(&self.requests),
            "streams_completed": get(&self.streams_completed),
            "bytes_sent": get(&self.bytes_sent),
        })
    }

    /// The last requests, as `GET /debug/requests` returns them.
    pub fn recent_requests(&self) -> serde_json::Value {
        self.log().to_json()
    }

    fn record(&self, req: &Request) {
        self.log().record(req);
    }

    /// The log, even if a thread panicked while holding it (a log is never left half-written).
    fn log(&self) -> std::sync::MutexGuard<'_, RequestLog> {
        self.recent.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// What a mock deadline is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MockTimer {
    /// The interval before a stream's next event passed.
    Tick,
    /// A client we are closing after its last reply has had its time to read it.
    Linger,
}

/// One mock answer in progress.
pub struct MockStream {
    script: MockScript,
    framing: StreamFraming,
    /// Index of the next event to send.
    next: usize,
    /// Armed while waiting for the interval before the next event.
    tick: Option<TimerKey>,
}

/// A mock worker's slab entry: a client (boxed, so that the slab's slots stay small).
pub type Entry = Box<ClientConn<MockStream>>;

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
            draining: false,
        }
    }

    /// Serves HTTPS with `config` (`mock-upstream --tls-cert/--tls-key`), so that the relay's TLS path is
    /// tested end to end on loopback.
    pub fn with_tls(mut self, config: Option<Arc<rustls::ServerConfig>>) -> Mock {
        self.tls = config;
        self
    }

    /// Starts streaming `script`: queues the stream head; the first event leaves with it (`Mock::pump`).
    fn start(c: &mut Entry, script: MockScript, framing: StreamFraming) {
        c.out.push(&client::stream_head(framing));
        c.state = ClientState::Serving(MockStream {
            script,
            framing,
            next: 0,
            tick: None,
        });
    }

    /// Answers a provider endpoint: starts a stream, or queues one complete reply.
    fn serve(&mut self, cx: &mut Cx<Self>, id: ConnId, endpoint: routes::Endpoint, req: &Request) {
        let then = AfterReply::of(req);
        let Some(c) = cx.conns.get_mut(id) else {
            return;
        };
        match answer::answer(endpoint, req, self.format, self.tokens) {
            Answer::Stream(script) => {
                Mock::start(c, script, StreamFraming::for_request(req.version, then));
                self.pump(cx, id);
            }
            Answer::Reply(reply) => {
                self.compose.clear();
                let head_only = req.method == "HEAD";
                reply.write(head_only, then == AfterReply::Close, &mut self.compose);
                c.reply(&self.compose, then);
                c.status = reply.status;
            }
        }
    }

    /// Sends events while the interval, the stream cap and the turn budget allow. The last event leaves
    /// with the last chunk, in one write.
    fn pump(&mut self, cx: &mut Cx<Self>, id: ConnId) {
        for _ in 0..TURN_BUDGET {
            let Some(c) = cx.conns.get_mut(id) else {
                return;
            };
            let ClientState::Serving(m) = &mut c.state else {
                return;
            };
            if m.tick.is_some() || c.out.len() >= self.cap {
                // Waiting for the interval, or for the client to drain (the driver calls us again).
                return;
            }
            self.compose.clear();
            m.script.write_event(m.next, &mut self.compose);
            m.next += 1;
            let last = m.next >= m.script.len();
            if !last && !self.interval.is_zero() {
                m.tick = Some(
                    cx.timers
                        .insert(cx.now + self.interval, id, MockTimer::Tick),
                );
            }
            let framing = m.framing;
            if let Err(e) = c.send_payload(framing, &self.compose, last) {
                return client::gone::<Self>(cx, id, &e.to_string());
            }
            MockStats::add(&self.stats.bytes_sent, self.compose.len() as u64);
            if last {
                c.finish(framing.after());
                MockStats::add(&self.stats.streams_completed, 1);
                return;
            }
        }
        // Had its turn (only a zero-interval stream to a fast reader gets here): let the others run.
        cx.defer(id);
    }
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
        let client = ClientConn::new(io, peer, reader);
        let Ok(id) = cx.conns.insert_with(|_| Box::new(client)) else {
            MockStats::add(&self.stats.closed, 1);
            return log::warn!("{}: too many connections; dropping {peer}", cx.name());
        };
        if let Some(c) = cx.conns.get_mut(id)
            && let Err(e) = c.io.register(&cx.registry, id, Tag::MAIN)
        {
            log::warn!("{}: cannot register client {peer}: {e}", cx.name());
            cx.close(id);
        }
    }

    fn on_ready(&mut self, cx: &mut Cx<Self>, id: ConnId, _tag: Tag, ready: Ready) {
        if let Some(c) = cx.conns.get_mut(id) {
            c.io.absorb(ready);
            client::drive(self, cx, id);
        }
    }

    fn on_resume(&mut self, cx: &mut Cx<Self>, id: ConnId) {
        self.pump(cx, id);
        client::drive(self, cx, id);
    }

    fn on_timer(&mut self, cx: &mut Cx<Self>, id: ConnId, what: MockTimer) {
        let Some(c) = cx.conns.get_mut(id) else {
            return;
        };
        match (what, &mut c.state) {
            (MockTimer::Tick, ClientState::Serving(m)) => {
                m.tick = None;
                self.pump(cx, id);
                client::drive(self, cx, id);
            }
            (MockTimer::Linger, ClientState::Lingering { .. }) => cx.close(id),
            _ => {}
        }
    }

    /// Like the relay: idle kept-alive clients close now, the others when they become idle.
    fn on_drain(&mut self, cx: &mut Cx<Self>) {
        self.draining = true;
        let idle: Vec<ConnId> = cx
            .conns
            .iter()
            .filter(|(_, c)| matches!(c.state, ClientState::AwaitingRequest))
            .map(|(id, _)| id)
            .collect();
        for id in idle {
            client::drive(self, cx, id);
        }
    }

    fn on_close(&mut self, cx: &mut Cx<Self>, _id: ConnId, c: Entry) {
        MockStats::add(&self.stats.closed, 1);
        match c.state {
            ClientState::Serving(MockStream {
                tick: Some(key), ..
            }) => cx.timers.cancel(key),
            ClientState::Lingering { deadline } => cx.timers.cancel(deadline),
            _ => {}
        }
    }
}

impl ClientApp for Mock {
    type Work = MockStream;

    fn client(c: &mut Entry) -> Option<&mut ClientConn<MockStream>> {
        Some(c)
    }

    fn linger_timer() -> MockTimer {
        MockTimer::Linger
    }

    fn max_head(&self) -> usize {
        self.limits.max_head_bytes
    }

    fn on_request(&mut self, cx: &mut Cx<Self>, id: ConnId, req: Request) {
        MockStats::add(&self.stats.requests, 1);
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
            Err(miss) => {
                if let Some(c) = cx.conns.get_mut(id) {
                    c.reply_miss(miss, &req.method, then);
                }
                return;
            }
        };
        if let Some(c) = cx.conns.get_mut(id) {
            c.reply_json(200, &req.method, &json, then);
        }
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
