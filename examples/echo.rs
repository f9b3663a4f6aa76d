//! An echo server on the bare reactor: every byte a client sends comes back to it, in order.
//!
//! The reactor knows nothing of HTTP; this file is a whole application of it, and it shows the three
//! habits every handler of an edge-triggered loop needs:
//!
//! - **remembered readiness**: an edge says "something changed" once, so a connection keeps `readable`
//!   and `writable` flags and clears one only when the socket answers `WouldBlock`;
//! - **backpressure**: bytes read but not yet written back wait in a bounded buffer; past `PENDING_CAP`
//!   the connection stops reading, the kernel's buffers fill, and TCP makes the client wait;
//! - **fairness**: after [`TURN_BUDGET`] reads or writes a connection yields with `cx.defer`, so one
//!   client that never stops sending cannot keep the loop from the others.
//!
//! Run `cargo run --example echo -- --listen 127.0.0.1:7000`, then `nc 127.0.0.1 7000`: each line you
//! type comes back. `cargo test --example echo` sends a megabyte from each of several clients at once and
//! checks every byte, and shows that a client which never reads cannot grow the server's memory.

use std::convert::Infallible;
use std::io::{self, ErrorKind::WouldBlock, Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use mio::{Interest, net::TcpStream};
use tokenpipe::reactor::{ConnId, Cx, Handler, Ready, TURN_BUDGET, Tag, Worker};

/// Unsent bytes past which a connection stops reading: memory per client stays bounded whatever it does.
const PENDING_CAP: usize = 256 * 1024;

struct Conn {
    sock: TcpStream,
    readable: bool,
    writable: bool,
    /// The client shut its sending side: once `pending` is out, we are done.
    eof: bool,
    pending: Vec<u8>,
}

/// What a connection asks of the loop at the end of its turn.
enum Next {
    Wait,
    Yield,
    Close,
}

impl Conn {
    /// Moves bytes, one read or write per step, until nothing can move or the budget is spent. Writing
    /// comes first, so that what the client sent goes back before we take more; and a full buffer stops
    /// the reading, which leaves the client's bytes in the kernel: that is the backpressure.
    fn pump(&mut self, scratch: &mut [u8]) -> io::Result<Next> {
        for _ in 0..TURN_BUDGET {
            if self.writable && !self.pending.is_empty() {
                match self.sock.write(&self.pending) {
                    Ok(n) => {
                        self.pending.drain(..n);
                    }
                    Err(e) if e.kind() == WouldBlock => self.writable = false,
                    Err(e) => return Err(e),
                }
            } else if self.eof && self.pending.is_empty() {
                return Ok(Next::Close);
            } else if self.readable && self.pending.len() < PENDING_CAP {
                match self.sock.read(scratch) {
                    Ok(0) => (self.readable, self.eof) = (false, true),
                    Ok(n) => self.pending.extend_from_slice(&scratch[..n]),
                    Err(e) if e.kind() == WouldBlock => self.readable = false,
                    Err(e) => return Err(e),
                }
            } else {
                return Ok(Next::Wait);
            }
        }
        Ok(Next::Yield)
    }
}

struct Echo;

impl Handler for Echo {
    type Conn = Conn;
    /// No deadlines here, and the type says so: `on_timer` cannot be called.
    type Timer = Infallible;

    fn on_accept(&mut self, cx: &mut Cx<Self>, sock: TcpStream, _peer: SocketAddr) {
        let conn = Conn {
            sock,
            readable: false,
            writable: false,
            eof: false,
            pending: Vec::new(),
        };
        // A full slab hands the socket back, and dropping it refuses the client.
        if let Ok(id) = cx.conns.insert_with(|_| conn) {
            let sock = &mut cx.conns.get_mut(id).expect("just inserted").sock;
            // Both directions: with edge-triggered interest, a socket that changes nothing costs nothing.
            let both = Interest::READABLE | Interest::WRITABLE;
            let registered = cx.registry.register(sock, id.token(Tag::MAIN), both);
            if registered.is_err() {
                cx.close(id);
            }
        }
    }

    fn on_ready(&mut self, cx: &mut Cx<Self>, id: ConnId, _tag: Tag, ready: Ready) {
        if let Some(c) = cx.conns.get_mut(id) {
            // An error or hang-up counts as both: the next read or write reports it.
            c.readable |= ready.readable || ready.read_closed || ready.error;
            c.writable |= ready.writable || ready.error;
        }
        // From here on, a fresh edge and a resumed turn are the same thing: move what can move.
        self.on_resume(cx, id);
    }

    fn on_resume(&mut self, cx: &mut Cx<Self>, id: ConnId) {
        let Some(conn) = cx.conns.get_mut(id) else {
            return;
        };
        match conn.pump(&mut cx.scratch) {
            Ok(Next::Wait) => {}
            // More to do, but the rest of the batch first: the resume phase gives us another turn.
            Ok(Next::Yield) => cx.defer(id),
            // The reap drops the `Conn`, and with it the socket: no `on_close` needed.
            Ok(Next::Close) | Err(_) => cx.close(id),
        }
    }

    fn on_timer(&mut self, _cx: &mut Cx<Self>, _id: ConnId, never: Infallible) {
        match never {}
    }
}

/// A worker serving [`Echo`] on `listen`, and the address it got (port 0 picks a free one). It warns about
/// iterations busier than 50 ms, which an echo never is (stall.rs shows one that is).
fn server(listen: SocketAddr) -> io::Result<(Worker<Echo>, SocketAddr)> {
    let listener = std::net::TcpListener::bind(listen)?;
    let addr = listener.local_addr()?;
    let mut worker = Worker::new("echo".into(), Duration::from_millis(50), Echo)?;
    worker.listen(listener)?;
    Ok((worker, addr))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let listen = match args.as_slice() {
        [] => "127.0.0.1:7000".parse()?,
        [flag, addr] if flag == "--listen" => addr.parse()?,
        _ => return Err("usage: echo [--listen HOST:PORT]".into()),
    };
    let (worker, addr) = server(listen)?;
    println!("listening on {addr}");
    Ok(worker.run()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Shutdown, TcpStream as Client};
    use std::thread;
    use tokenpipe::reactor::SCRATCH_BYTES;

    /// How long a test client waits for the server before it fails (instead of hanging).
    const PATIENCE: Option<Duration> = Some(Duration::from_secs(10));

    /// Sends `data` from a second thread while reading the echo until the server closes: a client that
    /// wrote a megabyte before reading any would deadlock against the backpressure, as it should.
    fn round_trip(mut sock: Client, data: &[u8]) -> Vec<u8> {
        sock.set_read_timeout(PATIENCE).unwrap();
        let mut writer = sock.try_clone().unwrap();
        let mut echoed = Vec::new();
        thread::scope(|s| {
            s.spawn(|| {
                writer.write_all(data).unwrap();
                writer.shutdown(Shutdown::Write).unwrap();
            });
            sock.read_to_end(&mut echoed).unwrap();
        });
        echoed
    }

    #[test]
    fn concurrent_clients_get_their_own_bytes_back_in_order() {
        let (worker, addr) = server("127.0.0.1:0".parse().unwrap()).unwrap();
        let remote = worker.remote();
        let looping = thread::spawn(move || worker.run());
        thread::scope(|s| {
            for k in 0..4u8 {
                s.spawn(move || {
                    // Distinct per client, so that crossed streams would show.
                    let data: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8 ^ k).collect();
                    let echoed = round_trip(Client::connect(addr).unwrap(), &data);
                    assert!(echoed == data, "client {k} got {} bytes", echoed.len());
                });
            }
        });
        remote.stop().unwrap();
        looping.join().unwrap().unwrap();
    }

    #[test]
    fn a_client_that_does_not_read_cannot_grow_the_buffer() {
        let (mut worker, addr) = server("127.0.0.1:0".parse().unwrap()).unwrap();
        let mut sock = Client::connect(addr).unwrap();
        sock.set_nonblocking(true).unwrap();
        let (chunk, mut sent, mut full_turns) = (vec![b'x'; 64 * 1024], 0, 0);
        // Write until the kernel takes no more, let the loop turn, repeat: every buffer on the way fills,
        // the server's last. From then on it must hold no more, however long the client keeps trying.
        for _ in 0..1000 {
            loop {
                match sock.write(&chunk) {
                    Ok(n) => sent += n,
                    Err(e) if e.kind() == WouldBlock => break,
                    Err(e) => panic!("{e}"),
                }
            }
            worker.turn(Some(Duration::from_millis(10))).unwrap();
            let conns = &worker.context().conns;
            let held: usize = conns.iter().map(|(_, c)| c.pending.len()).sum();
            // The last read before the cap may bring a whole scratch buffer, and no more.
            assert!(held < PENDING_CAP + SCRATCH_BYTES, "held {held} bytes");
            full_turns += usize::from(held >= PENDING_CAP);
            if full_turns == 20 {
                break;
            }
        }
        assert_eq!(full_turns, 20, "the server never filled its buffer");
        // Once the client reads, everything it sent comes back.
        let remote = worker.remote();
        let looping = thread::spawn(move || worker.run());
        sock.set_nonblocking(false).unwrap();
        let echoed = round_trip(sock, &[]);
        assert_eq!(echoed.len(), sent);
        assert!(echoed.iter().all(|&b| b == b'x'));
        remote.stop().unwrap();
        looping.join().unwrap().unwrap();
    }
}
