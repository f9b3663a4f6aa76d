//! The upstream connection: one HTTP/1.1 exchange at a time with a model API, then back to the pool.
//!
//! ```text
//!   connect() ──▶ Sending ──request written──▶ AwaitingHead ──head parsed──▶ Body ──body read to the end──┐
//!                   ▲                                                          │ keep-alive             │
//!                   └──────────────── taken from the pool ◀── Idle ◀───────────┘          otherwise close
//!                                                               │ idle timeout, or the server closed it
//!                                                               ▼
//!                                                            (closed)
//! ```
//!
//! A non-blocking `connect` completes when the socket first turns writable, so `Sending` doubles as
//! "connecting": the first write either goes through or reports the connect error (`ECONNREFUSED`).
//! Only `Idle` connections are in the pool, and a connection becomes `Idle` only after its body decoder said
//! the body ended exactly at the end of what was read: a connection abandoned mid-body is closed, never reused.

use std::io::{self, Write};
use std::net::SocketAddr;

use mio::net::TcpStream;

use super::Readiness;
use crate::http::body::BodyDecoder;
use crate::reactor::timers::TimerKey;
use crate::reactor::token::ConnId;

/// What an upstream connection is doing.
pub enum UpstreamState {
    /// Connecting and then writing `request[written..]` for `client`.
    Sending {
        client: ConnId,
        request: Vec<u8>,
        written: usize,
    },
    /// Request sent; collecting the response head in `head` (bounded by the head limit).
    /// `retry` keeps the request while a failure could still be retried on a fresh connection: only on a
    /// reused connection, and only until the first response byte.
    AwaitingHead {
        client: ConnId,
        head: Vec<u8>,
        retry: Option<Vec<u8>>,
    },
    /// Streaming the response body to `client`.
    Body {
        client: ConnId,
        decoder: BodyDecoder,
        keep_alive: bool,
    },
    /// In the pool, waiting to be taken or to expire.
    Idle { expires: TimerKey },
}

impl UpstreamState {
    /// The client this exchange serves, if any.
    pub fn client(&self) -> Option<ConnId> {
        match self {
            UpstreamState::Sending { client, .. }
            | UpstreamState::AwaitingHead { client, .. }
            | UpstreamState::Body { client, .. } => Some(*client),
            UpstreamState::Idle { .. } => None,
        }
    }
}

/// An upstream connection.
pub struct UpstreamConn {
    pub sock: TcpStream,
    pub ready: Readiness,
    pub state: UpstreamState,
    /// This connection came from the pool (it served an exchange before). The server may have closed it while
    /// it idled, so a failure before any response byte is retried once on a new connection.
    pub reused: bool,
}

/// What writing the request came to.
pub enum SendProgress {
    /// All of it is written.
    Done,
    /// The socket is full; wait for writable.
    Blocked,
}

impl UpstreamConn {
    /// Starts a non-blocking connect; the exchange begins in `Sending`.
    pub fn connect(addr: SocketAddr, client: ConnId, request: Vec<u8>) -> io::Result<Self> {
        let sock = TcpStream::connect(addr)?;
        // Small SSE events must not wait for Nagle's algorithm; the request is written in one go anyway.
        sock.set_nodelay(true)?;
        Ok(UpstreamConn {
            sock,
            ready: Readiness::default(),
            state: UpstreamState::Sending {
                client,
                request,
                written: 0,
            },
            reused: false,
        })
    }

    /// Writes the rest of the request (in `Sending`) while the socket takes it.
    pub fn write_request(&mut self) -> io::Result<SendProgress> {
        let UpstreamState::Sending {
            request, written, ..
        } = &mut self.state
        else {
            return Ok(SendProgress::Done);
        };
        while *written < request.len() {
            if !self.ready.writable {
                return Ok(SendProgress::Blocked);
            }
            match self.sock.write(&request[*written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => *written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.ready.writable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // A refused connect surfaces here (or as `NotConnected` if the writable event was an error).
                Err(e) => return Err(e),
            }
        }
        Ok(SendProgress::Done)
    }

    /// `Sending` -> `AwaitingHead`, once the whole request is written. The request is kept for a retry only
    /// on a reused connection (see [`UpstreamConn::reused`]); otherwise its memory goes now.
    pub fn request_sent(&mut self) {
        if let UpstreamState::Sending {
            client, request, ..
        } = &mut self.state
        {
            let client = *client;
            let retry = self.reused.then(|| std::mem::take(request));
            self.state = UpstreamState::AwaitingHead {
                client,
                head: Vec::new(),
                retry,
            };
        }
    }
}
