//! The TLS transport itself, below any application: a `Transport` with a rustls session over a real
//! loopback socket, driven by hand from a `mio::Poll` the way a worker drives it, against a blocking
//! rustls peer on a thread of its own.
//!
//! Small socket buffers (4 KiB each way) make the kernel push back after a few KiB, so that rustls is left
//! holding encrypted records the socket did not take: the state in which output used to be lost.

mod common;

use common::*;
use std::io::{IoSlice, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use tokenpipe::conn::OutBuf;
use tokenpipe::conn::outbuf::Flushed;
use tokenpipe::conn::tls::{self, Handshake, Tls};
use tokenpipe::conn::transport::{IdleCheck, ReadOutcome, Transport};
use tokenpipe::reactor::{Conns, Ready, Tag};

/// Small enough that a few KiB fill the path between the two ends.
const SMALL_BUFFER: usize = 4096;

/// Byte `i` of what the server sends: a pattern, so that a lost or reordered byte shows.
fn pattern(from: usize, len: usize) -> Vec<u8> {
    (from..from + len).map(|i| (i % 251) as u8).collect()
}

/// A transport registered with a poll of its own, as a worker holds it.
struct Driven {
    t: Transport,
    poll: mio::Poll,
    events: mio::Events,
}

impl Driven {
    fn new(mut t: Transport) -> Driven {
        let poll = mio::Poll::new().expect("poll");
        let mut conns = Conns::<()>::default();
        let id = conns.insert_with(|_| ()).expect("an id");
        t.register(poll.registry(), id, Tag::MAIN)
            .expect("register");
        Driven {
            t,
            poll,
            events: mio::Events::with_capacity(8),
        }
    }

    /// Waits for the next events on the socket (at most `within`) and folds them in, as a worker does.
    /// False when none came in that time.
    fn next_event(&mut self, within: Duration) -> bool {
        self.poll
            .poll(&mut self.events, Some(within))
            .expect("poll");
        let mut any = false;
        for e in self.events.iter() {
            any = true;
            self.t.absorb(Ready {
                readable: e.is_readable(),
                writable: e.is_writable(),
                read_closed: e.is_read_closed(),
                error: e.is_error(),
            });
        }
        any
    }

    /// Reads plaintext until `want` bytes came, flushing whatever the session has to say on the way (a
    /// server's handshake flight leaves from inside its reads, and from flushes).
    fn read_exactly(&mut self, want: usize) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while got.len() < want {
            self.t.flush().expect("flush");
            match self.t.read(&mut buf) {
                ReadOutcome::Data(n) => got.extend_from_slice(&buf[..n]),
                ReadOutcome::Drained => {
                    assert!(self.next_event(IO_TIMEOUT), "nothing within {IO_TIMEOUT:?}")
                }
                other => panic!("read: {other:?} after {got:?}"),
            }
        }
        got
    }

    /// Writes the pattern through the session until the socket pushes back. Returns how many plaintext
    /// bytes the session took. Afterwards the socket is not writable and rustls holds records: the last
    /// write that ended it met `WouldBlock` with records in hand.
    fn fill_until_blocked(&mut self) -> usize {
        assert!(self.t.writable(), "the socket's first writable edge came");
        let mut sent = 0;
        while self.t.writable() {
            let piece = pattern(sent, 1000);
            sent += self.t.write(&[IoSlice::new(&piece)]).expect("write");
            assert!(sent < 64 << 20, "the socket never pushed back");
        }
        sent
    }
}

/// The roots that trust the test CA, as the relay builds them.
fn client_config(ca: &std::path::Path) -> Arc<rustls::ClientConfig> {
    let roots = tls::root_store(Some(ca)).expect("roots");
    tls::client_config(Arc::new(roots)).expect("client config")
}

/// The accepted end of a connection to `listener`, with a small send buffer and a TLS server session.
fn accept_tls(listener: &TcpListener, pki: &TestPki) -> Driven {
    let (sock, _) = listener.accept().expect("accept");
    socket2::SockRef::from(&sock)
        .set_send_buffer_size(SMALL_BUFFER)
        .expect("send buffer");
    sock.set_nonblocking(true).expect("non-blocking");
    let mut t = Transport::accepted(mio::net::TcpStream::from_std(sock));
    let config = tls::server_config(&pki.cert, &pki.key).expect("server config");
    t.start_tls(Tls::server(config).expect("TLS server"));
    Driven::new(t)
}

/// How the slow peer's reading ended.
#[derive(Debug)]
struct PeerSaw {
    /// Plaintext read.
    got: Vec<u8>,
    /// `Ok` for a clean end (`close_notify`), else rustls's error (`UnexpectedEof`: a bare close).
    end: Result<(), String>,
    /// What a raw read of the socket returned after that: `Ok(0)` when our FIN came too.
    after: Result<usize, String>,
}

/// A blocking rustls client with a small receive buffer. It sends `ping` (completing the handshake),
/// waits for `go`, then reads to the end.
fn slow_peer(addr: SocketAddr, ca: PathBuf, go: mpsc::Receiver<()>) -> JoinHandle<PeerSaw> {
    thread::spawn(move || {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        s.set_recv_buffer_size(SMALL_BUFFER).expect("recv buffer");
        s.connect(&addr.into()).expect("connect");
        let sock: std::net::TcpStream = s.into();
        sock.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        let name = "localhost".try_into().expect("name");
        let conn = rustls::ClientConnection::new(client_config(&ca), name).expect("client");
        let mut tls = rustls::StreamOwned::new(conn, sock);
        tls.write_all(b"ping").expect("ping");
        go.recv_timeout(IO_TIMEOUT).expect("go");
        let mut got = Vec::new();
        let end = tls
            .read_to_end(&mut got)
            .map(|_| ())
            .map_err(|e| e.to_string());
        let after = tls.sock.read(&mut [0u8; 1]).map_err(|e| e.to_string());
        PeerSaw { got, end, after }
    })
}

/// While rustls holds records the socket did not take, the queue is not drained: `OutBuf::flush` says
/// `Pending` (a closing connection waits; a paused stream stays paused), and when the records are out it
/// says `Drained`, the transition a paused stream resumes on.
#[test]
fn records_held_by_rustls_keep_the_queue_pending_until_they_are_out() {
    let pki = TestPki::new(&["localhost"]);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let (go, wait) = mpsc::channel();
    let peer = slow_peer(listener.local_addr().expect("addr"), pki.ca.clone(), wait);
    let mut d = accept_tls(&listener, &pki);
    assert_eq!(d.read_exactly(4), b"ping");

    let sent = d.fill_until_blocked();
    let mut out = OutBuf::default();
    assert!(out.is_empty(), "every byte went to the session");
    assert_eq!(
        out.flush(&mut d.t).expect("flush"),
        Flushed::Pending,
        "rustls still holds records after {sent} bytes: the queue is not drained"
    );

    go.send(()).expect("go");
    loop {
        match out.flush(&mut d.t).expect("flush") {
            Flushed::Pending => assert!(d.next_event(IO_TIMEOUT), "no writable edge"),
            Flushed::Drained => break,
            Flushed::Empty => panic!("the records went out, but the drain was reported as Empty"),
        }
    }

    // What a lingering close does once the queue drained.
    d.t.shutdown_write().expect("shutdown");
    while !d.t.flush().expect("flush") {
        assert!(d.next_event(IO_TIMEOUT), "no writable edge");
    }
    let saw = peer.join().expect("peer");
    assert_eq!(saw.got.len(), sent, "{:?} {:?}", saw.end, saw.after);
    assert!(saw.got == pattern(0, sent), "the bytes differ");
    assert_eq!(saw.end, Ok(()), "a clean close_notify");
    assert_eq!(saw.after, Ok(0), "our FIN");
}

/// Shutting down while rustls holds records does not drop them: `close_notify` queues behind them, and
/// the `shutdown(Write)` waits until the last record is out (the next flushes on writable edges do it).
#[test]
fn a_shutdown_with_records_held_sends_them_then_close_notify_then_fin() {
    let pki = TestPki::new(&["localhost"]);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let (go, wait) = mpsc::channel();
    let peer = slow_peer(listener.local_addr().expect("addr"), pki.ca.clone(), wait);
    let mut d = accept_tls(&listener, &pki);
    assert_eq!(d.read_exactly(4), b"ping");

    let sent = d.fill_until_blocked();
    assert!(!d.t.flush().expect("flush"), "rustls holds records");
    d.t.shutdown_write().expect("shutdown");

    // The peer reads only now, after our shutdown: whatever is still to go must still go.
    go.send(()).expect("go");
    let mut failed = None;
    loop {
        match d.t.flush() {
            Ok(true) => break,
            Ok(false) => assert!(d.next_event(IO_TIMEOUT), "no writable edge"),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    let saw = peer.join().expect("peer");
    assert_eq!(
        saw.got.len(),
        sent,
        "the peer read {} of {sent} bytes; its end: {:?}; our flush: {failed:?}",
        saw.got.len(),
        saw.end
    );
    assert!(saw.got == pattern(0, sent), "the bytes differ");
    assert_eq!(saw.end, Ok(()), "a clean close_notify");
    assert_eq!(saw.after, Ok(0), "our FIN, once the records were out");
    assert!(failed.is_none(), "{failed:?}");
}

/// A server that sends `close_notify` and keeps its socket open (its FIN not sent, or not here yet) has
/// closed the session all the same: a pooled connection it said goodbye on must not be reused.
#[test]
fn an_idle_session_whose_peer_sent_close_notify_is_closed() {
    let pki = TestPki::new(&["localhost"]);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (sent_tx, sent_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let config = tls::server_config(&pki.cert, &pki.key).expect("server config");
    let server = thread::spawn(move || {
        let (sock, _) = listener.accept().expect("accept");
        sock.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        let conn = rustls::ServerConnection::new(config).expect("server");
        let mut tls = rustls::StreamOwned::new(conn, sock);
        let mut ping = [0u8; 4];
        tls.read_exact(&mut ping).expect("ping");
        tls.conn.send_close_notify();
        tls.flush().expect("close_notify written");
        sent_tx.send(()).expect("sent");
        // The socket stays open (no FIN) until the test is over.
        let _ = done_rx.recv_timeout(IO_TIMEOUT);
    });

    let mut t = Transport::connect(addr).expect("connect");
    let name = tls::server_name("localhost").expect("name");
    t.start_tls(Tls::client(client_config(&pki.ca), name).expect("TLS client"));
    let mut d = Driven::new(t);
    while d.t.handshake().expect("handshake") == Handshake::Blocked {
        assert!(d.next_event(IO_TIMEOUT), "handshake stalled");
    }
    let mut taken = 0;
    while taken < 4 {
        taken +=
            d.t.write(&[IoSlice::new(&b"ping"[taken..])])
                .expect("write");
        if taken < 4 {
            assert!(d.next_event(IO_TIMEOUT), "no writable edge");
        }
    }
    while !d.t.flush().expect("flush") {
        assert!(d.next_event(IO_TIMEOUT), "no writable edge");
    }
    sent_rx
        .recv_timeout(IO_TIMEOUT)
        .expect("the server sent close_notify");

    // Every record the server sent is on its way (tickets, then close_notify); look at the idle connection
    // on each edge until it is seen closed. Quiet with no edge left to come is the failure.
    let verdict = loop {
        match d.t.check_idle() {
            IdleCheck::Quiet if d.next_event(Duration::from_secs(2)) => {}
            verdict => break verdict,
        }
    };
    let fin = d.t.read_closed();
    let _ = done_tx.send(());
    server.join().expect("server");
    assert!(!fin, "no FIN came: the server kept its socket open");
    assert_eq!(verdict, IdleCheck::Closed);
}
