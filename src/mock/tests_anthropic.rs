//! Tests of `anthropic`: the Messages stream and message byte for byte, the request's rules, the error body.
//!
//! Test code only: its parent declares it `#[cfg(test)]`.

use super::*;

fn stream(g: &Generation) -> String {
    let mut out = Vec::new();
    for i in 0..event_count(g) {
        write_event(g, i, &mut out);
    }
    String::from_utf8(out).unwrap()
}

#[test]
fn stream_exact_bytes() {
    let g = Generation::new("hi there", Some(2), 20);
    let expected = concat!(
        "event: message_start\n",
        r#"data: {"type":"message_start","message":{"id":"msg_mock","type":"message","role":"assistant","model":"mock","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":2,"output_tokens":0}}}"#,
        "\n\n",
        "event: content_block_start\n",
        r#"data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
        "\n\n",
        "event: ping\n",
        r#"data: {"type":"ping"}"#,
        "\n\n",
        "event: content_block_delta\n",
        r#"data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"hi"}}"#,
        "\n\n",
        "event: content_block_delta\n",
        r#"data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" there"}}"#,
        "\n\n",
        "event: content_block_stop\n",
        r#"data: {"type":"content_block_stop","index":0}"#,
        "\n\n",
        "event: message_delta\n",
        r#"data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":2}}"#,
        "\n\n",
        "event: message_stop\n",
        r#"data: {"type":"message_stop"}"#,
        "\n\n",
    );
    assert_eq!(stream(&g), expected);
    let mut past = Vec::new();
    write_event(&g, event_count(&g), &mut past);
    write_event(&g, usize::MAX, &mut past);
    assert!(past.is_empty());
}

#[test]
fn message_exact_bytes() {
    let g = Generation::new("hi there", Some(3), 20);
    assert_eq!(
        String::from_utf8(message(&g)).unwrap(),
        concat!(
            r#"{"id":"msg_mock","type":"message","role":"assistant","model":"mock","content":[{"type":"text","text":"hi there hi"}],"#,
            r#""stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":2,"output_tokens":3}}"#
        )
    );
}

/// Each event's name is its JSON's `type`, every event parses, the deltas add up to the text.
#[test]
fn every_event_parses_and_names_itself() {
    for tokens in [0, 1, 6] {
        let g = Generation::new("a \"quoted\"\nprompt \u{1F98A}", None, tokens);
        let all = stream(&g);
        let events: Vec<&str> = all.strip_suffix("\n\n").unwrap().split("\n\n").collect();
        assert_eq!(events.len(), event_count(&g));
        let mut text = String::new();
        for ev in events {
            let (name, data) = ev.split_once('\n').unwrap();
            let name = name.strip_prefix("event: ").unwrap();
            let v: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
            assert_eq!(v["type"], name);
            if name == "content_block_delta" {
                text.push_str(v["delta"]["text"].as_str().unwrap());
            }
            if name == "message_delta" {
                assert_eq!(v["usage"]["output_tokens"], tokens);
            }
        }
        assert_eq!(text, g.text());
    }
}

#[test]
fn requests() {
    let body = br#"{"model":"claude","max_tokens":5,"system":[{"type":"text","text":"be nice"}],"stream":true,
        "messages":[{"role":"user","content":"old"},{"role":"assistant","content":"ok"},
                    {"role":"user","content":[{"type":"text","text":"new "},{"type":"image","source":{}},{"type":"text","text":"one"}]}]}"#;
    let ask = parse_messages(body).unwrap();
    assert_eq!(
        ask,
        MockAsk {
            request: MockRequest {
                prompt: "new one".into(),
                max_tokens: Some(5)
            },
            stream: true,
            include_usage: false
        }
    );
    let ask = parse_messages(
        br#"{"max_tokens":1,"system":"s","messages":[{"role":"user","content":"x"}]}"#,
    )
    .unwrap();
    assert!(!ask.stream);
    for (body, needle) in [
        (
            r#"{"messages":[{"role":"user","content":"x"}]}"#,
            "max_tokens: Field required",
        ),
        (
            r#"{"max_tokens":0,"messages":[{"role":"user","content":"x"}]}"#,
            "max_tokens",
        ),
        (
            r#"{"max_tokens":"5","messages":[{"role":"user","content":"x"}]}"#,
            "max_tokens",
        ),
        (r#"{"max_tokens":5}"#, "messages: Field required"),
        (r#"{"max_tokens":5,"messages":[]}"#, "role \"user\""),
        (
            r#"{"max_tokens":5,"system":5,"messages":[{"role":"user","content":"x"}]}"#,
            "system",
        ),
        ("[]", "object"),
    ] {
        let e = parse_messages(body.as_bytes()).unwrap_err();
        assert!(e.contains(needle), "{body}: {e}");
    }
}

#[test]
fn error_body_shape() {
    let v: Value = serde_json::from_slice(&error_body(400, "max_tokens: Field required")).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"type": "error", "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"}})
    );
    for (status, kind) in [
        (401, "authentication_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (529, "overloaded_error"),
    ] {
        let v: Value = serde_json::from_slice(&error_body(status, "m")).unwrap();
        assert_eq!(v["error"]["type"], kind);
    }
}
