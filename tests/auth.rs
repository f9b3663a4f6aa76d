//! Client keys over real sockets: a relay with keys refuses requests without a valid one (401, JSON, a
//! challenge, the connection kept), serves those with one wherever each provider's SDK puts it, and passes
//! its own key, never the client's, to the upstream; health probes need none; keys never reach the log;
//! and a relay that would listen beyond loopback without keys refuses to start. All on 127.0.0.1.

mod common;

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;

use common::*;
use serde_json::{Value, json};
use tokenpipe::relay::auth::ClientKey;
use tokenpipe::relay::providers::{Provider, ProviderKey};

const ALICE: &str = "alice-client-key-000001";
const BOB: &str = "bob-client-key-00000002";
const WRONG: &str = "wrong-client-key-000003";
const RELAY_KEY: &str = "relay-upstream-key";

/// A relay speaking `provider`'s API to `mock` with the key [`RELAY_KEY`], and two client keys: alice's
/// (named) and bob's.
fn relay(mock: &Proc, provider: Provider) -> InProcess {
    InProcess::relay(&mock.url(), |c| {
        let u = c.first_upstream().expect("an upstream");
        u.provider = provider;
        u.key = Some(ProviderKey::new(RELAY_KEY).expect("key"));
        c.client_keys = vec![
            ClientKey::new(Some("alice"), ALICE).expect("alice"),
            ClientKey::new(None, BOB).expect("bob"),
        ];
    })
}

fn mock() -> Proc {
    spawn_mock(&["--tokens", "4", "--interval-ms", "1"])
}

/// `method target` with extra header fields and a JSON body for `POST`.
fn request(method: &str, target: &str, headers: &[(&str, &str)], body: Option<&Value>) -> Vec<u8> {
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut raw = format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for (n, v) in headers {
        raw.push_str(&format!("{n}: {v}\r\n"));
    }
    if method == "POST" {
        raw.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    raw.push_str("\r\n");
    raw.push_str(&body);
    raw.into_bytes()
}

fn generate(headers: &[(&str, &str)]) -> Vec<u8> {
    let body = json!({"prompt": "hello there", "max_tokens": 2});
    request("POST", "/api/v1/generate-stream", headers, Some(&body))
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

/// A 401 in the project's error shape, with a Bearer challenge; returns its message.
fn assert_unauthorized(resp: &Response, what: &str) -> String {
    assert_json_error(resp, 401, what);
    assert_eq!(
        resp.head.header("www-authenticate"),
        Some("Bearer"),
        "{what}"
    );
    let v = resp.json();
    assert_eq!(v["error"]["code"], "unauthorized", "{what}: {v}");
    v["error"]["message"].as_str().unwrap_or("").to_string()
}

/// The request the mock received last.
fn last_upstream_request(mock: &Proc) -> Value {
    let log = fetch(mock.addr, &get("/debug/requests")).json();
    log["requests"]
        .as_array()
        .and_then(|r| r.last())
        .cloned()
        .expect("a request in the mock's log")
}

/// No key: a 401 that says where a key goes; and the connection stays usable, so the same client can
/// try again on it with a key and be served.
#[test]
fn no_key_is_401_and_the_connection_stays() {
    let mock = mock();
    let relay = relay(&mock, Provider::OpenAi);
    let mut c = Conn::connect(relay.addr);
    c.send(&generate(&[]));
    let resp = c.read_response("no key");
    let message = assert_unauthorized(&resp, "no key");
    assert!(message.contains("Authorization: Bearer"), "{message}");
    assert!(!resp.head.says_close(), "{:?}", resp.head);
    c.send(&generate(&[("Authorization", &bearer(ALICE))]));
    let head = c.expect_head("the same connection, with a key");
    assert_stream_head(&head);
    let body = c.read_chunked_body().expect("the stream");
    assert!(body.complete, "{}", lossy(&body.payload));
}

/// A wrong key is "invalid client key" and nothing of it comes back; a right one streams, whichever
/// configured key it is.
#[test]
fn a_wrong_key_is_401_and_a_right_one_streams() {
    let mock = mock();
    let relay = relay(&mock, Provider::OpenAi);
    let resp = fetch(relay.addr, &generate(&[("Authorization", &bearer(WRONG))]));
    assert_eq!(
        assert_unauthorized(&resp, "wrong key"),
        "invalid client key"
    );
    assert!(!resp.text().contains(WRONG), "{}", resp.text());
    for key in [ALICE, BOB] {
        let resp = fetch(relay.addr, &generate(&[("Authorization", &bearer(key))]));
        assert_stream_head(&resp.head);
        assert!(resp.complete && resp.text().contains("data: "), "{key}");
    }
    // Without a key nothing is revealed, not even which paths exist.
    let resp = fetch(relay.addr, &get("/no/such/path"));
    assert_unauthorized(&resp, "an unknown path without a key");
    let resp = fetch(relay.addr, &get("/healthz"));
    assert_eq!(resp.status(), 200, "health needs no key");
    let mut c = Conn::connect(relay.addr);
    c.send(&request("HEAD", "/healthz", &[], None));
    assert_eq!(
        c.expect_head("HEAD /healthz").status(),
        200,
        "nor does its HEAD"
    );
}

/// OpenAI's SDK sends `Authorization: Bearer`: on its pass-through paths the upstream gets the relay's
/// key in that header instead.
#[test]
fn openai_paths_take_bearer_and_the_upstream_gets_the_relays_key() {
    let mock = mock();
    let relay = relay(&mock, Provider::OpenAi);
    let body =
        json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let auth = bearer(ALICE);
    let raw = request(
        "POST",
        "/v1/chat/completions",
        &[("Authorization", &auth)],
        Some(&body),
    );
    let resp = fetch(relay.addr, &raw);
    assert_eq!(resp.status(), 200, "{}", resp.text());
    assert!(resp.text().contains("data: [DONE]"), "{}", resp.text());
    let seen = last_upstream_request(&mock);
    let text = seen.to_string();
    assert!(
        !text.contains(ALICE),
        "the client's key went upstream: {text}"
    );
    let headers = seen["headers"].as_array().expect("headers");
    let ours = json!(["Authorization", format!("Bearer {RELAY_KEY}")]);
    assert!(headers.contains(&ours), "{text}");
}

/// Anthropic's SDK sends `x-api-key`: accepted on Anthropic's paths. The upstream gets the relay's key in
/// the same header, and nothing of the client's.
#[test]
fn anthropic_paths_take_x_api_key() {
    let mock = mock();
    let relay = relay(&mock, Provider::Anthropic);
    let body = json!({"model": "claude", "max_tokens": 4, "stream": true,
                      "messages": [{"role": "user", "content": "hi"}]});
    let resp = fetch(
        relay.addr,
        &request("POST", "/v1/messages", &[("x-api-key", ALICE)], Some(&body)),
    );
    assert_eq!(resp.status(), 200, "{}", resp.text());
    assert!(
        resp.text().contains("event: message_stop"),
        "{}",
        resp.text()
    );
    let seen = last_upstream_request(&mock);
    let text = seen.to_string();
    assert!(
        !text.contains(ALICE),
        "the client's key went upstream: {text}"
    );
    let headers = seen["headers"].as_array().expect("headers");
    assert!(headers.contains(&json!(["x-api-key", RELAY_KEY])), "{text}");
    // Not a key for the simple route, which is not Anthropic's path.
    let resp = fetch(relay.addr, &generate(&[("x-api-key", ALICE)]));
    assert!(assert_unauthorized(&resp, "x-api-key off its paths").contains("Bearer"));
}

/// google-genai sends `x-goog-api-key`; a URL may carry `key=`. Both work on Gemini's paths, and neither
/// reaches the upstream, which gets the relay's key.
#[test]
fn gemini_paths_take_x_goog_api_key_and_key_in_the_query() {
    let mock = mock();
    let relay = relay(&mock, Provider::Gemini);
    let body = json!({"contents": [{"role": "user", "parts": [{"text": "gemini words"}]}]});
    let path = "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse";
    let by_header = request("POST", path, &[("x-goog-api-key", BOB)], Some(&body));
    let by_query = request("POST", &format!("{path}&key={ALICE}"), &[], Some(&body));
    for (raw, key) in [(by_header, BOB), (by_query, ALICE)] {
        let resp = fetch(relay.addr, &raw);
        assert_eq!(resp.status(), 200, "{}", resp.text());
        assert!(resp.complete && resp.text().contains("data: "));
        let seen = last_upstream_request(&mock);
        let text = seen.to_string();
        assert!(
            !text.contains(key),
            "the client's key went upstream: {text}"
        );
        assert_eq!(seen["query"], "alt=sse", "{text}");
        let headers = seen["headers"].as_array().expect("headers");
        assert!(
            headers.contains(&json!(["x-goog-api-key", RELAY_KEY])),
            "{text}"
        );
    }
    let wrong = request("POST", path, &[("x-goog-api-key", WRONG)], Some(&body));
    assert_unauthorized(&fetch(relay.addr, &wrong), "a wrong x-goog-api-key");
}

/// `--client-key`'s variable takes a comma-separated list; the log, even at debug level, shows names and
/// paths but no key: not the right ones, not a wrong one, not one in a query.
#[test]
fn keys_never_reach_the_log() {
    let mock = mock();
    let keys = format!("{ALICE},{BOB}");
    let upstream = mock.url();
    let args = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "1",
        "--upstream",
        &upstream,
        "--provider",
        "gemini",
    ];
    let child = bare_command(
        &args,
        &[("TOKENPIPE_CLIENT_KEYS", &keys), ("RUST_LOG", "debug")],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawn tokenpipe");
    let mut child = Reaped(child);
    let stderr = collect(child.0.stderr.take().expect("stderr"));
    let addr = listening_addr(&mut child.0);
    for key in [ALICE, BOB] {
        let resp = fetch(addr, &generate(&[("Authorization", &bearer(key))]));
        assert_eq!(resp.status(), 200, "{key}: {}", resp.text());
    }
    let resp = fetch(addr, &generate(&[("Authorization", &bearer(WRONG))]));
    assert_eq!(resp.status(), 401);
    let resp = fetch(addr, &get(&format!("/v1beta/models?key={ALICE}")));
    assert_eq!(resp.status(), 200, "{}", resp.text());
    // Every answer was logged before it was sent; the pipe ends with the process.
    drop(child);
    let log = stderr.recv_timeout(IO_TIMEOUT).expect("the relay's stderr");
    assert!(
        log.contains("clients need a key: 2 configured") && log.contains("/v1beta/models -> "),
        "the log says too little to be checked: {log}"
    );
    for key in [ALICE, BOB, WRONG] {
        assert!(!log.contains(key), "{key} in the log:\n{log}");
    }
}

/// Beyond loopback without keys, the relay refuses to start, before it opens any socket; the message
/// says what to do.
#[test]
fn a_non_loopback_listener_without_keys_is_refused() {
    for listen in ["0.0.0.0:0", "[::]:0"] {
        let args = [
            "serve",
            "--listen",
            listen,
            "--upstream",
            "http://127.0.0.1:1",
        ];
        let child = bare_command(&args, &[])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tokenpipe");
        let mut child = Reaped(child);
        let stderr = collect(child.0.stderr.take().expect("stderr"));
        let message = stderr
            .recv_timeout(STARTUP_DEADLINE)
            .unwrap_or_else(|_| panic!("{listen}: still running"));
        let status = child.0.wait().expect("wait");
        assert!(!status.success(), "{listen}: {status}");
        assert!(
            message.contains(&format!("refusing to listen on {listen}"))
                && message.contains("--client-key")
                && message.contains("--allow-unauthenticated"),
            "{listen}: {message}"
        );
    }
}

/// `tokenpipe ARGS` with no `TOKENPIPE_*` or provider key variables but `env`.
fn bare_command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if key.starts_with("TOKENPIPE_") || key.ends_with("_API_KEY") {
            cmd.env_remove(key);
        }
    }
    cmd.args(args)
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    cmd
}

/// Everything `from` yields until its end (the process exited), sent on the channel.
fn collect(mut from: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut text = String::new();
        let _ = from.read_to_string(&mut text);
        let _ = tx.send(text);
    });
    rx
}

/// The address of the child's `listening on http://ADDR` line (its stdout is drained afterwards).
fn listening_addr(child: &mut Child) -> std::net::SocketAddr {
    use std::io::{BufRead, BufReader};
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("listening on http://") {
                let _ = tx.send(addr.to_string());
            }
        }
    });
    let addr = rx
        .recv_timeout(STARTUP_DEADLINE)
        .expect("a `listening on` line");
    addr.parse().expect("an address")
}

/// A child process, killed and reaped on drop (also when a test panics).
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
