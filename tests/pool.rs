//! The upstream keep-alive pool: sequential streams reuse a handful of upstream connections, and a connection
//! goes back to the pool only once its body has been read to the end.

mod common;

use common::*;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TOKENS: u64 = 3;

fn assert_intact(body: &ChunkedBody, what: &str) {
    assert!(
        body.complete,
        "{what}: no final chunk; payload {:?}",
        lossy(&body.payload)
    );
    let tokens = token_texts(&body.payload);
    assert_eq!(tokens.len() as u64, TOKENS, "{what}: tokens {tokens:?}");
    assert_eq!(
        sse_data(&body.payload).last().map(String::as_str),
        Some("[DONE]"),
        "{what}"
    );
}

/// 100 sequential streams (60 on one keep-alive client connection, 40 on fresh ones) use at most 4 upstream
/// connections, and the mock served all of them to the end.
#[test]
fn sequential_streams_reuse_upstream_connections() {
    let mock = spawn_mock(&["--tokens", "10", "--interval-ms", "1", "--format", "openai"]);
    let relay = spawn_relay(&mock.url(), "openai", &["--model", MODEL]);

    let mut relayed_bytes = 0u64;
    let mut keep_alive = Conn::connect(relay.addr);
    for i in 0..60 {
        keep_alive.send(&stream_request(&prompt_body(
            &format!("pool {}", i % 3),
            None,
            Some(TOKENS),
        )));
        let head = keep_alive.expect_head(&format!("keep-alive request {i}"));
        assert_stream_head(&head);
        let body = keep_alive.read_chunked_body().expect("read body");
        assert_intact(&body, &format!("keep-alive request {i}"));
        relayed_bytes += body.payload.len() as u64;
    }
    drop(keep_alive);
    for i in 0..40 {
        let mut c = Conn::connect(relay.addr);
        c.send(&stream_request(&prompt_body(
            &format!("pool {}", i % 3),
            None,
            Some(TOKENS),
        )));
        let head = c.expect_head(&format!("fresh-connection request {i}"));
        assert_stream_head(&head);
        let body = c.read_chunked_body().expect("read body");
        assert_intact(&body, &format!("fresh-connection request {i}"));
        relayed_bytes += body.payload.len() as u64;
    }

    let stats = mock_stats(mock.addr);
    // The /stats request is itself one connection and (maybe) one request.
    let relay_connections = stat(&stats, "connections") - 1;
    assert!(
        relay_connections <= 4,
        "100 sequential streams opened {relay_connections} upstream connections: {stats}"
    );
    assert!(
        stat(&stats, "requests") >= 100,
        "mock served fewer than 100 requests: {stats}"
    );
    assert!(
        stat(&stats, "streams_completed") >= 100,
        "mock completed fewer than 100 streams: {stats}"
    );
    // Every byte the mock sent reached a client, and nothing else did.
    assert_eq!(
        stat(&stats, "bytes_sent"),
        relayed_bytes,
        "mock body bytes vs relayed payload bytes: {stats}"
    );
}

/// A fake upstream ends every body with `[DONE]` and only a little later sends the final `0\r\n\r\n` chunk, in
/// a separate write. A relay that pooled the connection at `[DONE]` (before the body's real end) would read that
/// stray final chunk as the next response. The second stream must reuse the connection and be intact, and every
/// request the fake reads on it must be well formed.
#[test]
fn connection_pooled_only_after_body_read_to_end() {
    let payload = fake_sse_payload(5);
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let fake_log = Arc::clone(&log);
    let fake_payload = payload.clone();
    let fake = FakeUpstream::start(8, move |conn_index, mut conn| {
        let mut n = 0;
        loop {
            match conn.read_request() {
                Ok(Some(req)) => {
                    let (method, target) = req.head.method_and_target();
                    fake_log
                        .lock()
                        .unwrap()
                        .push(format!("conn {conn_index} request {n}: {method} {target}"));
                }
                Ok(None) => return,
                Err(e) => {
                    fake_log
                        .lock()
                        .unwrap()
                        .push(format!("conn {conn_index} request {n}: MALFORMED ({e})"));
                    return;
                }
            }
            n += 1;
            let body = chunked(&fake_payload, 40);
            let (data, last) = body.split_at(body.len() - 5);
            let s = &mut conn.stream;
            if s.write_all(SSE_CHUNKED_HEAD.as_bytes())
                .and_then(|_| s.write_all(data))
                .is_err()
            {
                return;
            }
            // A pause, so that the relay certainly sees [DONE] before the body's end.
            std::thread::sleep(Duration::from_millis(30));
            if s.write_all(last).is_err() {
                return;
            }
        }
    });
    let relay = spawn_relay(&fake.url(), "openai", &["--model", MODEL]);

    for i in 0..3 {
        let mut c = Conn::connect(relay.addr);
        c.send(&stream_request(&prompt_body("pool me", None, None)));
        let head = c.expect_head(&format!("stream {i}"));
        assert_stream_head(&head);
        let body = c.read_chunked_body().expect("read body");
        assert!(
            body.complete,
            "stream {i}: no final chunk; payload {:?}",
            lossy(&body.payload)
        );
        assert_eq!(
            lossy(&body.payload),
            lossy(&payload),
            "stream {i}: payload differs"
        );
    }

    let log = log.lock().unwrap().clone();
    assert!(
        !log.iter().any(|l| l.contains("MALFORMED")),
        "the fake read a malformed request: {log:?}"
    );
    assert_eq!(log.len(), 3, "expected 3 upstream requests: {log:?}");
    assert!(
        log.iter().all(|l| l.starts_with("conn 0 ")),
        "the upstream connection was not reused for sequential streams: {log:?}"
    );
}

/// A fake upstream that answers only the first request on each connection. With `close_after`, it then shuts
/// its side (as a server with a short keep-alive timeout does) and reports when the relay closes its end in
/// turn; a request arriving instead is logged. Without, it reads a second request on the same connection and
/// closes without answering (the race where the server closes a pooled connection just as the relay reuses
/// it). Logs what happened per connection.
fn one_request_per_connection(
    close_after: bool,
    log: Arc<Mutex<Vec<String>>>,
    closed: mpsc::Sender<usize>,
) -> FakeUpstream {
    let payload = fake_sse_payload(3);
    let closed = Mutex::new(closed);
    FakeUpstream::start(16, move |conn_index, mut conn| {
        let Ok(Some(_)) = conn.read_request() else {
            return;
        };
        let wire = sse_chunked_response(&payload, 64);
        // Logged before the answer goes out, so the entry is there by the time the client has the body.
        log.lock()
            .unwrap()
            .push(format!("conn {conn_index}: answered"));
        if conn.stream.write_all(&wire).is_err() {
            return;
        }
        if close_after {
            let _ = conn.stream.shutdown(std::net::Shutdown::Write);
        }
        match conn.read_request() {
            Ok(Some(_)) if close_after => log
                .lock()
                .unwrap()
                .push(format!("conn {conn_index}: a request after we closed")),
            Ok(Some(_)) => log
                .lock()
                .unwrap()
                .push(format!("conn {conn_index}: dropped a reused request")),
            Ok(None) => {
                let _ = closed.lock().unwrap().send(conn_index);
            }
            Err(_) => {}
        }
    })
}

/// `POST /api/v1/generate-stream` with an `Idempotency-Key`: the client accepts that it may be sent twice.
fn idempotent_stream_request(i: usize) -> Vec<u8> {
    let body = prompt_body("keep-alive races", None, None);
    format!(
        "POST /api/v1/generate-stream HTTP/1.1\r\nHost: 127.0.0.1\r\nIdempotency-Key: k-{i}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Three streams through `relay`, each complete and intact; after each, `after(i)` runs.
fn three_streams_succeed(relay: SocketAddr, mut after: impl FnMut(usize)) {
    let expected = fake_sse_payload(3);
    for i in 0..3 {
        let mut c = Conn::connect(relay);
        c.send(&idempotent_stream_request(i));
        let resp = c.read_response(&format!("stream {i}"));
        assert_eq!(
            resp.status(),
            200,
            "stream {i}: {:?} {:?}",
            resp.head,
            resp.text()
        );
        assert!(resp.complete, "stream {i}: no final chunk");
        assert_eq!(lossy(&resp.body), lossy(&expected), "stream {i}");
        after(i);
    }
}

/// The upstream closes its keep-alive connections after each answer: the relay notices while the
/// connection idles in its pool, closes its end, and never hands it to a stream. Each stream waits until
/// the relay has closed its end, so the next one finds a pool the relay had time to clean; the counters
/// then show every stream on a fresh connection, with no retry hiding a dead connection handed out.
#[test]
fn upstream_closing_idle_connections_is_harmless() {
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let (closed_tx, closed_rx) = mpsc::channel();
    let fake = one_request_per_connection(true, Arc::clone(&log), closed_tx);
    let relay = InProcess::relay(&fake.url(), |_| {});
    three_streams_succeed(relay.addr, |i| {
        closed_rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| {
                panic!("stream {i}: the relay kept a connection the upstream closed")
            });
    });
    let log = log.lock().unwrap().clone();
    assert_eq!(log.len(), 3, "{log:?}");
    let counts = relay.counts_when(|c| c.completed + c.failed >= 3);
    assert_eq!(
        counts.reuses, 0,
        "a closed pooled connection was handed out: {counts:?}"
    );
    assert_eq!(counts.retries, 0, "{counts:?}");
    assert_eq!((counts.connects, counts.completed), (3, 3), "{counts:?}");
}

/// The upstream closes a pooled connection just as the relay reuses it (no response byte): the relay retries
/// the request, which carries an `Idempotency-Key`, once on a fresh connection and the client never
/// notices.
#[test]
fn stale_pooled_connection_is_retried_on_a_fresh_one() {
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let (closed_tx, _closed_rx) = mpsc::channel();
    let fake = one_request_per_connection(false, Arc::clone(&log), closed_tx);
    let relay = InProcess::relay(&fake.url(), |_| {});
    three_streams_succeed(relay.addr, |_| {});
    let log = log.lock().unwrap().clone();
    assert_eq!(
        log.iter().filter(|l| l.ends_with("answered")).count(),
        3,
        "{log:?}"
    );
    // The race really happened (the relay did reuse its pooled connection), so the retry was exercised.
    assert!(
        log.iter().any(|l| l.ends_with("dropped a reused request")),
        "no pooled connection was reused: {log:?}"
    );
    let counts = relay.counts_when(|c| c.completed + c.failed >= 3);
    assert_eq!(
        counts.retries, counts.reuses,
        "every reuse failed and was retried: {counts:?}"
    );
    assert!(counts.retries >= 1, "{counts:?}");
    assert_eq!((counts.completed, counts.failed), (3, 0), "{counts:?}");
}

/// The same race with a POST that has no `Idempotency-Key`: the upstream read all of it, so it may have
/// started a (billed) generation; the relay does not send it twice. The client gets a 502, and the upstream
/// saw each request once.
#[test]
fn a_post_the_upstream_read_is_not_sent_twice() {
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let (closed_tx, _closed_rx) = mpsc::channel();
    let fake = one_request_per_connection(false, Arc::clone(&log), closed_tx);
    let relay = InProcess::relay(&fake.url(), |_| {});
    let raw = stream_request(&prompt_body("keep-alive races", None, None));
    assert_eq!(fetch(relay.addr, &raw).status(), 200);
    // The pooled connection is reused (the fake reads the request and drops it): a 502, no retry.
    let second = fetch(relay.addr, &raw);
    assert_eq!(second.status(), 502, "{:?}", second.text());
    let counts = relay.counts_when(|c| c.completed + c.failed >= 2);
    assert_eq!((counts.reuses, counts.retries), (1, 0), "{counts:?}");
    let log = log.lock().unwrap().clone();
    assert_eq!(
        log,
        vec!["conn 0: answered", "conn 0: dropped a reused request"],
        "the upstream saw the POST once"
    );
}

/// An upstream response with `Connection: close` ends that connection's life: the relay must not reuse it
/// (the fake keeps the socket open and reports any further request on it).
#[test]
fn connection_close_from_upstream_is_honoured() {
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let fake_log = Arc::clone(&log);
    let payload = fake_sse_payload(3);
    let fake = FakeUpstream::start(8, move |conn_index, mut conn| {
        let Ok(Some(_)) = conn.read_request() else {
            return;
        };
        let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
        let wire = [head.as_bytes(), &chunked(&payload, 64)].concat();
        // Logged before the answer goes out, so the entry is there by the time the client has the body.
        fake_log.lock().unwrap().push(format!(
            "conn {conn_index}: answered with Connection: close"
        ));
        if conn.stream.write_all(&wire).is_err() {
            return;
        }
        if let Ok(Some(_)) = conn.read_request() {
            fake_log
                .lock()
                .unwrap()
                .push(format!("conn {conn_index}: REUSED after Connection: close"));
        }
    });
    let relay = spawn_relay(&fake.url(), "openai", &["--model", MODEL]);
    let expected = fake_sse_payload(3);
    for i in 0..3 {
        let payload = relay_stream(relay.addr, &prompt_body("close after this", None, None));
        assert_eq!(lossy(&payload), lossy(&expected), "stream {i}");
    }
    let log = log.lock().unwrap().clone();
    assert!(!log.iter().any(|l| l.contains("REUSED")), "{log:?}");
    assert_eq!(log.len(), 3, "{log:?}");
}

/// A body read that the stream cap cut short can end exactly at the body's end while more bytes wait in the
/// socket (here: a whole second response the relay never asked for). Its edge is spent, so no event will
/// reveal them: the relay must look before pooling, or the next client gets those bytes as its answer.
#[test]
fn connection_with_unread_bytes_is_not_pooled() {
    let fake = FakeUpstream::start(4, move |conn_index, mut conn| {
        let Ok(Some(_)) = conn.read_request() else {
            return;
        };
        let s = &mut conn.stream;
        if conn_index == 0 {
            let head =
                "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 5\r\n\r\n";
            let _ = s.write_all(head.as_bytes());
            // Pacing only: lets the relay take the head in a read of its own, so the 5-byte room of the
            // stream cap decides the next read.
            std::thread::sleep(Duration::from_millis(200));
            let stale = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 13\r\n\r\ndata: STALE\n\n";
            let _ = s.write_all(format!("data\n{stale}").as_bytes());
        } else {
            let fresh = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 13\r\n\r\ndata: FRESH\n\n";
            let _ = s.write_all(fresh.as_bytes());
        }
        // Keep the connection open (without this the FIN would give the stale bytes away).
        let _ = conn.read_request();
    });
    let relay = spawn_relay(
        &fake.url(),
        "openai",
        &["--model", MODEL, "--stream-buffer-bytes", "5"],
    );
    let first = relay_stream(relay.addr, &prompt_body("first", None, None));
    assert_eq!(lossy(&first), "data\n");
    let second = relay_stream(relay.addr, &prompt_body("second", None, None));
    assert_eq!(
        lossy(&second),
        "data: FRESH\n\n",
        "the second client got bytes left on a pooled connection"
    );
}

/// `--workers 4`: four reactors share the port through SO_REUSEPORT and each serves the connections the
/// kernel hands it, with a pool of its own. Forty sequential streams on fresh client connections are spread
/// over the workers, so the mock sees one pooled connection per worker that served: more than one (several
/// workers served) and no more than four (each reused its own pool).
#[test]
fn workers_share_the_port_and_keep_their_own_pools() {
    let mock = spawn_mock(&["--tokens", "2", "--interval-ms", "0", "--format", "openai"]);
    let url = mock.url();
    let relay = Proc::spawn(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "4",
        "--upstream",
        &url,
        "--provider",
        "openai",
        "--model",
        MODEL,
    ]);
    for i in 0..40 {
        let payload = relay_stream(relay.addr, &prompt_body("spread me", None, None));
        assert!(lossy(&payload).ends_with("data: [DONE]\n\n"), "stream {i}");
    }
    let stats = mock_stats(mock.addr);
    let conns = stats["connections"].as_u64().unwrap_or(0) - 1; // minus this /stats request's own
    assert!(
        (2..=4).contains(&conns),
        "upstream connections {conns} for 40 streams over 4 workers: {stats}"
    );
}

/// When the upstream closes a pooled idle connection, the relay closes its end at once.
#[test]
fn pooled_connection_closed_by_upstream_is_dropped_at_once() {
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let go_rx = std::sync::Mutex::new(go_rx);
    let (res_tx, res_rx) = mpsc::channel::<Result<(), String>>();
    let res_tx = std::sync::Mutex::new(res_tx);
    let fake = FakeUpstream::start(1, move |_, mut conn| {
        let Ok(Some(_)) = conn.read_request() else {
            return;
        };
        let wire = sse_chunked_response(&fake_sse_payload(2), 64);
        if conn.stream.write_all(&wire).is_err() {
            return;
        }
        // Wait until the client has the whole stream: the relay has pooled the connection by then.
        if !go_ahead(&go_rx) {
            return;
        }
        let _ = conn.stream.shutdown(std::net::Shutdown::Write);
        conn.set_read_timeout(Duration::from_secs(5));
        let r = match conn.read_request() {
            Ok(None) => Ok(()),
            Ok(Some(_)) => Err("a request on a connection the upstream had closed".to_string()),
            Err(e) => Err(format!("relay kept the connection open: {e}")),
        };
        let _ = res_tx.lock().unwrap().send(r);
    });
    let relay = spawn_relay(
        &fake.url(),
        "openai",
        &["--model", MODEL, "--upstream-idle-timeout", "300"],
    );
    relay_stream(
        relay.addr,
        &prompt_body("then the server hangs up", None, None),
    );
    go_tx.send(()).unwrap();
    res_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("fake reported")
        .expect("relay closed its end");
}

/// `--upstream-idle-timeout 1`: a pooled upstream connection that stays idle is closed after about a second.
#[test]
fn idle_pooled_upstream_connection_is_closed_after_timeout() {
    let (closed_tx, closed_rx) = mpsc::channel();
    let fake = FakeUpstream::start(1, move |_, mut conn| {
        let Ok(Some(_)) = conn.read_request() else {
            return;
        };
        let wire = sse_chunked_response(&fake_sse_payload(2), 1000);
        if std::io::Write::write_all(&mut conn.stream, &wire).is_err() {
            return;
        }
        // The response is complete: the relay pools the connection and sends nothing more, so this returns
        // when the relay closes it.
        if let Ok(None) = conn.read_request() {
            let _ = closed_tx.send(Instant::now());
        }
    });
    let relay = spawn_relay(
        &fake.url(),
        "openai",
        &["--model", MODEL, "--upstream-idle-timeout", "1"],
    );

    relay_stream(relay.addr, &prompt_body("then idle", None, None));
    let finished = Instant::now();
    let closed_at = closed_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the relay did not close its idle pooled upstream connection within 5 s");
    let took = closed_at.saturating_duration_since(finished);
    assert!(
        took >= Duration::from_millis(800),
        "pooled connection closed after {took:?}, before the 1 s timeout"
    );
    assert!(
        took < Duration::from_secs(3),
        "pooled connection closed only after {took:?} (timeout 1 s)"
    );
}

/// The idle timeout counts from the last time the connection went back to the pool, shown by the order of
/// events rather than by durations. Two streams run at once, so two upstream connections go to the pool
/// together, with the same deadline. A third stream reuses one of them; its body is held until the other
/// one, the witness, has been closed by that deadline. The reused connection must outlive it, carry the
/// third stream to its end, and close only after that.
#[test]
fn idle_timeout_restarts_when_a_connection_is_reused() {
    use std::sync::Condvar;
    // (connection index, requests it served) when the relay closed it.
    let (closed_tx, closed_rx) = mpsc::channel::<(usize, usize)>();
    let closed_tx = Mutex::new(closed_tx);
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let go_rx = Mutex::new(go_rx);
    // The first requests of the two connections are answered together, so both idle timers start together.
    let arrived = Arc::new((Mutex::new(0usize), Condvar::new()));
    let fake = FakeUpstream::start(3, move |index, mut conn| {
        let mut served = 0;
        while let Ok(Some(_)) = conn.read_request() {
            let s = &mut conn.stream;
            if served == 0 {
                let (count, cv) = &*arrived;
                let mut n = count.lock().unwrap();
                *n += 1;
                cv.notify_all();
                let (n, _) = cv
                    .wait_timeout_while(n, Duration::from_secs(10), |n| *n < 2)
                    .unwrap();
                drop(n);
                if s.write_all(&sse_chunked_response(&fake_sse_payload(2), 1000))
                    .is_err()
                {
                    return;
                }
            } else {
                // The reused connection: the head now, the body when the test says so.
                if s.write_all(SSE_CHUNKED_HEAD.as_bytes()).is_err() || !go_ahead(&go_rx) {
                    return;
                }
                if s.write_all(&chunked(&fake_sse_payload(2), 1000)).is_err() {
                    return;
                }
            }
            served += 1;
        }
        let _ = closed_tx.lock().unwrap().send((index, served));
    });
    let relay = spawn_relay(
        &fake.url(),
        "openai",
        &["--model", MODEL, "--upstream-idle-timeout", "1"],
    );
    let addr = relay.addr;
    let both: Vec<_> = (0..2)
        .map(|i| {
            std::thread::spawn(move || {
                relay_stream(addr, &prompt_body(&format!("at once {i}"), None, None))
            })
        })
        .collect();
    for t in both {
        t.join().expect("a concurrent stream failed");
    }
    let mut third = Conn::connect(relay.addr);
    third.send(&stream_request(&prompt_body("reused", None, None)));
    assert_stream_head(&third.expect_head("the stream on a reused connection"));
    // The witness: the connection that stayed in the pool closes at the deadline both got.
    let (witness, served) = closed_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the idle connection was never closed");
    assert_eq!(
        served, 1,
        "connection {witness} closed while serving its second stream"
    );
    go_tx.send(()).unwrap();
    let body = third
        .read_chunked_body()
        .expect("the reused connection's stream");
    assert!(
        body.complete,
        "the reused connection was cut by the first idle deadline"
    );
    assert_eq!(lossy(&body.payload), lossy(&fake_sse_payload(2)));
    // Only now, after its second stream, does the reused connection reach a deadline of its own.
    let (reused, served) = closed_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the reused connection was never closed");
    assert_ne!(reused, witness);
    assert_eq!(served, 2, "{reused} served {served} streams");
}
