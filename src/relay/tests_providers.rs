//! Tests of `providers`.
//!
//! Test code only: its parent declares it `#[cfg(test)]`.

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
        model: model.map(Into::into),
        max_tokens,
        ..GenerateRequest::from_prompt(prompt)
    }
}

#[test]
fn provider_names() {
    assert_eq!("openai".parse::<Provider>(), Ok(Provider::OpenAi));
    assert_eq!("Gemini".parse::<Provider>(), Ok(Provider::Gemini));
    assert_eq!("ANTHROPIC".parse::<Provider>(), Ok(Provider::Anthropic));
    assert!(
        "mistral"
            .parse::<Provider>()
            .unwrap_err()
            .contains("anthropic")
    );
    for p in [Provider::OpenAi, Provider::Gemini, Provider::Anthropic] {
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
            tls: false,
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
    let https = parse_upstream_url("https://api.openai.com").unwrap();
    assert!(https.tls);
    assert_eq!(
        (https.port, https.host_header()),
        (443, "api.openai.com".to_string())
    );
    assert_eq!(https.to_string(), "https://api.openai.com");
    let odd = parse_upstream_url("https://h:8443/v").unwrap();
    assert_eq!(
        (odd.host_header(), odd.to_string()),
        ("h:8443".to_string(), "https://h:8443/v".to_string())
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
            "stream_options": {"include_usage": true},
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
fn anthropic_request() {
    let key = ProviderKey::new(KEY).unwrap();
    let req = gen_req("hello", None, None);
    let bytes = build_request(
        Provider::Anthropic,
        &origin("http://h:8080/a"),
        Some(&key),
        &req,
        "claude-haiku-4-5",
    )
    .unwrap();
    let p = split(&bytes);
    assert_eq!(p.request_line, "POST /a/v1/messages HTTP/1.1");
    assert_eq!(p.header("x-api-key"), Some(KEY));
    assert_eq!(p.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(p.header("Authorization"), None);
    assert_eq!(p.headers.len(), 7, "{:?}", p.headers);
    assert_eq!(
        p.body,
        serde_json::json!({
            "model": "claude-haiku-4-5",
            "max_tokens": 1024,
            "messages": [{"role": "user", "content": "hello"}],
            "stream": true,
        })
    );
}

/// Every option of the simple route reaches the upstream, whichever provider it is.
#[test]
fn every_option_reaches_every_provider() {
    let body =
        br#"{"system":"s","prompt":"p","temperature":0.5,"top_p":0.5,"stop":"x","max_tokens":9}"#;
    let req = crate::relay::api::parse_generate(body).unwrap();
    for provider in [Provider::OpenAi, Provider::Gemini, Provider::Anthropic] {
        let bytes = build_request(provider, &origin("http://h"), None, &req, "m").unwrap();
        let body = split(&bytes).body.to_string();
        for needle in [r#""s""#, r#""p""#, "0.5", r#"["x"]"#, "9"] {
            assert!(body.contains(needle), "{provider}: {needle} not in {body}");
        }
    }
    // A rule of one provider is a 400 from that provider only.
    let req = crate::relay::api::parse_generate(br#"{"prompt":"p","temperature":2}"#).unwrap();
    let e = build_request(Provider::Anthropic, &origin("http://h"), None, &req, "m").unwrap_err();
    assert_eq!((e.status, e.code), (400, "invalid_request"));
    assert!(build_request(Provider::Gemini, &origin("http://h"), None, &req, "m").is_ok());
}

#[test]
fn bad_models_are_refused() {
    for provider in [Provider::OpenAi, Provider::Gemini, Provider::Anthropic] {
        let req = gen_req("p", Some("../../v1/files?x"), None);
        let e = build_request(provider, &origin("http://h"), None, &req, "ok").unwrap_err();
        assert_eq!((e.status, e.code), (400, "invalid_request"));
        assert!(e.message.contains("`model`"));

        let req = gen_req("p", None, None);
        let e = build_request(provider, &origin("http://h"), None, &req, "bad model").unwrap_err();
        assert_eq!((e.status, e.code), (500, "invalid_config"));
    }
}

#[test]
fn hand_built_origin_cannot_inject() {
    let o = Origin {
        tls: false,
        host: "h\r\nX-Evil: 1".into(),
        port: 80,
        base_path: String::new(),
    };
    let e = build_request(Provider::OpenAi, &o, None, &gen_req("p", None, None), "m").unwrap_err();
    assert_eq!((e.status, e.code), (500, "invalid_config"));
    let o = Origin {
        tls: false,
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
