//! White-box tests of the mock worker's turns.
//!
//! Test code only: its parent declares it `#[cfg(test)]`.

use super::*;
use crate::reactor::Worker;
use std::io::{Read, Write};

/// A zero-interval stream to a fast reader sends TURN_BUDGET events, then yields to the others.
#[test]
fn a_fire_hose_mock_stream_yields_after_its_turn() {
    let mock = Mock::new(
        MockFormat::OpenAi,
        10_000,
        Duration::ZERO,
        Limits::default(),
        1 << 20,
        Arc::default(),
    );
    let mut w = Worker::new("test".into(), Duration::from_secs(10), mock).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    w.listen(listener).unwrap();
    let mut peer = std::net::TcpStream::connect(addr).unwrap();
    // `stream: true`: as with the real API, a chat request without it gets one JSON answer.
    let body = br#"{"messages":[{"role":"user","content":"go"}],"stream":true}"#;
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    peer.write_all(&[req.as_bytes(), body].concat()).unwrap();
    let mut yielded = false;
    let mut buf = vec![0u8; 1 << 16];
    peer.set_nonblocking(true).unwrap();
    for _ in 0..100 {
        w.turn(Some(Duration::from_millis(100))).unwrap();
        let cx = w.context();
        if cx.conns.iter().any(|(id, _)| cx.is_deferred(id)) {
            yielded = true;
            break;
        }
        // Keep reading, so that the socket stays writable and only the budget can stop the stream.
        while let Ok(n) = peer.read(&mut buf) {
            if n == 0 {
                break;
            }
        }
    }
    assert!(yielded, "a 10,000-event stream never yielded its turn");
}
