//! TLS on loopback, end to end, with a CA made at test time (`common::TestPki`): HTTPS upstreams
//! (`--upstream https://...`, `--upstream-ca`), certificate and name failures, session resumption,
//! HTTPS on the relay's own listener (`--tls-cert`, `--tls-key`), and how sessions end: the tail of a
//! reply and `close_notify` before the relay shuts its side, and `close_notify` as what tells the end of
//! a close-delimited upstream body from a cut.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject;
use tokenpipe::config::{FdLimit, MockConfig};
use tokenpipe::mock::script::MockFormat;
use tokenpipe::relay::providers::Provider;
use tokenpipe::{Running, Server};

/// Sends `raw` (which asks for `Connection: close`) over TLS to `addr`, trusting `ca` and checking the
/// certificate against `name`, and returns everything the server sent until it closed.
fn https_exchange(addr: SocketAddr, ca: &std::path::Path, name: &str, raw: &[u8]) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca).expect("read the CA") {
        roots
            .add(cert.expect("a CA certificate"))
            .expect("add the CA");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let server = ServerName::try_from(name.to_string()).expect("server name");
    let conn = rustls::ClientConnection::new(Arc::new(config), server).expect("TLS client");
    let sock = TcpStream::connect(addr).expect("connect");
    sock.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    let mut tls = rustls::StreamOwned::new(conn, sock);
    tls.write_all(raw).expect("send over TLS");
    let mut got = Vec::new();
    match tls.read_to_end(&mut got) {
        Ok(_) => {}
        // A server that closes without close_notify after a complete response is fine here.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
        Err(e) => panic!("read over TLS: {e}; got {:?}", lossy(&got)),
    }
    got
}

/// The payload of a chunked body (the bytes after the head), and whether it ended with the last chunk.
fn dechunk(body: &[u8]) -> (Vec<u8>, bool) {
    let mut payload = Vec::new();
    let mut rest = body;
    loop {
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
            return (payload, false);
        };
        let size = std::str::from_utf8(&rest[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or(""), 16).ok());
        let Some(size) = size else {
            return (payload, false);
        };
        rest = &rest[eol + 2..];
        if size == 0 {
            return (payload, true);
        }
        if rest.len() < size + 2 {
            return (payload, false);
        }
        payload.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

fn split_head(response: &[u8]) -> (String, &[u8]) {
    let end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {:?}", lossy(response)));
    (lossy(&response[..end]), &response[end + 4..])
}

fn mock(format: MockFormat, tls: Option<&TestPki>) -> Running {
    let mut config = MockConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        workers: 1,
        format,
        tokens: 5,
        interval: Duration::from_millis(2),
        common: Default::default(),
    };
    config.common.fd_limit = FdLimit::Keep;
    config.common.tls = tls.map(|p| (p.cert.clone(), p.key.clone()));
    Server::start_mock(config).expect("start the mock")
}

/// HTTPS on the relay's own listener: a TLS client gets `/healthz` and a whole stream.
#[test]
fn an_https_client_gets_a_correct_stream() {
    let pki = TestPki::new(&["localhost"]);
    let upstream = mock(MockFormat::OpenAi, None);
    let relay = InProcess::relay(&format!("http://{}", upstream.addr()), |c| {
        c.common.tls = Some((pki.cert.clone(), pki.key.clone()));
    });
    let health = https_exchange(
        relay.addr,
        &pki.ca,
        "localhost",
        b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    let (head, body) = split_head(&health);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(lossy(body).contains("\"ok\""), "{:?}", lossy(body));

    let body = prompt_body("over tls", None, Some(5));
    let raw = format!(
        "POST /api/v1/generate-stream HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let response = https_exchange(relay.addr, &pki.ca, "localhost", raw.as_bytes());
    let (head, body) = split_head(&response);
    assert!(
        head.starts_with("HTTP/1.1 200") && head.contains("text/event-stream"),
        "{head}"
    );
    let (payload, complete) = dechunk(body);
    assert!(complete, "no last chunk: {:?}", lossy(body));
    let direct = direct_mock_payload(upstream.addr(), "openai", MODEL, "over tls", 5);
    assert_eq!(lossy(&payload), lossy(&direct));
    upstream.stop();
}

/// An HTTPS listener in front of the embedded mock: the relay reaches its mock in the clear (the mock
/// once took the listener's TLS settings too, and every stream got a 502).
#[test]
fn an_https_relay_streams_from_its_embedded_mock() {
    let pki = TestPki::new(&["localhost"]);
    let relay = InProcess::relay("http://127.0.0.1:1", |c| {
        c.common.tls = Some((pki.cert.clone(), pki.key.clone()));
        c.upstream = tokenpipe::config::UpstreamConfig::EmbeddedMock {
            provider: Provider::OpenAi,
            model: MODEL.into(),
            tokens: 3,
            interval: Duration::from_millis(1),
        };
    });
    let body = prompt_body("embedded", None, Some(3));
    let raw = format!(
        "POST /api/v1/generate-stream HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let response = https_exchange(relay.addr, &pki.ca, "localhost", raw.as_bytes());
    let (head, body) = split_head(&response);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (payload, complete) = dechunk(body);
    assert!(complete, "no last chunk: {:?}", lossy(body));
    assert!(lossy(&payload).contains("[DONE]"), "{:?}", lossy(&payload));
}

/// A relay in front of `upstream` (a mock) with `provider`'s shape, trusting `ca` if given.
fn relay_to(upstream: &str, provider: Provider, ca: Option<&std::path::Path>) -> InProcess {
    InProcess::relay(upstream, |c| {
        let u = c.first_upstream().expect("an upstream");
        u.provider = provider;
        u.ca = ca.map(|p| p.to_path_buf());
    })
}

/// A stream through the relay to the mock over TLS (a private CA given by `--upstream-ca`) carries the same
/// bytes as one to the same mock in the clear, for each provider's shape.
#[test]
fn streams_over_tls_arrive_intact_for_every_provider() {
    let pki = TestPki::new(&["localhost"]);
    let secure = mock(MockFormat::OpenAi, Some(&pki));
    let plain = mock(MockFormat::OpenAi, None);
    for provider in [Provider::OpenAi, Provider::Gemini, Provider::Anthropic] {
        let over_tls = relay_to(
            &format!("https://localhost:{}", secure.addr().port()),
            provider,
            Some(&pki.ca),
        );
        let in_clear = relay_to(&format!("http://{}", plain.addr()), provider, None);
        let body = prompt_body("secure words here", None, Some(5));
        let a = relay_stream(over_tls.addr, &body);
        let b = relay_stream(in_clear.addr, &body);
        assert!(!a.is_empty());
        assert_eq!(lossy(&a), lossy(&b), "{provider}");
        let counts = over_tls.counts_when(|c| c.completed == 1);
        assert_eq!(
            counts.tls_full + counts.tls_resumed,
            1,
            "{provider}: {counts:?}"
        );
    }
    secure.stop();
    plain.stop();
}

/// An untrusted certificate, and a name the certificate does not carry: each a 502 that says why, and the
/// relay serves on.
#[test]
fn an_untrusted_certificate_or_a_wrong_name_is_a_502_with_the_reason() {
    let pki = TestPki::new(&["localhost"]);
    let secure = mock(MockFormat::OpenAi, Some(&pki));
    let port = secure.addr().port();
    let cases = [
        // Only Mozilla's roots, or a CA that signed nothing of this: the chain does not verify.
        (format!("https://localhost:{port}"), None, "UnknownIssuer"),
        (
            format!("https://localhost:{port}"),
            Some(pki.other_ca.as_path()),
            "UnknownIssuer",
        ),
        // The right CA, but the certificate is for localhost, not for 127.0.0.1.
        (
            format!("https://127.0.0.1:{port}"),
            Some(pki.ca.as_path()),
            "not valid for name",
        ),
    ];
    for (url, ca, reason) in cases {
        let relay = relay_to(&url, Provider::OpenAi, ca);
        let resp = fetch(relay.addr, &stream_request(&small_prompt()));
        assert_json_error(&resp, 502, &url);
        let v = resp.json();
        assert_eq!(v["error"]["code"], "upstream_tls_failed", "{url}: {v}");
        let message = v["error"]["message"].as_str().unwrap_or("");
        assert!(message.contains(reason), "{url}: {message}");
        assert_healthy(relay.addr, &url);
    }
    secure.stop();
}

/// After a pooled TLS connection expired, the next connection resumes the session: no full handshake.
#[test]
fn a_reconnect_after_the_pool_expired_resumes_the_session() {
    let pki = TestPki::new(&["localhost"]);
    let secure = mock(MockFormat::OpenAi, Some(&pki));
    let url = format!("https://localhost:{}", secure.addr().port());
    let relay = InProcess::relay(&url, |c| {
        c.first_upstream().expect("an upstream").ca = Some(pki.ca.clone());
        c.idle_timeout = Duration::from_secs(1);
    });
    relay_stream(relay.addr, &small_prompt());
    // The event: the mock sees the pooled connection close when its idle time is up.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while stat(
        &secure.mock_stats().expect("mock stats"),
        "open_connections",
    ) > 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the pooled connection never expired"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    relay_stream(relay.addr, &small_prompt());
    let counts = relay.counts_when(|c| c.completed == 2);
    assert_eq!((counts.connects, counts.reuses), (2, 0), "{counts:?}");
    assert_eq!((counts.tls_full, counts.tls_resumed), (1, 1), "{counts:?}");
    secure.stop();
}

/// A pooled TLS connection is looked at through TLS: what arrives on it while idle (a TLS 1.3 session
/// ticket, say) is taken in by rustls and is no reason to drop it, so sequential streams share one
/// connection and one handshake.
#[test]
fn a_pooled_tls_connection_is_reused() {
    let pki = TestPki::new(&["localhost"]);
    let secure = mock(MockFormat::OpenAi, Some(&pki));
    let url = format!("https://localhost:{}", secure.addr().port());
    let relay = relay_to(&url, Provider::OpenAi, Some(&pki.ca));
    for _ in 0..3 {
        relay_stream(relay.addr, &small_prompt());
    }
    let counts = relay.counts_when(|c| c.completed == 3);
    assert_eq!((counts.connects, counts.reuses), (1, 2), "{counts:?}");
    assert_eq!((counts.tls_full, counts.tls_resumed), (1, 0), "{counts:?}");
    secure.stop();
}

/// An SSE body of about `total` bytes: small numbered events, then `data: [DONE]`.
fn events_of_about(total: usize) -> Vec<u8> {
    let mut body = Vec::with_capacity(total + 32);
    let mut i = 0;
    while body.len() + 30 < total {
        body.extend_from_slice(format!("data: {i:06}\n\n").as_bytes());
        i += 1;
    }
    body.extend_from_slice(b"data: [DONE]\n\n");
    body
}

/// A TLS client of the relay's HTTPS listener on a socket with a 4 KiB receive buffer that announces a
/// small MSS (why: see the test below). It has sent `raw`.
fn small_window_https_client(
    addr: SocketAddr,
    ca: &std::path::Path,
    raw: &[u8],
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let roots = tokenpipe::conn::tls::root_store(Some(ca)).expect("roots");
    let config = tokenpipe::conn::tls::client_config(Arc::new(roots)).expect("client config");
    let server = ServerName::try_from("localhost".to_string()).expect("server name");
    let conn = rustls::ClientConnection::new(config, server).expect("TLS client");
    let s =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    s.set_recv_buffer_size(4096).expect("receive buffer");
    s.set_tcp_mss(536).expect("MSS");
    s.connect(&addr.into()).expect("connect");
    let sock: TcpStream = s.into();
    sock.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    let mut tls = rustls::StreamOwned::new(conn, sock);
    tls.write_all(raw).expect("send over TLS");
    tls.flush().expect("send over TLS");
    tls
}

/// Reads to the end of the session: what came, and `Ok` if it ended with `close_notify`.
fn read_to_close(
    tls: &mut rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
) -> (Vec<u8>, Result<(), String>) {
    let mut got = Vec::new();
    let end = tls
        .read_to_end(&mut got)
        .map(|_| ())
        .map_err(|e| e.to_string());
    (got, end)
}

/// An HTTPS client that asked for `Connection: close` gets the whole stream, its last chunk included, then
/// a clean `close_notify`, however far behind it reads: the relay's lingering close begins only once
/// rustls has written every record, and its `shutdown(Write)` waits until `close_notify` is out too.
///
/// The tail used to be lost only when the relay's socket pushed back at the very moment the reply ended,
/// with the last records inside rustls. On loopback that moment is rare: Linux sizes a new connection's
/// send buffer from the MSS (twice the initial congestion window, in segments), the loopback MSS is 64 KiB,
/// so the buffer starts at megabytes (and grows while the client reads), and a client reading a long
/// stream slowly hardly ever meets it. So this client announces an MSS of 536 bytes and a 4 KiB receive
/// buffer, which makes the relay's send buffer start at some tens of KiB, and reads *nothing* until the
/// relay has read the whole upstream body (its `completed` counter, an event), so the buffer does not grow
/// and the relay has written all the socket takes and holds the rest. Over the rounds the body grows by
/// 1 KiB across the sizes at which the socket fills; in some of them the last bytes are inside rustls when
/// it does, the state in which the relay used to shut the socket on them (47 KiB did, every run, on the
/// machine this was written on). A first round streams 1 MiB read as it comes.
#[test]
fn an_https_client_that_asked_to_close_gets_the_whole_tail_and_close_notify() {
    let fake = FakeUpstream::start(128, |_, mut conn| {
        while let Ok(Some(req)) = conn.read_request() {
            // The test says in the prompt how long a body it wants.
            let json = req.json();
            let prompt = json["messages"]
                .as_array()
                .and_then(|m| m.last())
                .and_then(|m| m["content"].as_str())
                .unwrap_or("")
                .to_string();
            let size = prompt.trim_start_matches("bytes=").parse().unwrap_or(0);
            let resp = sse_chunked_response(&events_of_about(size), 16 * 1024);
            if conn.stream.write_all(&resp).is_err() {
                return;
            }
        }
    });
    let pki = TestPki::new(&["localhost"]);
    let relay = InProcess::relay(&fake.url(), |c| {
        c.common.tls = Some((pki.cert.clone(), pki.key.clone()));
        // Room for every body of the sweep, so that the relay reads each one to its end while the
        // client reads nothing.
        c.common.stream_buffer = 1 << 20;
    });
    let request = |size: usize| {
        let body = prompt_body(&format!("bytes={size}"), None, None);
        format!(
            "POST /api/v1/generate-stream HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let sizes = std::iter::once(1 << 20).chain((24..96).map(|k| k * 1024));
    for (round, size) in sizes.enumerate() {
        let mut tls = small_window_https_client(relay.addr, &pki.ca, request(size).as_bytes());
        if round > 0 {
            let completed = relay.counts_when(|c| c.completed > round as u64).completed;
            assert!(
                completed > round as u64,
                "{size} bytes: the relay never read the body"
            );
        }
        let (response, end) = read_to_close(&mut tls);
        let (head, body) = split_head(&response);
        assert!(head.starts_with("HTTP/1.1 200"), "{size} bytes: {head}");
        let (got, complete) = dechunk(body);
        let want = events_of_about(size);
        assert!(
            complete,
            "{size} bytes: no last chunk ({} of {} payload bytes, {} bytes in all); the session ended with {end:?}",
            got.len(),
            want.len(),
            response.len()
        );
        assert!(got == want, "{size} bytes: the payload differs");
        assert_eq!(end, Ok(()), "{size} bytes: a clean close_notify");
    }
}
/// One request read from a TLS stream: the head, and as many body bytes as `Content-Length` says.
fn read_tls_request(tls: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if got.len() >= end + 4 + length {
                return Ok(got);
            }
        }
        let n = tls.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        got.extend_from_slice(&buf[..n]);
    }
}

/// How a fake TLS upstream ends a body that runs until the connection closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyEnd {
    /// All of it, `close_notify`, then FIN: the body is complete.
    CloseNotify,
    /// Half of it, then FIN without `close_notify`: a cut (a crash, an injected FIN).
    BareFin,
}

/// Streams through the relay from a fake HTTPS upstream whose `200` has neither a length nor chunks, so
/// that only the end of the connection ends the body; returns the payload the fake sent and the client's
/// chunked body.
fn close_delimited_over_tls(end: BodyEnd) -> (Vec<u8>, ChunkedBody) {
    let pki = TestPki::new(&["localhost"]);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let config = tokenpipe::conn::tls::server_config(&pki.cert, &pki.key).expect("server config");
    let payload = fake_sse_payload(20);
    let sent = match end {
        BodyEnd::CloseNotify => payload.clone(),
        BodyEnd::BareFin => payload[..payload.len() / 2].to_vec(),
    };
    let body = sent.clone();
    let fake = std::thread::spawn(move || {
        let (sock, _) = listener.accept().expect("accept");
        sock.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        let conn = rustls::ServerConnection::new(config).expect("TLS server");
        let mut tls = rustls::StreamOwned::new(conn, sock);
        read_tls_request(&mut tls).expect("a request");
        tls.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n")
            .expect("head");
        tls.write_all(&body).expect("body");
        if end == BodyEnd::CloseNotify {
            tls.conn.send_close_notify();
        }
        tls.flush().expect("records written");
        tls.sock
            .shutdown(std::net::Shutdown::Write)
            .expect("shutdown");
        // Keep the socket until the relay closes it, so that the FIN (not a reset) ends what it reads.
        let _ = tls.sock.read(&mut [0u8; 64]);
    });
    let relay = relay_to(
        &format!("https://localhost:{port}"),
        Provider::OpenAi,
        Some(&pki.ca),
    );
    let mut c = Conn::connect(relay.addr);
    c.send(&stream_request(&small_prompt()));
    let head = c.expect_head("a close-delimited stream over TLS");
    assert_stream_head(&head);
    let got = c.read_chunked_body().expect("the relayed body");
    drop(relay);
    fake.join().expect("the fake upstream");
    (sent, got)
}

/// A close-delimited body that ends with `close_notify` is complete: the client gets all of it and the
/// last chunk.
#[test]
fn a_close_delimited_tls_body_ended_by_close_notify_is_complete() {
    let (sent, got) = close_delimited_over_tls(BodyEnd::CloseNotify);
    assert!(got.complete, "no last chunk: {:?}", lossy(&got.payload));
    assert_eq!(lossy(&got.payload), lossy(&sent));
}

/// Over TLS, the end of a close-delimited body is told from a cut by `close_notify`: a FIN without it is
/// a truncation, so the client's stream fails (the SSE error event, no last chunk) instead of looking
/// complete.
#[test]
fn a_close_delimited_tls_body_cut_without_close_notify_fails_the_stream() {
    let (sent, got) = close_delimited_over_tls(BodyEnd::BareFin);
    assert!(
        !got.complete,
        "a cut body was passed on as complete: {:?}",
        lossy(&got.payload)
    );
    assert!(got.payload.starts_with(&sent), "{:?}", lossy(&got.payload));
    let rest = lossy(&got.payload[sent.len()..]);
    assert!(
        rest.contains("event: error") && rest.contains("before the body ended"),
        "{rest:?}"
    );
}
