//! The built-in mock LLM upstream, served by the same reactor as the relay.
//!
//! `tokenpipe mock-upstream` answers OpenAI- and Gemini-shaped streaming requests with deterministic tokens
//! ([`script`]), one SSE event per chunk, one event per `--interval-ms`. It exists so that the relay can be
//! run, tested and benchmarked with no API key and no network, and it is a second, small example of the
//! reactor at work: a stream here is driven by a timer ([`TimerKind::MockTick`]) instead of an upstream
//! socket. With `--interval-ms 0` it writes as fast as the client takes the bytes, honouring the same
//! per-stream cap as the relay, which makes it a fire hose for backpressure tests.
//!
//! It counts what it does ([`MockStats`], served at `GET /stats`) so tests can check, for instance, that
//! the relay reuses its upstream connections.

pub mod script;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::conn::Conn;
use crate::conn::client::{ClientState, Source, StreamFraming};
use crate::reactor::timers::{TimerKey, TimerKind, Timers};
use crate::reactor::token::ConnId;
use crate::reactor::{Service, TURN_BUDGET, Worker};
use script::{MockFormat, MockScript, parse_mock_request};

/// What a mock worker serves.
pub struct MockService {
    pub format: MockFormat,
    /// Tokens per answer, unless the request asks for fewer.
    pub tokens: u32,
    /// Pause between events; zero means "as fast as the client reads".
    pub interval: Duration,
    pub stats: Arc<MockStats>,
}

/// Counters shared by all mock workers (relaxed atomics: they are statistics, not synchronization).
#[derive(Default)]
pub struct MockStats {
    connections: AtomicU64,
    closed: AtomicU64,
    requests: AtomicU64,
    streams_completed: AtomicU64,
    bytes_sent: AtomicU64,
}

impl MockStats {
    pub fn on_accept(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }
    pub fn on_close(&self) {
        self.closed.fetch_add(1, Ordering::Relaxed);
    }
    pub fn on_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

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
}

/// One mock answer in progress.
pub struct MockStream {
    script: MockScript,
    /// Index of the next event to send.
    next: usize,
    /// Armed while waiting for the interval before the next event.
    tick: Option<TimerKey>,
}

impl MockStream {
    /// Disarms the pending tick (the client went away).
    pub fn cancel(self, timers: &mut Timers) {
        if let Some(key) = self.tick {
            timers.cancel(key);
        }
    }
}

impl Worker {
    /// Starts a mock answer for a generation request.
    pub(crate) fn start_mock(&mut self, client: ConnId, body: &[u8], framing: StreamFraming) {
        let Service::Mock(mock) = &self.service else {
            return;
        };
        let request = match parse_mock_request(body) {
            Ok(r) => r,
            Err(msg) => {
                let then = framing.after();
                return self.reply_error(client, 400, "invalid_request", &msg, &[], then);
            }
        };
        let stream = MockStream {
            script: MockScript::new(mock.format, &request, mock.tokens),
            next: 0,
            tick: None,
        };
        self.begin_stream(client, Source::Mock(stream), framing);
    }

    /// Sends events while the interval, the stream cap and the turn budget allow.
    pub(crate) fn mock_pump(&mut self, id: ConnId) {
        let cap = self.settings.stream_buffer;
        let Service::Mock(mock) = &self.service else {
            return;
        };
        for _ in 0..TURN_BUDGET {
            let Some(Conn::Client(c)) = self.conns.get_mut(id) else {
                return;
            };
            let ClientState::Streaming {
                source: Source::Mock(m),
                ..
            } = &mut c.state
            else {
                return;
            };
            if m.tick.is_some() || c.out.len() >= cap {
                // Waiting for the interval, or for the client to drain (drive_client calls us again).
                return;
            }
            if m.next >= m.script.len() {
                c.end_stream();
                mock.stats.streams_completed.fetch_add(1, Ordering::Relaxed);
                return;
            }
            self.compose.clear();
            m.script.write_event(m.next, &mut self.compose);
            m.next += 1;
            if !mock.interval.is_zero() {
                m.tick = Some(self.timers.insert(
                    self.now + mock.interval,
                    id,
                    TimerKind::MockTick,
                ));
            }
            if let Err(e) = c.send_payload(&self.compose) {
                log::debug!("{}: client {id:?} gone: {e}", self.name);
                return self.close(id);
            }
            mock.stats
                .bytes_sent
                .fetch_add(self.compose.len() as u64, Ordering::Relaxed);
        }
        // Had its turn (only a zero-interval stream to a fast reader gets here): let the others run.
        self.defer(id);
    }

    /// The interval passed: the next event may go.
    pub(crate) fn on_mock_tick(&mut self, id: ConnId) {
        if let Some(Conn::Client(c)) = self.conns.get_mut(id)
            && let ClientState::Streaming {
                source: Source::Mock(m),
                ..
            } = &mut c.state
        {
            m.tick = None;
            self.drive_client(id);
        }
    }
}
