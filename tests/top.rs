//! `tokenpipe top` against a real relay: while streams run through it, its plain output has the legend,
//! the column names and rows of plausible figures; against an address where nothing listens, it says so
//! on every refresh and ends after `--count`; an https:// URL is refused with a reason.

mod common;

use common::*;
use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// How long one `top` run may take, whatever happens.
const TOP_DEADLINE: Duration = Duration::from_secs(30);

/// Runs `tokenpipe top ARGS` with stdout and stderr piped, until it exits (at most [`TOP_DEADLINE`], then
/// it is killed and the test fails): its status, stdout and stderr.
fn top(args: &[&str]) -> (ExitStatus, String, String) {
    let mut child = Command::new(BIN)
        .arg("top")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tokenpipe top");
    let read_all = |mut r: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let stdout = read_all(Box::new(child.stdout.take().expect("stdout")));
    let stderr = read_all(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + TOP_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tokenpipe top {args:?} still running after {TOP_DEADLINE:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    let (stdout, stderr) = (
        stdout.join().expect("stdout"),
        stderr.join().expect("stderr"),
    );
    (status, stdout, stderr)
}

/// A number as `top` prints it (`412`, `12.3k`, `2.5%`, `19.5KiB`); `None` for `-`.
fn number(field: &str) -> Option<f64> {
    let digits = field.trim_end_matches(|c: char| c.is_alphabetic() || c == '%');
    let scale = if field.ends_with('k') { 1e3 } else { 1.0 };
    digits.parse::<f64>().ok().map(|v| v * scale)
}

/// The rows: the lines after the column names that begin with a time of day.
fn rows(stdout: &str) -> Vec<Vec<String>> {
    let after_header = stdout
        .lines()
        .skip_while(|l| !l.contains("busy by worker"))
        .skip(1);
    after_header
        .filter(|l| l.as_bytes().get(2) == Some(&b':') && l.as_bytes().get(5) == Some(&b':'))
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

#[test]
fn top_shows_the_figures_of_a_relay_under_load() {
    let relay = Proc::spawn(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "1",
        "--mock-interval-ms",
        "1",
    ]);
    let addr = relay.addr;
    // A couple of streams before, and a steady trickle while `top` watches, until it has exited.
    for i in 0..2 {
        relay_stream(addr, &prompt_body(&format!("before {i}"), None, Some(5)));
    }
    let done = Arc::new(AtomicBool::new(false));
    let load = {
        let done = Arc::clone(&done);
        thread::spawn(move || {
            let mut sent = 0;
            while !done.load(Ordering::SeqCst) && sent < 2_000 {
                relay_stream(addr, &prompt_body("during", None, Some(5)));
                sent += 1;
            }
            sent
        })
    };
    let url = relay.url();
    let (status, stdout, stderr) = top(&[
        "--url",
        &url,
        "--count",
        "2",
        "--interval",
        "200ms",
        "--plain",
    ]);
    done.store(true, Ordering::SeqCst);
    let sent = load.join().expect("load thread");
    assert!(
        status.success(),
        "{status}; stdout {stdout}; stderr {stderr}"
    );
    assert!(sent > 0);

    // The legend and the column names come first.
    assert!(
        stdout.starts_with(&format!("# tokenpipe top: {url}/metrics every 200ms")),
        "{stdout}"
    );
    for needle in [
        "# time: UTC | streams: relayed requests",
        "sys/chk: system calls per relayed chunk",
    ] {
        assert!(stdout.contains(needle), "no {needle:?} in {stdout}");
    }
    assert!(
        !stdout.contains('\x1b'),
        "plain output has no escape: {stdout:?}"
    );
    let rows = rows(&stdout);
    assert_eq!(rows.len(), 2, "--count 2: {stdout}");

    for row in &rows {
        // 16 columns and one worker's busy share.
        assert_eq!(row.len(), 17, "{row:?} in {stdout}");
        let streams = number(&row[1]).expect("streams");
        assert!((0.0..=2.0).contains(&streams), "{row:?}");
        let busy = number(&row[7]).expect("busy");
        assert!(
            row[7].ends_with('%') && (0.0..=100.0).contains(&busy),
            "{row:?}"
        );
        let sockets: Vec<f64> = row[13].split('/').filter_map(number).collect();
        assert_eq!(sockets.len(), 4, "{row:?}");
        assert_eq!(sockets[0], 1.0, "one worker, one listener: {row:?}");
        assert!(sockets[1] >= 1.0, "at least top's own connection: {row:?}");
        let (open, max) = row[14].split_once('/').expect("fds/max");
        let (open, max) = (number(open).expect("fds"), number(max).expect("max"));
        assert!(open > 0.0 && open < max, "{row:?}");
        assert!(row[15].ends_with("iB"), "rss: {row:?}");
        assert_eq!(row[4..7].len(), 3);
    }
    // Streams ran through every interval: at least one row (in practice both) saw them.
    let busy_row = rows
        .iter()
        .find(|r| number(&r[2]).is_some_and(|c| c > 0.0))
        .unwrap_or_else(|| panic!("no row with chunks: {stdout}"));
    assert!(
        number(&busy_row[3]).is_some_and(|b| b > 0.0),
        "bytes/s: {busy_row:?}"
    );
    assert!(number(&busy_row[4]).is_some(), "ttft50: {busy_row:?}");
    assert!(
        number(&busy_row[9]).is_some_and(|s| s > 0.0),
        "sys/chk: {busy_row:?}"
    );
    assert!(
        number(&busy_row[10]).is_some_and(|r| r > 0.0),
        "2xx/s: {busy_row:?}"
    );
    assert_eq!(number(&busy_row[12]), Some(0.0), "5xx/s: {busy_row:?}");
}

#[test]
fn an_unreachable_relay_is_reported_on_every_refresh_until_count() {
    let addr = closed_port_addr();
    let url = format!("http://{addr}");
    // No --plain: stdout is a pipe, which is enough for plain lines.
    let (status, stdout, stderr) = top(&["--url", &url, "--count", "2", "--interval", "200ms"]);
    assert_eq!(status.code(), Some(1), "never answered: {stdout} {stderr}");
    let message = format!("cannot read {url}/metrics: connection refused");
    assert_eq!(
        stdout.matches(&message).count(),
        3,
        "the first scrape and two refreshes: {stdout}"
    );
    assert!(stdout.contains("trying again every 200ms"), "{stdout}");
    assert!(!stdout.contains('\x1b'), "{stdout:?}");
    assert!(stderr.contains("no scrape of"), "{stderr}");
}

#[test]
fn an_https_url_is_refused_with_a_reason() {
    let (status, stdout, stderr) = top(&["--url", "https://127.0.0.1:8443", "--count", "1"]);
    assert_eq!(status.code(), Some(2), "a usage error: {stdout} {stderr}");
    assert!(stderr.contains("https is not supported"), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
}
