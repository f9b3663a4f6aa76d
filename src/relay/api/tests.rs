//! Tests of `api`: every field of the simple route's body, and every way to get it wrong.
//!
//! Test code only: its parent declares it `#[cfg(test)]`.

use super::*;
use proptest::prelude::*;
use serde_json::Value;

fn ok(body: &str) -> GenerateRequest {
    parse_generate(body.as_bytes()).unwrap_or_else(|e| panic!("{body}: {e}"))
}

fn err(body: &str) -> ApiError {
    parse_generate(body.as_bytes()).unwrap_err()
}

/// Asserts a 400 with `code` whose message holds `needle`.
fn refused(body: &str, code: &str, needle: &str) {
    let e = err(body);
    assert_eq!((e.status, e.code), (400, code), "{body}: {e}");
    assert!(e.message.contains(needle), "{body}: {e}");
}

fn msg(role: Role, content: &str) -> Message {
    Message {
        role,
        content: content.into(),
    }
}

#[test]
fn minimal_request() {
    assert_eq!(
        ok(r#"{"prompt":"hello"}"#),
        GenerateRequest::from_prompt("hello")
    );
}

#[test]
fn every_field() {
    let req = ok(
        r#"{"prompt":" hi there ","system":"Be brief.","model":"gpt-4o","temperature":0.2,
        "top_p":0.95,"stop":["\n","END"],"max_tokens":64}"#,
    );
    assert_eq!(
        req,
        GenerateRequest {
            // The prompt is kept as sent: trimming is only used to decide whether it is empty.
            input: Input::Prompt(" hi there ".into()),
            system: Some("Be brief.".into()),
            model: Some("gpt-4o".into()),
            temperature: Some(0.2),
            top_p: Some(0.95),
            stop: vec!["\n".into(), "END".into()],
            max_tokens: Some(64),
        }
    );
}

#[test]
fn messages_instead_of_prompt() {
    let req = ok(
        r#"{"messages":[{"role":"system","content":"s"},{"role":"user","content":"u"},
        {"content":"a","role":"assistant"},{"role":"user","content":" again "}]}"#,
    );
    assert_eq!(
        req.input,
        Input::Messages(vec![
            msg(Role::System, "s"),
            msg(Role::User, "u"),
            msg(Role::Assistant, "a"),
            msg(Role::User, " again "),
        ])
    );
    let turns: Vec<(Role, &str)> = req.turns().collect();
    assert_eq!(turns[0], (Role::System, "s"));
    assert_eq!(turns.len(), 4);
    assert_eq!(req.system_text().as_deref(), Some("s"));
}

#[test]
fn system_text_joins_system_and_system_messages() {
    let req = ok(
        r#"{"system":"one","messages":[{"role":"user","content":"u"},
        {"role":"system","content":"two"},{"role":"system","content":"three"}]}"#,
    );
    assert_eq!(req.system_text().as_deref(), Some("one\n\ntwo\n\nthree"));
    assert_eq!(ok(r#"{"prompt":"p"}"#).system_text(), None);
    assert_eq!(
        ok(r#"{"prompt":"p"}"#).turns().collect::<Vec<_>>(),
        [(Role::User, "p")]
    );
    // A blank system is no system.
    for blank in [r#""""#, r#"" \n ""#, "null"] {
        assert_eq!(
            ok(&format!(r#"{{"prompt":"p","system":{blank}}}"#)).system,
            None
        );
    }
}

#[test]
fn nulls_count_as_absent() {
    let req = ok(
        r#"{"prompt":"p","messages":null,"system":null,"model":null,"temperature":null,
        "top_p":null,"stop":null,"max_tokens":null}"#,
    );
    assert_eq!(req, GenerateRequest::from_prompt("p"));
    let req = ok(r#"{"prompt":null,"messages":[{"role":"user","content":"m"}]}"#);
    assert_eq!(req.input, Input::Messages(vec![msg(Role::User, "m")]));
}

#[test]
fn unknown_fields_are_named() {
    refused(
        r#"{"prompt":"p","temprature":0.5}"#,
        "unknown_field",
        "unknown field `temprature`; accepted: prompt, messages, system, model, temperature, top_p, stop, max_tokens",
    );
    // Checked first: a misspelt prompt is a typo, not a missing prompt.
    refused(r#"{"promt":"p"}"#, "unknown_field", "`promt`");
    let e = err(r#"{"b":1,"prompt":"p","a":2}"#);
    assert_eq!(e.code, "unknown_field");
    assert!(e.message.starts_with("unknown fields `"), "{e}");
    assert!(
        e.message.contains("`a`") && e.message.contains("`b`"),
        "{e}"
    );
    // Even when null.
    refused(
        r#"{"prompt":"p","stream":null}"#,
        "unknown_field",
        "`stream`",
    );
    // Fields inside a message.
    refused(
        r#"{"messages":[{"role":"user","content":"c","name":"bob"}]}"#,
        "unknown_field",
        "unknown field `messages[0].name`; accepted: role, content",
    );
    // A name is quoted on one line and cut short.
    let e = err(&format!(r#"{{"prompt":"p","a\nb{}":1}}"#, "x".repeat(500)));
    assert!(e.message.contains("`a\\nbxxx"), "{e}");
    assert!(e.message.len() < 300, "{e}");
}

#[test]
fn missing_prompt_is_not_empty_prompt() {
    for body in [
        "{}",
        r#"{"prompt":null}"#,
        r#"{"model":"m"}"#,
        r#"{"prompt":null,"messages":null}"#,
    ] {
        refused(
            body,
            "missing_prompt",
            "field `prompt` (or `messages`) is missing",
        );
    }
    for body in [r#"{"prompt":""}"#, r#"{"prompt":" \n\t\u3000"}"#] {
        refused(body, "empty_prompt", "`prompt`");
    }
}

#[test]
fn prompt_and_messages_are_exclusive() {
    refused(
        r#"{"prompt":"p","messages":[{"role":"user","content":"m"}]}"#,
        "invalid_request",
        "`prompt` and `messages`",
    );
}

#[test]
fn bad_messages() {
    for (body, code, needle) in [
        (r#"{"messages":[]}"#, "empty_prompt", "at least one message"),
        (
            r#"{"messages":[{"role":"system","content":"s"}]}"#,
            "empty_prompt",
            "user or assistant",
        ),
        (r#"{"messages":"hi"}"#, "invalid_request", "`messages`"),
        (
            r#"{"messages":{"role":"user"}}"#,
            "invalid_request",
            "`messages`",
        ),
        (r#"{"messages":["hi"]}"#, "invalid_request", "`messages[0]`"),
        (
            r#"{"messages":[{"role":"user","content":"a"},{"role":"tool","content":"b"}]}"#,
            "invalid_request",
            "`messages[1].role` must be \"user\", \"assistant\" or \"system\"",
        ),
        (
            r#"{"messages":[{"role":"User","content":"a"}]}"#,
            "invalid_request",
            "`messages[0].role`",
        ),
        (
            r#"{"messages":[{"content":"a"}]}"#,
            "invalid_request",
            "`messages[0].role`",
        ),
        (
            r#"{"messages":[{"role":null,"content":"a"}]}"#,
            "invalid_request",
            "`messages[0].role`",
        ),
        (
            r#"{"messages":[{"role":7,"content":"a"}]}"#,
            "invalid_request",
            "`messages[0].role`",
        ),
        (
            r#"{"messages":[{"role":"user"}]}"#,
            "invalid_request",
            "`messages[0].content`",
        ),
        (
            r#"{"messages":[{"role":"user","content":null}]}"#,
            "invalid_request",
            "`messages[0].content`",
        ),
        (
            r#"{"messages":[{"role":"user","content":[{"type":"text","text":"a"}]}]}"#,
            "invalid_request",
            "`messages[0].content` must be a string",
        ),
        (
            r#"{"messages":[{"role":"user","content":" "}]}"#,
            "empty_prompt",
            "`messages[0].content`",
        ),
    ] {
        refused(body, code, needle);
    }
}

#[test]
fn temperature_and_top_p_ranges() {
    for (field, max) in [("temperature", 2.0), ("top_p", 1.0)] {
        for (value, want) in [("0", 0.0), ("-0.0", 0.0), ("0.5", 0.5), ("1", 1.0)] {
            let req = ok(&format!(r#"{{"prompt":"p","{field}":{value}}}"#));
            let got = if field == "temperature" {
                req.temperature
            } else {
                req.top_p
            };
            assert_eq!(got, Some(want), "{field} {value}");
            assert!(got.is_some_and(|g| g.is_sign_positive()), "{field} {value}");
        }
        let top = ok(&format!(r#"{{"prompt":"p","{field}":{max}}}"#));
        assert_eq!(top.temperature.or(top.top_p), Some(max));
        for bad in [
            "-0.01", "-1", "2.01", "3", "1e300", "\"0.5\"", "true", "[1]", "{}",
        ] {
            refused(
                &format!(r#"{{"prompt":"p","{field}":{bad}}}"#),
                "invalid_request",
                &format!("field `{field}` must be a number from 0 to {max}"),
            );
        }
    }
    refused(
        r#"{"prompt":"p","top_p":1.5}"#,
        "invalid_request",
        "`top_p`",
    );
    assert_eq!(
        ok(r#"{"prompt":"p","temperature":1.5}"#).temperature,
        Some(1.5)
    );
}

#[test]
fn stop_variants() {
    assert_eq!(ok(r#"{"prompt":"p","stop":"END"}"#).stop, ["END"]);
    assert_eq!(ok(r#"{"prompt":"p","stop":[" "]}"#).stop, [" "]);
    assert_eq!(
        ok(r#"{"prompt":"p","stop":["a","b","c","d"]}"#).stop,
        ["a", "b", "c", "d"]
    );
    assert!(ok(r#"{"prompt":"p","stop":[]}"#).stop.is_empty());
    for bad in [
        r#""""#,
        r#"[""]"#,
        r#"["a",""]"#,
        r#"["a","b","c","d","e"]"#,
        r#"[null]"#,
        r#"[1]"#,
        r#"[["a"]]"#,
        "5",
        "true",
        "{}",
    ] {
        refused(
            &format!(r#"{{"prompt":"p","stop":{bad}}}"#),
            "invalid_request",
            "field `stop` must be a non-empty string or an array of at most 4 non-empty strings",
        );
    }
}

#[test]
fn max_tokens_bounds() {
    assert_eq!(ok(r#"{"prompt":"p","max_tokens":1}"#).max_tokens, Some(1));
    assert_eq!(
        ok(r#"{"prompt":"p","max_tokens":1000000}"#).max_tokens,
        Some(1_000_000)
    );
    for bad in [
        "0",
        "1000001",
        "-1",
        "5.0",
        "1e3",
        "\"10\"",
        "true",
        "[1]",
        "18446744073709551616",
    ] {
        refused(
            &format!(r#"{{"prompt":"p","max_tokens":{bad}}}"#),
            "invalid_request",
            "`max_tokens`",
        );
    }
}

#[test]
fn invalid_json() {
    for body in [
        "",
        "{",
        "prompt=hello",
        "{\"prompt\":\"a\"} trailing",
        "\u{feff}{}",
    ] {
        let e = err(body);
        assert_eq!((e.status, e.code), (400, "invalid_json"), "body {body:?}");
    }
    // Not UTF-8 at all.
    let e = parse_generate(b"{\"prompt\":\"\xff\"}").unwrap_err();
    assert_eq!(e.code, "invalid_json");
}

#[test]
fn not_an_object() {
    for body in ["[]", "\"hello\"", "42", "null", "true"] {
        refused(body, "invalid_request", "object");
    }
}

#[test]
fn wrong_field_types_name_the_field() {
    for (body, field) in [
        (r#"{"prompt":42}"#, "prompt"),
        (r#"{"prompt":["a"]}"#, "prompt"),
        (r#"{"prompt":"p","model":7}"#, "model"),
        (r#"{"prompt":"p","model":{}}"#, "model"),
        (r#"{"prompt":"p","system":["s"]}"#, "system"),
        (r#"{"prompt":"p","system":1}"#, "system"),
    ] {
        refused(body, "invalid_request", &format!("`{field}`"));
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let body = format!(
        "{{\"prompt\":\"p\",\"x\":{}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert_eq!(err(&body).code, "invalid_json");
}

#[test]
fn error_body_is_json() {
    let e = ApiError::bad_request("invalid_request", "field `x` \"quoted\"\nnewline");
    let v: Value = serde_json::from_slice(&e.json_body()).unwrap();
    assert_eq!(v["error"]["code"], "invalid_request");
    assert_eq!(v["error"]["message"], "field `x` \"quoted\"\nnewline");
    assert_eq!(
        e.to_string(),
        "400 invalid_request: field `x` \"quoted\"\nnewline"
    );
}

#[test]
fn roles_by_name() {
    for role in [Role::User, Role::Assistant, Role::System] {
        assert_eq!(Role::from_name(role.as_str()), Some(role));
    }
    assert_eq!(Role::from_name("model"), None);
}

proptest! {
    #[test]
    fn never_panics_on_arbitrary_bytes(body in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse_generate(&body);
    }

    #[test]
    fn never_panics_on_json_like_text(body in r#"[{}\[\]":,0-9a-z_ .eE+\-\\]{0,64}"#) {
        let _ = parse_generate(body.as_bytes());
    }

    /// Bodies built from the real field names, with values of every type: never a panic, and every refusal
    /// is a 400 with one of the documented codes.
    #[test]
    fn never_panics_on_any_mix_of_fields(
        fields in proptest::collection::vec(
            (
                prop_oneof![
                    proptest::sample::select(ACCEPTED_FIELDS.to_vec()).prop_map(str::to_string),
                    "[a-z_]{1,8}",
                ],
                prop_oneof![
                    Just(Value::Null),
                    any::<bool>().prop_map(Value::from),
                    any::<f64>().prop_map(Value::from),
                    any::<i64>().prop_map(Value::from),
                    "\\PC{0,8}".prop_map(Value::from),
                    proptest::collection::vec("\\PC{0,4}", 0..6).prop_map(Value::from),
                    (proptest::sample::select(vec!["user", "assistant", "system", "x"]), "\\PC{0,4}")
                        .prop_map(|(r, c)| serde_json::json!([{"role": r, "content": c}])),
                ],
            ),
            0..6,
        )
    ) {
        let body: serde_json::Map<String, Value> = fields.into_iter().collect();
        match parse_generate(Value::Object(body).to_string().as_bytes()) {
            Ok(req) => {
                prop_assert!(req.turns().any(|(role, _)| role != Role::System));
                prop_assert!(req.stop.len() <= MAX_STOP_SEQUENCES);
            }
            Err(e) => {
                prop_assert_eq!(e.status, 400);
                prop_assert!(["invalid_request", "unknown_field", "missing_prompt", "empty_prompt"].contains(&e.code), "{}", e);
            }
        }
    }

    #[test]
    fn any_non_blank_prompt_round_trips(prompt in "\\PC*", max in 1u32..=MAX_TOKENS_LIMIT) {
        let body = serde_json::json!({"prompt": prompt, "max_tokens": max}).to_string();
        match parse_generate(body.as_bytes()) {
            Ok(req) => {
                prop_assert_eq!(req.input, Input::Prompt(prompt));
                prop_assert_eq!(req.max_tokens, Some(max));
            }
            Err(e) => {
                prop_assert!(prompt.trim().is_empty());
                prop_assert_eq!(e.code, "empty_prompt");
            }
        }
    }
}
