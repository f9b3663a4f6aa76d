//! What we send upstream: the HTTP/1.1 request for one generation, in the shape each provider expects.
//!
//! The relay speaks to three families of APIs that stream tokens as Server-Sent Events:
//!
//! * **OpenAI-compatible** (OpenAI, vLLM, llama.cpp, Ollama, ...): `POST /v1/chat/completions` with
//!   `"stream": true`, key in `Authorization: Bearer ...`;
//! * **Gemini**: `POST /v1beta/models/{model}:streamGenerateContent?alt=sse`, key in `x-goog-api-key`;
//! * **Anthropic**: `POST /v1/messages` with `"stream": true`, key in `x-api-key`.
//!
//! [`build_request`] produces the *complete* request (head and body) as one byte vector. That keeps this
//! module sans-IO: the upstream connection only has to write those bytes, and tests can read them back.
//! The bodies, one client request in each provider's shape, are [`translate`]'s.
//!
//! Three kinds of untrusted text end up in the request, and each gets the treatment its place demands:
//!
//! * the **prompt** (and every other client text: messages, system, stop sequences) goes into the JSON
//!   body, serialized by `serde_json`, never pasted into a string, so no text can break out of its JSON
//!   string;
//! * the **model name** may go into the request *path* (Gemini), so it is held to a strict alphabet with no
//!   `.`/`..` segments ([`validate_model`]): a client must not be able to walk our API key to another endpoint;
//! * the **API key** goes into a header, so [`ProviderKey::new`] refuses anything but visible ASCII: a CR or
//!   LF there would let whoever configured it inject headers. The key never goes into the URL, where proxies
//!   and access logs would record it, and [`ProviderKey`] refuses to print itself.
//!
//! Upstreams are `http://` or `https://` ([`Origin::tls`]); TLS itself lives in the transport
//! (`conn::tls`).

use std::fmt;
use std::str::FromStr;

use crate::relay::api::{ApiError, GenerateRequest};

pub mod translate;

/// Which family of API an upstream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    /// OpenAI's Chat Completions API, or any server that copies it.
    OpenAi,
    /// Google's Gemini API (Generative Language API).
    Gemini,
    /// Anthropic's Messages API.
    Anthropic,
}

impl Provider {
    /// The model used when the client does not name one.
    pub fn default_model(self) -> &'static str {
        match self {
            Provider::OpenAi => "gpt-4o-mini",
            Provider::Gemini => "gemini-2.0-flash",
            Provider::Anthropic => "claude-haiku-4-5",
        }
    }

    /// The environment variable that holds the provider's key.
    pub fn key_var(self) -> &'static str {
        match self {
            Provider::OpenAi => "OPENAI_API_KEY",
            Provider::Gemini => "GEMINI_API_KEY",
            Provider::Anthropic => "ANTHROPIC_API_KEY",
        }
    }

    /// The provider's public API.
    pub fn public_api(self) -> &'static str {
        match self {
            Provider::OpenAi => "https://api.openai.com",
            Provider::Gemini => "https://generativelanguage.googleapis.com",
            Provider::Anthropic => "https://api.anthropic.com",
        }
    }

    /// The header that carries the key, as this provider wants it: never in the URL.
    pub fn auth_header(self, key: &ProviderKey) -> (&'static str, String) {
        match self {
            Provider::OpenAi => ("Authorization", format!("Bearer {}", key.expose())),
            Provider::Gemini => ("x-goog-api-key", key.expose().to_string()),
            Provider::Anthropic => ("x-api-key", key.expose().to_string()),
        }
    }

    /// The lowercase name used on the command line and in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::OpenAi => "openai",
            Provider::Gemini => "gemini",
            Provider::Anthropic => "anthropic",
        }
    }
}

impl FromStr for Provider {
    type Err = String;

    /// `"openai"`, `"gemini"` or `"anthropic"`, ignoring ASCII case (environment variables are often
    /// written `OpenAI`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Provider::OpenAi, Provider::Gemini, Provider::Anthropic]
            .into_iter()
            .find(|p| s.eq_ignore_ascii_case(p.as_str()))
            .ok_or_else(|| {
                format!("unknown provider {s:?}: expected \"openai\", \"gemini\" or \"anthropic\"")
            })
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an upstream lives: enough to connect (`host`, `port`) and to build paths (`base_path`).
///
/// `host` is a domain name (lowercased, IDNA-encoded) or an IP literal *without* brackets, ready for name
/// resolution; [`Origin::host_header`] adds the brackets that an IPv6 literal needs in a `Host` header.
/// Two origins are equal exactly when they can share pooled connections, hence `Hash`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    /// `https://`: TLS to the upstream, its certificate checked against `host`.
    pub tls: bool,
    /// Domain name or IP address, without brackets.
    pub host: String,
    /// TCP port (80, or 443 for `https`, when the URL gives none).
    pub port: u16,
    /// A path prefix for every request, percent-encoded, without a trailing slash; `""` for none.
    pub base_path: String,
}

impl Origin {
    /// The value of the `Host` header: `host:port`, with the scheme's default port omitted and IPv6
    /// literals bracketed.
    pub fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == self.default_port() {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

impl Origin {
    /// 443 for `https`, 80 for `http`.
    pub fn default_port(&self) -> u16 {
        if self.tls { 443 } else { 80 }
    }

    /// The `Host` header value, once checked that it and the base path can go into a request head (only a
    /// configuration could make them fail: a 500 then, never a malformed request).
    pub fn checked_host(&self) -> Result<String, ApiError> {
        let host = self.host_header();
        if !is_visible_ascii(&host) || !is_visible_ascii(&self.base_path) {
            return Err(config_error(
                "upstream origin holds characters that cannot go into an HTTP request head",
            ));
        }
        Ok(host)
    }

    /// `https` or `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }
}

impl fmt::Display for Origin {
    /// The origin as a URL, e.g. `http://127.0.0.1:8080/base`, for logs and error messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}{}",
            self.scheme(),
            self.host_header(),
            self.base_path
        )
    }
}

/// Parse an upstream URL of the form `http[s]://host[:port][/base]`.
///
/// The `url` crate does the hard parts (IPv6 literals, IDNA, percent-encoding, `.`/`..` in paths); this
/// function only refuses what the relay cannot honour: other schemes, credentials in the URL (keys belong
/// in configuration, not in a URL that ends up in logs), a query or a fragment (we append our own path and
/// query), and port 0.
pub fn parse_upstream_url(s: &str) -> Result<Origin, String> {
    let url = url::Url::parse(s).map_err(|e| format!("invalid upstream URL {s:?}: {e}"))?;
    let tls = match url.scheme() {
        "http" => false,
        "https" => true,
        other => {
            return Err(format!(
                "upstream URL {s:?}: unsupported scheme {other:?}, expected http:// or https://"
            ));
        }
    };
    if !url.username().is_empty() || url.password().is_some() {
        // Deliberately do not echo `s`: it holds a secret.
        return Err(
            "upstream URL must not contain credentials (user:pass@); configure the API key instead"
                .into(),
        );
    }
    if url.query().is_some() {
        return Err(format!("upstream URL {s:?} must not have a query (?...)"));
    }
    if url.fragment().is_some() {
        return Err(format!(
            "upstream URL {s:?} must not have a fragment (#...)"
        ));
    }
    let host = match url.host() {
        Some(url::Host::Domain(d)) => d.to_string(),
        Some(url::Host::Ipv4(a)) => a.to_string(),
        Some(url::Host::Ipv6(a)) => a.to_string(),
        None => return Err(format!("upstream URL {s:?} has no host")),
    };
    let port = url
        .port_or_known_default()
        .unwrap_or(if tls { 443 } else { 80 });
    if port == 0 {
        return Err(format!("upstream URL {s:?}: port 0 cannot be connected to"));
    }
    let base_path = url.path().trim_end_matches('/').to_string();
    Ok(Origin {
        tls,
        host,
        port,
        base_path,
    })
}

/// An API key for an upstream. It never prints itself: `Debug` and `Display` show `ProviderKey(***)`, so a
/// stray `{:?}` in a log line cannot leak it. Use [`ProviderKey::expose`] exactly where the key is sent.
#[derive(Clone)]
pub struct ProviderKey(String);

impl ProviderKey {
    /// Accept a key made only of visible ASCII (`!` to `~`).
    ///
    /// That rules out CR and LF (header injection), other control characters, spaces (a pasted
    /// `"Bearer sk-..."` would otherwise be sent as `Bearer Bearer sk-...`) and non-ASCII (usually a
    /// copy-paste accident). Error messages never include the key.
    pub fn new(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("API key is empty".into());
        }
        if let Some(c) = s.chars().find(|c| !c.is_ascii_graphic()) {
            let what = if c == '\r' || c == '\n' {
                "a line break (CR/LF): it would let the key inject HTTP headers; \
                 a key read from a file may need its trailing newline trimmed"
            } else if c.is_control() {
                "a control character"
            } else if !c.is_ascii() {
                "a non-ASCII character"
            } else {
                "a space (give the bare key, without \"Bearer \")"
            };
            return Err(format!("API key contains {what}"));
        }
        Ok(ProviderKey(s.to_string()))
    }

    /// The key itself, for the one place that writes it into a request.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ProviderKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProviderKey(***)")
    }
}

impl fmt::Display for ProviderKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProviderKey(***)")
    }
}

/// The longest model name we accept.
pub const MAX_MODEL_LEN: usize = 128;

/// Check that a model name is safe to put into a request path: 1 to 128 characters from
/// `A-Z a-z 0-9 . _ : / -`, and no empty, `.` or `..` path segment (so `../../v1/files` cannot steer the
/// request to another endpoint). Configuration should call this on its default model at startup.
pub fn validate_model(model: &str) -> Result<(), String> {
    let alphabet_ok = model
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'/' | b'-'));
    let segments_ok = model
        .split('/')
        .all(|seg| !seg.is_empty() && seg != "." && seg != "..");
    if (1..=MAX_MODEL_LEN).contains(&model.len()) && alphabet_ok && segments_ok {
        Ok(())
    } else {
        Err(format!(
            "field `model` must be 1 to {MAX_MODEL_LEN} characters from A-Z a-z 0-9 . _ : / - \
             without empty, \".\" or \"..\" path segments"
        ))
    }
}

/// The `User-Agent` we send, so upstream operators can tell relayed traffic apart.
const USER_AGENT: &str = concat!("tokenpipe/", env!("CARGO_PKG_VERSION"));

/// Build the complete HTTP/1.1 request (head and body) for one streamed generation.
///
/// The model is `req.model`, or else `default_model`. A bad client-chosen model is the client's fault
/// (400 `invalid_request`); a bad `default_model` or an `Origin` holding characters that cannot go into a
/// request head is the operator's (500 `invalid_config`): both are checked here so no input can produce a
/// malformed or injected request. So is a request the provider would refuse by its own rules (see
/// [`translate`]): 400 `invalid_request`.
///
/// Note that `origin.base_path` comes *before* the API's own path, which already starts with `/v1` or
/// `/v1beta`: configure `http://localhost:8000`, not `http://localhost:8000/v1`.
///
/// The request keeps the connection alive (HTTP/1.1's default), so the upstream connection can return to
/// the pool once the body has been read in full.
pub fn build_request(
    provider: Provider,
    origin: &Origin,
    key: Option<&ProviderKey>,
    req: &GenerateRequest,
    default_model: &str,
) -> Result<Vec<u8>, ApiError> {
    let model = match &req.model {
        Some(m) => {
            validate_model(m).map_err(|msg| ApiError::bad_request("invalid_request", msg))?;
            m.as_str()
        }
        None => {
            validate_model(default_model)
                .map_err(|msg| config_error(format!("default model: {msg}")))?;
            default_model
        }
    };
    let host = origin.checked_host()?;
    let auth = key.map(|k| provider.auth_header(k));
    let (path, body, extra) = match provider {
        Provider::OpenAi => {
            let path = format!("{}/v1/chat/completions", origin.base_path);
            (path, translate::openai(model, req)?, "")
        }
        Provider::Gemini => {
            // Gemini names models `models/{id}`; accept a client that already wrote the prefix.
            let id = model.strip_prefix("models/").unwrap_or(model);
            let path = format!(
                "{}/v1beta/models/{id}:streamGenerateContent?alt=sse",
                origin.base_path
            );
            (path, translate::gemini(req)?, "")
        }
        Provider::Anthropic => {
            let path = format!("{}/v1/messages", origin.base_path);
            let version = "anthropic-version: 2023-06-01\r\n";
            (path, translate::anthropic(model, req)?, version)
        }
    };

    let mut head = format!(
        "POST {path} HTTP/1.1\r\n\
         Host: {host}\r\n\
         User-Agent: {USER_AGENT}\r\n\
         Content-Type: application/json\r\n\
         Accept: text/event-stream\r\n"
    );
    if let Some((name, value)) = auth {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(extra);
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));

    let mut out = head.into_bytes();
    out.extend_from_slice(&body);
    Ok(out)
}

pub(super) fn config_error(message: impl Into<String>) -> ApiError {
    ApiError {
        status: 500,
        code: "invalid_config",
        message: message.into(),
    }
}

pub(super) fn is_visible_ascii(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
#[path = "tests_providers.rs"]
mod tests;
