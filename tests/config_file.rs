//! The `--config` file through the binary: `tokenpipe check-config` (exit status, every error with its
//! line), a relay whose file names two mock upstreams, where a route prefix reaches the second and the
//! providers' own paths the first, and the file's fallback, admission and deadlines at work. All on
//! 127.0.0.1; every wait bounded.

mod common;

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// How long a `check-config` or a refused start may take.
const EXIT_DEADLINE: Duration = Duration::from_secs(15);

/// A directory of its own for config files, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("tokenpipe-it-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write config");
        path.to_str().expect("UTF-8 temp path").to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The binary with no `TOKENPIPE_*` or provider key variables but `env`.
fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if key.starts_with("TOKENPIPE_") || key.ends_with("_API_KEY") {
            cmd.env_remove(key);
        }
    }
    cmd.args(args)
        .envs(env.iter().copied())
        .env("RUST_LOG", "warn");
    cmd
}

/// Runs `tokenpipe ARGS` to its end (at most [`EXIT_DEADLINE`]): its status, stdout and stderr.
fn run(args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String, String) {
    let mut child = command(args, env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tokenpipe");
    let (mut out, mut err) = (
        child.stdout.take().expect("stdout"),
        child.stderr.take().expect("stderr"),
    );
    let (tx, rx) = mpsc::channel();
    // Both pipes reach EOF when the process exits; the reader tells when.
    thread::spawn(move || {
        let (mut o, mut e) = (String::new(), String::new());
        let _ = out.read_to_string(&mut o);
        let _ = err.read_to_string(&mut e);
        let _ = tx.send((o, e));
    });
    let Ok((stdout, stderr)) = rx.recv_timeout(EXIT_DEADLINE) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("tokenpipe {args:?} did not exit within {EXIT_DEADLINE:?}");
    };
    let status = child.wait().expect("wait");
    (status, stdout, stderr)
}

fn example() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/tokenpipe.toml")
        .to_str()
        .expect("UTF-8 path")
        .to_string()
}

const KEYS: [(&str, &str); 3] = [
    ("OPENAI_API_KEY", "sk-test-openai"),
    ("GEMINI_API_KEY", "test-gemini"),
    ("ANTHROPIC_API_KEY", "sk-test-anthropic"),
];

#[test]
fn check_config_accepts_the_example() {
    let path = example();
    let (status, stdout, stderr) = run(&["check-config", &path], &KEYS);
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(
        stdout.trim_end(),
        format!("{path}: ok (4 upstreams, 1 route)")
    );
}

#[test]
fn check_config_names_each_missing_key_with_its_line() {
    let path = example();
    let (status, stdout, stderr) = run(&["check-config", &path], &KEYS[1..]);
    assert_eq!(status.code(), Some(1), "{stdout}{stderr}");
    let text = std::fs::read_to_string(&path).expect("read example");
    let line = 1 + text
        .lines()
        .position(|l| l.trim() == "key_env = \"OPENAI_API_KEY\"")
        .expect("the example names OPENAI_API_KEY");
    let expected = format!(
        "{path}:{line}: upstream \"openai\": `key_env`: the environment variable OPENAI_API_KEY is not set\n\
         {path}: 1 error\n"
    );
    assert_eq!(stderr, expected);
    assert!(stdout.is_empty(), "{stdout}");
}

#[test]
fn check_config_reports_every_error_with_its_line() {
    let dir = TempDir::new("check");
    let path = dir.write(
        "broken.toml",
        r#"workers = 0
listn = "127.0.0.1:8080"

[[upstream]]
name = "openai"
provider = "openai"
url = "https://api.openai.com"
key_env = "OPENAI_API_KEY"

[[upstream]]
name = "openai"
provider = "ollama"
url = "localhost:11434"
ca = "missing-ca.pem"

[[route]]
prefix = "local"
upstream = "local"
"#,
    );
    let (status, stdout, stderr) = run(&["check-config", &path], &[]);
    assert_eq!(status.code(), Some(1), "{stdout}{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    let expected: &[(&str, &str)] = &[
        ("1", "`workers` must be from 1 to 65535, not 0"),
        ("2", "unknown field `listn`"),
        ("8", "the environment variable OPENAI_API_KEY is not set"),
        ("11", "duplicate upstream name \"openai\" (first on line 5)"),
        ("12", "unknown provider \"ollama\""),
        ("13", "`url`: "),
        ("14", "`ca`: cannot open "),
        ("17", "prefix \"local\" must start with '/'"),
        ("18", "no upstream is named \"local\""),
    ];
    assert_eq!(lines.len(), expected.len() + 1, "{stderr}");
    for (got, (line, message)) in lines.iter().zip(expected) {
        let prefix = format!("{path}:{line}: ");
        assert!(
            got.starts_with(&prefix) && got.contains(message),
            "expected {prefix}…{message}…, got {got}"
        );
    }
    assert_eq!(
        lines[expected.len()],
        format!("{path}: {} errors", expected.len())
    );

    let (status, _, stderr) = run(&["check-config", "/nonexistent/tokenpipe.toml"], &[]);
    assert_eq!(status.code(), Some(1));
    assert!(
        stderr.starts_with("/nonexistent/tokenpipe.toml: cannot read the file"),
        "{stderr}"
    );
}

/// `{"total": N, "requests": [...]}` of a mock: the paths it was asked for.
fn paths_seen(mock: SocketAddr) -> Vec<String> {
    let log = fetch(mock, &get("/debug/requests")).json();
    log["requests"]
        .as_array()
        .expect("requests")
        .iter()
        .map(|r| r["path"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Two mock upstreams named in one file: `/second/...` reaches the second with the prefix removed, the
/// providers' own paths the first (the first upstream that speaks them), and the simple route the one
/// [generate] names. The file's `listen` and `workers` apply, since no option overrides them.
#[test]
fn a_route_prefix_reaches_the_second_upstream_and_other_paths_the_first() {
    let first = spawn_mock(&["--tokens", "3", "--interval-ms", "0"]);
    let second = spawn_mock(&["--tokens", "3", "--interval-ms", "0"]);
    let dir = TempDir::new("routes");
    let path = dir.write(
        "two.toml",
        &format!(
            r#"listen = "127.0.0.1:0"
workers = 1

[generate]
upstream = "second"

[[upstream]]
name = "first"
provider = "openai"
url = "{}"

[[upstream]]
name = "second"
provider = "openai"
url = "{}"

[[route]]
prefix = "/second"
upstream = "second"
"#,
            first.url(),
            second.url()
        ),
    );
    let relay = Proc::spawn(&["--config", &path]);
    assert_ne!(
        relay.addr.port(),
        8080,
        "the file's listen, not the default"
    );

    let chat = json!({"model": "m", "messages": [{"role": "user", "content": "which upstream"}], "stream": false});
    let direct = fetch(
        relay.addr,
        &post_json("/v1/chat/completions", &chat.to_string()),
    );
    assert_eq!(direct.status(), 200, "{}", direct.text());
    assert_eq!(paths_seen(first.addr), ["/v1/chat/completions"]);
    assert!(paths_seen(second.addr).is_empty());

    let routed = fetch(
        relay.addr,
        &post_json("/second/v1/chat/completions", &chat.to_string()),
    );
    assert_eq!(routed.status(), 200, "{}", routed.text());
    assert_eq!(
        paths_seen(second.addr),
        ["/v1/chat/completions"],
        "the prefix removed"
    );

    let payload = relay_stream(relay.addr, &prompt_body("simple route", None, Some(2)));
    assert!(!payload.is_empty());
    assert_eq!(
        paths_seen(second.addr).len(),
        2,
        "[generate] names the second"
    );
    assert_eq!(paths_seen(first.addr).len(), 1);

    let unknown = fetch(relay.addr, &post_json("/second/v1/messages", "{}"));
    assert_eq!(
        unknown.status(),
        404,
        "not a path of the second upstream's provider"
    );
    let log: Value = fetch(second.addr, &get("/debug/requests")).json();
    assert_eq!(log["total"], 2, "the 404 never left the relay");
}

/// The listener the relay must not take: bound here, so that a relay trying it would fail to start.
fn held_port() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").expect("bind")
}

/// Spawns `tokenpipe ARGS` with `env` and returns the address it prints, killing it on drop.
struct Started {
    child: std::process::Child,
    addr: SocketAddr,
}

impl Started {
    fn new(args: &[&str], env: &[(&str, &str)]) -> Started {
        let mut child = command(args, env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let (mut out, mut err) = (
            child.stdout.take().expect("stdout"),
            child.stderr.take().expect("stderr"),
        );
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            use std::io::BufRead;
            let mut lines = std::io::BufReader::new(&mut out).lines();
            let first = lines.find_map(|l| l.ok().filter(|l| l.starts_with("listening on ")));
            let mut rest = String::new();
            if first.is_none() {
                let _ = err.read_to_string(&mut rest);
            }
            let _ = tx.send(first.ok_or(rest));
            // Keep draining stdout so the child never blocks on it.
            let _ = std::io::copy(&mut out, &mut std::io::sink());
        });
        let line = match rx.recv_timeout(STARTUP_DEADLINE) {
            Ok(Ok(line)) => line,
            Ok(Err(stderr)) => panic!("tokenpipe {args:?} did not start: {stderr}"),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("tokenpipe {args:?} printed no `listening on` line in time");
            }
        };
        let addr = line
            .trim()
            .trim_start_matches("listening on http://")
            .parse()
            .unwrap_or_else(|e| panic!("{line:?}: {e}"));
        Started { child, addr }
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The file says to listen on a port that is taken: an option given on the command line, or in
/// `TOKENPIPE_LISTEN`, wins, and the relay starts elsewhere. The upstream options are refused.
#[test]
fn an_option_given_wins_over_the_file() {
    let mock = spawn_mock(&[]);
    let taken = held_port();
    let dir = TempDir::new("precedence");
    let path = dir.write(
        "taken.toml",
        &format!(
            "listen = \"{}\"\nworkers = 1\n[[upstream]]\nname = \"m\"\nprovider = \"openai\"\nurl = \"{}\"\n",
            taken.local_addr().expect("addr"),
            mock.url()
        ),
    );
    let by_flag = Started::new(&["--config", &path, "--listen", "127.0.0.1:0"], &[]);
    let by_env = Started::new(
        &["serve", "--config", &path],
        &[("TOKENPIPE_LISTEN", "127.0.0.1:0")],
    );
    let by_config_env = Started::new(
        &[],
        &[
            ("TOKENPIPE_CONFIG", &path),
            ("TOKENPIPE_LISTEN", "127.0.0.1:0"),
        ],
    );
    for relay in [&by_flag, &by_env, &by_config_env] {
        assert_ne!(relay.addr, taken.local_addr().expect("addr"));
        assert_eq!(fetch(relay.addr, &get("/healthz")).status(), 200);
    }

    let (status, _, stderr) = run(&["--config", &path], &[]);
    assert!(!status.success(), "the file's listen, taken: {stderr}");
    assert!(stderr.contains("cannot listen on"), "{stderr}");

    let (status, _, stderr) = run(&["--config", &path, "--upstream", &mock.url()], &[]);
    assert_eq!(status.code(), Some(1));
    assert!(
        stderr.contains("--upstream") && stderr.contains("--config"),
        "{stderr}"
    );
    let (status, _, stderr) = run(&["serve", "--config", &path], &[("TOKENPIPE_MODEL", "m")]);
    assert_eq!(status.code(), Some(1));
    assert!(
        stderr.contains("--model (TOKENPIPE_MODEL)") && stderr.contains("--config"),
        "{stderr}"
    );
}

/// A file whose first upstream refuses connections and falls back on a mock that takes one request at a
/// time (its own `max_concurrent`), with no retries: the keys of the file reach the running relay.
#[test]
fn the_files_fallback_and_own_admission_reach_the_relay() {
    let mock = spawn_mock(&["--tokens", "3", "--interval-ms", "0"]);
    let dir = TempDir::new("fallback");
    let path = dir.write(
        "fallback.toml",
        &format!(
            r#"listen = "127.0.0.1:0"
workers = 1
retries = 0
upstream_connect_timeout = "2s"

[[upstream]]
name = "primary"
provider = "openai"
url = "http://{}"
fallback = "backup"

[[upstream]]
name = "backup"
provider = "openai"
url = "{}"
max_concurrent = 1
queue = 0

[[route]]
prefix = "/backup"
upstream = "backup"
"#,
            closed_port_addr(),
            mock.url()
        ),
    );
    let relay = Proc::spawn(&["--config", &path]);
    let chat =
        json!({"model": "m", "messages": [{"role": "user", "content": "hello"}], "stream": false})
            .to_string();

    // The primary refuses: its fallback answers.
    let fell_back = fetch(relay.addr, &post_json("/v1/chat/completions", &chat));
    assert_eq!(fell_back.status(), 200, "{}", fell_back.text());
    assert_eq!(paths_seen(mock.addr), ["/v1/chat/completions"]);

    // The backup's one turn is taken by a slow answer: the next request gets a 503 at once, with no queue.
    let mut slow = Conn::connect(relay.addr);
    slow.send(&post_with_fault(
        "/backup/v1/chat/completions",
        &chat,
        "head-delay=1500ms",
    ));
    let deadline = Instant::now() + Duration::from_secs(10);
    while paths_seen(mock.addr).len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the slow request never reached the mock"
        );
        thread::sleep(Duration::from_millis(20));
    }
    let busy = fetch(relay.addr, &post_json("/backup/v1/chat/completions", &chat));
    assert_eq!(busy.status(), 503, "{}", busy.text());
    assert_eq!(busy.json()["error"]["code"], "upstream_busy");
    assert_eq!(slow.read_response("the slow answer").status(), 200);
}

/// The file's client head deadline applies; the same option in the environment wins over it.
#[test]
fn a_deadline_in_the_environment_wins_over_the_files() {
    let mock = spawn_mock(&[]);
    let dir = TempDir::new("deadline");
    let path = dir.write(
        "deadline.toml",
        &format!(
            "listen = \"127.0.0.1:0\"\nworkers = 1\nclient_head_timeout = \"300ms\"\n\
             [[upstream]]\nname = \"m\"\nprovider = \"openai\"\nurl = \"{}\"\n",
            mock.url()
        ),
    );
    let by_file = Started::new(&["--config", &path], &[]);
    let mut silent = Conn::connect(by_file.addr);
    assert_eq!(silent.read_response("a silent client").status(), 408);

    let by_env = Started::new(
        &["--config", &path],
        &[("TOKENPIPE_CLIENT_HEAD_TIMEOUT", "30s")],
    );
    let mut silent = Conn::connect(by_env.addr);
    let open = silent.wait_closed(Duration::from_millis(1500));
    assert!(
        open.is_err_and(|e| e.contains("still open")),
        "closed within 1.5 s: the file's 300 ms applied"
    );
}
