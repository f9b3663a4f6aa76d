//! The client-facing API: what a client may put in the body of `POST /api/v1/generate-stream`.
//!
//! The body is small JSON, the same whichever provider the relay targets:
//!
//! ```json
//! {"prompt": "...", "system"?: "...", "model"?: "...", "temperature"?: t, "top_p"?: p,
//!  "stop"?: "..." | ["...", ...], "max_tokens"?: n}
//! ```
//!
//! or, for a conversation, `"messages": [{"role": "user" | "assistant" | "system", "content": "..."}, ...]`
//! instead of `prompt`. This module turns those bytes into a [`GenerateRequest`] or into an [`ApiError`]
//! that already knows its HTTP status, its machine-readable code and a message for humans, so the
//! connection code can answer bad input without thinking about it (design principle 11: bad input gets a
//! clear answer and costs nothing else). `crate::relay::providers` then translates the request into each
//! provider's shape.
//!
//! Why parse through [`serde_json::Value`] instead of `#[derive(Deserialize)]` on the struct? Because the
//! error message matters here. A derived deserializer stops at the first problem with a message like
//! "invalid type: integer `5`, expected a string at line 1 column 14"; walking the `Value` by hand lets us
//! tell "not JSON at all" (`invalid_json`) from "JSON of the wrong shape" (`invalid_request`), name the field
//! at fault, refuse an unknown field by name (`unknown_field`: a typo such as `temprature` must not silently
//! change a generation), and tell a missing prompt (`missing_prompt`) from an empty one (`empty_prompt`).
//!
//! The cost is one tree allocation per request, which is nothing next to the upstream call it triggers.
//! Input size is bounded before we get here (the HTTP layer limits the body), and `serde_json` refuses
//! nesting deeper than 128 levels, so no body can blow the stack.
//!
//! What is *not* checked here: whether the model name is acceptable, and the rules of one provider (say,
//! Anthropic's first message must be the user's). Those depend on where the request is sent, so
//! [`crate::relay::providers::build_request`] checks them.

use std::fmt;

use serde::Serialize;

mod parse;

pub use parse::parse_generate;

/// The largest `max_tokens` a client may ask for. Real models stop far below; the cap only keeps absurd
/// numbers from travelling upstream.
pub const MAX_TOKENS_LIMIT: u32 = 1_000_000;

/// The most stop sequences a client may give (OpenAI's limit; the others allow as many or more).
pub const MAX_STOP_SEQUENCES: usize = 4;

/// The fields a body may hold, in the order error messages list them.
pub const ACCEPTED_FIELDS: [&str; 8] = [
    "prompt",
    "messages",
    "system",
    "model",
    "temperature",
    "top_p",
    "stop",
    "max_tokens",
];

/// One generation, as the client asked for it.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateRequest {
    /// What to answer: a prompt or a conversation.
    pub input: Input,
    /// System instructions, if the client gave any (never empty nor whitespace-only).
    pub system: Option<String>,
    /// The model to use, if the client chose one; otherwise the route's default applies.
    pub model: Option<String>,
    /// Sampling temperature, in `0..=2`, if the client gave one.
    pub temperature: Option<f64>,
    /// Nucleus sampling mass, in `0..=1`, if the client gave one.
    pub top_p: Option<f64>,
    /// Up to [`MAX_STOP_SEQUENCES`] non-empty stop sequences; empty when the client gave none.
    pub stop: Vec<String>,
    /// An upper bound on generated tokens, in `1..=MAX_TOKENS_LIMIT`, if the client gave one.
    pub max_tokens: Option<u32>,
}

/// What a generation answers: exactly one of the body's `prompt` and `messages`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// `prompt`: one user turn, never empty nor whitespace-only, kept as sent.
    Prompt(String),
    /// `messages`: a conversation holding at least one user or assistant message.
    Messages(Vec<Message>),
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Who said it.
    pub role: Role,
    /// What was said: never empty nor whitespace-only, kept as sent.
    pub content: String,
}

/// The author of a [`Message`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The person asking.
    User,
    /// The model, in an earlier turn.
    Assistant,
    /// Instructions to the model.
    System,
}

impl Role {
    /// The role's name in the body: `"user"`, `"assistant"` or `"system"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::System => "system",
        }
    }

    /// The role named `s`, exactly as written in the body.
    pub fn from_name(s: &str) -> Option<Role> {
        [Role::User, Role::Assistant, Role::System]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

impl GenerateRequest {
    /// A request of just `prompt`, every option left to the provider: what `{"prompt": "..."}` parses to.
    pub fn from_prompt(prompt: impl Into<String>) -> Self {
        GenerateRequest {
            input: Input::Prompt(prompt.into()),
            system: None,
            model: None,
            temperature: None,
            top_p: None,
            stop: Vec::new(),
            max_tokens: None,
        }
    }

    /// The conversation in order, as `(role, text)`: the prompt is one user turn. System-role messages are
    /// included where they stand; providers that take system text apart skip them and use
    /// [`GenerateRequest::system_text`].
    pub fn turns(&self) -> impl Iterator<Item = (Role, &str)> {
        let (prompt, messages) = match &self.input {
            Input::Prompt(p) => (Some(p.as_str()), &[][..]),
            Input::Messages(m) => (None, m.as_slice()),
        };
        let prompt = prompt.map(|p| (Role::User, p));
        let messages = messages.iter().map(|m| (m.role, m.content.as_str()));
        prompt.into_iter().chain(messages)
    }

    /// All system text, for providers that take it apart from the conversation: `system`, then every
    /// system-role message in order, joined by blank lines. `None` when there is none.
    pub fn system_text(&self) -> Option<String> {
        let parts: Vec<&str> = self
            .system
            .as_deref()
            .into_iter()
            .chain(
                self.turns()
                    .filter(|(role, _)| *role == Role::System)
                    .map(|(_, text)| text),
            )
            .collect();
        (!parts.is_empty()).then(|| parts.join("\n\n"))
    }
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

#[cfg(test)]
mod tests;
