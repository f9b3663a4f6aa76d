//! OpenAI's Chat Completions (`POST /v1/chat/completions`) and legacy Completions (`POST /v1/completions`),
//! `GET /v1/models` and OpenAI's error body: requests in, bytes out, sans-IO.
//!
//! A stream is `data: {json}\n\n` events: one chunk per token (a chat's first delta also carries
//! `"role":"assistant"`), a chunk with `finish_reason: "stop"`, with `stream_options.include_usage` a chunk
//! with `usage` and empty `choices` (and `"usage":null` on every chunk before it, as the API does), then
//! `data: [DONE]`. Without `stream: true` the answer is one `chat.completion` / `text_completion` object
//! with `usage`. Ids, `created` and the model name never vary: `chatcmpl-mock`, `cmpl-mock`, `0`, `mock`.

use serde::Serialize;
use serde_json::Value;

use super::generation::Generation;
use super::script::{
    MockAsk, MockRequest, include_usage, json_object, parse_object, stream_flag, token_limit,
};
use super::sse::{json_body, write_data_event};

/// `POST /v1/chat/completions`: the body in OpenAI's shape (or, as the mock has always allowed, Gemini's).
pub fn parse_chat(body: &[u8]) -> Result<MockAsk, String> {
    let obj = json_object(body)?;
    Ok(MockAsk {
        request: parse_object(&obj)?,
        stream: stream_flag(&obj)?,
        include_usage: include_usage(&obj),
    })
}

/// `POST /v1/completions`: `prompt` is a string or an array of strings (joined by spaces); the limit is
/// `max_tokens`.
pub fn parse_completion(body: &[u8]) -> Result<MockAsk, String> {
    let obj = json_object(body)?;
    let prompt = match obj.get("prompt") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => {
            let texts: Option<Vec<&str>> = items.iter().map(Value::as_str).collect();
            texts
                .ok_or("`prompt` must be a string or an array of strings")?
                .join(" ")
        }
        None => return Err("`prompt` is required".into()),
        Some(_) => return Err("`prompt` must be a string or an array of strings".into()),
    };
    let max_tokens = match obj.get("max_tokens") {
        Some(v) => token_limit(v, "max_tokens")?,
        None => None,
    };
    Ok(MockAsk {
        request: MockRequest { prompt, max_tokens },
        stream: stream_flag(&obj)?,
        include_usage: include_usage(&obj),
    })
}

/// Events in a Chat Completions or Completions stream: one per token, the finish chunk, the usage chunk if
/// asked for, `[DONE]`.
pub fn event_count(g: &Generation, include_usage: bool) -> usize {
    g.count()
        .saturating_add(2)
        .saturating_add(usize::from(include_usage))
}

/// Appends event `i` of a Chat Completions stream (nothing outside `0..event_count`).
pub fn write_chat_event(g: &Generation, include_usage: bool, i: usize, out: &mut Vec<u8>) {
    write_event(StreamKind::Chat, g, include_usage, i, out)
}

/// Appends event `i` of a legacy Completions stream (nothing outside `0..event_count`).
pub fn write_completion_event(g: &Generation, include_usage: bool, i: usize, out: &mut Vec<u8>) {
    write_event(StreamKind::Text, g, include_usage, i, out)
}

/// The `chat.completion` object of a non-streaming answer.
pub fn chat_completion(g: &Generation) -> Vec<u8> {
    #[derive(Serialize)]
    struct Choice<'a> {
        index: u32,
        message: Message<'a>,
        logprobs: Option<()>,
        finish_reason: &'static str,
    }
    #[derive(Serialize)]
    struct Message<'a> {
        role: &'static str,
        content: &'a str,
        refusal: Option<()>,
    }
    let text = g.text();
    json_body(&Completion {
        id: "chatcmpl-mock",
        object: "chat.completion",
        created: 0,
        model: "mock",
        choices: [Choice {
            index: 0,
            message: Message {
                role: "assistant",
                content: &text,
                refusal: None,
            },
            logprobs: None,
            finish_reason: "stop",
        }],
        usage: OpenAiUsage::of(g),
    })
}

/// The `text_completion` object of a non-streaming legacy completion.
pub fn completion(g: &Generation) -> Vec<u8> {
    let text = g.text();
    json_body(&Completion {
        id: "cmpl-mock",
        object: "text_completion",
        created: 0,
        model: "mock",
        choices: [StreamKind::Text.choice(Some(&text), false, Some("stop"))],
        usage: OpenAiUsage::of(g),
    })
}

/// OpenAI's model list. Anthropic serves the same path (`GET /v1/models`), and the mock cannot tell the two
/// clients apart, so the list also carries Anthropic's fields (`type`, `display_name`, `created_at`,
/// `has_more`, `first_id`, `last_id`): both SDKs read it, each ignoring the other's fields. (Gemini's `v1`
/// serves that path too: see `answer::shared_models`.)
pub fn models() -> Vec<u8> {
    br#"{"object":"list","data":[{"id":"mock","object":"model","created":0,"owned_by":"tokenpipe","type":"model","display_name":"Mock","created_at":"1970-01-01T00:00:00Z"}],"has_more":false,"first_id":"mock","last_id":"mock"}"#.to_vec()
}

/// The event Chat Completions and Completions send when a stream fails after it began (`error-after`):
/// the error body as the data of an unnamed event, `data: {"error":{..,"type":"server_error",..}}`.
pub fn write_stream_error(message: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(&error_body(500, message));
    out.extend_from_slice(b"\n\n");
}

/// OpenAI's error body: `{"error":{"message":..,"type":..,"param":null,"code":..}}`.
pub fn error_body(status: u16, message: &str) -> Vec<u8> {
    #[derive(Serialize)]
    struct Body<'a> {
        error: Detail<'a>,
    }
    #[derive(Serialize)]
    struct Detail<'a> {
        message: &'a str,
        #[serde(rename = "type")]
        kind: &'static str,
        param: Option<()>,
        code: Option<&'static str>,
    }
    let (kind, code) = match status {
        401 => ("invalid_request_error", Some("invalid_api_key")),
        404 => ("invalid_request_error", Some("not_found")),
        429 => ("requests", Some("rate_limit_exceeded")),
        500.. => ("server_error", None),
        _ => ("invalid_request_error", None),
    };
    json_body(&Body {
        error: Detail {
            message,
            kind,
            param: None,
            code,
        },
    })
}

/// Which of the two streams: they differ only in the choice objects.
#[derive(Clone, Copy)]
enum StreamKind {
    Chat,
    Text,
}

impl StreamKind {
    fn id(self) -> &'static str {
        match self {
            StreamKind::Chat => "chatcmpl-mock",
            StreamKind::Text => "cmpl-mock",
        }
    }

    fn object(self) -> &'static str {
        match self {
            StreamKind::Chat => "chat.completion.chunk",
            StreamKind::Text => "text_completion",
        }
    }

    /// A choice with `token` (or none), whose delta says who speaks when `first`.
    fn choice<'a>(
        self,
        token: Option<&'a str>,
        first: bool,
        finish: Option<&'static str>,
    ) -> Choice<'a> {
        match self {
            StreamKind::Chat => Choice::Chat {
                index: 0,
                delta: Delta {
                    role: first.then_some("assistant"),
                    content: token,
                },
                finish_reason: finish,
            },
            StreamKind::Text => Choice::Text {
                text: token.unwrap_or(""),
                index: 0,
                logprobs: None,
                finish_reason: finish,
            },
        }
    }
}

fn write_event(kind: StreamKind, g: &Generation, include_usage: bool, i: usize, out: &mut Vec<u8>) {
    let n = g.count();
    // With include_usage every chunk says `"usage":null` until the one that carries it.
    let no_usage = include_usage.then_some(None);
    let chunk = |choices, usage| Chunk {
        id: kind.id(),
        object: kind.object(),
        created: 0,
        model: "mock",
        choices,
        usage,
    };
    if i < n {
        let token = g.token(i);
        let choice = [kind.choice(Some(&token), i == 0, None)];
        write_data_event(&chunk(&choice, no_usage), b"\n\n", out);
    } else if i == n {
        let choice = [kind.choice(None, false, Some("stop"))];
        write_data_event(&chunk(&choice, no_usage), b"\n\n", out);
    } else if include_usage && i == n.saturating_add(1) {
        write_data_event(&chunk(&[], Some(Some(OpenAiUsage::of(g)))), b"\n\n", out);
    } else if i.saturating_add(1) == event_count(g, include_usage) {
        out.extend_from_slice(b"data: [DONE]\n\n");
    }
}

// Shapes as serde structs: the field order below is the order on the wire, as the real API sends it.

#[derive(Serialize)]
struct Chunk<'a> {
    id: &'static str,
    object: &'static str,
    created: u64,
    model: &'static str,
    choices: &'a [Choice<'a>],
    /// Absent without include_usage; `null`, then the counts, with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<OpenAiUsage>>,
}

#[derive(Serialize)]
struct Completion<C> {
    id: &'static str,
    object: &'static str,
    created: u64,
    model: &'static str,
    choices: [C; 1],
    usage: OpenAiUsage,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Choice<'a> {
    Chat {
        index: u32,
        delta: Delta<'a>,
        /// `null` until the last chunk, as in the real API.
        finish_reason: Option<&'static str>,
    },
    Text {
        text: &'a str,
        index: u32,
        logprobs: Option<()>,
        finish_reason: Option<&'static str>,
    },
}

#[derive(Serialize)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
}

#[derive(Serialize)]
struct OpenAiUsage {
    prompt_tokens: u32,
    completion_tokens: u32,
    total_tokens: u32,
}

impl OpenAiUsage {
    fn of(g: &Generation) -> OpenAiUsage {
        OpenAiUsage {
            prompt_tokens: g.prompt_tokens(),
            completion_tokens: g.token_count(),
            total_tokens: g.total_tokens(),
        }
    }
}

#[cfg(test)]
#[path = "tests_openai.rs"]
mod tests;
