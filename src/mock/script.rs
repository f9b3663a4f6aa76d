//! What the built-in mock LLM says: a deterministic, sans-IO script of SSE events.
//!
//! The mock upstream exists so that tests and benchmarks can exercise the relay without a network, a key or
//! a GPU. It answers a generation request with one SSE event per chunk, one chunk per tick. This module
//! decides *what* those events are; the mock server (sockets, timers, chunked framing) decides *when* to
//! send them. Keeping the two apart means the script can be tested byte for byte, and the same script can
//! be replayed by a tokio baseline so both relays are measured against identical upstream traffic.
//!
//! Everything here is deterministic: no timestamps, no random ids. The tokens are the prompt's own words,
//! cycled (`"hello world"` -> `"hello"`, `" world"`, `" hello"`, ...; see [`Generation`]), so a test can
//! send a prompt and know exactly what text must come out of the relay: [`MockScript::expected_text`].
//!
//! A script speaks one [`Dialect`]; each provider module renders its events:
//!
//! * **OpenAI Chat Completions** ([`super::openai`]): `chat.completion.chunk` objects, each as
//!   `data: {json}\n\n`, then a chunk with `finish_reason: "stop"`, (with `stream_options.include_usage`, a
//!   chunk with `usage` and no choices), then the `data: [DONE]` sentinel; legacy Completions alike;
//! * **OpenAI Responses** ([`super::responses`]): named events, `response.created` to `response.completed`;
//! * **Gemini** ([`super::gemini`]): `GenerateContentResponse` objects, each as `data: {json}\r\n\r\n`
//!   (Gemini really separates events with CRLF CRLF, and an SSE parser that only knows `\n\n` should fail on
//!   the mock as it would in production); the last event carries `finishReason: "STOP"` and
//!   `usageMetadata`;
//! * **Anthropic Messages** ([`super::anthropic`]): named events, `message_start` to `message_stop`.
//!
//! The mock server picks a request's dialect from its path (`answer`). [`MockFormat`] (the `--format`
//! option) names one of the two chat dialects the relay speaks, and [`MockScript::new`] makes a script in it,
//! which is how tests and baselines know what the mock sends.

use std::fmt;
use std::str::FromStr;

use serde_json::{Map, Value};

pub use super::generation::FALLBACK_WORD;
use super::generation::Generation;
use super::{anthropic, gemini, openai, responses};

/// The message of an in-stream error event (`error-after`).
pub const STREAM_ERROR: &str = "injected by the mock upstream: error-after";

/// Which provider the mock imitates where a path does not say (`--format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MockFormat {
    /// OpenAI Chat Completions streaming.
    OpenAi,
    /// Gemini `streamGenerateContent?alt=sse`.
    Gemini,
}

impl FromStr for MockFormat {
    type Err = String;

    /// `"openai"` or `"gemini"`, ignoring ASCII case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("openai") {
            Ok(MockFormat::OpenAi)
        } else if s.eq_ignore_ascii_case("gemini") {
            Ok(MockFormat::Gemini)
        } else {
            Err(format!(
                "unknown mock format {s:?}: expected \"openai\" or \"gemini\""
            ))
        }
    }
}

impl fmt::Display for MockFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MockFormat::OpenAi => "openai",
            MockFormat::Gemini => "gemini",
        })
    }
}

/// What the mock understood of a request it received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockRequest {
    /// The text the "model" answers: the last user turn.
    pub prompt: String,
    /// The client's limit on generated tokens, if any.
    pub max_tokens: Option<u32>,
}

/// What a provider endpoint understood of a generation request: the prompt and limit, and how to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockAsk {
    pub request: MockRequest,
    /// `stream: true` (or a streaming path): answer with SSE events, else with one JSON body.
    pub stream: bool,
    /// OpenAI's `stream_options.include_usage`: a last chunk with `usage` before `[DONE]`.
    pub include_usage: bool,
}

/// Parse a generation request body in either provider's shape; the shape is recognised by its fields, so
/// one mock can serve both APIs.
///
/// * OpenAI (`messages` present): the prompt is the `content` of the last message with role `"user"` (a
///   string, or an array of parts whose `text` fields are concatenated); the limit is
///   `max_completion_tokens`, else `max_tokens`.
/// * Gemini (`contents` present): the prompt is the `parts[].text` of the last content whose role is
///   `"user"` (or absent, which Gemini treats as user), concatenated; the limit is
///   `generationConfig.maxOutputTokens`.
///
/// Limits above `u32::MAX` are clamped to it. Anything else malformed is an `Err` describing the problem.
pub fn parse_mock_request(body: &[u8]) -> Result<MockRequest, String> {
    parse_object(&json_object(body)?)
}

/// [`parse_mock_request`] of a body already parsed into an object.
pub(super) fn parse_object(obj: &Map<String, Value>) -> Result<MockRequest, String> {
    if let Some(messages) = obj.get("messages") {
        parse_openai(obj, messages)
    } else if let Some(contents) = obj.get("contents") {
        parse_gemini(obj, contents)
    } else {
        Err("expected `messages` (OpenAI) or `contents` (Gemini) in the request body".into())
    }
}

fn parse_openai(obj: &Map<String, Value>, messages: &Value) -> Result<MockRequest, String> {
    let prompt = last_user_text(messages)?;
    let max_tokens = match obj.get("max_completion_tokens") {
        Some(v) if !v.is_null() => token_limit(v, "max_completion_tokens")?,
        _ => match obj.get("max_tokens") {
            Some(v) => token_limit(v, "max_tokens")?,
            None => None,
        },
    };
    Ok(MockRequest { prompt, max_tokens })
}

fn parse_gemini(obj: &Map<String, Value>, contents: &Value) -> Result<MockRequest, String> {
    let contents = contents.as_array().ok_or("`contents` must be an array")?;
    let user = contents
        .iter()
        .rev()
        // Gemini's `role` is optional and means "user" when left out.
        .find(|c| match c.get("role") {
            None | Some(Value::Null) => true,
            Some(role) => role.as_str() == Some("user"),
        })
        .ok_or("`contents` has no content with role \"user\"")?;
    let parts = user
        .get("parts")
        .and_then(Value::as_array)
        .ok_or("a content's `parts` must be an array")?;
    let prompt = concat_texts(parts)?;
    let max_tokens = match obj.get("generationConfig") {
        None | Some(Value::Null) => None,
        Some(Value::Object(config)) => match config.get("maxOutputTokens") {
            Some(v) => token_limit(v, "generationConfig.maxOutputTokens")?,
            None => None,
        },
        Some(_) => return Err("`generationConfig` must be an object".into()),
    };
    Ok(MockRequest { prompt, max_tokens })
}

/// The text of the last message with role `"user"` in `messages` (OpenAI's and Anthropic's shape): its
/// `content` string, or the `text` of its content parts (`[{"type":"text","text":"..."}, {"type":"image_url",
/// ...}]`) put together.
pub(super) fn last_user_text(messages: &Value) -> Result<String, String> {
    let messages = messages.as_array().ok_or("`messages` must be an array")?;
    let user = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .ok_or("`messages` has no message with role \"user\"")?;
    match user.get("content") {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => concat_texts(parts),
        _ => Err("the last user message's `content` must be a string or an array of parts".into()),
    }
}

/// `stream` of a request body: absent or `null` means `false`, as the real APIs default.
pub(super) fn stream_flag(obj: &Map<String, Value>) -> Result<bool, String> {
    match obj.get("stream") {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err("`stream` must be a boolean".into()),
    }
}

/// OpenAI's `stream_options.include_usage`.
pub(super) fn include_usage(obj: &Map<String, Value>) -> bool {
    obj.get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// A request body as a JSON object, or why not.
pub(super) fn json_object(body: &[u8]) -> Result<Map<String, Value>, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("request body is not valid JSON: {e}"))?;
    match value {
        Value::Object(obj) => Ok(obj),
        _ => Err("request body must be a JSON object".into()),
    }
}

/// Concatenate the `text` of every part that has one; parts without text (images, tool calls) are skipped.
pub(super) fn concat_texts(parts: &[Value]) -> Result<String, String> {
    let mut text = String::new();
    for part in parts {
        match part.get("text") {
            Some(Value::String(s)) => text.push_str(s),
            None => {}
            Some(_) => return Err("a part's `text` must be a string".into()),
        }
    }
    Ok(text)
}

pub(super) fn token_limit(v: &Value, name: &str) -> Result<Option<u32>, String> {
    if v.is_null() {
        return Ok(None);
    }
    let n = v
        .as_u64()
        .ok_or_else(|| format!("`{name}` must be a non-negative integer"))?;
    Ok(Some(u32::try_from(n).unwrap_or(u32::MAX)))
}

/// The event shape of a streamed answer: which provider, which API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// OpenAI `POST /v1/chat/completions` with `stream: true`.
    OpenAiChat { include_usage: bool },
    /// OpenAI's legacy `POST /v1/completions` with `stream: true`.
    OpenAiCompletion { include_usage: bool },
    /// OpenAI `POST /v1/responses` with `stream: true` (the limit is echoed in the response object).
    OpenAiResponses { max_output_tokens: Option<u32> },
    /// Gemini `streamGenerateContent?alt=sse`.
    Gemini,
    /// Anthropic `POST /v1/messages` with `stream: true`.
    Anthropic,
}

impl From<MockFormat> for Dialect {
    fn from(format: MockFormat) -> Self {
        match format {
            MockFormat::OpenAi => Dialect::OpenAiChat {
                include_usage: false,
            },
            MockFormat::Gemini => Dialect::Gemini,
        }
    }
}

/// The events the mock sends for one request. Cheap to build; event bytes are produced on demand, one at a
/// time, so a stream of a million tokens costs no more memory than a stream of ten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockScript {
    dialect: Dialect,
    generation: Generation,
}

impl MockScript {
    /// A script of `tokens` tokens in `format`'s chat stream, or fewer when the request's `max_tokens` is
    /// smaller.
    pub fn new(format: MockFormat, req: &MockRequest, tokens: u32) -> Self {
        MockScript::in_dialect(format.into(), req, tokens)
    }

    /// The same, in any dialect.
    pub fn in_dialect(dialect: Dialect, req: &MockRequest, tokens: u32) -> Self {
        MockScript {
            dialect,
            generation: Generation::new(&req.prompt, req.max_tokens, tokens),
        }
    }

    /// What the script says.
    pub fn generation(&self) -> &Generation {
        &self.generation
    }

    /// Number of token events (the generated length), not counting the opening and closing events.
    pub fn token_count(&self) -> u32 {
        self.generation.token_count()
    }

    /// Number of events, including the opening and closing ones.
    ///
    /// OpenAI: one per token, then the `finish_reason: "stop"` chunk, then `[DONE]`, so `tokens + 2` (one
    /// more with `include_usage`). Gemini: one per token, the last one carrying `finishReason` (so at least
    /// one event even for zero tokens, which then has empty text). Responses: `tokens + 8`. Anthropic:
    /// `tokens + 6`.
    pub fn len(&self) -> usize {
        let g = &self.generation;
        match self.dialect {
            Dialect::OpenAiChat { include_usage } | Dialect::OpenAiCompletion { include_usage } => {
                openai::event_count(g, include_usage)
            }
            Dialect::OpenAiResponses { .. } => responses::event_count(g),
            Dialect::Gemini => gemini::event_count(g),
            Dialect::Anthropic => anthropic::event_count(g),
        }
    }

    /// Always false: every script ends with at least one closing event. (Provided because clippy expects
    /// `is_empty` next to `len`.)
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Token number `i` (counting from 0); see [`Generation::token`].
    pub fn token(&self, i: usize) -> String {
        self.generation.token(i)
    }

    /// All the generated text: what a client of the relay should receive, concatenated.
    pub fn expected_text(&self) -> String {
        self.generation.text()
    }

    /// The index of the event that carries the first token: the events before it open the stream
    /// (Anthropic's `message_start`, the Responses API's `response.created`, ...). Faults count tokens
    /// from here (`fault::Cut`).
    pub fn first_token_event(&self) -> usize {
        match self.dialect {
            Dialect::OpenAiChat { .. } | Dialect::OpenAiCompletion { .. } | Dialect::Gemini => 0,
            Dialect::OpenAiResponses { .. } => responses::OPENING,
            Dialect::Anthropic => anthropic::OPENING,
        }
    }

    /// Append the provider's in-stream error event to `out`, as the stream's event `i` (`error-after`).
    pub fn write_error_event(&self, i: usize, out: &mut Vec<u8>) {
        match self.dialect {
            Dialect::OpenAiChat { .. } | Dialect::OpenAiCompletion { .. } => {
                openai::write_stream_error(STREAM_ERROR, out)
            }
            Dialect::OpenAiResponses { .. } => responses::write_stream_error(STREAM_ERROR, i, out),
            Dialect::Gemini => gemini::write_stream_error(STREAM_ERROR, out),
            Dialect::Anthropic => anthropic::write_stream_error(STREAM_ERROR, out),
        }
    }

    /// Append event `i` (one complete SSE event, separator included) to `out`. An `i` outside `0..len()`
    /// appends nothing.
    pub fn write_event(&self, i: usize, out: &mut Vec<u8>) {
        let g = &self.generation;
        match self.dialect {
            Dialect::OpenAiChat { include_usage } => {
                openai::write_chat_event(g, include_usage, i, out)
            }
            Dialect::OpenAiCompletion { include_usage } => {
                openai::write_completion_event(g, include_usage, i, out)
            }
            Dialect::OpenAiResponses { max_output_tokens } => {
                responses::write_event(g, max_output_tokens, i, out)
            }
            Dialect::Gemini => gemini::write_event(g, i, out),
            Dialect::Anthropic => anthropic::write_event(g, i, out),
        }
    }
}

#[cfg(test)]
#[path = "tests_script.rs"]
mod tests;
