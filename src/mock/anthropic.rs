//! Anthropic's Messages API (`POST /v1/messages`) and Anthropic's error body: requests in, bytes out,
//! sans-IO.
//!
//! A stream is named events, each `event: NAME\ndata: {json}\n\n`, in the order the API sends them:
//!
//! ```text
//! message_start        the message, empty, with usage.input_tokens
//! content_block_start  block 0, a text block with empty text
//! ping
//! content_block_delta  one per token: {"type":"text_delta","text":...}
//! content_block_stop
//! message_delta        stop_reason "end_turn", usage.output_tokens
//! message_stop
//! ```
//!
//! Without `stream: true` the answer is one `message` object. The request must carry `max_tokens`, as the API
//! requires; the id is always `msg_mock`, the model `mock`.

use serde::Serialize;
use serde_json::Value;

use super::generation::Generation;
use super::script::{MockAsk, MockRequest, json_object, last_user_text, stream_flag};
use super::sse::{json_body, write_named_event};

/// Events before the first token: `message_start`, `content_block_start`, `ping`.
pub const OPENING: usize = 3;

/// `POST /v1/messages`: the prompt is the last user message (a string or text blocks); `system` may be a
/// string or blocks and is otherwise ignored; `max_tokens` is required and at least 1.
pub fn parse_messages(body: &[u8]) -> Result<MockAsk, String> {
    let obj = json_object(body)?;
    let max_tokens = match obj.get("max_tokens") {
        None | Some(Value::Null) => return Err("max_tokens: Field required".into()),
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => u32::try_from(n).unwrap_or(u32::MAX),
            _ => return Err("max_tokens: Input should be an integer of at least 1".into()),
        },
    };
    let messages = obj.get("messages").ok_or("messages: Field required")?;
    let prompt = last_user_text(messages)?;
    match obj.get("system") {
        None | Some(Value::Null | Value::String(_) | Value::Array(_)) => {}
        Some(_) => return Err("system: Input should be a string or a list of blocks".into()),
    }
    Ok(MockAsk {
        request: MockRequest {
            prompt,
            max_tokens: Some(max_tokens),
        },
        stream: stream_flag(&obj)?,
        include_usage: false,
    })
}

/// Events in a stream: three opening events, one per token, three closing events.
pub fn event_count(g: &Generation) -> usize {
    g.count().saturating_add(OPENING + 3)
}

/// Appends event `i` of a stream (nothing outside `0..event_count`).
pub fn write_event(g: &Generation, i: usize, out: &mut Vec<u8>) {
    let n = g.count();
    match i {
        0 => {
            let message = Message::new(g, &[], None, 0);
            write_named_event(
                "message_start",
                &Typed::new("message_start", MessageStart { message }),
                out,
            )
        }
        1 => write_named_event(
            "content_block_start",
            &Typed::new(
                "content_block_start",
                BlockStart {
                    index: 0,
                    content_block: TextBlock::new(""),
                },
            ),
            out,
        ),
        2 => write_named_event("ping", &Typed::new("ping", Empty {}), out),
        _ if i - OPENING < n => {
            let text = g.token(i - OPENING);
            let delta = BlockDelta {
                index: 0,
                delta: TextDelta {
                    kind: "text_delta",
                    text: &text,
                },
            };
            write_named_event(
                "content_block_delta",
                &Typed::new("content_block_delta", delta),
                out,
            )
        }
        _ => match i - OPENING - n {
            0 => write_named_event(
                "content_block_stop",
                &Typed::new("content_block_stop", BlockStop { index: 0 }),
                out,
            ),
            1 => {
                let delta = MessageDelta {
                    delta: StopDelta {
                        stop_reason: "end_turn",
                        stop_sequence: None,
                    },
                    usage: OutputUsage {
                        output_tokens: g.token_count(),
                    },
                };
                write_named_event("message_delta", &Typed::new("message_delta", delta), out)
            }
            2 => write_named_event("message_stop", &Typed::new("message_stop", Empty {}), out),
            _ => {}
        },
    }
}

/// The `message` object of a non-streaming answer.
pub fn message(g: &Generation) -> Vec<u8> {
    let text = g.text();
    json_body(&Message::new(
        g,
        &[TextBlock::new(&text)],
        Some("end_turn"),
        g.token_count(),
    ))
}

/// The event Anthropic sends when a stream fails after it began (`error-after`): `event: error` with
/// the error body, of type `overloaded_error`.
pub fn write_stream_error(message: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(b"event: error\ndata: ");
    out.extend_from_slice(&error_body(529, message));
    out.extend_from_slice(b"\n\n");
}

/// Anthropic's error body: `{"type":"error","error":{"type":"rate_limit_error","message":..}}`.
pub fn error_body(status: u16, message: &str) -> Vec<u8> {
    #[derive(Serialize)]
    struct Detail<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        message: &'a str,
    }
    #[derive(Serialize)]
    struct Body<'a> {
        error: Detail<'a>,
    }
    let kind = match status {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        500.. => "api_error",
        _ => "invalid_request_error",
    };
    json_body(&Typed::new(
        "error",
        Body {
            error: Detail { kind, message },
        },
    ))
}

// Shapes as serde structs: the field order below is the order on the wire, as the real API sends it.

/// `{"type": NAME, ...fields of T}`.
#[derive(Serialize)]
struct Typed<T> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    fields: T,
}

impl<T> Typed<T> {
    fn new(kind: &'static str, fields: T) -> Self {
        Typed { kind, fields }
    }
}

#[derive(Serialize)]
struct Empty {}

#[derive(Serialize)]
struct MessageStart<'a> {
    message: Message<'a>,
}

#[derive(Serialize)]
struct Message<'a> {
    id: &'static str,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'static str,
    content: &'a [TextBlock<'a>],
    stop_reason: Option<&'static str>,
    stop_sequence: Option<()>,
    usage: MessageUsage,
}

impl<'a> Message<'a> {
    fn new(
        g: &Generation,
        content: &'a [TextBlock<'a>],
        stop_reason: Option<&'static str>,
        output_tokens: u32,
    ) -> Self {
        Message {
            id: "msg_mock",
            kind: "message",
            role: "assistant",
            model: "mock",
            content,
            stop_reason,
            stop_sequence: None,
            usage: MessageUsage {
                input_tokens: g.prompt_tokens(),
                output_tokens,
            },
        }
    }
}

#[derive(Serialize)]
struct TextBlock<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
}

impl<'a> TextBlock<'a> {
    fn new(text: &'a str) -> Self {
        TextBlock { kind: "text", text }
    }
}

#[derive(Serialize)]
struct MessageUsage {
    input_tokens: u32,
    output_tokens: u32,
}

#[derive(Serialize)]
struct BlockStart<'a> {
    index: u32,
    content_block: TextBlock<'a>,
}

#[derive(Serialize)]
struct BlockDelta<'a> {
    index: u32,
    delta: TextDelta<'a>,
}

#[derive(Serialize)]
struct TextDelta<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
}

#[derive(Serialize)]
struct BlockStop {
    index: u32,
}

#[derive(Serialize)]
struct MessageDelta {
    delta: StopDelta,
    usage: OutputUsage,
}

#[derive(Serialize)]
struct StopDelta {
    stop_reason: &'static str,
    stop_sequence: Option<()>,
}

#[derive(Serialize)]
struct OutputUsage {
    output_tokens: u32,
}

#[cfg(test)]
#[path = "tests_anthropic.rs"]
mod tests;
