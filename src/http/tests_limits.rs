//! The limits on parts of a request head: the target (414) and each header field line (431), next to the
//! head as a whole (431); each the same at every split point of the input.
//!
//! Test code only: its parent declares it `#[cfg(test)]`.

use super::request::{Limits, RequestReader};
use super::tests_request::{Event, feed, feed_pieces};

/// Small limits, so that every split point of an input that breaks them can be tried.
fn small() -> Limits {
    Limits {
        max_head_bytes: 200,
        max_target_bytes: 40,
        max_field_line_bytes: 30,
        ..Limits::default()
    }
}

/// The events for `input` fed whole, byte by byte, and in two pieces split at every offset: all must agree.
/// Returns them.
fn at_every_split(limits: &Limits, input: &[u8]) -> Vec<Event> {
    let whole = feed(limits, input, input.len());
    assert_eq!(feed(limits, input, 1), whole, "byte by byte");
    for split in 0..=input.len() {
        let (a, b) = input.split_at(split);
        assert_eq!(feed_pieces(limits, &[a, b]), whole, "split at {split}");
    }
    whole
}

/// The one error `input` gets at every split point, checked to close the connection: (status, code).
fn refused(limits: &Limits, input: &[u8]) -> (u16, &'static str) {
    match at_every_split(limits, input).as_slice() {
        [Event::Error(e)] => {
            assert!(e.close, "{e} must close the connection");
            (e.status, e.code)
        }
        other => panic!("expected one error, got {other:?}"),
    }
}

fn accepted(limits: &Limits, input: &[u8]) {
    let events = at_every_split(limits, input);
    assert!(
        matches!(events.as_slice(), [Event::Request(_)]),
        "{events:?}"
    );
}

fn request(target: &str, fields: &[String]) -> Vec<u8> {
    let mut head = format!("GET {target} HTTP/1.1\r\nHost: a\r\n");
    for field in fields {
        head.push_str(field);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    head.into_bytes()
}

#[test]
fn a_target_over_the_limit_is_414() {
    let limits = small();
    let target = |len: usize| format!("/{}", "t".repeat(len - 1));
    accepted(&limits, &request(&target(40), &[]));
    assert_eq!(
        refused(&limits, &request(&target(41), &[])),
        (414, "uri_too_long")
    );
    // The query counts: it is part of the target.
    assert_eq!(
        refused(&limits, &request(&format!("/p?{}", "q".repeat(40)), &[])),
        (414, "uri_too_long")
    );
    // Known before the request line ends: no need to wait for the rest.
    let mut reader = RequestReader::new(limits.clone());
    let (_, result) = reader.advance(format!("GET {}", target(41)).as_bytes());
    assert_eq!(result.map_err(|e| e.status), Err(414));
}

/// The request line comes first, so a long target is a 414 even when its bytes also fill the head.
#[test]
fn a_target_that_also_overflows_the_head_is_414() {
    let limits = Limits {
        max_head_bytes: 60,
        ..small()
    };
    let target = format!("/{}", "t".repeat(100));
    assert_eq!(
        refused(&limits, &request(&target, &[])),
        (414, "uri_too_long")
    );
    // With the default limits, as a client would meet them: a 20 KiB target, 16 KiB head limit.
    let limits = Limits::default();
    let input = request(&format!("/{}", "t".repeat(20 * 1024)), &[]);
    for step in [1, 1000, input.len()] {
        match feed(&limits, &input, step).as_slice() {
            [Event::Error(e)] => assert_eq!((e.status, e.code), (414, "uri_too_long")),
            other => panic!("step {step}: {other:?}"),
        }
    }
}

/// A target the head limit cuts short before it reaches its own limit is only a head too long.
#[test]
fn a_head_limit_below_the_target_limit_is_what_is_broken() {
    let limits = Limits {
        max_head_bytes: 30,
        ..small()
    };
    let target = format!("/{}", "t".repeat(39));
    assert_eq!(
        refused(&limits, &request(&target, &[])),
        (431, "header_too_large")
    );
}

#[test]
fn a_field_line_over_the_limit_is_431() {
    let limits = small();
    let field = |len: usize| format!("X: {}", "v".repeat(len - 3));
    accepted(&limits, &request("/", &[field(30)]));
    assert_eq!(
        refused(&limits, &request("/", &[field(31)])),
        (431, "header_too_large")
    );
    // A bare LF ends a line too, and a line of exactly the limit stays within it.
    let input = format!("GET / HTTP/1.1\nHost: a\n{}\n\n", field(30));
    accepted(&limits, input.as_bytes());
    // Any field line, not only the first.
    let fields = [field(10), field(31), field(10)];
    assert_eq!(
        refused(&limits, &request("/", &fields)),
        (431, "header_too_large")
    );
    // Before a field line that is too long, a target too long wins: it comes first.
    assert_eq!(
        refused(&limits, &request(&"/t".repeat(30), &[field(50)])),
        (414, "uri_too_long")
    );
}

/// Many field lines within their limit can still make the head too long; and a field line over its limit
/// is refused before the head is.
#[test]
fn the_head_limit_still_holds_for_many_short_lines() {
    let limits = Limits {
        max_head_bytes: 100,
        ..small()
    };
    let short = vec!["X: 0123456789".to_string(); 8];
    assert_eq!(
        refused(&limits, &request("/", &short)),
        (431, "header_too_large")
    );
    let long = [format!("X: {}", "v".repeat(200))];
    let events = at_every_split(&limits, &request("/", &long));
    match events.as_slice() {
        [Event::Error(e)] => assert!(e.message.contains("field line"), "{e}"),
        other => panic!("{other:?}"),
    }
}

/// Whatever limit a head breaks, the caller never holds more than a head's worth of it (`feed_pieces`
/// checks that after every call), and the error is the same for a pipelined second request.
#[test]
fn a_second_request_is_checked_like_the_first() {
    let limits = small();
    let mut input = request("/", &[]);
    input.extend_from_slice(&request(&format!("/{}", "t".repeat(50)), &[]));
    match at_every_split(&limits, &input).as_slice() {
        [Event::Request(_), Event::Error(e)] => assert_eq!(e.status, 414),
        other => panic!("{other:?}"),
    }
}
