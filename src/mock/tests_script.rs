//! Tests of `script`.
//!
//! Test code only: its parent declares it `#[cfg(test)]`.

use super::*;
use crate::relay::api::GenerateRequest;
use crate::relay::providers::{Origin, Provider, build_request};
use proptest::prelude::*;

fn req(prompt: &str, max_tokens: Option<u32>) -> MockRequest {
    MockRequest {
        prompt: prompt.into(),
        max_tokens,
    }
}

fn event(script: &MockScript, i: usize) -> String {
    let mut out = Vec::new();
    script.write_event(i, &mut out);
    String::from_utf8(out).unwrap()
}

/// Strip `data: ` and the format's separator, checking both are there.
fn payload(format: MockFormat, ev: &str) -> &str {
    let sep = match format {
        MockFormat::OpenAi => "\n\n",
        MockFormat::Gemini => "\r\n\r\n",
    };
    let inner = ev
        .strip_prefix("data: ")
        .unwrap()
        .strip_suffix(sep)
        .unwrap();
    assert!(
        !inner.contains('\n') && !inner.contains('\r'),
        "event spans lines: {ev:?}"
    );
    inner
}

#[test]
fn format_names() {
    assert_eq!("openai".parse::<MockFormat>(), Ok(MockFormat::OpenAi));
    assert_eq!("GEMINI".parse::<MockFormat>(), Ok(MockFormat::Gemini));
    assert!("mock".parse::<MockFormat>().is_err());
    for f in [MockFormat::OpenAi, MockFormat::Gemini] {
        assert_eq!(f.to_string().parse::<MockFormat>(), Ok(f));
    }
}

#[test]
fn tokens_cycle_through_the_prompt() {
    let s = MockScript::new(MockFormat::OpenAi, &req("  hello \n world ", None), 5);
    let tokens: Vec<String> = (0..5).map(|i| s.token(i)).collect();
    assert_eq!(tokens, ["hello", " world", " hello", " world", " hello"]);
    assert_eq!(s.expected_text(), "hello world hello world hello");
    // An empty prompt still streams.
    let s = MockScript::new(MockFormat::Gemini, &req(" \t", None), 3);
    assert_eq!(s.expected_text(), "mock mock mock");
}

#[test]
fn max_tokens_shortens_the_script() {
    let s = MockScript::new(MockFormat::OpenAi, &req("a b", Some(3)), 10);
    assert_eq!((s.token_count(), s.len()), (3, 5));
    let s = MockScript::new(MockFormat::OpenAi, &req("a b", Some(30)), 10);
    assert_eq!(s.token_count(), 10);
    let s = MockScript::new(MockFormat::Gemini, &req("a b", Some(4)), 10);
    assert_eq!((s.token_count(), s.len()), (4, 4));
    assert!(!s.is_empty());
}

#[test]
fn openai_exact_bytes() {
    let s = MockScript::new(MockFormat::OpenAi, &req("hi there", None), 2);
    assert_eq!(s.len(), 4);
    let all: String = (0..s.len()).map(|i| event(&s, i)).collect();
    let head = r#"{"id":"chatcmpl-mock","object":"chat.completion.chunk","created":0,"model":"mock","choices":[{"index":0,"delta":"#;
    let expected = format!(
        "data: {head}{{\"role\":\"assistant\",\"content\":\"hi\"}},\"finish_reason\":null}}]}}\n\n\
         data: {head}{{\"content\":\" there\"}},\"finish_reason\":null}}]}}\n\n\
         data: {head}{{}},\"finish_reason\":\"stop\"}}]}}\n\n\
         data: [DONE]\n\n"
    );
    assert_eq!(all, expected);
}

#[test]
fn gemini_exact_bytes() {
    let s = MockScript::new(MockFormat::Gemini, &req("hi there", None), 2);
    assert_eq!(s.len(), 2);
    let all: String = (0..s.len()).map(|i| event(&s, i)).collect();
    let expected = concat!(
        r#"data: {"candidates":[{"content":{"parts":[{"text":"hi"}],"role":"model"},"index":0}],"modelVersion":"mock"}"#,
        "\r\n\r\n",
        r#"data: {"candidates":[{"content":{"parts":[{"text":" there"}],"role":"model"},"finishReason":"STOP","index":0}],"#,
        r#""usageMetadata":{"promptTokenCount":2,"candidatesTokenCount":2,"totalTokenCount":4},"modelVersion":"mock"}"#,
        "\r\n\r\n",
    );
    assert_eq!(all, expected);
}

#[test]
fn zero_tokens_still_closes_the_stream() {
    let s = MockScript::new(MockFormat::OpenAi, &req("x", Some(0)), 5);
    assert_eq!(s.len(), 2);
    assert!(event(&s, 0).contains(r#""finish_reason":"stop""#));
    assert_eq!(event(&s, 1), "data: [DONE]\n\n");

    let s = MockScript::new(MockFormat::Gemini, &req("x", None), 0);
    assert_eq!(s.len(), 1);
    let v: Value = serde_json::from_str(payload(MockFormat::Gemini, &event(&s, 0))).unwrap();
    assert_eq!(v["candidates"][0]["content"]["parts"][0]["text"], "");
    assert_eq!(v["candidates"][0]["finishReason"], "STOP");
    assert_eq!(v["usageMetadata"]["candidatesTokenCount"], 0);
    assert_eq!(s.expected_text(), "");
}

#[test]
fn out_of_range_events_write_nothing() {
    for format in [MockFormat::OpenAi, MockFormat::Gemini] {
        let s = MockScript::new(format, &req("a", None), 3);
        for i in [s.len(), s.len() + 1, usize::MAX] {
            assert_eq!(event(&s, i), "", "{format} event {i}");
        }
    }
}

/// Walk a whole script the way a client would: every event is `data: ` + one line of JSON (or
/// `[DONE]`), and the texts put together are `expected_text`.
fn replay(format: MockFormat, prompt: &str, tokens: u32) -> Result<(), TestCaseError> {
    let s = MockScript::new(format, &req(prompt, None), tokens);
    let mut text = String::new();
    let mut finished = 0;
    for i in 0..s.len() {
        let ev = event(&s, i);
        let data = payload(format, &ev);
        if data == "[DONE]" {
            prop_assert_eq!(format, MockFormat::OpenAi);
            prop_assert_eq!(i + 1, s.len(), "[DONE] must be last");
            continue;
        }
        let v: Value =
            serde_json::from_str(data).map_err(|e| TestCaseError::fail(format!("{e}: {data}")))?;
        let (piece, reason) = match format {
            MockFormat::OpenAi => (
                &v["choices"][0]["delta"]["content"],
                &v["choices"][0]["finish_reason"],
            ),
            MockFormat::Gemini => (
                &v["candidates"][0]["content"]["parts"][0]["text"],
                &v["candidates"][0]["finishReason"],
            ),
        };
        text.push_str(piece.as_str().unwrap_or(""));
        if !reason.is_null() {
            finished += 1;
        }
    }
    prop_assert_eq!(finished, 1, "exactly one event ends the generation");
    prop_assert_eq!(text, s.expected_text());
    Ok(())
}

#[test]
fn every_event_is_valid_and_the_text_adds_up() {
    for format in [MockFormat::OpenAi, MockFormat::Gemini] {
        for tokens in [0, 1, 2, 7, 100] {
            replay(
                format,
                "The quick \"brown\" fox\\ jumps\u{0}\u{1F98A}",
                tokens,
            )
            .unwrap();
        }
    }
}

#[test]
fn parses_what_the_relay_sends() {
    let origin = Origin {
        tls: false,
        host: "127.0.0.1".into(),
        port: 9000,
        base_path: String::new(),
    };
    for provider in [Provider::OpenAi, Provider::Gemini] {
        for max_tokens in [None, Some(7)] {
            let g = GenerateRequest {
                max_tokens,
                ..GenerateRequest::from_prompt("tell me \"more\"")
            };
            let bytes =
                build_request(provider, &origin, None, &g, provider.default_model()).unwrap();
            let body_at = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            let parsed = parse_mock_request(&bytes[body_at..]).unwrap();
            assert_eq!(parsed, req("tell me \"more\"", max_tokens), "{provider}");
        }
    }
}

#[test]
fn openai_request_shapes() {
    let body = br#"{"model":"m","messages":[
        {"role":"system","content":"be brief"},
        {"role":"user","content":"first"},
        {"role":"assistant","content":"ok"},
        {"role":"user","content":[{"type":"text","text":"second "},{"type":"image_url","image_url":{}},{"type":"text","text":"turn"}]}
    ],"max_tokens":50,"max_completion_tokens":20}"#;
    assert_eq!(
        parse_mock_request(body).unwrap(),
        req("second turn", Some(20))
    );
    let body = br#"{"messages":[{"role":"user","content":"x"}],"max_tokens":99999999999,"max_completion_tokens":null}"#;
    assert_eq!(parse_mock_request(body).unwrap(), req("x", Some(u32::MAX)));
}

#[test]
fn gemini_request_shapes() {
    let body = br#"{"contents":[
        {"role":"user","parts":[{"text":"old"}]},
        {"role":"model","parts":[{"text":"reply"}]},
        {"parts":[{"text":"new "},{"inlineData":{}},{"text":"question"}]}
    ],"generationConfig":{"temperature":0.5,"maxOutputTokens":12}}"#;
    assert_eq!(
        parse_mock_request(body).unwrap(),
        req("new question", Some(12))
    );
    let body = br#"{"contents":[{"role":"user","parts":[]}],"generationConfig":null}"#;
    assert_eq!(parse_mock_request(body).unwrap(), req("", None));
}

#[test]
fn malformed_requests() {
    for (body, needle) in [
        ("", "not valid JSON"),
        ("[1]", "object"),
        ("{}", "`messages`"),
        (r#"{"messages":{}}"#, "array"),
        (r#"{"messages":[]}"#, "role \"user\""),
        (
            r#"{"messages":[{"role":"system","content":"x"}]}"#,
            "role \"user\"",
        ),
        (r#"{"messages":[{"role":"user"}]}"#, "content"),
        (r#"{"messages":[{"role":"user","content":5}]}"#, "content"),
        (
            r#"{"messages":[{"role":"user","content":[{"text":1}]}]}"#,
            "`text`",
        ),
        (
            r#"{"messages":[{"role":"user","content":"x"}],"max_tokens":-1}"#,
            "max_tokens",
        ),
        (
            r#"{"messages":[{"role":"user","content":"x"}],"max_completion_tokens":"5"}"#,
            "max_completion",
        ),
        (r#"{"contents":"x"}"#, "array"),
        (
            r#"{"contents":[{"role":"model","parts":[]}]}"#,
            "role \"user\"",
        ),
        (r#"{"contents":[{"parts":{}}]}"#, "parts"),
        (
            r#"{"contents":[{"parts":[]}],"generationConfig":[]}"#,
            "generationConfig",
        ),
        (
            r#"{"contents":[{"parts":[]}],"generationConfig":{"maxOutputTokens":1.5}}"#,
            "maxOutputTokens",
        ),
    ] {
        let e = parse_mock_request(body.as_bytes()).unwrap_err();
        assert!(e.contains(needle), "{body}: {e}");
    }
}

proptest! {
    #[test]
    fn parse_mock_request_never_panics(body in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse_mock_request(&body);
    }

    #[test]
    fn parse_mock_request_never_panics_on_json_like_text(
        body in r#"[{}\[\]":,0-9a-z_ .\-]{0,40}|\{"(messages|contents)":\[\{"(role|parts|content|text)":[\[\]{}":,0-9a-z]{0,40}"#
    ) {
        let _ = parse_mock_request(body.as_bytes());
    }

    #[test]
    fn any_prompt_replays(prompt in "\\PC{0,40}", tokens in 0u32..50, gemini in any::<bool>()) {
        let format = if gemini { MockFormat::Gemini } else { MockFormat::OpenAi };
        replay(format, &prompt, tokens)?;
    }
}
