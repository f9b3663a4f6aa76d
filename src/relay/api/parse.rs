//! The body of `POST /api/v1/generate-stream`, read field by field: every way it can be wrong has its own
//! answer, naming the field at fault.

use serde_json::{Map, Value};

use super::{
    ACCEPTED_FIELDS, ApiError, GenerateRequest, Input, MAX_STOP_SEQUENCES, MAX_TOKENS_LIMIT,
    Message, Role,
};

/// The fields a message may hold.
const MESSAGE_FIELDS: [&str; 2] = ["role", "content"];

/// Parse the body of a generation request.
///
/// * not JSON (or not UTF-8) -> 400 `invalid_json`;
/// * a field that is not one of [`ACCEPTED_FIELDS`] (or, in a message, not `role`/`content`) -> 400
///   `unknown_field`, naming it: checked first, so a misspelt `promt` is reported as such;
/// * not an object, a field of the wrong type or out of range, both `prompt` and `messages` -> 400
///   `invalid_request`, naming the field;
/// * neither `prompt` nor `messages` -> 400 `missing_prompt`;
/// * a `prompt` or message `content` that is empty or whitespace-only, no messages, or only system
///   messages -> 400 `empty_prompt`.
///
/// `null` counts as absent, for every field.
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
    refuse_unknown(&fields, &ACCEPTED_FIELDS, "")?;

    let input = match (present(&fields, "prompt"), present(&fields, "messages")) {
        (None, None) => {
            return Err(ApiError::bad_request(
                "missing_prompt",
                "field `prompt` (or `messages`) is missing",
            ));
        }
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "invalid_request",
                "fields `prompt` and `messages` cannot both be given: send one of them",
            ));
        }
        (Some(prompt), None) => Input::Prompt(text(prompt, "prompt")?),
        (None, Some(messages)) => Input::Messages(parse_messages(messages)?),
    };

    Ok(GenerateRequest {
        input,
        system: optional_string(&fields, "system")?.filter(|s| !s.trim().is_empty()),
        model: optional_string(&fields, "model")?,
        temperature: optional_number(&fields, "temperature", 2.0)?,
        top_p: optional_number(&fields, "top_p", 1.0)?,
        stop: parse_stop(present(&fields, "stop"))?,
        max_tokens: optional_max_tokens(&fields)?,
    })
}

/// `fields[name]`, unless absent or `null`.
fn present<'a>(fields: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    fields.get(name).filter(|v| !v.is_null())
}

/// 400 `unknown_field` if `fields` holds a name not in `accepted`. `at` prefixes the names in the message
/// (`"messages[2]."`), so the client can find the field.
fn refuse_unknown(
    fields: &Map<String, Value>,
    accepted: &[&str],
    at: &str,
) -> Result<(), ApiError> {
    let unknown: Vec<String> = fields
        .keys()
        .filter(|k| !accepted.contains(&k.as_str()))
        .map(|k| format!("`{at}{}`", shown(k)))
        .collect();
    let (first, rest) = match unknown.split_first() {
        None => return Ok(()),
        Some(split) => split,
    };
    let named = if rest.is_empty() {
        format!("unknown field {first}")
    } else {
        format!("unknown fields {}", unknown.join(", "))
    };
    Err(ApiError::bad_request(
        "unknown_field",
        format!("{named}; accepted: {}", accepted.join(", ")),
    ))
}

/// A client's field name, fit to quote in a message: at most 64 characters, control characters escaped.
fn shown(name: &str) -> String {
    const MAX: usize = 64;
    let mut out: String = name
        .chars()
        .take(MAX)
        .flat_map(char::escape_debug)
        .collect();
    if name.chars().nth(MAX).is_some() {
        out.push_str("...");
    }
    out
}

fn wrong_type(field: &str, expected: &str) -> ApiError {
    ApiError::bad_request(
        "invalid_request",
        format!("field `{field}` must be {expected}"),
    )
}

/// A prompt or message text: a string, not empty nor whitespace-only (but kept as sent).
fn text(value: &Value, field: &str) -> Result<String, ApiError> {
    match value {
        Value::String(s) if s.trim().is_empty() => Err(ApiError::bad_request(
            "empty_prompt",
            format!("field `{field}` must be a non-empty string"),
        )),
        Value::String(s) => Ok(s.clone()),
        _ => Err(wrong_type(field, "a string")),
    }
}

fn parse_messages(value: &Value) -> Result<Vec<Message>, ApiError> {
    let shape = "an array of {\"role\": ..., \"content\": ...} objects";
    let Value::Array(items) = value else {
        return Err(wrong_type("messages", shape));
    };
    let mut messages = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let Value::Object(fields) = item else {
            return Err(wrong_type(
                &format!("messages[{i}]"),
                "an object with `role` and `content`",
            ));
        };
        refuse_unknown(fields, &MESSAGE_FIELDS, &format!("messages[{i}]."))?;
        let role = present(fields, "role")
            .and_then(Value::as_str)
            .and_then(Role::from_name)
            .ok_or_else(|| {
                wrong_type(
                    &format!("messages[{i}].role"),
                    "\"user\", \"assistant\" or \"system\"",
                )
            })?;
        let field = format!("messages[{i}].content");
        let content = match present(fields, "content") {
            Some(v) => text(v, &field)?,
            None => return Err(wrong_type(&field, "a non-empty string")),
        };
        messages.push(Message { role, content });
    }
    if !messages.iter().any(|m| m.role != Role::System) {
        let message = if messages.is_empty() {
            "field `messages` must hold at least one message"
        } else {
            "field `messages` must hold at least one user or assistant message"
        };
        return Err(ApiError::bad_request("empty_prompt", message));
    }
    Ok(messages)
}

fn optional_string(fields: &Map<String, Value>, name: &str) -> Result<Option<String>, ApiError> {
    match present(fields, name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(wrong_type(name, "a string")),
    }
}

/// A number in `0..=max`: integers count (`1` is `1.0`).
fn optional_number(
    fields: &Map<String, Value>,
    name: &str,
    max: f64,
) -> Result<Option<f64>, ApiError> {
    match present(fields, name) {
        None => Ok(None),
        Some(v) => match v.as_f64() {
            // `+ 0.0` turns a `-0` into `0`, which every provider's parser takes.
            Some(n) if (0.0..=max).contains(&n) => Ok(Some(n + 0.0)),
            _ => Err(wrong_type(name, &format!("a number from 0 to {max}"))),
        },
    }
}

/// `stop`: a string, or an array of up to [`MAX_STOP_SEQUENCES`] strings; none may be empty. An empty
/// array is the same as none.
fn parse_stop(value: Option<&Value>) -> Result<Vec<String>, ApiError> {
    let bad = || {
        wrong_type(
            "stop",
            &format!(
                "a non-empty string or an array of at most {MAX_STOP_SEQUENCES} non-empty strings"
            ),
        )
    };
    let one = |v: &Value| match v {
        Value::String(s) if !s.is_empty() => Ok(s.clone()),
        _ => Err(bad()),
    };
    match value {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) if items.len() <= MAX_STOP_SEQUENCES => {
            items.iter().map(one).collect()
        }
        Some(Value::Array(_)) => Err(bad()),
        Some(v) => Ok(vec![one(v)?]),
    }
}

fn optional_max_tokens(fields: &Map<String, Value>) -> Result<Option<u32>, ApiError> {
    let expected = "an integer from 1 to 1000000";
    match present(fields, "max_tokens") {
        None => Ok(None),
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
