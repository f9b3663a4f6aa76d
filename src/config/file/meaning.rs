//! What serde cannot check: names, providers, URLs, models, keys, files, prefixes, bounds, and the
//! references between tables.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::options::{self, OPTIONS};
use super::raw::{Checker, RawRoute, RawSettings, RawUpstream, Read};
use super::{Admission, FileSettings};
use crate::config::resolved::{RouteSpec, UpstreamSpec};
use crate::relay::auth::{ClientKeys, read_key_file};
use crate::relay::providers::{Provider, ProviderKey, parse_upstream_url, validate_model};

/// A file that must exist (relative to `dir`); `what` names it in messages.
fn existing_file(
    c: &mut Checker<'_>,
    what: &str,
    path: &Spanned<PathBuf>,
    dir: &Path,
) -> Option<PathBuf> {
    let full = dir.join(path.get_ref());
    let opened = std::fs::File::open(&full).and_then(|f| f.metadata());
    match opened {
        Ok(meta) if meta.is_file() => Some(full),
        Ok(_) => {
            c.at(
                path.span(),
                format!("{what}: {} is not a file", full.display()),
            );
            None
        }
        Err(e) => {
            c.at(
                path.span(),
                format!("{what}: cannot open {}: {e}", full.display()),
            );
            None
        }
    }
}

/// The global settings: `values` holds every key at the top of the file (but the tables), `raw` those of
/// them that name files.
pub(super) fn settings(
    c: &mut Checker<'_>,
    values: &BTreeMap<String, Spanned<toml::Value>>,
    raw: &RawSettings,
    dir: &Path,
) -> FileSettings {
    let mut given = Vec::new();
    for (key, value) in values {
        match options::find(key) {
            Some((key, kind)) => match kind.read(&format!("`{key}`"), value.get_ref()) {
                Ok(v) => given.push((*key, v)),
                Err(e) => c.at(value.span(), e),
            },
            None if RawSettings::KEYS.contains(&key.as_str()) => {}
            None => {
                let keys = OPTIONS.iter().map(|(k, _)| *k).chain(RawSettings::KEYS);
                c.unknown_key(value.span(), key, keys);
            }
        }
    }
    let mut tls = None;
    match (&raw.tls_cert, &raw.tls_key) {
        (Some(cert), Some(key)) => {
            let cert = existing_file(c, "`tls_cert`", cert, dir);
            let key = existing_file(c, "`tls_key`", key, dir);
            tls = cert.zip(key);
        }
        (Some(only), None) => c.at(
            only.span(),
            "`tls_cert` needs `tls_key` (the certificate's private key)",
        ),
        (None, Some(only)) => c.at(
            only.span(),
            "`tls_key` needs `tls_cert` (the certificate chain)",
        ),
        (None, None) => {}
    }
    // Read now, so that a bad key file is reported with the line that names it (and by check-config).
    let client_keys_file = raw.client_keys_file.as_ref().and_then(|path| {
        let full = existing_file(c, "`client_keys_file`", path, dir)?;
        match read_key_file(&full).and_then(|keys| ClientKeys::new(&keys)) {
            Ok(_) => Some(full),
            Err(e) => {
                c.at(path.span(), format!("`client_keys_file`: {e}"));
                None
            }
        }
    });
    FileSettings {
        options: given,
        tls,
        client_keys_file,
    }
}

/// The valid upstreams, their own admission limits, and the names of all (also the invalid ones, so
/// that a route naming one is not reported a second time).
pub(super) fn upstreams(
    c: &mut Checker<'_>,
    reads: &[Read<RawUpstream>],
    dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> (Vec<UpstreamSpec>, Admission, BTreeMap<String, usize>) {
    let mut names = BTreeMap::new();
    let mut specs = Vec::new();
    let mut admission = Admission::new();
    for read in reads {
        let before = c.problems.len();
        let u = &read.raw;
        let label = match &u.name {
            Some(n) => format!("upstream {:?}", n.get_ref()),
            None => "[[upstream]]".to_string(),
        };
        for (key, value) in [
            ("name", &u.name),
            ("provider", &u.provider),
            ("url", &u.url),
        ] {
            if value.is_none() && !read.keys.contains(key) {
                c.at(read.span.clone(), format!("{label} needs `{key}`"));
            }
        }
        let name = u.name.as_ref().and_then(|n| name(c, n, &mut names));
        let provider = u.provider.as_ref().and_then(|p| {
            p.get_ref()
                .parse::<Provider>()
                .map_err(|e| c.at(p.span(), format!("{label}: `provider`: {e}")))
                .ok()
        });
        let origin = u.url.as_ref().and_then(|url| {
            parse_upstream_url(url.get_ref())
                .map_err(|e| c.at(url.span(), format!("{label}: `url`: {e}")))
                .ok()
        });
        if let Some(m) = &u.model
            && let Err(e) = validate_model(m.get_ref())
        {
            let e = e.strip_prefix("field `model` ").unwrap_or(&e);
            c.at(m.span(), format!("{label}: `model` {:?} {e}", m.get_ref()));
        }
        let key = u.key_env.as_ref().and_then(|var| key(c, var, &label, env));
        let ca = u.ca.as_ref().and_then(|ca| {
            if origin.as_ref().is_some_and(|o| !o.tls) {
                c.at(
                    ca.span(),
                    format!("{label}: `ca` applies only to an https:// url"),
                );
            }
            existing_file(c, &format!("{label}: `ca`"), ca, dir)
        });
        let own = own_admission(c, u, &label);
        if let (Some(name), Some(provider), Some(origin), true) =
            (name, provider, origin, c.problems.len() == before)
        {
            let mut spec = UpstreamSpec::new(&name, provider, origin);
            (spec.key, spec.ca) = (key, ca);
            if let Some(m) = &u.model {
                spec.model = m.get_ref().clone();
            }
            // Checked below, once every name is known: a bad one fails the whole file.
            spec.fallback = u.fallback.as_ref().map(|f| f.get_ref().clone());
            if !own.is_empty() {
                admission.insert(name, own);
            }
            specs.push(spec);
        }
    }
    // A fallback may name an upstream listed after it; it may also name one whose fallback is this one
    // (a -> b -> a): a request follows at most as many fallbacks as there are upstreams, so a cycle ends.
    for u in reads.iter().map(|read| &read.raw) {
        let Some(fallback) = &u.fallback else {
            continue;
        };
        let (name, to) = (u.name.as_ref().map(|n| n.get_ref()), fallback.get_ref());
        let label = name.map_or("[[upstream]]".into(), |n| format!("upstream {n:?}"));
        if name == Some(to) {
            let message =
                format!("{label}: `fallback` names the upstream itself: name another one");
            c.at(fallback.span(), message);
        } else if !names.contains_key(to) {
            let message = format!("{label}: `fallback`: {}", unknown(to, &names));
            c.at(fallback.span(), message);
        }
    }
    (specs, admission, names)
}

/// An upstream's `max_concurrent`, `queue` and `queue_timeout`, read by the rows of the global options
/// they stand for, so that they have the same bounds.
fn own_admission(c: &mut Checker<'_>, u: &RawUpstream, label: &str) -> Vec<options::Value> {
    let mut own = Vec::new();
    for (key, global, value) in [
        (
            "max_concurrent",
            "upstream_max_concurrent",
            &u.max_concurrent,
        ),
        ("queue", "upstream_queue", &u.queue),
        ("queue_timeout", "upstream_queue_timeout", &u.queue_timeout),
    ] {
        let (Some(value), Some((_, kind))) = (value, options::find(global)) else {
            continue;
        };
        match kind.read(&format!("{label}: `{key}`"), value.get_ref()) {
            Ok(v) => own.push(v),
            Err(e) => c.at(value.span(), e),
        }
    }
    own
}

/// A new upstream name, recorded in `names` with its line.
fn name(
    c: &mut Checker<'_>,
    n: &Spanned<String>,
    names: &mut BTreeMap<String, usize>,
) -> Option<String> {
    let name = n.get_ref();
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !ok {
        c.at(
            n.span(),
            format!("upstream name {name:?}: use 1 to 64 of a-z 0-9 _ -"),
        );
        return None;
    }
    let line = c.line(n.span().start);
    if let Some(first) = names.get(name) {
        c.at(
            n.span(),
            format!("duplicate upstream name {name:?} (first on line {first})"),
        );
        return None;
    }
    names.insert(name.clone(), line);
    Some(name.clone())
}

/// The key in the environment variable `var` names. The variable's value is never echoed.
fn key(
    c: &mut Checker<'_>,
    var: &Spanned<String>,
    label: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<ProviderKey> {
    let name = var.get_ref();
    let is_var = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !is_var {
        // Perhaps the key itself: do not repeat it.
        c.at(
            var.span(),
            format!(
                "{label}: `key_env` must be the name of an environment variable (A-Z a-z 0-9 _), \
             not the key itself"
            ),
        );
        return None;
    }
    let Some(value) = env(name).filter(|v| !v.trim().is_empty()) else {
        c.at(
            var.span(),
            format!("{label}: `key_env`: the environment variable {name} is not set"),
        );
        return None;
    };
    ProviderKey::new(value.trim())
        .map_err(|e| c.at(var.span(), format!("{label}: `key_env`: {name}: {e}")))
        .ok()
}

/// A reference to an upstream by name.
pub(super) fn known(
    c: &mut Checker<'_>,
    upstream: &Spanned<String>,
    names: &BTreeMap<String, usize>,
) -> Option<String> {
    let name = upstream.get_ref();
    if names.contains_key(name) {
        return Some(name.clone());
    }
    c.at(upstream.span(), unknown(name, names));
    None
}

/// That no upstream is called `name`, and which are.
fn unknown(name: &str, names: &BTreeMap<String, usize>) -> String {
    let list: Vec<&str> = names.keys().map(String::as_str).collect();
    match list.is_empty() {
        true => format!("no upstream is named {name:?}"),
        false => format!(
            "no upstream is named {name:?} (the upstreams: {})",
            list.join(", ")
        ),
    }
}

pub(super) fn routes(
    c: &mut Checker<'_>,
    reads: &[Read<RawRoute>],
    names: &BTreeMap<String, usize>,
) -> Vec<RouteSpec> {
    let mut prefixes: BTreeMap<String, usize> = BTreeMap::new();
    let mut routes = Vec::new();
    for read in reads {
        let before = c.problems.len();
        let r = &read.raw;
        for (key, value) in [("prefix", &r.prefix), ("upstream", &r.upstream)] {
            if value.is_none() && !read.keys.contains(key) {
                c.at(read.span.clone(), format!("[[route]] needs `{key}`"));
            }
        }
        if let Some(p) = &r.prefix {
            prefix(c, p, &mut prefixes);
        }
        let upstream = r.upstream.as_ref().and_then(|u| known(c, u, names));
        if let (Some(p), Some(upstream), true) = (&r.prefix, upstream, c.problems.len() == before) {
            routes.push(RouteSpec {
                prefix: p.get_ref().clone(),
                upstream,
            });
        }
    }
    routes
}

/// A route prefix: `/` and at least one more character, none of them blank or a control, `?` or `#`,
/// and not another route's.
fn prefix(c: &mut Checker<'_>, p: &Spanned<String>, prefixes: &mut BTreeMap<String, usize>) {
    let prefix = p.get_ref();
    let trimmed = prefix.trim_end_matches('/');
    if !prefix.starts_with('/') {
        c.at(
            p.span(),
            format!("prefix {prefix:?} must start with '/' (e.g. \"/local\")"),
        );
    } else if trimmed.is_empty() {
        c.at(
            p.span(),
            format!("prefix {prefix:?} would take every path: name a segment, e.g. \"/local\""),
        );
    } else if !prefix
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#')
    {
        c.at(
            p.span(),
            format!("prefix {prefix:?} may hold only visible ASCII, without '?' or '#'"),
        );
    } else {
        let line = c.line(p.span().start);
        match prefixes.get(trimmed) {
            Some(first) => c.at(
                p.span(),
                format!("prefix {prefix:?} is already routed (line {first})"),
            ),
            None => {
                prefixes.insert(trimmed.to_string(), line);
            }
        }
    }
}
