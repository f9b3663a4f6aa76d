//! Tests of `answer`: which endpoint streams, which replies whole, in whose shape, and the fault hook.
//!
//! Test code only: its parent declares it `#[cfg(test)]`.

use super::*;
use serde_json::Value;

fn post(path: &str, query: Option<&str>, body: &str) -> Request {
    Request {
        method: "POST".into(),
        path: path.into(),
        query: query.map(str::to_string),
        version: 1,
        keep_alive: true,
        headers: Vec::new(),
        body: body.as_bytes().to_vec(),
    }
}

/// `answer`, every fault applying (a fresh key count).
fn decide(endpoint: Endpoint, req: &Request, format: MockFormat, tokens: u32) -> Answer {
    answer(endpoint, req, format, tokens, &KeyCounts::default()).answer
}

fn reply(a: Answer) -> (u16, Value, Option<u32>) {
    match a {
        Answer::Reply(r) => (
            r.status,
            serde_json::from_slice(&r.body).unwrap(),
            r.retry_after,
        ),
        Answer::Stream(s) => panic!("expected a reply, got a stream of {} events", s.len()),
    }
}

fn script(a: Answer) -> MockScript {
    match a {
        Answer::Stream(s) => s,
        Answer::Reply(r) => panic!("expected a stream, got {} {:?}", r.status, r.body),
    }
}

const CHAT: &str =
    r#"{"messages":[{"role":"user","content":"hello brave new world"}],"max_tokens":3"#;

#[test]
fn stream_or_whole_as_the_request_asks() {
    let ask =
        |endpoint, body: String| decide(endpoint, &post("/x", None, &body), MockFormat::OpenAi, 5);
    let s = script(ask(
        Endpoint::ChatCompletions,
        format!("{CHAT},\"stream\":true}}"),
    ));
    assert_eq!((s.len(), s.expected_text()), (5, "hello brave new".into()));
    let (status, v, _) = reply(ask(Endpoint::ChatCompletions, format!("{CHAT}}}")));
    assert_eq!(status, 200);
    assert_eq!(v["choices"][0]["message"]["content"], "hello brave new");

    let s = script(ask(Endpoint::Messages, format!("{CHAT},\"stream\":true}}")));
    assert_eq!(s.len(), 3 + 6);
    let (_, v, _) = reply(ask(Endpoint::Messages, format!("{CHAT}}}")));
    assert_eq!(v["content"][0]["text"], "hello brave new");

    let s = script(ask(
        Endpoint::Responses,
        r#"{"input":"a b","stream":true}"#.into(),
    ));
    assert_eq!(s.len(), 5 + 8);
    let (_, v, _) = reply(ask(
        Endpoint::Responses,
        r#"{"input":"a b","max_output_tokens":2}"#.into(),
    ));
    assert_eq!(v["output"][0]["content"][0]["text"], "a b");
    assert_eq!(v["max_output_tokens"], 2);

    let s = script(ask(
        Endpoint::Completions,
        r#"{"prompt":"a b","stream":true,"stream_options":{"include_usage":true}}"#.into(),
    ));
    assert_eq!(s.len(), 5 + 3);
    let (_, v, _) = reply(ask(Endpoint::Completions, r#"{"prompt":"a b"}"#.into()));
    assert_eq!(v["choices"][0]["text"], "a b a b a");

    // Gemini: the path says.
    let gemini =
        r#"{"contents":[{"parts":[{"text":"g h"}]}],"generationConfig":{"maxOutputTokens":2}}"#;
    let s = script(ask(
        Endpoint::GeminiGenerate { stream: true },
        gemini.into(),
    ));
    assert_eq!(s.expected_text(), "g h");
    let (_, v, _) = reply(ask(
        Endpoint::GeminiGenerate { stream: false },
        gemini.into(),
    ));
    assert_eq!(v["candidates"][0]["content"]["parts"][0]["text"], "g h");

    let (_, v, _) = reply(ask(Endpoint::Embeddings, r#"{"input":["a","b"]}"#.into()));
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
}

#[test]
fn errors_in_the_providers_shapes() {
    let bad = |endpoint| {
        reply(decide(
            endpoint,
            &post("/x", None, "{"),
            MockFormat::OpenAi,
            5,
        ))
    };
    let (status, v, retry) = bad(Endpoint::ChatCompletions);
    assert_eq!(
        (status, v["error"]["type"].as_str(), retry),
        (400, Some("invalid_request_error"), None)
    );
    let (_, v, _) = bad(Endpoint::Messages);
    assert_eq!(
        (v["type"].as_str(), v["error"]["type"].as_str()),
        (Some("error"), Some("invalid_request_error"))
    );
    let (_, v, _) = bad(Endpoint::GeminiGenerate { stream: true });
    assert_eq!(
        (v["error"]["code"].as_u64(), v["error"]["status"].as_str()),
        (Some(400), Some("INVALID_ARGUMENT"))
    );
    let (_, v, _) = bad(Endpoint::Embeddings);
    assert!(v["error"]["message"].as_str().unwrap().contains("JSON"));
    // Anthropic's required max_tokens.
    let body = r#"{"messages":[{"role":"user","content":"x"}]}"#;
    let (status, v, _) = reply(decide(
        Endpoint::Messages,
        &post("/v1/messages", None, body),
        MockFormat::OpenAi,
        5,
    ));
    assert_eq!(status, 400);
    assert_eq!(v["error"]["message"], "max_tokens: Field required");
}

/// The older spellings of a status fault, in the head (checked before the body, which here does not
/// parse) and in the prompt of every endpoint that has one.
#[test]
fn the_fault_hook() {
    let header = |v: &str| vec![("X-Mock-Status".to_string(), v.as_bytes().to_vec())];
    let mut faulty = post("/x", None, "not even JSON");
    faulty.headers = header("529");
    let (status, v, retry) = reply(decide(Endpoint::Messages, &faulty, MockFormat::OpenAi, 5));
    assert_eq!(
        (status, v["error"]["type"].as_str(), retry),
        (529, Some("overloaded_error"), Some(7))
    );

    let chat = r#"{"messages":[{"role":"user","content":"status:429"}],"stream":true}"#;
    let gemini = r#"{"contents":[{"parts":[{"text":"status:429"}]}]}"#;
    let anthropic =
        r#"{"max_tokens":5,"messages":[{"role":"user","content":"status:429"}],"stream":true}"#;
    for (endpoint, body, field) in [
        (Endpoint::ChatCompletions, chat, "/error/code"),
        (
            Endpoint::Responses,
            r#"{"input":"status:429"}"#,
            "/error/code",
        ),
        (
            Endpoint::Embeddings,
            r#"{"input":["a","status:429"]}"#,
            "/error/code",
        ),
        (
            Endpoint::GeminiGenerate { stream: true },
            gemini,
            "/error/status",
        ),
        (Endpoint::Messages, anthropic, "/error/type"),
    ] {
        let (status, v, retry) = reply(decide(
            endpoint,
            &post("/x", None, body),
            MockFormat::OpenAi,
            5,
        ));
        assert_eq!((status, retry), (429, Some(7)), "{endpoint:?}");
        assert!(
            v.pointer(field).is_some_and(|f| !f.is_null()),
            "{endpoint:?}: {v}"
        );
    }
    // By query, also where there is no prompt; `GET /v1/models` errors in `--format`'s shape.
    let mut get = post("/v1/models", Some("mock_status=503"), "");
    get.method = "GET".into();
    let (status, v, retry) = reply(decide(Endpoint::Models, &get, MockFormat::Gemini, 5));
    assert_eq!(
        (status, v["error"]["status"].as_str(), retry),
        (503, Some("UNAVAILABLE"), Some(7))
    );
}

#[test]
fn a_spec_in_the_prompt_of_every_endpoint_is_cut_out_of_it() {
    let prompt = "a b [fault: stall-after=1,head-delay=5ms]";
    let user = serde_json::json!([{"role": "user", "content": prompt}]);
    let gemini = serde_json::json!({"contents": [{"parts": [{"text": prompt}]}]});
    for (endpoint, body) in [
        (
            Endpoint::ChatCompletions,
            serde_json::json!({"messages": user, "stream": true}),
        ),
        (
            Endpoint::ChatCompletions,
            serde_json::json!({"messages": user}),
        ),
        (
            Endpoint::Completions,
            serde_json::json!({"prompt": prompt, "stream": true}),
        ),
        (
            Endpoint::Responses,
            serde_json::json!({"input": prompt, "stream": true}),
        ),
        (
            Endpoint::Messages,
            serde_json::json!({"max_tokens": 9, "messages": user}),
        ),
        (Endpoint::GeminiGenerate { stream: true }, gemini.clone()),
        (Endpoint::GeminiGenerate { stream: false }, gemini),
        (
            Endpoint::Embeddings,
            serde_json::json!({"input": ["x", prompt]}),
        ),
    ] {
        let req = post("/x", None, &body.to_string());
        let d = answer(endpoint, &req, MockFormat::OpenAi, 5, &KeyCounts::default());
        let asked = fault::parse("stall-after=1,head-delay=5ms").unwrap();
        assert_eq!(d.fault, asked, "{endpoint:?}");
        match d.answer {
            Answer::Stream(s) => assert_eq!(s.expected_text(), "a b a b a", "{endpoint:?}"),
            Answer::Reply(r) => {
                let text = String::from_utf8(r.body).unwrap();
                assert_eq!(r.status, 200, "{endpoint:?}: {text}");
                assert!(!text.contains("fault"), "{endpoint:?}: {text}");
            }
        }
    }
}

#[test]
fn the_heads_spec_wins_and_a_bad_spec_is_a_400_in_the_providers_shape() {
    let keys = KeyCounts::default();
    let body = r#"{"max_tokens":9,"messages":[{"role":"user","content":"a [fault: status=500]"}],"stream":true}"#;
    let mut req = post("/v1/messages", None, body);
    req.headers = vec![("x-mock-fault".into(), b"error-after=0".to_vec())];
    let d = answer(Endpoint::Messages, &req, MockFormat::OpenAi, 5, &keys);
    assert_eq!(
        d.fault.cut,
        Some(fault::Cut::AfterTokens(0, fault::Break::Error))
    );
    // The prompt is then ordinary text, marker included.
    assert_eq!(
        script(d.answer).expected_text(),
        "a [fault: status=500] a [fault:"
    );

    req.headers = vec![("x-mock-fault".into(), b"error-after=soon".to_vec())];
    let (status, v, _) = reply(decide(Endpoint::Messages, &req, MockFormat::OpenAi, 5));
    assert_eq!(
        (status, v["error"]["type"].as_str()),
        (400, Some("invalid_request_error"))
    );
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("x-mock-fault: error-after=\"soon\""),
        "{message}"
    );

    let bad = r#"{"contents":[{"parts":[{"text":"[fault: times=1]"}]}]}"#;
    let gemini = Endpoint::GeminiGenerate { stream: true };
    let (status, v, _) = reply(decide(
        gemini,
        &post("/x", None, bad),
        MockFormat::OpenAi,
        5,
    ));
    assert_eq!(
        (status, v["error"]["status"].as_str()),
        (400, Some("INVALID_ARGUMENT"))
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("times and key")
    );
}

#[test]
fn past_its_times_a_request_is_answered_as_if_it_asked_nothing() {
    let keys = KeyCounts::default();
    let mut req = post("/x", None, &format!("{CHAT},\"stream\":true}}"));
    req.headers = vec![("x-mock-fault".into(), b"status=503,times=1,key=k".to_vec())];
    let first = answer(
        Endpoint::ChatCompletions,
        &req,
        MockFormat::OpenAi,
        5,
        &keys,
    );
    assert_eq!(reply(first.answer).0, 503);
    assert_eq!(first.fault.status, Some(503));
    let second = answer(
        Endpoint::ChatCompletions,
        &req,
        MockFormat::OpenAi,
        5,
        &keys,
    );
    assert!(second.fault.is_none());
    assert_eq!(script(second.answer).expected_text(), "hello brave new");
}

#[test]
fn models_lists_by_format() {
    let mut get = post("/v1/models", None, "");
    get.method = "GET".into();
    // `/v1/models` is everyone's: one list that each provider's client can read, whatever `--format`.
    for format in [MockFormat::OpenAi, MockFormat::Gemini] {
        let (_, v, _) = reply(decide(Endpoint::Models, &get, format, 5));
        assert_eq!(v["object"], "list");
        assert_eq!(v["data"][0]["id"], "mock");
        assert_eq!(v["data"][0]["object"], "model");
        assert_eq!(v["data"][0]["display_name"], "Mock");
        assert_eq!(v["has_more"], false);
        assert_eq!(v["models"][0]["name"], "models/mock");
    }
    let (_, v, _) = reply(decide(Endpoint::GeminiModels, &get, MockFormat::OpenAi, 5));
    assert_eq!(v["models"][0]["name"], "models/mock");
}

#[test]
fn reply_bytes() {
    let mut out = Vec::new();
    Reply::fault(Api::Anthropic, 429, None).write(false, true, &mut out);
    let text = String::from_utf8(out).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert_eq!(
        head,
        format!(
            "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nContent-Length: {}\r\nRetry-After: 7\r\nConnection: close",
            body.len()
        )
    );
    let v: Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["error"]["type"], "rate_limit_error");

    let mut out = Vec::new();
    Reply::ok(b"{}".to_vec()).write(true, false, &mut out);
    assert_eq!(
        out,
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n"
    );
}
