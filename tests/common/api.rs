//! Requests to the relay and to the mock upstream, and the checks of their answers.

use super::*;

/// A relay request body: `{"prompt": P, "model"?: M, "max_tokens"?: N}`.
pub fn prompt_body(prompt: &str, model: Option<&str>, max_tokens: Option<u64>) -> String {
    let mut v = serde_json::json!({ "prompt": prompt });
    if let Some(m) = model {
        v["model"] = m.into();
    }
    if let Some(n) = max_tokens {
        v["max_tokens"] = n.into();
    }
    v.to_string()
}

/// `POST PATH HTTP/1.1` with a JSON body and Content-Length.
pub fn post_json(path: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// `POST /api/v1/generate-stream` with `body`.
pub fn stream_request(body: &str) -> Vec<u8> {
    post_json("/api/v1/generate-stream", body)
}

/// `GET PATH HTTP/1.1`.
pub fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").into_bytes()
}

/// Sends `raw` on a fresh connection and reads one response.
pub fn fetch(addr: SocketAddr, raw: &[u8]) -> Response {
    let mut c = Conn::connect(addr);
    c.send(raw);
    c.read_response(&format!(
        "request {:?}",
        String::from_utf8_lossy(&raw[..raw.len().min(80)])
    ))
}

/// Streams one prompt through the relay on a fresh connection; asserts a complete `200` SSE stream and returns
/// its payload.
pub fn relay_stream(relay: SocketAddr, body: &str) -> Vec<u8> {
    let mut c = Conn::connect(relay);
    c.send(&stream_request(body));
    let head = c.expect_head("relay stream");
    assert_stream_head(&head);
    let body = c.read_chunked_body().expect("read relayed body");
    assert!(
        body.complete,
        "relayed stream ended without its final chunk; payload {:?}",
        lossy(&body.payload)
    );
    body.payload
}

/// Asserts the response head of a relayed stream: 200, SSE content type, no caching, no proxy buffering, chunked.
pub fn assert_stream_head(head: &Head) {
    assert_eq!(head.status(), 200, "stream head: {head:?}");
    let ct = head.header("content-type").unwrap_or("");
    assert!(
        ct.starts_with("text/event-stream"),
        "Content-Type {ct:?} in {head:?}"
    );
    assert_eq!(
        head.header("cache-control"),
        Some("no-cache"),
        "Cache-Control in {head:?}"
    );
    assert_eq!(
        head.header("x-accel-buffering"),
        Some("no"),
        "X-Accel-Buffering in {head:?}"
    );
    assert!(head.is_chunked(), "not chunked: {head:?}");
}

/// Asserts a JSON error response: the status and a body `{"error":{"code":"...","message":"..."}}`.
pub fn assert_json_error(resp: &Response, status: u16, what: &str) {
    assert_eq!(
        resp.status(),
        status,
        "{what}: head {:?}, body {:?}",
        resp.head,
        resp.text()
    );
    let ct = resp.head.header("content-type").unwrap_or("");
    assert!(
        ct.starts_with("application/json"),
        "{what}: Content-Type {ct:?} of a JSON error: {:?}",
        resp.head
    );
    let v = resp.json();
    let code = v["error"]["code"].as_str();
    let message = v["error"]["message"].as_str();
    assert!(
        code.is_some_and(|c| !c.is_empty()),
        "{what}: error.code missing in {v}"
    );
    assert!(message.is_some(), "{what}: error.message missing in {v}");
}

/// Asserts that `GET /healthz` on a fresh connection answers 200.
pub fn assert_healthy(relay: SocketAddr, after: &str) {
    let resp = fetch(relay, &get("/healthz"));
    assert_eq!(
        resp.status(),
        200,
        "GET /healthz after {after}: {:?} {:?}",
        resp.head,
        resp.text()
    );
}

pub fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

// ---------------------------------------------------------------------------------------------------------
// The mock upstream, asked directly
// ---------------------------------------------------------------------------------------------------------

/// `GET /stats` on the mock upstream.
pub fn mock_stats(mock: SocketAddr) -> serde_json::Value {
    let resp = fetch(mock, &get("/stats"));
    assert_eq!(resp.status(), 200, "mock /stats: {:?}", resp.head);
    resp.json()
}

/// Reads a counter from a `/stats` document.
pub fn stat(stats: &serde_json::Value, name: &str) -> u64 {
    stats[name]
        .as_u64()
        .unwrap_or_else(|| panic!("mock /stats has no numeric {name:?}: {stats}"))
}

/// The request an upstream of `format` receives for `prompt`, as the relay would send it.
pub fn upstream_request(format: &str, model: &str, prompt: &str, max_tokens: u64) -> Vec<u8> {
    match format {
        "openai" => {
            let body = serde_json::json!({
                "model": model,
                "messages": [{ "role": "user", "content": prompt }],
                "stream": true,
                "stream_options": { "include_usage": true },
                "max_tokens": max_tokens,
            });
            post_json("/v1/chat/completions", &body.to_string())
        }
        "gemini" => {
            let body = serde_json::json!({
                "contents": [{ "role": "user", "parts": [{ "text": prompt }] }],
                "generationConfig": { "maxOutputTokens": max_tokens },
            });
            post_json(
                &format!("/v1beta/models/{model}:streamGenerateContent?alt=sse"),
                &body.to_string(),
            )
        }
        other => panic!("unknown format {other}"),
    }
}

/// The SSE payload the mock sends for `prompt` when asked directly (chunked framing removed).
pub fn direct_mock_payload(
    mock: SocketAddr,
    format: &str,
    model: &str,
    prompt: &str,
    max_tokens: u64,
) -> Vec<u8> {
    let mut c = Conn::connect(mock);
    c.send(&upstream_request(format, model, prompt, max_tokens));
    let head = c.expect_head("direct mock request");
    assert_eq!(head.status(), 200, "direct mock request: {head:?}");
    assert!(
        head.is_chunked(),
        "mock answered without chunked encoding: {head:?}"
    );
    let body = c.read_chunked_body().expect("read mock body");
    assert!(body.complete, "mock body ended without its final chunk");
    body.payload
}

/// The `--max-body-bytes` of a [`RelayWithMock`] relay.
pub const SMALL_MAX_BODY: usize = 4096;

/// A mock upstream and a relay in front of it, with `--max-body-bytes` [`SMALL_MAX_BODY`].
pub struct RelayWithMock {
    pub mock: Proc,
    pub relay: Proc,
}

impl RelayWithMock {
    pub fn start() -> RelayWithMock {
        let mock = spawn_mock(&["--tokens", "6", "--interval-ms", "2", "--format", "openai"]);
        let max_body = SMALL_MAX_BODY.to_string();
        let relay = spawn_relay(
            &mock.url(),
            "openai",
            &["--model", MODEL, "--max-body-bytes", &max_body],
        );
        RelayWithMock { mock, relay }
    }
}

/// Sends `raw` on a fresh connection; asserts the status and JSON error body, the connection's close when
/// `must_close`, and that a fresh `GET /healthz` still succeeds afterwards. Returns the response.
pub fn check_error(
    relay: &mut Proc,
    raw: &[u8],
    status: u16,
    must_close: bool,
    what: &str,
) -> Response {
    let mut c = Conn::connect(relay.addr);
    c.send(raw);
    let resp = c.read_response(what);
    assert_json_error(&resp, status, what);
    if must_close && let Err(why) = c.wait_closed(Duration::from_secs(2)) {
        panic!("{what}: the connection must be closed after the error: {why}");
    }
    drop(c);
    relay.assert_alive();
    assert_healthy(relay.addr, what);
    resp
}

/// A small valid relay request body (2 tokens).
pub fn small_prompt() -> String {
    prompt_body("hello", None, Some(2))
}

/// `POST /api/v1/generate-stream` with `Transfer-Encoding: chunked` and `body` (already chunk-encoded, or not).
pub fn chunked_post(body: &[u8]) -> Vec<u8> {
    let mut raw = b"POST /api/v1/generate-stream HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    raw.extend_from_slice(body);
    raw
}
