//! The blocking client against fake servers on loopback, each of which answers one connection with
//! canned bytes.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::thread;
use std::time::{Duration, Instant};

use super::client::{MetricsUrl, get};

const TIMEOUT: Duration = Duration::from_secs(5);

/// A server that reads one request and answers it with `pieces`, written one by one (so that the
/// client sees split reads), then closes. Returns its target and the request it got.
fn serve_once(pieces: Vec<Vec<u8>>) -> (MetricsUrl, thread::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        s.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.ends_with(b"\r\n\r\n") {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
        }
        for piece in pieces {
            if s.write_all(&piece).is_err() {
                break;
            }
            let _ = s.flush();
        }
        String::from_utf8_lossy(&request).into_owned()
    });
    (
        MetricsUrl::parse(&format!("http://{addr}")).unwrap(),
        server,
    )
}

#[test]
fn a_content_length_body_is_read_whole() {
    let body = "tokenpipe_streams_active 3\n";
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let (target, server) = serve_once(vec![
        head.into_bytes(),
        body.as_bytes()[..5].to_vec(),
        body.as_bytes()[5..].to_vec(),
    ]);
    assert_eq!(get(&target, TIMEOUT).unwrap(), body);
    let request = server.join().unwrap();
    assert!(
        request.starts_with("GET /metrics HTTP/1.1\r\n"),
        "{request:?}"
    );
    assert!(
        request.contains(&format!("Host: 127.0.0.1:{}\r\n", target.port)),
        "{request:?}"
    );
}

#[test]
fn a_chunked_body_is_read_across_pieces() {
    let (target, server) = serve_once(vec![
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
        b"5\r\nhel".to_vec(),
        b"lo\r\n6\r\n world\r\n0\r\n".to_vec(),
        b"\r\n".to_vec(),
    ]);
    assert_eq!(get(&target, TIMEOUT).unwrap(), "hello world");
    server.join().unwrap();
}

#[test]
fn a_body_delimited_by_the_close_is_read_to_the_end() {
    let (target, server) = serve_once(vec![b"HTTP/1.1 200 OK\r\n\r\nall of it".to_vec()]);
    assert_eq!(get(&target, TIMEOUT).unwrap(), "all of it");
    server.join().unwrap();
}

#[test]
fn failures_are_said_plainly() {
    let (target, server) = serve_once(vec![
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(),
    ]);
    let e = get(&target, TIMEOUT).unwrap_err();
    assert!(e.contains("answered 404 Not Found"), "{e}");
    server.join().unwrap();

    let (target, server) = serve_once(vec![b"SSH-2.0-OpenSSH\r\n\r\n".to_vec()]);
    let e = get(&target, TIMEOUT).unwrap_err();
    assert!(e.contains("not an HTTP answer"), "{e}");
    server.join().unwrap();

    let (target, server) = serve_once(vec![
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort".to_vec(),
    ]);
    let e = get(&target, TIMEOUT).unwrap_err();
    assert!(e.contains("closed before the end"), "{e}");
    server.join().unwrap();

    // Nothing listens there.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let target = MetricsUrl::parse(&format!("127.0.0.1:{port}")).unwrap();
    let e = get(&target, TIMEOUT).unwrap_err();
    assert!(e.contains("connection refused"), "{e}");
}

#[test]
fn a_server_that_never_answers_is_given_up_on() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = MetricsUrl::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
    let started = Instant::now();
    // The kernel accepts the connection; no one ever reads or answers.
    let e = get(&target, Duration::from_millis(200)).unwrap_err();
    assert!(e.contains("no whole answer within 200ms"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(3));
    drop(listener);
}

#[test]
fn urls_are_read() {
    let t = MetricsUrl::parse("http://[::1]:9000").unwrap();
    assert_eq!((t.host.as_str(), t.port), ("::1", 9000));
    assert_eq!(t.url(), "http://[::1]:9000/metrics");
    let t = MetricsUrl::parse("http://localhost/custom/path?x=1").unwrap();
    assert_eq!((t.port, t.path.as_str()), (80, "/custom/path?x=1"));
    assert_eq!(
        MetricsUrl::parse("127.0.0.1:8080").unwrap().url(),
        "http://127.0.0.1:8080/metrics"
    );
    let https = MetricsUrl::parse("https://127.0.0.1:8443").unwrap_err();
    assert!(https.contains("https is not supported"), "{https}");
    assert!(MetricsUrl::parse("ftp://x").is_err());
    assert!(MetricsUrl::parse("http://").is_err());
}
