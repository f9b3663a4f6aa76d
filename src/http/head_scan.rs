//! Finding the end of a request head in bytes that arrive in pieces.
//!
//! A head ends at the first blank line. The search is resumable: it remembers how far the bytes are settled
//! (`scanned`), so a head that arrives one byte at a time costs O(n) in total, not O(n²), and it never looks
//! past the head limit, so a peer that never sends a blank line costs at most that limit.

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

pub(super) enum HeadSearch {
    /// The head is `buf[..len]`, blank line included.
    Found(usize),
    /// No end yet; `scanned` was advanced past what is settled.
    NotYet,
    /// No end within `max_head_bytes`.
    TooLong,
}

/// Find the blank line ending the head, resuming at `*scanned` and never looking past
/// `max_head_bytes`.
///
/// A line ends with LF (httparse accepts a bare LF in heads, RFC 9112 §2.2 allows it, so we agree),
/// so the head ends at an LF followed by either LF or CRLF. `*scanned` only ever moves to a
/// position before which no head end can start: past an LF whose following bytes have not all
/// arrived, it stays *on* that LF.
pub(super) fn find_head_end(buf: &[u8], scanned: &mut usize, max_head_bytes: usize) -> HeadSearch {
    let window = &buf[..buf.len().min(max_head_bytes)];
    let mut at = (*scanned).min(window.len());
    loop {
        let Some(offset) = window[at..].iter().position(|&b| b == b'\n') else {
            at = window.len(); // no LF left: everything up to here is settled
            break;
        };
        let lf = at + offset;
        match &window[lf + 1..] {
            [b'\n', ..] => return HeadSearch::Found(lf + 2),
            [b'\r', b'\n', ..] => return HeadSearch::Found(lf + 3),
            [] | [b'\r'] => {
                at = lf; // undecided until more bytes arrive: resume on this LF
                break;
            }
            _ => at = lf + 1,
        }
    }
    // A lone CR at the very start may yet become an empty line to skip (see `leading_empty_lines`),
    // which only happens while nothing is scanned; so it does not count as scanned.
    *scanned = if buf == b"\r" { 0 } else { at };
    if !buf.is_empty() && buf.len() >= max_head_bytes {
        HeadSearch::TooLong
    } else {
        HeadSearch::NotYet
    }
}

// Tests of the head search live next door.
#[cfg(test)]
#[path = "tests_head_scan.rs"]
mod tests_head_scan;
