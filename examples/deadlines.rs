//! Idle deadlines on the bare reactor: a connection that stays quiet too long is told `timeout` and closed.
//!
//! The server reads and forgets (a discard service), and every connection carries one deadline. Each turn
//! that brings bytes re-arms it: cancel the old [`TimerKey`], insert a new one at `cx.now + idle`. When a
//! deadline falls due, the reactor hands the application's own key (`Deadline`) to `on_timer`, after the
//! events of that iteration: bytes that arrive with the deadline still re-arm it in time.
//!
//! A deadline may outlive its connection: this server does not cancel it on close, on purpose. The reactor
//! drops it when it falls due, because it names a [`ConnId`] whose generation no longer matches, even when
//! a new connection has taken the same slab slot. (Cancelling in `on_close` would only free it sooner.)
//!
//! Run `cargo run --example deadlines -- --idle-ms 2000`, then `nc 127.0.0.1 7001`: type something every
//! second and the connection stays; stop for two seconds and `timeout` arrives, then nc exits.
//! `cargo test --example deadlines` checks a silent client, a chatty one, and the deadline of a closed
//! connection, which must not reach the next occupant of its slot.

use std::io::{self, ErrorKind::WouldBlock, Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use mio::{Interest, net::TcpStream};
use tokenpipe::reactor::{ConnId, Cx, Handler, Ready, TURN_BUDGET, Tag, TimerKey, Worker};

/// What a deadline is for. One kind here; the relay has others (a closing client's linger, a pooled
/// connection's expiry), which is why the reactor lets each application name its own.
enum Deadline {
    Idle,
}

struct Conn {
    sock: TcpStream,
    /// The armed deadline, kept so that news from the client can cancel it.
    idle: TimerKey,
}

struct Discard {
    idle: Duration,
}

impl Handler for Discard {
    type Conn = Conn;
    type Timer = Deadline;

    fn on_accept(&mut self, cx: &mut Cx<Self>, sock: TcpStream, _peer: SocketAddr) {
        let at = cx.now + self.idle;
        let timers = &mut cx.timers;
        // The deadline names the connection, so it is armed from inside the insert, which knows the id.
        let made = cx.conns.insert_with(|id| Conn {
            sock,
            idle: timers.insert(at, id, Deadline::Idle),
        });
        if let Ok(id) = made {
            let sock = &mut cx.conns.get_mut(id).expect("just inserted").sock;
            let token = id.token(Tag::MAIN);
            let registered = cx.registry.register(sock, token, Interest::READABLE);
            if registered.is_err() {
                cx.close(id);
            }
        }
    }

    fn on_ready(&mut self, cx: &mut Cx<Self>, id: ConnId, _tag: Tag, _ready: Ready) {
        // Reading until `WouldBlock` consumes the edge, so there is no readiness to remember.
        self.on_resume(cx, id);
    }

    fn on_resume(&mut self, cx: &mut Cx<Self>, id: ConnId) {
        let Some(conn) = cx.conns.get_mut(id) else {
            return;
        };
        let (heard, next) = drain(&mut conn.sock, &mut cx.scratch);
        if heard {
            // `cx.now` is one instant for the whole iteration: re-arming once per turn is as good as
            // once per byte, and cheaper.
            cx.timers.cancel(conn.idle);
            conn.idle = cx.timers.insert(cx.now + self.idle, id, Deadline::Idle);
        }
        match next {
            Next::Wait => {}
            Next::Yield => cx.defer(id),
            Next::Close => cx.close(id),
        }
    }

    fn on_timer(&mut self, cx: &mut Cx<Self>, id: ConnId, what: Deadline) {
        // Only ever called for a live connection: the reactor looked `id` up, generation and all.
        let Deadline::Idle = what; // with a second kind, this would be a `match`
        if let Some(conn) = cx.conns.get_mut(id) {
            // A courtesy, not a promise: if the client's window is full it goes without.
            let _ = conn.sock.write(b"timeout\n");
        }
        cx.close(id);
    }

    // No `on_close`: a closed connection's deadline is left to fall due and be dropped (module doc).
}

/// What a connection asks of the loop at the end of its turn.
enum Next {
    Wait,
    Yield,
    Close,
}

/// Reads and forgets until the socket would block or the turn's budget is spent. Says whether anything
/// came, and what the connection needs next.
fn drain(sock: &mut TcpStream, scratch: &mut [u8]) -> (bool, Next) {
    let mut heard = false;
    for _ in 0..TURN_BUDGET {
        match sock.read(scratch) {
            Err(e) if e.kind() == WouldBlock => return (heard, Next::Wait),
            Ok(0) | Err(_) => return (heard, Next::Close),
            Ok(_) => heard = true,
        }
    }
    (heard, Next::Yield)
}

/// A worker serving [`Discard`] on `listen`, and the address it got (port 0 picks a free one). It warns
/// about iterations busier than 50 ms (stall.rs is about that warning).
fn server(listen: SocketAddr, idle: Duration) -> io::Result<(Worker<Discard>, SocketAddr)> {
    let listener = std::net::TcpListener::bind(listen)?;
    let addr = listener.local_addr()?;
    let handler = Discard { idle };
    let mut worker = Worker::new("deadlines".into(), Duration::from_millis(50), handler)?;
    worker.listen(listener)?;
    Ok((worker, addr))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let (mut listen, mut idle) = ("127.0.0.1:7001".parse()?, Duration::from_millis(2000));
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match (flag.as_str(), args.next()) {
            ("--listen", Some(addr)) => listen = addr.parse()?,
            ("--idle-ms", Some(ms)) => idle = Duration::from_millis(ms.parse()?),
            _ => return Err("usage: deadlines [--listen HOST:PORT] [--idle-ms N]".into()),
        }
    }
    let (worker, addr) = server(listen, idle)?;
    println!("listening on {addr}, closing connections idle for {idle:?}");
    Ok(worker.run()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Shutdown, TcpStream as Client};
    use std::time::Instant;

    const IDLE: Duration = Duration::from_millis(300);
    /// How long a test client waits for the server before it fails (instead of hanging).
    const PATIENCE: Option<Duration> = Some(Duration::from_secs(10));

    /// Runs `test` against a server on its own thread, then stops it.
    fn with_server(test: impl FnOnce(SocketAddr)) {
        let (worker, addr) = server("127.0.0.1:0".parse().unwrap(), IDLE).unwrap();
        let remote = worker.remote();
        let looping = std::thread::spawn(move || worker.run());
        test(addr);
        remote.stop().unwrap();
        looping.join().unwrap().unwrap();
    }

    /// Reads until the server closes: it must have said `timeout`, and no sooner than `IDLE` after
    /// `quiet_since` (timers never fire early, so an earlier close means the wrong deadline fired).
    fn expect_timeout(mut sock: Client, quiet_since: Instant) {
        sock.set_read_timeout(PATIENCE).unwrap();
        let mut said = Vec::new();
        sock.read_to_end(&mut said).unwrap();
        assert_eq!(said, b"timeout\n");
        let quiet = quiet_since.elapsed();
        assert!(quiet >= IDLE, "closed after {quiet:?} of silence");
    }

    #[test]
    fn a_silent_client_is_closed_after_the_deadline() {
        with_server(|addr| {
            // Read before connecting: the server arms the deadline after this instant, never before.
            let before = Instant::now();
            expect_timeout(Client::connect(addr).unwrap(), before);
        });
    }

    #[test]
    fn a_chatty_client_keeps_its_connection_past_the_deadline() {
        with_server(|addr| {
            let mut sock = Client::connect(addr).unwrap();
            let (start, mut last) = (Instant::now(), Instant::now());
            // Pacing, not synchronization: time must pass while the client keeps talking.
            while start.elapsed() < 3 * IDLE {
                std::thread::sleep(IDLE / 6);
                last = Instant::now();
                sock.write_all(b"still here\n").unwrap();
            }
            expect_timeout(sock, last);
        });
    }

    #[test]
    fn a_closed_connections_deadline_never_reaches_the_next_occupant_of_its_slot() {
        with_server(|addr| {
            // The first client leaves at once; its deadline stays armed. Its EOF comes from the reap,
            // so when it arrives the slot is free, and the slab gives it to the next client.
            let mut first = Client::connect(addr).unwrap();
            first.shutdown(Shutdown::Write).unwrap();
            first.set_read_timeout(PATIENCE).unwrap();
            assert_eq!(first.read(&mut [0; 16]).unwrap(), 0);
            // The old deadline falls due before this one: delivered to the slot, it would close it early.
            let before = Instant::now();
            expect_timeout(Client::connect(addr).unwrap(), before);
        });
    }
}
