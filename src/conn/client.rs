//! The downstream connection: a client that sends requests and receives (streamed) responses.
//!
//! ```text
//!                    request complete
//!   AwaitingRequest ─────────────────┬──────────────────────────────┐
//!        ▲                           │ fixed answer (error, health) │ stream (relay or mock)
//!        │                           ▼                              ▼
//!        │ keep-alive           Replying ◀── end_stream ────────── Streaming
//!        └──────────── `out` drained │   ◀── 502 (upstream failed    │ client gone / write error
//!                                    │        before its head)      ▼
//!                                    │   ◀── fail_stream (mid-     (closed by the reactor)
//!                                    │        stream failure: Close)
//!                                    │ Close
//!                                    └──▶ Lingering ──EOF/deadline──▶ (closed by the reactor)
//! ```
//!
//! The two directions are independent: bytes from the client collect in `inbuf` and are parsed only in
//! `AwaitingRequest` (pipelined requests wait there, answered in order); bytes for the client go through
//! [`OutBuf`], which tries the socket first and keeps only what the socket would not take.

use std::io::{self, IoSlice, Write};

use mio::net::TcpStream;

use super::{ReadOutcome, Readiness, read_once};
use crate::http::request::RequestReader;
use crate::http::response::{LAST_CHUNK, chunk_size_line};
use crate::mock::MockStream;
use crate::reactor::timers::TimerKey;
use crate::reactor::token::ConnId;

/// What a client connection is doing.
pub enum ClientState {
    /// Waiting for (the rest of) a request.
    AwaitingRequest,
    /// The whole response is in `out`; when it drains, do `then`.
    Replying { then: AfterReply },
    /// A streamed response is being produced by `source`, framed as `framing` says; when it ends
    /// ([`ClientConn::end_stream`]) the state becomes `Replying`.
    Streaming {
        source: Source,
        framing: StreamFraming,
    },
    /// The reply is out and our side is shut; discard what the client still sends until it closes or the
    /// deadline passes, so that closing does not reset the connection under an unread reply.
    Lingering { deadline: TimerKey },
}

/// Where a streamed response comes from.
pub enum Source {
    /// An upstream connection of the same worker (the relay). Its state says whether the head arrived yet.
    Upstream(ConnId),
    /// The built-in mock LLM (the `mock-upstream` service).
    Mock(MockStream),
}

/// How a streamed body is delimited for this client. It also fixes what follows the body, so the two can
/// never disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFraming {
    /// HTTP/1.1: chunked. Only the last (zero-size) chunk marks the body complete; then `AfterReply`.
    Chunked(AfterReply),
    /// HTTP/1.0 clients cannot read chunked bodies (RFC 9112 §6.1): the payload goes as it is and closing
    /// the connection ends it. A failure mid-way can then only be told in-band, by the SSE error event.
    UntilClose,
}

impl StreamFraming {
    /// The framing a request of HTTP/1.`version` gets, `then` being what its client asked for afterwards.
    pub fn for_request(version: u8, then: AfterReply) -> Self {
        if version == 0 {
            StreamFraming::UntilClose
        } else {
            StreamFraming::Chunked(then)
        }
    }

    /// What follows the body.
    pub fn after(self) -> AfterReply {
        match self {
            StreamFraming::Chunked(then) => then,
            StreamFraming::UntilClose => AfterReply::Close,
        }
    }
}

/// What happens when a response has been written out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterReply {
    KeepAlive,
    Close,
}

/// A downstream connection.
pub struct ClientConn {
    pub sock: TcpStream,
    pub ready: Readiness,
    /// Bytes received and not yet consumed by `reader`: a partial head, or requests pipelined behind the
    /// one being answered. Bounded by the head limit plus one read: the reader rejects longer heads, and
    /// while a response is in progress the client is read only while this holds less than a head's worth.
    pub inbuf: Vec<u8>,
    pub reader: RequestReader,
    pub out: OutBuf,
    pub state: ClientState,
}

impl ClientConn {
    pub fn new(sock: TcpStream, reader: RequestReader) -> Self {
        ClientConn {
            sock,
            ready: Readiness::default(),
            inbuf: Vec::new(),
            reader,
            out: OutBuf::default(),
            state: ClientState::AwaitingRequest,
        }
    }

    /// Reads once through `scratch` and appends what came to `inbuf`.
    pub fn read_into_inbuf(&mut self, scratch: &mut [u8]) -> ReadOutcome {
        let outcome = read_once(&mut self.sock, &mut self.ready, scratch);
        if let ReadOutcome::Data(n) = outcome {
            self.inbuf.extend_from_slice(&scratch[..n]);
        }
        outcome
    }

    /// Drops the first `n` bytes of `inbuf` (the reader consumed them). The buffer is released when empty,
    /// and shrunk when a few leftover bytes (the start of a pipelined request) sit in a buffer grown for a
    /// large body, so an idle keep-alive connection holds little or no input memory.
    pub fn consume_inbuf(&mut self, n: usize) {
        if n >= self.inbuf.len() {
            self.inbuf = Vec::new();
        } else if n > 0 {
            self.inbuf.drain(..n);
            if self.inbuf.capacity() > 4 * self.inbuf.len() + 4096 {
                self.inbuf.shrink_to_fit();
            }
        }
    }

    /// Queues `bytes` and writes as much as the socket takes now.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.push(bytes);
        self.flush()
    }

    /// Writes queued bytes while the socket takes them.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush(&mut self.sock, &mut self.ready)
    }

    /// Sends `payload` as part of the streamed body: one chunk (see [`OutBuf::send_chunk`]), or the bare
    /// bytes for a close-delimited body.
    pub fn send_payload(&mut self, payload: &[u8]) -> io::Result<()> {
        match self.state {
            ClientState::Streaming {
                framing: StreamFraming::UntilClose,
                ..
            } => self.send(payload),
            _ => self
                .out
                .send_chunk(&mut self.sock, &mut self.ready, payload),
        }
    }

    /// The streamed body is complete: queue the last chunk (chunked framing) and enter `Replying`.
    pub fn end_stream(&mut self) {
        if let ClientState::Streaming { framing, .. } = self.state {
            if let StreamFraming::Chunked(_) = framing {
                self.out.push(LAST_CHUNK);
            }
            self.state = ClientState::Replying {
                then: framing.after(),
            };
        }
    }

    /// The streamed body failed mid-way (the caller has sent the SSE error event): no last chunk, so the
    /// client sees an incomplete transfer, and the connection closes.
    pub fn fail_stream(&mut self) {
        self.state = ClientState::Replying {
            then: AfterReply::Close,
        };
    }
}

/// One `writev` of `parts`; returns how many bytes went out (0 if the socket would block).
fn write_parts(
    sock: &mut TcpStream,
    ready: &mut Readiness,
    parts: &[&[u8]; 3],
) -> io::Result<usize> {
    let slices = parts.map(IoSlice::new);
    loop {
        return match sock.write_vectored(&slices) {
            Ok(0) => Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                ready.writable = false;
                Ok(0)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => Err(e),
        };
    }
}

/// Outgoing bytes that the socket has not taken yet.
///
/// Invariant: after [`OutBuf::flush`] or [`OutBuf::send_chunk`] returns `Ok`, either the buffer is empty or the
/// socket said `WouldBlock` (so `writable` is false). Hence a non-empty buffer never needs an extra write
/// attempt before the next writable event, and new bytes can simply be appended behind it.
#[derive(Default)]
pub struct OutBuf {
    buf: Vec<u8>,
    /// Bytes of `buf` already written.
    pos: usize,
}

impl OutBuf {
    /// Bytes still to write.
    pub fn len(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends bytes behind whatever is queued, without writing: the caller must flush, or be inside
    /// `Worker::drive_client`, whose loop flushes before it decides anything else.
    pub fn push(&mut self, bytes: &[u8]) {
        self.compact();
        self.buf.extend_from_slice(bytes);
    }

    /// Moves the unwritten bytes to the front once the written ones make up half the buffer. Without this
    /// A client that always lags a little would make `buf` grow forever (written bytes at the front are
    /// never reclaimed until a full drain), so the backpressure cap, which counts only unwritten bytes,
    /// would not bound memory. Waiting for "half" keeps the copying amortized: each byte moves at most once
    /// per doubling, and the buffer stays under twice the unwritten bytes plus one push.
    fn compact(&mut self) {
        if self.pos > 0 && self.pos * 2 >= self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
    }

    /// Writes queued bytes until the buffer is empty or the socket would block.
    pub fn flush(&mut self, sock: &mut TcpStream, ready: &mut Readiness) -> io::Result<()> {
        while !self.is_empty() && ready.writable {
            match sock.write(&self.buf[self.pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.advance(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => ready.writable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Sends `payload` framed as one chunk: size line, payload, CRLF.
    ///
    /// When nothing is queued and the socket is writable, the three parts go out in one `writev` straight
    /// from where they are (the payload usually sits in the worker's read buffer), and only the part the
    /// socket did not take is copied into the buffer. Otherwise the chunk queues behind what is there.
    pub fn send_chunk(
        &mut self,
        sock: &mut TcpStream,
        ready: &mut Readiness,
        payload: &[u8],
    ) -> io::Result<()> {
        if payload.is_empty() {
            // A zero-size chunk would end the body: never send one for a read that held no payload.
            return Ok(());
        }
        let mut line = [0u8; 20];
        let line = chunk_size_line(payload.len(), &mut line);
        let parts: [&[u8]; 3] = [line, payload, b"\r\n"];
        let mut written = 0;
        if self.is_empty() && ready.writable {
            written = write_parts(sock, ready, &parts)?;
        }
        // Queue the unwritten tail of the three parts.
        self.compact();
        let mut skip = written;
        for part in parts {
            let taken = skip.min(part.len());
            self.buf.extend_from_slice(&part[taken..]);
            skip -= taken;
        }
        // Restores the invariant: after a short write the socket may still take more, and bytes queued
        // behind an earlier backlog go out now if the socket turned writable meanwhile.
        self.flush(sock, ready)
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

#[cfg(test)]
mod more_tests {
    use super::*;

    /// a client that always lags a little must not make `buf` grow without bound.
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
