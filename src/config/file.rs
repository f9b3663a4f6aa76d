//! The `--config` file: named upstreams, the routes between them, and optional global settings, in TOML.
//!
//! ```toml
//! listen = "127.0.0.1:8080"          # optional global settings (see below for which option wins)
//! first_token_timeout = "90s"        # durations: "500ms", "30s", "2m", or a number of seconds
//!
//! [generate]                         # which upstream serves POST /api/v1/generate-stream
//! upstream = "openai"                # (default: the first listed)
//!
//! [[upstream]]
//! name = "openai"                    # unique; a-z 0-9 _ -
//! provider = "openai"                # openai | gemini | anthropic
//! url = "https://api.openai.com"     # http[s]://host[:port][/base]
//! key_env = "OPENAI_API_KEY"         # optional: the environment variable that holds the key
//! model = "gpt-4o-mini"              # optional: the simple route's model when a request names none
//! ca = "/etc/tokenpipe/ca.pem"       # optional: extra CA certificates, for https:// only
//! fallback = "local"                 # optional: the upstream that takes what this one failed
//!
//! [[upstream]]
//! name = "local"
//! provider = "openai"
//! url = "http://127.0.0.1:8000"
//! max_concurrent = 4                 # optional: its own admission limits (max_concurrent, queue,
//! queue = 16                         # queue_timeout) in place of the global upstream_* ones
//!
//! [[route]]
//! prefix = "/local"                  # /local/v1/... goes to "local" as /v1/...
//! upstream = "local"
//! ```
//!
//! A global setting is an option's long name with `_` (`dns_ttl` for `--dns-ttl`), with that option's
//! bounds, checked by its own parser: every option in the table of [`options`] (listen, workers, the
//! limits, the client and upstream timeouts, admission, retries, the breaker, the rate limit,
//! allow_unauthenticated), and `tls_cert`, `tls_key` and `client_keys_file`. What the command line
//! reads as text (a duration, the rate, the address) may be a string or a number: `"30s"`, `"500ms"`,
//! or `30` for 30 seconds. Like provider keys, client keys never go in this file, only the name of the
//! file that holds them. **Precedence** (applied by `ServeArgs::config`): an option given on the command
//! line or in its `TOKENPIPE_*` environment variable wins over the file, and the file wins over the
//! option's default. An upstream's own `max_concurrent`, `queue` and `queue_timeout` win over the global
//! options for that upstream; those it does not give are the global ones. The upstreams are the file's
//! alone: `--upstream`, `--provider`, `--model` and `--upstream-ca` are refused next to `--config`, and
//! the `*_API_KEY` variables are read only where an upstream's `key_env` names them. Relative paths
//! (`ca`, `tls_cert`, `tls_key`, `client_keys_file`) are relative to the file's directory.
//!
//! Every problem is reported, not just the first, each with the line it is on: syntax errors (all of
//! them; the meaning of a file that does not parse is not checked), then every key and value. To get past
//! serde's stop-at-the-first-error, each table is read as a whole, and when that fails key by key
//! (`deny_unknown_fields` in every table, and the same check for the global settings, so a misspelt key
//! is an error that names it). What serde cannot know is checked next, with the span of each value:
//! names, providers, URLs, models, the environment variables the keys are in, files, prefixes, the
//! options' values, and references between tables (routes, `[generate]` and fallbacks name upstreams;
//! a fallback is another upstream, and two may name each other: a request follows at most as many
//! fallbacks as there are upstreams, so a cycle ends).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::resolved::{RouteSpec, UpstreamSpec};

mod meaning;
pub(crate) mod options;
mod raw;

use raw::{Checker, RawGenerate, RawRoute, RawSettings, RawUpstream};

/// A valid file, read.
#[derive(Debug, Clone)]
pub struct FileConfig {
    /// The upstreams, in the file's order (at least one).
    pub upstreams: Vec<UpstreamSpec>,
    pub routes: Vec<RouteSpec>,
    /// The upstream of `/api/v1/generate-stream` (`None`: the first).
    pub generate: Option<String>,
    pub settings: FileSettings,
    /// The upstreams with admission limits of their own. Their `admission` is made in `precedence`,
    /// once the global limits it starts from are known.
    pub(crate) admission: Admission,
}

/// Each upstream's own admission limits, by name: values of the global options they stand for
/// (`max_concurrent` sets `upstream_max_concurrent`, ...), which `precedence` writes over the global
/// ones for that upstream alone.
pub(crate) type Admission = BTreeMap<String, Vec<options::Value>>;

/// The global settings the file gives.
#[derive(Debug, Clone, Default)]
pub struct FileSettings {
    /// The options set as values ([`options::OPTIONS`]), each with its key, which is the option's clap id.
    pub(crate) options: Vec<(&'static str, options::Value)>,
    /// `tls_cert` and `tls_key` (both or neither).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// A file of client keys (checked to read as one); the keys themselves never go in this file.
    pub client_keys_file: Option<PathBuf>,
}

/// One problem in a file: a line (`None`: the file as a whole) and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: Option<usize>,
    pub message: String,
}

/// Every problem of one file, in line order; displayed one per line as `FILE:LINE: message`.
#[derive(Debug, Clone)]
pub struct Problems {
    pub path: PathBuf,
    pub list: Vec<Problem>,
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.list.iter().enumerate() {
            let sep = if i == 0 { "" } else { "\n" };
            match p.line {
                Some(line) => write!(f, "{sep}{}:{line}: {}", self.path.display(), p.message)?,
                None => write!(f, "{sep}{}: {}", self.path.display(), p.message)?,
            }
        }
        Ok(())
    }
}

impl From<Problems> for String {
    fn from(p: Problems) -> String {
        p.to_string()
    }
}

/// Reads and checks the file at `path`, with `env` as the environment (for each upstream's `key_env`).
pub fn load(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<FileConfig, Problems> {
    let problems = |list| Problems {
        path: path.to_path_buf(),
        list,
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        problems(vec![Problem {
            line: None,
            message: format!("cannot read the file: {e}"),
        }])
    })?;
    let dir = path.parent().unwrap_or(Path::new(""));
    parse(&text, dir, env).map_err(problems)
}

/// What `tokenpipe check-config FILE` prints: `Ok("FILE: ok (N upstreams, M routes)")`, or every problem,
/// one per line, and a count.
pub fn check(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    match load(path, env) {
        Ok(file) => Ok(format!(
            "{}: ok ({}, {})",
            path.display(),
            plural(file.upstreams.len(), "upstream"),
            plural(file.routes.len(), "route")
        )),
        Err(problems) => Err(format!(
            "{problems}\n{}: {}",
            path.display(),
            plural(problems.list.len(), "error")
        )),
    }
}

/// Checks the file's `text`; relative paths in it are relative to `dir`. Problems come in line order.
pub fn parse(
    text: &str,
    dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<FileConfig, Vec<Problem>> {
    let mut c = Checker {
        text,
        problems: Vec::new(),
    };
    let (root, syntax) = DeTable::parse_recoverable(text);
    for e in &syntax {
        c.toml_error(e, 0..0, None);
    }
    if !c.problems.is_empty() {
        return Err(c.finish());
    }
    let (root_span, root) = (root.span(), root.into_inner());
    let (mut upstreams, mut routes, mut generate) = (Vec::new(), Vec::new(), None);
    let mut upstream_key = false;
    let mut settings = DeTable::new();
    for (key, value) in root.iter() {
        match key.get_ref().as_ref() {
            "upstream" => {
                // A malformed `upstream` is reported as such; an empty array is no upstream.
                upstream_key = !matches!(value.get_ref(), DeValue::Array(a) if a.is_empty());
                upstreams = c.tables::<RawUpstream>(value, "[[upstream]]");
            }
            "route" => routes = c.tables::<RawRoute>(value, "[[route]]"),
            "generate" => match value.get_ref() {
                DeValue::Table(t) => generate = Some(c.table::<RawGenerate>(value.span(), t)),
                other => c.at(
                    value.span(),
                    format!(
                        "`generate` must be a table ([generate]), not a {}",
                        other.type_str()
                    ),
                ),
            },
            _ => {
                settings.insert(key.clone(), value.clone());
            }
        }
    }
    let values = c.table::<BTreeMap<String, Spanned<toml::Value>>>(root_span.clone(), &settings);
    let files = c.table::<RawSettings>(root_span, &settings);
    let settings = meaning::settings(&mut c, &values.raw, &files.raw, dir);
    if !upstream_key {
        c.problems.push(Problem {
            line: None,
            message: "no upstream: define at least one [[upstream]] (name, provider, url)".into(),
        });
    }
    let (upstreams, admission, names) = meaning::upstreams(&mut c, &upstreams, dir, env);
    let routes = meaning::routes(&mut c, &routes, &names);
    let generate = generate.and_then(|g| {
        if g.raw.upstream.is_none() && !g.keys.contains("upstream") {
            c.at(
                g.span,
                "[generate] needs `upstream`, the name of an upstream",
            );
        }
        meaning::known(&mut c, g.raw.upstream.as_ref()?, &names)
    });
    if c.problems.is_empty() {
        Ok(FileConfig {
            upstreams,
            routes,
            generate,
            settings,
            admission,
        })
    } else {
        Err(c.finish())
    }
}

#[cfg(test)]
#[path = "tests_file.rs"]
mod tests;

#[cfg(test)]
#[path = "tests_file_options.rs"]
mod tests_options;
