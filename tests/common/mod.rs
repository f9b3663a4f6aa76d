//! Shared helpers for the loopback integration tests.
//!
//! Everything here talks to the real `tokenpipe` binary over real sockets on `127.0.0.1`, with ephemeral
//! ports. The rules every test follows:
//!
//! - Synchronize on events (a line printed, bytes received, a socket EOF), never on sleeps. The only sleeps
//!   are the tiny pauses a fake upstream makes between writes so that the relay sees split reads.
//! - Bound every wait: socket reads have timeouts, channel receives have deadlines, fake servers accept a
//!   bounded number of connections.
//! - Child processes are owned by a [`Proc`] guard that kills and reaps them on drop, also when a test panics.
//!
//! Modules: this file starts and stops processes; [`http`] is a minimal blocking HTTP/1.1 client (and the
//! server side of fake upstreams); [`inproc`] starts a relay inside the test process, for tests that read
//! its counters, or a mock upstream; [`api`] builds the relay's and the mock's requests and checks their
//! answers; [`faults`] asks the mock for faults; [`sse`] picks SSE payloads apart; [`fake`] writes fake
//! upstreams with hostile framing.
#![allow(dead_code, unused_imports)] // each test crate uses a different subset

mod api;
mod fake;
mod faults;
mod http;
mod inproc;
mod pki;
mod prom;
mod sse;

pub use api::*;
pub use fake::*;
pub use faults::*;
pub use http::*;
pub use inproc::*;
pub use pki::*;
pub use prom::*;
pub use sse::*;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_tokenpipe");

/// How long a child gets to print its `listening on` line.
pub const STARTUP_DEADLINE: Duration = Duration::from_secs(15);

/// Default read timeout of every test socket: no single read may block longer than this.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// The model name the tests pass both to the relay and in direct requests to the mock.
pub const MODEL: &str = "test-model";

// ---------------------------------------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------------------------------------

/// The lines a child writes on stderr, as they come (a thread reads them into a channel).
pub struct Logs {
    rx: mpsc::Receiver<String>,
    /// Every line received so far.
    pub seen: Vec<String>,
}

impl Logs {
    fn read(stderr: std::process::ChildStderr) -> Logs {
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Logs {
            rx,
            seen: Vec::new(),
        }
    }

    /// Waits (at most `within`) for a line that `matches`, and returns it; panics with the lines seen.
    pub fn wait_for(
        &mut self,
        what: &str,
        matches: impl Fn(&str) -> bool,
        within: Duration,
    ) -> String {
        if let Some(line) = self.seen.iter().find(|l| matches(l)) {
            return line.clone();
        }
        let deadline = std::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if matches(&line) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no log line {what} within {within:?}; lines: {:#?}",
                    self.seen
                ),
            }
        }
    }

    /// Takes whatever lines have arrived by now.
    pub fn collect(&mut self) -> &[String] {
        while let Ok(line) = self.rx.try_recv() {
            self.seen.push(line);
        }
        &self.seen
    }
}

/// A running `tokenpipe` child process. Dropping it kills and reaps the process.
pub struct Proc {
    child: Child,
    /// The address from the `listening on http://ADDR` line.
    pub addr: SocketAddr,
    /// The arguments, for failure messages.
    pub args: Vec<String>,
}

impl Proc {
    /// Spawns `tokenpipe ARGS`, with API keys removed from the environment and `RUST_LOG=warn`, and waits (with
    /// a deadline) until it prints `listening on http://ADDR` on stdout.
    ///
    /// The child's stderr is inherited so that its warnings show up next to a failing test; set
    /// `TOKENPIPE_TEST_STDERR=null` to silence it.
    pub fn spawn(args: &[&str]) -> Proc {
        Proc::spawn_with(args, None).0
    }

    /// [`Proc::spawn`] with `RUST_LOG=rust_log` and the child's stderr captured: its lines arrive in the
    /// returned [`Logs`].
    pub fn spawn_logged(args: &[&str], rust_log: &str) -> (Proc, Logs) {
        let (proc, logs) = Proc::spawn_with(args, Some(rust_log));
        (proc, logs.expect("captured stderr"))
    }

    fn spawn_with(args: &[&str], capture: Option<&str>) -> (Proc, Option<Logs>) {
        let stderr = match (capture, std::env::var("TOKENPIPE_TEST_STDERR").as_deref()) {
            (Some(_), _) => Stdio::piped(),
            (None, Ok("null")) => Stdio::null(),
            _ => Stdio::inherit(),
        };
        let mut command = Command::new(BIN);
        // The binary reads `TOKENPIPE_*` settings from the environment: the tests' arguments must be all it sees.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("TOKENPIPE_") {
                command.env_remove(key);
            }
        }
        let mut child = command
            .args(args)
            .env_remove("OPENAI_API_KEY")
            .env_remove("GEMINI_API_KEY")
            .env(
                "RUST_LOG",
                capture.map(str::to_string).unwrap_or_else(|| {
                    std::env::var("TOKENPIPE_TEST_LOG").unwrap_or_else(|_| "warn".into())
                }),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {BIN} {args:?}: {e}"));
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let logs = child.stderr.take().map(Logs::read);

        // A thread reads stdout line by line: it reports the `listening on` line (or EOF) through a channel and
        // then keeps draining stdout so that the child never blocks on a full pipe.
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel::<Result<String, String>>();
        thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let mut reported = false;
            let mut seen = Vec::new();
            loop {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if !reported && line.trim_start().starts_with("listening on ") {
                            reported = true;
                            let _ = tx.send(Ok(line.trim().to_string()));
                        } else if !reported {
                            seen.push(line.trim_end().to_string());
                        }
                    }
                }
            }
            if !reported {
                let _ = tx.send(Err(format!(
                    "stdout closed before `listening on`; stdout was {seen:?}"
                )));
            }
        });

        let line = match rx.recv_timeout(STARTUP_DEADLINE) {
            Ok(Ok(line)) => line,
            Ok(Err(why)) => {
                let status = child.wait().ok();
                panic!("{BIN} {args:?} did not start: {why}; exit status {status:?}");
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{BIN} {args:?} printed no `listening on` line within {STARTUP_DEADLINE:?}");
            }
        };
        let addr_text = line
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected startup line {line:?}"));
        let addr: SocketAddr = match addr_text.trim_end_matches('/').parse() {
            Ok(addr) => addr,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("cannot parse address in {line:?}: {e}");
            }
        };
        (Proc { child, addr, args }, logs)
    }

    /// `http://ADDR`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (a name `kill` knows: `TERM`, `INT`) to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {}: {status}", self.pid());
    }

    /// Waits for the process to exit, at most `within` (checking every 10 ms); its status, or `None` if it
    /// is still running.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// CPU time the process has used so far (user and system), in clock ticks (`/proc/PID/stat`).
    pub fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).expect("stat");
        // The command name, in parentheses, may hold spaces: the fields that follow are counted from it.
        let fields: Vec<&str> = stat[stat.rfind(')').expect("comm") + 1..]
            .split_whitespace()
            .collect();
        let field = |i: usize| fields[i].parse::<u64>().expect("a number");
        field(11) + field(12)
    }

    /// Panics if the process has exited (crashed) on its own.
    pub fn assert_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{BIN} {:?} exited unexpectedly: {status}", self.args);
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tokenpipe mock-upstream --listen 127.0.0.1:0 ARGS` (pass `--tokens`, `--interval-ms`, `--format`...).
pub fn spawn_mock(args: &[&str]) -> Proc {
    let mut all = vec!["mock-upstream", "--listen", "127.0.0.1:0"];
    all.extend_from_slice(args);
    Proc::spawn(&all)
}

/// `tokenpipe serve --listen 127.0.0.1:0 --workers 1 --upstream URL --provider P EXTRA`.
pub fn spawn_relay(upstream_url: &str, provider: &str, extra: &[&str]) -> Proc {
    let mut all = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "1",
        "--upstream",
        upstream_url,
        "--provider",
        provider,
    ];
    all.extend_from_slice(extra);
    Proc::spawn(&all)
}

/// A one-worker relay (`serve --listen 127.0.0.1:0 --workers 1` and `extra`) with `RUST_LOG=rust_log`
/// and its log lines captured ([`Proc::spawn_logged`]).
pub fn spawn_relay_logged(extra: &[&str], rust_log: &str) -> (Proc, Logs) {
    let mut all = vec!["serve", "--listen", "127.0.0.1:0", "--workers", "1"];
    all.extend_from_slice(extra);
    Proc::spawn_logged(&all, rust_log)
}

/// An address on which nothing listens: bound to an ephemeral port, then closed. A connection to it is
/// refused, which is how a refusing upstream is tested: a listener cannot refuse one request and accept
/// the next, so the mock's faults have no "refuse".
pub fn closed_port_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local_addr");
    drop(listener);
    addr
}

/// Raises this test process's soft `RLIMIT_NOFILE` to at least `want` (up to the hard limit) and returns the
/// resulting soft limit.
pub fn raise_nofile(want: u64) -> u64 {
    rlimit::increase_nofile_limit(want).expect("increase RLIMIT_NOFILE")
}

/// Resident set size of a process, from `/proc/PID/status`, in KiB.
pub fn vm_rss_kib(pid: u32) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line")
}

/// Waits until an upstream's byte counter stops growing (no change for 300 ms, checked every 50 ms, at most
/// 10 s) and returns the final count. Used to wait for TCP flow control to stall a writer: "no progress" is
/// the event, and the poll interval is only how often we look at the counter.
pub fn wait_until_stalled(pushed: &std::sync::atomic::AtomicU64, what: &str) -> u64 {
    use std::sync::atomic::Ordering;
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut last, mut last_change) = (pushed.load(Ordering::SeqCst), Instant::now());
    loop {
        assert!(
            Instant::now() < deadline,
            "{what}: the upstream never stalled ({last} bytes pushed)"
        );
        thread::sleep(Duration::from_millis(50));
        let now = pushed.load(Ordering::SeqCst);
        if now != last {
            (last, last_change) = (now, Instant::now());
        } else if last > 0 && last_change.elapsed() >= Duration::from_millis(300) {
            return last;
        }
    }
}
