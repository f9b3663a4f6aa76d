//! The simple route's translation, shared by the tokio-hyper and axum-reqwest baselines: the client's
//! `POST /api/v1/generate-stream` body in, the OpenAI Chat Completions body that tokenpipe sends
//! upstream out, byte for byte.
//!
//! tokenpipe (`src/relay/api/parse.rs`, `src/relay/providers/translate.rs`) turns
//! `{"prompt":"hello brave new world"}` into
//!
//! ```text
//! {"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello brave new world"}],"stream":true,"stream_options":{"include_usage":true}}
//! ```
//!
//! and appends `temperature`, `top_p`, `stop` (always an array) and `max_tokens`, in that order, when the
//! client gave them; `system` becomes a first system message. The structs below serialize in the same
//! field order with the same serde_json, so the bytes are the same. Each baseline includes this file with
//! `#[path]`, so the two Rust baselines cannot drift apart; the benchmark compares their plumbing, not
//! their JSON.
//!
//! What is simpler than tokenpipe: serde's derive with `deny_unknown_fields` in place of tokenpipe's walk
//! over a `serde_json::Value`, so a refusal's message is serde's (the status and code are the same for
//! the common cases), and no check of the model name (it only travels inside the JSON body here).

use serde::{Deserialize, Serialize};
use serde_json::error::Category;

/// tokenpipe's model for OpenAI when the client names none and no `--model` is given.
pub const DEFAULT_MODEL: &str = "gpt-4o-mini";

/// The largest request body read from a client, tokenpipe's `--max-body-bytes` default.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// A request the relay refuses: its status and the JSON body `{"error":{"code":...,"message":...}}`.
pub struct Refusal {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Refusal {
    pub fn new(status: u16, code: &str, message: &str) -> Refusal {
        let body = serde_json::json!({"error": {"code": code, "message": message}});
        Refusal {
            status,
            body: body.to_string().into_bytes(),
        }
    }

    fn bad_request(code: &str, message: &str) -> Refusal {
        Refusal::new(400, code, message)
    }
}

/// What a client may send: the same fields as tokenpipe's simple route; any other is refused.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientBody {
    prompt: Option<String>,
    messages: Option<Vec<ClientMessage>>,
    system: Option<String>,
    model: Option<String>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    stop: Option<Stop>,
    max_tokens: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientMessage {
    role: Role,
    content: String,
}

#[derive(Deserialize, Clone, Copy, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Role {
    User,
    Assistant,
    System,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::System => "system",
        }
    }
}

/// `stop` may be one string or an array of them; upstream it is always an array.
#[derive(Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

/// The upstream body, field for field as tokenpipe's `OpenAiBody`.
#[derive(Serialize)]
struct OpenAiBody<'a> {
    model: &'a str,
    messages: Vec<TextMessage<'a>>,
    stream: bool,
    stream_options: StreamOptions,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

#[derive(Serialize)]
struct TextMessage<'a> {
    role: &'a str,
    content: &'a str,
}

/// The client's body as the OpenAI streamed chat request tokenpipe would send, or the 400 it would give.
pub fn openai_body(client_body: &[u8]) -> Result<Vec<u8>, Refusal> {
    let body: ClientBody = serde_json::from_slice(client_body).map_err(|e| {
        let code = match e.classify() {
            Category::Data if e.to_string().starts_with("unknown field") => "unknown_field",
            Category::Data => "invalid_request",
            Category::Syntax | Category::Eof | Category::Io => "invalid_json",
        };
        Refusal::bad_request(code, &e.to_string())
    })?;
    let turns: Vec<TextMessage<'_>> = match (&body.prompt, &body.messages) {
        (None, None) => {
            return Err(Refusal::bad_request(
                "missing_prompt",
                "field `prompt` (or `messages`) is missing",
            ));
        }
        (Some(_), Some(_)) => {
            return Err(Refusal::bad_request(
                "invalid_request",
                "fields `prompt` and `messages` cannot both be given",
            ));
        }
        (Some(prompt), None) => vec![TextMessage {
            role: "user",
            content: prompt,
        }],
        (None, Some(messages)) => messages
            .iter()
            .map(|m| TextMessage {
                role: m.role.as_str(),
                content: &m.content,
            })
            .collect(),
    };
    let only_system = body
        .messages
        .as_ref()
        .is_some_and(|ms| ms.iter().all(|m| m.role == Role::System));
    if only_system || turns.iter().any(|t| t.content.trim().is_empty()) {
        return Err(Refusal::bad_request(
            "empty_prompt",
            "the prompt, and every message, must be a non-empty string",
        ));
    }
    let in_range = |v: Option<f64>, max: f64| v.is_none_or(|v| (0.0..=max).contains(&v));
    let max_tokens_ok = body.max_tokens.is_none_or(|n| (1..=1_000_000).contains(&n));
    if !in_range(body.temperature, 2.0) || !in_range(body.top_p, 1.0) || !max_tokens_ok {
        return Err(Refusal::bad_request(
            "invalid_request",
            "temperature is 0 to 2, top_p 0 to 1, max_tokens 1 to 1000000",
        ));
    }
    let stop = match body.stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s],
        Some(Stop::Many(v)) => v,
    };
    if stop.len() > 4 || stop.iter().any(String::is_empty) {
        return Err(Refusal::bad_request(
            "invalid_request",
            "stop is a non-empty string or an array of at most 4 of them",
        ));
    }
    // tokenpipe drops a blank `system` rather than send an empty system message.
    let system = body.system.as_deref().filter(|s| !s.trim().is_empty());
    let system = system.map(|content| TextMessage {
        role: "system",
        content,
    });
    let upstream = OpenAiBody {
        model: body.model.as_deref().unwrap_or(DEFAULT_MODEL),
        messages: system.into_iter().chain(turns).collect(),
        stream: true,
        stream_options: StreamOptions {
            include_usage: true,
        },
        // `+ 0.0` turns -0.0 into 0.0, as tokenpipe does.
        temperature: body.temperature.map(|t| t + 0.0),
        top_p: body.top_p.map(|p| p + 0.0),
        stop: &stop,
        max_tokens: body.max_tokens,
    };
    serde_json::to_vec(&upstream)
        .map_err(|e| Refusal::new(500, "internal", &format!("could not serialize: {e}")))
}
