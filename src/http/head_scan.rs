//! Finding the end of a request head in bytes that arrive in pieces, and refusing an over-long one as
//! early as its bytes show it.
//!
//! A head ends at the first blank line. The search is resumable: [`HeadScan`] remembers how far the bytes
//! are settled, so a head that arrives one byte at a time costs O(n) in total, not O(n²), and it never looks
//! past the head limit, so a peer that never sends a blank line costs at most that limit.
//!
//! On the way it checks the two limits that concern parts of the head rather than the whole: the request
//! target (414) and each header field line (431). Each check is *monotone*: once the bytes seen so far break
//! a limit, every longer input breaks it too, with the same error. That is what makes the answer the same
//! however the input is split: whether the bytes arrive at once or one by one, the first limit the bytes
//! break, in byte order, is the one reported. The request line comes first, so an over-long target is a
//! 414 even when the same bytes also make the head too long.

/// How many bytes of empty lines (`\r\n` or `\n`) start `buf`.
pub(super) fn leading_empty_lines(buf: &[u8]) -> usize {
    let mut skipped = 0;
    loop {
        match &buf[skipped..] {
            [b'\r', b'\n', ..] => skipped += 2,
            [b'\n', ..] => skipped += 1,
            _ => return skipped,
        }
    }
}

/// The limits a head is checked against while it arrives (from `request::Limits`).
#[derive(Debug, Clone, Copy)]
pub(super) struct HeadLimits {
    /// The whole head, blank line included.
    pub max_head: usize,
    /// The request target (the bytes between the request line's first space and the next one).
    pub max_target: usize,
    /// One header field line, without its line ending.
    pub max_field_line: usize,
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum HeadSearch {
    /// The head is `buf[..len]`, blank line included, and within every limit but the count of fields
    /// (which only the parser knows).
    Found(usize),
    /// No end yet, and no limit broken.
    NotYet,
    /// No end within `max_head` bytes.
    TooLong,
    /// The request target is longer than `max_target`.
    TargetTooLong,
    /// A header field line is longer than `max_field_line`.
    FieldTooLong,
}

/// Where a resumable scan of one request head stands. Offsets are into the caller's buffer, which starts
/// with the request line (empty lines before it are consumed first, while nothing is scanned) and only
/// grows between calls until the head is found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct HeadScan {
    /// Invariant: every byte before `scanned` has been looked at; no head end and no broken limit lies
    /// before it. The scan resumes here.
    scanned: usize,
    /// Where the line that holds `scanned` begins (0: the request line).
    line_start: usize,
    /// How far the request line's target is known.
    target: Target,
}

/// The request line is `method SP target SP version`: the target is found by its spaces.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// Still in the method: the target starts after the first space.
    #[default]
    InMethod,
    /// In the target, which starts at this offset and ends at the next space or line end.
    StartsAt(usize),
    /// The target has ended (or the request line ended without one, which the parser will refuse).
    Checked,
}

impl HeadScan {
    /// True until the scan has settled any byte: only then may empty lines before the request line still
    /// be skipped (which moves the start of the buffer, and so every offset).
    pub(super) fn is_fresh(&self) -> bool {
        self.scanned == 0
    }

    /// Scans `buf` (the head so far, from its first byte) from where the last call stopped.
    pub(super) fn advance(&mut self, buf: &[u8], limits: HeadLimits) -> HeadSearch {
        // A lone CR at the very start may yet become an empty line to skip (`leading_empty_lines`), which
        // only happens while nothing is scanned; so it is left unscanned.
        if buf != b"\r" {
            let window = &buf[..buf.len().min(limits.max_head)];
            if let Some(found) = self.scan(window, limits) {
                return found;
            }
        }
        if !buf.is_empty() && buf.len() >= limits.max_head {
            HeadSearch::TooLong
        } else {
            HeadSearch::NotYet
        }
    }

    /// Looks at `window[self.scanned..]`: an answer if a head end or a broken limit is in it, else `None`
    /// with everything in it settled.
    fn scan(&mut self, window: &[u8], limits: HeadLimits) -> Option<HeadSearch> {
        loop {
            let at = self.scanned.min(window.len());
            let rest = &window[at..];
            match self.target {
                Target::InMethod => match rest.iter().position(|&b| b == b' ' || b == b'\n') {
                    Some(i) if rest[i] == b' ' => {
                        self.target = Target::StartsAt(at + i + 1);
                        self.scanned = at + i + 1;
                    }
                    // A request line without a space: no target to check; the parser will refuse it.
                    Some(_) => self.target = Target::Checked,
                    None => {
                        self.scanned = window.len();
                        return None;
                    }
                },
                Target::StartsAt(start) => {
                    let end = rest.iter().position(|&b| matches!(b, b' ' | b'\r' | b'\n'));
                    // Without its end the target is at least this long: already too long if this is.
                    let len = at + end.unwrap_or(rest.len()) - start;
                    if len > limits.max_target {
                        return Some(HeadSearch::TargetTooLong);
                    }
                    let Some(end) = end else {
                        self.scanned = window.len();
                        return None;
                    };
                    self.target = Target::Checked;
                    self.scanned = at + end;
                }
                Target::Checked => {
                    let Some(i) = rest.iter().position(|&b| b == b'\n') else {
                        // A field line still arriving is at least this long.
                        if self.line_start > 0
                            && content_len(&window[self.line_start..]) > limits.max_field_line
                        {
                            return Some(HeadSearch::FieldTooLong);
                        }
                        self.scanned = window.len();
                        return None;
                    };
                    let lf = at + i;
                    if self.line_start > 0 {
                        let line = &window[self.line_start..lf];
                        if line.is_empty() || line == b"\r" {
                            return Some(HeadSearch::Found(lf + 1)); // the blank line: the end
                        }
                        if content_len(line) > limits.max_field_line {
                            return Some(HeadSearch::FieldTooLong);
                        }
                    }
                    self.line_start = lf + 1;
                    self.scanned = lf + 1;
                }
            }
        }
    }
}

/// The length of a line (without its LF) as far as it has arrived, not counting a final CR: that may be the
/// first half of its CRLF. So a line's length never shrinks as more of it arrives.
fn content_len(line: &[u8]) -> usize {
    line.len() - usize::from(line.ends_with(b"\r"))
}

// Tests of the head search live next door.
#[cfg(test)]
#[path = "tests_head_scan.rs"]
mod tests_head_scan;
