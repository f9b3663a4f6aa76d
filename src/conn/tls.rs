//! TLS inside the transport: a `rustls` 0.23 connection driven by the reactor's readiness, not by blocking
//! calls.
//!
//! rustls's buffered API is sans-IO in the way this project likes: [`Connection::read_tls`] takes
//! ciphertext from any reader, [`Connection::process_new_packets`] decrypts it into a plaintext buffer held
//! inside the connection, [`Connection::reader`] hands plaintext out, [`Connection::writer`] takes
//! plaintext and encrypts it into records that [`Connection::write_tls`] writes out. [`Tls`] wires those to
//! a non-blocking socket and its remembered [`Readiness`], so that `conn::Transport` can offer the same
//! `read`/`write` to TLS and plain connections. Four rules make it work under edge-triggered readiness:
//!
//! 1. **Plaintext held inside is readable without an edge.** One socket read may carry several records,
//!    all decrypted at once; if the caller takes less than all of it (its buffer, or the stream cap), the
//!    rest waits in rustls while the socket is drained and no edge will come. [`Tls::has_plaintext`] says
//!    so, and the transport reports itself readable.
//! 2. **Ciphertext is read only once the plaintext is taken.** rustls refuses to read more while its
//!    plaintext buffer is full; reading only after the reader said `WouldBlock` means that never happens,
//!    so a full plaintext buffer is backpressure (we stop reading the socket), never an error.
//! 3. **Interest follows `wants_read`/`wants_write`.** The socket is registered for both directions once;
//!    we read records when rustls wants them and the socket has some, and write records whenever rustls
//!    holds some and the socket takes them ([`Tls::flush`]), handshake messages included.
//! 4. **Records and `close_notify` leave before the socket shuts.** Records rustls holds are output not yet
//!    given to the peer ([`Tls::holds_output`]): the connection is not drained while there are any. A
//!    lingering close queues `close_notify` behind them and shuts the socket only once the last is out; a
//!    pending shutdown completes on the next writable edge, bounded by the linger deadline. A failed
//!    handshake's alert, and the `close_notify` of a connection dropped for any other reason, are written
//!    best effort, without blocking, before the descriptor goes.
//!
//! And one rule for the other direction: an end of file is clean only after `close_notify`
//! ([`Tls::eof_was_clean`]); a bare FIN may be a cut, which matters where nothing but the close ends a
//! body.

use std::fs;
use std::io::{self, IoSlice, Read, Write};
use std::path::Path;
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{
    ClientConfig, ClientConnection, Connection, RootCertStore, ServerConfig, ServerConnection,
};

use super::Readiness;
use super::transport::{IdleCheck, ReadOutcome};
use crate::reactor::instrument::{Syscall, count};

/// Most bytes of encrypted output (and of plaintext written before the handshake ends) a connection
/// holds. A write past it is taken only in part: backpressure, like a full socket. Together with one
/// received record (at most 16 KiB plus overhead) this bounds what a TLS stream costs.
pub const TLS_BUFFER_LIMIT: usize = 4 * 1024;

/// What a step of the handshake came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handshake {
    /// The handshake is over: application data may flow.
    Done,
    /// It waits for the socket.
    Blocked,
}

/// A TLS session over a socket the caller owns.
pub struct Tls {
    conn: Connection,
    /// Decrypted bytes may be waiting inside `conn` (rule 1 of the module docs).
    plaintext: bool,
    /// The peer's end came as a bare FIN, without `close_notify` (rustls's `UnexpectedEof`): the end of
    /// file a reader got may be a cut (a crash, an injected FIN), not the end the peer meant.
    unclean_eof: bool,
    /// The peer sent `close_notify` (rustls's `peer_has_closed`, noted after each `process_new_packets`):
    /// it will send nothing more, whether or not its FIN has come yet.
    peer_closed: bool,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("handshaking", &self.conn.is_handshaking())
            .field("plaintext", &self.plaintext)
            .field("unclean_eof", &self.unclean_eof)
            .field("peer_closed", &self.peer_closed)
            .finish()
    }
}

/// A rustls error as an `io::Error` whose message says what went wrong (an untrusted certificate, a
/// name mismatch, a protocol failure), for the 502 the client gets.
fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}"))
}

impl Tls {
    /// The client side of a session with `server` (the name checked against its certificate, and sent as
    /// SNI).
    pub fn client(config: Arc<ClientConfig>, server: ServerName<'static>) -> io::Result<Tls> {
        let mut conn = ClientConnection::new(config, server).map_err(tls_error)?;
        conn.set_buffer_limit(Some(TLS_BUFFER_LIMIT));
        Ok(Tls {
            conn: Connection::Client(conn),
            plaintext: false,
            unclean_eof: false,
            peer_closed: false,
        })
    }

    /// The server side of a session, on an accepted socket.
    pub fn server(config: Arc<ServerConfig>) -> io::Result<Tls> {
        let mut conn = ServerConnection::new(config).map_err(tls_error)?;
        conn.set_buffer_limit(Some(TLS_BUFFER_LIMIT));
        Ok(Tls {
            conn: Connection::Server(conn),
            plaintext: false,
            unclean_eof: false,
            peer_closed: false,
        })
    }

    /// Decrypted bytes may be waiting to be read.
    pub fn has_plaintext(&self) -> bool {
        self.plaintext
    }

    /// The end of file [`Tls::read`] reported (if it did) followed `close_notify`: the peer meant to end
    /// there. False after a bare FIN.
    pub fn eof_was_clean(&self) -> bool {
        !self.unclean_eof
    }

    /// The handshake was a resumption of an earlier session (`None` while it is not over).
    pub fn resumed(&self) -> Option<bool> {
        self.conn
            .handshake_kind()
            .map(|k| k == rustls::HandshakeKind::Resumed)
    }

    /// rustls holds encrypted records the socket has not taken yet (bytes written before, an alert,
    /// `close_notify`). They leave at the next [`Tls::flush`] the socket allows.
    pub fn holds_output(&self) -> bool {
        self.conn.wants_write()
    }

    /// Writes encrypted records while rustls holds some and the socket takes them. Returns true when none
    /// is left; false only while the socket is not writable (it said `WouldBlock`, or its first writable
    /// edge has not come), so an edge is still to come.
    pub fn flush(&mut self, sock: &mut TcpStream, ready: &mut Readiness) -> io::Result<bool> {
        while self.conn.wants_write() {
            if !ready.writable {
                return Ok(false);
            }
            count(Syscall::Write);
            match self.conn.write_tls(sock) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => ready.writable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Reads records from the socket once and decrypts them. `Ok(false)`: the socket had nothing.
    ///
    /// The transport's short-read rule holds here too: rustls offers the socket a buffer of its choosing,
    /// and [`Watched`] notes whether the read filled it; a short read means the socket is drained, so the
    /// flag is cleared without the read that would return `EAGAIN` (unless the peer's side is closed,
    /// when the next read must see the end-of-file).
    fn fill(&mut self, sock: &mut TcpStream, ready: &mut Readiness) -> io::Result<bool> {
        loop {
            let mut watched = Watched { sock, short: false };
            match self.conn.read_tls(&mut watched) {
                Ok(0) => {
                    // The peer closed its side; rustls now reports end-of-file (clean or not) to readers.
                    ready.saw_eof();
                    return Ok(true);
                }
                Ok(_) => {
                    if watched.short && !ready.read_closed {
                        ready.readable = false;
                    }
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    count(Syscall::ReadWouldBlock);
                    ready.readable = false;
                    return Ok(false);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        match self.conn.process_new_packets() {
            Ok(state) => {
                self.plaintext = state.plaintext_bytes_to_read() > 0;
                self.peer_closed = state.peer_has_closed();
                // Handshake messages, key updates, alerts: whatever rustls has to say goes out now.
                self.flush(sock, ready)?;
                Ok(true)
            }
            Err(e) => {
                // rustls queued an alert that says why; let it reach the peer before we close.
                let _ = self.flush(sock, ready);
                Err(tls_error(e))
            }
        }
    }

    /// Moves the handshake on as far as the socket allows.
    pub fn handshake(
        &mut self,
        sock: &mut TcpStream,
        ready: &mut Readiness,
    ) -> io::Result<Handshake> {
        loop {
            self.flush(sock, ready)?;
            if !self.conn.is_handshaking() {
                return Ok(Handshake::Done);
            }
            if !(self.conn.wants_read() && ready.readable) {
                return Ok(Handshake::Blocked);
            }
            if !self.fill(sock, ready)? {
                return Ok(Handshake::Blocked);
            }
            if ready.read_closed && self.conn.is_handshaking() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the peer closed the connection during the TLS handshake",
                ));
            }
        }
    }

    /// Reads plaintext: what rustls holds first, then records from the socket.
    pub fn read(
        &mut self,
        sock: &mut TcpStream,
        ready: &mut Readiness,
        buf: &mut [u8],
    ) -> ReadOutcome {
        loop {
            match self.conn.reader().read(buf) {
                // `close_notify` received and everything before it read.
                Ok(0) => {
                    ready.saw_eof();
                    self.plaintext = false;
                    return ReadOutcome::Eof;
                }
                Ok(n) => {
                    // The reader copies across its chunks until `buf` is full or it is empty.
                    self.plaintext = n == buf.len();
                    return ReadOutcome::Data(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.plaintext = false,
                // The peer closed without `close_notify`. Many servers do; the HTTP framing above us
                // decides whether what came was complete, and where only the close could tell (a body
                // delimited by it) asks `eof_was_clean`.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    ready.saw_eof();
                    self.plaintext = false;
                    self.unclean_eof = true;
                    return ReadOutcome::Eof;
                }
                Err(e) => return ReadOutcome::Failed(e),
            }
            if !ready.readable {
                return ReadOutcome::Drained;
            }
            match self.fill(sock, ready) {
                Ok(true) => {}
                Ok(false) => return ReadOutcome::Drained,
                Err(e) => return ReadOutcome::Failed(e),
            }
        }
    }

    /// Encrypts as much of `parts` as the buffer limit allows and writes records out. Returns how many
    /// plaintext bytes were taken: 0 only when the socket and the limit both push back.
    pub fn write(
        &mut self,
        sock: &mut TcpStream,
        ready: &mut Readiness,
        parts: &[IoSlice<'_>],
    ) -> io::Result<usize> {
        self.flush(sock, ready)?;
        let taken = self.conn.writer().write_vectored(parts)?;
        self.flush(sock, ready)?;
        Ok(taken)
    }

    /// An idle connection: a session ticket or a key update is fine (rustls takes it in); plaintext is not.
    /// `close_notify` closes it even before the FIN that usually follows arrives: the server will answer
    /// nothing more on it, so a request sent on it could only fail.
    pub fn check_idle(&mut self, sock: &mut TcpStream, ready: &mut Readiness) -> IdleCheck {
        while ready.readable {
            match self.fill(sock, ready) {
                Ok(true) if self.plaintext => return IdleCheck::Unexpected,
                Ok(true) if ready.read_closed || self.peer_closed => return IdleCheck::Closed,
                Ok(true) => {}
                Ok(false) => break,
                Err(_) => return IdleCheck::Closed,
            }
        }
        if self.plaintext {
            IdleCheck::Unexpected
        } else if self.peer_closed {
            IdleCheck::Closed
        } else {
            IdleCheck::Quiet
        }
    }

    /// Queues `close_notify` behind the records already held (rustls queues it once, however often
    /// asked). It leaves with them, at the next [`Tls::flush`] the socket allows.
    pub fn queue_close_notify(&mut self) {
        self.conn.send_close_notify();
    }

    /// Queues `close_notify` and writes what it can without waiting: the goodbye of a connection about
    /// to be dropped, best effort (a socket that cannot take it now does not get to block the loop).
    pub fn close_notify(&mut self, sock: &mut TcpStream, ready: &mut Readiness) {
        self.queue_close_notify();
        let _ = self.flush(sock, ready);
    }
}

/// The socket as rustls reads it: each read counted, and whether it came back short noted.
struct Watched<'a> {
    sock: &'a mut TcpStream,
    short: bool,
}

impl Read for Watched<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        count(Syscall::Read);
        let n = self.sock.read(buf)?;
        self.short = n < buf.len();
        Ok(n)
    }
}

// ---------------------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------------------

/// The roots a client trusts: Mozilla's (`webpki-roots`), plus the PEM certificates of `extra_ca` (a
/// private CA for a self-hosted model server).
pub fn root_store(extra_ca: Option<&Path>) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = extra_ca {
        let certs = read_certs(path)?;
        let (added, _ignored) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(format!(
                "{}: no usable CA certificate in it",
                path.display()
            ));
        }
    }
    Ok(roots)
}

/// A client configuration: HTTP/1.1 by ALPN, and its own session cache, so that a reconnect resumes the
/// session. Each worker builds its own (the cache is then per worker, with no lock shared between them).
pub fn client_config(roots: Arc<RootCertStore>) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = rustls::client::Resumption::in_memory_sessions(256);
    Ok(Arc::new(config))
}

/// A server configuration from a PEM certificate chain and its PEM private key.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, String> {
    let chain = read_certs(cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}

/// The name a client checks the server's certificate against, from a URL's host.
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(host.to_string())
        .map_err(|e| format!("{host:?} is not a valid TLS server name: {e}"))
}
