//! The providers' own APIs through the relay: each provider's paths, streamed and whole, arrive as the
//! mock sent them; an upstream error status passes unchanged; the client's credentials never reach the
//! upstream and the relay's key does; hop-by-hop fields stop at the relay.

mod common;

use common::*;
use serde_json::{Value, json};
use std::net::SocketAddr;
use tokenpipe::relay::providers::{Provider, ProviderKey};

/// A relay speaking `provider`'s API to `mock`, with the key `relay-key`.
fn relay(mock: SocketAddr, provider: Provider) -> InProcess {
    InProcess::relay(&format!("http://{mock}"), |c| {
        let u = c.first_upstream().expect("an upstream");
        u.provider = provider;
        u.key = Some(ProviderKey::new("relay-key").expect("key"));
    })
}

/// `method path` with a JSON body and extra header fields.
fn request(method: &str, path: &str, headers: &[(&str, &str)], body: Option<&Value>) -> Vec<u8> {
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut raw = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for (n, v) in headers {
        raw.push_str(&format!("{n}: {v}\r\n"));
    }
    if method == "POST" {
        raw.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    raw.push_str("\r\n");
    raw.push_str(&body);
    raw.into_bytes()
}

/// The same request to the mock directly and through the relay: same status, content type and body.
fn same_through_the_relay(mock: SocketAddr, relay: SocketAddr, raw: &[u8], what: &str) -> Response {
    let direct = fetch(mock, raw);
    let relayed = fetch(relay, raw);
    assert_eq!(
        relayed.status(),
        direct.status(),
        "{what}: {:?}",
        relayed.text()
    );
    assert_eq!(
        relayed.head.header("content-type"),
        direct.head.header("content-type"),
        "{what}"
    );
    assert!(relayed.complete, "{what}: the relayed body ended early");
    assert!(!relayed.body.is_empty(), "{what}");
    assert_eq!(relayed.text(), direct.text(), "{what}");
    relayed
}

fn mock() -> Proc {
    spawn_mock(&["--tokens", "4", "--interval-ms", "1"])
}

#[test]
fn openai_paths_stream_and_answer_whole() {
    let mock = mock();
    let relay = relay(mock.addr, Provider::OpenAi);
    let chat = |stream| json!({"model": "m", "messages": [{"role": "user", "content": "pass me through"}], "stream": stream});
    let cases = [
        ("POST", "/v1/chat/completions", Some(chat(true))),
        ("POST", "/v1/chat/completions", Some(chat(false))),
        (
            "POST",
            "/v1/completions",
            Some(json!({"model": "m", "prompt": "one two", "stream": true})),
        ),
        (
            "POST",
            "/v1/responses",
            Some(json!({"model": "m", "input": "responses api", "stream": true})),
        ),
        (
            "POST",
            "/v1/responses",
            Some(json!({"model": "m", "input": "responses api"})),
        ),
        (
            "POST",
            "/v1/embeddings",
            Some(json!({"model": "e", "input": ["a", "b"]})),
        ),
        ("GET", "/v1/models", None),
    ];
    for (method, path, body) in cases {
        let raw = request(method, path, &[], body.as_ref());
        let resp = same_through_the_relay(
            mock.addr,
            relay.addr,
            &raw,
            &format!("{method} {path} {body:?}"),
        );
        assert_eq!(resp.status(), 200);
    }
    // Paths of another provider are not this upstream's: 404.
    assert_eq!(
        fetch(
            relay.addr,
            &request("POST", "/v1/messages", &[], Some(&json!({})))
        )
        .status(),
        404
    );
}

#[test]
fn anthropic_messages_stream_and_answer_whole() {
    let mock = mock();
    let relay = relay(mock.addr, Provider::Anthropic);
    for stream in [true, false] {
        let body = json!({"model": "claude", "max_tokens": 16, "messages": [{"role": "user", "content": "hi there"}], "stream": stream});
        let raw = request(
            "POST",
            "/v1/messages",
            &[("anthropic-version", "2023-06-01")],
            Some(&body),
        );
        let resp = same_through_the_relay(
            mock.addr,
            relay.addr,
            &raw,
            &format!("messages stream={stream}"),
        );
        if stream {
            let text = resp.text();
            for event in [
                "event: message_start",
                "event: ping",
                "event: content_block_delta",
                "event: message_stop",
            ] {
                assert!(text.contains(event), "{event} missing: {text}");
            }
        }
    }
}

#[test]
fn gemini_paths_stream_and_answer_whole() {
    let mock = mock();
    let relay = relay(mock.addr, Provider::Gemini);
    let body = json!({"contents": [{"role": "user", "parts": [{"text": "gemini words"}]}]});
    for path in [
        "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
        "/v1beta/models/gemini-2.0-flash:generateContent",
    ] {
        same_through_the_relay(
            mock.addr,
            relay.addr,
            &request("POST", path, &[], Some(&body)),
            path,
        );
    }
    same_through_the_relay(
        mock.addr,
        relay.addr,
        &request("GET", "/v1beta/models", &[], None),
        "models",
    );
}

/// A 429 with `Retry-After` reaches the client as the upstream sent it, body included.
#[test]
fn an_upstream_error_status_passes_unchanged() {
    let mock = mock();
    let relay = relay(mock.addr, Provider::OpenAi);
    let body =
        json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": true});
    let raw = request(
        "POST",
        "/v1/chat/completions",
        &[("x-mock-status", "429")],
        Some(&body),
    );
    let direct = fetch(mock.addr, &raw);
    let relayed = fetch(relay.addr, &raw);
    assert_eq!(relayed.status(), 429);
    assert_eq!(relayed.head.header("retry-after"), Some("7"));
    assert_eq!(relayed.text(), direct.text());
    assert_healthy(relay.addr, "a passed-through 429");
}

/// What reached the upstream: the relay's key, none of the client's credentials, no hop-by-hop fields,
/// the client's own end-to-end fields.
#[test]
fn client_credentials_never_reach_the_upstream() {
    let mock = mock();
    let relay = relay(mock.addr, Provider::Gemini);
    let body = json!({"contents": [{"parts": [{"text": "secret?"}]}]});
    let raw = request(
        "POST",
        "/v1beta/models/m:generateContent?key=client-secret-1&alt=json",
        &[
            ("Authorization", "Bearer client-secret-2"),
            ("x-api-key", "client-secret-3"),
            ("x-goog-api-key", "client-secret-4"),
            ("Connection", "keep-alive, X-Hop"),
            ("X-Hop", "client-secret-5"),
            ("X-Trace", "kept"),
        ],
        Some(&body),
    );
    assert_eq!(fetch(relay.addr, &raw).status(), 200);
    let log = fetch(mock.addr, &get("/debug/requests")).json();
    let seen = log["requests"]
        .as_array()
        .and_then(|r| r.last())
        .cloned()
        .expect("the relayed request in the mock's log");
    let text = seen.to_string();
    assert!(
        !text.contains("client-secret"),
        "a client credential reached the upstream: {text}"
    );
    assert_eq!(seen["query"], "alt=json", "{text}");
    let headers = seen["headers"].as_array().expect("headers");
    assert!(
        headers.contains(&json!(["x-goog-api-key", "relay-key"])),
        "{text}"
    );
    assert!(headers.contains(&json!(["X-Trace", "kept"])), "{text}");
    assert!(
        !text.contains("X-Hop") && !text.contains("keep-alive"),
        "{text}"
    );
}

/// A path that a normalising front end would read as another (dot segments, escapes) is refused with a
/// 400 naming why, and nothing reaches the upstream with the relay's key.
#[test]
fn dot_segments_never_reach_the_upstream() {
    let mock = mock();
    let relay = relay(mock.addr, Provider::OpenAi);
    let before = fetch(mock.addr, &get("/debug/requests")).json()["requests"]
        .as_array()
        .map_or(0, Vec::len);
    for path in [
        "/v1/models/../files",
        "/v1/models/%2e%2e/files",
        "/v1/models/a%2Fb",
    ] {
        let resp = fetch(relay.addr, &get(path));
        assert_eq!(resp.status(), 400, "{path}: {:?}", resp.text());
        assert_eq!(resp.json()["error"]["code"], "bad_path", "{path}");
    }
    // A request that is forwarded, as a marker: it must be the only one the mock saw since.
    assert_eq!(fetch(relay.addr, &get("/v1/models")).status(), 200);
    let log = fetch(mock.addr, &get("/debug/requests")).json();
    let seen: Vec<String> = log["requests"].as_array().expect("requests")[before..]
        .iter()
        .map(|r| r["path"].to_string())
        .collect();
    assert_eq!(seen, vec!["\"/v1/models\"".to_string()], "{log}");
}

/// The simple route, upstream refusing: a 502 whose message carries the upstream's status and message.
#[test]
fn the_simple_route_says_what_the_upstream_refused() {
    let mock = mock();
    let relay = relay(mock.addr, Provider::Anthropic);
    let resp = fetch(
        relay.addr,
        &stream_request(&prompt_body("status:429", None, Some(3))),
    );
    assert_json_error(&resp, 502, "a refused simple request");
    let v = resp.json();
    assert_eq!(v["error"]["code"], "upstream_status", "{v}");
    let message = v["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains("429") && message.len() > 40, "{message}");
}

/// A `HEAD` through the relay: the upstream's head and no body, and the connection serves the next request.
#[test]
fn a_head_request_gets_a_head_and_the_connection_goes_on() {
    let mock = mock();
    let relay = relay(mock.addr, Provider::OpenAi);
    let mut c = Conn::connect(relay.addr);
    c.send(b"HEAD /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    let head = c.expect_head("HEAD /v1/models");
    assert_eq!(head.status(), 200, "{head:?}");
    assert_eq!(head.header("transfer-encoding"), None, "{head:?}");
    c.send(&get("/healthz"));
    let next = c.read_response("a request after the HEAD");
    assert_eq!(next.status(), 200, "{:?}", next.text());
}

/// An upstream that answers before it has read the whole request (an early 413 for a large body) and stops
/// reading: the client gets that answer, not a 502, while the relay's write to it is still blocked.
#[test]
fn an_early_answer_reaches_the_client() {
    // A small receive buffer, set before `listen` so that accepted sockets inherit it: the relay's write
    // of a 6 MiB body blocks long before the upstream has read it.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    socket.listen(4).unwrap();
    let listener: std::net::TcpListener = socket.into();
    let addr = listener.local_addr().unwrap();
    let (answered_tx, answered_rx) = std::sync::mpsc::channel::<()>();
    let upstream = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).unwrap_or(0) == 1 {
            head.push(byte[0]);
        }
        let body = r#"{"error":{"message":"too large","type":"invalid_request_error"}}"#;
        let answer = format!(
            "HTTP/1.1 413 Payload Too Large\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(answer.as_bytes()).unwrap();
        // Read nothing more until the client has its answer (or the test gave up).
        let _ = answered_rx.recv_timeout(std::time::Duration::from_secs(15));
    });
    let relay = InProcess::relay(&format!("http://{addr}"), |c| {
        c.common.limits.max_body_bytes = 8 << 20;
    });
    let body = format!(
        "{{\"model\":\"m\",\"messages\":[{{\"role\":\"user\",\"content\":\"{}\"}}]}}",
        "x".repeat(6 << 20)
    );
    let resp = fetch(relay.addr, &post_json("/v1/chat/completions", &body));
    let _ = answered_tx.send(());
    assert_eq!(resp.status(), 413, "{:?}", resp.text());
    assert!(resp.text().contains("too large"), "{}", resp.text());
    drop(relay);
    upstream.join().unwrap();
}
