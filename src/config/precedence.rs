//! `--config`'s precedence: which value an option takes when both the command line (or the environment)
//! and the file may give it.
//!
//! * The upstreams are the file's alone: `--upstream`, `--provider`, `--model` and `--upstream-ca` (or
//!   their `TOKENPIPE_*` variables) next to `--config` are refused, with a message naming both; provider
//!   keys are read only from the variables the file's `key_env` entries name (`OPENAI_API_KEY` and the
//!   like are not looked at otherwise).
//! * Every other option (`listen`, `workers`, the limits, the timeouts, `tls_cert`/`tls_key`, ...): a
//!   value given on the command line or in the option's environment variable wins over the file; the
//!   file wins over the option's default. `tls_cert` and `tls_key` go as a pair: if either option is
//!   given, both come from the options. Likewise the client keys: if `--client-key` or
//!   `--client-keys-file` is given, the file's `client_keys_file` is not read for keys.
//! * An `[[upstream]]`'s own `max_concurrent`, `queue` and `queue_timeout` win over the global
//!   `upstream_max_concurrent`, `upstream_queue` and `upstream_queue_timeout` for that upstream, whatever
//!   made those; the ones it does not give are the global ones.
//!
//! "Given" is what clap's `ArgMatches::value_source` says (`CommandLine` or `EnvVariable`, not
//! `DefaultValue`), recorded by [`super::Cli::parse_sourced`] in [`Given`].

use std::collections::BTreeSet;
use std::path::Path;

use clap::ArgMatches;
use clap::parser::ValueSource;

use super::file::{self, FileSettings, options};
use super::{Config, ServeArgs, UpstreamConfig};
use crate::relay::admission::AdmissionLimits;

/// Which options were given on the command line or in their environment variable, rather than left at
/// their defaults. Unknown (`Default`, e.g. after a plain `Cli::parse`) counts every option as given,
/// so that nothing from a file ever overrides an explicit value.
#[derive(Debug, Clone, Default)]
pub struct Given(Option<BTreeSet<String>>);

impl Given {
    /// What `matches` says (argument ids are the fields' names: `listen`, `loop_warn_ms`, ...).
    pub fn of(matches: &ArgMatches) -> Given {
        let explicit = |id: &&str| {
            matches!(
                matches.value_source(id),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            )
        };
        Given(Some(
            matches
                .ids()
                .map(|id| id.as_str())
                .filter(explicit)
                .map(String::from)
                .collect(),
        ))
    }

    /// Whether the option with this id was given.
    pub fn has(&self, id: &str) -> bool {
        self.0.as_ref().is_none_or(|ids| ids.contains(id))
    }
}

/// The [`Config`] of `args` with `--config path`: the file's upstreams, and its settings where no
/// option was given.
pub(super) fn with_file(
    args: &ServeArgs,
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, String> {
    let upstream_options = [
        (args.upstream.is_some(), "--upstream (TOKENPIPE_UPSTREAM)"),
        (args.provider.is_some(), "--provider (TOKENPIPE_PROVIDER)"),
        (args.model.is_some(), "--model (TOKENPIPE_MODEL)"),
        (
            args.upstream_ca.is_some(),
            "--upstream-ca (TOKENPIPE_UPSTREAM_CA)",
        ),
    ];
    if let Some((_, option)) = upstream_options.iter().find(|(given, _)| *given) {
        return Err(format!(
            "{option} cannot be used with --config {}: the file describes the upstreams; \
             give one or the other",
            path.display()
        ));
    }
    let file = file::load(path, env)?;
    let args = overlaid(args, &file.settings);
    let mut upstreams = file.upstreams;
    for spec in &mut upstreams {
        if let Some(own) = file.admission.get(&spec.name) {
            spec.admission = Some(own_admission(&args, own));
        }
    }
    let upstream = UpstreamConfig::Remote {
        upstreams,
        routes: file.routes,
        generate: file.generate,
    };
    args.finish(upstream)
}

/// An upstream's admission limits: its own values (`max_concurrent`, ...) over the global ones, which are
/// already what the command line, the environment, the file or the defaults made them.
fn own_admission(global: &ServeArgs, own: &[options::Value]) -> AdmissionLimits {
    let mut args = global.clone();
    for value in own {
        value.write(&mut args);
    }
    args.resilience.admission()
}

/// `args` with the file's settings `s` in place of the options that were not given.
pub(super) fn overlaid(args: &ServeArgs, s: &FileSettings) -> ServeArgs {
    fn take<T>(slot: &mut T, file_wins: bool, from_file: Option<T>) {
        if file_wins && let Some(v) = from_file {
            *slot = v;
        }
    }
    let wins = |id: &str| !args.given.has(id);
    let mut a = args.clone();
    // The settings that are one option's value (`file::options`): each key is its option's id.
    for (key, value) in &s.options {
        if wins(key) {
            value.write(&mut a);
        }
    }
    // The keys go as one setting too: a key or a key file given as an option replaces the file's.
    take(
        &mut a.client_keys_file,
        wins("client_key") && wins("client_keys_file"),
        s.client_keys_file.clone().map(Some),
    );
    let c = &mut a.common;
    if let Some((cert, key)) = &s.tls {
        let pair = (Some(cert.clone()), Some(key.clone()));
        let mut options = (c.tls_cert.take(), c.tls_key.take());
        take(
            &mut options,
            wins("tls_cert") && wins("tls_key"),
            Some(pair),
        );
        (c.tls_cert, c.tls_key) = options;
    }
    a
}
