//! Reading a relayed event stream on a side path: when its first token went by, how many tokens it used,
//! and which model answered. Not a byte of the stream is changed: [`UsageWatch::feed`] only looks.
//!
//! The relay passes the upstream's events to the client as they are (chapter 2, chapter 9). Two facts
//! about them feed the metrics and the access log:
//!
//! - **The first token** ([`UsageWatch::first_token`]): the first event that carries content, for the
//!   time-to-first-token histogram. Stricter than [`super::sse::SseWatch::first_event`]: an opening event
//!   (a role-only delta, `response.created`, `message_start`) is a real event but holds no token.
//! - **The token usage and the model** ([`UsageWatch::usage`], [`UsageWatch::model`]), from the stream's
//!   own fields; each provider puts them in its own place:
//!
//! | dialect | content | usage | model |
//! | --- | --- | --- | --- |
//! | [`Dialect::OpenAi`] | `choices[].delta` with content, a refusal, reasoning or a tool call; `choices[].text` | the `usage` of the last chunk, with `stream_options.include_usage` (`"usage":null` before it) | `model` |
//! | [`Dialect::Responses`] | events `response.*.delta` | `response.usage` of `response.completed` (or `.incomplete`, `.failed`) | `response.model` |
//! | [`Dialect::Anthropic`] | events `content_block_delta` | `message.usage` of `message_start`, then `usage` of `message_delta` (cumulative) | `message.model` |
//! | [`Dialect::Gemini`] | `candidates[].content.parts[]` with text, a function call, data or code | `usageMetadata` (cumulative: the last wins) | `modelVersion` |
//!
//! Input tokens count cached ones too, and output tokens the model's reasoning, as OpenAI's totals do
//! (and as the OpenTelemetry GenAI conventions ask): Anthropic's input is `input_tokens` plus
//! `cache_creation_input_tokens` and `cache_read_input_tokens`, Gemini's output `candidatesTokenCount`
//! plus `thoughtsTokenCount`. A field a usage object leaves out keeps its earlier value (Gemini leaves out
//! zeros; Anthropic's `message_delta` may carry only `output_tokens`); one never seen counts 0.
//!
//! # Why it is built this way
//!
//! This runs on the relay's hot path, once per upstream read, so its cost must stay flat per byte and its
//! memory bounded, whatever the stream. Two mechanisms, one per question:
//!
//! - **The first token**: until it has gone by (a few small events), each event's data is kept (at most
//!   [`EVENT_CAP`] bytes) and parsed with `serde_json` to see whether it carries content; Anthropic and
//!   the Responses API name their events, and the name decides without parsing. A larger opening event
//!   is not parsed: in OpenAI's and Gemini's streams it counts as content (no header event is that
//!   large), in the named dialects its name decides. After the first token, no event is parsed.
//! - **The usage and the model**, in every event that can hold them (all of them where events have no
//!   names; `message_start`/`message_delta` and `response.created`/`.completed`/... where they do): the
//!   data is searched with `memchr::memmem` for the usage key (`"usage"`, `"usageMetadata"`) and, until
//!   the model is known, the model key, and only the value after a key is read: an object of at most
//!   [`VALUE_CAP`] bytes for the usage (read where it lies when the piece fed holds it whole, else
//!   followed and kept), a string for the model. OpenAI's `"usage":null` is passed over at once, and a
//!   `response.completed` that repeats a long answer costs a search, not a copy. An object without a
//!   token count (a tool's parameter named `usage`) is not a usage.
//!
//! Measured (`benches/usage.rs`): about 40 ns per OpenAI event after the first token, 65 ns per event
//! over a whole 50-event stream; Gemini, whose every chunk carries `usageMetadata`, about 120 ns.
//!
//! Lines end as the SSE specification says (CRLF, LF or CR); comments (`: ping`) and other fields are
//! passed over; the lines of a multi-line `data` are joined with LF. The stream may be split anywhere
//! (inside a line, a key, a UTF-8 sequence): a key split in two is found through the last
//! [`CARRY`] bytes kept from the previous feed, and every other state is per byte. So every split of a
//! stream gives the same answers as the whole (a property test checks it).
//!
//! Invariants: no input panics (nothing is indexed that was not checked, no `unwrap` of input); the
//! memory held is the struct, the opening buffer (≤ [`EVENT_CAP`], freed once the first token has gone
//! by), the value buffer (≤ [`VALUE_CAP`]) and the model (≤ [`MAX_MODEL_LEN`] bytes).
//!
//! The body of a request that is not an event stream (a whole JSON answer) is not read here.

use std::sync::LazyLock;

use memchr::memmem::Finder;

use super::providers::{MAX_MODEL_LEN, Provider};

/// The most data of one opening event kept for parsing; a larger one is not parsed.
pub const EVENT_CAP: usize = 16 * 1024;
/// The most bytes of a usage object kept; a larger one is not read.
pub const VALUE_CAP: usize = 2 * 1024;
/// The longest event name kept (`response.reasoning_summary_text.delta` is 37); a longer one is no name
/// we look for.
const NAME_CAP: usize = 64;
/// What an event name longer than [`NAME_CAP`] counts as: a name, but none of those looked for.
const OVERLONG: &[u8] = b"\0overlong";
/// The longest field name we look for: `event`.
const FIELD_CAP: usize = 5;
/// Bytes kept from one feed to the next, to find a key split between them: the longest key
/// (`"usageMetadata"`, 15 bytes) less one.
pub const CARRY: usize = 14;
/// The longest model string kept as it is written in JSON (escapes included), quotes included.
const MODEL_RAW_CAP: usize = 2 * MAX_MODEL_LEN + 2;

static USAGE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"usage\""));
static MODEL: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"model\""));
static USAGE_METADATA: LazyLock<Finder<'static>> =
    LazyLock::new(|| Finder::new(b"\"usageMetadata\""));
static MODEL_VERSION: LazyLock<Finder<'static>> =
    LazyLock::new(|| Finder::new(b"\"modelVersion\""));

/// The shape of the event stream an upstream answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// OpenAI's Chat Completions and legacy Completions (and every server that copies them): unnamed
    /// `data:` chunks.
    OpenAi,
    /// OpenAI's Responses API: named events, `response.created` to `response.completed`.
    Responses,
    /// Anthropic's Messages API: named events, `message_start` to `message_stop`.
    Anthropic,
    /// Gemini's `streamGenerateContent?alt=sse`: unnamed `data:` chunks.
    Gemini,
}

impl Dialect {
    /// The stream an upstream of `provider` answers when asked for `path` (the path the relay asks that
    /// upstream for, after a route prefix is removed; for the simple route, whatever it is: the relay
    /// then asks for the provider's chat stream, `providers::build_request`, and relays its events).
    pub fn of(provider: Provider, path: &str) -> Dialect {
        let path = path.split('?').next().unwrap_or(path);
        match provider {
            Provider::OpenAi if path.ends_with("/v1/responses") => Dialect::Responses,
            Provider::OpenAi => Dialect::OpenAi,
            Provider::Anthropic => Dialect::Anthropic,
            Provider::Gemini => Dialect::Gemini,
        }
    }

    /// The dialect names its events, and the name says what an event is.
    fn named(self) -> bool {
        matches!(self, Dialect::Responses | Dialect::Anthropic)
    }

    /// An event of this name carries content.
    fn is_content(self, name: &[u8]) -> bool {
        match self {
            Dialect::Anthropic => name == b"content_block_delta",
            Dialect::Responses => name.starts_with(b"response.") && name.ends_with(b".delta"),
            Dialect::OpenAi | Dialect::Gemini => false,
        }
    }

    /// The data of an event of this name (`None`: unnamed) may hold the usage or the model.
    fn may_hold_usage(self, name: Option<&[u8]>) -> bool {
        let Some(name) = name else {
            return true;
        };
        match self {
            Dialect::Anthropic => matches!(name, b"" | b"message_start" | b"message_delta"),
            Dialect::Responses => matches!(
                name,
                b"" | b"response.created"
                    | b"response.in_progress"
                    | b"response.completed"
                    | b"response.incomplete"
                    | b"response.failed"
            ),
            Dialect::OpenAi | Dialect::Gemini => true,
        }
    }

    /// What the usage and the model are called, and which counts make up input and output.
    fn keys(self) -> Keys {
        match self {
            Dialect::OpenAi => Keys::new::<OpenAiCounts>(&USAGE, &MODEL),
            Dialect::Responses => Keys::new::<ResponsesCounts>(&USAGE, &MODEL),
            Dialect::Anthropic => Keys::new::<AnthropicCounts>(&USAGE, &MODEL),
            Dialect::Gemini => Keys::new::<GeminiCounts>(&USAGE_METADATA, &MODEL_VERSION),
        }
    }
}

/// `usage` of Chat Completions and Completions.
struct OpenAiCounts;

impl Counted for OpenAiCounts {
    const INPUT: &'static [&'static str] = &["prompt_tokens"];
    const OUTPUT: &'static [&'static str] = &["completion_tokens"];
}

/// `usage` of the Responses API.
struct ResponsesCounts;

impl Counted for ResponsesCounts {
    const INPUT: &'static [&'static str] = &["input_tokens"];
    const OUTPUT: &'static [&'static str] = &["output_tokens"];
}

/// `usage` of Anthropic's messages: the cache's input tokens are input tokens too.
struct AnthropicCounts;

impl Counted for AnthropicCounts {
    const INPUT: &'static [&'static str] = &[
        "input_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
    ];
    const OUTPUT: &'static [&'static str] = &["output_tokens"];
}

/// Gemini's `usageMetadata`: the thoughts are output tokens too.
struct GeminiCounts;

impl Counted for GeminiCounts {
    const INPUT: &'static [&'static str] = &["promptTokenCount"];
    const OUTPUT: &'static [&'static str] = &["candidatesTokenCount", "thoughtsTokenCount"];
}

/// The tokens a stream reports having used. A count the stream never gave is 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Input (prompt) tokens, cached ones included.
    pub input: u64,
    /// Output (completion) tokens, reasoning included.
    pub output: u64,
}

/// Watches one relayed event stream for its first token, its usage and its model (see the module docs).
#[derive(Debug, Clone)]
pub struct UsageWatch {
    dialect: Dialect,
    /// What the current line is, as far as it has been seen.
    line: Line,
    /// The current line's field name, while it is read (`Line::Field`).
    field: [u8; FIELD_CAP],
    field_len: usize,
    /// The next byte is the value's first: one space there is not part of it.
    value_start: bool,
    /// The last byte was a CR: an LF right after it belongs to the same line end.
    after_cr: bool,
    /// The current event's name: `name_len` bytes of `name`; `NAME_CAP + 1` when it is longer.
    name: [u8; NAME_CAP],
    name_len: usize,
    /// The current event has a `data` line.
    has_data: bool,
    /// The current event's data goes to `opening`, to be parsed when it ends (decided at its first data
    /// line: before the first token, where the name does not decide).
    parse: bool,
    /// The current event's data is searched for the usage and model keys (decided at its first line).
    scan_on: bool,
    /// The current opening event's data (≤ `EVENT_CAP`); freed once the first token has gone by.
    opening: Vec<u8>,
    /// The current event's data passed `EVENT_CAP`.
    oversize: bool,
    /// The key search in the current event's data.
    scan: KeyScan,
    first_token: bool,
    found: Found,
}

/// What the current line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// Its field name is being read (a blank line stays here).
    Field,
    /// A `data` line: its value is the event's data.
    Data,
    /// An `event` line: its value is the event's name.
    Event,
    /// A comment, another field, or a field name too long to be ours.
    Skip,
}

impl UsageWatch {
    /// A watch for a stream in `dialect`, before its first byte.
    pub fn new(dialect: Dialect) -> Self {
        UsageWatch {
            dialect,
            line: Line::Field,
            field: [0; FIELD_CAP],
            field_len: 0,
            value_start: false,
            after_cr: false,
            name: [0; NAME_CAP],
            name_len: 0,
            has_data: false,
            parse: false,
            scan_on: false,
            opening: Vec::new(),
            oversize: false,
            scan: KeyScan::default(),
            first_token: false,
            found: Found::default(),
        }
    }

    /// The dialect it reads.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Takes the next payload bytes of the stream (the body as decoded, split anywhere).
    pub fn feed(&mut self, mut payload: &[u8]) {
        while let Some(&first) = payload.first() {
            if self.after_cr {
                self.after_cr = false;
                if first == b'\n' {
                    payload = &payload[1..];
                    continue;
                }
            }
            match memchr::memchr2(b'\n', b'\r', payload) {
                Some(end) => {
                    self.line_part(&payload[..end]);
                    self.end_line();
                    self.after_cr = payload[end] == b'\r';
                    payload = &payload[end + 1..];
                }
                None => {
                    self.line_part(payload);
                    return;
                }
            }
        }
    }

    /// An event that carries content has ended: the first token has gone by.
    pub fn first_token(&self) -> bool {
        self.first_token
    }

    /// The tokens the stream reported so far, if it reported any.
    pub fn usage(&self) -> Option<Usage> {
        let Counts { input, output } = self.found.counts?;
        Some(Usage {
            input: input.unwrap_or(0),
            output: output.unwrap_or(0),
        })
    }

    /// The model the stream named (the first valid one: 1 to 128 bytes, no control character).
    pub fn model(&self) -> Option<&str> {
        self.found.model.as_deref()
    }

    /// The current event's name, if it has one; a name too long to keep is [`OVERLONG`], which is none
    /// of the names looked for.
    fn name(&self) -> Option<&[u8]> {
        match self.name_len {
            0 => None,
            n => Some(self.name.get(..n).unwrap_or(OVERLONG)),
        }
    }

    /// Bytes of the current line, none of them a line end.
    fn line_part(&mut self, mut part: &[u8]) {
        if self.line == Line::Field {
            while let Some((&b, rest)) = part.split_first() {
                part = rest;
                if b == b':' {
                    self.begin_value();
                    break;
                }
                match self.field.get_mut(self.field_len) {
                    Some(slot) => *slot = b,
                    None => {
                        self.line = Line::Skip;
                        return;
                    }
                }
                self.field_len += 1;
            }
        }
        if part.is_empty() {
            return;
        }
        if self.value_start {
            self.value_start = false;
            part = part.strip_prefix(b" ").unwrap_or(part);
        }
        match self.line {
            Line::Data => self.data(part),
            Line::Event => {
                let have = self.name_len.min(NAME_CAP);
                let take = part.len().min(NAME_CAP - have);
                self.name[have..have + take].copy_from_slice(&part[..take]);
                self.name_len = self.name_len.saturating_add(part.len()).min(NAME_CAP + 1);
            }
            Line::Field | Line::Skip => {}
        }
    }

    /// The colon after the field name: what the line is.
    fn begin_value(&mut self) {
        self.value_start = true;
        self.line = match &self.field[..self.field_len] {
            b"data" => {
                self.begin_data();
                Line::Data
            }
            b"event" => {
                // A second `event` line replaces the name.
                self.name_len = 0;
                Line::Event
            }
            _ => Line::Skip,
        };
    }

    fn end_line(&mut self) {
        if self.line == Line::Field {
            // A line without a colon is a field name with an empty value; an empty one ends the event.
            match &self.field[..self.field_len] {
                b"" => self.dispatch(),
                b"data" => self.begin_data(),
                b"event" => self.name_len = 0,
                _ => {}
            }
        }
        self.line = Line::Field;
        self.field_len = 0;
        self.value_start = false;
    }

    /// A data line begins: the first decides what is done with the event's data; the next ones are
    /// joined to it with an LF.
    fn begin_data(&mut self) {
        if self.has_data {
            self.data(b"\n");
            return;
        }
        self.has_data = true;
        // Where events are named, the name decides: their data need not be parsed.
        let named = self.dialect.named() && self.name_len > 0;
        self.parse = !(self.first_token || named);
        self.scan_on = self.dialect.may_hold_usage(self.name());
    }

    /// Bytes of the current event's data.
    fn data(&mut self, bytes: &[u8]) {
        if self.parse && !push_bounded(&mut self.opening, bytes, EVENT_CAP) {
            self.parse = false;
            self.oversize = true;
            self.opening.clear();
        }
        if self.scan_on {
            let keys = self.dialect.keys();
            self.scan.feed(bytes, &keys, &mut self.found);
        }
    }

    /// A blank line: the event ends.
    fn dispatch(&mut self) {
        if self.has_data && !self.first_token {
            self.first_token = self.carries_content();
        }
        self.scan.end_event();
        self.has_data = false;
        self.parse = false;
        self.scan_on = false;
        self.oversize = false;
        self.name_len = 0;
        self.opening.clear();
        if self.first_token && self.opening.capacity() > 0 {
            self.opening = Vec::new();
        }
    }

    /// Whether the event that just ended carries content.
    fn carries_content(&self) -> bool {
        let d = self.dialect;
        match (d, self.name()) {
            (Dialect::Anthropic | Dialect::Responses, Some(name)) => d.is_content(name),
            (Dialect::Anthropic | Dialect::Responses, None) => {
                !self.oversize
                    && content::type_of(&self.opening).is_some_and(|k| d.is_content(k.as_bytes()))
            }
            (Dialect::OpenAi, _) if !self.oversize => content::openai(&self.opening),
            (Dialect::Gemini, _) if !self.oversize => content::gemini(&self.opening),
            // Too large to be an opening event.
            (Dialect::OpenAi | Dialect::Gemini, _) => true,
        }
    }
}

/// Appends `bytes` to `buf` if it stays within `cap` bytes, growing the allocation no further than
/// `cap`; `false` (and nothing appended) if it would not.
fn push_bounded(buf: &mut Vec<u8>, bytes: &[u8], cap: usize) -> bool {
    let need = buf.len().saturating_add(bytes.len());
    if need > cap {
        return false;
    }
    if need > buf.capacity() {
        let want = need.max(buf.capacity().saturating_mul(2)).max(64).min(cap);
        buf.reserve_exact(want - buf.len());
    }
    buf.extend_from_slice(bytes);
    true
}

mod content;
mod scan;
use scan::{Counted, Counts, Found, KeyScan, Keys};

#[cfg(test)]
mod tests;
