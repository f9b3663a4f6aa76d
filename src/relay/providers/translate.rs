//! A [`GenerateRequest`] in each provider's shape: the JSON body of one streamed generation.
//!
//! The bodies are serde structs rather than `json!` so their field order is fixed and readable here, and
//! so every client text is escaped by the serializer: no user text is ever spliced into JSON by hand.
//! Optional fields are left out when the client did not give them, so the provider's defaults apply; a
//! bare `{"prompt": "..."}` gives the same bytes as before the options existed (plus OpenAI's
//! `stream_options`).
//!
//! | client | OpenAI Chat Completions | Gemini | Anthropic Messages |
//! | --- | --- | --- | --- |
//! | `prompt` | `messages: [{user}]` | `contents: [{user}]` | `messages: [{user}]` |
//! | `messages` | as given | `contents`, `assistant` -> `model` | user/assistant as given |
//! | `system`, system messages | a first system message; system messages stay | `systemInstruction` | `system` |
//! | `temperature` | `temperature` | `generationConfig.temperature` | `temperature` (0 to 1 only) |
//! | `top_p` | `top_p` | `generationConfig.topP` | `top_p` |
//! | `stop` | `stop` (an array) | `generationConfig.stopSequences` | `stop_sequences` |
//! | `max_tokens` | `max_tokens` | `generationConfig.maxOutputTokens` | `max_tokens` (1024 if none) |
//!
//! Where a provider would refuse what the client sent (Anthropic: a conversation that does not start
//! with the user, a temperature above 1), the relay answers 400 `invalid_request` itself, naming the rule.

use serde::Serialize;

use crate::relay::api::{ApiError, GenerateRequest, Role};

/// The tokens asked of Anthropic when the client names no limit (the Messages API requires one).
pub const ANTHROPIC_DEFAULT_MAX_TOKENS: u32 = 1024;

/// The highest temperature Anthropic accepts.
pub const ANTHROPIC_MAX_TEMPERATURE: f64 = 1.0;

/// Serialize a request body; only a bug in serde could make this fail, and then we answer 500.
pub fn to_json<T: Serialize>(body: &T) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(body).map_err(|e| ApiError {
        status: 500,
        code: "internal",
        message: format!("could not serialize upstream request: {e}"),
    })
}

fn is_empty(stop: &&[String]) -> bool {
    stop.is_empty()
}

// --- OpenAI Chat Completions ------------------------------------------------------------------------------

#[derive(Serialize)]
struct OpenAiBody<'a> {
    model: &'a str,
    messages: Vec<TextMessage<'a>>,
    stream: bool,
    stream_options: OpenAiStreamOptions,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "is_empty")]
    stop: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
}

/// `include_usage`: a last chunk carries the token counts, so they come back at the end of the stream.
#[derive(Serialize)]
struct OpenAiStreamOptions {
    include_usage: bool,
}

/// A message as OpenAI and Anthropic both write it.
#[derive(Serialize)]
struct TextMessage<'a> {
    role: &'a str,
    content: &'a str,
}

/// The body of a streamed `POST /v1/chat/completions`.
pub fn openai(model: &str, req: &GenerateRequest) -> Result<Vec<u8>, ApiError> {
    let system = req.system.as_deref().map(|text| TextMessage {
        role: Role::System.as_str(),
        content: text,
    });
    let turns = req.turns().map(|(role, text)| TextMessage {
        role: role.as_str(),
        content: text,
    });
    to_json(&OpenAiBody {
        model,
        messages: system.into_iter().chain(turns).collect(),
        stream: true,
        stream_options: OpenAiStreamOptions {
            include_usage: true,
        },
        temperature: req.temperature,
        top_p: req.top_p,
        stop: &req.stop,
        max_tokens: req.max_tokens,
    })
}

// --- Gemini -----------------------------------------------------------------------------------------------

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GeminiBody<'a> {
    contents: Vec<GeminiContent<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_instruction: Option<GeminiSystem<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    generation_config: Option<GeminiGenerationConfig<'a>>,
}

#[derive(Serialize)]
struct GeminiContent<'a> {
    role: &'a str,
    parts: [GeminiPart<'a>; 1],
}

#[derive(Serialize)]
struct GeminiSystem<'a> {
    parts: [GeminiPart<'a>; 1],
}

#[derive(Serialize)]
struct GeminiPart<'a> {
    text: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GeminiGenerationConfig<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "is_empty")]
    stop_sequences: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    max_output_tokens: Option<u32>,
}

/// The body of a `streamGenerateContent?alt=sse` request (the model is in the path).
pub fn gemini(req: &GenerateRequest) -> Result<Vec<u8>, ApiError> {
    let system = req.system_text();
    let contents = req
        .turns()
        .filter_map(|(role, text)| {
            let role = match role {
                Role::User => "user",
                Role::Assistant => "model",
                Role::System => return None,
            };
            Some(GeminiContent {
                role,
                parts: [GeminiPart { text }],
            })
        })
        .collect();
    let config = GeminiGenerationConfig {
        temperature: req.temperature,
        top_p: req.top_p,
        stop_sequences: &req.stop,
        max_output_tokens: req.max_tokens,
    };
    let any_config = config.temperature.is_some()
        || config.top_p.is_some()
        || !config.stop_sequences.is_empty()
        || config.max_output_tokens.is_some();
    to_json(&GeminiBody {
        contents,
        system_instruction: system.as_deref().map(|text| GeminiSystem {
            parts: [GeminiPart { text }],
        }),
        generation_config: any_config.then_some(config),
    })
}

// --- Anthropic Messages -----------------------------------------------------------------------------------

#[derive(Serialize)]
struct AnthropicBody<'a> {
    model: &'a str,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<&'a str>,
    messages: Vec<TextMessage<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "is_empty")]
    stop_sequences: &'a [String],
    stream: bool,
}

/// The body of a streamed `POST /v1/messages`.
///
/// Anthropic takes system text apart and wants the conversation to start with the user, so a
/// conversation whose first user or assistant message is the assistant's is refused here (400
/// `invalid_request`), as is a temperature above 1, rather than sent to be refused upstream. Consecutive
/// messages of one role are sent as they are: the Messages API joins them into one turn.
pub fn anthropic(model: &str, req: &GenerateRequest) -> Result<Vec<u8>, ApiError> {
    let messages: Vec<TextMessage<'_>> = req
        .turns()
        .filter(|(role, _)| *role != Role::System)
        .map(|(role, text)| TextMessage {
            role: role.as_str(),
            content: text,
        })
        .collect();
    if messages.first().map(|m| m.role) != Some(Role::User.as_str()) {
        return Err(ApiError::bad_request(
            "invalid_request",
            "Anthropic requires the first non-system message of `messages` to have role \"user\"",
        ));
    }
    if req
        .temperature
        .is_some_and(|t| t > ANTHROPIC_MAX_TEMPERATURE)
    {
        return Err(ApiError::bad_request(
            "invalid_request",
            "Anthropic accepts a `temperature` from 0 to 1 only",
        ));
    }
    let system = req.system_text();
    to_json(&AnthropicBody {
        model,
        max_tokens: req.max_tokens.unwrap_or(ANTHROPIC_DEFAULT_MAX_TOKENS),
        system: system.as_deref(),
        messages,
        temperature: req.temperature,
        top_p: req.top_p,
        stop_sequences: &req.stop,
        stream: true,
    })
}

#[cfg(test)]
mod tests;
