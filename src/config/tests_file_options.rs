//! The settings that are one option's value (`file::options`): the table against the options themselves,
//! the new keys (timeouts, admission, retries, breaker, rate limit), each bad value with its line, and an
//! `[[upstream]]`'s own admission limits and `fallback`.
//!
//! Test code only: its parent declares it `#[cfg(test)]`.

use super::options::{Kind, OPTIONS};
use super::raw::RawSettings;
use super::tests::{assert_problems, no_env, problems};
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
/// every number, and for the values the command line reads as text (the address), the same text as a
/// TOML string, or as a number where it is one.
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
    let addresses = ["127.0.0.1:0", "[::1]:8080", "8080", "70000", "nowhere", ""];
    for (key, kind) in OPTIONS {
        let texts: &[&str] = match kind {
            Kind::Address(_) => &addresses,
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

/// A misspelt key is named with every key the file takes, new ones included.
#[test]
fn a_misspelt_key_lists_every_key() {
    let got = problems(&format!("dns_tl = 60\n{UPSTREAM}"), &no_env);
    assert_problems(
        &got,
        &[(Some(1), "unknown field `dns_tl`, expected one of `listen`")],
    );
    for key in OPTIONS.iter().map(|(k, _)| *k).chain(RawSettings::KEYS) {
        assert!(
            got[0].1.contains(&format!("`{key}`")),
            "{key}: {}",
            got[0].1
        );
    }
}
