//! The global settings that are one option's value: a table, [`OPTIONS`], with one row per option.
//!
//! A row names the option (its clap id, which is its long name with `_`: `dns_ttl` for `--dns-ttl`), says
//! what kind of value it takes, and which field of [`ServeArgs`] it sets. That is all the file needs: the
//! same row reads the value, checks it with the option's own parser or bounds, and, in `precedence`,
//! writes it where no option was given. Making an option settable in the file is one row, e.g.
//!
//! ```text
//! ("drain_timeout", Duration(parse_duration, |a| &mut a.common.drain_timeout)),
//! ("max_clients", Number(1..=i64::MAX, |a| &mut a.max_clients)),
//! ```
//!
//! A unit test holds the rows to the options: each key is an option of `serve`, and the file accepts what
//! the command line accepts. The settings that are more than one value (`tls_cert` with `tls_key`, and
//! `client_keys_file`, a file read at once) are read by `meaning::settings` instead.

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::time::Duration;

use toml::Value as Toml;

use crate::config::duration::{
    MaybeDuration, parse_duration, parse_optional_duration, parse_positive_duration,
};
use crate::config::resilience::parse_rate;
use crate::config::{MAX_SECS, ServeArgs, parse_listen};

/// A field of the options, as a function that borrows it from them: where a setting's value goes.
pub(crate) type Field<T> = fn(&mut ServeArgs) -> &mut T;

/// What kind of value an option takes, and the field it sets.
pub(crate) enum Kind {
    /// An address, `"HOST:PORT"` or a bare port, read by `--listen`'s parser.
    Address(Field<SocketAddr>),
    /// `true` or `false`.
    Flag(Field<bool>),
    /// A whole number within the option's bounds.
    Number(RangeInclusive<i64>, Field<dyn NumberField>),
    /// A duration, read by the option's own parser (`parse_positive_duration` for a deadline).
    Duration(fn(&str) -> Result<Duration, String>, Field<Duration>),
    /// A duration where 0 means off.
    DurationOrOff(Field<MaybeDuration>),
    /// Requests per second, from 0 (off) to a million, read by `--rate-limit`'s parser.
    Rate(Field<f64>),
    /// One of a few words (`--access-log`: json, text, off).
    Choice(&'static [&'static str], Field<String>),
}

use Kind::*;

/// Every option the file may set as a value. The order is that of "expected one of ..." when a key is
/// misspelt.
// One row per line: rustfmt would spread a row over five, and a table reads best as a table.
#[rustfmt::skip]
pub(crate) const OPTIONS: &[(&str, Kind)] = &[
    // Where to listen, with how many workers, and the limits of the loop.
    ("listen", Address(|a| &mut a.listen)),
    ("workers", Number(1..=u16::MAX as i64, |a| &mut a.workers)),
    ("upstream_idle_timeout", Number(1..=MAX_SECS as i64, |a| &mut a.upstream_idle_timeout)),
    ("upstream_max_conns", Number(0..=i64::MAX, |a| &mut a.upstream_max_conns)),
    ("dns_ttl", Number(1..=MAX_SECS as i64, |a| &mut a.dns_ttl)),
    ("stream_buffer_bytes", Number(1..=1 << 30, |a| &mut a.common.stream_buffer_bytes)),
    ("max_body_bytes", Number(1..=1 << 30, |a| &mut a.common.max_body_bytes)),
    ("loop_warn_ms", Number(0..=(MAX_SECS * 1000) as i64, |a| &mut a.common.loop_warn_ms)),
    ("backlog", Number(1..=u32::MAX as i64, |a| &mut a.common.backlog)),
    ("max_fds", Number(0..=i64::MAX, |a| &mut a.common.max_fds)),
    ("allow_unauthenticated", Flag(|a| &mut a.allow_unauthenticated)),
    // How long a client may take (docs/10-deadlines.md).
    ("client_head_timeout", Duration(parse_positive_duration, |a| &mut a.common.client_timeouts.client_head_timeout)),
    ("client_body_timeout", Duration(parse_positive_duration, |a| &mut a.common.client_timeouts.client_body_timeout)),
    ("keepalive_timeout", Duration(parse_positive_duration, |a| &mut a.common.client_timeouts.keepalive_timeout)),
    ("client_write_timeout", Duration(parse_positive_duration, |a| &mut a.common.client_timeouts.client_write_timeout)),
    // How long an upstream may take.
    ("upstream_connect_timeout", Duration(parse_positive_duration, |a| &mut a.timeouts.upstream_connect_timeout)),
    ("tls_handshake_timeout", Duration(parse_positive_duration, |a| &mut a.timeouts.tls_handshake_timeout)),
    ("upstream_head_timeout", Duration(parse_positive_duration, |a| &mut a.timeouts.upstream_head_timeout)),
    ("first_token_timeout", Duration(parse_positive_duration, |a| &mut a.timeouts.first_token_timeout)),
    ("stream_idle_timeout", Duration(parse_positive_duration, |a| &mut a.timeouts.stream_idle_timeout)),
    ("stream_timeout", DurationOrOff(|a| &mut a.timeouts.stream_timeout)),
    ("sse_keepalive", DurationOrOff(|a| &mut a.timeouts.sse_keepalive)),
    // Admission (an [[upstream]] may have its own), retries, the breaker, the rate limit.
    ("upstream_max_concurrent", Number(0..=i64::MAX, |a| &mut a.resilience.upstream_max_concurrent)),
    ("upstream_queue", Number(0..=i64::MAX, |a| &mut a.resilience.upstream_queue)),
    ("upstream_queue_timeout", Duration(parse_positive_duration, |a| &mut a.resilience.upstream_queue_timeout)),
    ("retries", Number(0..=10, |a| &mut a.resilience.retries)),
    ("retry_backoff", Duration(parse_positive_duration, |a| &mut a.resilience.retry_backoff)),
    ("retry_max_wait", Duration(parse_positive_duration, |a| &mut a.resilience.retry_max_wait)),
    ("breaker_failures", Number(0..=u32::MAX as i64, |a| &mut a.resilience.breaker_failures)),
    ("breaker_cooldown", Duration(parse_positive_duration, |a| &mut a.resilience.breaker_cooldown)),
    ("rate_limit", Rate(|a| &mut a.resilience.rate_limit)),
    ("rate_burst", Number(1..=1_000_000, |a| &mut a.resilience.rate_burst)),
    ("drain_timeout", Duration(parse_duration, |a| &mut a.common.drain_timeout)),
    ("drain_grace", Duration(parse_duration, |a| &mut a.common.drain_grace)),
    ("max_clients", Number(1..=i64::MAX, |a| &mut a.max_clients)),
    // What the relay says of itself.
    ("no_metrics", Flag(|a| &mut a.observe.no_metrics)),
    ("access_log", Choice(&["json", "text", "off"], |a| &mut a.observe.access_log)),
    ("debug_stall_route", Flag(|a| &mut a.observe.debug_stall_route)),
];

/// The row of the option `key` (`None`: the file cannot set such an option).
pub(crate) fn find(key: &str) -> Option<&'static (&'static str, Kind)> {
    OPTIONS.iter().find(|(k, _)| *k == key)
}

/// A setting's value, checked, with the field it goes to.
#[derive(Clone, Copy)]
pub(crate) enum Value {
    Address(SocketAddr, Field<SocketAddr>),
    Flag(bool, Field<bool>),
    Number(u64, Field<dyn NumberField>),
    Duration(Duration, Field<Duration>),
    DurationOrOff(MaybeDuration, Field<MaybeDuration>),
    Rate(f64, Field<f64>),
    Choice(&'static str, Field<String>),
}

impl Kind {
    /// Reads `value` as this kind of value. `name` is how messages call it: "`dns_ttl`", or "upstream
    /// \"local\": `queue`".
    pub(crate) fn read(&self, name: &str, value: &Toml) -> Result<Value, String> {
        // The options the command line reads as text (an address, a duration, a rate) may be written as
        // a string or as a number: `listen = 8080` as `--listen 8080`, `stream_timeout = 30` as 30 s.
        let text = || match value {
            Toml::String(s) => Ok(s.clone()),
            Toml::Integer(n) => Ok(n.to_string()),
            Toml::Float(x) => Ok(x.to_string()),
            other => Err(wrong_type(name, other, "a string or a number")),
        };
        let parsed = |e: String| format!("{name}: {e}");
        Ok(match self {
            Address(field) => Value::Address(parse_listen(&text()?).map_err(parsed)?, *field),
            Flag(field) => match value {
                Toml::Boolean(b) => Value::Flag(*b, *field),
                other => return Err(wrong_type(name, other, "true or false")),
            },
            Number(bounds, field) => match value {
                Toml::Integer(n) => Value::Number(within(name, *n, bounds)?, *field),
                other => return Err(wrong_type(name, other, "a whole number")),
            },
            Duration(parse, field) => Value::Duration(parse(&text()?).map_err(parsed)?, *field),
            DurationOrOff(field) => {
                let d = parse_optional_duration(&text()?).map_err(parsed)?;
                Value::DurationOrOff(d, *field)
            }
            Rate(field) => Value::Rate(parse_rate(&text()?).map_err(parsed)?, *field),
            Choice(words, field) => match value {
                Toml::String(s) => match words.iter().find(|w| *w == s) {
                    Some(word) => Value::Choice(word, *field),
                    None => {
                        return Err(format!(
                            "{name}: expected one of {}, not {s:?}",
                            words.join(", ")
                        ));
                    }
                },
                other => {
                    return Err(wrong_type(
                        name,
                        other,
                        &format!("one of {}", words.join(", ")),
                    ));
                }
            },
        })
    }
}

impl Value {
    /// Sets the option's field to this value.
    pub(crate) fn write(self, args: &mut ServeArgs) {
        match self {
            Value::Address(v, field) => *field(args) = v,
            Value::Flag(v, field) => *field(args) = v,
            Value::Number(n, field) => field(args).set(n),
            Value::Duration(v, field) => *field(args) = v,
            Value::DurationOrOff(v, field) => *field(args) = v,
            Value::Rate(v, field) => *field(args) = v,
            Value::Choice(v, field) => *field(args) = v.to_string(),
        }
    }
}

/// What `Debug` shows of a value: the value, not the address of the function that finds its field.
impl std::fmt::Debug for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Address(v, _) => write!(f, "{v}"),
            Value::Flag(v, _) => write!(f, "{v}"),
            Value::Number(n, _) => write!(f, "{n}"),
            Value::Duration(d, _) => write!(f, "{d:?}"),
            Value::DurationOrOff(MaybeDuration(d), _) => write!(f, "{d:?}"),
            Value::Rate(r, _) => write!(f, "{r}"),
            Value::Choice(w, _) => write!(f, "{w}"),
        }
    }
}

/// `n` if it is within `bounds`. The message names the bounds as the command line's do.
fn within(name: &str, n: i64, bounds: &RangeInclusive<i64>) -> Result<u64, String> {
    let (lo, hi) = (*bounds.start(), *bounds.end());
    match u64::try_from(n) {
        Ok(fits) if bounds.contains(&n) => Ok(fits),
        _ if hi == i64::MAX => Err(format!("{name} must be at least {lo}, not {n}")),
        _ => Err(format!("{name} must be from {lo} to {hi}, not {n}")),
    }
}

/// A value of the wrong TOML type, shown as serde shows one (`invalid type: string "2", expected ...`).
fn wrong_type(name: &str, value: &Toml, expected: &str) -> String {
    let shown = match value {
        Toml::String(s) => format!("string {s:?}"),
        Toml::Integer(n) => format!("integer `{n}`"),
        Toml::Float(x) => format!("floating point `{x}`"),
        Toml::Boolean(b) => format!("boolean `{b}`"),
        other => other.type_str().to_string(),
    };
    format!("{name}: invalid type: {shown}, expected {expected}")
}

/// A whole-number field of the options, whatever its integer type. An `Option` one (`--backlog`, whose
/// default is "not set") becomes `Some`.
pub(crate) trait NumberField {
    /// Sets the field to `n`, which is within the option's bounds, so it fits.
    fn set(&mut self, n: u64);
}

impl NumberField for u64 {
    fn set(&mut self, n: u64) {
        *self = n;
    }
}

// The bounds make these conversions exact; saturating keeps them free of a panic all the same.
impl NumberField for usize {
    fn set(&mut self, n: u64) {
        *self = usize::try_from(n).unwrap_or(usize::MAX);
    }
}

impl NumberField for u32 {
    fn set(&mut self, n: u64) {
        *self = u32::try_from(n).unwrap_or(u32::MAX);
    }
}

impl NumberField for u16 {
    fn set(&mut self, n: u64) {
        *self = u16::try_from(n).unwrap_or(u16::MAX);
    }
}

impl<T: NumberField + Default> NumberField for Option<T> {
    fn set(&mut self, n: u64) {
        self.get_or_insert_with(T::default).set(n);
    }
}
