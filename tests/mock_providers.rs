//! The mock upstream answers each provider's own paths in that provider's shape, streamed and whole, over a
//! real loopback socket: OpenAI (chat, completions, responses, embeddings, models), Gemini
//! (`streamGenerateContent`, `generateContent`, models) and Anthropic (messages). Plus the request log at
//! `GET /debug/requests` and the fault hook (`status:NNN` prompts, `mock_status=NNN` queries).
//!
//! The mock runs inside the test process (`Server::start_mock`), one per test, on an ephemeral port.

mod common;

use common::*;
use serde_json::{Value, json};
use std::time::Duration;
use tokenpipe::config::{FdLimit, LoopConfig, MockConfig};
use tokenpipe::mock::script::MockFormat;
use tokenpipe::{Running, Server};

/// Tokens per answer of the test mocks.
const TOKENS: u32 = 5;

/// A mock in this process; stopped on drop.
struct Mock {
    running: Option<Running>,
    addr: std::net::SocketAddr,
}

impl Mock {
    fn start(format: MockFormat) -> Mock {
        let running = Server::start_mock(MockConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            workers: 1,
            format,
            tokens: TOKENS,
            interval: Duration::from_millis(1),
            common: LoopConfig {
                fd_limit: FdLimit::Keep,
                ..LoopConfig::default()
            },
        })
        .expect("start the mock in process");
        Mock {
            addr: running.addr(),
            running: Some(running),
        }
    }

    /// POSTs `body` (JSON) to `path` on a fresh connection and reads the whole response.
    fn post(&self, path: &str, body: &Value) -> Response {
        fetch(self.addr, &post_json(path, &body.to_string()))
    }

    fn get(&self, path: &str) -> Response {
        fetch(self.addr, &get(path))
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            r.stop();
        }
    }
}

/// A complete chunked SSE response: 200, `text/event-stream`.
fn assert_sse(resp: &Response, what: &str) {
    assert_eq!(
        resp.status(),
        200,
        "{what}: {:?} {}",
        resp.head,
        resp.text()
    );
    assert_stream_head(&resp.head);
    assert!(resp.complete, "{what}: stream cut short");
}

/// A complete JSON response with Content-Length: its status and body.
fn json_of(resp: &Response, what: &str) -> (u16, Value) {
    assert!(
        resp.head.content_length().is_some() && !resp.head.is_chunked(),
        "{what}: not a Content-Length reply: {:?}",
        resp.head
    );
    assert!(
        resp.head
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/json")),
        "{what}: {:?}",
        resp.head
    );
    (resp.status(), resp.json())
}

/// (event name, JSON data) of every event of a named-event stream (Responses, Anthropic).
fn named_events(payload: &[u8]) -> Vec<(String, Value)> {
    sse_events(payload)
        .iter()
        .map(|e| {
            let (name, data) = e.split_once('\n').unwrap_or_else(|| panic!("{e:?}"));
            let name = name
                .strip_prefix("event: ")
                .unwrap_or_else(|| panic!("{e:?}"));
            let data = data
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("{e:?}"));
            (name.to_string(), serde_json::from_str(data).unwrap())
        })
        .collect()
}

fn chat(prompt: &str) -> Value {
    json!({"model": "gpt-4o", "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": prompt}]})
}

#[test]
fn openai_chat_completions_streamed_with_usage_and_whole() {
    let mock = Mock::start(MockFormat::OpenAi);
    let mut body = chat("hello brave new world");
    body["stream"] = true.into();
    body["stream_options"] = json!({"include_usage": true});
    body["max_tokens"] = 3.into();
    let resp = mock.post("/v1/chat/completions", &body);
    assert_sse(&resp, "chat stream");
    let data = sse_data(&resp.body);
    assert_eq!(token_texts(&resp.body).concat(), "hello brave new");
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let usage: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(
        usage["usage"],
        json!({"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7})
    );

    // Without `stream`, as with the API: one chat.completion.
    let (status, v) = json_of(
        &mock.post("/v1/chat/completions", &chat("a b")),
        "whole chat",
    );
    assert_eq!(status, 200);
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], "a b a b a");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["completion_tokens"], TOKENS);
}

#[test]
fn openai_legacy_completions() {
    let mock = Mock::start(MockFormat::OpenAi);
    let resp = mock.post(
        "/v1/completions",
        &json!({"model": "m", "prompt": "one two", "stream": true}),
    );
    assert_sse(&resp, "completions stream");
    let data = sse_data(&resp.body);
    assert_eq!(data.len(), TOKENS as usize + 2);
    let text: String = data[..data.len() - 1]
        .iter()
        .map(|d| {
            serde_json::from_str::<Value>(d).unwrap()["choices"][0]["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(text, "one two one two one");
    let (_, v) = json_of(
        &mock.post("/v1/completions", &json!({"prompt": "x", "max_tokens": 2})),
        "whole completion",
    );
    assert_eq!(
        (v["object"].as_str(), v["choices"][0]["text"].as_str()),
        (Some("text_completion"), Some("x x"))
    );
}

#[test]
fn openai_responses_api() {
    let mock = Mock::start(MockFormat::OpenAi);
    let resp = mock.post(
        "/v1/responses",
        &json!({"model": "m", "input": "hi there", "stream": true, "max_output_tokens": 3}),
    );
    assert_sse(&resp, "responses stream");
    let events = named_events(&resp.body);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    for (i, (name, v)) in events.iter().enumerate() {
        assert_eq!(
            (v["type"].as_str(), v["sequence_number"].as_u64()),
            (Some(name.as_str()), Some(i as u64))
        );
    }
    let completed = &events.last().unwrap().1["response"];
    assert_eq!(completed["output"][0]["content"][0]["text"], "hi there hi");
    assert_eq!(completed["usage"]["output_tokens"], 3);

    let (_, v) = json_of(
        &mock.post(
            "/v1/responses",
            &json!({"input": [{"role": "user", "content": [{"type": "input_text", "text": "q"}]}]}),
        ),
        "whole response",
    );
    assert_eq!(
        (v["object"].as_str(), v["status"].as_str()),
        (Some("response"), Some("completed"))
    );
    assert_eq!(v["output"][0]["content"][0]["text"], "q q q q q");
}

#[test]
fn openai_embeddings_and_models() {
    let mock = Mock::start(MockFormat::OpenAi);
    let (_, v) = json_of(
        &mock.post(
            "/v1/embeddings",
            &json!({"model": "e", "input": ["a", "b c"]}),
        ),
        "embeddings",
    );
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[0]["embedding"].as_array().unwrap().len(), 8);
    assert_ne!(data[0]["embedding"], data[1]["embedding"]);
    assert_eq!(v["usage"]["prompt_tokens"], 3);
    // Deterministic: the same input, the same vector, in another request.
    let (_, again) = json_of(
        &mock.post("/v1/embeddings", &json!({"input": "a"})),
        "again",
    );
    assert_eq!(again["data"][0]["embedding"], data[0]["embedding"]);
    let (_, b64) = json_of(
        &mock.post(
            "/v1/embeddings",
            &json!({"input": "a", "encoding_format": "base64", "dimensions": 4}),
        ),
        "base64",
    );
    assert_eq!(b64["data"][0]["embedding"].as_str().unwrap().len(), 24); // 16 bytes

    let (_, v) = json_of(&mock.get("/v1/models"), "models");
    assert_eq!(
        (v["object"].as_str(), v["data"][0]["id"].as_str()),
        (Some("list"), Some("mock"))
    );
    let head = fetch(
        mock.addr,
        b"HEAD /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(head.status(), 200);
}

#[test]
fn gemini_stream_whole_and_models() {
    // An OpenAI-format mock: each provider's own path answers in its own shape anyway.
    let mock = Mock::start(MockFormat::OpenAi);
    let body = json!({"contents": [{"role": "user", "parts": [{"text": "gemini says"}]}], "generationConfig": {"maxOutputTokens": 3}});
    let mut c = Conn::connect(mock.addr);
    c.send(&post_json(
        "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
        &body.to_string(),
    ));
    let resp = c.read_response("gemini stream");
    assert_sse(&resp, "gemini stream");
    assert!(
        lossy(&resp.body).contains("}\r\n\r\ndata: "),
        "events must be CRLF-separated"
    );
    assert_eq!(token_texts(&resp.body).concat(), "gemini says gemini");
    let last: Value = serde_json::from_str(sse_data(&resp.body).last().unwrap()).unwrap();
    assert_eq!(last["usageMetadata"]["candidatesTokenCount"], 3);

    let (_, v) = json_of(
        &mock.post("/v1beta/models/gemini-2.0-flash:generateContent", &body),
        "generateContent",
    );
    assert_eq!(
        v["candidates"][0]["content"]["parts"][0]["text"],
        "gemini says gemini"
    );
    assert_eq!(v["candidates"][0]["finishReason"], "STOP");
    let (_, v) = json_of(&mock.get("/v1beta/models"), "gemini models");
    assert_eq!(v["models"][0]["name"], "models/mock");

    // Gemini's `v1` API (the google-genai SDK's default) lists models at the shared `/v1/models`.
    let (_, v) = json_of(&mock.get("/v1/models"), "gemini /v1/models");
    assert_eq!(v["models"][0]["name"], "models/mock");
    let (_, v) = json_of(
        &mock.post("/v1/models/gemini-2.5-flash:generateContent", &body),
        "v1 generateContent",
    );
    assert_eq!(
        v["candidates"][0]["content"]["parts"][0]["text"],
        "gemini says gemini"
    );
}

#[test]
fn anthropic_messages() {
    let mock = Mock::start(MockFormat::Gemini);
    let body = json!({"model": "claude-x", "max_tokens": 3, "system": "be brief", "stream": true,
                      "messages": [{"role": "user", "content": [{"type": "text", "text": "claude speaks"}]}]});
    let resp = mock.post("/v1/messages", &body);
    assert_sse(&resp, "anthropic stream");
    let events = named_events(&resp.body);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    assert!(
        lossy(&resp.body).starts_with("event: message_start\ndata: {"),
        "{:?}",
        lossy(&resp.body)
    );
    assert_eq!(events[0].1["message"]["usage"]["input_tokens"], 2);
    let text: String = events
        .iter()
        .filter(|(n, _)| n == "content_block_delta")
        .map(|(_, v)| v["delta"]["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(text, "claude speaks claude");
    assert_eq!(events[7].1["delta"]["stop_reason"], "end_turn");
    assert_eq!(events[7].1["usage"]["output_tokens"], 3);
    // One event per chunk: the mock paces them.
    let mut c = Conn::connect(mock.addr);
    c.send(&post_json("/v1/messages", &body.to_string()));
    assert_stream_head(&c.expect_head("paced"));
    let paced = c.read_chunked_body().unwrap();
    assert_eq!(paced.chunks.len(), names.len());

    let mut whole = body.clone();
    whole["stream"] = false.into();
    let (_, v) = json_of(&mock.post("/v1/messages", &whole), "whole message");
    assert_eq!(
        (
            v["type"].as_str(),
            v["content"][0]["text"].as_str(),
            v["stop_reason"].as_str()
        ),
        (
            Some("message"),
            Some("claude speaks claude"),
            Some("end_turn")
        )
    );
    assert_eq!(v["usage"], json!({"input_tokens": 2, "output_tokens": 3}));

    // max_tokens is required, as with the API, and the error is Anthropic's.
    whole.as_object_mut().unwrap().remove("max_tokens");
    let (status, v) = json_of(&mock.post("/v1/messages", &whole), "no max_tokens");
    assert_eq!(status, 400);
    assert_eq!(
        v,
        json!({"type": "error", "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"}})
    );
}

#[test]
fn provider_paths_under_a_base_path() {
    let mock = Mock::start(MockFormat::OpenAi);
    let (_, v) = json_of(
        &mock.post("/openai/v1/chat/completions", &chat("x")),
        "prefixed chat",
    );
    assert_eq!(v["object"], "chat.completion");
    let mut body = chat("y");
    body["max_tokens"] = 1.into();
    let (_, v) = json_of(
        &mock.post("/anthropic/v1/messages", &body),
        "prefixed messages",
    );
    assert_eq!(v["content"][0]["text"], "y");
    let resp = mock.get("/v1/nothing-here");
    assert_json_error(&resp, 404, "unknown path");
}

/// `POST PATH` with a JSON body and extra header fields.
fn post_with(path: &str, headers: &[(&str, &str)], body: &Value) -> Vec<u8> {
    post_with_headers(path, headers, &body.to_string())
}

#[test]
fn the_request_log() {
    let mock = Mock::start(MockFormat::OpenAi);
    let body = json!({"contents": [{"parts": [{"text": "logged"}]}]});
    let raw = post_with(
        "/v1beta/models/m:streamGenerateContent?alt=sse&key=k",
        &[("x-goog-api-key", "relay-key"), ("X-Trace", "a b")],
        &body,
    );
    let resp = fetch(mock.addr, &raw);
    assert_sse(&resp, "logged stream");
    assert_eq!(mock.get("/healthz").status(), 200);
    let (_, log) = json_of(&mock.get("/debug/requests"), "log");
    let requests = log["requests"].as_array().unwrap();
    assert_eq!(requests.len(), 2, "{log}");
    let first = &requests[0];
    assert_eq!(first["method"], "POST");
    assert_eq!(first["path"], "/v1beta/models/m:streamGenerateContent");
    assert_eq!(first["query"], "alt=sse&key=k");
    assert_eq!(first["body"], body.to_string());
    assert_eq!(first["body_bytes"], body.to_string().len());
    let headers = first["headers"].as_array().unwrap();
    assert_eq!(headers[0], json!(["Host", "127.0.0.1"]));
    assert!(
        headers.contains(&json!(["x-goog-api-key", "relay-key"])),
        "{headers:?}"
    );
    assert!(headers.contains(&json!(["X-Trace", "a b"])), "{headers:?}");
    assert!(!headers.iter().any(|h| {
        h[0].as_str()
            .is_some_and(|n| n.eq_ignore_ascii_case("authorization"))
    }));
    assert_eq!(
        (requests[1]["path"].as_str(), requests[1]["seq"].as_u64()),
        (Some("/healthz"), Some(2))
    );
    // The log's own requests are not logged; it keeps only the last ones.
    for _ in 0..40 {
        mock.get("/stats");
    }
    let (_, log) = json_of(&mock.get("/debug/requests"), "log");
    assert_eq!(log["total"], 42);
    let requests = log["requests"].as_array().unwrap();
    assert_eq!(requests.len(), log["kept"].as_u64().unwrap() as usize);
    assert!(requests.iter().all(|r| r["path"] == "/stats"));
}

/// `status:429` as the prompt (or `x-mock-status: 429`, or `mock_status=429` in the query) makes the mock answer 429 with
/// `Retry-After: 7` and the provider's error body; the connection stays usable.
#[test]
fn the_fault_hook() {
    let mock = Mock::start(MockFormat::OpenAi);
    let chat_body =
        json!({"messages": [{"role": "user", "content": "status:429"}], "stream": true});
    let gemini_body = json!({"contents": [{"parts": [{"text": "status:429"}]}]});
    let claude_body = json!({"max_tokens": 9, "messages": [{"role": "user", "content": " status:429 "}], "stream": true});
    for (path, body, check) in [
        ("/v1/chat/completions", &chat_body, "/error/code"),
        (
            "/v1beta/models/m:streamGenerateContent?alt=sse",
            &gemini_body,
            "/error/status",
        ),
        ("/v1/messages", &claude_body, "/error/type"),
    ] {
        let mut c = Conn::connect(mock.addr);
        c.send(&post_json(path, &body.to_string()));
        let resp = c.read_response(path);
        let (status, v) = json_of(&resp, path);
        assert_eq!(status, 429, "{path}: {v}");
        assert_eq!(resp.head.header("retry-after"), Some("7"), "{path}");
        assert!(
            v.pointer(check).is_some_and(|f| !f.is_null()),
            "{path}: {v}"
        );
        // Keep-alive: the next request on the same connection is served.
        c.send(&get("/healthz"));
        assert_eq!(c.read_response("after the fault").status(), 200);
    }
    // By header, checked before the body (which here would be a 400).
    let raw = post_with("/v1/messages", &[("x-mock-status", "529")], &json!({}));
    let resp = fetch(mock.addr, &raw);
    let (status, v) = json_of(&resp, "header fault");
    assert_eq!(
        (status, v["error"]["type"].as_str()),
        (529, Some("overloaded_error"))
    );
    assert_eq!(resp.head.header("retry-after"), Some("7"));
    // By query, for a GET.
    let resp = mock.get("/v1/models?mock_status=503");
    let (status, v) = json_of(&resp, "models fault");
    assert_eq!(
        (status, v["error"]["type"].as_str()),
        (503, Some("server_error"))
    );
    assert_eq!(resp.head.header("retry-after"), Some("7"));
}
