//! What we send upstream: the HTTP/1.1 request for one generation, in the shape each provider expects.
//!
//! The relay speaks to two families of APIs that stream tokens as Server-Sent Events:
//!
//! * **OpenAI-compatible** (OpenAI, vLLM, llama.cpp, Ollama, ...): `POST /v1/chat/completions` with
//!   `"stream": true`, key in `Authorization: Bearer ...`;
//! * **Gemini**: `POST /v1beta/models/{model}:streamGenerateContent?alt=sse`, key in `x-goog-api-key`.
//!
//! [`build_request`] produces the *complete* request (head and body) as one byte vector. That keeps this
//! module sans-IO: the upstream connection only has to write those bytes, and tests can read them back.
//!
//! Three kinds of untrusted text end up in the request, and each gets the treatment its place demands:
//!
//! * the **prompt** goes into the JSON body, serialized by `serde_json`, never pasted into a string, so no
//!   prompt can break out of its JSON string;
//! * the **model name** may go into the request *path* (Gemini), so it is held to a strict alphabet with no
//!   `.`/`..` segments ([`validate_model`]): a client must not be able to walk our API key to another endpoint;
//! * the **API key** goes into a header, so [`ProviderKey::new`] refuses anything but visible ASCII: a CR or
//!   LF there would let whoever configured it inject headers. The key never goes into the URL, where proxies
//!   and access logs would record it, and [`ProviderKey`] refuses to print itself.
//!
//! Upstreams are plain `http://` for now. HTTPS (rustls) is a later step in `conn/`; [`parse_upstream_url`]
//! says so instead of silently talking cleartext to a port that expects TLS.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::relay::api::{ApiError, GenerateRequest};

/// Which family of API an upstream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    /// OpenAI's Chat Completions API, or any server that copies it.
    OpenAi,
    /// Google's Gemini API (Generative Language API).
    Gemini,
}

impl Provider {
    /// The model used when the client does not name one.
    pub fn default_model(self) -> &'static str {
        match self {
            Provider::OpenAi => "gpt-4o-mini",
            Provider::Gemini => "gemini-2.0-flash",
        }
    }

    /// The lowercase name used on the command line and in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::OpenAi => "openai",
            Provider::Gemini => "gemini",
        }
    }
}

impl FromStr for Provider {
    type Err = String;

    /// `"openai"` or `"gemini"`, ignoring ASCII case (environment variables are often written `OpenAI`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("openai") {
            Ok(Provider::OpenAi)
        } else if s.eq_ignore_ascii_case("gemini") {
            Ok(Provider::Gemini)
        } else {
            Err(format!(
                "unknown provider {s:?}: expected \"openai\" or \"gemini\""
            ))
        }
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
    /// Domain name or IP address, without brackets.
    pub host: String,
    /// TCP port (80 when the URL gives none).
    pub port: u16,
    /// A path prefix for every request, percent-encoded, without a trailing slash; `""` for none.
    pub base_path: String,
}

impl Origin {
    /// The value of the `Host` header: `host:port`, with `:80` omitted and IPv6 literals bracketed.
    pub fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == 80 {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

impl fmt::Display for Origin {
    /// The origin as a URL, e.g. `http://127.0.0.1:8080/base`, for logs and error messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.host_header(), self.base_path)
    }
}

/// Parse an upstream URL of the form `http://host[:port][/base]`.
///
/// The `url` crate does the hard parts (IPv6 literals, IDNA, percent-encoding, `.`/`..` in paths); this
/// function only refuses what the relay cannot honour: other schemes (including `https`, not supported
/// *yet*), credentials in the URL (keys belong in configuration, not in a URL that ends up in logs), a
/// query or a fragment (we append our own path and query), and port 0.
pub fn parse_upstream_url(s: &str) -> Result<Origin, String> {
    let url = url::Url::parse(s).map_err(|e| format!("invalid upstream URL {s:?}: {e}"))?;
    match url.scheme() {
        "http" => {}
        "https" => {
            return Err(format!(
                "upstream URL {s:?}: HTTPS upstreams are not supported yet (TLS to upstreams is planned); \
                 use an http:// upstream, e.g. a local model server"
            ));
        }
        other => {
            return Err(format!(
                "upstream URL {s:?}: unsupported scheme {other:?}, expected http://"
            ));
        }
    }
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
    let port = url.port_or_known_default().unwrap_or(80);
    if port == 0 {
        return Err(format!("upstream URL {s:?}: port 0 cannot be connected to"));
    }
    let base_path = url.path().trim_end_matches('/').to_string();
    Ok(Origin {
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
/// malformed or injected request.
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
    let host = origin.host_header();
    if !is_visible_ascii(&host) || !is_visible_ascii(&origin.base_path) {
        return Err(config_error(
            "upstream origin holds characters that cannot go into an HTTP request head",
        ));
    }

    let (path, auth, body) = match provider {
        Provider::OpenAi => {
            let path = format!("{}/v1/chat/completions", origin.base_path);
            let auth = key.map(|k| ("Authorization", format!("Bearer {}", k.expose())));
            (path, auth, openai_body(model, req)?)
        }
        Provider::Gemini => {
            // Gemini names models `models/{id}`; accept a client that already wrote the prefix.
            let id = model.strip_prefix("models/").unwrap_or(model);
            let path = format!(
                "{}/v1beta/models/{id}:streamGenerateContent?alt=sse",
                origin.base_path
            );
            let auth = key.map(|k| ("x-goog-api-key", k.expose().to_string()));
            (path, auth, gemini_body(req)?)
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
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));

    let mut out = head.into_bytes();
    out.extend_from_slice(&body);
    Ok(out)
}

fn config_error(message: impl Into<String>) -> ApiError {
    ApiError {
        status: 500,
        code: "invalid_config",
        message: message.into(),
    }
}

fn is_visible_ascii(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_graphic())
}

/// Serialize a request body; only a bug in serde could make this fail, and then we answer 500.
fn to_json<T: Serialize>(body: &T) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(body).map_err(|e| ApiError {
        status: 500,
        code: "internal",
        message: format!("could not serialize upstream request: {e}"),
    })
}

// The bodies are serde structs rather than `json!` so their field order is fixed and readable here, and so
// the prompt is escaped by the serializer: no user text is ever spliced into JSON by hand.

#[derive(Serialize)]
struct OpenAiBody<'a> {
    model: &'a str,
    messages: [OpenAiMessage<'a>; 1],
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
}

#[derive(Serialize)]
struct OpenAiMessage<'a> {
    role: &'a str,
    content: &'a str,
}

fn openai_body(model: &str, req: &GenerateRequest) -> Result<Vec<u8>, ApiError> {
    to_json(&OpenAiBody {
        model,
        messages: [OpenAiMessage {
            role: "user",
            content: &req.prompt,
        }],
        stream: true,
        max_tokens: req.max_tokens,
    })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GeminiBody<'a> {
    contents: [GeminiContent<'a>; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    generation_config: Option<GeminiGenerationConfig>,
}

#[derive(Serialize)]
struct GeminiContent<'a> {
    role: &'a str,
    parts: [GeminiPart<'a>; 1],
}

#[derive(Serialize)]
struct GeminiPart<'a> {
    text: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GeminiGenerationConfig {
    max_output_tokens: u32,
}

fn gemini_body(req: &GenerateRequest) -> Result<Vec<u8>, ApiError> {
    to_json(&GeminiBody {
        contents: [GeminiContent {
            role: "user",
            parts: [GeminiPart { text: &req.prompt }],
        }],
        generation_config: req.max_tokens.map(|n| GeminiGenerationConfig {
            max_output_tokens: n,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    const KEY: &str = "sk-test-SECRET-0123456789";

    /// A request split into its parts, for assertions.
    struct Parsed {
        request_line: String,
        headers: Vec<(String, String)>,
        body: Value,
    }

    impl Parsed {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    fn split(bytes: &[u8]) -> Parsed {
        let end = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = std::str::from_utf8(&bytes[..end]).unwrap();
        let body = &bytes[end + 4..];
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap().to_string();
        let headers: Vec<(String, String)> = lines
            .map(|l| {
                let (n, v) = l.split_once(": ").unwrap();
                (n.to_string(), v.to_string())
            })
            .collect();
        let parsed = Parsed {
            request_line,
            headers,
            body: serde_json::from_slice(body).unwrap(),
        };
        assert_eq!(
            parsed.header("Content-Length").unwrap(),
            body.len().to_string()
        );
        parsed
    }

    fn origin(s: &str) -> Origin {
        parse_upstream_url(s).unwrap()
    }

    fn gen_req(prompt: &str, model: Option<&str>, max_tokens: Option<u32>) -> GenerateRequest {
        GenerateRequest {
            prompt: prompt.into(),
            model: model.map(Into::into),
            max_tokens,
        }
    }

    #[test]
    fn provider_names() {
        assert_eq!("openai".parse::<Provider>(), Ok(Provider::OpenAi));
        assert_eq!("Gemini".parse::<Provider>(), Ok(Provider::Gemini));
        assert!(
            "anthropic"
                .parse::<Provider>()
                .unwrap_err()
                .contains("anthropic")
        );
        for p in [Provider::OpenAi, Provider::Gemini] {
            assert_eq!(p.to_string().parse::<Provider>(), Ok(p));
            validate_model(p.default_model()).unwrap();
        }
        assert_eq!(Provider::OpenAi.default_model(), "gpt-4o-mini");
        assert_eq!(Provider::Gemini.default_model(), "gemini-2.0-flash");
    }

    #[test]
    fn upstream_urls() {
        let o = origin("http://example.com");
        assert_eq!(
            o,
            Origin {
                host: "example.com".into(),
                port: 80,
                base_path: "".into()
            }
        );
        assert_eq!(o.host_header(), "example.com");
        assert_eq!(o.to_string(), "http://example.com");

        let o = origin("http://127.0.0.1:8080/");
        assert_eq!(
            (o.host.as_str(), o.port, o.base_path.as_str()),
            ("127.0.0.1", 8080, "")
        );
        assert_eq!(o.host_header(), "127.0.0.1:8080");

        let o = origin("http://LocalHost:9000/proxy/openai//");
        assert_eq!(
            (o.host.as_str(), o.base_path.as_str()),
            ("localhost", "/proxy/openai")
        );

        let o = origin("http://[::1]:8000/base");
        assert_eq!(o.host, "::1");
        assert_eq!(o.host_header(), "[::1]:8000");
        assert_eq!(origin("http://[::1]").host_header(), "[::1]");
        assert_eq!(origin("http://[::1]:80/x").to_string(), "http://[::1]/x");

        // Explicit :80 is the same origin as none.
        assert_eq!(origin("http://h:80"), origin("http://h"));
        // Odd characters in the base are percent-encoded by `url`, so they cannot break the request line.
        assert_eq!(origin("http://h/a b").base_path, "/a%20b");
    }

    #[test]
    fn rejected_upstream_urls() {
        let https = parse_upstream_url("https://api.openai.com").unwrap_err();
        assert!(
            https.contains("HTTPS upstreams are not supported yet"),
            "{https}"
        );
        for (url, needle) in [
            ("ftp://h", "scheme"),
            ("unix:/tmp/sock", "scheme"),
            ("http://", "invalid upstream URL"),
            ("http://:80", "invalid upstream URL"),
            ("example.com:8080", "scheme"),
            ("not a url", "invalid upstream URL"),
            ("", "invalid upstream URL"),
            ("http://h/?", "query"),
            ("http://h/v1?key=x", "query"),
            ("http://h/#frag", "fragment"),
            ("http://h:0", "port 0"),
            ("http://h:65536", "invalid upstream URL"),
        ] {
            let e = parse_upstream_url(url).unwrap_err();
            assert!(e.contains(needle), "{url:?}: {e}");
        }
        for url in [
            "http://user:hunter2@h",
            "http://user@h",
            "http://:hunter2@h",
        ] {
            let e = parse_upstream_url(url).unwrap_err();
            assert!(e.contains("credentials"), "{url}: {e}");
            assert!(!e.contains("hunter2"), "the password leaked: {e}");
        }
    }

    #[test]
    fn provider_key_hides_itself() {
        let k = ProviderKey::new(KEY).unwrap();
        assert_eq!(k.expose(), KEY);
        assert_eq!(format!("{k:?}"), "ProviderKey(***)");
        assert_eq!(format!("{k}"), "ProviderKey(***)");
        assert_eq!(format!("{:?}", Some(&k)), "Some(ProviderKey(***))");
    }

    #[test]
    fn provider_key_rejects_header_injection() {
        for (bad, needle) in [
            ("sk\r\nX-Evil: 1", "CR/LF"),
            ("sk\nX-Evil: 1", "CR/LF"),
            ("sk-abc\n", "trailing newline"),
            ("sk\0", "control"),
            ("sk\x7f", "control"),
            ("sk\u{85}", "control"),
            ("Bearer sk", "space"),
            ("sk\t", "control"),
            ("sk\u{2028}", "non-ASCII"),
            ("clé", "non-ASCII"),
            ("", "empty"),
        ] {
            let e = ProviderKey::new(bad).unwrap_err();
            assert!(e.contains(needle), "{bad:?}: {e}");
            assert!(!e.contains("sk"), "the key leaked: {e}");
        }
    }

    #[test]
    fn model_names() {
        for ok in [
            "gpt-4o-mini",
            "gemini-2.0-flash",
            "meta-llama/Llama-3.1-8B",
            "ft:gpt-4o:org:x",
            "a",
            "..a",
        ] {
            validate_model(ok).unwrap();
        }
        let long = "m".repeat(MAX_MODEL_LEN);
        validate_model(&long).unwrap();
        for bad in [
            "",
            &format!("{long}m"),
            "gpt 4",
            "gpt?x=1",
            "a#b",
            "a%2e%2e",
            "model\r\nX: y",
            "..",
            ".",
            "../../v1/files",
            "a/../b",
            "/abs",
            "trailing/",
            "a//b",
            "modèle",
        ] {
            assert!(validate_model(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn openai_request() {
        let key = ProviderKey::new(KEY).unwrap();
        let req = gen_req("Say \"hi\"\r\nHost: evil", Some("gpt-4o"), Some(32));
        let bytes = build_request(
            Provider::OpenAi,
            &origin("http://h:8080/base/"),
            Some(&key),
            &req,
            "dflt",
        )
        .unwrap();
        let p = split(&bytes);
        assert_eq!(p.request_line, "POST /base/v1/chat/completions HTTP/1.1");
        assert!(!p.request_line.contains(KEY));
        assert_eq!(p.header("Host"), Some("h:8080"));
        assert_eq!(p.header("Content-Type"), Some("application/json"));
        assert_eq!(p.header("Accept"), Some("text/event-stream"));
        assert_eq!(
            p.header("User-Agent"),
            Some(concat!("tokenpipe/", env!("CARGO_PKG_VERSION")))
        );
        assert_eq!(p.header("Authorization").unwrap(), format!("Bearer {KEY}"));
        assert_eq!(p.header("Connection"), None);
        assert_eq!(p.header("x-goog-api-key"), None);
        assert_eq!(p.headers.len(), 6, "{:?}", p.headers);
        assert_eq!(
            p.body,
            serde_json::json!({
                "model": "gpt-4o",
                "messages": [{"role": "user", "content": "Say \"hi\"\r\nHost: evil"}],
                "stream": true,
                "max_tokens": 32,
            })
        );
    }

    #[test]
    fn openai_request_defaults() {
        let req = gen_req("hello", None, None);
        let bytes = build_request(
            Provider::OpenAi,
            &origin("http://h"),
            None,
            &req,
            "gpt-4o-mini",
        )
        .unwrap();
        let p = split(&bytes);
        assert_eq!(p.request_line, "POST /v1/chat/completions HTTP/1.1");
        assert_eq!(p.header("Host"), Some("h"));
        assert_eq!(p.header("Authorization"), None);
        assert_eq!(p.body["model"], "gpt-4o-mini");
        assert!(p.body.get("max_tokens").is_none(), "{}", p.body);
    }

    #[test]
    fn gemini_request() {
        let key = ProviderKey::new(KEY).unwrap();
        let req = gen_req("ünïcode \u{1F600} \"q\"", Some("gemini-1.5-pro"), Some(100));
        let bytes = build_request(
            Provider::Gemini,
            &origin("http://[::1]:9000"),
            Some(&key),
            &req,
            "dflt",
        )
        .unwrap();
        let p = split(&bytes);
        assert_eq!(
            p.request_line,
            "POST /v1beta/models/gemini-1.5-pro:streamGenerateContent?alt=sse HTTP/1.1"
        );
        assert!(!p.request_line.contains(KEY));
        assert_eq!(p.header("Host"), Some("[::1]:9000"));
        assert_eq!(p.header("x-goog-api-key"), Some(KEY));
        assert_eq!(p.header("Authorization"), None);
        assert_eq!(p.header("Accept"), Some("text/event-stream"));
        assert_eq!(
            p.body,
            serde_json::json!({
                "contents": [{"role": "user", "parts": [{"text": "ünïcode \u{1F600} \"q\""}]}],
                "generationConfig": {"maxOutputTokens": 100},
            })
        );
    }

    #[test]
    fn gemini_request_defaults() {
        let req = gen_req("hello", None, None);
        let bytes = build_request(
            Provider::Gemini,
            &origin("http://h/g"),
            None,
            &req,
            "gemini-2.0-flash",
        )
        .unwrap();
        let p = split(&bytes);
        assert_eq!(
            p.request_line,
            "POST /g/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse HTTP/1.1"
        );
        assert_eq!(p.header("x-goog-api-key"), None);
        assert!(p.body.get("generationConfig").is_none(), "{}", p.body);

        // A model written with Gemini's `models/` prefix is not doubled.
        let req = gen_req("hello", Some("models/gemini-2.0-flash"), None);
        let bytes = build_request(Provider::Gemini, &origin("http://h"), None, &req, "x").unwrap();
        assert!(
            split(&bytes)
                .request_line
                .starts_with("POST /v1beta/models/gemini-2.0-flash:stream")
        );
    }

    #[test]
    fn bad_models_are_refused() {
        for provider in [Provider::OpenAi, Provider::Gemini] {
            let req = gen_req("p", Some("../../v1/files?x"), None);
            let e = build_request(provider, &origin("http://h"), None, &req, "ok").unwrap_err();
            assert_eq!((e.status, e.code), (400, "invalid_request"));
            assert!(e.message.contains("`model`"));

            let req = gen_req("p", None, None);
            let e =
                build_request(provider, &origin("http://h"), None, &req, "bad model").unwrap_err();
            assert_eq!((e.status, e.code), (500, "invalid_config"));
        }
    }

    #[test]
    fn hand_built_origin_cannot_inject() {
        let o = Origin {
            host: "h\r\nX-Evil: 1".into(),
            port: 80,
            base_path: String::new(),
        };
        let e =
            build_request(Provider::OpenAi, &o, None, &gen_req("p", None, None), "m").unwrap_err();
        assert_eq!((e.status, e.code), (500, "invalid_config"));
        let o = Origin {
            host: "h".into(),
            port: 80,
            base_path: "/a b".into(),
        };
        assert!(build_request(Provider::Gemini, &o, None, &gen_req("p", None, None), "m").is_err());
    }

    proptest! {
        #[test]
        fn parse_upstream_url_never_panics(s in "\\PC{0,64}") {
            if let Ok(o) = parse_upstream_url(&s) {
                prop_assert!(!o.host.is_empty());
                prop_assert!(!o.base_path.ends_with('/'));
                prop_assert!(is_visible_ascii(&o.host_header()) && is_visible_ascii(&o.base_path));
            }
        }

        #[test]
        fn any_prompt_survives_the_round_trip(prompt in "\\PC*", gemini in any::<bool>(), max in proptest::option::of(1u32..1000)) {
            let provider = if gemini { Provider::Gemini } else { Provider::OpenAi };
            let key = ProviderKey::new(KEY).unwrap();
            let bytes = build_request(provider, &origin("http://h"), Some(&key), &gen_req(&prompt, None, max), "m").unwrap();
            let p = split(&bytes);
            let sent = if gemini { &p.body["contents"][0]["parts"][0]["text"] } else { &p.body["messages"][0]["content"] };
            prop_assert_eq!(sent.as_str(), Some(prompt.as_str()));
            // Whatever the prompt holds, the head has exactly the headers we wrote.
            prop_assert_eq!(p.headers.len(), 6);
        }
    }
}
