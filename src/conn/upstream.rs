//! The upstream connection: one HTTP/1.1 exchange at a time with a model API.
//!
//! ```text
//!   connect() ──▶ Handshaking (https) ──▶ Sending ──request written──▶ AwaitingHead ──head parsed──▶ Body
//!        └──────── (http) ───────────────▲
//!   pool ────────────────────────────────┘
//! ```
//!
//! A non-blocking `connect` completes when the socket first turns writable, so the first state doubles as
//! "connecting": the first write either goes through or reports the connect error (`ECONNREFUSED`). Over
//! TLS that first write is the ClientHello, and the handshake is a state of its own: it waits for the
//! socket as rustls asks (`conn::tls`), and it fails with the reason an untrusted certificate or a wrong
//! name gives.
//!
//! This type knows the upstream side of HTTP/1.1 and nothing of clients: the request it writes is lent to it
//! by its owner (the relay's exchange), and what the response bytes mean is returned, not acted on. What
//! happens when the body ends (back to a pool, or closed) is the owner's decision: an `UpstreamConn` can
//! only be turned back into its bare [`Transport`] ([`UpstreamConn::into_transport`]).

use std::io::{self, IoSlice};
use std::net::SocketAddr;

use super::tls::{Handshake, Tls};
use super::transport::Transport;
use crate::http::body::BodyDecoder;
use crate::http::response::{ResponseError, ResponseHead, parse_response_head};

/// What an upstream connection is doing.
pub enum UpstreamState {
    /// Connecting, then the TLS handshake (`https` only).
    Handshaking,
    /// Connecting (`http`), then writing the request; `written` bytes of it are out.
    Sending { written: usize },
    /// Request sent; collecting the response head in `head` (bounded by the head limit).
    AwaitingHead { head: Vec<u8> },
    /// Reading the response body.
    Body {
        decoder: BodyDecoder,
        /// The response allows another exchange on this connection after it.
        keep_alive: bool,
    },
}

/// An upstream connection.
pub struct UpstreamConn {
    pub io: Transport,
    pub state: UpstreamState,
    /// This connection served an exchange before (it came from a pool). The server may have closed it
    /// while it idled, which is why a failure before any response byte may be retried.
    pub reused: bool,
    /// The server answered before it had the whole request (an early `413` or `400`): the connection
    /// cannot carry another exchange, whatever the response says, since the request's tail was never sent
    /// (or was sent into a response the server had already finished).
    pub answered_early: bool,
}

/// What writing the request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendProgress {
    /// All of it is written: the state is `AwaitingHead`.
    Done,
    /// The socket is full, or the connect is still in progress; wait for writable.
    Blocked,
}

/// What a read of response-head bytes came to.
#[derive(Debug)]
pub enum HeadProgress {
    /// The head is not complete yet.
    NeedMore,
    /// The head is parsed; the state is `Body`. `rest` holds the body bytes that came with the head.
    Complete { head: ResponseHead, rest: Vec<u8> },
}

impl UpstreamConn {
    /// Starts a non-blocking connect to `addr`, with TLS if `tls` is given; the exchange begins in
    /// `Handshaking` (TLS) or `Sending`.
    pub fn connect(addr: SocketAddr, tls: Option<Tls>) -> io::Result<Self> {
        let mut io = Transport::connect(addr)?;
        let state = match tls {
            Some(tls) => {
                io.start_tls(tls);
                UpstreamState::Handshaking
            }
            None => UpstreamState::Sending { written: 0 },
        };
        Ok(UpstreamConn {
            io,
            state,
            reused: false,
            answered_early: false,
        })
    }

    /// Moves the TLS handshake on (in `Handshaking`); when it is over, the state becomes `Sending`.
    pub fn handshake(&mut self) -> io::Result<Handshake> {
        if !matches!(self.state, UpstreamState::Handshaking) {
            return Ok(Handshake::Done);
        }
        let progress = self.io.handshake()?;
        if progress == Handshake::Done {
            self.state = UpstreamState::Sending { written: 0 };
        }
        Ok(progress)
    }

    /// A new exchange on an idle connection (from a pool).
    pub fn reuse(io: Transport) -> Self {
        UpstreamConn {
            io,
            state: UpstreamState::Sending { written: 0 },
            reused: true,
            answered_early: false,
        }
    }

    /// Writes the rest of `request` (in `Sending`) while the socket takes it; when all is out, the state
    /// becomes `AwaitingHead`.
    pub fn write_request(&mut self, request: &[u8]) -> io::Result<SendProgress> {
        let UpstreamState::Sending { written } = &mut self.state else {
            return Ok(SendProgress::Done);
        };
        while *written < request.len() {
            if !self.io.writable() {
                return Ok(SendProgress::Blocked);
            }
            *written += self.io.write(&[IoSlice::new(&request[*written..])])?;
        }
        self.state = UpstreamState::AwaitingHead { head: Vec::new() };
        Ok(SendProgress::Done)
    }

    /// The server answers before it has read the whole request: stop sending, and take `bytes` (what it
    /// has sent so far) as the start of its response head. Only while `Sending`.
    pub fn answer_early(&mut self, bytes: &[u8]) {
        if let UpstreamState::Sending { .. } = self.state {
            self.state = UpstreamState::AwaitingHead {
                head: bytes.to_vec(),
            };
            self.answered_early = true;
        }
    }

    /// True once any byte of the request has been written (handed to the socket, or to TLS).
    pub fn request_sent(&self) -> bool {
        match &self.state {
            UpstreamState::Handshaking => false,
            UpstreamState::Sending { written } => *written > 0,
            UpstreamState::AwaitingHead { .. } | UpstreamState::Body { .. } => true,
        }
    }

    /// True once any byte of the response has arrived.
    pub fn response_started(&self) -> bool {
        match &self.state {
            UpstreamState::Handshaking | UpstreamState::Sending { .. } => false,
            UpstreamState::AwaitingHead { head } => !head.is_empty(),
            UpstreamState::Body { .. } => true,
        }
    }

    /// Takes response-head bytes (in `AwaitingHead`). Interim `1xx` responses are skipped by the parser.
    /// On a complete head the state becomes `Body`, whatever the status: what a status means is the
    /// owner's decision.
    pub fn on_head_bytes(
        &mut self,
        bytes: &[u8],
        max_head: usize,
    ) -> Result<HeadProgress, ResponseError> {
        let UpstreamState::AwaitingHead { head } = &mut self.state else {
            return Ok(HeadProgress::NeedMore);
        };
        head.extend_from_slice(bytes);
        let Some((parsed, consumed)) = parse_response_head(head, max_head)? else {
            return Ok(HeadProgress::NeedMore);
        };
        let rest = head.split_off(consumed);
        self.state = UpstreamState::Body {
            decoder: BodyDecoder::new(parsed.framing),
            keep_alive: parsed.keep_alive && !self.answered_early,
        };
        Ok(HeadProgress::Complete { head: parsed, rest })
    }

    /// The bare connection, for a pool (or for dropping, which closes it).
    pub fn into_transport(self) -> Transport {
        self.io
    }
}
