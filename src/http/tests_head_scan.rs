//! Unit tests for `HeadScan`, the resumable search for the end of a request head.
//!
//! Test code only: its parent declares it `#[cfg(test)]`.

use super::{HeadLimits, HeadScan, HeadSearch};

fn limits(max_head: usize) -> HeadLimits {
    HeadLimits {
        max_head,
        max_target: 1000,
        max_field_line: 1000,
    }
}

/// The search resumes where it stopped, so byte-by-byte input costs O(n) in total, not O(n²).
#[test]
fn the_head_search_resumes_instead_of_rescanning() {
    let head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    let mut scan = HeadScan::default();
    assert_eq!(scan.advance(&head[..10], limits(100)), HeadSearch::NotYet);
    assert_eq!(scan.scanned, 10, "no LF yet: all ten bytes are settled");
    assert_eq!(scan.advance(&head[..16], limits(100)), HeadSearch::NotYet);
    assert_eq!(
        (scan.scanned, scan.line_start),
        (16, 16),
        "past the request line"
    );
    assert_eq!(scan.advance(&head[..26], limits(100)), HeadSearch::NotYet);
    assert_eq!(
        (scan.scanned, scan.line_start),
        (26, 25),
        "a CR at the start of a line: undecided, but settled"
    );
    // Resuming must not miss the end, even though earlier bytes are not looked at.
    assert_eq!(scan.advance(head, limits(100)), HeadSearch::Found(27));
    assert_eq!(
        HeadScan::default().advance(head, limits(100)),
        HeadSearch::Found(27)
    );
    // Bytes before `scanned` are never looked at again: proof that nothing is rescanned. (Here they hold
    // blank lines, which would end the head if they were.)
    let mut seen = HeadScan {
        scanned: 20,
        line_start: 20,
        target: super::Target::Checked,
    };
    let input = b"\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\nabc";
    assert_eq!(seen.advance(input, limits(100)), HeadSearch::NotYet);
    assert_eq!(seen.scanned, 23);
}

#[test]
fn the_head_search_stops_at_the_limit() {
    let at_most = |input: &[u8], max| HeadScan::default().advance(input, limits(max));
    assert_eq!(at_most(b"GET / HTTP/1.1\r\n", 16), HeadSearch::TooLong);
    assert_eq!(at_most(b"GET /\n\n", 7), HeadSearch::Found(7));
    assert_eq!(at_most(b"", 0), HeadSearch::NotYet);
    // The end beyond the limit is not looked for.
    assert_eq!(at_most(b"GET / HTTP/1.1\n\n", 15), HeadSearch::TooLong);
}

/// A lone CR may yet be the start of an empty line before the request, which the reader skips: it must
/// leave the scan fresh.
#[test]
fn a_lone_cr_leaves_the_scan_fresh() {
    let mut scan = HeadScan::default();
    assert_eq!(scan.advance(b"\r", limits(100)), HeadSearch::NotYet);
    assert!(scan.is_fresh());
    assert_eq!(scan.advance(b"\rX", limits(100)), HeadSearch::NotYet);
    assert!(!scan.is_fresh());
}

/// The target is the run after the request line's first space; the limit counts its bytes, and a line
/// without a space has no target to check.
#[test]
fn the_target_is_measured_between_the_spaces() {
    let max_target = |max_target| HeadLimits {
        max_head: 1000,
        max_target,
        max_field_line: 1000,
    };
    let scan = |input: &[u8], max| HeadScan::default().advance(input, max_target(max));
    assert_eq!(
        scan(b"GET /abcd HTTP/1.1\r\n\r\n", 5),
        HeadSearch::Found(22)
    );
    assert_eq!(
        scan(b"GET /abcde HTTP/1.1\r\n\r\n", 5),
        HeadSearch::TargetTooLong
    );
    assert_eq!(scan(b"GET /abcde", 5), HeadSearch::TargetTooLong);
    assert_eq!(
        scan(b"GET /abcd", 5),
        HeadSearch::NotYet,
        "may still end here"
    );
    assert_eq!(scan(b"GET /abcde\r\n\r\n", 5), HeadSearch::TargetTooLong);
    assert_eq!(scan(b"LONGMETHOD\r\n\r\n", 5), HeadSearch::Found(14));
}

/// A field line's length does not count its line ending, and a CR at the end of what arrived may be the
/// start of one.
#[test]
fn field_lines_are_measured_without_their_line_ending() {
    let max_line = |max_field_line| HeadLimits {
        max_head: 1000,
        max_target: 1000,
        max_field_line,
    };
    let scan = |input: &[u8], max| HeadScan::default().advance(input, max_line(max));
    assert_eq!(scan(b"G / H\r\nA: 12\r\n\r\n", 5), HeadSearch::Found(16));
    assert_eq!(scan(b"G / H\nA: 12\n\n", 5), HeadSearch::Found(13));
    assert_eq!(scan(b"G / H\r\nA: 12\r", 5), HeadSearch::NotYet);
    assert_eq!(scan(b"G / H\r\nA: 123", 5), HeadSearch::FieldTooLong);
    assert_eq!(
        scan(b"G / H\r\nA: 12\rx\r\n\r\n", 5),
        HeadSearch::FieldTooLong
    );
    // The request line is not a field line.
    assert_eq!(scan(b"GET /a HTTP/1.1\r\n\r\n", 5), HeadSearch::Found(19));
}
