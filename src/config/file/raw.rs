//! Reading the file's tables with serde: every key and value, each problem with its line.

use std::collections::BTreeSet;
use std::ops::Range;
use std::path::PathBuf;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::Problem;

/// The global settings that are not one option's value (those are `options::OPTIONS`): files, each
/// checked in `meaning::settings`. Unknown keys are let through here: `meaning::settings` reports them,
/// naming every key the file takes.
#[derive(Deserialize, Default)]
pub(super) struct RawSettings {
    pub(super) tls_cert: Option<Spanned<PathBuf>>,
    pub(super) tls_key: Option<Spanned<PathBuf>>,
    pub(super) client_keys_file: Option<Spanned<PathBuf>>,
}

impl RawSettings {
    /// The keys above (a unit test holds this list to the fields).
    pub(super) const KEYS: [&str; 3] = ["tls_cert", "tls_key", "client_keys_file"];
}

/// One `[[upstream]]` as written. Required keys are checked after serde, so that one missing key does not
/// hide the table's other problems.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    pub(super) name: Option<Spanned<String>>,
    pub(super) provider: Option<Spanned<String>>,
    pub(super) url: Option<Spanned<String>>,
    pub(super) key_env: Option<Spanned<String>>,
    pub(super) model: Option<Spanned<String>>,
    pub(super) ca: Option<Spanned<PathBuf>>,
    /// Its own admission limits, in place of the global `upstream_max_concurrent`, `upstream_queue` and
    /// `upstream_queue_timeout`: kept as written, to be read by the same rows of `options::OPTIONS`.
    pub(super) max_concurrent: Option<Spanned<toml::Value>>,
    pub(super) queue: Option<Spanned<toml::Value>>,
    pub(super) queue_timeout: Option<Spanned<toml::Value>>,
    /// The upstream that takes a request this one failed.
    pub(super) fallback: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub(super) prefix: Option<Spanned<String>>,
    pub(super) upstream: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGenerate {
    pub(super) upstream: Option<Spanned<String>>,
}

/// `message` about an unknown key, with a hint where the key looks like a secret: secrets never go in the
/// file.
fn hinted(mut message: String) -> String {
    if message.starts_with("unknown field `key`") || message.starts_with("unknown field `api_key`")
    {
        message.push_str(
            " (a key never goes in the file: set `key_env` to the variable that holds it)",
        );
    }
    if message.starts_with("unknown field `client_key") {
        message.push_str(
            " (client keys never go in this file: set `client_keys_file` to a file of keys)",
        );
    }
    message
}

/// A table read by serde: where it is, what it holds, and which keys it had (a key that failed to
/// deserialize is not "missing").
pub(super) struct Read<T> {
    pub(super) span: Range<usize>,
    pub(super) raw: T,
    pub(super) keys: BTreeSet<String>,
}

/// The problems found so far, and the text their spans point into.
pub(super) struct Checker<'a> {
    pub(super) text: &'a str,
    pub(super) problems: Vec<Problem>,
}

impl Checker<'_> {
    /// The 1-based line of byte `offset`.
    pub(super) fn line(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        1 + self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
    }

    pub(super) fn at(&mut self, span: Range<usize>, message: impl Into<String>) {
        let line = Some(self.line(span.start));
        self.problems.push(Problem {
            line,
            message: message.into(),
        });
    }

    /// A `toml` error, at its own span, else at `fallback`; about `key`, named if the message does not.
    pub(super) fn toml_error(
        &mut self,
        e: &toml::de::Error,
        fallback: Range<usize>,
        key: Option<&str>,
    ) {
        let mut message = e.message().trim_end().to_string();
        if let Some(key) = key
            && !message.contains(&format!("`{key}`"))
        {
            message = format!("`{key}`: {message}");
        }
        self.at(e.span().unwrap_or(fallback), hinted(message));
    }

    /// A key the table does not take, named as serde names one, with the keys it takes.
    pub(super) fn unknown_key<'k>(
        &mut self,
        span: Range<usize>,
        key: &str,
        expected: impl Iterator<Item = &'k str>,
    ) {
        let expected: Vec<String> = expected.map(|k| format!("`{k}`")).collect();
        let message = format!(
            "unknown field `{key}`, expected one of {}",
            expected.join(", ")
        );
        self.at(span, hinted(message));
    }

    pub(super) fn finish(mut self) -> Vec<Problem> {
        self.problems.sort_by_key(|p| p.line);
        self.problems.dedup();
        self.problems
    }

    /// Reads `table` into `T`; when that fails, reads it key by key to report every key's problem, and
    /// keeps what the good keys hold.
    pub(super) fn table<T: DeserializeOwned + Default>(
        &mut self,
        span: Range<usize>,
        table: &DeTable<'_>,
    ) -> Read<T> {
        let read = |t: &DeTable<'_>| {
            T::deserialize(ValueDeserializer::from(Spanned::new(
                span.clone(),
                DeValue::Table(t.clone()),
            )))
        };
        let keys = table.keys().map(|k| k.get_ref().to_string()).collect();
        if let Ok(raw) = read(table) {
            return Read { span, raw, keys };
        }
        let mut good = DeTable::new();
        for (key, value) in table.iter() {
            let mut one = DeTable::new();
            one.insert(key.clone(), value.clone());
            match read(&one) {
                Ok(_) => {
                    good.insert(key.clone(), value.clone());
                }
                Err(e) => self.toml_error(&e, key.span(), Some(key.get_ref())),
            }
        }
        let raw = read(&good).unwrap_or_default();
        Read { span, raw, keys }
    }

    /// Reads an array of tables (`[[what]]`).
    pub(super) fn tables<T: DeserializeOwned + Default>(
        &mut self,
        value: &Spanned<DeValue<'_>>,
        what: &str,
    ) -> Vec<Read<T>> {
        let DeValue::Array(items) = value.get_ref() else {
            self.at(
                value.span(),
                format!("write each entry as {what}, a table in an array of tables"),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in items.iter() {
            match item.get_ref() {
                DeValue::Table(t) => out.push(self.table(item.span(), t)),
                other => self.at(
                    item.span(),
                    format!("each {what} must be a table, not a {}", other.type_str()),
                ),
            }
        }
        out
    }
}
