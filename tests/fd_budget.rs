//! The descriptor budget, in the binary with a low `--max-fds`: past the budget new clients get a fast
//! 503 while the streams in flight go on (regime 2); with a budget set above what the limit allows,
//! `accept` runs out of descriptors, and the relay turns clients away with its spare descriptor and
//! pauses accepting without spinning (regime 3), then accepts again once connections close.
//!
//! Both run against a separate mock process, so that the relay's descriptors are only its own. Loads
//! are bounded: a few dozen connections, all on loopback.

mod common;

use common::*;
use std::net::TcpStream;
use std::time::{Duration, Instant};
use tokenpipe::server::budget::{Inputs, plan};

/// Tokens of each paced stream (at 50 ms: three seconds, long enough to outlast the overload).
const TOKENS: u64 = 60;

/// The relay's own limit in these tests.
const MAX_FDS: u64 = 64;

/// How much CPU the relay may use while it is at its limit: a fifth of a core. A loop that spins on
/// `EMFILE` uses a whole one.
const MAX_CPU_SHARE: f64 = 0.2;

fn clock_ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

fn relay_with_limit(mock: &Proc, extra: &[&str]) -> Proc {
    let max_fds = MAX_FDS.to_string();
    let mut args = vec!["--model", MODEL, "--max-fds", &max_fds];
    args.extend_from_slice(extra);
    spawn_relay(&mock.url(), "openai", &args)
}

/// A stream request on a fresh connection, and its head.
fn ask(relay: &Proc, prompt: &str) -> (Conn, Head) {
    let mut c = Conn::connect(relay.addr);
    c.send(&stream_request(&prompt_body(prompt, None, None)));
    let head = c.expect_head(prompt);
    (c, head)
}

/// The fast refusal: 503 `overloaded`, `Retry-After: 1`, and the connection closes after it.
fn assert_overloaded(mut c: Conn, head: Head, what: &str) {
    assert_eq!(head.status(), 503, "{what}: {head:?}");
    assert_eq!(head.header("retry-after"), Some("1"), "{what}");
    assert!(head.says_close(), "{what}: {head:?}");
    let (body, _) = c.read_body(&head).expect("the 503's body");
    let json: serde_json::Value = serde_json::from_slice(&body).expect("a JSON body");
    assert_eq!(json["error"]["code"], "overloaded", "{what}");
    c.wait_closed(Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{what}: {e}"));
}

fn assert_intact(c: &mut Conn, what: &str) {
    let body = c.read_chunked_body().expect("read the stream");
    assert!(
        body.complete,
        "{what}: cut short: {:?}",
        lossy(&body.payload)
    );
    assert_eq!(token_texts(&body.payload).len() as u64, TOKENS, "{what}");
}

/// CPU ticks the relay uses while `load` runs for at least a second, as a share of one core.
fn cpu_share_during(relay: &Proc, mut load: impl FnMut()) -> f64 {
    let ticks = relay.cpu_ticks();
    let t0 = Instant::now();
    load();
    while t0.elapsed() < Duration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let used = (relay.cpu_ticks() - ticks) as f64 / clock_ticks_per_second() as f64;
    used / t0.elapsed().as_secs_f64()
}

/// Regime 2: the relay serves exactly its budget (the formula's figure for this limit), then answers
/// every extra client at once with a 503, without starving the streams in flight, and stays idle.
#[test]
fn past_the_budget_clients_get_a_fast_503_and_the_streams_go_on() {
    let mock = spawn_mock(&["--tokens", &TOKENS.to_string(), "--interval-ms", "50"]);
    let relay = relay_with_limit(&mock, &[]);
    let budget = plan(&Inputs {
        limit: MAX_FDS,
        relay_workers: 1,
        mock_workers: 0,
        upstreams: 1,
        max_idle: 64,
        embedded_mock: false,
        max_clients: None,
    })
    .expect("a budget")
    .clients;
    let mut streams = Vec::new();
    for i in 0..budget {
        let (c, head) = ask(&relay, &format!("within {i}"));
        assert_stream_head(&head);
        streams.push(c);
    }
    let t0 = Instant::now();
    for i in 0..10 {
        let (c, head) = ask(&relay, &format!("over {i}"));
        assert_overloaded(c, head, &format!("client {i} over the budget"));
    }
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "refusing 10 clients took {:?}",
        t0.elapsed()
    );
    let mut extra = 0;
    let share = cpu_share_during(&relay, || {
        for i in 0..20 {
            let (c, head) = ask(&relay, &format!("during {i}"));
            assert_overloaded(c, head, "a client while at the budget");
            extra += 1;
        }
    });
    assert_eq!(extra, 20);
    assert!(share < MAX_CPU_SHARE, "the relay used {share:.2} of a core");
    for (i, c) in streams.iter_mut().enumerate() {
        assert_intact(c, &format!("stream {i}"));
    }
}

/// Regime 3: `--max-clients` above what 64 descriptors allow, and idle clients until `accept` fails with
/// `EMFILE`. One client is turned away with the spare descriptor, the rest wait in the backlog, the relay
/// does not spin, the streams in flight finish, and once the idle clients leave it accepts again.
#[test]
fn out_of_descriptors_the_relay_sheds_pauses_and_recovers() {
    let mock = spawn_mock(&["--tokens", &TOKENS.to_string(), "--interval-ms", "50"]);
    let relay = relay_with_limit(&mock, &["--max-clients", "1000"]);
    let mut streams: Vec<Conn> = (0..3)
        .map(|i| {
            let (c, head) = ask(&relay, &format!("stream {i}"));
            assert_stream_head(&head);
            c
        })
        .collect();
    // More connections than descriptors: the kernel completes every handshake (the backlog is deep),
    // the relay accepts until it runs out.
    let mut idle: Vec<Conn> = (0..80)
        .map(|_| Conn::new(TcpStream::connect(relay.addr).expect("connect")))
        .collect();
    let turned_away = first_refused(&mut idle, Duration::from_secs(5));
    let c = idle.remove(turned_away);
    let mut c = c;
    let head = c.expect_head("the client turned away");
    assert_overloaded(c, head, "the client turned away with the spare descriptor");

    let mut more = Vec::new();
    let share = cpu_share_during(&relay, || {
        for _ in 0..20 {
            more.push(TcpStream::connect(relay.addr).expect("connect"));
        }
    });
    assert!(share < MAX_CPU_SHARE, "the relay used {share:.2} of a core");
    for (i, c) in streams.iter_mut().enumerate() {
        assert_intact(c, &format!("stream {i}"));
    }
    drop(idle);
    drop(more);
    // Accepting resumes: the clients that left are taken from the backlog and closed, and then a new
    // one is served. Each try is bounded; the backlog may take a few rounds to clear.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = Conn::connect(relay.addr);
        c.set_read_timeout(Duration::from_secs(2));
        c.send(&get("/healthz"));
        if let Ok(Some(head)) = c.read_head()
            && head.status() == 200
        {
            break;
        }
        assert!(Instant::now() < deadline, "the relay never accepted again");
    }
}

/// Index of the first of `conns` that the relay answered (the one turned away), looking at each in turn
/// with a short read timeout until `within` has passed.
fn first_refused(conns: &mut [Conn], within: Duration) -> usize {
    let deadline = Instant::now() + within;
    loop {
        for (i, c) in conns.iter_mut().enumerate() {
            c.set_read_timeout(Duration::from_millis(1));
            let got = c.fill();
            c.set_read_timeout(IO_TIMEOUT);
            if matches!(got, Ok(n) if n > 0) {
                return i;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no client was turned away within {within:?}"
        );
    }
}
