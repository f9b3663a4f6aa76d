//! Deciding: what a client connection does next, as a pure function of [`Facts`] ([`decide`]), so that
//! every rule can be tested without a socket (`tests.rs` beside this file sweeps every combination).

use super::{AfterReply, Input};
use crate::conn::outbuf::Flushed;

/// The state, without its data: what [`decide`] needs to know of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateKind {
    AwaitingRequest,
    Serving,
    Replying(AfterReply),
    Lingering,
}

/// Everything [`decide`] looks at, so that it can be tested without a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    pub state: StateKind,
    /// What the flush just before came to.
    pub flushed: Flushed,
    pub readable: bool,
    pub read_closed: bool,
    pub input: Input,
    /// `inbuf` holds a head's worth of bytes: read no more while a response is in progress.
    pub inbuf_full: bool,
    /// An idle kept-alive connection: it has been answered before, and nothing of a next request has
    /// arrived (no byte buffered, no body being read). A fresh connection is never idle: its first request
    /// may be on its way.
    pub idle: bool,
    /// The application drains (`ClientApp::draining`): an idle connection closes.
    pub draining: bool,
}

/// What a client connection should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Run the request reader over `inbuf`.
    Parse,
    /// Read request bytes into `inbuf`.
    Read,
    /// A response is in progress: read (keeping pipelined bytes) so as to notice the client leaving.
    Watch,
    /// Lingering: read and discard until the client closes.
    Discard,
    /// The queue drained under a stream that may have paused for it: let the application go on.
    Resume,
    /// The reply is out; the connection stays for the next request.
    EndReply,
    /// The reply is out and the connection must close (or, draining, it is idle): half-close and linger.
    Linger,
    /// Close now: the client closed its side and nothing it sent is left to answer.
    Close,
    /// The client closed its side while its response was in progress: it left.
    Left,
    /// Nothing to do until the next event or timer.
    Wait,
}

/// Decides the next step from the facts alone. The order of the arms is the order of priorities: a
/// departure first, then finishing what is in progress, then reading.
///
/// Nothing we owe the client is dropped by a close we choose: `EndReply`, `Linger` and `Close` all wait
/// until `drained` (no byte held, in `out` or in the transport's TLS session). A pending flush means the
/// socket said `WouldBlock`, so the next writable edge drives the connection again (and the linger
/// deadline bounds how long a lingering one waits for it). Only a client that left (`Left`), or a failed
/// socket, loses what is held: nobody is there to read it.
pub fn decide(f: &Facts) -> Next {
    let drained = f.flushed != Flushed::Pending;
    match f.state {
        // A client that shuts its side mid-response has left (as nginx assumes too): stop serving it.
        StateKind::Serving if f.read_closed => Next::Left,
        StateKind::Serving if f.flushed == Flushed::Drained => Next::Resume,
        StateKind::Replying(AfterReply::KeepAlive) if drained => Next::EndReply,
        StateKind::Replying(AfterReply::Close) if drained => Next::Linger,
        StateKind::AwaitingRequest if f.input == Input::Unparsed => Next::Parse,
        // Draining, an idle kept-alive connection with nothing to read closes (politely: it lingers, so
        // that a request crossing our FIN is discarded, not answered with a reset).
        StateKind::AwaitingRequest if f.draining && f.idle && !f.readable && drained => {
            Next::Linger
        }
        StateKind::AwaitingRequest if f.readable => Next::Read,
        // Every request the client sent before closing its side has been answered, and is out.
        StateKind::AwaitingRequest if f.read_closed && drained => Next::Close,
        StateKind::Lingering if f.readable => Next::Discard,
        // The client closed: close once `close_notify` (and any record before it) has left.
        StateKind::Lingering if f.read_closed && drained => Next::Close,
        StateKind::Serving | StateKind::Replying(_)
            if f.readable && !f.read_closed && !f.inbuf_full =>
        {
            Next::Watch
        }
        _ => Next::Wait,
    }
}
