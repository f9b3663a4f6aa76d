//! From a provider endpoint and a request to the mock's answer: a stream to start ([`MockScript`]) or one
//! complete reply ([`Reply`]). Sans-IO, like the provider modules it calls; `Mock::on_request` only sends
//! what comes out.
//!
//! Streaming is what the request asks for, as with the real APIs: `"stream": true` in the body for OpenAI and
//! Anthropic (absent means a single JSON answer), the path for Gemini (`:streamGenerateContent` streams,
//! `:generateContent` does not). Errors use the endpoint's provider's error body.
//!
//! # Fault injection
//!
//! A request can ask the mock to fail, so that a relay test can check that an upstream's error status reaches
//! its client unchanged. Any of these, with NNN from 400 to 599, on any provider endpoint:
//!
//! * a prompt that is exactly `status:NNN` (the last user turn, or an embeddings input; spaces around it are
//!   ignored): it travels in the body, so it survives any relay;
//! * a header field `x-mock-status: NNN`;
//! * a query parameter `mock_status=NNN` (for `GET`s too).
//!
//! The answer is status NNN with `Retry-After: 7` and the provider's error body, whether or not the request
//! asked for a stream. The header and the query are checked before the body is parsed.

use super::embeddings;
use super::routes::Endpoint;
use super::script::{Dialect, MockAsk, MockFormat, MockScript, parse_mock_request};
use super::{anthropic, gemini, openai, responses};
use crate::http::request::Request;
use crate::http::response::write_head;
use serde_json::Value;

/// The `Retry-After` of an injected fault, in seconds.
pub const RETRY_AFTER: &str = "7";

/// Whose conventions an answer follows: its error body, mostly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    OpenAi,
    Gemini,
    Anthropic,
}

/// What the mock does with a request to a provider endpoint.
#[derive(Debug)]
pub enum Answer {
    /// Stream these events (`Mock::start`).
    Stream(MockScript),
    /// Send this, whole.
    Reply(Reply),
}

/// A complete JSON response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    /// A `Retry-After` header (injected faults only).
    pub retry_after: Option<&'static str>,
}

impl Reply {
    /// A `200` with `body`.
    pub fn ok(body: Vec<u8>) -> Reply {
        Reply {
            status: 200,
            body,
            retry_after: None,
        }
    }

    /// `status` with `api`'s error body.
    pub fn error(api: Api, status: u16, message: &str) -> Reply {
        let body = match api {
            Api::OpenAi => openai::error_body(status, message),
            Api::Gemini => gemini::error_body(status, message),
            Api::Anthropic => anthropic::error_body(status, message),
        };
        Reply {
            status,
            body,
            retry_after: None,
        }
    }

    /// The answer to a request that asked for `status` (see the module docs).
    pub fn fault(api: Api, status: u16) -> Reply {
        let message =
            format!("injected by the mock upstream: the request asked for status {status}");
        Reply {
            retry_after: Some(RETRY_AFTER),
            ..Reply::error(api, status, &message)
        }
    }

    /// Appends the whole HTTP response, with `Content-Length`; no body when `head_only` (a `HEAD`), and
    /// `Connection: close` when `close`.
    pub fn write(&self, head_only: bool, close: bool, out: &mut Vec<u8>) {
        let length = self.body.len().to_string();
        let mut headers = vec![
            ("Content-Type", "application/json"),
            ("Content-Length", length.as_str()),
        ];
        if let Some(seconds) = self.retry_after {
            headers.push(("Retry-After", seconds));
        }
        if close {
            headers.push(("Connection", "close"));
        }
        write_head(out, self.status, &headers);
        if !head_only {
            out.extend_from_slice(&self.body);
        }
    }
}

/// The provider whose conventions `endpoint` follows. `GET /v1/models` is everyone's: its list suits all
/// three ([`shared_models`]), but an injected fault can have only one error body, so `format` decides.
pub fn api_of(endpoint: Endpoint, format: MockFormat) -> Api {
    match endpoint {
        Endpoint::ChatCompletions
        | Endpoint::Completions
        | Endpoint::Responses
        | Endpoint::Embeddings => Api::OpenAi,
        Endpoint::Models => match format {
            MockFormat::OpenAi => Api::OpenAi,
            MockFormat::Gemini => Api::Gemini,
        },
        Endpoint::Messages => Api::Anthropic,
        Endpoint::GeminiGenerate { .. } | Endpoint::GeminiModels => Api::Gemini,
    }
}

/// The answer to `req` at `endpoint`: `tokens` tokens unless the request asks for fewer.
pub fn answer(endpoint: Endpoint, req: &Request, format: MockFormat, tokens: u32) -> Answer {
    let api = api_of(endpoint, format);
    if let Some(status) = header_fault(&req.headers).or_else(|| query_fault(req.query.as_deref())) {
        return Answer::Reply(Reply::fault(api, status));
    }
    let body = &req.body;
    let (dialect, parsed) = match endpoint {
        Endpoint::Models => return Answer::Reply(Reply::ok(shared_models())),
        Endpoint::GeminiModels => return Answer::Reply(Reply::ok(gemini::models())),
        Endpoint::Embeddings => return Answer::Reply(embed(body)),
        Endpoint::ChatCompletions => {
            let ask = openai::parse_chat(body);
            let include_usage = ask.as_ref().is_ok_and(|a| a.include_usage);
            (Dialect::OpenAiChat { include_usage }, ask)
        }
        Endpoint::Completions => {
            let ask = openai::parse_completion(body);
            let include_usage = ask.as_ref().is_ok_and(|a| a.include_usage);
            (Dialect::OpenAiCompletion { include_usage }, ask)
        }
        Endpoint::Responses => {
            let ask = responses::parse_responses(body);
            let max_output_tokens = ask.as_ref().ok().and_then(|a| a.request.max_tokens);
            (Dialect::OpenAiResponses { max_output_tokens }, ask)
        }
        Endpoint::Messages => (Dialect::Anthropic, anthropic::parse_messages(body)),
        Endpoint::GeminiGenerate { stream } => {
            let ask = parse_mock_request(body).map(|request| MockAsk {
                request,
                stream,
                include_usage: false,
            });
            (Dialect::Gemini, ask)
        }
    };
    let ask = match parsed {
        Ok(ask) => ask,
        Err(message) => return Answer::Reply(Reply::error(api, 400, &message)),
    };
    if let Some(status) = fault_status(&ask.request.prompt) {
        return Answer::Reply(Reply::fault(api, status));
    }
    let script = MockScript::in_dialect(dialect, &ask.request, tokens);
    if ask.stream {
        return Answer::Stream(script);
    }
    let g = script.generation();
    Answer::Reply(Reply::ok(match dialect {
        Dialect::OpenAiChat { .. } => openai::chat_completion(g),
        Dialect::OpenAiCompletion { .. } => openai::completion(g),
        Dialect::OpenAiResponses { max_output_tokens } => responses::response(g, max_output_tokens),
        Dialect::Gemini => gemini::generate_content(g),
        Dialect::Anthropic => anthropic::message(g),
    }))
}

/// `GET /v1/models`, which OpenAI, Anthropic and Gemini (its `v1` API, which the google-genai SDK uses) all
/// serve. The mock cannot tell their clients apart, so it answers all three at once: OpenAI's list, with
/// Anthropic's fields ([`openai::models`]), plus Gemini's `models` array. Each SDK reads its own fields.
pub fn shared_models() -> Vec<u8> {
    let mut list: Value = serde_json::from_slice(&openai::models()).unwrap_or_default();
    let gemini: Value = serde_json::from_slice(&gemini::models()).unwrap_or_default();
    if let (Some(list), Some(models)) = (list.as_object_mut(), gemini.get("models")) {
        list.insert("models".into(), models.clone());
    }
    list.to_string().into_bytes()
}

fn embed(body: &[u8]) -> Reply {
    match embeddings::parse_embeddings(body) {
        Err(message) => Reply::error(Api::OpenAi, 400, &message),
        Ok(req) => match req.inputs.iter().find_map(|t| fault_status(t)) {
            Some(status) => Reply::fault(Api::OpenAi, status),
            None => Reply::ok(embeddings::embeddings(&req)),
        },
    }
}

/// The status a prompt asks for: exactly `status:NNN`, NNN from 400 to 599, spaces around ignored.
pub fn fault_status(prompt: &str) -> Option<u16> {
    let digits = prompt.trim().strip_prefix("status:")?;
    error_status(digits)
}

/// The status a query asks for with `mock_status=NNN`.
pub fn query_fault(query: Option<&str>) -> Option<u16> {
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("mock_status="))
        .and_then(error_status)
}

/// The status a request asks for with a header field `x-mock-status: NNN`.
pub fn header_fault(headers: &[(String, Vec<u8>)]) -> Option<u16> {
    let (_, value) = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("x-mock-status"))?;
    error_status(std::str::from_utf8(value).ok()?.trim())
}

fn error_status(digits: &str) -> Option<u16> {
    if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|s| (400..=599).contains(s))
}

#[cfg(test)]
#[path = "tests_answer.rs"]
mod tests;
