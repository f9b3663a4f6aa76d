//! Backpressure: a client that stops reading costs the relay a bounded amount of memory, because the relay stops
//! reading the upstream (which then stops making progress); when the client resumes, the stream completes.

mod common;

use common::*;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const EVENT_LEN: usize = 1024;
const EVENTS_PER_CHUNK: usize = 16;
const TOTAL: usize = 50 * 1024 * 1024;

/// One SSE event of exactly `EVENT_LEN` bytes.
fn event() -> Vec<u8> {
    let mut e = b"data: ".to_vec();
    e.resize(EVENT_LEN - 2, b'x');
    e.extend_from_slice(b"\n\n");
    e
}

#[test]
fn slow_client_bounds_relay_memory_and_stalls_upstream() {
    let event = event();
    let chunk_payload = event.repeat(EVENTS_PER_CHUNK);
    let mut chunk_wire = format!("{:x}\r\n", chunk_payload.len()).into_bytes();
    chunk_wire.extend_from_slice(&chunk_payload);
    chunk_wire.extend_from_slice(b"\r\n");
    let chunks = TOTAL / chunk_payload.len();

    // Bytes of the big body that the upstream socket has accepted so far.
    let pushed = Arc::new(AtomicU64::new(0));
    let fake_pushed = Arc::clone(&pushed);
    let fake = FakeUpstream::start(4, move |_, mut conn| {
        conn.stream
            .set_write_timeout(Some(Duration::from_secs(40)))
            .expect("write timeout");
        while let Ok(Some(req)) = conn.read_request() {
            let s = &mut conn.stream;
            if !req.json().to_string().contains("big stream") {
                // Warm-up: a small, complete stream.
                let body = chunked(&fake_sse_payload(3), 64);
                if s.write_all(SSE_CHUNKED_HEAD.as_bytes())
                    .and_then(|_| s.write_all(&body))
                    .is_err()
                {
                    return;
                }
                continue;
            }
            if s.write_all(SSE_CHUNKED_HEAD.as_bytes()).is_err() {
                return;
            }
            for _ in 0..chunks {
                let mut rest = &chunk_wire[..];
                while !rest.is_empty() {
                    match std::io::Write::write(s, rest) {
                        Ok(n) => {
                            rest = &rest[n..];
                            fake_pushed.fetch_add(n as u64, Ordering::SeqCst);
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => return,
                    }
                }
            }
            if s.write_all(b"0\r\n\r\n").is_err() {
                return;
            }
        }
    });
    let relay = spawn_relay(&fake.url(), "openai", &["--model", MODEL]);

    // Warm up (first allocations, the pool) and take the baseline.
    relay_stream(relay.addr, &prompt_body("warm-up", None, None));
    let rss_before = vm_rss_kib(relay.pid());

    let mut client = Conn::connect(relay.addr);
    client.send(&stream_request(&prompt_body("big stream", None, None)));
    let head = client.expect_head("big stream");
    assert_stream_head(&head);

    // Stop reading; wait until the upstream stops making progress.
    let stalled_at = wait_until_stalled(&pushed, "slow client");
    let rss_after = vm_rss_kib(relay.pid());
    let growth_kib = rss_after.saturating_sub(rss_before);
    eprintln!(
        "upstream stalled after pushing {:.1} MiB; relay RSS {rss_before} KiB -> {rss_after} KiB (+{growth_kib} KiB)",
        stalled_at as f64 / (1024.0 * 1024.0)
    );
    assert!(
        growth_kib < 16 * 1024,
        "relay RSS grew by {growth_kib} KiB while its client was not reading"
    );
    assert!(
        stalled_at < 30 * 1024 * 1024,
        "the upstream pushed {stalled_at} bytes to a relay whose client was not reading"
    );

    // The stalled stream does not hold up the worker: another stream completes meanwhile.
    let other_started = Instant::now();
    let other = relay_stream(relay.addr, &prompt_body("meanwhile", None, None));
    assert_eq!(
        lossy(&other),
        lossy(&fake_sse_payload(3)),
        "the concurrent stream's payload"
    );
    let other_took = other_started.elapsed();
    assert!(
        other_took < Duration::from_secs(2),
        "a stream next to a stalled one took {other_took:?}"
    );

    // Resume reading: the stream completes, byte for byte.
    let started = Instant::now();
    let mut received = 0usize;
    let complete = loop {
        match client.read_chunk().expect("read relayed chunk") {
            Chunk::Data(d) => {
                let mut rest = &d[..];
                while !rest.is_empty() {
                    let offset = received % EVENT_LEN;
                    let n = rest.len().min(EVENT_LEN - offset);
                    assert!(
                        rest[..n] == event[offset..offset + n],
                        "relayed byte {received} differs from the upstream's: {:?}",
                        lossy(&rest[..n.min(64)])
                    );
                    received += n;
                    rest = &rest[n..];
                }
            }
            Chunk::Last(_) => break true,
            Chunk::Eof => break false,
        }
    };
    eprintln!("read the remaining stream in {:?}", started.elapsed());
    assert!(
        complete,
        "the stream ended without its final chunk after {received} bytes"
    );
    assert_eq!(
        received,
        chunks * chunk_payload.len(),
        "relayed payload length"
    );
}

/// Every relayed chunk comes from one upstream read, and a read takes at most the room left under
/// the stream cap, so no chunk can be larger than the cap.
#[test]
fn relay_reads_no_more_than_the_room_left() {
    const CAP: usize = 4096;
    const BODY: usize = 256 * 1024;
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let go_rx = std::sync::Mutex::new(go_rx);
    let fake = FakeUpstream::start(1, move |_, mut conn| {
        let Ok(Some(_)) = conn.read_request() else {
            return;
        };
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: {BODY}\r\n\r\n"
        );
        if conn.stream.write_all(head.as_bytes()).is_err() {
            return;
        }
        // The body goes out only once the client has the head: no body byte shares the head's read.
        if !go_ahead(&go_rx) {
            return;
        }
        let _ = conn.stream.write_all(&vec![b'x'; BODY]);
        let _ = conn.read_request();
    });
    let relay = spawn_relay(
        &fake.url(),
        "openai",
        &["--model", MODEL, "--stream-buffer-bytes", &CAP.to_string()],
    );
    let mut c = Conn::connect(relay.addr);
    c.send(&stream_request(&prompt_body("big", None, None)));
    assert_stream_head(&c.expect_head("capped stream"));
    go_tx.send(()).unwrap();
    let body = c.read_chunked_body().expect("body");
    assert!(body.complete);
    assert_eq!(body.payload.len(), BODY);
    let biggest = body.chunks.iter().map(|&(_, n)| n).max().unwrap();
    assert!(
        biggest <= CAP,
        "a {biggest}-byte chunk: the relay read past the {CAP}-byte cap"
    );
}
