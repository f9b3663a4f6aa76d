//! Pass-through, sans-IO: which paths pass, what reaches the upstream, what the client gets back.
//!
//! Test code only: its parent declares it `#[cfg(test)]`.

use super::*;
use crate::relay::providers::parse_upstream_url;

fn request(
    method: &str,
    path: &str,
    query: Option<&str>,
    headers: &[(&str, &str)],
    body: &str,
) -> Request {
    Request {
        method: method.into(),
        path: path.into(),
        query: query.map(str::to_string),
        version: 1,
        keep_alive: true,
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect(),
        body: body.as_bytes().to_vec(),
    }
}

#[test]
fn each_provider_passes_its_own_paths() {
    use Provider::*;
    assert_eq!(route(OpenAi, "POST", "/v1/chat/completions"), Some(Ok(())));
    assert_eq!(route(OpenAi, "POST", "/v1/responses"), Some(Ok(())));
    assert_eq!(route(OpenAi, "GET", "/v1/models"), Some(Ok(())));
    assert_eq!(
        route(OpenAi, "GET", "/v1/embeddings"),
        Some(Err(Miss::MethodNotAllowed("POST")))
    );
    assert_eq!(route(OpenAi, "POST", "/v1/messages"), None);
    assert_eq!(route(Anthropic, "POST", "/v1/messages"), Some(Ok(())));
    assert_eq!(route(Anthropic, "POST", "/v1/chat/completions"), None);
    assert_eq!(
        route(
            Gemini,
            "POST",
            "/v1beta/models/gemini-2.0-flash:streamGenerateContent"
        ),
        Some(Ok(()))
    );
    assert_eq!(
        route(Gemini, "POST", "/v1beta/models/g:generateContent"),
        Some(Ok(()))
    );
    assert_eq!(route(Gemini, "GET", "/v1beta/models"), Some(Ok(())));
    assert_eq!(
        route(Gemini, "POST", "/v1/models/g:generateContent"),
        Some(Ok(())),
        "google-genai's default"
    );
    assert_eq!(route(Gemini, "GET", "/v1/models"), Some(Ok(())));
    assert_eq!(route(Gemini, "POST", "/v1/messages"), None);
    assert_eq!(route(Gemini, "POST", "/v1/chat/completions"), None);
}

/// The client's credentials never reach the upstream; ours do, in the provider's header.
#[test]
fn credentials_are_ours_to_give() {
    let origin = parse_upstream_url("https://api.example.com/base").unwrap();
    let key = ProviderKey::new("server-key").unwrap();
    let req = request(
        "POST",
        "/v1beta/models/g:streamGenerateContent",
        Some("alt=sse&key=client-key&KEY=client2&%6B%65y=client3&kEy%20=client4"),
        &[
            ("Host", "relay"),
            ("x-goog-api-key", "client-key"),
            ("Authorization", "Bearer client"),
            ("api-key", "client-azure"),
            ("OpenAI-Organization", "client-org"),
            ("OpenAI-Project", "client-project"),
            ("Content-Type", "application/json"),
            ("Connection", "keep-alive, X-Hop"),
            ("X-Hop", "1"),
            ("Accept-Encoding", "gzip"),
            ("Content-Length", "2"),
        ],
        "{}",
    );
    let wire = String::from_utf8(
        build_request(Provider::Gemini, &origin, Some(&key), &req, &req.path).unwrap(),
    )
    .unwrap();
    assert!(wire.starts_with("POST /base/v1beta/models/g:streamGenerateContent?alt=sse HTTP/1.1\r\nHost: api.example.com\r\n"), "{wire}");
    assert!(
        !wire.contains("client"),
        "a client credential went upstream: {wire}"
    );
    assert!(wire.contains("x-goog-api-key: server-key\r\n"), "{wire}");
    assert!(
        wire.contains("Content-Type: application/json\r\n"),
        "{wire}"
    );
    for dropped in ["X-Hop", "Connection", "Accept-Encoding", "Host: relay"] {
        assert!(!wire.contains(dropped), "{dropped} went upstream: {wire}");
    }
    assert!(wire.ends_with("Content-Length: 2\r\n\r\n{}"), "{wire}");
}

/// The operator's organization and the upstream's cookies stay with the relay.
#[test]
fn the_operators_account_does_not_reach_clients() {
    let upstream = vec![
        ("openai-organization".to_string(), b"operator-org".to_vec()),
        ("Set-Cookie".to_string(), b"__cf_bm=x".to_vec()),
        ("x-request-id".to_string(), b"req-1".to_vec()),
    ];
    let head = String::from_utf8(response_head(
        200,
        &upstream,
        StreamFraming::Chunked(AfterReply::KeepAlive),
        true,
    ))
    .unwrap();
    assert!(
        !head.contains("operator-org") && !head.contains("__cf_bm"),
        "{head}"
    );
    assert!(head.contains("x-request-id: req-1\r\n"), "{head}");
}

#[test]
fn anthropic_gets_its_version_and_key_and_the_clients_beta() {
    let origin = parse_upstream_url("http://127.0.0.1:9").unwrap();
    let key = ProviderKey::new("sk-ant").unwrap();
    let req = request(
        "POST",
        "/v1/messages",
        None,
        &[("x-api-key", "client"), ("anthropic-beta", "b1")],
        "{}",
    );
    let wire = String::from_utf8(
        build_request(Provider::Anthropic, &origin, Some(&key), &req, &req.path).unwrap(),
    )
    .unwrap();
    assert!(wire.contains("anthropic-beta: b1\r\n"), "{wire}");
    assert!(wire.contains("anthropic-version: 2023-06-01\r\n"), "{wire}");
    assert!(
        wire.contains("x-api-key: sk-ant\r\n") && !wire.contains("client"),
        "{wire}"
    );
    let with_version = request(
        "POST",
        "/v1/messages",
        None,
        &[("anthropic-version", "2099-01-01")],
        "{}",
    );
    let wire = String::from_utf8(
        build_request(
            Provider::Anthropic,
            &origin,
            None,
            &with_version,
            &with_version.path,
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(wire.matches("anthropic-version").count(), 1, "{wire}");
    assert!(wire.contains("anthropic-version: 2099-01-01"), "{wire}");
}

#[test]
fn a_get_has_no_body_and_no_length() {
    let origin = parse_upstream_url("http://127.0.0.1:9").unwrap();
    let wire = build_request(
        Provider::OpenAi,
        &origin,
        None,
        &request("GET", "/v1/models", None, &[], ""),
        "/v1/models",
    )
    .unwrap();
    assert_eq!(
        wire,
        b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1:9\r\n\r\n"
    );
}

/// The client gets the upstream's status and end-to-end fields, re-framed for it.
#[test]
fn the_answer_keeps_its_status_and_fields_and_is_reframed() {
    let upstream: Vec<(String, Vec<u8>)> = [
        ("Content-Type", "application/json"),
        ("Retry-After", "7"),
        ("Content-Length", "40"),
        ("Connection", "keep-alive"),
        ("Keep-Alive", "timeout=5"),
    ]
    .iter()
    .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
    .collect();
    let head = String::from_utf8(response_head(
        429,
        &upstream,
        StreamFraming::Chunked(AfterReply::KeepAlive),
        true,
    ))
    .unwrap();
    assert_eq!(
        head,
        "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nRetry-After: 7\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    let head = String::from_utf8(response_head(200, &[], StreamFraming::UntilClose, true)).unwrap();
    assert_eq!(head, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
    let head = String::from_utf8(response_head(
        204,
        &[],
        StreamFraming::Chunked(AfterReply::KeepAlive),
        false,
    ))
    .unwrap();
    assert_eq!(head, "HTTP/1.1 204 No Content\r\n\r\n");
}

#[test]
fn error_details_come_from_every_providers_shape() {
    assert_eq!(
        error_detail(br#"{"error":{"message":"Rate limit reached","type":"x"}}"#),
        "Rate limit reached"
    );
    assert_eq!(
        error_detail(
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#
        ),
        "Overloaded"
    );
    assert_eq!(error_detail(b"  plain text  "), "plain text");
    let long = "x".repeat(500);
    assert_eq!(error_detail(long.as_bytes()).len(), 203);
}
