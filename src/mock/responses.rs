//! OpenAI's Responses API (`POST /v1/responses`): requests in, bytes out, sans-IO.
//!
//! A stream is named events, each `event: NAME\ndata: {json}\n\n` whose JSON starts with its `type` and a
//! `sequence_number` (the event's index), in the order the API sends them:
//!
//! ```text
//! response.created              the response, status "in_progress", no output yet
//! response.in_progress          the same
//! response.output_item.added    output 0: an assistant message, no content yet
//! response.content_part.added   content 0 of it: an `output_text` part with empty text
//! response.output_text.delta    one per token
//! response.output_text.done     the whole text
//! response.content_part.done    the part, with the whole text
//! response.output_item.done     the message, completed
//! response.completed            the response, completed, with its output and usage
//! ```
//!
//! Without `stream: true` the answer is the completed `response` object (the SDKs' `output_text` is a
//! property they compute from `output[].content[]`; the API does not send it). Ids never vary: `resp_mock`
//! and `msg_mock`; `created_at` is 0, the model `mock`.

use serde::Serialize;
use serde_json::Value;

use super::generation::Generation;
use super::script::{MockAsk, MockRequest, concat_texts, json_object, stream_flag, token_limit};
use super::sse::{json_body, write_named_event};

/// Events before the first delta.
pub const OPENING: usize = 4;

/// `POST /v1/responses`: the prompt is `input` when it is a string, else the last input item with role
/// `"user"` (its `content` string, or the `text` of its parts); the limit is `max_output_tokens`.
pub fn parse_responses(body: &[u8]) -> Result<MockAsk, String> {
    let obj = json_object(body)?;
    let prompt = match obj.get("input") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => {
            let user = items
                .iter()
                .rev()
                .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
                .ok_or("`input` has no message with role \"user\"")?;
            match user.get("content") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(parts)) => concat_texts(parts)?,
                _ => return Err("a message's `content` must be a string or an array".into()),
            }
        }
        None => return Err("`input` is required".into()),
        Some(_) => return Err("`input` must be a string or an array of items".into()),
    };
    let max_tokens = match obj.get("max_output_tokens") {
        Some(v) => token_limit(v, "max_output_tokens")?,
        None => None,
    };
    Ok(MockAsk {
        request: MockRequest { prompt, max_tokens },
        stream: stream_flag(&obj)?,
        include_usage: false,
    })
}

/// Events in a stream: four opening events, one delta per token, four closing events.
pub fn event_count(g: &Generation) -> usize {
    g.count().saturating_add(OPENING + 4)
}

/// Appends event `i` of a stream (nothing outside `0..event_count`). `max_output_tokens` is echoed in the
/// response object, as the API does.
pub fn write_event(g: &Generation, max_output_tokens: Option<u32>, i: usize, out: &mut Vec<u8>) {
    let n = g.count();
    let seq = i as u64;
    let at = |content_index| Place {
        item_id: "msg_mock",
        output_index: 0,
        content_index,
    };
    let pending = || ResponseObject::new(max_output_tokens, &[], None);
    if i == 0 {
        let e = Event::new(
            "response.created",
            seq,
            Wrapped {
                response: pending(),
            },
        );
        return write_named_event(e.kind, &e, out);
    }
    if i == 1 {
        let e = Event::new(
            "response.in_progress",
            seq,
            Wrapped {
                response: pending(),
            },
        );
        return write_named_event(e.kind, &e, out);
    }
    if i == 2 {
        let item = OutputMessage::new("in_progress", &[]);
        let e = Event::new(
            "response.output_item.added",
            seq,
            ItemEvent {
                output_index: 0,
                item,
            },
        );
        return write_named_event(e.kind, &e, out);
    }
    if i == 3 {
        let part = PartEvent {
            at: at(0),
            part: OutputText::new(""),
        };
        let e = Event::new("response.content_part.added", seq, part);
        return write_named_event(e.kind, &e, out);
    }
    if i - OPENING < n {
        let delta = g.token(i - OPENING);
        let fields = TextDelta {
            at: at(0),
            delta: &delta,
            logprobs: [],
        };
        let e = Event::new("response.output_text.delta", seq, fields);
        return write_named_event(e.kind, &e, out);
    }
    let text = g.text();
    let parts = [OutputText::new(&text)];
    let done = [OutputMessage::new("completed", &parts)];
    match i - OPENING - n {
        0 => {
            let fields = TextDone {
                at: at(0),
                text: &text,
                logprobs: [],
            };
            let e = Event::new("response.output_text.done", seq, fields);
            write_named_event(e.kind, &e, out)
        }
        1 => {
            let fields = PartEvent {
                at: at(0),
                part: OutputText::new(&text),
            };
            let e = Event::new("response.content_part.done", seq, fields);
            write_named_event(e.kind, &e, out)
        }
        2 => {
            let [item] = done;
            let e = Event::new(
                "response.output_item.done",
                seq,
                ItemEvent {
                    output_index: 0,
                    item,
                },
            );
            write_named_event(e.kind, &e, out)
        }
        3 => {
            let response =
                ResponseObject::new(max_output_tokens, &done, Some(ResponseUsage::of(g)));
            let e = Event::new("response.completed", seq, Wrapped { response });
            write_named_event(e.kind, &e, out)
        }
        _ => {}
    }
}

/// The event the Responses API sends when a stream fails after it began (`error-after`), as event `i`:
/// `event: error` with `{"type":"error","sequence_number":i,"code":"server_error","message":..,"param":null}`.
pub fn write_stream_error(message: &str, i: usize, out: &mut Vec<u8>) {
    #[derive(Serialize)]
    struct Failure<'a> {
        code: &'static str,
        message: &'a str,
        param: Option<()>,
    }
    let fields = Failure {
        code: "server_error",
        message,
        param: None,
    };
    let e = Event::new("error", i as u64, fields);
    write_named_event(e.kind, &e, out)
}

/// The completed `response` object of a non-streaming answer.
pub fn response(g: &Generation, max_output_tokens: Option<u32>) -> Vec<u8> {
    let text = g.text();
    let parts = [OutputText::new(&text)];
    let output = [OutputMessage::new("completed", &parts)];
    json_body(&ResponseObject::new(
        max_output_tokens,
        &output,
        Some(ResponseUsage::of(g)),
    ))
}

// Shapes as serde structs: the field order below is the order on the wire, as the real API sends it.

/// `{"type": .., "sequence_number": .., ...fields}`.
#[derive(Serialize)]
struct Event<T> {
    #[serde(rename = "type")]
    kind: &'static str,
    sequence_number: u64,
    #[serde(flatten)]
    fields: T,
}

impl<T> Event<T> {
    fn new(kind: &'static str, sequence_number: u64, fields: T) -> Self {
        Event {
            kind,
            sequence_number,
            fields,
        }
    }
}

#[derive(Serialize)]
struct Wrapped<'a> {
    response: ResponseObject<'a>,
}

#[derive(Serialize)]
struct ItemEvent<'a> {
    output_index: u32,
    item: OutputMessage<'a>,
}

/// Where a part or a delta belongs.
#[derive(Serialize)]
struct Place {
    item_id: &'static str,
    output_index: u32,
    content_index: u32,
}

#[derive(Serialize)]
struct PartEvent<'a> {
    #[serde(flatten)]
    at: Place,
    part: OutputText<'a>,
}

#[derive(Serialize)]
struct TextDelta<'a> {
    #[serde(flatten)]
    at: Place,
    delta: &'a str,
    logprobs: [(); 0],
}

#[derive(Serialize)]
struct TextDone<'a> {
    #[serde(flatten)]
    at: Place,
    text: &'a str,
    logprobs: [(); 0],
}

#[derive(Serialize)]
struct ResponseObject<'a> {
    id: &'static str,
    object: &'static str,
    created_at: u64,
    status: &'static str,
    error: Option<()>,
    incomplete_details: Option<()>,
    instructions: Option<()>,
    max_output_tokens: Option<u32>,
    model: &'static str,
    output: &'a [OutputMessage<'a>],
    parallel_tool_calls: bool,
    previous_response_id: Option<()>,
    text: TextConfig,
    tool_choice: &'static str,
    tools: [(); 0],
    truncation: &'static str,
    usage: Option<ResponseUsage>,
    metadata: NoFields,
}

impl<'a> ResponseObject<'a> {
    /// The response, in progress while it has no usage, completed with it.
    fn new(
        max_output_tokens: Option<u32>,
        output: &'a [OutputMessage<'a>],
        usage: Option<ResponseUsage>,
    ) -> Self {
        ResponseObject {
            id: "resp_mock",
            object: "response",
            created_at: 0,
            status: if usage.is_some() {
                "completed"
            } else {
                "in_progress"
            },
            error: None,
            incomplete_details: None,
            instructions: None,
            max_output_tokens,
            model: "mock",
            output,
            parallel_tool_calls: true,
            previous_response_id: None,
            text: TextConfig {
                format: FormatType { kind: "text" },
            },
            tool_choice: "auto",
            tools: [],
            truncation: "disabled",
            usage,
            metadata: NoFields {},
        }
    }
}

#[derive(Serialize)]
struct NoFields {}

#[derive(Serialize)]
struct TextConfig {
    format: FormatType,
}

#[derive(Serialize)]
struct FormatType {
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize)]
struct OutputMessage<'a> {
    id: &'static str,
    #[serde(rename = "type")]
    kind: &'static str,
    status: &'static str,
    content: &'a [OutputText<'a>],
    role: &'static str,
}

impl<'a> OutputMessage<'a> {
    fn new(status: &'static str, content: &'a [OutputText<'a>]) -> Self {
        OutputMessage {
            id: "msg_mock",
            kind: "message",
            status,
            content,
            role: "assistant",
        }
    }
}

#[derive(Serialize)]
struct OutputText<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    annotations: [(); 0],
    logprobs: [(); 0],
    text: &'a str,
}

impl<'a> OutputText<'a> {
    fn new(text: &'a str) -> Self {
        OutputText {
            kind: "output_text",
            annotations: [],
            logprobs: [],
            text,
        }
    }
}

#[derive(Serialize)]
struct ResponseUsage {
    input_tokens: u32,
    input_tokens_details: CachedTokens,
    output_tokens: u32,
    output_tokens_details: ReasoningTokens,
    total_tokens: u32,
}

impl ResponseUsage {
    fn of(g: &Generation) -> Self {
        ResponseUsage {
            input_tokens: g.prompt_tokens(),
            input_tokens_details: CachedTokens { cached_tokens: 0 },
            output_tokens: g.token_count(),
            output_tokens_details: ReasoningTokens {
                reasoning_tokens: 0,
            },
            total_tokens: g.total_tokens(),
        }
    }
}

#[derive(Serialize)]
struct CachedTokens {
    cached_tokens: u32,
}

#[derive(Serialize)]
struct ReasoningTokens {
    reasoning_tokens: u32,
}

#[cfg(test)]
#[path = "tests_responses.rs"]
mod tests;
