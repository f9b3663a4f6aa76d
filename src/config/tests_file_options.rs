//! The settings that are one option's value (`file::options`): the table against the options themselves,
//! the new keys (timeouts, admission, retries, breaker, rate limit), each bad value with its line, and an
//! `[[upstream]]`'s own admission limits and `fallback`.
//!
//! Test code only: its parent declares it `#[cfg(test)]`.

use super::options::{Kind, OPTIONS};
use super::raw::RawSettings;
use super::tests::{assert_problems, no_env, problems, valid};
use super::*;
use crate::config::Cli;
use clap::{CommandFactory, Parser};

const UPSTREAM: &str = "[[upstream]]\nname = \"a\"\nprovider = \"openai\"\nurl = \"http://a\"\n";

/// Each key of the table is an option of `serve`: the same id (which is what precedence asks clap about),
/// the long name with dashes, and a `TOKENPIPE_*` variable.
#[test]
fn every_row_is_an_option_of_serve() {
    let command = Cli::command();
    for (key, _) in OPTIONS {
        let arg = command
            .get_arguments()
            .find(|a| a.get_id() == key)
            .unwrap_or_else(|| panic!("{key} is not an option's id"));
        assert_eq!(arg.get_long(), Some(key.replace('_', "-").as_str()));
        let env = format!("TOKENPIPE_{}", key.to_uppercase());
        assert_eq!(arg.get_env(), Some(std::ffi::OsStr::new(&env)), "{key}");
    }
}

/// What the command line takes, the file takes, and what it refuses, the file refuses: the bounds of
/// every number, and for the values the command line reads as text (durations, the rate, the address),
/// the same text as a TOML string, or as a number where it is one.
#[test]
fn the_file_accepts_what_the_command_line_accepts() {
    let by_clap = |key: &str, text: &str| {
        let flag = format!("--{}={text}", key.replace('_', "-"));
        Cli::try_parse_from(["tokenpipe", flag.as_str()]).is_ok()
    };
    let by_file = |key: &str, toml: &str| {
        parse(
            &format!("{key} = {toml}\n{UPSTREAM}"),
            Path::new(""),
            &no_env,
        )
        .is_ok()
    };
    let durations = [
        "0",
        "30",
        "30s",
        "500ms",
        "1.5",
        "2m",
        "1h",
        "86400",
        "86401",
        "10 parsecs",
        "-5",
        "1e3",
        "",
    ];
    let rates = ["0", "2.5", "25", "1000000", "1000001", "-1", "fast", "NaN"];
    let addresses = ["127.0.0.1:0", "[::1]:8080", "8080", "70000", "nowhere", ""];
    for (key, kind) in OPTIONS {
        let texts: &[&str] = match kind {
            Kind::Duration(..) | Kind::DurationOrOff(_) => &durations,
            Kind::Rate(_) => &rates,
            Kind::Address(_) => &addresses,
            Kind::Choice(..) => &["json", "text", "off", "JSON", "xml", ""],
            Kind::Number(bounds, _) => {
                let (lo, hi) = (*bounds.start(), *bounds.end());
                for n in [lo, hi] {
                    assert!(by_clap(key, &n.to_string()), "--{key} {n}");
                    assert!(by_file(key, &n.to_string()), "{key} = {n}");
                }
                assert!(!by_clap(key, &(lo - 1).to_string()), "--{key} {}", lo - 1);
                assert!(!by_file(key, &(lo - 1).to_string()), "{key} = {}", lo - 1);
                if hi < i64::MAX {
                    assert!(!by_clap(key, &(hi + 1).to_string()), "--{key} {}", hi + 1);
                    assert!(!by_file(key, &(hi + 1).to_string()), "{key} = {}", hi + 1);
                }
                continue;
            }
            // A switch on the command line (`--allow-unauthenticated`), `true` or `false` in the file.
            Kind::Flag(_) => {
                assert!(by_file(key, "true") && by_file(key, "false") && !by_file(key, "1"));
                continue;
            }
        };
        for text in texts {
            let clap = by_clap(key, text);
            assert_eq!(by_file(key, &format!("{text:?}")), clap, "{key} = {text:?}");
            // Written as a TOML number, where the text is one as it stands (TOML's 1e3 is 1000, which
            // the command line writes "1000").
            if text
                .parse::<f64>()
                .is_ok_and(|x| x.is_finite() && x.to_string() == *text)
            {
                assert_eq!(by_file(key, text), clap, "{key} = {text}");
            }
        }
    }
}

/// The keys that are not rows are the fields of `RawSettings`: none of them is "unknown".
#[test]
fn the_other_keys_are_read_as_files() {
    for key in RawSettings::KEYS {
        let got = problems(&format!("{key} = \"missing\"\n{UPSTREAM}"), &no_env);
        assert!(
            got.iter().all(|(_, m)| !m.contains("unknown field")),
            "{got:?}"
        );
        assert!(
            got.iter().all(|(_, m)| m.contains(&format!("`{key}`"))),
            "{got:?}"
        );
    }
}

const NEW_KEYS: &str = r#"client_head_timeout = "5s"
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
"#;

/// Every new key, read: a duration as a string or a number of seconds, 0 as off where 0 means off.
#[test]
fn the_new_keys_are_read() {
    let file = valid(&format!("{NEW_KEYS}{UPSTREAM}"), &no_env);
    let got: BTreeMap<&str, String> = file
        .settings
        .options
        .iter()
        .map(|(key, value)| (*key, format!("{value:?}")))
        .collect();
    let expected: BTreeMap<&str, String> = [
        ("client_head_timeout", "5s"),
        ("client_body_timeout", "30s"),
        ("keepalive_timeout", "90s"),
        ("client_write_timeout", "45s"),
        ("upstream_connect_timeout", "3s"),
        ("tls_handshake_timeout", "4s"),
        ("upstream_head_timeout", "120s"),
        ("first_token_timeout", "90s"),
        ("stream_idle_timeout", "60s"),
        ("stream_timeout", "Some(3600s)"),
        ("sse_keepalive", "None"),
        ("upstream_max_concurrent", "32"),
        ("upstream_queue", "100"),
        ("upstream_queue_timeout", "2.5s"),
        ("retries", "3"),
        ("retry_backoff", "100ms"),
        ("retry_max_wait", "10s"),
        ("breaker_failures", "7"),
        ("breaker_cooldown", "60s"),
        ("rate_limit", "2.5"),
        ("rate_burst", "10"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_string()))
    .collect();
    assert_eq!(got, expected);
}

/// Each bad value is reported with its line: a wrong type, out of range, a unit that is none, a negative
/// number, zero where it is not allowed (`sse_keepalive = 0` is allowed: off).
#[test]
fn bad_values_are_reported_with_their_line() {
    let text = r#"stream_timeout = "10 parsecs"
retries = 11
rate_limit = "fast"
first_token_timeout = -5
client_head_timeout = 0
sse_keepalive = 0
rate_burst = 0
keepalive_timeout = true
upstream_queue = -1
breaker_cooldown = [30]
retry_backoff = "86401s"
upstream_max_concurrent = "4"
"#;
    assert_problems(
        &problems(&format!("{text}{UPSTREAM}"), &no_env),
        &[
            (
                Some(1),
                "`stream_timeout`: \"10 parsecs\": unknown unit \"parsecs\"",
            ),
            (Some(2), "`retries` must be from 0 to 10, not 11"),
            (
                Some(3),
                "`rate_limit`: \"fast\": expected requests per second",
            ),
            (
                Some(4),
                "`first_token_timeout`: \"-5\": a duration cannot be negative",
            ),
            (
                Some(5),
                "`client_head_timeout`: \"0\": must be more than zero",
            ),
            (Some(7), "`rate_burst` must be from 1 to 1000000, not 0"),
            (
                Some(8),
                "`keepalive_timeout`: invalid type: boolean `true`, expected a string or a number",
            ),
            (Some(9), "`upstream_queue` must be at least 0, not -1"),
            (
                Some(10),
                "`breaker_cooldown`: invalid type: array, expected a string or a number",
            ),
            (
                Some(11),
                "`retry_backoff`: \"86401s\": too long (at most 86400s, a day)",
            ),
            (
                Some(12),
                "`upstream_max_concurrent`: invalid type: string \"4\", expected a whole number",
            ),
        ],
    );
    // A key given twice is TOML's own error (and the meaning of a file that does not parse is not read).
    let twice = problems(
        &format!("rate_limit = 1\nrate_limit = 2\n{UPSTREAM}"),
        &no_env,
    );
    assert_problems(&twice, &[(Some(2), "duplicate key")]);
}

/// A misspelt key is named with every key the file takes, new ones included.
#[test]
fn a_misspelt_key_lists_every_key() {
    let got = problems(&format!("stream_timout = \"1h\"\n{UPSTREAM}"), &no_env);
    assert_problems(
        &got,
        &[(
            Some(1),
            "unknown field `stream_timout`, expected one of `listen`",
        )],
    );
    for key in OPTIONS.iter().map(|(k, _)| *k).chain(RawSettings::KEYS) {
        assert!(
            got[0].1.contains(&format!("`{key}`")),
            "{key}: {}",
            got[0].1
        );
    }
}

/// An upstream's `fallback` names another upstream, listed before or after it; two upstreams may name
/// each other (a request follows at most as many fallbacks as there are upstreams).
#[test]
fn a_fallback_names_another_upstream() {
    let text = r#"
[[upstream]]
name = "openai"
provider = "openai"
url = "https://api.openai.com"
fallback = "local"

[[upstream]]
name = "local"
provider = "openai"
url = "http://127.0.0.1:8000"
fallback = "openai"

[[upstream]]
name = "spare"
provider = "gemini"
url = "http://127.0.0.1:8001"
"#;
    let file = valid(text, &no_env);
    let fallbacks: Vec<Option<&str>> = file
        .upstreams
        .iter()
        .map(|u| u.fallback.as_deref())
        .collect();
    assert_eq!(fallbacks, [Some("local"), Some("openai"), None]);

    let broken = text
        .replace("fallback = \"local\"", "fallback = \"ghost\"")
        .replace("fallback = \"openai\"", "fallback = \"local\"")
        + "fallback = 3\n";
    assert_problems(
        &problems(&broken, &no_env),
        &[
            (
                Some(6),
                "upstream \"openai\": `fallback`: no upstream is named \"ghost\" (the upstreams: local, openai, spare)",
            ),
            (
                Some(12),
                "upstream \"local\": `fallback` names the upstream itself",
            ),
            (
                Some(18),
                "`fallback`: invalid type: integer `3`, expected a string",
            ),
        ],
    );
}

/// An upstream's `max_concurrent`, `queue` and `queue_timeout` have the bounds of the global options they
/// stand for, and their problems name the upstream.
#[test]
fn an_upstreams_admission_keys_have_the_global_bounds() {
    let with = |keys: &str| format!("{UPSTREAM}{keys}");
    let file = valid(
        &with("max_concurrent = 0\nqueue = 0\nqueue_timeout = \"250ms\"\n"),
        &no_env,
    );
    let own: Vec<String> = file.admission["a"]
        .iter()
        .map(|v| format!("{v:?}"))
        .collect();
    assert_eq!(own, ["0", "0", "250ms"]);
    assert!(valid(UPSTREAM, &no_env).admission.is_empty());
    assert_problems(
        &problems(
            &with("max_concurrent = -1\nqueue = \"3\"\nqueue_timeout = \"1 fortnight\"\n"),
            &no_env,
        ),
        &[
            (
                Some(5),
                "upstream \"a\": `max_concurrent` must be at least 0, not -1",
            ),
            (
                Some(6),
                "upstream \"a\": `queue`: invalid type: string \"3\", expected a whole number",
            ),
            (
                Some(7),
                "upstream \"a\": `queue_timeout`: \"1 fortnight\": unknown unit \"fortnight\"",
            ),
        ],
    );
    assert_problems(
        &problems(&with("queue_timeout = 0\n"), &no_env),
        &[(
            Some(5),
            "upstream \"a\": `queue_timeout`: \"0\": must be more than zero",
        )],
    );
}
