//! The key search of [`super::UsageWatch`]: the usage and model keys in an event's data, fed in pieces
//! split anywhere, and the value after each, read without parsing anything else.
//!
//! ```text
//!  Search ─key─▶ Colon ─':'─▶ Value ─'{' (usage)─▶ whole in this piece: read where it lies ──▶ Search
//!    ▲             │            │                  else Object ─its '}'─▶ read: a usage? ───▶ Search
//!    │             │            ├─'"' (model)────▶ Str ─its '"'─▶ read: a model? ──────────▶ Search
//!    └── no ':' ───┴── another ─┘  (null, a number, ...: nothing to read)
//! ```
//!
//! A usage object usually lies whole in the piece being fed: serde's stream deserializer reads it there
//! and says where it ended, so it is neither copied nor looked at twice. One cut by the piece's end (or
//! over its cap, or not JSON) is followed byte by byte to its end, kept up to [`VALUE_CAP`], then read.
//! For a valid object both ways end at the same byte and read the same bytes.
//!
//! Invariants: `carry` holds only bytes seen in `Search` since the last key (so a key that starts in it
//! ends in the next piece); a value is followed to its end whatever its size, and kept only up to its
//! cap, so where the search resumes depends on the bytes alone, never on how they were split.

use std::fmt;
use std::marker::PhantomData;

use memchr::memmem::Finder;
use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

use super::{CARRY, MODEL_RAW_CAP, VALUE_CAP, push_bounded};
use crate::relay::providers::MAX_MODEL_LEN;

/// What a dialect calls its usage and its model, and which counts make up input and output.
pub(super) struct Keys {
    pub usage: &'static Finder<'static>,
    pub model: &'static Finder<'static>,
    fields: Fields,
    /// Reads a usage object that lies whole at the start of the bytes, where it lies: its counts and
    /// its length ([`in_place`]).
    in_place: fn(&[u8]) -> Option<(Counts, usize)>,
}

/// A dialect's counts, as a type: the names of the fields that make up input and output.
pub(super) trait Counted {
    const INPUT: &'static [&'static str];
    const OUTPUT: &'static [&'static str];
}

#[derive(Clone, Copy)]
struct Fields {
    input: &'static [&'static str],
    output: &'static [&'static str],
}

/// Which count a field of a usage object adds to.
enum Field {
    Input,
    Output,
    Other,
}

impl Keys {
    /// The keys `usage` and `model`, with the counts of `C`.
    pub fn new<C: Counted>(
        usage: &'static Finder<'static>,
        model: &'static Finder<'static>,
    ) -> Keys {
        Keys {
            usage,
            model,
            fields: Fields {
                input: C::INPUT,
                output: C::OUTPUT,
            },
            in_place: in_place::<C>,
        }
    }
}

/// Token counts as a stream gave them; `None`: not given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Counts {
    pub input: Option<u64>,
    pub output: Option<u64>,
}

/// What a stream has told so far.
#[derive(Debug, Clone, Default)]
pub(super) struct Found {
    /// Every count given, the last of each kind winning (the counts are cumulative).
    pub counts: Option<Counts>,
    /// The first valid model name.
    pub model: Option<String>,
}

impl Found {
    fn usage(&mut self, new: Counts) {
        if new.input.is_none() && new.output.is_none() {
            // No token count: not a usage (a tool's parameter named `usage`, say).
            return;
        }
        let counts = self.counts.get_or_insert_default();
        counts.input = new.input.or(counts.input);
        counts.output = new.output.or(counts.output);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Usage,
    Model,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Looking for a key.
    Search,
    /// After a key: whitespace, then the colon that makes it a key and not a string.
    Colon(Key),
    /// After the colon: whitespace, then the value.
    Value(Key),
    /// Inside the usage object: its nesting depth, inside a string of it, after a backslash there, and
    /// whether it outgrew [`VALUE_CAP`] (then it is followed to its end and dropped).
    Object {
        depth: u32,
        in_str: bool,
        escaped: bool,
        over: bool,
    },
    /// Inside the model string (its opening quote kept): after a backslash, outgrown.
    Str { escaped: bool, over: bool },
}

/// The search through one event's data (see the module docs).
#[derive(Debug, Clone)]
pub(super) struct KeyScan {
    state: State,
    /// The last bytes seen in `Search`: `carry_len` of them.
    carry: [u8; CARRY],
    carry_len: usize,
    /// The value being read (≤ `VALUE_CAP`).
    value: Vec<u8>,
}

impl Default for KeyScan {
    fn default() -> Self {
        KeyScan {
            state: State::Search,
            carry: [0; CARRY],
            carry_len: 0,
            value: Vec::new(),
        }
    }
}

impl KeyScan {
    /// Takes the next bytes of the event's data.
    pub fn feed(&mut self, mut bytes: &[u8], keys: &Keys, found: &mut Found) {
        while !bytes.is_empty() {
            bytes = match self.state {
                State::Search => self.search(bytes, keys, found.model.is_none()),
                State::Colon(key) => {
                    let rest = trim_ws(bytes);
                    match rest.split_first() {
                        Some((b':', after)) => {
                            self.state = State::Value(key);
                            after
                        }
                        // Not a key: search again from here.
                        Some(_) => {
                            self.state = State::Search;
                            rest
                        }
                        None => rest,
                    }
                }
                State::Value(key) => {
                    let rest = trim_ws(bytes);
                    self.value.clear();
                    match (key, rest.split_first()) {
                        (_, None) => rest,
                        (Key::Usage, Some((b'{', _))) => {
                            // Whole here (the common case): read where it lies. Otherwise (cut by the
                            // piece's end, over its cap, not JSON) follow it byte by byte: for a valid
                            // object both ways end at the same byte and read the same bytes.
                            let head = &rest[..rest.len().min(VALUE_CAP)];
                            if let Some((counts, len)) = (keys.in_place)(head) {
                                found.usage(counts);
                                self.state = State::Search;
                                rest.get(len..).unwrap_or(&[])
                            } else {
                                self.state = State::Object {
                                    depth: 0,
                                    in_str: false,
                                    escaped: false,
                                    over: false,
                                };
                                rest
                            }
                        }
                        (Key::Model, Some((b'"', after))) => {
                            self.value.push(b'"');
                            self.state = State::Str {
                                escaped: false,
                                over: false,
                            };
                            after
                        }
                        // `null`, or a shape that is neither: search again from here.
                        _ => {
                            self.state = State::Search;
                            rest
                        }
                    }
                }
                State::Object { .. } | State::Str { .. } => self.read_value(bytes, keys, found),
            };
        }
    }

    /// The event ended: whatever was half read is dropped.
    pub fn end_event(&mut self) {
        self.state = State::Search;
        self.carry_len = 0;
        self.value.clear();
    }

    /// Looks for the next key (the model's only while `want_model`); returns the bytes after it, or none
    /// (keeping the last ones, for a key that goes on in the next piece).
    fn search<'b>(&mut self, bytes: &'b [u8], keys: &Keys, want_model: bool) -> &'b [u8] {
        let c = self.carry_len.min(CARRY);
        let mut joint = [0u8; 2 * CARRY];
        let head = &bytes[..bytes.len().min(CARRY)];
        if c > 0 {
            joint[..c].copy_from_slice(&self.carry[..c]);
            joint[c..c + head.len()].copy_from_slice(head);
            // A key that starts in the carry (one that lay wholly in it was found last time).
            if let Some((key, at, len)) = earliest(&joint[..c + head.len()], keys, want_model)
                && at < c
            {
                return self.key_found(key, bytes.get((at + len).saturating_sub(c)..));
            }
        }
        if let Some((key, at, len)) = earliest(bytes, keys, want_model) {
            return self.key_found(key, bytes.get(at + len..));
        }
        // Keep the last CARRY bytes of carry and bytes together.
        let tail = &bytes[bytes.len().saturating_sub(CARRY)..];
        let old = (CARRY - tail.len()).min(c);
        self.carry.copy_within(c - old..c, 0);
        self.carry[old..old + tail.len()].copy_from_slice(tail);
        self.carry_len = old + tail.len();
        &[]
    }

    fn key_found<'b>(&mut self, key: Key, rest: Option<&'b [u8]>) -> &'b [u8] {
        self.state = State::Colon(key);
        self.carry_len = 0;
        rest.unwrap_or(&[])
    }

    /// Follows the object or string being read to its end, keeping it up to its cap; at its end, reads
    /// it and searches again.
    fn read_value<'b>(&mut self, bytes: &'b [u8], keys: &Keys, found: &mut Found) -> &'b [u8] {
        let end = match &mut self.state {
            State::Object {
                depth,
                in_str,
                escaped,
                ..
            } => object_end(bytes, depth, in_str, escaped),
            State::Str { escaped, .. } => string_end(bytes, escaped),
            _ => return &[],
        };
        let taken = end.map_or(bytes.len(), |i| i + 1);
        let (over, cap) = match &mut self.state {
            State::Object { over, .. } => (over, VALUE_CAP),
            State::Str { over, .. } => (over, MODEL_RAW_CAP),
            _ => return &[],
        };
        if !*over && !push_bounded(&mut self.value, &bytes[..taken], cap) {
            *over = true;
            self.value.clear();
        }
        if end.is_some() {
            self.value_ended(keys, found);
        }
        &bytes[taken..]
    }

    /// A value has been read whole: take what it says, and search again.
    fn value_ended(&mut self, keys: &Keys, found: &mut Found) {
        match self.state {
            State::Object { over: false, .. } => {
                let mut de = serde_json::Deserializer::from_slice(&self.value);
                if let Ok(counts) = (&mut de).deserialize_map(CountsOf(keys.fields)) {
                    found.usage(counts);
                }
            }
            State::Str { over: false, .. } if found.model.is_none() => {
                if let Ok(model) = serde_json::from_slice::<String>(&self.value)
                    && (1..=MAX_MODEL_LEN).contains(&model.len())
                    && !model.chars().any(char::is_control)
                {
                    found.model = Some(model);
                }
            }
            _ => {}
        }
        self.state = State::Search;
        self.value.clear();
    }
}

/// Reads the usage object at the start of `bytes` where it lies, if it is there whole: serde's stream
/// deserializer says where it ended (so no byte is copied nor looked at twice).
fn in_place<C: Counted>(bytes: &[u8]) -> Option<(Counts, usize)> {
    let mut stream = serde_json::Deserializer::from_slice(bytes).into_iter::<InPlace<C>>();
    let InPlace(counts, _) = stream.next()?.ok()?;
    Some((counts, stream.byte_offset()))
}

/// [`Counts`] read by a type that knows its field names, as the stream deserializer needs.
struct InPlace<C>(Counts, PhantomData<C>);

impl<'de, C: Counted> Deserialize<'de> for InPlace<C> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let fields = Fields {
            input: C::INPUT,
            output: C::OUTPUT,
        };
        let counts = d.deserialize_map(CountsOf(fields))?;
        Ok(InPlace(counts, PhantomData))
    }
}

/// Where the object being read ends in `bytes` (the index of its closing brace), following its nesting
/// `depth`, whether it is `in_str`ing, and whether the last byte was an `escaped` backslash in one.
fn object_end(
    bytes: &[u8],
    depth: &mut u32,
    in_str: &mut bool,
    escaped: &mut bool,
) -> Option<usize> {
    // In locals, so the loop works on registers.
    let (mut d, mut s, mut e) = (*depth, *in_str, *escaped);
    let mut end = None;
    for (i, &b) in bytes.iter().enumerate() {
        if s {
            if e {
                e = false;
            } else if b == b'\\' {
                e = true;
            } else if b == b'"' {
                s = false;
            }
        } else {
            match b {
                b'"' => s = true,
                b'{' | b'[' => d = d.saturating_add(1),
                b'}' | b']' => {
                    d = d.saturating_sub(1);
                    if d == 0 {
                        end = Some(i);
                        break;
                    }
                }
                _ => {}
            }
        }
    }
    (*depth, *in_str, *escaped) = (d, s, e);
    end
}

/// Where the string being read ends in `bytes` (the index of its closing quote).
fn string_end(bytes: &[u8], escaped: &mut bool) -> Option<usize> {
    for (i, &b) in bytes.iter().enumerate() {
        if *escaped {
            *escaped = false;
        } else if b == b'\\' {
            *escaped = true;
        } else if b == b'"' {
            return Some(i);
        }
    }
    None
}

/// The first key in `hay` (the model's only if `want_model`): which, where, how long.
fn earliest(hay: &[u8], keys: &Keys, want_model: bool) -> Option<(Key, usize, usize)> {
    let usage = keys
        .usage
        .find(hay)
        .map(|at| (Key::Usage, at, keys.usage.needle().len()));
    let model = want_model
        .then(|| keys.model.find(hay))
        .flatten()
        .map(|at| (Key::Model, at, keys.model.needle().len()));
    match (usage, model) {
        (Some(u), Some(m)) => Some(if m.1 < u.1 { m } else { u }),
        (u, m) => u.or(m),
    }
}

/// `bytes` without its leading JSON whitespace.
fn trim_ws(bytes: &[u8]) -> &[u8] {
    let n = bytes
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .unwrap_or(bytes.len());
    &bytes[n..]
}

/// Reads a usage object into [`Counts`]: the listed fields, added up; every other one skipped.
struct CountsOf(Fields);

impl<'de> Visitor<'de> for CountsOf {
    type Value = Counts;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a usage object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Counts, A::Error> {
        let mut counts = Counts::default();
        while let Some(field) = map.next_key_seed(FieldOf(self.0))? {
            let slot = match field {
                Field::Input => &mut counts.input,
                Field::Output => &mut counts.output,
                Field::Other => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            if let Some(n) = map.next_value::<Option<u64>>()? {
                *slot = Some(slot.unwrap_or(0).saturating_add(n));
            }
        }
        Ok(counts)
    }
}

/// A key of a usage object, sorted by the count it adds to (without allocating).
struct FieldOf(Fields);

impl<'de> DeserializeSeed<'de> for FieldOf {
    type Value = Field;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Field, D::Error> {
        // As bytes: serde_json then hands over the key without checking its UTF-8.
        d.deserialize_bytes(self)
    }
}

impl<'de> Visitor<'de> for FieldOf {
    type Value = Field;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_bytes<E>(self, name: &[u8]) -> Result<Field, E> {
        let is = |names: &[&str]| names.iter().any(|n| n.as_bytes() == name);
        Ok(if is(self.0.input) {
            Field::Input
        } else if is(self.0.output) {
            Field::Output
        } else {
            Field::Other
        })
    }

    fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<Field, E> {
        self.visit_bytes(name.as_bytes())
    }
}

#[cfg(test)]
impl KeyScan {
    /// The value buffer's allocation, for the tests of memory bounds.
    pub(super) fn value_capacity(&self) -> usize {
        self.value.capacity()
    }
}
