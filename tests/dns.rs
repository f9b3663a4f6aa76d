//! Upstream names resolved off the loop: a slow resolver delays no stream that already runs, a name that
//! does not resolve is a 502 that says why, and every address of a name is tried in order.
//!
//! The relay runs in the test process with a resolver of the test's (`Server::start_with`), so lookups can
//! be made slow or wrong on purpose without any real DNS.

mod common;

use common::*;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokenpipe::relay::dns::Resolver;

const PACE: Duration = Duration::from_millis(50);

/// While one new stream waits two seconds for its name, a stream that already runs keeps its pace: the
/// loop never waits for the resolver.
#[test]
fn a_slow_resolver_delays_no_running_stream() {
    let mock = spawn_mock(&[
        "--tokens",
        "80",
        "--interval-ms",
        "50",
        "--format",
        "openai",
    ]);
    let mock_addr = mock.addr;
    let lookups = Arc::new(AtomicUsize::new(0));
    let counted = lookups.clone();
    let resolver = Resolver::with_lookup(move |_host: &str, _port: u16| {
        // The first lookup is quick; the next ones take two seconds.
        if counted.fetch_add(1, Ordering::SeqCst) > 0 {
            std::thread::sleep(Duration::from_secs(2));
        }
        Ok(vec![mock_addr])
    })
    .expect("resolver");
    let relay = InProcess::relay_with(
        &format!("http://slow.test:{}", mock_addr.port()),
        resolver,
        |c| {
            c.dns_ttl = Duration::from_secs(1);
        },
    );

    let mut running = Conn::connect(relay.addr);
    running.send(&stream_request(&prompt_body("steady", None, Some(80))));
    assert_stream_head(&running.expect_head("the running stream"));
    // Read events until the name's second has passed (each event is one pace).
    let first = Instant::now();
    while first.elapsed() < Duration::from_millis(1100) {
        running
            .read_chunk()
            .expect("an event of the running stream");
    }
    // A second stream needs a new connection, so a new lookup: two seconds.
    let addr = relay.addr;
    let waiting = std::thread::spawn(move || {
        let started = Instant::now();
        let payload = relay_stream(addr, &prompt_body("after a slow lookup", None, Some(3)));
        (started.elapsed(), payload)
    });
    let mut longest = Duration::ZERO;
    let mut last = Instant::now();
    let window = Instant::now();
    while window.elapsed() < Duration::from_millis(1800) {
        running
            .read_chunk()
            .expect("an event of the running stream");
        longest = longest.max(last.elapsed());
        last = Instant::now();
    }
    let (took, payload) = waiting.join().expect("the second stream");
    assert!(
        took >= Duration::from_millis(1500),
        "the second stream did not wait for its lookup: {took:?}"
    );
    assert_eq!(token_texts(&payload).len(), 3);
    assert!(
        lookups.load(Ordering::SeqCst) >= 2,
        "the expired name was not looked up again"
    );
    // Paced at 50 ms, the running stream's longest gap while the lookup ran; a loop blocked by it would
    // show about two seconds.
    assert!(
        longest < PACE * 8,
        "the running stream stalled for {longest:?} during the lookup"
    );
}

/// A name that does not resolve: the client gets a 502 whose JSON error says why, and the relay serves on.
#[test]
fn a_name_that_does_not_resolve_is_a_502_with_the_reason() {
    let resolver = Resolver::with_lookup(|host: &str, _| {
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no such host {host}"),
        ))
    })
    .expect("resolver");
    let relay = InProcess::relay_with("http://nowhere.test:9", resolver, |_| {});
    let resp = fetch(relay.addr, &stream_request(&small_prompt()));
    assert_json_error(&resp, 502, "an unresolvable upstream");
    let v = resp.json();
    assert_eq!(v["error"]["code"], "upstream_unresolved", "{v}");
    let message = v["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains("nowhere.test"), "{message}");
    assert_healthy(relay.addr, "a failed lookup");
}

/// A name with two addresses, the first refusing connections: the stream goes to the second.
#[test]
fn every_address_of_a_name_is_tried_in_order() {
    let mock = spawn_mock(&["--tokens", "3", "--interval-ms", "1", "--format", "openai"]);
    let refused: SocketAddr = closed_port_addr();
    let good = mock.addr;
    let resolver =
        Resolver::with_lookup(move |_: &str, _| Ok(vec![refused, good])).expect("resolver");
    let relay = InProcess::relay_with(
        &format!("http://two.test:{}", good.port()),
        resolver,
        |_| {},
    );
    let payload = relay_stream(relay.addr, &prompt_body("second address", None, Some(3)));
    assert_eq!(token_texts(&payload).len(), 3);
    let counts = relay.counts_when(|c| c.completed == 1);
    assert_eq!((counts.connects, counts.failed), (2, 0), "{counts:?}");
}
