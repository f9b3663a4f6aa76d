//! The providers' own APIs, passed through: what lets their SDKs use tokenpipe with only the base URL
//! changed.
//!
//! A pass-through request goes to the upstream as the client wrote it, except for what a proxy must
//! change (RFC 9110 §7.6): hop-by-hop fields are dropped in both directions (`http::headers`), the body is
//! re-framed, `Host` names the upstream, and credentials are ours to give: whatever the client sent
//! (`Authorization`, `x-api-key`, `x-goog-api-key`, `api-key`, a `key=` query parameter) never reaches the upstream,
//! and the configured key goes in the header the provider expects. The answer comes back the same way,
//! status and body unchanged (an upstream 429 stays a 429, with its `Retry-After`), re-framed as chunked
//! for an HTTP/1.1 client. Sans-IO: bytes and heads in, bytes out.

use super::api::ApiError;
use super::providers::{Origin, Provider, ProviderKey};
use crate::conn::client::{AfterReply, StreamFraming};
use crate::http::headers::{end_to_end, value};
use crate::http::request::Request;
use crate::http::response::reason;
use crate::http::route::{Miss, allow};

/// The `anthropic-version` sent when a client gave none.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// Client fields never forwarded: credentials (ours go instead: `api-key` is Azure's spelling), the
/// account our key bills (`OpenAI-Organization`/`OpenAI-Project` would let a client choose the operator's
/// organization or project), and codings we do not want (the relay passes bodies through unchanged, and a
/// compressed event stream would hide its events).
const NOT_FORWARDED: [&str; 9] = [
    "authorization",
    "x-api-key",
    "x-goog-api-key",
    "api-key",
    "openai-organization",
    "openai-project",
    "cookie",
    "accept-encoding",
    "expect",
];

/// Upstream fields never passed to clients: the operator's account (`openai-organization` names it) and
/// the upstream's cookies (set for the relay, not for its clients).
const NOT_RETURNED: [&str; 3] = ["openai-organization", "openai-project", "set-cookie"];

/// A query parameter that carries a credential: `key=` (Gemini's), whatever its case or escaping.
fn is_credential_param(param: &str) -> bool {
    let name = param.split('=').next().unwrap_or("");
    let mut decoded = Vec::with_capacity(name.len());
    let bytes = name.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                decoded.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b'+', ..) => {
                decoded.push(b' ');
                i += 1;
            }
            (b, ..) => {
                decoded.push(b);
                i += 1;
            }
        }
    }
    decoded.trim_ascii().eq_ignore_ascii_case(b"key")
}

/// Whether `path` is one of `provider`'s own API paths, and the methods it takes.
pub fn route(provider: Provider, method: &str, path: &str) -> Option<Result<(), Miss>> {
    let allowed = match provider {
        Provider::OpenAi => match path {
            "/v1/chat/completions" | "/v1/completions" | "/v1/responses" | "/v1/embeddings" => {
                "POST"
            }
            "/v1/models" => "GET, HEAD",
            p if p.starts_with("/v1/models/") => "GET, HEAD",
            _ => return None,
        },
        // Gemini serves its API under `/v1beta` and `/v1` (google-genai's default is `v1`).
        Provider::Gemini => match path.strip_prefix("/v1beta").or(path.strip_prefix("/v1")) {
            Some("/models") => "GET, HEAD",
            Some(p)
                if p.starts_with("/models/")
                    && (p.ends_with(":streamGenerateContent")
                        || p.ends_with(":generateContent")
                        || p.ends_with(":countTokens")) =>
            {
                "POST"
            }
            Some(p) if p.starts_with("/models/") && !p.contains(':') => "GET, HEAD",
            _ => return None,
        },
        Provider::Anthropic => match path {
            "/v1/messages" | "/v1/messages/count_tokens" => "POST",
            "/v1/models" => "GET, HEAD",
            p if p.starts_with("/v1/models/") => "GET, HEAD",
            _ => return None,
        },
    };
    Some(allow((), allowed, method))
}

/// The upstream request for a pass-through `req`: the client's method, `path` (the client's, or what is
/// left of it under a route prefix; under the origin's base), query (without `key=`), end-to-end fields
/// and body; our `Host` and key.
pub fn build_request(
    provider: Provider,
    origin: &Origin,
    key: Option<&ProviderKey>,
    req: &Request,
    path: &str,
) -> Result<Vec<u8>, ApiError> {
    let host = origin.checked_host()?;
    let mut out = Vec::with_capacity(512 + req.body.len());
    out.extend_from_slice(format!("{} {}{path}", req.method, origin.base_path).as_bytes());
    let query: Vec<&str> = req
        .query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty() && !is_credential_param(p))
        .collect();
    if !query.is_empty() {
        out.push(b'?');
        out.extend_from_slice(query.join("&").as_bytes());
    }
    out.extend_from_slice(format!(" HTTP/1.1\r\nHost: {host}\r\n").as_bytes());
    for (name, val) in end_to_end(&req.headers, &NOT_FORWARDED) {
        push_field(&mut out, name, val);
    }
    if provider == Provider::Anthropic && value(&req.headers, "anthropic-version").is_none() {
        push_field(&mut out, "anthropic-version", ANTHROPIC_VERSION.as_bytes());
    }
    if let Some(key) = key {
        let (name, val) = provider.auth_header(key);
        push_field(&mut out, name, val.as_bytes());
    }
    if !req.body.is_empty() || matches!(req.method.as_str(), "POST" | "PUT" | "PATCH") {
        push_field(
            &mut out,
            "Content-Length",
            req.body.len().to_string().as_bytes(),
        );
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&req.body);
    Ok(out)
}

fn push_field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The head a client gets for an upstream answer: its status and end-to-end fields, framed for this
/// client. `has_body` is false for answers that carry none (a `HEAD`'s, a 204, a 304, an empty one):
/// their `Content-Length`, if the upstream gave one, is passed on as it describes them.
pub fn response_head(
    status: u16,
    upstream: &[(String, Vec<u8>)],
    framing: StreamFraming,
    has_body: bool,
) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} {}\r\n", reason(status)).into_bytes();
    for (name, val) in end_to_end(upstream, &NOT_RETURNED) {
        push_field(&mut out, name, val);
    }
    match (has_body, framing) {
        (false, _) => {
            if let Some(length) = value(upstream, "content-length") {
                push_field(&mut out, "Content-Length", length.as_bytes());
            }
        }
        (true, StreamFraming::Chunked(_)) => push_field(&mut out, "Transfer-Encoding", b"chunked"),
        (true, StreamFraming::UntilClose) => {}
    }
    if framing.after() == AfterReply::Close {
        push_field(&mut out, "Connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// What an upstream said in an error body, for the message a client of the simple route gets: the
/// `error.message` every provider puts there, else the start of the text.
pub fn error_detail(body: &[u8]) -> String {
    const MAX: usize = 200;
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    match message.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}...", &message[..cut]),
        None => message,
    }
}

#[cfg(test)]
mod tests;
