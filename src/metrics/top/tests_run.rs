//! The refresh loop with a scripted scrape: what plain mode prints, how failures are reported and
//! retried, when it stops, and what a screen shows first.

use std::time::Duration;

use super::client::MetricsUrl;
use super::{TopOptions, run};

fn options(count: u64, plain: bool) -> TopOptions {
    TopOptions {
        target: MetricsUrl::parse("http://127.0.0.1:1").unwrap(),
        interval: Duration::from_millis(1),
        count: Some(count),
        plain,
    }
}

/// A scrape that answers from `script` in turn.
fn scripted(
    script: Vec<Result<&'static str, &'static str>>,
) -> impl FnMut() -> Result<String, String> {
    let mut script = script.into_iter();
    move || match script.next() {
        Some(Ok(text)) => Ok(text.to_string()),
        Some(Err(why)) => Err(why.to_string()),
        None => Err("the script ran out".to_string()),
    }
}

#[test]
fn plain_mode_prints_a_legend_then_a_row_per_interval_and_keeps_trying() {
    let one = "tokenpipe_streams_active 1\ntokenpipe_relayed_chunks_total 10\n";
    let two = "tokenpipe_streams_active 2\ntokenpipe_relayed_chunks_total 20\n";
    let scrape = scripted(vec![
        Err("connection refused"),
        Ok(one),
        Ok("<html>"),
        Ok(two),
    ]);
    let mut out = Vec::new();
    let reached = run(&options(3, true), scrape, &mut out).unwrap();
    assert!(reached);
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("# tokenpipe top: http://127.0.0.1:1/metrics every 1ms"));
    assert!(lines[1].starts_with("# time: UTC | streams:"), "{text}");
    let header = lines
        .iter()
        .position(|l| l.contains("busy by worker"))
        .unwrap();
    let rows = &lines[header + 1..];
    assert_eq!(
        rows.len(),
        4,
        "baseline failure and three refreshes: {text}"
    );
    assert!(rows[0].contains("cannot read http://127.0.0.1:1/metrics: connection refused"));
    // Back after a failure: the levels, with no rate yet.
    let fields: Vec<&str> = rows[1].split_whitespace().collect();
    assert_eq!(&fields[1..3], ["1", "-"], "{}", rows[1]);
    assert!(rows[2].contains("holds no metrics"), "{}", rows[2]);
    let fields: Vec<&str> = rows[3].split_whitespace().collect();
    assert_eq!(fields[1], "2", "{}", rows[3]);
    assert_ne!(fields[2], "-", "a rate over the gap: {}", rows[3]);
}

#[test]
fn a_relay_that_never_answers_ends_after_count_without_success() {
    let mut out = Vec::new();
    let reached = run(&options(2, true), scripted(vec![]), &mut out).unwrap();
    assert!(!reached);
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text.matches("cannot read").count(), 3, "{text}");
}

#[test]
fn screen_mode_redraws_with_the_baseline_at_once() {
    let one = "tokenpipe_streams_active 1\n";
    let mut out = Vec::new();
    run(
        &options(1, false),
        scripted(vec![Ok(one), Ok(one)]),
        &mut out,
    )
    .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text.matches("\x1b[H").count(), 2, "{text:?}");
    assert!(text.contains("1 active"), "{text:?}");
}
