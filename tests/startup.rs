//! What the process says and sets up at start: the fd limit, loop-latency warnings, the embedded mock.
//!
//! These tests read the child's stderr (its log) line by line on a thread and wait, with a deadline, for the
//! line they expect: the event they synchronize on is the line being written.

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// A child whose stdout and stderr lines arrive on one channel; killed on drop. The two pipes are read by
/// two threads, so lines of one may overtake lines of the other: every line is kept, and a wait looks at
/// the lines already seen before it waits for new ones.
struct Logged {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: std::cell::RefCell<Vec<String>>,
}

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Logged {
    fn spawn(args: &[&str], rust_log: &str) -> Logged {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tokenpipe"))
            .args(args)
            .env_remove("OPENAI_API_KEY")
            .env_remove("GEMINI_API_KEY")
            .env_remove("TOKENPIPE_LISTEN")
            .env("RUST_LOG", rust_log)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tokenpipe");
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().expect("stdout");
        let err = child.stderr.take().expect("stderr");
        let tx2 = tx.clone();
        thread::spawn(move || {
            BufReader::new(out)
                .lines()
                .map_while(Result::ok)
                .for_each(|l| drop(tx.send(l)))
        });
        thread::spawn(move || {
            BufReader::new(err)
                .lines()
                .map_while(Result::ok)
                .for_each(|l| drop(tx2.send(l)))
        });
        Logged {
            child,
            lines,
            seen: Default::default(),
        }
    }

    /// Waits (at most 10 s) for a line containing `needle`; returns it.
    fn wait_for(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        if let Some(line) = self.seen.borrow().iter().find(|l| l.contains(needle)) {
            return line.clone();
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.borrow_mut().push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no line containing {needle:?} within 10 s; saw {:#?}",
                    self.seen.borrow()
                ),
            }
        }
    }

    fn addr(&self) -> std::net::SocketAddr {
        let line = self.wait_for("listening on http://");
        line.trim_start_matches("listening on http://")
            .trim()
            .parse()
            .expect("address")
    }
}

/// `--max-fds N` sets the soft RLIMIT_NOFILE (as the kernel reports it for the process) and the log says
/// what it was and what it is.
#[test]
fn max_fds_sets_and_logs_the_soft_limit() {
    let p = Logged::spawn(
        &[
            "mock-upstream",
            "--listen",
            "127.0.0.1:0",
            "--max-fds",
            "512",
        ],
        "info",
    );
    let line = p.wait_for("file descriptor limit: soft");
    assert!(line.contains("-> 512"), "{line}");
    p.addr();
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", p.child.id())).expect("limits");
    let open_files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files");
    assert_eq!(
        open_files.split_whitespace().nth(3),
        Some("512"),
        "{open_files}"
    );
}

/// An iteration busier than `--loop-warn-ms` is logged with its duration (0 ms makes every busy iteration
/// qualify).
#[test]
fn slow_loop_iterations_are_logged() {
    let p = Logged::spawn(
        &[
            "mock-upstream",
            "--listen",
            "127.0.0.1:0",
            "--loop-warn-ms",
            "0",
        ],
        "warn",
    );
    let addr = p.addr();
    let resp = fetch(addr, &get("/healthz"));
    assert_eq!(resp.status(), 200);
    let line = p.wait_for("loop iteration busy for");
    assert!(line.contains("mock-0") && line.contains(" ms "), "{line}");
}

/// With no key and no --upstream, the relay starts the mock inside the process, says so, and streams from it.
#[test]
fn no_key_and_no_upstream_runs_the_embedded_mock() {
    let p = Logged::spawn(
        &[
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--mock-interval-ms",
            "1",
            "--mock-tokens",
            "3",
        ],
        "warn",
    );
    p.wait_for("built-in mock upstream");
    let addr = p.addr();
    let payload = relay_stream(addr, &prompt_body("embedded mock", None, None));
    assert_eq!(token_texts(&payload).len(), 3, "{:?}", lossy(&payload));
}

/// Runs `tokenpipe ARGS` (no API key in its environment, unless `env` sets one), expects it to refuse to
/// start, and returns what it wrote on stderr.
fn refused(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tokenpipe"));
    command
        .args(args)
        .env_remove("OPENAI_API_KEY")
        .env_remove("GEMINI_API_KEY")
        .env_remove("TOKENPIPE_UPSTREAM")
        .envs(env.iter().copied());
    let out = command.output().expect("run tokenpipe");
    assert!(!out.status.success(), "{args:?} started");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains("listening on"),
        "{args:?} listened: {stdout}"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A key that cannot go into a header (a newline in it) is refused at start, naming the variable and
/// never printing the key. (A valid key without --upstream means the provider's public HTTPS API, which
/// tests never contact: see config's unit tests.)
#[test]
fn a_key_that_cannot_be_sent_is_refused_clearly() {
    let err = refused(
        &["--listen", "127.0.0.1:0"],
        &[("OPENAI_API_KEY", "sk-test-not\na-real-key")],
    );
    assert!(err.contains("OPENAI_API_KEY"), "{err}");
    assert!(
        !err.contains("sk-test-not"),
        "the key leaked into the message: {err}"
    );
}

/// A `--model` that could not be put in an upstream path is refused at start, not with a 500 per request.
#[test]
fn an_invalid_model_is_refused_at_start() {
    let err = refused(
        &["--listen", "127.0.0.1:0", "--model", "../../v1/files"],
        &[],
    );
    assert!(err.contains("--model"), "{err}");
}

/// A `--max-fds` too low to listen and serve anything is refused at start, naming the option.
#[test]
fn a_max_fds_too_low_to_serve_is_refused() {
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "2",
        "--max-fds",
        "6",
    ];
    let err = refused(&args, &[]);
    assert!(err.contains("--max-fds 6 is too low"), "{err}");
}

/// `--listen PORT` means that port on 127.0.0.1; a bad address says which forms are expected.
#[test]
fn listen_takes_a_bare_port_and_explains_bad_ones() {
    let p = Logged::spawn(&["mock-upstream", "--listen", "0"], "warn");
    assert!(p.addr().ip().is_loopback());
    let err = refused(&["--listen", "localhost"], &[]);
    assert!(err.contains("HOST:PORT"), "{err}");
}
