//! The one place where socket bytes are read and written.
//!
//! Every read, write, `writev`, peek and shutdown of every connection goes through a [`Transport`]: a
//! non-blocking `mio` socket and the [`Readiness`] remembered for it. So there is one place that retries on
//! `EINTR`, turns `WouldBlock` into "wait for the next edge", applies the short-read rule below, and counts
//! system calls ([`crate::reactor::instrument::count`]). Callers ask [`Transport::readable`] and
//! [`Transport::writable`] instead of looking at the flags, and never touch the socket.
//!
//! That shape is also the seam for TLS: an upstream `rustls` connection will live inside the transport,
//! between the socket and these methods. It keeps decrypted bytes of its own after the socket is drained,
//! so `readable` will also be true while it holds plaintext, and the socket's interest will follow its
//! `wants_read`/`wants_write`; callers will not change.
//!
//! # The short-read rule
//!
//! A read that returns fewer bytes than it asked for marks the socket not readable, without the extra
//! `read` that would return `EAGAIN`. For a TCP socket under edge-triggered epoll this is sound: `recv`
//! copies everything the receive queue holds, up to the length asked (packets that come in while it runs
//! are processed before it returns, or raise a new edge), so a short read means the queue was empty when it
//! returned, and any byte arriving later raises a new edge, which sets the flag again. nginx relies on the
//! same fact (`rev->ready = 0` after a short `recv`). It saves one system call per wakeup: on a relayed
//! token, a third of the calls.
//!
//! Where it does not hold: end-of-file. A peer's FIN that arrived together with the last data raised its
//! edge already, and no new edge will come for it; so when the peer's side is known closed
//! ([`Readiness::read_closed`], from `EPOLLRDHUP`), a short read leaves the flag set and the next read
//! returns the end-of-file. And it does not hold for readiness sources that are not a TCP receive queue
//! (a pipe split by `PIPE_BUF`, a TLS session holding plaintext), which is why the rule lives here, in the
//! one place that knows what it reads from.

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr};

use mio::net::TcpStream;
use mio::{Interest, Registry};

use super::Readiness;
use super::tls::{Handshake, Tls};
use crate::reactor::instrument::{Level, Syscall, adjust, count};
use crate::reactor::{ConnId, Ready, Tag};

/// What one read came to.
#[derive(Debug)]
pub enum ReadOutcome {
    /// `n > 0` bytes are at the front of the buffer.
    Data(usize),
    /// Nothing to read now; wait for the next edge.
    Drained,
    /// The peer closed its side.
    Eof,
    Failed(io::Error),
}

/// What a look at an idle connection found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleCheck {
    /// Nothing arrived: the connection can carry the next exchange.
    Quiet,
    /// The peer closed it, or it failed.
    Closed,
    /// Bytes nobody asked for: the connection cannot be trusted with another exchange.
    Unexpected,
}

/// A non-blocking socket, what we remember of its readiness, and, for an HTTPS connection, its TLS
/// session (boxed: most connections are plain, and a session is large).
#[derive(Debug)]
pub struct Transport {
    sock: TcpStream,
    ready: Readiness,
    tls: Option<Box<Tls>>,
    /// The socket has been writable once without an error: a connect in progress has completed.
    connected: bool,
    /// [`Transport::shutdown_write`] was asked for while TLS records (`close_notify` last) were still
    /// held: the `shutdown(Write)` waits for [`Transport::flush`] to write the last of them. Invariant:
    /// between calls it is true only on a TLS connection whose session still holds records, since
    /// `shutdown_write` flushes at once, and the flush that empties the session (at once in the clear)
    /// makes the shutdown and clears it.
    shutdown_pending: bool,
    /// Which of the worker's descriptor levels this socket counts in (taken back on drop).
    side: Level,
}

impl Transport {
    /// Wraps an accepted socket. Nagle's algorithm must be off: tokens are small writes that must leave at
    /// once. On Linux an accepted socket inherits `TCP_NODELAY` from its listener, which
    /// `server::bind_listeners` sets, so no system call is spent here; elsewhere it is set per socket.
    pub fn accepted(sock: TcpStream) -> Transport {
        #[cfg(not(target_os = "linux"))]
        if let Err(e) = sock.set_nodelay(true) {
            log::debug!("set_nodelay: {e}");
        }
        adjust(Level::ClientSockets, 1);
        Transport {
            sock,
            ready: Readiness::default(),
            tls: None,
            connected: true,
            shutdown_pending: false,
            side: Level::ClientSockets,
        }
    }

    /// Starts a non-blocking connect to `addr`. It completes when the socket first turns writable: the first
    /// write then either goes through or reports the connect error (`ECONNREFUSED`).
    pub fn connect(addr: SocketAddr) -> io::Result<Transport> {
        count(Syscall::Connect);
        let sock = TcpStream::connect(addr)?;
        // Small SSE events must not wait for Nagle's algorithm; the request is written in one go anyway.
        sock.set_nodelay(true)?;
        adjust(Level::UpstreamSockets, 1);
        Ok(Transport {
            sock,
            ready: Readiness::default(),
            tls: None,
            connected: false,
            shutdown_pending: false,
            side: Level::UpstreamSockets,
        })
    }

    /// Runs TLS over this connection from now on (before any byte went either way).
    pub fn start_tls(&mut self, tls: Tls) {
        self.tls = Some(Box::new(tls));
    }

    /// The TLS session, if this is a TLS connection.
    pub fn tls(&self) -> Option<&Tls> {
        self.tls.as_deref()
    }

    /// Moves a TLS handshake on as far as the socket allows (`Done` at once for plain TCP).
    pub fn handshake(&mut self) -> io::Result<Handshake> {
        match &mut self.tls {
            Some(tls) => tls.handshake(&mut self.sock, &mut self.ready),
            None => Ok(Handshake::Done),
        }
    }

    /// The transport holds output of its own that the socket has not taken: TLS records (plaintext
    /// written before, already encrypted, an alert, `close_notify`). Plain TCP holds none: what the
    /// socket does not take stays with the caller ([`super::OutBuf`]). While this is true the connection
    /// is not drained, and [`Transport::flush`] moves it on at the next writable edge.
    pub fn holds_output(&self) -> bool {
        // A pending shutdown implies held records (its invariant); asked too, so that the answer
        // covers the FIN that follows them.
        self.shutdown_pending || self.tls.as_ref().is_some_and(|t| t.holds_output())
    }

    /// Writes out what the transport holds itself (TLS records); true when nothing is left. Plain TCP
    /// holds nothing. False only while the socket is not writable: a writable edge is still to come.
    ///
    /// A pending [`Transport::shutdown_write`] completes here, with the flush that writes the last record
    /// (`close_notify`): the client driver flushes on every drive, so the writable edge that makes room
    /// finishes the shutdown.
    pub fn flush(&mut self) -> io::Result<bool> {
        if let Some(tls) = &mut self.tls
            && !tls.flush(&mut self.sock, &mut self.ready)?
        {
            return Ok(false);
        }
        if self.shutdown_pending {
            self.shutdown_pending = false;
            count(Syscall::Shutdown);
            self.sock.shutdown(Shutdown::Write)?;
        }
        Ok(true)
    }

    /// Registers the socket as socket `tag` of entry `id`, for both directions, once: with edge-triggered
    /// interest in both, no `epoll_ctl` is ever needed to switch between reading and writing.
    pub fn register(&mut self, registry: &Registry, id: ConnId, tag: Tag) -> io::Result<()> {
        count(Syscall::Register);
        registry.register(
            &mut self.sock,
            id.token(tag),
            Interest::READABLE | Interest::WRITABLE,
        )
    }

    /// Moves the registration to socket `tag` of entry `id` (a socket that changes owner). The kernel
    /// reports the socket's current state under the new token, so no readiness is lost on the way.
    pub fn reregister(&mut self, registry: &Registry, id: ConnId, tag: Tag) -> io::Result<()> {
        count(Syscall::Register);
        registry.reregister(
            &mut self.sock,
            id.token(tag),
            Interest::READABLE | Interest::WRITABLE,
        )
    }

    /// Folds an event into the remembered readiness.
    pub fn absorb(&mut self, ready: Ready) {
        self.connected |= ready.writable && !ready.error;
        self.ready.absorb(ready);
    }

    /// A connect has completed (always true for an accepted socket).
    pub fn connected(&self) -> bool {
        self.connected
    }

    /// The remembered readiness.
    pub fn readiness(&self) -> Readiness {
        self.ready
    }

    /// A read may return something (bytes, end-of-file or an error) without waiting for an event: the
    /// socket is readable, or the TLS session holds decrypted bytes.
    pub fn readable(&self) -> bool {
        self.ready.readable || self.tls.as_ref().is_some_and(|t| t.has_plaintext())
    }

    /// A write may take bytes without waiting for an event.
    pub fn writable(&self) -> bool {
        self.ready.writable
    }

    /// The peer has shut its sending side: once what it sent is read, nothing more will come.
    pub fn read_closed(&self) -> bool {
        self.ready.read_closed
    }

    /// The end of file a read reported is the end the peer meant. Always true for plain TCP, where a FIN
    /// is the only end there is; over TLS, true only if `close_notify` came before it (a bare FIN may be a
    /// cut: a crash, or a FIN injected on the path). Meaningful once a read returned `Eof`.
    pub fn eof_was_clean(&self) -> bool {
        self.tls.as_ref().is_none_or(|t| t.eof_was_clean())
    }

    /// Reads once into `buf` (which must not be empty), applying the short-read rule (module docs) to
    /// plain TCP. A TLS connection returns plaintext, reading records as needed.
    pub fn read(&mut self, buf: &mut [u8]) -> ReadOutcome {
        if let Some(tls) = &mut self.tls {
            return tls.read(&mut self.sock, &mut self.ready, buf);
        }
        loop {
            count(Syscall::Read);
            return match self.sock.read(buf) {
                Ok(0) if !buf.is_empty() => {
                    self.ready.saw_eof();
                    ReadOutcome::Eof
                }
                Ok(n) => {
                    if n < buf.len() && !self.ready.read_closed {
                        self.ready.readable = false;
                    }
                    ReadOutcome::Data(n)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    count(Syscall::ReadWouldBlock);
                    self.ready.readable = false;
                    ReadOutcome::Drained
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => ReadOutcome::Failed(e),
            };
        }
    }

    /// Writes `parts` (one `write`, or one `writev` for several) and returns how many bytes the socket took:
    /// 0 when it would block, which clears `writable` until the next edge.
    pub fn write(&mut self, parts: &[IoSlice<'_>]) -> io::Result<usize> {
        if let Some(tls) = &mut self.tls {
            return tls.write(&mut self.sock, &mut self.ready, parts);
        }
        loop {
            let result = match parts {
                [one] => {
                    count(Syscall::Write);
                    self.sock.write(one)
                }
                many => {
                    count(Syscall::Writev);
                    self.sock.write_vectored(many)
                }
            };
            return match result {
                Ok(0) if parts.iter().any(|p| !p.is_empty()) => {
                    Err(io::ErrorKind::WriteZero.into())
                }
                Ok(n) => Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.ready.writable = false;
                    Ok(0)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // A refused connect surfaces here (or as `NotConnected` when the writable event was an error).
                Err(e) => Err(e),
            };
        }
    }

    /// Shuts our sending side: the peer reads end-of-file after what we sent (after `close_notify` on
    /// TLS).
    ///
    /// Nothing sent before is dropped. Plain TCP: the kernel sends its FIN after the bytes it holds, so
    /// the `shutdown(Write)` happens now. TLS: `close_notify` queues behind the records rustls still holds,
    /// and the socket may not take them all now; shutting it at once would cut them off (the tail of a
    /// reply, then the missing `close_notify` that tells the peer it was cut). So the shutdown is
    /// remembered and [`Transport::flush`] makes it once the last record is out. The caller bounds the
    /// wait (the client's lingering close has its deadline); while it lasts, [`Transport::holds_output`]
    /// is true.
    pub fn shutdown_write(&mut self) -> io::Result<()> {
        if let Some(tls) = &mut self.tls {
            tls.queue_close_notify();
        }
        self.shutdown_pending = true;
        self.flush().map(|_| ())
    }

    /// Makes the coming close an abort: the peer reads a reset (RST) instead of an end of file, and
    /// nothing more is sent, not even a TLS `close_notify` (the session is dropped) or bytes the kernel
    /// still holds (`SO_LINGER` 0). Only for the mock's `reset-after` fault: an upstream that dies
    /// mid-answer looks like this.
    pub fn abort_on_close(&mut self) -> io::Result<()> {
        self.tls = None;
        socket2::SockRef::from(&self.sock).set_linger(Some(std::time::Duration::ZERO))
    }

    /// Looks at a connection that should be silent (idle in a pool, or just finished with) without taking
    /// its bytes. Costs no system call when no edge came since the last read said the socket was drained.
    pub fn check_idle(&mut self) -> IdleCheck {
        if let Some(tls) = &mut self.tls {
            return tls.check_idle(&mut self.sock, &mut self.ready);
        }
        if !self.ready.readable {
            return IdleCheck::Quiet;
        }
        let mut probe = [0u8; 1];
        loop {
            count(Syscall::Peek);
            return match self.sock.peek(&mut probe) {
                Ok(0) => {
                    self.ready.saw_eof();
                    IdleCheck::Closed
                }
                Ok(_) => IdleCheck::Unexpected,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.ready.readable = false;
                    IdleCheck::Quiet
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => IdleCheck::Closed,
            };
        }
    }
}

/// An accepted socket as a transport, with TLS on top when `tls` is given (an HTTPS listener). `None`
/// (and a log line naming the peer) when the TLS session cannot be set up.
pub fn accepted(
    sock: TcpStream,
    tls: Option<&std::sync::Arc<rustls::ServerConfig>>,
    worker: &str,
    peer: std::net::SocketAddr,
) -> Option<Transport> {
    let mut io = Transport::accepted(sock);
    if let Some(config) = tls {
        match Tls::server(config.clone()) {
            Ok(session) => io.start_tls(session),
            Err(e) => {
                log::warn!("{worker}: {peer}: {e}");
                return None;
            }
        }
    }
    Some(io)
}

/// Turns away a client just accepted, for a worker with no room for it: one read that drops whatever
/// the client has sent so far, one write of `reply`, and the close. The read is not for the request
/// (nothing is parsed, and no more than one read is made): a socket closed with unread bytes sends a reset
/// instead of a FIN, and a reset can destroy the reply in the client's buffer before it is read. A
/// socket just accepted has room for a short reply, so one write is enough; what it does not take is lost.
pub fn refuse(sock: TcpStream, reply: &[u8], scratch: &mut [u8]) {
    count(Syscall::Read);
    let _ = (&sock).read(scratch);
    count(Syscall::Write);
    let _ = (&sock).write(reply);
}

impl Drop for Transport {
    /// A TLS session says goodbye (`close_notify`, or the alert of a failed handshake, already queued)
    /// before its descriptor closes; without waiting, so closing never blocks the loop.
    fn drop(&mut self) {
        if let Some(tls) = &mut self.tls {
            tls.close_notify(&mut self.sock, &mut self.ready);
        }
        adjust(self.side, -1);
    }
}

#[cfg(test)]
mod tests;
