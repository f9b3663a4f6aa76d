//! One answer in progress: the mock's work while its client is `Serving`. An answer held back by a
//! `head-delay`, a stream, or a stream that a fault stopped. What a stream sends next, its next event or
//! the fault that takes its place, is decided here without I/O ([`MockStream::step`]); `Mock::pump` sends
//! it.

use std::time::Duration;

use super::answer::Answer;
use super::fault::{Break, Cut, Fault};
use super::script::MockScript;
use crate::conn::client::{AfterReply, StreamFraming};
use crate::http::request::Request;
use crate::reactor::TimerKey;

/// How an answer reaches its client, as its request said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// What happens to the connection after the answer.
    pub then: AfterReply,
    /// How a streamed body is framed: chunked, or ended by the close for an HTTP/1.0 client.
    pub framing: StreamFraming,
    /// A `HEAD`: the head without the body.
    pub head_only: bool,
}

impl Delivery {
    pub fn of(req: &Request) -> Delivery {
        let then = AfterReply::of(req);
        Delivery {
            then,
            framing: StreamFraming::for_request(req.version, then),
            head_only: req.method == "HEAD",
        }
    }
}

/// An answer held back by a `head-delay`, as it was decided.
#[derive(Debug)]
pub struct Held {
    pub answer: Answer,
    pub fault: Fault,
    pub delivery: Delivery,
}

/// What the mock is doing for a client it serves: the `W` of `ClientState::Serving(W)`.
#[derive(Debug)]
pub enum MockWork {
    /// Nothing is sent before `wake` falls due (`MockTimer::Tick`); then `held` goes out as if just decided.
    Held { held: Held, wake: TimerKey },
    /// A stream in progress.
    Streaming(MockStream),
    /// A fault stopped the stream (`stall-after`, `bad-chunk-after`): nothing more will be sent. It holds
    /// no buffer and no timer, only the connection, until the client leaves.
    Stalled,
}

impl MockWork {
    /// The deadline this work has armed, which must be cancelled if its client goes first.
    pub fn timer(&self) -> Option<TimerKey> {
        match self {
            MockWork::Held { wake, .. } => Some(*wake),
            MockWork::Streaming(stream) => stream.tick,
            MockWork::Stalled => None,
        }
    }

    /// Takes out the answer a head delay held back, once the delay is over. The work is left `Stalled`
    /// (nothing to send) until the caller puts in what comes next.
    pub fn take_held(&mut self) -> Option<Held> {
        match std::mem::replace(self, MockWork::Stalled) {
            MockWork::Held { held, .. } => Some(held),
            other => {
                *self = other;
                None
            }
        }
    }
}

/// One stream in progress.
#[derive(Debug)]
pub struct MockStream {
    script: MockScript,
    pub framing: StreamFraming,
    /// Index of the next event to send.
    next: usize,
    /// Armed while waiting: for the first-token delay, or for the interval before the next event.
    pub tick: Option<TimerKey>,
    /// Where a fault breaks the stream: in place of event `.0`, in the way `.1`.
    ///
    /// Invariant: `.0 < script.len()`, so a fault asked for always happens, and a broken stream never looks
    /// complete.
    cut: Option<(usize, Break)>,
    /// `close-idle`, for when the stream has ended.
    pub close_idle: Option<Duration>,
}

/// What a stream does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Send the event just written; the stream ends with it when `last`.
    Send { last: bool },
    /// `stall-after`: send nothing more.
    Stall,
    /// `reset-after`: reset the connection.
    Reset,
    /// `bad-chunk-after`: send a malformed chunk-size line, then nothing more.
    BadChunk,
}

impl MockStream {
    /// A stream of `script`, framed as `framing`, broken where and how `fault` says.
    pub fn new(script: MockScript, framing: StreamFraming, fault: &Fault) -> MockStream {
        let cut = match fault.cut {
            // K tokens are the opening events and K token events; a shorter answer is cut in place of its
            // last event (see the invariant).
            Some(Cut::AfterTokens(k, how)) => {
                let k = usize::try_from(k).unwrap_or(usize::MAX);
                let at = script.first_token_event().saturating_add(k);
                Some((at.min(script.len().saturating_sub(1)), how))
            }
            // Not the stream's business: `Mock::begin` resets before the head.
            Some(Cut::ResetBeforeHead) | None => None,
        };
        MockStream {
            script,
            framing,
            next: 0,
            tick: None,
            cut,
            close_idle: fault.close_idle,
        }
    }

    /// The next step: writes the next event to `out` (or, for `error-after`, the provider's error event,
    /// which then ends the stream), or says which fault takes its place. A fault's step is repeated if
    /// asked again, so the caller may wait before it acts on it.
    pub fn step(&mut self, out: &mut Vec<u8>) -> Step {
        let i = self.next;
        match self.cut {
            Some((at, how)) if at == i => match how {
                Break::Stall => Step::Stall,
                Break::Reset => Step::Reset,
                Break::BadChunk => Step::BadChunk,
                Break::Error => {
                    self.script.write_error_event(i, out);
                    self.next = self.script.len();
                    Step::Send { last: true }
                }
            },
            _ => {
                self.script.write_event(i, out);
                self.next += 1;
                Step::Send {
                    last: self.next >= self.script.len(),
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "tests_stream.rs"]
mod tests;
