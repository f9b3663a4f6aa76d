//! A handler that blocks, and the loop-latency warning that catches it.
//!
//! A worker is one thread serving all its connections, one callback at a time. A callback that blocks (a
//! `sleep`, a synchronous DNS lookup, a blocking file read, a long computation) holds that thread, so every
//! other connection of the worker waits with it: their bytes sit in the kernel and their deadlines pass
//! unnoticed until the callback returns. Nothing can preempt a handler; what the reactor can do is notice.
//! It measures each iteration's busy time (from `poll` returning to being ready to poll again), logs
//! `loop iteration busy for ... ms` past the worker's `loop_warn`, and counts the slow iteration in
//! figures any thread may read (`Worker::stats`).
//!
//! This server echoes lines. A line `stall N` is echoed too, and then makes the handler sleep N ms on the
//! loop's thread: the bug on display.
//!
//! Run `cargo run --example stall` (warning past `--loop-warn-ms`, default 10) and open two terminals with
//! `nc 127.0.0.1 7002`. Type `hello` in one: it comes back at once. Type `stall 3000` in the other, then
//! `hello` in the first: it comes back three seconds later, the log shows the warning, and the program
//! prints the worker's figures. The warning names the slowest handler call as the application describes it
//! (`Handler::describe`: here, the connection that asked to stall). `cargo test --example stall` checks the
//! same with a 100 ms stall. The relay has the same lesson as a route (`--debug-stall-route`, docs/14).

use std::convert::Infallible;
use std::io::{self, ErrorKind::WouldBlock, Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use mio::{Interest, net::TcpStream};
use tokenpipe::reactor::instrument::{Syscall, WorkerStats, count};
use tokenpipe::reactor::{ConnId, Cx, Handler, Ready, TURN_BUDGET, Tag, Worker};

/// Longest line kept while waiting for its end; a client that sends more without a newline is closed.
const MAX_LINE: usize = 1024;

struct Conn {
    sock: TcpStream,
    line: Vec<u8>,
    /// The last stall this connection asked for, to name it when the loop reports a slow iteration.
    stalled: Option<u64>,
}

/// What a connection asks of the loop at the end of its turn.
enum Next {
    Wait,
    Yield,
    Close,
}

impl Conn {
    /// Reads until the socket would block or the budget is spent, answering each complete line.
    fn serve(&mut self, scratch: &mut [u8]) -> io::Result<Next> {
        for _ in 0..TURN_BUDGET {
            // The reactor counts its own calls (poll, accept); an application counts its reads, writes
            // and registrations the same way, so that the worker's figures cover them.
            count(Syscall::Read);
            let n = match self.sock.read(scratch) {
                Err(e) if e.kind() == WouldBlock => return Ok(Next::Wait),
                Ok(0) => return Ok(Next::Close),
                Ok(n) => n,
                Err(e) => return Err(e),
            };
            self.line.extend_from_slice(&scratch[..n]);
            while let Some(end) = self.line.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.line.drain(..=end).collect();
                self.answer(&line)?;
            }
            if self.line.len() > MAX_LINE {
                return Ok(Next::Close);
            }
        }
        Ok(Next::Yield)
    }

    fn answer(&mut self, line: &[u8]) -> io::Result<()> {
        // Replies are short and clients read them, so a reply that does not fit is a client that does
        // not read: it is let go rather than buffered (echo.rs shows how to buffer).
        count(Syscall::Write);
        if self.sock.write(line)? < line.len() {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let text = String::from_utf8_lossy(line);
        if let Some(Ok(ms)) = text.trim().strip_prefix("stall ").map(str::parse) {
            // The bug: this thread is every connection's thread, and it sleeps.
            self.stalled = Some(ms);
            std::thread::sleep(Duration::from_millis(ms));
        }
        Ok(())
    }
}

struct Stall;

impl Handler for Stall {
    type Conn = Conn;
    type Timer = Infallible;

    fn on_accept(&mut self, cx: &mut Cx<Self>, sock: TcpStream, _peer: SocketAddr) {
        let line = Vec::new();
        let conn = Conn {
            sock,
            line,
            stalled: None,
        };
        if let Ok(id) = cx.conns.insert_with(|_| conn) {
            let sock = &mut cx.conns.get_mut(id).expect("just inserted").sock;
            count(Syscall::Register);
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
        match conn.serve(&mut cx.scratch) {
            Ok(Next::Wait) => {}
            Ok(Next::Yield) => cx.defer(id),
            Ok(Next::Close) | Err(_) => cx.close(id),
        }
    }

    fn on_timer(&mut self, _cx: &mut Cx<Self>, _id: ConnId, never: Infallible) {
        match never {}
    }

    /// Named in the loop's warning when this connection's call was the slowest of a slow iteration.
    fn describe(&self, cx: &Cx<Self>, id: ConnId, _tag: Tag) -> String {
        match cx.conns.get(id).and_then(|c| c.stalled) {
            Some(ms) => format!("connection {id:?}, which asked to stall {ms} ms"),
            None => format!("connection {id:?}"),
        }
    }
}

/// A worker serving [`Stall`] on `listen` that warns about iterations busier than `loop_warn`, and the
/// address it got (port 0 picks a free one).
fn server(listen: SocketAddr, loop_warn: Duration) -> io::Result<(Worker<Stall>, SocketAddr)> {
    let listener = std::net::TcpListener::bind(listen)?;
    let addr = listener.local_addr()?;
    let mut worker = Worker::new("stall".into(), loop_warn, Stall)?;
    worker.listen(listener)?;
    Ok((worker, addr))
}

/// Prints the worker's figures whenever a new slow iteration shows up in them.
fn report(stats: &WorkerStats) {
    let mut seen = 0;
    loop {
        // Sampling from a thread of its own: the figures are atomics the worker publishes every iteration.
        std::thread::sleep(Duration::from_millis(200));
        let s = stats.snapshot();
        if s.slow_iterations > seen {
            seen = s.slow_iterations;
            let (slow, all, busy) = (s.slow_iterations, s.iterations, s.max_busy);
            println!("slow iterations: {slow} of {all}, the longest busy {busy:?}");
            // The busy-time histogram: what `GET /metrics` exports as tokenpipe_loop_busy_seconds.
            let h = stats.histograms.busy.snapshot();
            let ms = |q| h.quantile(q).map_or(0.0, |ns| ns / 1e6);
            println!("busy time: p50 {:.3} ms, p99 {:.3} ms", ms(0.5), ms(0.99));
            println!("system calls:");
            for kind in Syscall::ALL.into_iter().filter(|&k| s.syscalls.get(k) > 0) {
                println!("{:>8} {}", s.syscalls.get(kind), kind.name());
            }
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let (mut listen, mut loop_warn) = ("127.0.0.1:7002".parse()?, Duration::from_millis(10));
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match (flag.as_str(), args.next()) {
            ("--listen", Some(addr)) => listen = addr.parse()?,
            ("--loop-warn-ms", Some(ms)) => loop_warn = Duration::from_millis(ms.parse()?),
            _ => return Err("usage: stall [--listen HOST:PORT] [--loop-warn-ms N]".into()),
        }
    }
    let (worker, addr) = server(listen, loop_warn)?;
    println!("listening on {addr}");
    let stats = worker.stats();
    std::thread::spawn(move || report(&stats));
    Ok(worker.run()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpStream as Client;
    use std::time::Instant;

    /// How long a test client waits for the server before it fails (instead of hanging).
    const PATIENCE: Option<Duration> = Some(Duration::from_secs(10));

    fn connect(addr: SocketAddr) -> Client {
        let sock = Client::connect(addr).unwrap();
        sock.set_read_timeout(PATIENCE).unwrap();
        sock
    }

    /// Sends one line and reads its echo.
    fn ask(sock: &mut Client, line: &str) -> String {
        sock.write_all(line.as_bytes()).unwrap();
        let mut echo = vec![0; line.len()];
        sock.read_exact(&mut echo).unwrap();
        String::from_utf8(echo).unwrap()
    }

    #[test]
    fn a_stall_delays_every_connection_and_is_counted() {
        let (worker, addr) =
            server("127.0.0.1:0".parse().unwrap(), Duration::from_millis(10)).unwrap();
        let (stats, remote) = (worker.stats(), worker.remote());
        let looping = std::thread::spawn(move || worker.run());
        let (mut staller, mut bystander) = (connect(addr), connect(addr));
        assert_eq!(ask(&mut bystander, "hello\n"), "hello\n");
        let asked = Instant::now();
        // The echo is written just before the sleep: when it arrives, the loop is stalled or about to be.
        assert_eq!(ask(&mut staller, "stall 100\n"), "stall 100\n");
        // The bystander asks for nothing slow, yet its answer waits for the stall to end.
        assert_eq!(ask(&mut bystander, "still there?\n"), "still there?\n");
        assert!(asked.elapsed() >= Duration::from_millis(100));
        // That answer came from a later iteration than the stall (its line was sent after the stall's
        // batch was polled), so the stalled iteration has been measured and published by now.
        let s = stats.snapshot();
        assert!(s.slow_iterations >= 1, "{s:?}");
        assert!(s.max_busy >= Duration::from_millis(100), "{s:?}");
        // The busy-time histogram has the stall in its buckets above 100 ms.
        assert!(stats.histograms.busy.snapshot().count_above(100_000_000) >= 1);
        // The writes this worker counted itself: at least the echoes of `hello` and of the stall.
        assert!(s.syscalls.get(Syscall::Write) >= 2, "{s:?}");
        remote.stop().unwrap();
        looping.join().unwrap().unwrap();
    }
}
