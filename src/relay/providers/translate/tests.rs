//! Tests of `translate`: the exact bytes each provider gets.
//!
//! Test code only: its parent declares it `#[cfg(test)]`.

use super::*;
use crate::relay::api::parse_generate;
use proptest::prelude::*;

fn parsed(body: &str) -> GenerateRequest {
    parse_generate(body.as_bytes()).unwrap()
}

fn text(bytes: Result<Vec<u8>, ApiError>) -> String {
    String::from_utf8(bytes.unwrap()).unwrap()
}

/// Every field at once: a system text, a system message, a conversation, every option.
const FULL: &str = r#"{
    "system": "Be brief.",
    "messages": [
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Salut !"},
        {"role": "user", "content": "Weather?"}
    ],
    "model": "ignored-here",
    "temperature": 0.7,
    "top_p": 0.9,
    "stop": ["\n\n", "END"],
    "max_tokens": 64
}"#;

/// A bare prompt gives the bytes the relay sent before the options existed; OpenAI's gained only
/// `stream_options`.
#[test]
fn minimal_bodies_are_unchanged() {
    let req = parsed(r#"{"prompt":"hi \"there\""}"#);
    assert_eq!(
        text(openai("m", &req)),
        r#"{"model":"m","messages":[{"role":"user","content":"hi \"there\""}],"stream":true,"stream_options":{"include_usage":true}}"#
    );
    assert_eq!(
        text(gemini(&req)),
        r#"{"contents":[{"role":"user","parts":[{"text":"hi \"there\""}]}]}"#
    );
    assert_eq!(
        text(anthropic("m", &req)),
        r#"{"model":"m","max_tokens":1024,"messages":[{"role":"user","content":"hi \"there\""}],"stream":true}"#
    );
}

#[test]
fn minimal_bodies_with_max_tokens_are_unchanged() {
    let req = parsed(r#"{"prompt":"hi","max_tokens":7}"#);
    assert_eq!(
        text(openai("m", &req)),
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true},"max_tokens":7}"#
    );
    assert_eq!(
        text(gemini(&req)),
        r#"{"contents":[{"role":"user","parts":[{"text":"hi"}]}],"generationConfig":{"maxOutputTokens":7}}"#
    );
    assert_eq!(
        text(anthropic("m", &req)),
        r#"{"model":"m","max_tokens":7,"messages":[{"role":"user","content":"hi"}],"stream":true}"#
    );
}

/// OpenAI: `system` is a first system message, a system message stays where it was, every option keeps
/// its name.
#[test]
fn openai_full_body() {
    assert_eq!(
        text(openai("m1", &parsed(FULL))),
        concat!(
            r#"{"model":"m1","messages":["#,
            r#"{"role":"system","content":"Be brief."},"#,
            r#"{"role":"system","content":"Answer in French."},"#,
            r#"{"role":"user","content":"Hi"},"#,
            r#"{"role":"assistant","content":"Salut !"},"#,
            r#"{"role":"user","content":"Weather?"}],"#,
            r#""stream":true,"stream_options":{"include_usage":true},"#,
            r#""temperature":0.7,"top_p":0.9,"stop":["\n\n","END"],"max_tokens":64}"#
        )
    );
}

/// Gemini: `assistant` is `model`, the system texts are one `systemInstruction`, the options are in
/// `generationConfig`.
#[test]
fn gemini_full_body() {
    assert_eq!(
        text(gemini(&parsed(FULL))),
        concat!(
            r#"{"contents":["#,
            r#"{"role":"user","parts":[{"text":"Hi"}]},"#,
            r#"{"role":"model","parts":[{"text":"Salut !"}]},"#,
            r#"{"role":"user","parts":[{"text":"Weather?"}]}],"#,
            r#""systemInstruction":{"parts":[{"text":"Be brief.\n\nAnswer in French."}]},"#,
            r#""generationConfig":{"temperature":0.7,"topP":0.9,"stopSequences":["\n\n","END"],"maxOutputTokens":64}}"#
        )
    );
}

/// Anthropic: the system texts are the top-level `system`, the conversation is user/assistant only.
#[test]
fn anthropic_full_body() {
    assert_eq!(
        text(anthropic("m1", &parsed(FULL))),
        concat!(
            r#"{"model":"m1","max_tokens":64,"system":"Be brief.\n\nAnswer in French.","messages":["#,
            r#"{"role":"user","content":"Hi"},"#,
            r#"{"role":"assistant","content":"Salut !"},"#,
            r#"{"role":"user","content":"Weather?"}],"#,
            r#""temperature":0.7,"top_p":0.9,"stop_sequences":["\n\n","END"],"stream":true}"#
        )
    );
}

/// Each option alone appears alone; a stop string is sent as a one-element array.
#[test]
fn options_alone() {
    let req = parsed(r#"{"prompt":"p","temperature":0}"#);
    assert!(text(openai("m", &req)).ends_with(r#""temperature":0.0}"#));
    assert!(text(gemini(&req)).ends_with(r#""generationConfig":{"temperature":0.0}}"#));
    let req = parsed(r#"{"prompt":"p","top_p":1}"#);
    assert!(text(gemini(&req)).ends_with(r#""generationConfig":{"topP":1.0}}"#));
    assert!(text(anthropic("m", &req)).ends_with(r#""top_p":1.0,"stream":true}"#));
    let req = parsed(r#"{"prompt":"p","stop":"%%%"}"#);
    assert!(text(openai("m", &req)).ends_with(r#""stop":["%%%"]}"#));
    assert!(text(gemini(&req)).ends_with(r#""generationConfig":{"stopSequences":["%%%"]}}"#));
    assert!(text(anthropic("m", &req)).ends_with(r#""stop_sequences":["%%%"],"stream":true}"#));
    let req = parsed(r#"{"prompt":"p","system":"s"}"#);
    assert!(
        text(openai("m", &req)).contains(
            r#""messages":[{"role":"system","content":"s"},{"role":"user","content":"p"}]"#
        )
    );
    assert_eq!(
        text(gemini(&req)),
        r#"{"contents":[{"role":"user","parts":[{"text":"p"}]}],"systemInstruction":{"parts":[{"text":"s"}]}}"#
    );
    assert_eq!(
        text(anthropic("m", &req)),
        r#"{"model":"m","max_tokens":1024,"system":"s","messages":[{"role":"user","content":"p"}],"stream":true}"#
    );
}

/// System messages anywhere become system text, in order, for the providers that take it apart.
#[test]
fn system_messages_are_collected() {
    let req = parsed(
        r#"{"messages":[{"role":"user","content":"u"},{"role":"system","content":"one"},
            {"role":"assistant","content":"a"},{"role":"system","content":"two"}]}"#,
    );
    let g = text(gemini(&req));
    assert!(
        g.contains(r#""systemInstruction":{"parts":[{"text":"one\n\ntwo"}]}"#),
        "{g}"
    );
    assert_eq!(g.matches(r#""role""#).count(), 2, "{g}");
    let a = text(anthropic("m", &req));
    assert!(a.contains(r#""system":"one\n\ntwo""#), "{a}");
    assert!(!a.contains(r#""role":"system""#), "{a}");
    let o = text(openai("m", &req));
    assert_eq!(o.matches(r#""role":"system""#).count(), 2, "{o}");
}

/// What Anthropic would refuse is refused here, naming the rule.
#[test]
fn anthropic_rules() {
    for body in [
        r#"{"messages":[{"role":"assistant","content":"a"},{"role":"user","content":"u"}]}"#,
        r#"{"messages":[{"role":"system","content":"s"},{"role":"assistant","content":"a"}]}"#,
    ] {
        let e = anthropic("m", &parsed(body)).unwrap_err();
        assert_eq!((e.status, e.code), (400, "invalid_request"), "{body}");
        assert!(e.message.contains("\"user\""), "{}", e.message);
    }
    let e = anthropic("m", &parsed(r#"{"prompt":"p","temperature":1.5}"#)).unwrap_err();
    assert_eq!((e.status, e.code), (400, "invalid_request"));
    assert!(e.message.contains("`temperature`"), "{}", e.message);
    // The others take it, and a leading assistant message.
    let req = parsed(r#"{"prompt":"p","temperature":1.5}"#);
    assert!(openai("m", &req).is_ok() && gemini(&req).is_ok());
    let req = parsed(r#"{"messages":[{"role":"assistant","content":"a"}]}"#);
    assert!(openai("m", &req).is_ok() && gemini(&req).is_ok());
    // Consecutive messages of one role are passed on: the Messages API joins them.
    let req =
        parsed(r#"{"messages":[{"role":"user","content":"a"},{"role":"user","content":"b"}]}"#);
    assert!(anthropic("m", &req).is_ok());
}

proptest! {
    /// Whatever a client's texts hold, every body is JSON that gives them back unchanged.
    #[test]
    fn any_text_survives_every_translation(
        texts in proptest::collection::vec("\\PC+", 1..5),
        system in proptest::option::of("\\PC+"),
        stop in proptest::collection::vec("\\PC+", 0..=4),
    ) {
        let messages: Vec<serde_json::Value> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| serde_json::json!({"role": if i % 2 == 0 { "user" } else { "assistant" }, "content": t}))
            .collect();
        let body = serde_json::json!({"messages": messages, "system": system, "stop": stop});
        let Ok(req) = parse_generate(body.to_string().as_bytes()) else {
            // Only whitespace-only texts are refused.
            prop_assert!(texts.iter().any(|t| t.trim().is_empty()));
            return Ok(());
        };
        for bytes in [openai("m", &req), gemini(&req), anthropic("m", &req)] {
            let v: serde_json::Value = serde_json::from_slice(&bytes.unwrap()).unwrap();
            let all = v.to_string();
            for t in texts.iter().chain(&stop) {
                prop_assert!(all.contains(&serde_json::to_string(t).unwrap()));
            }
        }
    }
}
