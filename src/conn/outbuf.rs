//! Outgoing bytes that a socket has not taken yet.
//!
//! Writing is eager: bytes are offered to the socket as soon as they exist, and only what it does not take
//! is copied here. A streamed chunk goes out as one `writev` of its parts straight from where they are (the
//! size line on the stack, the payload in the worker's read buffer, the CRLF in a constant), behind whatever
//! was queued before, so that a queued stream head and the first chunk, or the last payload and the last
//! chunk, leave in one system call.

use std::io::{self, IoSlice};

use super::transport::Transport;
use crate::http::response::{LAST_CHUNK, chunk_size_line};
use crate::reactor::instrument::{Level, adjust};

/// What [`OutBuf::flush`] came to. "Held" output is bytes in this buffer *or* in the transport (the TLS
/// records rustls keeps, [`Transport::holds_output`]): both are bytes the peer has not been given yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flushed {
    /// Nothing was held, before or after.
    Empty,
    /// Output was held, and now all of it is out: whoever paused because the queue was full may go on.
    /// Reported once per drain, so a paused stream never misses it (see [`OutBuf`]'s `owed`).
    Drained,
    /// Output is still held (here or in the transport); the socket would block.
    Pending,
}

/// Bytes the socket has not taken yet.
///
/// Invariant: after [`OutBuf::flush`] or [`OutBuf::send`] returns `Ok`, either nothing is held (the buffer is
/// empty and the transport holds no output) or the socket said `WouldBlock` (so the transport is not
/// writable). Hence held output never needs a write attempt before the next writable event, and new bytes
/// can simply be appended behind it.
#[derive(Debug, Default)]
pub struct OutBuf {
    buf: Vec<u8>,
    /// Bytes of `buf` already written.
    pos: usize,
    /// Bytes the socket has taken through this buffer, ever (the client's progress, for its write
    /// deadline).
    taken: u64,
    /// The last flush left output held: the next flush that finds none reports `Drained`, even if the
    /// transport's records left by another way in between (a read through TLS flushes them too), so the
    /// transition a paused stream waits for is never lost.
    owed: bool,
    /// `len()` as last told to the worker's [`Level::HeldBytes`] (so the level moves by differences).
    reported: usize,
}

impl OutBuf {
    /// Bytes still to write.
    pub fn len(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the socket has taken so far, queued or sent straight away.
    pub fn taken(&self) -> u64 {
        self.taken
    }

    /// Appends bytes behind whatever is queued, without writing: the caller flushes (the client driver
    /// flushes before it decides anything), or sends more behind them.
    pub fn push(&mut self, bytes: &[u8]) {
        self.compact();
        self.buf.extend_from_slice(bytes);
        self.report();
    }

    /// Writes held output (the transport's records first, then this buffer) until none is left or the
    /// socket would block.
    ///
    /// The buffer being empty is not enough to call the connection drained: over TLS, `Transport::write`
    /// takes plaintext into rustls up to its limit and may be left holding records when the socket pushes
    /// back. Those are the tail of what was sent (the last chunk of a stream, say); a caller that took an
    /// empty buffer for "all out" and shut the socket would cut them off. So `Pending` while the transport
    /// holds output too.
    pub fn flush(&mut self, io: &mut Transport) -> io::Result<Flushed> {
        let held = self.owed || !self.is_empty() || io.holds_output();
        // Records a TLS session holds go first: they carry bytes sent before.
        io.flush()?;
        while !self.is_empty() && io.writable() {
            let n = io.write(&[IoSlice::new(&self.buf[self.pos..])])?;
            self.taken += n as u64;
            self.advance(n);
        }
        // Either all is out, or the socket said `WouldBlock` (the invariant): `io.write` and `io.flush`
        // stop with records in hand only then.
        self.owed = !self.is_empty() || io.holds_output();
        self.report();
        Ok(if self.owed {
            Flushed::Pending
        } else if held {
            Flushed::Drained
        } else {
            Flushed::Empty
        })
    }

    /// Sends `parts` behind what is queued: when the socket is writable, everything goes in one `writev`
    /// straight from where it is, and only what the socket did not take is copied here.
    pub fn send(&mut self, io: &mut Transport, parts: &[&[u8]]) -> io::Result<()> {
        let mut written = 0;
        if io.writable() {
            // At most the queue and four parts (a chunk's three and a last chunk).
            let mut slices = [IoSlice::new(&[]); 5];
            let mut n = 0;
            for part in std::iter::once(&self.buf[self.pos..]).chain(parts.iter().copied()) {
                if !part.is_empty() && n < slices.len() {
                    slices[n] = IoSlice::new(part);
                    n += 1;
                }
            }
            if n > 0 {
                written = io.write(&slices[..n])?;
                self.taken += written as u64;
            }
        }
        // Whatever the socket did not take, queued first, then the parts.
        let from_queue = written.min(self.len());
        self.advance(from_queue);
        let mut skip = written - from_queue;
        self.compact();
        for part in parts {
            let taken = skip.min(part.len());
            self.buf.extend_from_slice(&part[taken..]);
            skip -= taken;
        }
        // Restores the invariant: after a short write the socket may still take more.
        self.flush(io).map(|_| ())
    }

    /// Sends `payload` as one chunk of a chunked body: size line, payload, CRLF, and the last chunk after it
    /// when `last`. An empty payload sends no chunk (a zero-size chunk would end the body).
    pub fn send_chunk(&mut self, io: &mut Transport, payload: &[u8], last: bool) -> io::Result<()> {
        let mut line = [0u8; 20];
        let line = chunk_size_line(payload.len(), &mut line);
        let end: &[u8] = if last { LAST_CHUNK } else { b"" };
        if payload.is_empty() {
            return self.send(io, &[end]);
        }
        self.send(io, &[line, payload, b"\r\n", end])
    }

    /// Moves the unwritten bytes to the front once the written ones make up half the buffer. Without this, a
    /// client that always lags a little would make `buf` grow forever (written bytes at the front are never
    /// reclaimed until a full drain), so the backpressure cap, which counts only unwritten bytes, would not
    /// bound memory. Waiting for "half" keeps the copying amortized: each byte moves at most once per
    /// doubling, and the buffer stays under twice the unwritten bytes plus one push.
    fn compact(&mut self) {
        if self.pos > 0 && self.pos * 2 >= self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
    }

    /// Tells the worker's levels what this buffer holds now: bytes, and whether it holds any. Every
    /// method that changes `len()` ends here (`send` through its `flush`), and `Drop` takes the rest back.
    #[inline]
    fn report(&mut self) {
        let now = self.len();
        if now != self.reported {
            adjust(Level::HeldBytes, now as i64 - self.reported as i64);
            match (self.reported, now) {
                (0, _) => adjust(Level::HeldBuffers, 1),
                (_, 0) => adjust(Level::HeldBuffers, -1),
                _ => {}
            }
            self.reported = now;
        }
    }

    fn advance(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        self.pos += n;
        if self.pos >= self.buf.len() {
            // Drained: release the memory. An idle stream holds no buffer; the next backlog allocates again.
            self.buf = Vec::new();
            self.pos = 0;
        }
    }
}

impl Drop for OutBuf {
    fn drop(&mut self) {
        self.buf = Vec::new();
        self.pos = 0;
        self.report();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worker's levels follow what buffers hold, and come back to zero when they go.
    #[test]
    fn held_bytes_are_reported_and_taken_back() {
        use crate::reactor::instrument::level;
        std::thread::spawn(|| {
            let mut a = OutBuf::default();
            let mut b = OutBuf::default();
            a.push(b"hello");
            b.push(b"hi");
            assert_eq!((level(Level::HeldBytes), level(Level::HeldBuffers)), (7, 2));
            a.advance(5);
            a.report();
            assert_eq!((level(Level::HeldBytes), level(Level::HeldBuffers)), (2, 1));
            drop(b);
            assert_eq!((level(Level::HeldBytes), level(Level::HeldBuffers)), (0, 0));
        })
        .join()
        .unwrap();
    }

    /// A client that always lags a little must not make `buf` grow without bound.
    #[test]
    fn a_client_that_always_lags_does_not_grow_the_buffer() {
        let mut out = OutBuf::default();
        let piece = [b'x'; 1000];
        out.push(&piece);
        for round in 0..1000 {
            out.push(&piece);
            out.advance(1000); // the socket took as much as was pushed: 1000 bytes stay unwritten
            assert_eq!(out.len(), 1000);
            assert!(
                out.buf.len() <= 2 * out.len() + piece.len(),
                "round {round}: {} bytes held for {} unwritten",
                out.buf.len(),
                out.len()
            );
        }
    }
}
