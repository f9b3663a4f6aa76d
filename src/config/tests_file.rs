//! The `--config` file: what a valid file makes, and every problem of a broken one with its line.
//!
//! Test code only: its parent declares it `#[cfg(test)]`.

use super::*;
use crate::relay::providers::Provider;

pub(super) fn no_env(_: &str) -> Option<String> {
    None
}

/// An environment holding exactly `vars`.
pub(super) fn env_of(
    vars: &'static [(&'static str, &'static str)],
) -> impl Fn(&str) -> Option<String> {
    move |k| {
        vars.iter()
            .find(|(name, _)| *name == k)
            .map(|(_, v)| v.to_string())
    }
}

pub(super) fn valid(text: &str, env: &dyn Fn(&str) -> Option<String>) -> FileConfig {
    parse(text, Path::new(""), env).unwrap_or_else(|p| panic!("refused: {p:#?}"))
}

/// Every problem, as (line, message).
pub(super) fn problems(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Vec<(Option<usize>, String)> {
    let list = parse(text, Path::new(""), env).expect_err("accepted");
    list.into_iter().map(|p| (p.line, p.message)).collect()
}

/// Asserts the problems are exactly `expected`, in order: each a line and a piece of its message.
pub(super) fn assert_problems(got: &[(Option<usize>, String)], expected: &[(Option<usize>, &str)]) {
    let pretty = |v: &[(Option<usize>, String)]| {
        v.iter()
            .map(|(l, m)| format!("{l:?}: {m}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(got.len(), expected.len(), "got:\n{}", pretty(got));
    for ((line, message), (want_line, want)) in got.iter().zip(expected) {
        assert!(
            line == want_line && message.contains(want),
            "expected line {want_line:?} with {want:?}; got:\n{}",
            pretty(got)
        );
    }
}

/// A directory of its own under the system's temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("tokenpipe-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write temp file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const DESIGN: &str = r#"
listen = "127.0.0.1:9999"
workers = 2
dns_ttl = 120
max_body_bytes = 4096

[generate]
upstream = "local"

[[upstream]]
name = "openai"
provider = "openai"
url = "https://api.openai.com"
key_env = "OPENAI_API_KEY"
model = "gpt-4o"

[[upstream]]
name = "claude"
provider = "Anthropic"
url = "https://api.anthropic.com"
key_env = "MY_ANTHROPIC_KEY"

[[upstream]]
name = "local"
provider = "openai"
url = "http://127.0.0.1:8000/base/"

[[route]]
prefix = "/local"
upstream = "local"
"#;

#[test]
fn a_valid_file_makes_upstreams_routes_and_settings() {
    let env = env_of(&[
        ("OPENAI_API_KEY", "sk-one"),
        ("MY_ANTHROPIC_KEY", " sk-two\n"),
        ("GEMINI_API_KEY", "unused"),
    ]);
    let file = valid(DESIGN, &env);
    let names: Vec<&str> = file.upstreams.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["openai", "claude", "local"], "the file's order");
    let [openai, claude, local] = &file.upstreams[..] else {
        panic!("three upstreams");
    };
    assert_eq!(openai.provider, Provider::OpenAi);
    assert_eq!(openai.origin.to_string(), "https://api.openai.com");
    assert_eq!(openai.key.as_ref().map(|k| k.expose()), Some("sk-one"));
    assert_eq!(openai.model, "gpt-4o");
    assert_eq!(
        claude.provider,
        Provider::Anthropic,
        "provider names ignore case"
    );
    assert_eq!(
        claude.key.as_ref().map(|k| k.expose()),
        Some("sk-two"),
        "trimmed"
    );
    assert_eq!(
        claude.model, "claude-haiku-4-5",
        "the provider's default model"
    );
    assert!(local.key.is_none() && local.ca.is_none());
    assert_eq!(local.origin.base_path, "/base");
    assert_eq!(
        file.routes,
        [RouteSpec {
            prefix: "/local".into(),
            upstream: "local".into()
        }]
    );
    assert_eq!(file.generate.as_deref(), Some("local"));
    let settings: Vec<(&str, String)> = file
        .settings
        .options
        .iter()
        .map(|(key, value)| (*key, format!("{value:?}")))
        .collect();
    assert_eq!(
        settings,
        [
            ("dns_ttl", "120".to_string()),
            ("listen", "127.0.0.1:9999".into()),
            ("max_body_bytes", "4096".into()),
            ("workers", "2".into()),
        ]
    );
    assert!(file.settings.tls.is_none() && file.settings.client_keys_file.is_none());
}

/// The file of the design with a mistake on nearly every line: each is reported, with its line, in line
/// order; invalid upstreams do not cause a second error where a route or [generate] names them.
#[test]
fn every_problem_is_reported_with_its_line() {
    let text = r#"listen = "nowhere"
workers = 0
dns_ttl = 86401

[generate]
upstream = "nobody"

[[upstream]]
name = "openai"
provider = "openai"
url = "ftp://api.openai.com"
key_env = "OPENAI_API_KEY"
model = "../../v1/files"

[[upstream]]
name = "openai"
provider = "mistral"
ca = "/nonexistent/ca.pem"

[[upstream]]
name = "Local Server"
provider = "openai"
url = "http://127.0.0.1:8000"

[[route]]
prefix = "local"
upstream = "ghost"

[[route]]
prefix = "/"
upstream = "openai"
"#;
    assert_problems(
        &problems(text, &no_env),
        &[
            (Some(1), "`listen`: \"nowhere\": expected HOST:PORT"),
            (Some(2), "`workers` must be from 1 to 65535, not 0"),
            (Some(3), "`dns_ttl` must be from 1 to 86400, not 86401"),
            (Some(6), "no upstream is named \"nobody\" (the upstreams: "),
            (
                Some(11),
                "upstream \"openai\": `url`: upstream URL \"ftp://api.openai.com\": unsupported scheme",
            ),
            (
                Some(12),
                "upstream \"openai\": `key_env`: the environment variable OPENAI_API_KEY is not set",
            ),
            (
                Some(13),
                "upstream \"openai\": `model` \"../../v1/files\" must be 1 to 128 characters",
            ),
            (Some(15), "upstream \"openai\" needs `url`"),
            (
                Some(16),
                "duplicate upstream name \"openai\" (first on line 9)",
            ),
            (Some(17), "`provider`: unknown provider \"mistral\""),
            (Some(18), "`ca`: cannot open /nonexistent/ca.pem"),
            (
                Some(21),
                "upstream name \"Local Server\": use 1 to 64 of a-z 0-9 _ -",
            ),
            (Some(26), "prefix \"local\" must start with '/'"),
            (Some(27), "no upstream is named \"ghost\""),
            (Some(30), "prefix \"/\" would take every path"),
        ],
    );
}

/// serde stops at the first error; the file's reader does not: every misspelt key and every value of
/// the wrong type in every table, and the good keys of those tables are still checked.
#[test]
fn every_misspelt_key_and_wrong_type_is_reported() {
    let text = r#"lisen = "127.0.0.1:1"
workers = "2"
backlog = 0

[generate]
upstrem = "a"

[[upstream]]
name = "a"
provider = "openai"
urll = "http://127.0.0.1:1"
url = "gopher://x"
model = 7

[[route]]
prefix = "/x"
upstream = "a"
weight = 2
"#;
    assert_problems(
        &problems(text, &no_env),
        &[
            (
                Some(1),
                "unknown field `lisen`, expected one of `listen`, `workers`",
            ),
            (Some(2), "`workers`: invalid type: string \"2\""),
            (Some(3), "`backlog` must be from 1 to 4294967295, not 0"),
            (Some(5), "[generate] needs `upstream`"),
            (Some(6), "unknown field `upstrem`, expected `upstream`"),
            (Some(11), "unknown field `urll`"),
            (
                Some(12),
                "upstream \"a\": `url`: upstream URL \"gopher://x\": unsupported scheme",
            ),
            (
                Some(13),
                "`model`: invalid type: integer `7`, expected a string",
            ),
            (Some(18), "unknown field `weight`"),
        ],
    );
}

#[test]
fn syntax_errors_are_all_reported_and_stop_there() {
    let text = "listen = \nworkers = 1\nname = \"open\n[[upstream]]\nname = 1 2\n";
    let got = problems(text, &no_env);
    let lines: Vec<Option<usize>> = got.iter().map(|(l, _)| *l).collect();
    assert_eq!(lines, [Some(1), Some(3), Some(5)], "{got:#?}");
    let text = "[[upstream]]\nname = \"a\"\nname = \"b\"\n";
    assert_problems(&problems(text, &no_env), &[(Some(3), "duplicate key")]);
}

#[test]
fn a_file_without_upstreams_is_refused() {
    for text in ["", "workers = 1\n", "upstream = []\n"] {
        assert_problems(
            &problems(text, &no_env),
            &[(None, "no upstream: define at least one [[upstream]]")],
        );
    }
    // The wrong form is reported as such, not as a missing upstream.
    let text = "[upstream]\nname = \"a\"\n";
    assert_problems(
        &problems(text, &no_env),
        &[(Some(1), "write each entry as [[upstream]]")],
    );
    let text = "[[upstream]]\n[[route]]\n";
    assert_problems(
        &problems(text, &no_env),
        &[
            (Some(1), "[[upstream]] needs `name`"),
            (Some(1), "[[upstream]] needs `provider`"),
            (Some(1), "[[upstream]] needs `url`"),
            (Some(2), "[[route]] needs `prefix`"),
            (Some(2), "[[route]] needs `upstream`"),
        ],
    );
}

/// Keys live in the environment; the file names the variable. What could be a key is never repeated.
#[test]
fn keys_come_from_the_named_variables_and_are_never_echoed() {
    let upstream = |key_line: &str| {
        format!(
            "[[upstream]]\nname = \"a\"\nprovider = \"openai\"\nurl = \"http://127.0.0.1:1\"\n{key_line}\n"
        )
    };
    let env = env_of(&[
        ("EMPTY", "  "),
        ("NEWLINE", "sk-a\r\nX-Evil: 1"),
        ("GOOD", "sk-good"),
    ]);
    let file = valid(&upstream("key_env = \"GOOD\""), &env);
    assert_eq!(
        file.upstreams[0].key.as_ref().map(|k| k.expose()),
        Some("sk-good")
    );
    for (line, want) in [
        (
            "key_env = \"UNSET\"",
            "the environment variable UNSET is not set",
        ),
        (
            "key_env = \"EMPTY\"",
            "the environment variable EMPTY is not set",
        ),
        (
            "key_env = \"NEWLINE\"",
            "NEWLINE: API key contains a line break",
        ),
        (
            "key_env = \"sk-proj-SECRET\"",
            "must be the name of an environment variable",
        ),
        ("key = \"sk-proj-SECRET\"", "unknown field `key`"),
    ] {
        let got = problems(&upstream(line), &env);
        assert_problems(&got, &[(Some(5), want)]);
        assert!(
            !got[0].1.contains("SECRET") && !got[0].1.contains("Evil"),
            "{got:?}"
        );
    }
    let got = problems(&upstream("api_key = \"x\""), &env);
    assert!(got[0].1.contains("set `key_env`"), "{got:?}");
}

/// `ca` (like `tls_cert` and `tls_key`) must be a file, relative paths are relative to the file's
/// directory, and a CA only makes sense for https.
#[test]
fn files_must_exist_relative_to_the_config_file() {
    let dir = TempDir::new("config-files");
    dir.write("ca.pem", "not checked here");
    dir.write("relay.pem", "");
    dir.write("relay.key", "");
    let text = r#"tls_cert = "relay.pem"
tls_key = "relay.key"
[[upstream]]
name = "private"
provider = "openai"
url = "https://models.internal"
ca = "ca.pem"
"#;
    let file = parse(text, &dir.0, &no_env).expect("valid");
    assert_eq!(
        file.upstreams[0].ca.as_deref(),
        Some(dir.0.join("ca.pem").as_path())
    );
    assert_eq!(
        file.settings.tls,
        Some((dir.0.join("relay.pem"), dir.0.join("relay.key")))
    );
    let broken = text
        .replace("\"relay.key\"", "\".\"")
        .replace("https://models.internal", "http://models.internal")
        .replace("ca.pem", "missing.pem");
    let got = parse(&broken, &dir.0, &no_env).expect_err("accepted");
    let got: Vec<_> = got.into_iter().map(|p| (p.line, p.message)).collect();
    assert_problems(
        &got,
        &[
            (Some(2), "`tls_key`: "),
            (Some(7), "`ca` applies only to an https:// url"),
            (Some(7), "`ca`: cannot open "),
        ],
    );
    assert_problems(
        &problems(
            "tls_cert = \"a.pem\"\n[[upstream]]\nname=\"a\"\nprovider=\"openai\"\nurl=\"http://a\"\n",
            &no_env,
        ),
        &[(Some(1), "`tls_cert` needs `tls_key`")],
    );
}

#[test]
fn prefixes_start_with_a_slash_and_are_routed_once() {
    let text = |prefixes: &[&str]| {
        let mut t =
            String::from("[[upstream]]\nname = \"a\"\nprovider = \"openai\"\nurl = \"http://a\"\n");
        for p in prefixes {
            t.push_str(&format!("[[route]]\nprefix = {p:?}\nupstream = \"a\"\n"));
        }
        t
    };
    let file = valid(&text(&["/local", "/local-2/", "/a/b"]), &no_env);
    assert_eq!(file.routes.len(), 3);
    assert_problems(
        &problems(
            &text(&["/local", "/local/", "local", "//", "/a b", "/a?b"]),
            &no_env,
        ),
        &[
            (Some(9), "prefix \"/local/\" is already routed (line 6)"),
            (Some(12), "must start with '/'"),
            (Some(15), "would take every path"),
            (Some(18), "only visible ASCII"),
            (Some(21), "only visible ASCII"),
        ],
    );
}

/// examples/tokenpipe.toml is valid with its three keys in the environment, and names each one missing.
#[test]
fn the_example_file_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/tokenpipe.toml");
    let env = env_of(&[
        ("OPENAI_API_KEY", "sk-openai"),
        ("GEMINI_API_KEY", "gemini-key"),
        ("ANTHROPIC_API_KEY", "sk-ant"),
    ]);
    let file = load(&path, &env).unwrap_or_else(|p| panic!("{p}"));
    let summary: Vec<(&str, Provider, bool, bool)> = file
        .upstreams
        .iter()
        .map(|u| (u.name.as_str(), u.provider, u.origin.tls, u.key.is_some()))
        .collect();
    assert_eq!(
        summary,
        [
            ("openai", Provider::OpenAi, true, true),
            ("gemini", Provider::Gemini, true, true),
            ("anthropic", Provider::Anthropic, true, true),
            ("local", Provider::OpenAi, false, false),
        ]
    );
    assert_eq!(
        file.upstreams[3].origin.to_string(),
        "http://127.0.0.1:8000"
    );
    assert!(file.upstreams.iter().all(|u| u.ca.is_none()));
    let fallbacks: Vec<Option<&str>> = file
        .upstreams
        .iter()
        .map(|u| u.fallback.as_deref())
        .collect();
    assert_eq!(fallbacks, [Some("local"), None, None, None]);
    let own: Vec<&str> = file.admission.keys().map(String::as_str).collect();
    assert_eq!(own, ["local"], "the local server's own admission limits");
    assert_eq!(
        file.routes,
        [RouteSpec {
            prefix: "/local".into(),
            upstream: "local".into()
        }]
    );
    assert_eq!(file.generate.as_deref(), Some("openai"));
    assert_eq!(
        check(&path, &env),
        Ok(format!("{}: ok (4 upstreams, 1 route)", path.display()))
    );

    let report = check(&path, &no_env).expect_err("accepted without keys");
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(lines.len(), 4, "{report}");
    for (line, var) in lines
        .iter()
        .zip(["OPENAI_API_KEY", "GEMINI_API_KEY", "ANTHROPIC_API_KEY"])
    {
        let prefix = format!("{}:", path.display());
        assert!(
            line.starts_with(&prefix) && line.ends_with(&format!("{var} is not set")),
            "{line}"
        );
    }
    assert_eq!(lines[3], format!("{}: 3 errors", path.display()));
}

#[test]
fn problems_print_as_file_line_message() {
    let problems = Problems {
        path: PathBuf::from("conf/tokenpipe.toml"),
        list: vec![
            Problem {
                line: None,
                message: "no upstream".into(),
            },
            Problem {
                line: Some(7),
                message: "bad".into(),
            },
        ],
    };
    assert_eq!(
        problems.to_string(),
        "conf/tokenpipe.toml: no upstream\nconf/tokenpipe.toml:7: bad"
    );
    let missing = load(Path::new("/nonexistent/tokenpipe.toml"), &no_env).expect_err("read");
    assert!(
        missing
            .to_string()
            .starts_with("/nonexistent/tokenpipe.toml: cannot read the file: "),
        "{missing}"
    );
}
