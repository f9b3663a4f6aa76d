//! Unit tests for `find_head_end`, the resumable search for the end of a request head.
//!
//! Test code only: its parent declares it `#[cfg(test)]`.

use super::{HeadSearch, find_head_end};

/// The search resumes where it stopped, so byte-by-byte input costs O(n) in total, not O(n²).
#[test]
fn the_head_search_resumes_instead_of_rescanning() {
    let head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    let mut scanned = 0;
    assert!(matches!(
        find_head_end(&head[..10], &mut scanned, 100),
        HeadSearch::NotYet
    ));
    assert_eq!(scanned, 10, "no LF yet: all ten bytes are settled");
    assert!(matches!(
        find_head_end(&head[..16], &mut scanned, 100),
        HeadSearch::NotYet
    ));
    assert_eq!(scanned, 15, "an LF at the end is undecided: resume on it");
    assert!(matches!(
        find_head_end(&head[..26], &mut scanned, 100),
        HeadSearch::NotYet
    ));
    assert_eq!(scanned, 24, "LF + CR: still undecided");
    // Resuming from `scanned` must not miss the end, even though earlier bytes are not looked at.
    let mut from_scratch = 0;
    assert!(matches!(
        find_head_end(head, &mut scanned, 100),
        HeadSearch::Found(27)
    ));
    assert!(matches!(
        find_head_end(head, &mut from_scratch, 100),
        HeadSearch::Found(27)
    ));
    // Garbage before `scanned` is never looked at again: proof that nothing is rescanned.
    let mut seen = 20;
    assert!(matches!(
        find_head_end(
            b"\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\nabc",
            &mut seen,
            100
        ),
        HeadSearch::NotYet
    ));
    assert_eq!(seen, 23);
}

#[test]
fn the_head_search_stops_at_the_limit() {
    let mut scanned = 0;
    assert!(matches!(
        find_head_end(b"GET / HTTP/1.1\r\n", &mut scanned, 16),
        HeadSearch::TooLong
    ));
    let mut scanned = 0;
    assert!(matches!(
        find_head_end(b"GET /\n\n", &mut scanned, 7),
        HeadSearch::Found(7)
    ));
    let mut scanned = 0;
    assert!(matches!(
        find_head_end(b"", &mut scanned, 0),
        HeadSearch::NotYet
    ));
}
