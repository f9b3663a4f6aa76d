//! What the relay does when upstreams are busy or failing: admission (a cap and a queue per upstream,
//! 503 past them), the per-client rate limit (429), retries (a 500 then a 200 is a 200; a 400 is
//! final), fallback to another upstream, and the circuit breaker. The mock fails on demand
//! (`[fault: ...]` in the prompt, docs/04); every test synchronises on the relay's counters or on what
//! the sockets show.

mod common;

use common::*;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokenpipe::config::{UpstreamConfig, UpstreamSpec};
use tokenpipe::relay::admission::AdmissionLimits;
use tokenpipe::relay::providers::{Provider, ProviderKey, parse_upstream_url};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A streamed generation with `prompt` (no token limit: the mock's own count applies).
fn generate(prompt: &str) -> Vec<u8> {
    stream_request(&prompt_body(prompt, None, None))
}

/// The relay's in-flight and queued requests at its first upstream.
fn load(relay: &InProcess) -> (usize, usize) {
    let l = &relay.running().upstream_load()[0];
    (l.in_flight, l.queued)
}

/// With at most 4 requests in flight and 4 waiting, the 9th concurrent request gets a 503 with
/// Retry-After at once; the 8 others complete; afterwards every permit is back and a new request is
/// served at once.
#[test]
fn overload_beyond_the_cap_and_the_queue_is_a_fast_503() {
    let mock = InProcess::mock(8, ms(100));
    let relay = InProcess::relay(&mock.url(), |c| {
        c.admission = AdmissionLimits {
            max_concurrent: Some(4),
            queue: 4,
            queue_timeout: Duration::from_secs(10),
        };
    });
    let mut streams: Vec<Conn> = (0..8)
        .map(|_| {
            let mut c = Conn::connect(relay.addr);
            c.send(&generate("busy"));
            c
        })
        .collect();
    let counts = relay.counts_when(|c| c.queued >= 4);
    assert_eq!(counts.queued, 4, "{counts:?}");
    assert_eq!(load(&relay), (4, 4));
    let started = Instant::now();
    let ninth = fetch(relay.addr, &generate("one too many"));
    assert_eq!(ninth.status(), 503, "{:?}", ninth.text());
    assert_eq!(ninth.json()["error"]["code"], "upstream_busy");
    assert!(
        ninth.head.header("retry-after").is_some(),
        "{:?}",
        ninth.head
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    for (i, c) in streams.iter_mut().enumerate() {
        let resp = c.read_response(&format!("stream {i}"));
        assert_eq!(resp.status(), 200, "stream {i}");
        assert!(resp.complete, "stream {i}");
    }
    relay.counts_when(|c| c.completed >= 8);
    assert_eq!(load(&relay), (0, 0), "every permit and place is back");
    let mut fresh = Conn::connect(relay.addr);
    let asked = Instant::now();
    fresh.send(&generate("after the burst"));
    fresh.expect_head("a new request");
    assert!(asked.elapsed() < ms(500), "waited {:?}", asked.elapsed());
}

/// A request that waits longer than the queue's deadline gets a 503; its place is given back.
#[test]
fn a_wait_past_the_queue_deadline_is_a_503() {
    let mock = InProcess::mock(20, ms(100));
    let relay = InProcess::relay(&mock.url(), |c| {
        c.admission = AdmissionLimits {
            max_concurrent: Some(1),
            queue: 1,
            queue_timeout: ms(300),
        };
    });
    let mut long = Conn::connect(relay.addr);
    long.send(&generate("a long answer"));
    long.expect_head("the long stream");
    let started = Instant::now();
    let waited = fetch(relay.addr, &generate("waits"));
    assert_eq!(waited.status(), 503);
    assert!(started.elapsed() >= ms(250), "{:?}", started.elapsed());
    assert!(
        waited.text().contains("no turn within"),
        "{}",
        waited.text()
    );
    assert_eq!(
        relay.counts_when(|c| c.queue_timeouts >= 1).queue_timeouts,
        1
    );
    assert_eq!(load(&relay).1, 0);
}

/// A client that leaves mid-stream gives its permit back with it.
#[test]
fn a_departing_client_gives_its_permit_back() {
    let mock = InProcess::mock(50, ms(50));
    let relay = InProcess::relay(&mock.url(), |c| {
        c.admission.max_concurrent = Some(2);
    });
    let mut c = Conn::connect(relay.addr);
    c.send(&generate("leaving"));
    c.expect_head("head");
    assert_eq!(load(&relay).0, 1);
    drop(c);
    let deadline = Instant::now() + Duration::from_secs(5);
    while load(&relay).0 != 0 && Instant::now() < deadline {
        std::thread::sleep(ms(5));
    }
    assert_eq!(load(&relay), (0, 0));
}

/// A burst beyond a client's bucket gets 429 with Retry-After; another client is not affected.
#[test]
fn a_burst_beyond_the_bucket_is_a_429() {
    let mock = InProcess::mock(1, ms(1));
    let relay = InProcess::relay(&mock.url(), |c| {
        c.rate_limit = Some(tokenpipe::relay::ratelimit::RateLimit {
            per_second: 0.5,
            burst: 2.0,
        });
    });
    let mut c = Conn::connect(relay.addr);
    for i in 0..2 {
        c.send(&generate("within the burst"));
        assert_eq!(c.read_response(&format!("request {i}")).status(), 200);
    }
    c.send(&generate("one too many"));
    let limited = c.read_response("beyond the burst");
    assert_eq!(limited.status(), 429, "{:?}", limited.text());
    assert_eq!(limited.json()["error"]["code"], "rate_limited");
    let after: u64 = limited
        .head
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=2).contains(&after), "Retry-After {after}");
    assert_eq!(
        fetch(relay.addr, &get("/healthz")).status(),
        200,
        "probes are never limited"
    );
    assert_eq!(relay.counts().rate_limited, 1);
}

/// The mock answers the first request of key `k` with a 500, the next as usual: the client sees only
/// the 200 stream. A 400 is final: no retry, the client hears of it at once.
#[test]
fn a_500_is_retried_and_a_400_is_not() {
    let mock = InProcess::mock(3, ms(1));
    let relay = InProcess::relay(&mock.url(), |c| c.retry.backoff = ms(50));
    let resp = fetch(
        relay.addr,
        &generate(&fault_prompt("hello", "status=500,times=1,key=retry-500")),
    );
    assert_eq!(resp.status(), 200, "{:?}", resp.text());
    assert!(resp.complete);
    assert!(!resp.text().contains("error"), "{}", resp.text());
    let counts = relay.counts_when(|c| c.completed >= 1);
    assert_eq!(counts.backoffs, 1, "{counts:?}");
    let refused = fetch(relay.addr, &generate(&fault_prompt("hello", "status=400")));
    assert_eq!(refused.status(), 502, "{:?}", refused.text());
    assert!(refused.text().contains("400"), "{}", refused.text());
    assert_eq!(
        relay.counts_when(|c| c.failed >= 1).backoffs,
        1,
        "the 400 was not retried"
    );
}

/// A 429 is retried after its Retry-After when that is within the wait allowed; one beyond it is passed
/// on as it is (a pass-through route gets the upstream's own 429).
#[test]
fn a_429_is_retried_after_its_retry_after_only_when_allowed() {
    let mock = InProcess::mock(2, ms(1));
    let relay = InProcess::relay(&mock.url(), |c| {
        c.retry.max_wait = Duration::from_secs(2);
    });
    let started = Instant::now();
    let resp = fetch(
        relay.addr,
        &generate(&fault_prompt(
            "hi",
            "status=429,retry-after=1,times=1,key=ra-1",
        )),
    );
    assert_eq!(resp.status(), 200, "{:?}", resp.text());
    assert!(
        started.elapsed() >= ms(950),
        "retried after {:?}",
        started.elapsed()
    );
    let body = r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let too_long = fetch(
        relay.addr,
        &post_with_fault("/v1/chat/completions", body, "status=429,retry-after=30"),
    );
    assert_eq!(too_long.status(), 429, "{:?}", too_long.text());
    assert_eq!(too_long.head.header("retry-after"), Some("30"));
}

/// The first upstream refuses connections: the request goes to its fallback (of another provider: the
/// simple route's body is made again for it) and the client gets the stream.
#[test]
fn a_refusing_upstream_falls_back_to_the_next() {
    let mock = InProcess::mock(3, ms(1));
    let dead = closed_port_addr();
    let relay = InProcess::relay(&mock.url(), |c| {
        let mut primary = UpstreamSpec::new(
            "primary",
            Provider::Gemini,
            parse_upstream_url(&format!("http://{dead}")).unwrap(),
        );
        primary.key = Some(ProviderKey::new("g-key").unwrap());
        primary.fallback = Some("backup".into());
        let mut backup = UpstreamSpec::new(
            "backup",
            Provider::OpenAi,
            parse_upstream_url(&mock.url()).unwrap(),
        );
        backup.model = MODEL.into();
        c.upstream = UpstreamConfig::Remote {
            upstreams: vec![primary, backup],
            routes: Vec::new(),
            generate: None,
        };
        c.retry.max = 0;
    });
    let resp = fetch(relay.addr, &generate("fall back"));
    assert_eq!(resp.status(), 200, "{:?}", resp.text());
    assert!(resp.complete);
    assert!(
        resp.text().contains("chat.completion.chunk"),
        "{}",
        resp.text()
    );
    let counts = relay.counts_when(|c| c.completed >= 1);
    assert_eq!(counts.fallbacks, 1, "{counts:?}");
    let seen = fetch(mock.addr, &get("/debug/requests")).json();
    let last = seen["requests"]
        .as_array()
        .and_then(|r| r.last())
        .cloned()
        .unwrap();
    assert_eq!(
        last["path"], "/v1/chat/completions",
        "translated for the backup: {last}"
    );
}

/// An upstream that fails N times in a row has its breaker opened: requests then fail fast with 503
/// and reach it no more; after the cooldown one probe goes through, and its success closes the breaker.
#[test]
fn the_breaker_opens_then_a_probe_closes_it() {
    let healthy = Arc::new(AtomicBool::new(false));
    let requests = Arc::new(AtomicUsize::new(0));
    let (h, r) = (healthy.clone(), requests.clone());
    let payload = fake_sse_payload(2);
    let fake = FakeUpstream::start(32, move |_, mut conn| {
        while let Ok(Some(_)) = conn.read_request() {
            r.fetch_add(1, Ordering::SeqCst);
            let wire = if h.load(Ordering::SeqCst) {
                sse_chunked_response(&payload, 64)
            } else {
                b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 2\r\n\r\n{}".to_vec()
            };
            if conn.stream.write_all(&wire).is_err() {
                return;
            }
        }
    });
    let relay = InProcess::relay(&fake.url(), |c| {
        c.retry.max = 0;
        c.breaker.failures = 3;
        c.breaker.cooldown = ms(400);
    });
    for i in 0..3 {
        assert_eq!(
            fetch(relay.addr, &generate("fails")).status(),
            502,
            "failure {i}"
        );
    }
    let before = requests.load(Ordering::SeqCst);
    let started = Instant::now();
    let fast = fetch(relay.addr, &generate("breaker open"));
    assert_eq!(fast.status(), 503, "{:?}", fast.text());
    assert_eq!(fast.json()["error"]["code"], "upstream_unavailable");
    assert!(fast.head.header("retry-after").is_some());
    assert!(started.elapsed() < ms(300));
    assert_eq!(
        requests.load(Ordering::SeqCst),
        before,
        "the open breaker let a request through"
    );
    assert_eq!(relay.running().upstream_load()[0].breaker_opened, 1);
    // The upstream recovers; after the cooldown the probe goes through and closes the breaker.
    healthy.store(true, Ordering::SeqCst);
    std::thread::sleep(ms(450));
    let probe = fetch(relay.addr, &generate("the probe"));
    assert_eq!(probe.status(), 200, "{:?}", probe.text());
    for i in 0..3 {
        assert_eq!(
            fetch(relay.addr, &generate("closed again")).status(),
            200,
            "after {i}"
        );
    }
    assert_eq!(relay.running().upstream_load()[0].breaker_opened, 1);
}

/// Once a byte of the stream reached the client, a failure is never retried: the client hears of it.
#[test]
fn no_retry_once_the_stream_began() {
    let mock = InProcess::mock(6, ms(1));
    let relay = InProcess::relay(&mock.url(), |c| c.retry.backoff = ms(10));
    let mut c = Conn::connect(relay.addr);
    c.send(&generate(&fault_prompt("hello world", "reset-after=2")));
    c.expect_head("head");
    let body = c.read_chunked_body().unwrap();
    assert!(!body.complete, "a broken stream passed off as complete");
    let counts = relay.counts_when(|c| c.failed >= 1);
    assert_eq!((counts.backoffs, counts.retries), (0, 0), "{counts:?}");
}
