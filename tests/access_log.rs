//! The access log and the request id over real sockets: one line per request with what an operator needs,
//! in text or JSON; never a key, never the prompt; and an `X-Request-Id` taken from the client (or made)
//! that reaches the upstream and the log alike.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const CLIENT_KEY: &str = "client-key-for-the-access-log-1";
const PROMPT: &str = "the secret prompt PROMPT-MARKER-7731";

fn relay(mock: &Proc, format: &str) -> (Proc, Logs) {
    let upstream = mock.url();
    let args = ["--upstream", &upstream, "--provider", "gemini"];
    let keys = ["--client-key", CLIENT_KEY, "--access-log", format];
    spawn_relay_logged(&[&args[..], &keys[..]].concat(), "info")
}

fn access_line(logs: &mut Logs, id: &str) -> String {
    logs.wait_for(
        &format!("access line of {id}"),
        |l| l.contains("tokenpipe::access") && l.contains(id),
        Duration::from_secs(10),
    )
}

/// Requests that carry the key in each place a client may put it, and the prompt in the body.
fn requests() -> Vec<(&'static str, Vec<u8>)> {
    let body = format!(r#"{{"contents":[{{"role":"user","parts":[{{"text":"{PROMPT}"}}]}}]}}"#);
    let path = "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse";
    let req = |extra: &str, path: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{extra}\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    };
    vec![
        (
            "by-bearer",
            req(
                &format!("Authorization: Bearer {CLIENT_KEY}\r\nX-Request-Id: by-bearer\r\n"),
                path,
            ),
        ),
        (
            "by-header",
            req(
                &format!("x-goog-api-key: {CLIENT_KEY}\r\nX-Request-Id: by-header\r\n"),
                path,
            ),
        ),
        (
            "by-query",
            req(
                "X-Request-Id: by-query\r\n",
                &format!("{path}&key={CLIENT_KEY}"),
            ),
        ),
        (
            "refused",
            req(
                "Authorization: Bearer not-the-key-at-all-000\r\nX-Request-Id: refused\r\n",
                path,
            ),
        ),
    ]
}

#[test]
fn the_access_log_says_what_happened_and_holds_no_secret() {
    let mock = spawn_mock(&["--tokens", "3", "--interval-ms", "1"]);
    for format in ["text", "json"] {
        let (relay, mut logs) = relay(&mock, format);
        for (id, raw) in requests() {
            let resp = fetch(relay.addr, &raw);
            let line = access_line(&mut logs, id);
            let expected = if id == "refused" { 401 } else { 200 };
            assert_eq!(resp.status(), expected, "{id}: {}", resp.text());
            if format == "json" {
                let json: Value = serde_json::from_str(line.split_once(": ").unwrap().1)
                    .unwrap_or_else(|e| panic!("{line}: {e}"));
                assert_eq!(json["request_id"], id);
                assert_eq!(json["status"], expected);
                assert_eq!(json["method"], "POST");
                assert!(
                    json["path"]
                        .as_str()
                        .unwrap()
                        .ends_with(":streamGenerateContent")
                );
                if expected == 200 {
                    assert_eq!(json["upstream"], "default");
                    assert!(
                        json["ttfb_ms"].is_number() && json["ttft_ms"].is_number(),
                        "{line}"
                    );
                    assert!(json["bytes"].as_u64().unwrap() > 0);
                    assert!(json["reused"].is_boolean());
                }
            } else {
                assert!(line.contains(&format!(" {id} POST /v1beta/")), "{line}");
                assert!(line.contains(&format!(" {expected} ")), "{line}");
            }
        }
        for line in logs.collect() {
            for secret in [CLIENT_KEY, "PROMPT-MARKER", "alt=sse"] {
                assert!(
                    !line.contains(secret),
                    "{secret} in the log ({format}): {line}"
                );
            }
        }
    }
}

#[test]
fn the_request_id_reaches_the_upstream_and_the_log() {
    let mock = spawn_mock(&["--tokens", "2", "--interval-ms", "1"]);
    let (relay, mut logs) = spawn_relay_logged(&["--upstream", &mock.url()], "info");
    let body = prompt_body("hello", None, Some(2));
    let with_id = format!(
        "POST /api/v1/generate-stream HTTP/1.1\r\nHost: x\r\nX-Request-Id: client-id-42\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let strange = with_id.replace("client-id-42", "has spaces and \"quotes\"");
    for (raw, given) in [(with_id.as_bytes(), true), (strange.as_bytes(), false)] {
        let resp = fetch(relay.addr, raw);
        assert_eq!(resp.status(), 200, "{}", resp.text());
        let seen = fetch(mock.addr, &get("/debug/requests")).json();
        let last = seen["requests"]
            .as_array()
            .and_then(|r| r.last())
            .cloned()
            .unwrap();
        let ids: Vec<&str> = last["headers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h[0].as_str().unwrap().eq_ignore_ascii_case("x-request-id"))
            .map(|h| h[1].as_str().unwrap())
            .collect();
        assert_eq!(ids.len(), 1, "one id upstream: {last}");
        if given {
            assert_eq!(ids[0], "client-id-42");
        } else {
            assert_eq!(
                ids[0].len(),
                36,
                "an unusable id is replaced by ours: {ids:?}"
            );
        }
        access_line(&mut logs, ids[0]);
    }
}
