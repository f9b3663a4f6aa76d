//! Per-socket state machines, and the one transport every socket byte passes through.
//!
//! - [`transport`]: [`Transport`], a socket and its remembered readiness: the only code that reads, writes,
//!   peeks or shuts down a socket, so the only place that handles `WouldBlock`, `EINTR` and short reads,
//!   and counts system calls.
//! - [`outbuf`]: [`OutBuf`], the bytes a socket has not taken yet, written with one `writev` per chunk.
//! - [`client`]: [`ClientConn`], a downstream connection: reading requests, replying, keep-alive,
//!   lingering close; and [`client::drive`], the client driver shared by every application (the relay, the
//!   mock), which decides from the state ([`client::decide`]) and then acts.
//! - [`upstream`]: [`UpstreamConn`], one HTTP/1.1 exchange with an upstream server at a time.
//!
//! These types know sockets and HTTP framing. What a request *means* (route it, tie a client to an
//! upstream, make up tokens) belongs to the applications, `crate::relay` and `crate::mock`.

pub mod client;
pub mod outbuf;
pub mod tls;
pub mod transport;
pub mod upstream;

pub use client::ClientConn;
pub use outbuf::OutBuf;
pub use transport::{ReadOutcome, Transport};
pub use upstream::UpstreamConn;

use crate::reactor::Ready;

/// Readiness as `mio` last reported it, remembered between events.
///
/// `mio` is edge-triggered: it reports a socket readable once, when data arrives, not again while data
/// remains. So we remember the edge in a flag, and clear the flag only when the socket itself says it is
/// drained (see [`Transport::read`]). A connection that stops reading for a while (backpressure) consults
/// the flag when it resumes; without it, the socket would wait forever for an edge that already came.
///
/// `read_closed` is different in kind: it is a fact about the peer, not about the socket's buffer. Once the
/// peer has shut its sending side (epoll reports `EPOLLRDHUP`, or a read returned end-of-file), nothing
/// more will come after the bytes already received, so it is never cleared. Knowing it without reading
/// matters when we have stopped reading (a client with a full input buffer) but must still notice it left.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    pub readable: bool,
    pub writable: bool,
    pub read_closed: bool,
}

impl Readiness {
    /// Folds an event in. Errors and hang-ups count as both: the next read or write reports them.
    pub fn absorb(&mut self, ready: Ready) {
        self.readable |= ready.readable || ready.read_closed || ready.error;
        self.writable |= ready.writable || ready.error;
        self.read_closed |= ready.read_closed;
    }

    /// A read returned end-of-file: nothing more to read, ever.
    pub fn saw_eof(&mut self) {
        self.readable = false;
        self.read_closed = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_and_hangups_count_as_both_directions() {
        let mut r = Readiness::default();
        r.absorb(Ready {
            error: true,
            ..Ready::default()
        });
        assert!(r.readable && r.writable && !r.read_closed);
        let mut r = Readiness::default();
        r.absorb(Ready {
            read_closed: true,
            ..Ready::default()
        });
        assert!(r.readable && r.read_closed && !r.writable);
        r.saw_eof();
        r.absorb(Ready {
            writable: true,
            ..Ready::default()
        });
        assert!(
            !r.readable && r.read_closed && r.writable,
            "read_closed is never cleared"
        );
    }
}
