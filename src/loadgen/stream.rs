//! One stream of a run: the relay's upstream client state machine, driven for measuring.
//!
//! A [`LoadStream`] is an [`UpstreamConn`], the very type the relay talks to its upstreams with
//! (connect, TLS, send the request, read the head, read the body with the chunked decoder), plus what
//! a load generator notes about it ([`Timing`]) and an [`EventCounter`]. The steps below mirror the
//! relay's (`relay::steps`): one per state of the connection, each doing as much as the socket allows
//! and saying what comes next ([`Step`]). What they do with the bytes differs: the relay passes them
//! on; here they are decoded, counted and dropped.
//!
//! ```text
//!  UpstreamConn::connect ─▶ Handshaking (https) ─▶ Sending ─▶ AwaitingHead ─▶ Body ─▶ Ended(Completed)
//!                           │ Tls, Connect         │ Connect  │ Io, Protocol │ Protocol, Truncated
//!                           └──────────────────────┴──────────┴─ Refused ────┴─▶ Ended(Failed | Refused)
//!  (the generator's Timeout ends it in any state)
//! ```
//!
//! Per stream this costs the connection, a few instants and counters, and the counter's few bytes: no
//! buffer (reads land in the worker's scratch buffer) and nothing per event (gaps go straight into the
//! worker's histogram, [`Timing::events`]). The response head is the one thing held while it arrives,
//! as the relay holds it.

use std::io;
use std::ops::Range;
use std::time::{Duration, Instant};

use crate::conn::ReadOutcome;
use crate::conn::tls::Handshake;
use crate::conn::upstream::{HeadProgress, SendProgress, UpstreamConn, UpstreamState};
use crate::http::body::BodyDecoder;
use crate::reactor::TimerKey;

use super::events::EventCounter;
use super::tally::{Reason, Tally, micros};

/// The longest response head accepted.
const MAX_HEAD: usize = 64 * 1024;

/// One stream (module docs).
pub struct LoadStream {
    pub conn: UpstreamConn,
    /// The stream's `--timeout`, kept to be cancelled when it ends first.
    pub deadline: TimerKey,
    timing: Timing,
    sse: EventCounter,
}

/// What is noted about a stream as it goes: instants and counters.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// When the stream was due: every latency counts from here.
    pub origin: Instant,
    /// When the first byte of the response came; recorded once the head says 2xx.
    pub first_byte: Option<Instant>,
    pub last_event: Option<Instant>,
    pub events: u32,
    pub max_gap: Duration,
}

/// What a step came to.
#[derive(Debug)]
pub enum Step {
    /// Progress was made; step again.
    Continue,
    /// Nothing more until the socket is ready.
    Wait,
    Ended(Ending),
}

/// How a stream ended.
#[derive(Debug)]
pub enum Ending {
    /// The last chunk came at `at`; the connection may carry another request if `reusable`.
    Completed {
        at: Instant,
        reusable: bool,
    },
    /// The response head had this status, not a 2xx.
    Refused(u16),
    Failed(Reason, String),
}

/// The worker's parts a step borrows: its read buffer, its range list, the request, its tally.
pub struct StepIo<'a> {
    pub scratch: &'a mut [u8],
    pub ranges: &'a mut Vec<Range<usize>>,
    pub request: &'a [u8],
    pub tally: &'a mut Tally,
}

impl Timing {
    /// `n` events arrived at `at`: the first is the time to first event, each later one a gap.
    pub fn events(&mut self, n: u32, at: Instant, tally: &mut Tally) {
        for _ in 0..n {
            match self.last_event {
                None => tally
                    .first_event
                    .saturating_record(micros(at.saturating_duration_since(self.origin))),
                Some(last) => {
                    let gap = at.saturating_duration_since(last);
                    tally.gap.saturating_record(micros(gap));
                    self.max_gap = self.max_gap.max(gap);
                }
            }
            self.last_event = Some(at);
        }
        self.events += n;
        tally.events += u64::from(n);
    }
}

impl LoadStream {
    /// A stream due at `origin` on `conn` (connecting, or reused), with its deadline armed.
    pub fn new(conn: UpstreamConn, origin: Instant, deadline: TimerKey) -> LoadStream {
        LoadStream {
            conn,
            deadline,
            timing: Timing {
                origin,
                first_byte: None,
                last_event: None,
                events: 0,
                max_gap: Duration::ZERO,
            },
            sse: EventCounter::default(),
        }
    }

    /// What was noted so far.
    pub fn timing(&self) -> &Timing {
        &self.timing
    }

    /// One step, as far as the socket allows (module docs).
    pub fn step(&mut self, io: &mut StepIo<'_>) -> Step {
        // Records a TLS session could not write earlier go first (handshake messages, our request).
        if let Err(e) = self.conn.io.flush() {
            return self.broken(e);
        }
        match &self.conn.state {
            UpstreamState::Handshaking => match self.conn.handshake() {
                Ok(Handshake::Done) => Step::Continue,
                Ok(Handshake::Blocked) => Step::Wait,
                // A certificate, name or protocol failure: rustls says which.
                Err(e) if e.kind() == io::ErrorKind::InvalidData => failed(Reason::Tls, e),
                // A refused connect surfaces here too, as the ClientHello's write error.
                Err(e) => self.broken(e),
            },
            UpstreamState::Sending { .. } => match self.conn.write_request(io.request) {
                Ok(SendProgress::Done) => Step::Continue,
                Ok(SendProgress::Blocked) => Step::Wait,
                Err(e) => self.broken(e),
            },
            UpstreamState::AwaitingHead { .. } => self.read_head(io),
            UpstreamState::Body { .. } => self.read_body(io),
        }
    }

    /// A socket error: the connect's if the connection was never made, else the connection's.
    fn broken(&self, e: io::Error) -> Step {
        match self.conn.io.connected() {
            false => failed(Reason::Connect, e),
            true => failed(Reason::Io, e),
        }
    }

    /// `AwaitingHead`: read, and parse once the head is whole; the body bytes that came with it are
    /// decoded at once.
    fn read_head(&mut self, io: &mut StepIo<'_>) -> Step {
        if !self.conn.io.readable() {
            return Step::Wait;
        }
        let n = match self.conn.io.read(io.scratch) {
            ReadOutcome::Data(n) => n,
            ReadOutcome::Drained => return Step::Wait,
            ReadOutcome::Eof => {
                return failed(Reason::Io, "the connection closed before the response head");
            }
            ReadOutcome::Failed(e) => return failed(Reason::Io, e),
        };
        // Read here, not the loop's `now`: in a busy iteration that can be milliseconds old.
        let at = Instant::now();
        self.timing.first_byte.get_or_insert(at);
        let (head, rest) = match self.conn.on_head_bytes(&io.scratch[..n], MAX_HEAD) {
            Ok(HeadProgress::NeedMore) => return Step::Continue,
            Ok(HeadProgress::Complete { head, rest }) => (head, rest),
            Err(e) => return failed(Reason::Protocol, e),
        };
        if !(200..300).contains(&head.status) {
            return Step::Ended(Ending::Refused(head.status));
        }
        let first = self.timing.first_byte.unwrap_or(at);
        io.tally
            .first_byte
            .saturating_record(micros(first.saturating_duration_since(self.timing.origin)));
        self.on_body(&rest, at, io.ranges, io.tally)
    }

    /// `Body`: read, decode, count.
    fn read_body(&mut self, io: &mut StepIo<'_>) -> Step {
        if !self.conn.io.readable() {
            return Step::Wait;
        }
        match self.conn.io.read(io.scratch) {
            ReadOutcome::Data(n) => {
                let at = Instant::now();
                self.on_body(&io.scratch[..n], at, io.ranges, io.tally)
            }
            ReadOutcome::Drained => Step::Wait,
            ReadOutcome::Eof => self.on_eof(),
            // A reset in the middle of the body is a cut, like a close.
            ReadOutcome::Failed(e) => failed(Reason::Truncated, e),
        }
    }

    /// Body bytes that arrived at `at`.
    fn on_body(
        &mut self,
        bytes: &[u8],
        at: Instant,
        ranges: &mut Vec<Range<usize>>,
        tally: &mut Tally,
    ) -> Step {
        let UpstreamState::Body {
            decoder,
            keep_alive,
        } = &mut self.conn.state
        else {
            return Step::Wait;
        };
        ranges.clear();
        let decoded = match decoder.decode(bytes, ranges) {
            Ok(d) => d,
            Err(e) => return failed(Reason::Protocol, format!("chunked body: {e}")),
        };
        for range in ranges.iter() {
            let n = self.sse.feed(&bytes[range.clone()]);
            if n > 0 {
                self.timing.events(n, at, tally);
            }
        }
        match decoded.done {
            // Bytes after the body's end were never asked for: such a connection is not reused.
            true => Step::Ended(Ending::Completed {
                at,
                reusable: *keep_alive && decoded.consumed == bytes.len(),
            }),
            false => Step::Continue,
        }
    }

    /// The server closed the connection: the end of a body that runs until the close, else a cut.
    fn on_eof(&self) -> Step {
        let UpstreamState::Body { decoder, .. } = &self.conn.state else {
            return Step::Wait;
        };
        // Over TLS, a close without `close_notify` may be a cut (as the relay judges it, `relay::steps`).
        let clean = !matches!(decoder, BodyDecoder::UntilClose) || self.conn.io.eof_was_clean();
        match decoder.on_eof() {
            Ok(()) if clean => Step::Ended(Ending::Completed {
                at: Instant::now(),
                reusable: false,
            }),
            _ => failed(
                Reason::Truncated,
                "the connection closed before the body's end",
            ),
        }
    }
}

fn failed(reason: Reason, detail: impl std::fmt::Display) -> Step {
    Step::Ended(Ending::Failed(reason, detail.to_string()))
}
