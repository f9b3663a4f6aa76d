//! What the built-in mock LLM says: a deterministic, sans-IO script of SSE events.
//!
//! The mock upstream exists so that tests and benchmarks can exercise the relay without a network, a key or
//! a GPU. It answers a generation request with one SSE event per chunk, one chunk per tick. This module
//! decides *what* those events are; the mock server (sockets, timers, chunked framing) decides *when* to
//! send them. Keeping the two apart means the script can be tested byte for byte, and the same script can
//! be replayed by a tokio baseline so both relays are measured against identical upstream traffic.
//!
//! Everything here is deterministic: no timestamps, no random ids. The tokens are the prompt's own words,
//! cycled (`"hello world"` -> `"hello"`, `" world"`, `" hello"`, ...), so a test can send a prompt and know
//! exactly what text must come out of the relay: [`MockScript::expected_text`].
//!
//! The events imitate the real providers closely enough that the relay's parsing is exercised honestly:
//!
//! * **OpenAI**: `chat.completion.chunk` objects, each as `data: {json}\n\n`, then a chunk with
//!   `finish_reason: "stop"`, then the `data: [DONE]` sentinel;
//! * **Gemini**: `GenerateContentResponse` objects, each as `data: {json}\r\n\r\n` (Gemini really separates
//!   events with CRLF CRLF, and an SSE parser that only knows `\n\n` should fail on the mock as it would in
//!   production); the last event carries `finishReason: "STOP"` and `usageMetadata`.
//!
//! "Tokens" here are whitespace-separated words and the usage counts are word counts: the mock makes no
//! attempt at real tokenization, which would make the byte stream depend on a vocabulary.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use serde_json::{Map, Value};

/// The token text used when the prompt contains no words at all, so that such a request still streams.
pub const FALLBACK_WORD: &str = "mock";

/// Which provider the mock imitates.
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
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("request body is not valid JSON: {e}"))?;
    let Value::Object(obj) = value else {
        return Err("request body must be a JSON object".into());
    };
    if let Some(messages) = obj.get("messages") {
        parse_openai(&obj, messages)
    } else if let Some(contents) = obj.get("contents") {
        parse_gemini(&obj, contents)
    } else {
        Err("expected `messages` (OpenAI) or `contents` (Gemini) in the request body".into())
    }
}

fn parse_openai(obj: &Map<String, Value>, messages: &Value) -> Result<MockRequest, String> {
    let messages = messages.as_array().ok_or("`messages` must be an array")?;
    let user = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .ok_or("`messages` has no message with role \"user\"")?;
    let prompt = match user.get("content") {
        Some(Value::String(s)) => s.clone(),
        // Content parts: `[{"type":"text","text":"..."}, {"type":"image_url",...}]`; keep the text.
        Some(Value::Array(parts)) => concat_texts(parts)?,
        _ => {
            return Err(
                "the last user message's `content` must be a string or an array of parts".into(),
            );
        }
    };
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

/// Concatenate the `text` of every part that has one; parts without text (images, tool calls) are skipped.
fn concat_texts(parts: &[Value]) -> Result<String, String> {
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

fn token_limit(v: &Value, name: &str) -> Result<Option<u32>, String> {
    if v.is_null() {
        return Ok(None);
    }
    let n = v
        .as_u64()
        .ok_or_else(|| format!("`{name}` must be a non-negative integer"))?;
    Ok(Some(u32::try_from(n).unwrap_or(u32::MAX)))
}

/// The events the mock sends for one request. Cheap to build; event bytes are produced on demand, one at a
/// time, so a stream of a million tokens costs no more memory than a stream of ten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockScript {
    format: MockFormat,
    /// The prompt's words, never empty (see [`FALLBACK_WORD`]).
    words: Vec<String>,
    /// How many words the prompt really had, for Gemini's `usageMetadata`.
    prompt_tokens: u32,
    /// How many token events to send.
    tokens: u32,
}

impl MockScript {
    /// A script of `tokens` tokens, or fewer when the request's `max_tokens` is smaller.
    pub fn new(format: MockFormat, req: &MockRequest, tokens: u32) -> Self {
        let mut words: Vec<String> = req.prompt.split_whitespace().map(str::to_string).collect();
        let prompt_tokens = u32::try_from(words.len()).unwrap_or(u32::MAX);
        if words.is_empty() {
            words.push(FALLBACK_WORD.to_string());
        }
        let tokens = req.max_tokens.map_or(tokens, |max| tokens.min(max));
        MockScript {
            format,
            words,
            prompt_tokens,
            tokens,
        }
    }

    /// Number of token events (the generated length), not counting the closing events.
    pub fn token_count(&self) -> u32 {
        self.tokens
    }

    /// Number of events, including the closing ones.
    ///
    /// OpenAI: one per token, then the `finish_reason: "stop"` chunk, then `[DONE]`, so `tokens + 2`.
    /// Gemini: one per token, the last one carrying `finishReason` (so at least one event even for zero
    /// tokens, which then has empty text).
    pub fn len(&self) -> usize {
        let tokens = usize::try_from(self.tokens).unwrap_or(usize::MAX);
        match self.format {
            MockFormat::OpenAi => tokens.saturating_add(2),
            MockFormat::Gemini => tokens.max(1),
        }
    }

    /// Always false: every script ends with at least one closing event. (Provided because clippy expects
    /// `is_empty` next to `len`.)
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Token number `i` (counting from 0): the prompt's words in order, cycling, each but the first with a
    /// leading space. Defined for every `i`, even past [`MockScript::token_count`].
    pub fn token(&self, i: usize) -> String {
        // `words` is never empty, but `get` keeps this panic-free even if that changed.
        let word = self
            .words
            .get(i % self.words.len().max(1))
            .map_or(FALLBACK_WORD, String::as_str);
        if i == 0 {
            word.to_string()
        } else {
            format!(" {word}")
        }
    }

    /// All the generated text: what a client of the relay should receive, concatenated.
    pub fn expected_text(&self) -> String {
        (0..self.token_count_usize())
            .map(|i| self.token(i))
            .collect()
    }

    /// Append event `i` (one complete SSE event, separator included) to `out`. An `i` outside `0..len()`
    /// appends nothing.
    pub fn write_event(&self, i: usize, out: &mut Vec<u8>) {
        match self.format {
            MockFormat::OpenAi => self.write_openai(i, out),
            MockFormat::Gemini => self.write_gemini(i, out),
        }
    }

    fn token_count_usize(&self) -> usize {
        usize::try_from(self.tokens).unwrap_or(usize::MAX)
    }

    fn write_openai(&self, i: usize, out: &mut Vec<u8>) {
        let n = self.token_count_usize();
        if i < n {
            let token = self.token(i);
            // Like the real API, the first chunk also says who is speaking.
            let role = (i == 0).then_some("assistant");
            let delta = OpenAiDelta {
                role,
                content: Some(&token),
            };
            write_data_event(&OpenAiChunk::new(delta, None), b"\n\n", out);
        } else if i == n {
            let delta = OpenAiDelta {
                role: None,
                content: None,
            };
            write_data_event(&OpenAiChunk::new(delta, Some("stop")), b"\n\n", out);
        } else if i == n.saturating_add(1) {
            out.extend_from_slice(b"data: [DONE]\n\n");
        }
    }

    fn write_gemini(&self, i: usize, out: &mut Vec<u8>) {
        let n = self.token_count_usize();
        if i >= self.len() {
            return;
        }
        let text = if i < n { self.token(i) } else { String::new() };
        let last = i + 1 == self.len();
        let chunk = GeminiChunk {
            candidates: [GeminiCandidate {
                content: GeminiContent {
                    parts: [GeminiPart { text: &text }],
                    role: "model",
                },
                finish_reason: last.then_some("STOP"),
                index: 0,
            }],
            usage_metadata: last.then(|| GeminiUsage {
                prompt_token_count: self.prompt_tokens,
                candidates_token_count: self.tokens,
                total_token_count: self.prompt_tokens.saturating_add(self.tokens),
            }),
            model_version: "mock",
        };
        write_data_event(&chunk, b"\r\n\r\n", out);
    }
}

/// Append `data: {json}{separator}` to `out`, or nothing at all if serialization fails (it cannot for
/// these types; the truncation only guarantees that `out` never holds half an event).
fn write_data_event<T: Serialize>(event: &T, separator: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(b"data: ");
    if serde_json::to_writer(&mut *out, event).is_ok() {
        out.extend_from_slice(separator);
    } else {
        out.truncate(start);
    }
}

// Event shapes as serde structs: the field order below is the order on the wire, as the real APIs send it.

#[derive(Serialize)]
struct OpenAiChunk<'a> {
    id: &'static str,
    object: &'static str,
    created: u64,
    model: &'static str,
    choices: [OpenAiChoice<'a>; 1],
}

impl<'a> OpenAiChunk<'a> {
    fn new(delta: OpenAiDelta<'a>, finish_reason: Option<&'static str>) -> Self {
        OpenAiChunk {
            id: "chatcmpl-mock",
            object: "chat.completion.chunk",
            created: 0,
            model: "mock",
            choices: [OpenAiChoice {
                index: 0,
                delta,
                finish_reason,
            }],
        }
    }
}

#[derive(Serialize)]
struct OpenAiChoice<'a> {
    index: u32,
    delta: OpenAiDelta<'a>,
    /// `null` until the last chunk, as in the real API.
    finish_reason: Option<&'static str>,
}

#[derive(Serialize)]
struct OpenAiDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GeminiChunk<'a> {
    candidates: [GeminiCandidate<'a>; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage_metadata: Option<GeminiUsage>,
    model_version: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GeminiCandidate<'a> {
    content: GeminiContent<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    finish_reason: Option<&'static str>,
    index: u32,
}

#[derive(Serialize)]
struct GeminiContent<'a> {
    parts: [GeminiPart<'a>; 1],
    role: &'static str,
}

#[derive(Serialize)]
struct GeminiPart<'a> {
    text: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GeminiUsage {
    prompt_token_count: u32,
    candidates_token_count: u32,
    total_token_count: u32,
}

#[cfg(test)]
#[path = "tests_script.rs"]
mod tests;
