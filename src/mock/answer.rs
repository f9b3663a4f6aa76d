//! From a provider endpoint and a request to the mock's answer: a stream to start ([`MockScript`]) or one
//! complete reply ([`Reply`]). Sans-IO, like the provider modules it calls; `Mock::on_request` only sends
//! what comes out.
//!
//! Streaming is what the request asks for, as with the real APIs: `"stream": true` in the body for OpenAI and
//! Anthropic (absent means a single JSON answer), the path for Gemini (`:streamGenerateContent` streams,
//! `:generateContent` does not). Errors use the endpoint's provider's error body.
//!
//! # Faults
//!
//! A request may ask for a fault ([`super::fault`]): the spec in its head is read before the body, so that a
//! status asked for there does not depend on a body that parses; a spec in the prompt is read with it. A
//! status replaces the answer with the provider's error body; every other fault is carried out by `Mock`
//! as it sends the answer, so it travels beside it, in the [`Decision`].

use super::embeddings;
use super::fault::{self, Fault, KeyCounts, RETRY_AFTER};
use super::routes::Endpoint;
use super::script::{Dialect, MockAsk, MockFormat, MockScript, parse_mock_request};
use super::{anthropic, gemini, openai, responses};
use crate::http::request::Request;
use crate::http::response::write_head;
use serde_json::Value;

/// Whose conventions an answer follows: its error body, mostly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    OpenAi,
    Gemini,
    Anthropic,
}

/// What the mock decided for one request: the answer, and the fault that shapes how it is sent (none, for
/// most requests).
#[derive(Debug)]
pub struct Decision {
    pub answer: Answer,
    pub fault: Fault,
}

impl Decision {
    /// `answer`, sent as it is.
    fn plain(answer: Answer) -> Decision {
        Decision {
            answer,
            fault: Fault::default(),
        }
    }
}

/// What the mock answers a request to a provider endpoint.
#[derive(Debug)]
pub enum Answer {
    /// Stream these events (`Mock::begin`).
    Stream(MockScript),
    /// Send this, whole.
    Reply(Reply),
}

/// A complete JSON response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    /// A `Retry-After` header, in seconds (status faults only).
    pub retry_after: Option<u32>,
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

    /// The answer to a request that asked for `status`, with `Retry-After: retry_after` (default
    /// [`RETRY_AFTER`]).
    pub fn fault(api: Api, status: u16, retry_after: Option<u32>) -> Reply {
        let message =
            format!("injected by the mock upstream: the request asked for status {status}");
        Reply {
            retry_after: Some(retry_after.unwrap_or(RETRY_AFTER)),
            ..Reply::error(api, status, &message)
        }
    }

    /// Appends the whole HTTP response, with `Content-Length`; no body when `head_only` (a `HEAD`), and
    /// `Connection: close` when `close`.
    pub fn write(&self, head_only: bool, close: bool, out: &mut Vec<u8>) {
        let length = self.body.len().to_string();
        let retry_after = self.retry_after.map(|s| s.to_string());
        let mut headers = vec![
            ("Content-Type", "application/json"),
            ("Content-Length", length.as_str()),
        ];
        if let Some(seconds) = &retry_after {
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

/// What `req` at `endpoint` gets: `tokens` tokens unless the request asks for fewer, and the fault it asks
/// for, if `keys` says that it applies (`times`).
pub fn answer(
    endpoint: Endpoint,
    req: &Request,
    format: MockFormat,
    tokens: u32,
    keys: &KeyCounts,
) -> Decision {
    let api = api_of(endpoint, format);
    match fault::from_head(req) {
        Err(why) => Decision::plain(Answer::Reply(Reply::error(api, 400, &why))),
        // The head's spec is the request's: the prompt is then ordinary text.
        Ok(Some(asked)) => decide(api, asked, keys, || {
            answer_body(endpoint, &req.body, tokens, api, false).0
        }),
        Ok(None) => match answer_body(endpoint, &req.body, tokens, api, true) {
            (answer, Some(asked)) => decide(api, asked, keys, || answer),
            (answer, None) => Decision::plain(answer),
        },
    }
}

/// `asked`, if it applies to this request: a status replaces `answer` (which then is never made), every
/// other fault travels with it. A request past its `times` is answered as if it had asked for nothing.
fn decide(api: Api, asked: Fault, keys: &KeyCounts, answer: impl FnOnce() -> Answer) -> Decision {
    if !keys.applies(&asked) {
        return Decision::plain(answer());
    }
    let answer = match asked.status {
        Some(status) => Answer::Reply(Reply::fault(api, status, asked.retry_after)),
        None => answer(),
    };
    Decision {
        answer,
        fault: asked,
    }
}

/// The answer the body asks for; with `read_prompt`, also the fault its prompt asks for, cut out of the
/// prompt before it is answered. A malformed spec is answered with 400.
fn answer_body(
    endpoint: Endpoint,
    body: &[u8],
    tokens: u32,
    api: Api,
    read_prompt: bool,
) -> (Answer, Option<Fault>) {
    let whole = |reply| (Answer::Reply(reply), None);
    let (dialect, parsed) = match endpoint {
        Endpoint::Models => return whole(Reply::ok(shared_models())),
        Endpoint::GeminiModels => return whole(Reply::ok(gemini::models())),
        Endpoint::Embeddings => return embed(body, read_prompt),
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
    let mut ask = match parsed {
        Ok(ask) => ask,
        Err(message) => return whole(Reply::error(api, 400, &message)),
    };
    let asked = if read_prompt {
        match fault::from_prompt(&mut ask.request.prompt) {
            Ok(asked) => asked,
            Err(why) => return whole(Reply::error(api, 400, &why)),
        }
    } else {
        None
    };
    let script = MockScript::in_dialect(dialect, &ask.request, tokens);
    if ask.stream {
        return (Answer::Stream(script), asked);
    }
    let g = script.generation();
    let body = match dialect {
        Dialect::OpenAiChat { .. } => openai::chat_completion(g),
        Dialect::OpenAiCompletion { .. } => openai::completion(g),
        Dialect::OpenAiResponses { max_output_tokens } => responses::response(g, max_output_tokens),
        Dialect::Gemini => gemini::generate_content(g),
        Dialect::Anthropic => anthropic::message(g),
    };
    (Answer::Reply(Reply::ok(body)), asked)
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

/// Embeddings: with `read_prompt`, every input is a prompt that may carry a spec (the first one counts).
fn embed(body: &[u8], read_prompt: bool) -> (Answer, Option<Fault>) {
    let whole = |reply| (Answer::Reply(reply), None);
    let mut req = match embeddings::parse_embeddings(body) {
        Ok(req) => req,
        Err(message) => return whole(Reply::error(Api::OpenAi, 400, &message)),
    };
    let asked = if read_prompt {
        match first_in(&mut req.inputs) {
            Ok(asked) => asked,
            Err(why) => return whole(Reply::error(Api::OpenAi, 400, &why)),
        }
    } else {
        None
    };
    (
        Answer::Reply(Reply::ok(embeddings::embeddings(&req))),
        asked,
    )
}

/// The spec of the first input that carries one.
fn first_in(inputs: &mut [String]) -> Result<Option<Fault>, String> {
    for input in inputs {
        if let Some(asked) = fault::from_prompt(input)? {
            return Ok(Some(asked));
        }
    }
    Ok(None)
}

#[cfg(test)]
#[path = "tests_answer.rs"]
mod tests;
