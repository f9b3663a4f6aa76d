//! A client that goes away makes the relay close its upstream connection at once (never pooled mid-body).

mod common;

use common::*;
use std::io::{Read, Write};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_millis(100);

/// A fake upstream that answers every request with an endless SSE stream (one event every 20 ms, at most 500)
/// and reports through `closed` the instant at which the relay closed its end of the connection. The second
/// channel reports that a request was received.
fn endless_upstream(respond: bool) -> (FakeUpstream, mpsc::Receiver<Instant>, mpsc::Receiver<()>) {
    let (closed_tx, closed_rx) = mpsc::channel();
    let (req_tx, req_rx) = mpsc::channel();
    let fake = FakeUpstream::start(4, move |_, mut conn| {
        let Ok(Some(_)) = conn.read_request() else {
            return;
        };
        let _ = req_tx.send(());
        // A reader thread blocks on the socket: the relay sends nothing more, so the read returns only when the
        // relay closes (0) or resets (error) the connection.
        let mut reader = conn.stream.try_clone().expect("clone");
        reader
            .set_read_timeout(Some(Duration::from_secs(15)))
            .expect("timeout");
        let closed_tx = closed_tx.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 1024];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => continue,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return, // timed out: never closed
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return,
                    Err(_) => break,
                }
            }
            let _ = closed_tx.send(Instant::now());
        });
        if !respond {
            // Hold the connection open without answering (the reader thread watches it).
            thread::sleep(Duration::from_secs(12));
            return;
        }
        let s = &mut conn.stream;
        if s.write_all(SSE_CHUNKED_HEAD.as_bytes()).is_err() {
            return;
        }
        for i in 0..500 {
            let event =
                format!("data: {{\"choices\":[{{\"delta\":{{\"content\":\"tok{i} \"}}}}]}}\n\n");
            let chunk = format!("{:x}\r\n{event}\r\n", event.len());
            if s.write_all(chunk.as_bytes()).is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
    });
    (fake, closed_rx, req_rx)
}

/// The client drops its connection mid-stream: the upstream connection is closed within 100 ms.
#[test]
fn client_disconnect_mid_stream_closes_upstream() {
    let (fake, closed, _requests) = endless_upstream(true);
    let relay = spawn_relay(&fake.url(), "openai", &["--model", MODEL]);

    let mut client = Conn::connect(relay.addr);
    client.send(&stream_request(&prompt_body("never ending", None, None)));
    let head = client.expect_head("stream");
    assert_stream_head(&head);
    // Wait until events are flowing (two data chunks) before hanging up.
    for _ in 0..2 {
        match client.read_chunk().expect("read chunk") {
            Chunk::Data(_) => {}
            other => panic!("stream ended early: {other:?}"),
        }
    }
    assert!(
        closed.try_recv().is_err(),
        "the relay closed the upstream connection before the client left"
    );
    let dropped_at = Instant::now();
    drop(client);

    let closed_at = closed.recv_timeout(Duration::from_secs(5)).expect(
        "the relay did not close the upstream connection within 5 s of the client's disconnect",
    );
    let took = closed_at.saturating_duration_since(dropped_at);
    eprintln!("upstream connection closed {took:?} after the client disconnected");
    assert!(
        took < LIMIT,
        "upstream connection closed {took:?} after the client disconnected (limit {LIMIT:?})"
    );
    assert_healthy(relay.addr, "a client disconnect");
}

/// The client drops its connection while the relay still waits for the upstream's response head: the upstream
/// connection is closed within 100 ms too.
#[test]
fn client_disconnect_before_upstream_head_closes_upstream() {
    let (fake, closed, requests) = endless_upstream(false);
    let relay = spawn_relay(&fake.url(), "openai", &["--model", MODEL]);

    let mut client = Conn::connect(relay.addr);
    client.send(&stream_request(&prompt_body("no answer yet", None, None)));
    requests
        .recv_timeout(Duration::from_secs(5))
        .expect("the upstream never received the request");
    assert!(
        closed.try_recv().is_err(),
        "the relay closed the upstream connection before the client left"
    );
    let dropped_at = Instant::now();
    drop(client);

    let closed_at = closed.recv_timeout(Duration::from_secs(5)).expect(
        "the relay did not close the upstream connection within 5 s of the client's disconnect",
    );
    let took = closed_at.saturating_duration_since(dropped_at);
    eprintln!("upstream connection closed {took:?} after the client disconnected");
    assert!(
        took < LIMIT,
        "upstream connection closed {took:?} after the client disconnected (limit {LIMIT:?})"
    );
    assert_healthy(relay.addr, "a client disconnect before the upstream head");
}

/// The client stops reading (the relay's buffer fills and it stops reading the upstream, which then blocks in
/// `write`), then disconnects: the relay must still notice at once and close the upstream connection, which
/// unblocks the upstream's write with an error.
#[test]
fn client_disconnect_while_backpressured_closes_upstream() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    let pushed = Arc::new(AtomicU64::new(0));
    let fake_pushed = Arc::clone(&pushed);
    let (closed_tx, closed_rx) = mpsc::channel();
    let fake = FakeUpstream::start(2, move |_, mut conn| {
        let Ok(Some(_)) = conn.read_request() else {
            return;
        };
        conn.stream
            .set_write_timeout(Some(Duration::from_secs(20)))
            .expect("write timeout");
        let event = format!("data: {}\n\n", "y".repeat(4088));
        let chunk = format!("{:x}\r\n{event}\r\n", event.len());
        let s = &mut conn.stream;
        if s.write_all(SSE_CHUNKED_HEAD.as_bytes()).is_err() {
            return;
        }
        // At most 200 MB: far more than loopback buffers hold, so this blocks until the relay reads or closes.
        for _ in 0..50_000 {
            if s.write_all(chunk.as_bytes()).is_err() {
                let _ = closed_tx.send(Instant::now());
                return;
            }
            fake_pushed.fetch_add(chunk.len() as u64, Ordering::SeqCst);
        }
    });
    let relay = spawn_relay(&fake.url(), "openai", &["--model", MODEL]);

    let mut client = Conn::connect(relay.addr);
    client.send(&stream_request(&prompt_body("fill the pipes", None, None)));
    let head = client.expect_head("stream");
    assert_stream_head(&head);

    wait_until_stalled(&pushed, "backpressured disconnect");
    assert!(
        closed_rx.try_recv().is_err(),
        "the upstream write failed before the client left"
    );
    let dropped_at = Instant::now();
    drop(client);

    let closed_at = closed_rx.recv_timeout(Duration::from_secs(5)).expect(
        "the relay did not close the upstream connection within 5 s of the client's disconnect",
    );
    let took = closed_at.saturating_duration_since(dropped_at);
    eprintln!("backpressured: upstream connection closed {took:?} after the client disconnected");
    assert!(
        took < LIMIT,
        "upstream connection closed {took:?} after the client disconnected (limit {LIMIT:?})"
    );
    assert_healthy(relay.addr, "a client disconnect under backpressure");
}

/// A client that has sent a head's worth of pipelined bytes during its stream (so the relay stopped reading
/// it) and then leaves, while the upstream is silent: no write fails to reveal the departure, so the relay
/// must learn it from the kernel's hang-up report (EPOLLRDHUP) and close the upstream within 100 ms.
#[test]
fn client_leaving_with_a_full_input_buffer_is_noticed() {
    let (closed_tx, closed_rx) = mpsc::channel();
    let fake = FakeUpstream::start(1, move |_, mut conn| {
        let Ok(Some(_)) = conn.read_request() else {
            return;
        };
        let event = b"data: {\"choices\":[{\"delta\":{\"content\":\"only one\"}}]}\n\n";
        let chunk = [format!("{:x}\r\n", event.len()).as_bytes(), event, b"\r\n"].concat();
        if conn
            .stream
            .write_all(&[SSE_CHUNKED_HEAD.as_bytes(), &chunk].concat())
            .is_err()
        {
            return;
        }
        // Then silence: the relay sends nothing more, so this read ends only when it closes.
        conn.stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut buf = [0u8; 64];
        if matches!(conn.stream.read(&mut buf), Ok(0) | Err(_)) {
            let _ = closed_tx.send(Instant::now());
        }
    });
    let relay = spawn_relay(&fake.url(), "openai", &["--model", MODEL]);
    let mut client = Conn::connect(relay.addr);
    client.send(&stream_request(&prompt_body("then silence", None, None)));
    assert_stream_head(&client.expect_head("stream"));
    assert!(matches!(
        client.read_chunk().expect("first event"),
        Chunk::Data(_)
    ));
    // 20,000 pipelined bytes: more than the 16 KiB the relay buffers while a response is in progress.
    client.send(&vec![b'x'; 20_000]);
    // Let them arrive (pacing only: the assertion below holds either way, this makes the case the one meant).
    thread::sleep(Duration::from_millis(50));
    let dropped_at = Instant::now();
    drop(client);
    let closed_at = closed_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the relay never closed the upstream after the client left");
    let took = closed_at.saturating_duration_since(dropped_at);
    assert!(
        took < LIMIT,
        "upstream closed {took:?} after the client left (limit {LIMIT:?})"
    );
}
