//! Gemini's `models/{model}:streamGenerateContent` and `:generateContent`, `GET /v1beta/models` and Gemini's
//! error body: bytes out, sans-IO. (Requests are parsed by [`super::script::parse_mock_request`], which
//! knows Gemini's `contents`.)
//!
//! A stream is `GenerateContentResponse` objects as `data: {json}\r\n\r\n` (Gemini really separates events
//! with CRLF CRLF), one per token; the last one carries `finishReason: "STOP"` and `usageMetadata`, so even
//! zero tokens make one event. The non-streaming answer is the same object with all the text in one part.

use serde::Serialize;

use super::generation::Generation;
use super::sse::{json_body, write_data_event};

/// Events in a stream: one per token, at least one.
pub fn event_count(g: &Generation) -> usize {
    g.count().max(1)
}

/// Appends event `i` of a stream (nothing outside `0..event_count`).
pub fn write_event(g: &Generation, i: usize, out: &mut Vec<u8>) {
    if i >= event_count(g) {
        return;
    }
    let text = if i < g.count() {
        g.token(i)
    } else {
        String::new()
    };
    let last = i + 1 == event_count(g);
    write_data_event(&GeminiChunk::new(g, &text, last), b"\r\n\r\n", out);
}

/// The `GenerateContentResponse` of `:generateContent`.
pub fn generate_content(g: &Generation) -> Vec<u8> {
    json_body(&GeminiChunk::new(g, &g.text(), true))
}

/// `GET /v1beta/models` (and, merged with OpenAI's list, `GET /v1/models`).
pub fn models() -> Vec<u8> {
    br#"{"models":[{"name":"models/mock","version":"001","displayName":"Mock","description":"tokenpipe's deterministic mock model","inputTokenLimit":1048576,"outputTokenLimit":65536,"supportedGenerationMethods":["generateContent","streamGenerateContent"]}]}"#.to_vec()
}

/// What Gemini sends when a stream fails after it began (`error-after`): the error body as one more event,
/// `data: {"error":{"code":503,..,"status":"UNAVAILABLE"}}`, separated like the others.
pub fn write_stream_error(message: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(&error_body(503, message));
    out.extend_from_slice(b"\r\n\r\n");
}

/// Gemini's error body: `{"error":{"code":429,"message":..,"status":"RESOURCE_EXHAUSTED"}}`.
pub fn error_body(status: u16, message: &str) -> Vec<u8> {
    #[derive(Serialize)]
    struct Body<'a> {
        error: Detail<'a>,
    }
    #[derive(Serialize)]
    struct Detail<'a> {
        code: u16,
        message: &'a str,
        status: &'static str,
    }
    let name = match status {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        500.. => "INTERNAL",
        _ => "FAILED_PRECONDITION",
    };
    json_body(&Body {
        error: Detail {
            code: status,
            message,
            status: name,
        },
    })
}

// Shapes as serde structs: the field order below is the order on the wire, as the real API sends it.

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GeminiChunk<'a> {
    candidates: [GeminiCandidate<'a>; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage_metadata: Option<GeminiUsage>,
    model_version: &'static str,
}

impl<'a> GeminiChunk<'a> {
    /// A response holding `text`; the `last` one says why the generation ended and counts the tokens.
    fn new(g: &Generation, text: &'a str, last: bool) -> Self {
        GeminiChunk {
            candidates: [GeminiCandidate {
                content: GeminiContent {
                    parts: [GeminiPart { text }],
                    role: "model",
                },
                finish_reason: last.then_some("STOP"),
                index: 0,
            }],
            usage_metadata: last.then(|| GeminiUsage {
                prompt_token_count: g.prompt_tokens(),
                candidates_token_count: g.token_count(),
                total_token_count: g.total_tokens(),
            }),
            model_version: "mock",
        }
    }
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
#[path = "tests_gemini.rs"]
mod tests;
