//! Tests of `openai`: Chat Completions and Completions, streamed and whole, byte for byte.
//!
//! Test code only: its parent declares it `#[cfg(test)]`.

use super::*;

fn generation(prompt: &str, tokens: u32) -> Generation {
    Generation::new(prompt, None, tokens)
}

/// Every event of a stream, as text.
fn stream(g: &Generation, include_usage: bool, chat: bool) -> Vec<String> {
    (0..event_count(g, include_usage))
        .map(|i| {
            let mut out = Vec::new();
            if chat {
                write_chat_event(g, include_usage, i, &mut out);
            } else {
                write_completion_event(g, include_usage, i, &mut out);
            }
            String::from_utf8(out).unwrap()
        })
        .collect()
}

#[test]
fn chat_stream_with_usage_exact_bytes() {
    let g = generation("hi there", 2);
    let head = r#"{"id":"chatcmpl-mock","object":"chat.completion.chunk","created":0,"model":"mock","choices":"#;
    let expected = [
        format!(
            "data: {head}[{{\"index\":0,\"delta\":{{\"role\":\"assistant\",\"content\":\"hi\"}},\"finish_reason\":null}}],\"usage\":null}}\n\n"
        ),
        format!(
            "data: {head}[{{\"index\":0,\"delta\":{{\"content\":\" there\"}},\"finish_reason\":null}}],\"usage\":null}}\n\n"
        ),
        format!(
            "data: {head}[{{\"index\":0,\"delta\":{{}},\"finish_reason\":\"stop\"}}],\"usage\":null}}\n\n"
        ),
        format!(
            "data: {head}[],\"usage\":{{\"prompt_tokens\":2,\"completion_tokens\":2,\"total_tokens\":4}}}}\n\n"
        ),
        "data: [DONE]\n\n".to_string(),
    ];
    assert_eq!(stream(&g, true, true), expected);
    // Without include_usage: no `usage` at all, and no usage chunk.
    let plain = stream(&g, false, true);
    assert_eq!(plain.len(), 4);
    assert!(plain.iter().all(|e| !e.contains("usage")), "{plain:?}");
}

#[test]
fn completion_stream_exact_bytes() {
    let g = generation("hi there", 2);
    let head =
        r#"{"id":"cmpl-mock","object":"text_completion","created":0,"model":"mock","choices":"#;
    let expected = [
        format!(
            "data: {head}[{{\"text\":\"hi\",\"index\":0,\"logprobs\":null,\"finish_reason\":null}}]}}\n\n"
        ),
        format!(
            "data: {head}[{{\"text\":\" there\",\"index\":0,\"logprobs\":null,\"finish_reason\":null}}]}}\n\n"
        ),
        format!(
            "data: {head}[{{\"text\":\"\",\"index\":0,\"logprobs\":null,\"finish_reason\":\"stop\"}}]}}\n\n"
        ),
        "data: [DONE]\n\n".to_string(),
    ];
    assert_eq!(stream(&g, false, false), expected);
}

#[test]
fn whole_answers_exact_bytes() {
    let g = generation("hi there", 3);
    assert_eq!(
        String::from_utf8(chat_completion(&g)).unwrap(),
        concat!(
            r#"{"id":"chatcmpl-mock","object":"chat.completion","created":0,"model":"mock","choices":[{"index":0,"#,
            r#""message":{"role":"assistant","content":"hi there hi","refusal":null},"logprobs":null,"finish_reason":"stop"}],"#,
            r#""usage":{"prompt_tokens":2,"completion_tokens":3,"total_tokens":5}}"#
        )
    );
    assert_eq!(
        String::from_utf8(completion(&g)).unwrap(),
        concat!(
            r#"{"id":"cmpl-mock","object":"text_completion","created":0,"model":"mock","choices":[{"text":"hi there hi","#,
            r#""index":0,"logprobs":null,"finish_reason":"stop"}],"#,
            r#""usage":{"prompt_tokens":2,"completion_tokens":3,"total_tokens":5}}"#
        )
    );
}

/// Every event is `data: ` and one line of JSON (or `[DONE]`, last), the texts add up, exactly one chunk
/// finishes, and the usage chunk (if any) counts what was sent.
#[test]
fn every_event_parses_and_the_text_adds_up() {
    for chat in [true, false] {
        for include_usage in [false, true] {
            for tokens in [0, 1, 2, 7] {
                let g = generation("The \"quick\" fox\\ \u{1F98A}", tokens);
                let events = stream(&g, include_usage, chat);
                let (mut text, mut finished, mut usage) = (String::new(), 0, 0);
                for (i, ev) in events.iter().enumerate() {
                    let data = ev
                        .strip_prefix("data: ")
                        .unwrap()
                        .strip_suffix("\n\n")
                        .unwrap();
                    assert!(!data.contains('\n'), "{ev:?}");
                    if data == "[DONE]" {
                        assert_eq!(i + 1, events.len());
                        continue;
                    }
                    let v: Value = serde_json::from_str(data).unwrap();
                    assert_eq!(v.get("usage").is_some(), include_usage, "{v}");
                    let Some(choice) = v["choices"].get(0) else {
                        assert_eq!(v["usage"]["completion_tokens"], tokens);
                        assert_eq!(v["usage"]["prompt_tokens"], 4);
                        usage += 1;
                        continue;
                    };
                    let piece = if chat {
                        &choice["delta"]["content"]
                    } else {
                        &choice["text"]
                    };
                    text.push_str(piece.as_str().unwrap_or(""));
                    finished += usize::from(!choice["finish_reason"].is_null());
                }
                assert_eq!((finished, usage), (1, usize::from(include_usage)));
                assert_eq!(text, g.text());
                let mut past = Vec::new();
                write_chat_event(&g, include_usage, events.len(), &mut past);
                write_completion_event(&g, include_usage, usize::MAX, &mut past);
                assert!(past.is_empty());
            }
        }
    }
}

#[test]
fn chat_requests() {
    let ask = parse_chat(br#"{"model":"m","messages":[{"role":"user","content":"a b"}],"stream":true,"stream_options":{"include_usage":true},"max_tokens":3}"#).unwrap();
    assert_eq!(
        ask,
        MockAsk {
            request: MockRequest {
                prompt: "a b".into(),
                max_tokens: Some(3)
            },
            stream: true,
            include_usage: true,
        }
    );
    // The API's default is a whole answer.
    let ask = parse_chat(br#"{"messages":[{"role":"user","content":"x"}]}"#).unwrap();
    assert!(!ask.stream && !ask.include_usage);
    let ask = parse_chat(br#"{"messages":[{"role":"user","content":"x"}],"stream":null}"#).unwrap();
    assert!(!ask.stream);
    let e = parse_chat(br#"{"messages":[{"role":"user","content":"x"}],"stream":"yes"}"#);
    assert!(e.unwrap_err().contains("stream"));
}

#[test]
fn completion_requests() {
    let ask = parse_completion(br#"{"model":"m","prompt":"say this","max_tokens":2}"#).unwrap();
    assert_eq!(ask.request.prompt, "say this");
    assert_eq!(ask.request.max_tokens, Some(2));
    assert!(!ask.stream);
    let ask = parse_completion(br#"{"prompt":["one","two"],"stream":true}"#).unwrap();
    assert_eq!((ask.request.prompt.as_str(), ask.stream), ("one two", true));
    for (body, needle) in [
        (r#"{}"#, "`prompt`"),
        (r#"{"prompt":5}"#, "`prompt`"),
        (r#"{"prompt":["a",1]}"#, "`prompt`"),
        (r#"{"prompt":"a","max_tokens":-1}"#, "max_tokens"),
        ("nope", "JSON"),
    ] {
        let e = parse_completion(body.as_bytes()).unwrap_err();
        assert!(e.contains(needle), "{body}: {e}");
    }
}

#[test]
fn errors_and_models() {
    let v: Value = serde_json::from_slice(&error_body(429, "slow \"down\"")).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"error": {"message": "slow \"down\"", "type": "requests", "param": null, "code": "rate_limit_exceeded"}})
    );
    let v: Value = serde_json::from_slice(&error_body(400, "bad")).unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(v["error"]["code"], Value::Null);
    let v: Value = serde_json::from_slice(&error_body(503, "x")).unwrap();
    assert_eq!(v["error"]["type"], "server_error");

    let v: Value = serde_json::from_slice(&models()).unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["id"], "mock");
    assert_eq!(v["data"][0]["object"], "model");
    // Anthropic's fields too, for the same path.
    assert_eq!(v["data"][0]["type"], "model");
    assert_eq!(v["has_more"], false);
}
