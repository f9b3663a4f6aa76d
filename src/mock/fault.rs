//! Faults on demand: what a request can ask the mock to do wrong, the one syntax it says it in, and the
//! places a request may carry it. Sans-IO: [`parse`] is a pure function; `Mock` does what a [`Fault`] says.
//!
//! # Why per request
//!
//! The relay's deadlines, retries, fallback, circuit breaker and mid-stream failure reporting each need an
//! upstream that fails in one exact way. If the mock failed by configuration, a test would need one mock
//! process per failure and could not show "a 500, then a 200". So every request says how it wants to be
//! failed, and one mock serves a whole test.
//!
//! # The grammar
//!
//! ```text
//! spec     = item *( "," item )          at most 512 bytes; blanks around items, keys and values are ignored
//! item     = key "=" value
//! duration = 1*DIGIT ( "ms" / "s" )      at most 3600s
//! count    = 1*DIGIT                     fits 32 bits
//! ```
//!
//! | item | what the mock does |
//! | --- | --- |
//! | `status=NNN` | answers NNN (400 to 599) with the provider's error body and `Retry-After`, instead of the answer |
//! | `retry-after=SECS` | the `Retry-After` of that status answer (default [`RETRY_AFTER`]); needs `status` |
//! | `head-delay=D` | sends nothing for D, then the answer (a status answer too) |
//! | `first-token-delay=D` | a stream's head at once, its first event after D |
//! | `stall-after=K` | after K tokens, sends nothing more and keeps the connection open |
//! | `reset-after=K` | after K tokens, resets the connection (RST); `reset-after=request`: before the head |
//! | `bad-chunk-after=K` | after K tokens, a malformed chunk-size line ([`BAD_CHUNK`]), then nothing |
//! | `error-after=K` | after K tokens, the provider's own in-stream error event, then a proper end |
//! | `close-idle=D` | once the answer is out, closes the connection after D without a new request |
//! | `times=N,key=NAME` | the faults apply to the first N requests carrying this key only; the rest are served normally |
//!
//! "After K tokens" is after the stream's opening events and K token events, whatever the provider's event
//! shapes (Anthropic's `message_start`, the Responses API's `response.created`, ...). When the answer is
//! shorter than K tokens, the fault takes the place of its last event: a stream fault always happens. At
//! most one of `stall-after`, `reset-after`, `bad-chunk-after` and `error-after` may be given (the first
//! would end the stream before the second), and a spec must ask for at least one fault. Stream faults
//! apply to streamed answers; a whole JSON answer honours `status`, `head-delay`, `reset-after=request`,
//! `close-idle` and `times` (it has no tokens to fail after).
//!
//! # Where a request carries it
//!
//! [`from_head`]: a header field `x-mock-fault: SPEC` (pass-through routes forward client fields), else a
//! query parameter `mock_fault=SPEC` (URL-encoded or not); and, when the head carries none, [`from_prompt`]:
//! `[fault: SPEC]` anywhere in the prompt (the last user turn), because the relay's simple route builds its
//! own upstream request and forwards nothing but the prompt. The marker is cut out of the prompt, so the
//! generated tokens are those of the rest. The first place that carries a spec is the only one read. The
//! older spellings still work, as `status=NNN`: `x-mock-status: NNN`, `mock_status=NNN`, and a prompt that
//! is exactly `status:NNN`.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use crate::http::request::Request;

/// The header field that carries a spec.
pub const HEADER: &str = "x-mock-fault";
/// The query parameter that carries a spec.
pub const QUERY: &str = "mock_fault";
/// How a prompt carries a spec: `[fault: SPEC]`.
pub const MARKER: &str = "[fault:";
/// The `Retry-After` of a status fault that names none, in seconds.
pub const RETRY_AFTER: u32 = 7;
/// What `bad-chunk-after` sends where a chunk-size line should be: not hexadecimal.
pub const BAD_CHUNK: &[u8] = b"zz\r\n";
/// The longest spec: errors quote parts of it, and it is only ever a few items.
pub const MAX_SPEC: usize = 512;
/// The longest delay. It keeps `now + delay` far from `Instant`'s limits, and no test waits longer.
pub const MAX_DELAY: Duration = Duration::from_secs(3600);
/// The longest `key`.
pub const MAX_KEY: usize = 64;
/// How many keys [`KeyCounts`] remembers.
pub const KEYS_KEPT: usize = 1024;

const KEYS: &str = "status, retry-after, head-delay, first-token-delay, stall-after, reset-after, \
                    bad-chunk-after, error-after, close-idle, times, key";

/// What a request asked to go wrong. The default asks for nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fault {
    /// `status=NNN`: this status and the provider's error body instead of the answer.
    pub status: Option<u16>,
    /// `retry-after=SECS`: the `Retry-After` of the status answer (only with `status`).
    pub retry_after: Option<u32>,
    /// `head-delay=D`: nothing is sent before D has passed.
    pub head_delay: Option<Duration>,
    /// `first-token-delay=D`: a stream's first event waits D after its head.
    pub first_token_delay: Option<Duration>,
    /// Where and how a stream is cut short.
    pub cut: Option<Cut>,
    /// `close-idle=D`: the connection is closed once it has been idle D after the answer.
    pub close_idle: Option<Duration>,
    /// `times=N,key=NAME`: only the first N requests with this key are failed.
    pub first: Option<First>,
}

/// Where and how an answer is cut short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// `reset-after=request`: the connection is reset where the head would go.
    ResetBeforeHead,
    /// `stall-after=K` and the like: the stream breaks this way after K tokens.
    AfterTokens(u32, Break),
}

/// How a stream breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Break {
    /// Nothing more is sent; the connection stays open until the client leaves.
    Stall,
    /// The connection is reset (RST).
    Reset,
    /// [`BAD_CHUNK`] where the next chunk should start, then nothing.
    BadChunk,
    /// The provider's in-stream error event, then the body ends properly.
    Error,
}

/// `times=N,key=NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct First {
    pub times: u32,
    pub key: String,
}

impl Fault {
    /// True when the spec asks for nothing (the default: most requests).
    pub fn is_none(&self) -> bool {
        *self == Fault::default()
    }

    /// Just a status: what the older spellings (`x-mock-status`, `mock_status`, `status:NNN`) ask for.
    fn only_status(status: u16) -> Fault {
        Fault {
            status: Some(status),
            ..Fault::default()
        }
    }
}

/// Parses a spec (see the module docs). The error names the problem, for the 400 that answers it.
pub fn parse(spec: &str) -> Result<Fault, String> {
    if spec.len() > MAX_SPEC {
        return Err(format!("a fault spec has at most {MAX_SPEC} bytes"));
    }
    if spec.trim().is_empty() {
        return Err("the fault spec is empty: expected KEY=VALUE, separated by commas".into());
    }
    let mut f = Fault::default();
    let (mut times, mut key) = (None, None);
    for item in spec.split(',') {
        let Some((name, value)) = item.split_once('=') else {
            return Err(format!("{:?} is not KEY=VALUE", item.trim()));
        };
        let (name, value) = (name.trim(), value.trim());
        let problem = |why: String| format!("{name}={value:?}: {why}");
        match name {
            "status" => set(&mut f.status, name, status(value).map_err(problem)?)?,
            "retry-after" => set(&mut f.retry_after, name, count(value).map_err(problem)?)?,
            "head-delay" => set(&mut f.head_delay, name, duration(value).map_err(problem)?)?,
            "first-token-delay" => set(
                &mut f.first_token_delay,
                name,
                duration(value).map_err(problem)?,
            )?,
            "close-idle" => set(&mut f.close_idle, name, duration(value).map_err(problem)?)?,
            "stall-after" | "reset-after" | "bad-chunk-after" | "error-after" => {
                if f.cut.is_some() {
                    return Err(format!(
                        "{name}: only one of stall-after, reset-after, bad-chunk-after and \
                         error-after may be given (the first would end the stream)"
                    ));
                }
                f.cut = Some(cut(name, value).map_err(problem)?);
            }
            "times" => match count(value).map_err(problem)? {
                0 => return Err(problem("a fault that never happens tests nothing".into())),
                n => set(&mut times, name, n)?,
            },
            "key" => set(&mut key, name, key_name(value).map_err(problem)?)?,
            _ => return Err(format!("unknown key {name:?}; the keys are {KEYS}")),
        }
    }
    f.first = match (times, key) {
        (Some(times), Some(key)) => Some(First { times, key }),
        (None, None) => None,
        _ => return Err("times and key go together: times=N,key=NAME".into()),
    };
    if f.retry_after.is_some() && f.status.is_none() {
        return Err("retry-after needs status: it is a header of the status answer".into());
    }
    let asks = f.status.is_some()
        || f.head_delay.is_some()
        || f.first_token_delay.is_some()
        || f.cut.is_some()
        || f.close_idle.is_some();
    if !asks {
        return Err(format!("the spec asks for no fault; the keys are {KEYS}"));
    }
    Ok(f)
}

/// Fills `slot`, once.
fn set<T>(slot: &mut Option<T>, name: &str, value: T) -> Result<(), String> {
    if slot.is_some() {
        return Err(format!("{name} is given twice"));
    }
    *slot = Some(value);
    Ok(())
}

/// Decimal digits and nothing else (`str::parse` would take a sign), fitting 32 bits.
fn count(value: &str) -> Result<u32, String> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err("expected a whole number".into());
    }
    value.parse().map_err(|_| "too large".to_string())
}

fn status(value: &str) -> Result<u16, String> {
    error_status(value).ok_or_else(|| "expected an error status, from 400 to 599".to_string())
}

/// Three digits from 400 to 599: the status of a fault, in any spelling.
pub fn error_status(digits: &str) -> Option<u16> {
    if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|s| (400..=599).contains(s))
}

/// `500ms` or `2s`, at most [`MAX_DELAY`].
fn duration(value: &str) -> Result<Duration, String> {
    let (digits, unit_ms) = if let Some(ms) = value.strip_suffix("ms") {
        (ms, 1)
    } else if let Some(s) = value.strip_suffix('s') {
        (s, 1000)
    } else {
        return Err("expected a duration with its unit: 500ms, 2s".into());
    };
    let d = count(digits)
        .ok()
        .map(|n| Duration::from_millis(u64::from(n) * unit_ms))
        .ok_or_else(|| "expected a duration with its unit: 500ms, 2s".to_string())?;
    if d > MAX_DELAY {
        return Err(format!("at most {}s", MAX_DELAY.as_secs()));
    }
    Ok(d)
}

fn cut(name: &str, value: &str) -> Result<Cut, String> {
    let how = match name {
        "stall-after" => Break::Stall,
        "reset-after" if value == "request" => return Ok(Cut::ResetBeforeHead),
        "reset-after" => Break::Reset,
        "bad-chunk-after" => Break::BadChunk,
        _ => Break::Error,
    };
    let tokens = count(value).map_err(|why| match how {
        Break::Reset => format!("{why} of tokens, or `request`"),
        _ => format!("{why} of tokens"),
    })?;
    Ok(Cut::AfterTokens(tokens, how))
}

/// 1 to [`MAX_KEY`] letters, digits, `.`, `_` or `-`: what a test names its request by.
fn key_name(value: &str) -> Result<String, String> {
    let fits = (1..=MAX_KEY).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !fits {
        return Err(format!("1 to {MAX_KEY} letters, digits, '.', '_' or '-'"));
    }
    Ok(value.to_string())
}

/// The spec, written back in the grammar's order: what [`parse`] reads as the same fault.
impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: &Duration| match d.as_millis() {
            n if n % 1000 == 0 => format!("{}s", n / 1000),
            n => format!("{n}ms"),
        };
        let mut items = Vec::new();
        if let Some(s) = self.status {
            items.push(format!("status={s}"));
        }
        if let Some(s) = self.retry_after {
            items.push(format!("retry-after={s}"));
        }
        if let Some(d) = &self.head_delay {
            items.push(format!("head-delay={}", ms(d)));
        }
        if let Some(d) = &self.first_token_delay {
            items.push(format!("first-token-delay={}", ms(d)));
        }
        match self.cut {
            Some(Cut::ResetBeforeHead) => items.push("reset-after=request".into()),
            Some(Cut::AfterTokens(k, how)) => items.push(format!(
                "{}={k}",
                match how {
                    Break::Stall => "stall-after",
                    Break::Reset => "reset-after",
                    Break::BadChunk => "bad-chunk-after",
                    Break::Error => "error-after",
                }
            )),
            None => {}
        }
        if let Some(d) = &self.close_idle {
            items.push(format!("close-idle={}", ms(d)));
        }
        if let Some(First { times, key }) = &self.first {
            items.push(format!("times={times},key={key}"));
        }
        f.write_str(&items.join(","))
    }
}

/// The spec a request's head carries: `x-mock-fault`, else `x-mock-status`, else the query's
/// `mock_fault`, else its `mock_status`. The older spellings are read only when well-formed (they never
/// were errors); a malformed new one is an error that names where it was.
pub fn from_head(req: &Request) -> Result<Option<Fault>, String> {
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    };
    if let Some(value) = header(HEADER) {
        let spec = std::str::from_utf8(value).map_err(|_| format!("{HEADER}: not UTF-8"))?;
        return parse(spec)
            .map(Some)
            .map_err(|why| format!("{HEADER}: {why}"));
    }
    let old = header("x-mock-status").and_then(|v| std::str::from_utf8(v).ok());
    if let Some(status) = old.and_then(|v| error_status(v.trim())) {
        return Ok(Some(Fault::only_status(status)));
    }
    let query = || url::form_urlencoded::parse(req.query.as_deref().unwrap_or("").as_bytes());
    if let Some((_, spec)) = query().find(|(name, _)| name == QUERY) {
        return parse(&spec)
            .map(Some)
            .map_err(|why| format!("{QUERY}: {why}"));
    }
    let old = query().find(|(name, _)| name == "mock_status");
    Ok(old
        .and_then(|(_, v)| error_status(&v))
        .map(Fault::only_status))
}

/// The spec a prompt carries: `[fault: SPEC]` anywhere in it, which is then cut out of the prompt (the rest
/// is what the model answers), or a prompt that is exactly `status:NNN` (blanks around it ignored).
pub fn from_prompt(prompt: &mut String) -> Result<Option<Fault>, String> {
    if let Some(start) = prompt.find(MARKER) {
        let spec_at = start + MARKER.len();
        let Some(len) = prompt[spec_at..].find(']') else {
            return Err(format!("{MARKER} in the prompt has no closing ]"));
        };
        let fault = parse(&prompt[spec_at..spec_at + len])
            .map_err(|why| format!("the prompt's {MARKER} ...]: {why}"))?;
        // A blank where the marker was, so that the words on either side stay apart.
        prompt.replace_range(start..spec_at + len + 1, " ");
        return Ok(Some(fault));
    }
    let old = prompt.trim().strip_prefix("status:").and_then(error_status);
    Ok(old.map(Fault::only_status))
}

/// How many requests each `key` of a `times` fault has made, shared by all the workers of a mock (the relay
/// retries on another connection, maybe another worker's). Bounded: it remembers the last [`KEYS_KEPT`]
/// keys, forgetting the oldest first; a forgotten key counts from one again.
#[derive(Debug, Default)]
pub struct KeyCounts {
    /// Held only to count one request.
    counts: Mutex<Counts>,
}

/// Invariant: `by_key` and `oldest_first` hold the same keys, at most [`KEYS_KEPT`] of them.
#[derive(Debug, Default)]
struct Counts {
    by_key: HashMap<String, u32>,
    oldest_first: VecDeque<String>,
}

impl KeyCounts {
    /// Counts one more request asking for `fault`, and says whether the fault applies to it: always,
    /// without `times`; with `times=N`, while it is one of the first N with its key.
    pub fn applies(&self, fault: &Fault) -> bool {
        let Some(First { times, key }) = &fault.first else {
            return true;
        };
        // A thread that panicked while holding the lock cannot have left the counts inconsistent enough to
        // matter: at worst one key is counted twice.
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let seen = match counts.by_key.get_mut(key) {
            Some(n) => {
                *n = n.saturating_add(1);
                *n
            }
            None => {
                if counts.by_key.len() >= KEYS_KEPT
                    && let Some(oldest) = counts.oldest_first.pop_front()
                {
                    counts.by_key.remove(&oldest);
                }
                counts.by_key.insert(key.clone(), 1);
                counts.oldest_first.push_back(key.clone());
                1
            }
        };
        seen <= *times
    }
}

#[cfg(test)]
#[path = "tests_fault.rs"]
mod tests;
