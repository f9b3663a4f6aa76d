//! The figures as rows and screens: columns that line up, units that read well, a screen that redraws in
//! place.

use std::time::Duration;

use super::render;
use super::tests_figures::two_seconds;

#[test]
fn a_row_lines_up_under_the_header() {
    let f = two_seconds();
    let row = render::row("12:00:01", &f);
    let header = render::header();
    let (values, workers) = row.split_at(header.find("busy by worker").unwrap());
    let fields: Vec<&str> = values.split_whitespace().collect();
    assert_eq!(
        fields,
        [
            "12:00:01", "5", "200", "19.5KiB", "55.0ms", "99.1ms", "24.7ms", "15.0%", "3", "3.0",
            "10.0", "1.0", "2.0", "2/6/1/5", "40/1024", "10.0MiB"
        ],
        "{header}\n{row}"
    );
    assert_eq!(workers.trim(), "25.0% 5.0%");
    // Each value ends where its column's name ends.
    let names: Vec<&str> = header.split_whitespace().collect();
    for (i, v) in fields.iter().enumerate() {
        let name_end = header.find(names[i]).unwrap() + names[i].len();
        assert_eq!(&row[..name_end].trim_end().rsplit(' ').next(), &Some(*v));
    }
}

#[test]
fn units_read_well() {
    assert_eq!(render::duration(Some(8.5e-6)), "8.5µs");
    assert_eq!(render::duration(Some(2.5e-4)), "250µs");
    assert_eq!(render::duration(Some(0.0123)), "12.3ms");
    assert_eq!(render::duration(Some(0.25)), "250ms");
    assert_eq!(render::duration(Some(1.2)), "1.20s");
    assert_eq!(render::duration(None), "-");
    assert_eq!(render::rate(0.0), "0");
    assert_eq!(render::rate(0.44), "0.4");
    assert_eq!(render::rate(412.0), "412");
    assert_eq!(render::rate(12_345.0), "12.3k");
    assert_eq!(render::bytes(512.0), "512B");
    assert_eq!(render::bytes(51.2 * 1024.0), "51.2KiB");
    assert_eq!(render::interval_text(Duration::from_millis(500)), "500ms");
    assert_eq!(render::interval_text(Duration::from_secs(2)), "2s");
    assert_eq!(
        render::clock(Duration::from_secs(86_400 + 3_723)),
        "01:02:03"
    );
}

#[test]
fn a_screen_redraws_in_place_with_the_summary_history_and_legend() {
    let f = two_seconds();
    let history = vec![render::row("12:00:01", &f)];
    let frame = render::Frame {
        url: "http://127.0.0.1:8080/metrics",
        interval: Duration::from_secs(1),
        time: "12:00:01",
        latest: Ok(&f),
        history: &history,
    };
    let s = render::screen(&frame);
    assert!(s.starts_with("\x1b[H") && s.ends_with("\x1b[J"), "{s:?}");
    for needle in [
        "5 active",
        "200 chunks/s",
        "3.0 system calls per chunk",
        "p50 55.0ms  p99 99.1ms  (10 first tokens this interval)",
        "relay-0 25.0%",
        "process fds 40 of 1024",
        "streams: relayed requests in progress",
        "busy by worker",
    ] {
        assert!(s.contains(needle), "{needle:?} not in {s}");
    }
    let down = render::Frame {
        latest: Err("connection refused"),
        ..frame
    };
    assert!(render::screen(&down).contains("connection refused"));
}
