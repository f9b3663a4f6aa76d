//! Tests of `gemini`: the stream (whose exact bytes `tests_script` also checks, through `MockScript`), the
//! whole answer, the models list and the error body.
//!
//! Test code only: its parent declares it `#[cfg(test)]`.

use super::*;
use serde_json::Value;

#[test]
fn whole_answer_exact_bytes() {
    let g = Generation::new("hi there", Some(3), 10);
    assert_eq!(
        String::from_utf8(generate_content(&g)).unwrap(),
        concat!(
            r#"{"candidates":[{"content":{"parts":[{"text":"hi there hi"}],"role":"model"},"finishReason":"STOP","index":0}],"#,
            r#""usageMetadata":{"promptTokenCount":2,"candidatesTokenCount":3,"totalTokenCount":5},"modelVersion":"mock"}"#
        )
    );
}

/// The stream's texts add up to the whole answer's, and its last event is the whole answer's ending.
#[test]
fn stream_and_whole_answer_agree() {
    for tokens in [0, 1, 5] {
        let g = Generation::new("a \"b\" c", None, tokens);
        let mut text = String::new();
        let mut last = Value::Null;
        for i in 0..event_count(&g) {
            let mut out = Vec::new();
            write_event(&g, i, &mut out);
            let ev = String::from_utf8(out).unwrap();
            let data = ev
                .strip_prefix("data: ")
                .unwrap()
                .strip_suffix("\r\n\r\n")
                .unwrap();
            last = serde_json::from_str(data).unwrap();
            text.push_str(
                last["candidates"][0]["content"]["parts"][0]["text"]
                    .as_str()
                    .unwrap(),
            );
        }
        let whole: Value = serde_json::from_slice(&generate_content(&g)).unwrap();
        assert_eq!(
            whole["candidates"][0]["content"]["parts"][0]["text"],
            text.as_str()
        );
        assert_eq!(last["usageMetadata"], whole["usageMetadata"]);
        assert_eq!(last["candidates"][0]["finishReason"], "STOP");
    }
}

#[test]
fn errors_and_models() {
    let v: Value = serde_json::from_slice(&error_body(429, "quota")).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED"}})
    );
    for (status, name) in [
        (400, "INVALID_ARGUMENT"),
        (404, "NOT_FOUND"),
        (500, "INTERNAL"),
        (503, "UNAVAILABLE"),
    ] {
        let v: Value = serde_json::from_slice(&error_body(status, "m")).unwrap();
        assert_eq!(v["error"]["status"], name);
    }
    let v: Value = serde_json::from_slice(&models()).unwrap();
    assert_eq!(v["models"][0]["name"], "models/mock");
    assert!(
        v["models"][0]["supportedGenerationMethods"]
            .as_array()
            .unwrap()
            .contains(&"streamGenerateContent".into())
    );
}
