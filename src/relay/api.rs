//! The client-facing API: what a client may put in the body of `POST /api/v1/generate-stream`.
//!
//! The body is small JSON: `{"prompt": "...", "model"?: "...", "max_tokens"?: n}`. This module turns those
//! bytes into a [`GenerateRequest`] or into an [`ApiError`] that already knows its HTTP status, its
//! machine-readable code and a message for humans, so the connection code can answer bad input without
//! thinking about it (design principle 11: bad input gets a clear answer and costs nothing else).
//!
//! Why parse through [`serde_json::Value`] instead of `#[derive(Deserialize)]` on the struct? Because the
//! error message matters here. A derived deserializer stops at the first problem with a message like
//! "invalid type: integer `5`, expected a string at line 1 column 14"; walking the `Value` by hand lets us
//! tell "not JSON at all" (`invalid_json`) from "JSON of the wrong shape" (`invalid_request`), name the field
//! at fault, and give a missing prompt its own code (`empty_prompt`), which clients can react to.
//!
//! The cost is one tree allocation per request, which is nothing next to the upstream call it triggers.
//! Input size is bounded before we get here (the HTTP layer limits the body), and `serde_json` refuses
//! nesting deeper than 128 levels, so no body can blow the stack.
//!
//! What is *not* checked here: whether the model name is acceptable. That depends on where it is sent, so
//! [`crate::relay::providers::build_request`] validates it, just before it goes into an upstream request line.

use std::fmt;

use serde::Serialize;
use serde_json::{Map, Value};

/// The largest `max_tokens` a client may ask for. Real models stop far below; the cap only keeps absurd
/// numbers from travelling upstream.
pub const MAX_TOKENS_LIMIT: u32 = 1_000_000;

/// One generation, as the client asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerateRequest {
    /// The user's prompt: never empty nor whitespace-only.
    pub prompt: String,
    /// The model to use, if the client chose one; otherwise the route's default applies.
    pub model: Option<String>,
    /// An upper bound on generated tokens, in `1..=MAX_TOKENS_LIMIT`, if the client gave one.
    pub max_tokens: Option<u32>,
}

/// A request the relay refuses, with everything needed to answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status to answer with.
    pub status: u16,
    /// A stable machine-readable code, e.g. `"invalid_json"`.
    pub code: &'static str,
    /// A short human-readable explanation. Never contains secrets; may name a field.
    pub message: String,
}

impl ApiError {
    /// A `400 Bad Request` error with the given code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status: 400,
            code,
            message: message.into(),
        }
    }

    /// The JSON body to answer with: `{"error":{"code":"...","message":"..."}}`.
    ///
    /// Built with serde, so a message holding quotes or newlines still yields valid JSON.
    pub fn json_body(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Body<'a> {
            error: Inner<'a>,
        }
        #[derive(Serialize)]
        struct Inner<'a> {
            code: &'a str,
            message: &'a str,
        }
        let body = Body {
            error: Inner {
                code: self.code,
                message: &self.message,
            },
        };
        // Serializing two strings cannot fail; should it ever, fall back to a body without the message
        // rather than panic.
        serde_json::to_vec(&body).unwrap_or_else(|_| br#"{"error":{"code":"internal"}}"#.to_vec())
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

/// Parse the body of a generation request.
///
/// * not JSON (or not UTF-8) -> 400 `invalid_json`;
/// * not an object, or a field of the wrong type -> 400 `invalid_request`, naming the field;
/// * `prompt` missing, empty or whitespace-only -> 400 `empty_prompt`;
/// * `max_tokens` not an integer in `1..=1_000_000` -> 400 `invalid_request`.
///
/// `null` counts as absent for the optional fields, and unknown fields are ignored, so clients may send
/// extra options that a later version will understand.
pub fn parse_generate(body: &[u8]) -> Result<GenerateRequest, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(
            "invalid_json",
            format!("request body is not valid JSON: {e}"),
        )
    })?;
    let Value::Object(fields) = value else {
        return Err(ApiError::bad_request(
            "invalid_request",
            "request body must be a JSON object",
        ));
    };

    let prompt = match fields.get("prompt") {
        None | Some(Value::Null) => return Err(empty_prompt()),
        Some(Value::String(s)) if s.trim().is_empty() => return Err(empty_prompt()),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(wrong_type("prompt", "a string")),
    };

    let model = optional_string(&fields, "model")?;
    let max_tokens = optional_max_tokens(&fields)?;

    Ok(GenerateRequest {
        prompt,
        model,
        max_tokens,
    })
}

fn empty_prompt() -> ApiError {
    ApiError::bad_request("empty_prompt", "field `prompt` must be a non-empty string")
}

fn wrong_type(field: &str, expected: &str) -> ApiError {
    ApiError::bad_request(
        "invalid_request",
        format!("field `{field}` must be {expected}"),
    )
}

fn optional_string(fields: &Map<String, Value>, name: &str) -> Result<Option<String>, ApiError> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(wrong_type(name, "a string")),
    }
}

fn optional_max_tokens(fields: &Map<String, Value>) -> Result<Option<u32>, ApiError> {
    let expected = "an integer from 1 to 1000000";
    match fields.get("max_tokens") {
        None | Some(Value::Null) => Ok(None),
        // `as_u64` is `None` for negatives and for floats (even `5.0`): both are mistakes worth reporting.
        Some(v) => match v.as_u64() {
            Some(n) if (1..=u64::from(MAX_TOKENS_LIMIT)).contains(&n) => {
                // In range, so the conversion cannot fail; map the impossible error anyway.
                u32::try_from(n)
                    .map(Some)
                    .map_err(|_| wrong_type("max_tokens", expected))
            }
            _ => Err(wrong_type("max_tokens", expected)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn err(body: &str) -> ApiError {
        parse_generate(body.as_bytes()).unwrap_err()
    }

    #[test]
    fn minimal_request() {
        let req = parse_generate(br#"{"prompt":"hello"}"#).unwrap();
        assert_eq!(
            req,
            GenerateRequest {
                prompt: "hello".into(),
                model: None,
                max_tokens: None
            }
        );
    }

    #[test]
    fn full_request_with_unknown_fields() {
        let req = parse_generate(
            br#"{"prompt":" hi there ","model":"gpt-4o","max_tokens":64,"temperature":0.2,"x":{"y":[1]}}"#,
        )
        .unwrap();
        // The prompt is kept as sent: trimming is only used to decide whether it is empty.
        assert_eq!(req.prompt, " hi there ");
        assert_eq!(req.model.as_deref(), Some("gpt-4o"));
        assert_eq!(req.max_tokens, Some(64));
    }

    #[test]
    fn nulls_count_as_absent() {
        let req = parse_generate(br#"{"prompt":"p","model":null,"max_tokens":null}"#).unwrap();
        assert_eq!(req.model, None);
        assert_eq!(req.max_tokens, None);
    }

    #[test]
    fn max_tokens_bounds() {
        assert_eq!(
            parse_generate(br#"{"prompt":"p","max_tokens":1}"#)
                .unwrap()
                .max_tokens,
            Some(1)
        );
        let top = parse_generate(br#"{"prompt":"p","max_tokens":1000000}"#).unwrap();
        assert_eq!(top.max_tokens, Some(1_000_000));
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
            let e = err(&format!(r#"{{"prompt":"p","max_tokens":{bad}}}"#));
            assert_eq!(
                (e.status, e.code),
                (400, "invalid_request"),
                "max_tokens {bad}"
            );
            assert!(e.message.contains("max_tokens"), "{}", e.message);
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
            let e = err(body);
            assert_eq!((e.status, e.code), (400, "invalid_request"), "body {body}");
            assert!(e.message.contains("object"));
        }
    }

    #[test]
    fn wrong_field_types_name_the_field() {
        for (body, field) in [
            (r#"{"prompt":42}"#, "prompt"),
            (r#"{"prompt":["a"]}"#, "prompt"),
            (r#"{"prompt":"p","model":7}"#, "model"),
            (r#"{"prompt":"p","model":{}}"#, "model"),
        ] {
            let e = err(body);
            assert_eq!((e.status, e.code), (400, "invalid_request"), "body {body}");
            assert!(e.message.contains(&format!("`{field}`")), "{}", e.message);
        }
    }

    #[test]
    fn empty_prompts() {
        for body in [
            r#"{}"#,
            r#"{"prompt":null}"#,
            r#"{"prompt":""}"#,
            r#"{"prompt":" \n\t\u3000"}"#,
        ] {
            let e = err(body);
            assert_eq!((e.status, e.code), (400, "empty_prompt"), "body {body}");
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

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse_generate(&body);
        }

        #[test]
        fn never_panics_on_json_like_text(body in r#"[{}\[\]":,0-9a-z_ .eE+\-\\]{0,64}"#) {
            let _ = parse_generate(body.as_bytes());
        }

        #[test]
        fn any_non_blank_prompt_round_trips(prompt in "\\PC*", max in 1u32..=MAX_TOKENS_LIMIT) {
            let body = serde_json::json!({"prompt": prompt, "max_tokens": max}).to_string();
            match parse_generate(body.as_bytes()) {
                Ok(req) => {
                    prop_assert_eq!(req.prompt, prompt);
                    prop_assert_eq!(req.max_tokens, Some(max));
                }
                Err(e) => {
                    prop_assert!(prompt.trim().is_empty());
                    prop_assert_eq!(e.code, "empty_prompt");
                }
            }
        }
    }
}
