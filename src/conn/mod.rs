//! Per-socket state: what each connection is waiting for, and the socket operations it needs.
//!
//! A worker's slab holds three kinds of entry ([`Conn`]): its listener, the clients it accepted, and the
//! upstream connections it opened. The types here own their sockets and know how to read, write and frame
//! bytes on them; deciding *what* to do (route a request, tie a client to an upstream) is the relay's job
//! (`crate::relay`), so these types never touch another connection.

pub mod client;
pub mod upstream;

use std::io::{self, Read};

use mio::event::Event;
use mio::net::{TcpListener, TcpStream};

pub use client::ClientConn;
pub use upstream::UpstreamConn;

/// One entry of a worker's slab.
///
/// Every slab slot is as large as the largest variant, so the client (the largest, mostly for its request
/// reader) is boxed: an upstream connection's slot then costs what an upstream needs, not what a client does.
pub enum Conn {
    Listener(TcpListener),
    Client(Box<ClientConn>),
    Upstream(UpstreamConn),
}

/// Readiness as `mio` last reported it, remembered between events.
///
/// `mio` is edge-triggered: it reports a socket readable once, when data arrives, not again while data
/// remains. So we remember the edge in a flag, and clear the flag only when the socket itself says
/// `WouldBlock`. A connection that stops reading for a while (backpressure) consults the flag when it
/// resumes; without it, the socket would wait forever for an edge that already came.
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
    pub fn absorb(&mut self, event: &Event) {
        let trouble = event.is_error();
        self.readable |= event.is_readable() || event.is_read_closed() || trouble;
        self.writable |= event.is_writable() || event.is_write_closed() || trouble;
        self.read_closed |= event.is_read_closed();
    }

    /// A read returned end-of-file: nothing more to read, ever.
    pub fn saw_eof(&mut self) {
        self.readable = false;
        self.read_closed = true;
    }
}

/// What one `read` on a socket came to.
#[derive(Debug)]
pub enum ReadOutcome {
    /// `n > 0` bytes are at the front of the buffer.
    Data(usize),
    /// Nothing to read now; the readable flag has been cleared.
    Drained,
    /// The peer closed its side.
    Eof,
    Failed(io::Error),
}

/// Reads once into `buf`, retrying on `EINTR` and clearing `ready.readable` on `WouldBlock`.
pub fn read_once(sock: &mut TcpStream, ready: &mut Readiness, buf: &mut [u8]) -> ReadOutcome {
    loop {
        return match sock.read(buf) {
            Ok(0) => {
                ready.saw_eof();
                ReadOutcome::Eof
            }
            Ok(n) => ReadOutcome::Data(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                ready.readable = false;
                ReadOutcome::Drained
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => ReadOutcome::Failed(e),
        };
    }
}

#[cfg(test)]
mod more_tests {
    use super::*;
    use std::io::Write;
    use std::time::Duration;

    /// `read_once` clears `readable` exactly when the socket says WouldBlock.
    #[test]
    fn read_once_clears_readable_on_would_block_only() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut peer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (sock, _) = listener.accept().unwrap();
        sock.set_nonblocking(true).unwrap();
        let mut sock = TcpStream::from_std(sock);
        let mut ready = Readiness {
            readable: true,
            writable: true,
            read_closed: false,
        };
        let mut buf = [0u8; 16];
        assert!(matches!(
            read_once(&mut sock, &mut ready, &mut buf),
            ReadOutcome::Drained
        ));
        assert!(!ready.readable, "WouldBlock must clear the readable flag");

        peer.write_all(b"abc").unwrap();
        let mut poll = mio::Poll::new().unwrap();
        poll.registry()
            .register(&mut sock, mio::Token(0), mio::Interest::READABLE)
            .unwrap();
        let mut events = mio::Events::with_capacity(4);
        while !ready.readable {
            poll.poll(&mut events, Some(Duration::from_secs(5)))
                .unwrap();
            assert!(!events.is_empty(), "no readable event within 5 s");
            events.iter().for_each(|e| ready.absorb(e));
        }
        assert!(matches!(
            read_once(&mut sock, &mut ready, &mut buf),
            ReadOutcome::Data(3)
        ));
        assert!(ready.readable, "data must not clear the flag");
        assert!(matches!(
            read_once(&mut sock, &mut ready, &mut buf),
            ReadOutcome::Drained
        ));
        assert!(!ready.readable);
    }
}
