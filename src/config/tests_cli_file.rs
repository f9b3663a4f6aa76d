//! `--config` on the command line: the file's upstreams and routes make the `Config`; an option given on
//! the command line (or in the environment, which clap reports the same way) wins over the file's global
//! settings, which win over the defaults; the upstream options are refused next to the file.
//!
//! Test code only: its parent declares it `#[cfg(test)]`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

/// A config file of its own in the temporary directory, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, text: &str) -> TempFile {
        let dir = std::env::temp_dir().join(format!("tokenpipe-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join("relay.pem"), "").expect("write");
        std::fs::write(dir.join("relay.key"), "").expect("write");
        let path = dir.join("tokenpipe.toml");
        std::fs::write(&path, text).expect("write config");
        TempFile(path)
    }

    fn dir(&self) -> &Path {
        self.0.parent().expect("in a directory")
    }

    fn arg(&self) -> &str {
        self.0.to_str().expect("UTF-8 temp path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.dir());
    }
}

const FILE: &str = r#"
listen = "127.0.0.1:9999"
workers = 3
dns_ttl = 120
upstream_idle_timeout = 5
upstream_max_conns = 7
max_body_bytes = 4096
loop_warn_ms = 99
backlog = 12
tls_cert = "relay.pem"
tls_key = "relay.key"

[generate]
upstream = "second"

[[upstream]]
name = "first"
provider = "openai"
url = "http://127.0.0.1:9001"
key_env = "FIRST_KEY"

[[upstream]]
name = "second"
provider = "gemini"
url = "http://127.0.0.1:9002"
model = "gemini-test"

[[route]]
prefix = "/second"
upstream = "second"
"#;

/// `FIRST_KEY` set, and the provider variables too (which a file's upstreams do not read).
fn env(k: &str) -> Option<String> {
    match k {
        "FIRST_KEY" => Some("sk-first".into()),
        "OPENAI_API_KEY" | "GEMINI_API_KEY" => Some("not-this-one".into()),
        _ => None,
    }
}

/// The serve options of `tokenpipe ARGS`, with what was given recorded.
fn serve(args: &[&str]) -> ServeArgs {
    let cli = Cli::try_parse_sourced(std::iter::once("tokenpipe").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    match cli.command {
        Some(Command::Serve(s)) => *s,
        None => cli.serve,
        Some(other) => panic!("not serve: {other:?}"),
    }
}

#[test]
fn the_files_upstreams_routes_and_settings_make_the_config() {
    let file = TempFile::new("whole", FILE);
    let config = serve(&["--config", file.arg()])
        .config(env)
        .expect("config");
    let UpstreamConfig::Remote {
        upstreams,
        routes,
        generate,
    } = &config.upstream
    else {
        panic!("not remote: {:?}", config.upstream);
    };
    let names: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["first", "second"]);
    assert_eq!(
        upstreams[0].key.as_ref().map(|k| k.expose()),
        Some("sk-first")
    );
    assert!(
        upstreams[1].key.is_none(),
        "GEMINI_API_KEY is not read: the upstream names no key_env"
    );
    assert_eq!(upstreams[1].model, "gemini-test");
    assert_eq!(
        routes,
        &[RouteSpec {
            prefix: "/second".into(),
            upstream: "second".into()
        }]
    );
    assert_eq!(generate.as_deref(), Some("second"));
    // Every global setting of the file, in place of the defaults.
    assert_eq!(config.listen.to_string(), "127.0.0.1:9999");
    assert_eq!(config.workers, 3);
    assert_eq!(config.dns_ttl, Duration::from_secs(120));
    assert_eq!(config.idle_timeout, Duration::from_secs(5));
    assert_eq!(config.pool_max_idle, 7);
    assert_eq!(config.common.limits.max_body_bytes, 4096);
    assert_eq!(config.common.loop_warn, Duration::from_millis(99));
    assert_eq!(config.common.backlog, Some(12));
    let tls = (file.dir().join("relay.pem"), file.dir().join("relay.key"));
    assert_eq!(config.common.tls, Some(tls));
    // What the file does not set keeps its default.
    assert_eq!(config.common.stream_buffer, 64 * 1024);
    assert_eq!(config.common.fd_limit, FdLimit::Raise(None));
}

/// An option given wins over the file, also when its value is the default's; the rest still come from
/// the file. `serve --config` and the top-level `--config` behave the same.
#[test]
fn an_option_given_wins_over_the_file_and_the_file_over_the_default() {
    let file = TempFile::new("precedence", FILE);
    for sub in [&[][..], &["serve"]] {
        let mut args = sub.to_vec();
        args.extend([
            "--config",
            file.arg(),
            "--listen",
            "127.0.0.1:0",
            "--dns-ttl",
            "60",
            "--backlog",
            "5",
            "--tls-cert",
            "/flag/cert.pem",
            "--tls-key",
            "/flag/key.pem",
        ]);
        let config = serve(&args).config(env).expect("config");
        assert_eq!(config.listen.to_string(), "127.0.0.1:0", "{args:?}");
        assert_eq!(
            config.dns_ttl,
            Duration::from_secs(60),
            "60 is the default, but it was given"
        );
        assert_eq!(config.common.backlog, Some(5));
        let flags = (
            PathBuf::from("/flag/cert.pem"),
            PathBuf::from("/flag/key.pem"),
        );
        assert_eq!(config.common.tls, Some(flags), "the pair from the options");
        assert_eq!(config.workers, 3, "not given: the file's");
        assert_eq!(config.idle_timeout, Duration::from_secs(5));
    }
}

/// What clap reports as given: the command line and the environment, not a default.
#[test]
fn given_is_what_clap_did_not_default() {
    let given = serve(&["--listen", "127.0.0.1:0", "--dns-ttl", "60"]).given;
    assert!(given.has("listen") && given.has("dns_ttl"));
    for id in [
        "workers",
        "upstream_idle_timeout",
        "loop_warn_ms",
        "max_body_bytes",
        "config",
    ] {
        assert!(!given.has(id), "{id}");
    }
    let sub = serve(&["serve", "--workers", "2"]).given;
    assert!(sub.has("workers") && !sub.has("listen"));
    // Parsed without the sources (a plain `Cli::parse`), every option counts as given: a file never
    // overrides what may have been explicit.
    assert!(Given::default().has("listen"));
}

#[test]
fn the_upstream_options_are_refused_with_a_file() {
    let file = TempFile::new("refused", FILE);
    for (flag, value) in [
        ("--upstream", "http://127.0.0.1:1"),
        ("--provider", "gemini"),
        ("--model", "m"),
        ("--upstream-ca", "/ca.pem"),
    ] {
        let err = serve(&["--config", file.arg(), flag, value])
            .config(env)
            .expect_err("accepted");
        assert!(
            err.contains(flag) && err.contains("--config"),
            "{flag}: {err}"
        );
    }
}

/// The file's problems reach the caller as `FILE:LINE: message`, every one of them.
#[test]
fn a_broken_file_is_refused_with_every_problem() {
    let broken = FILE
        .replace("FIRST_KEY", "MISSING_KEY")
        .replace("/second", "second");
    let file = TempFile::new("broken", &broken);
    let err = serve(&["--config", file.arg()])
        .config(env)
        .expect_err("accepted");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(
        lines[0].starts_with(&format!("{}:20: ", file.arg())),
        "{err}"
    );
    assert!(lines[0].contains("MISSING_KEY is not set"), "{err}");
    assert!(
        lines[1].starts_with(&format!("{}:29: ", file.arg())),
        "{err}"
    );
}

#[test]
fn check_config_takes_a_file() {
    let file = TempFile::new("check", FILE);
    let cli = Cli::try_parse_sourced(["tokenpipe", "check-config", file.arg()]).expect("parse");
    let Some(Command::CheckConfig(args)) = cli.command else {
        panic!("not check-config");
    };
    assert_eq!(
        args.run(env),
        Ok(format!("{}: ok (2 upstreams, 1 route)", file.arg()))
    );
    assert!(
        args.run(|_| None)
            .expect_err("FIRST_KEY unset")
            .contains(":20: ")
    );
    assert!(
        Cli::try_parse_sourced(["tokenpipe", "check-config"]).is_err(),
        "FILE is required"
    );
}

/// The timeouts, admission, retries, breaker and rate limit of a file, with an upstream that has
/// admission limits of its own and a fallback.
const RESILIENT: &str = r#"
client_head_timeout = "5s"
client_body_timeout = 30
keepalive_timeout = "90s"
client_write_timeout = "45s"
upstream_connect_timeout = "3s"
tls_handshake_timeout = "4s"
upstream_head_timeout = "2m"
first_token_timeout = "90s"
stream_idle_timeout = "1m"
stream_timeout = "1h"
sse_keepalive = 0
upstream_max_concurrent = 32
upstream_queue = 100
upstream_queue_timeout = "2500ms"
retries = 3
retry_backoff = "100ms"
retry_max_wait = "10s"
breaker_failures = 7
breaker_cooldown = "1m"
rate_limit = 2.5
rate_burst = 10

[[upstream]]
name = "cloud"
provider = "openai"
url = "http://127.0.0.1:9001"
fallback = "local"

[[upstream]]
name = "local"
provider = "openai"
url = "http://127.0.0.1:9002"
max_concurrent = 2
"#;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// The upstreams of a remote config.
fn upstreams(config: &Config) -> &[UpstreamSpec] {
    match &config.upstream {
        UpstreamConfig::Remote { upstreams, .. } => upstreams,
        other => panic!("not remote: {other:?}"),
    }
}

/// Every new setting of the file reaches the `Config`, in place of the defaults.
#[test]
fn the_files_timeouts_and_limits_make_the_config() {
    let file = TempFile::new("resilient", RESILIENT);
    let config = serve(&["--config", file.arg()])
        .config(env)
        .expect("config");
    let client = &config.common.client;
    assert_eq!(
        (client.head, client.body, client.keepalive, client.write),
        (secs(5), secs(30), secs(90), secs(45))
    );
    let t = &config.timeouts;
    assert_eq!(
        (t.connect, t.handshake, t.head, t.first_token, t.idle),
        (secs(3), secs(4), secs(120), secs(90), secs(60))
    );
    assert_eq!(t.total, Some(secs(3600)));
    assert_eq!(t.sse_keepalive, None, "0: off");
    let a = &config.admission;
    assert_eq!(
        (a.max_concurrent, a.queue, a.queue_timeout),
        (Some(32), 100, Duration::from_millis(2500))
    );
    let r = &config.retry;
    assert_eq!(
        (r.max, r.backoff, r.max_wait),
        (3, Duration::from_millis(100), secs(10))
    );
    assert_eq!(
        (config.breaker.failures, config.breaker.cooldown),
        (7, secs(60))
    );
    let rate = config.rate_limit.expect("a rate limit");
    assert_eq!((rate.per_second, rate.burst), (2.5, 10.0));
    let [cloud, local] = upstreams(&config) else {
        panic!("two upstreams");
    };
    assert_eq!(cloud.fallback.as_deref(), Some("local"));
    assert!(
        cloud.admission.is_none(),
        "no limits of its own: the global ones"
    );
    assert_eq!(local.fallback, None);
}

/// An option given (on the command line, or in its variable: clap says "given" for both) wins over the
/// file's new settings too, also when its value is the default's; what is not given comes from the file.
#[test]
fn an_option_given_wins_over_the_files_timeouts_and_limits() {
    let file = TempFile::new("resilient-given", RESILIENT);
    let config = serve(&[
        "--config",
        file.arg(),
        "--client-head-timeout",
        "10s",
        "--stream-timeout",
        "0",
        "--sse-keepalive",
        "20s",
        "--retries",
        "0",
        "--rate-limit",
        "0",
        "--upstream-queue",
        "64",
    ])
    .config(env)
    .expect("config");
    assert_eq!(
        config.common.client.head,
        secs(10),
        "the default, but given"
    );
    assert_eq!(config.common.client.body, secs(30), "not given: the file's");
    assert_eq!(config.timeouts.total, None, "off, given");
    assert_eq!(config.timeouts.sse_keepalive, Some(secs(20)));
    assert_eq!(config.retry.max, 0);
    assert_eq!(config.retry.backoff, Duration::from_millis(100));
    assert!(config.rate_limit.is_none(), "--rate-limit 0: off");
    assert_eq!(config.admission.queue, 64);
    assert_eq!(config.admission.max_concurrent, Some(32));
}

/// An upstream's own `max_concurrent` wins over the global cap for it alone; its queue and queue deadline,
/// which it does not give, are the global ones, whatever made those (here the file, then an option).
#[test]
fn an_upstreams_own_admission_overrides_the_global_one() {
    let file = TempFile::new("own-admission", RESILIENT);
    let config = serve(&["--config", file.arg()])
        .config(env)
        .expect("config");
    let local = &upstreams(&config)[1];
    let own = local.admission.expect("limits of its own");
    assert_eq!(
        (own.max_concurrent, own.queue, own.queue_timeout),
        (Some(2), 100, Duration::from_millis(2500))
    );
    assert_eq!(config.admission.max_concurrent, Some(32), "the others' cap");

    let config = serve(&[
        "--config",
        file.arg(),
        "--upstream-max-concurrent",
        "8",
        "--upstream-queue-timeout",
        "9s",
    ])
    .config(env)
    .expect("config");
    let own = upstreams(&config)[1].admission.expect("limits of its own");
    assert_eq!(own.max_concurrent, Some(2), "its own, over the option");
    assert_eq!(
        own.queue_timeout,
        secs(9),
        "the global one, from the option"
    );
    assert_eq!(config.admission.max_concurrent, Some(8));

    // Its own 0 is no cap, as the global option's 0 is; queue and deadline of its own too.
    let text = RESILIENT.replace(
        "max_concurrent = 2\n",
        "max_concurrent = 0\nqueue = 1\nqueue_timeout = \"1s\"\n",
    );
    let file = TempFile::new("own-admission-all", &text);
    let config = serve(&["--config", file.arg()])
        .config(env)
        .expect("config");
    let own = upstreams(&config)[1].admission.expect("limits of its own");
    assert_eq!(
        (own.max_concurrent, own.queue, own.queue_timeout),
        (None, 1, secs(1))
    );
}
