//! Property tests: no exposition text, however broken, makes parsing, computing or rendering panic, and
//! whatever is computed stays in its range.

use std::time::Duration;

use proptest::prelude::*;

use super::expo::Exposition;
use super::figures::{Figures, names};
use super::render;

/// A value as a relay, a broken relay or a hostile one may write it.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u64..1_000_000).prop_map(|v| v.to_string()),
        any::<f64>().prop_map(|v| v.to_string()),
        Just("+Inf".to_string()),
        Just("-Inf".to_string()),
        Just("NaN".to_string()),
        Just("1e309".to_string()),
        Just("-5".to_string()),
        "[0-9eE.+-]{0,6}",
    ]
}

/// A label set, sometimes broken.
fn labels() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        value().prop_map(|v| format!("{{le=\"{v}\"}}")),
        "[a-z]{1,6}".prop_map(|w| format!("{{worker=\"{w}\"}}")),
        "[a-z_]{1,5}".prop_map(|k| format!("{{kind=\"{k}\"}}")),
        "[0-9]{3}".prop_map(|s| format!("{{route=\"generate\",status=\"{s}\"}}")),
        "[{}=\",\\\\a-z ]{0,12}",
    ]
}

/// A line: mostly samples of the metrics `top` reads (so that the computing is exercised, not only the
/// parser), some comments, some noise.
fn line() -> impl Strategy<Value = String> {
    let name = prop_oneof![
        Just(names::STREAMS.to_string()),
        Just(names::CHUNKS.to_string()),
        Just(names::SYSCALLS.to_string()),
        Just(names::BUSY_SUM.to_string()),
        Just(names::REQUESTS.to_string()),
        Just(names::OPEN_FDS.to_string()),
        Just(format!("{}_bucket", names::TTFT)),
        Just(format!("{}_bucket", names::EVENT_GAP)),
        "[a-z_:]{1,8}",
    ];
    prop_oneof![
        6 => (name, labels(), value()).prop_map(|(n, l, v)| format!("{n}{l} {v}")),
        1 => Just("# TYPE x histogram".to_string()),
        2 => any::<String>(),
    ]
}

fn exposition() -> impl Strategy<Value = String> {
    proptest::collection::vec(line(), 0..40).prop_map(|lines| lines.join("\n"))
}

fn in_unit(v: Option<f64>) -> bool {
    v.is_none_or(|v| (0.0..=1.0).contains(&v))
}

fn finite_or_none(v: Option<f64>) -> bool {
    v.is_none_or(f64::is_finite)
}

proptest! {
    #[test]
    fn garbage_never_panics(earlier in exposition(), later in exposition(), ms in 0u64..5000) {
        let (earlier, later) = (Exposition::parse(&earlier), Exposition::parse(&later));
        let f = Figures::between(Some(&earlier), &later, Duration::from_millis(ms));
        prop_assert!(in_unit(f.busy));
        prop_assert!(f.busy_by_worker.iter().all(|(_, b)| (0.0..=1.0).contains(b)));
        for v in [f.chunks_per_sec, f.bytes_per_sec, f.syscalls_per_chunk, f.slow_iterations,
                  f.ttft.p50, f.ttft.p99, f.event_gap.p99, f.streams, f.fds.process] {
            prop_assert!(finite_or_none(v));
        }
        if let (Some(p50), Some(p99)) = (f.ttft.p50, f.ttft.p99) {
            prop_assert!(p50 <= p99, "p50 {} > p99 {}", p50, p99);
        }
        let _ = render::row("00:00:00", &f);
        let frame = render::Frame {
            url: "http://127.0.0.1:1/metrics",
            interval: Duration::from_secs(1),
            time: "00:00:00",
            latest: Ok(&f),
            history: &[],
        };
        let _ = render::screen(&frame);
        let _ = Figures::between(None, &later, Duration::from_millis(ms));
    }

    #[test]
    fn any_text_parses_without_panic(text in any::<String>()) {
        let e = Exposition::parse(&text);
        prop_assert!(e.unreadable <= text.lines().count());
    }
}
