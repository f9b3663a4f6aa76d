//! Reading a scrape: the Prometheus text format (version 0.0.4), leniently, into series by name.
//!
//! Why not a crate: the one that fits, `prometheus-parse` (0.2.5), splits label pairs on `,` and `=`
//! without reading quotes or escapes (`{path="/a,b"}` comes out as two broken labels), drops the `_sum`
//! and `_count` of histograms into untyped samples, and brings `chrono` and `regex` for what is a
//! hundred lines here; it has had no release since 2023. `prometheus-client`, which writes our
//! exposition, has no parser. The grammar we need is small: `name{label="value",...} value [timestamp]`,
//! `#` comments, blank lines. Every line is read on its own; a line that does not follow the grammar is
//! counted in [`Exposition::unreadable`] and skipped, so that garbage makes figures go missing, never a
//! panic (`tests_props.rs` checks it).

use std::collections::HashMap;

/// One series of a scrape: its labels and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// A parsed scrape: every series, by metric name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Exposition {
    by_name: HashMap<String, Vec<Series>>,
    /// Lines that were neither a comment, a blank nor a readable sample.
    pub unreadable: usize,
}

/// One cumulative histogram bucket: its upper bound (`le`) and how many values were at or below it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub le: f64,
    pub cumulative: f64,
}

impl Series {
    /// The value of label `name`, if the series has it.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Exposition {
    /// Reads exposition `text` (see the module docs: unreadable lines are skipped and counted).
    pub fn parse(text: &str) -> Exposition {
        let mut expo = Exposition::default();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match sample(line) {
                Some((name, series)) => expo.by_name.entry(name).or_default().push(series),
                None => expo.unreadable += 1,
            }
        }
        expo
    }

    /// Whether the scrape holds no series at all.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Every series called `name` (none if there is no such metric).
    pub fn series(&self, name: &str) -> &[Series] {
        self.by_name.get(name).map_or(&[], Vec::as_slice)
    }

    /// The sum of the series called `name` that `keep` accepts; `None` when there is none.
    pub fn total(&self, name: &str, keep: impl Fn(&Series) -> bool) -> Option<f64> {
        let mut kept = self.series(name).iter().filter(|s| keep(s)).peekable();
        kept.peek()?;
        Some(kept.map(|s| s.value).sum())
    }

    /// The sum of every series called `name` (a gauge or a counter without labels, or all of a labelled
    /// one); `None` when there is none.
    pub fn sum(&self, name: &str) -> Option<f64> {
        self.total(name, |_| true)
    }

    /// The series called `name` added up by the value of their label `label`, in the order in which
    /// each value first appears (series without the label are left out).
    pub fn by_label(&self, name: &str, label: &str) -> Vec<(String, f64)> {
        let mut out: Vec<(String, f64)> = Vec::new();
        for s in self.series(name) {
            let Some(key) = s.label(label) else { continue };
            match out.iter_mut().find(|(k, _)| k == key) {
                Some((_, v)) => *v += s.value,
                None => out.push((key.to_string(), s.value)),
            }
        }
        out
    }

    /// The cumulative buckets of histogram `base` (its `{base}_bucket` series) that `keep` accepts, added
    /// up by `le` across the other labels (workers, routes), in ascending `le`. Buckets whose `le` is not a
    /// number are left out.
    pub fn buckets(&self, base: &str, keep: impl Fn(&Series) -> bool) -> Vec<Bucket> {
        let mut out: Vec<Bucket> = Vec::new();
        for s in self.series(&format!("{base}_bucket")) {
            if !keep(s) {
                continue;
            }
            let Some(le) = s.label("le").and_then(number).filter(|le| !le.is_nan()) else {
                continue;
            };
            match out.iter_mut().find(|b| b.le == le) {
                Some(b) => b.cumulative += s.value,
                None => out.push(Bucket {
                    le,
                    cumulative: s.value,
                }),
            }
        }
        out.sort_by(|a, b| a.le.total_cmp(&b.le));
        out
    }
}

/// A sample line: `name`, optional `{labels}`, a value, an optional timestamp (ignored).
fn sample(line: &str) -> Option<(String, Series)> {
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.trim_start().strip_prefix('{') {
        rest = label_set(after, &mut labels)?;
    }
    // At least one blank between the name (or the labels) and the value.
    if !rest.starts_with([' ', '\t']) {
        return None;
    }
    let mut fields = rest.split_ascii_whitespace();
    let value = number(fields.next()?)?;
    // A timestamp, if any, must be an integer; anything after it is not the format.
    if let Some(ts) = fields.next() {
        ts.parse::<i64>().ok()?;
    }
    if fields.next().is_some() {
        return None;
    }
    Some((name.to_string(), Series { labels, value }))
}

/// Reads `label="value",...}` into `labels`; returns what follows the closing brace.
fn label_set<'a>(mut rest: &'a str, labels: &mut Vec<(String, String)>) -> Option<&'a str> {
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix('}') {
            return Some(after);
        }
        let key_end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let key = &rest[..key_end];
        if key.is_empty() || key.starts_with(|c: char| c.is_ascii_digit()) {
            return None;
        }
        rest = rest[key_end..].trim_start().strip_prefix('=')?;
        rest = rest.trim_start().strip_prefix('"')?;
        let (value, after) = quoted(rest)?;
        labels.push((key.to_string(), value));
        rest = after.trim_start();
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if !rest.starts_with('}') {
            return None;
        }
    }
}

/// A label value after its opening quote, with `\\`, `\"` and `\n` unescaped; returns it and what follows
/// the closing quote.
fn quoted(text: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((value, &text[i + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => value.push('\n'),
                other @ ('\\' | '"') => value.push(other),
                // Not an escape the format defines: kept as written.
                other => {
                    value.push('\\');
                    value.push(other);
                }
            },
            c => value.push(c),
        }
    }
    None
}

/// A sample value as the format writes it: a Go float (`1.5`, `2e-05`), `+Inf`, `-Inf` or `NaN`.
pub fn number(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        "NaN" | "nan" => Some(f64::NAN),
        // Rust also reads "infinity" and other spellings the format does not use; harmless.
        t => t.parse().ok(),
    }
}
