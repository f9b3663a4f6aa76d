//! Tests of `stream`: where each provider's stream is cut after K tokens, what each cut does, and that a
//! fault asked for always happens.
//!
//! Test code only: its parent declares it `#[cfg(test)]`.

use super::*;
use crate::mock::fault::parse;
use crate::mock::script::{Dialect, MockRequest};
use proptest::prelude::*;

const DIALECTS: [Dialect; 5] = [
    Dialect::OpenAiChat {
        include_usage: true,
    },
    Dialect::OpenAiCompletion {
        include_usage: false,
    },
    Dialect::OpenAiResponses {
        max_output_tokens: None,
    },
    Dialect::Gemini,
    Dialect::Anthropic,
];

fn stream(dialect: Dialect, tokens: u32, spec: &str) -> MockStream {
    let request = MockRequest {
        prompt: "alpha bravo charlie delta echo".into(),
        max_tokens: None,
    };
    let script = MockScript::in_dialect(dialect, &request, tokens);
    let fault = parse(spec).unwrap();
    MockStream::new(
        script,
        StreamFraming::Chunked(AfterReply::KeepAlive),
        &fault,
    )
}

/// Steps until the stream ends or a fault takes over: the events sent, and how it stopped.
fn run(s: &mut MockStream) -> (Vec<String>, Step) {
    let mut events = Vec::new();
    loop {
        let mut out = Vec::new();
        let step = s.step(&mut out);
        if let Step::Send { .. } = step {
            events.push(String::from_utf8(out).unwrap());
        }
        if step != (Step::Send { last: false }) {
            return (events, step);
        }
    }
}

#[test]
fn k_tokens_then_the_fault_in_every_dialect() {
    for dialect in DIALECTS {
        for (spec, stop) in [
            ("stall-after=2", Step::Stall),
            ("reset-after=2", Step::Reset),
            ("bad-chunk-after=2", Step::BadChunk),
        ] {
            let mut s = stream(dialect, 5, spec);
            let opening = s.script.first_token_event();
            let (events, step) = run(&mut s);
            assert_eq!(
                (events.len(), step),
                (opening + 2, stop),
                "{dialect:?} {spec}"
            );
            let sent = events.concat();
            assert!(
                sent.contains("bravo") && !sent.contains("charlie"),
                "{dialect:?}"
            );
            // Asked again, the step is the same: the caller may wait before it acts on it.
            assert_eq!(s.step(&mut Vec::new()), stop);
        }
    }
}

#[test]
fn error_after_k_tokens_is_the_last_event() {
    for dialect in DIALECTS {
        let mut s = stream(dialect, 5, "error-after=1");
        let (events, step) = run(&mut s);
        assert_eq!(step, Step::Send { last: true }, "{dialect:?}");
        assert_eq!(events.len(), s.script.first_token_event() + 2);
        let error = events.last().unwrap();
        assert!(
            error.contains("error-after") && error.contains("error"),
            "{error}"
        );
        assert!(!events.concat().contains("bravo"));
    }
}

#[test]
fn a_shorter_answer_is_cut_in_place_of_its_last_event() {
    for dialect in DIALECTS {
        for tokens in [0, 1, 3] {
            let mut s = stream(dialect, tokens, "stall-after=1000");
            let len = s.script.len();
            let (events, step) = run(&mut s);
            assert_eq!(
                (events.len(), step),
                (len - 1, Step::Stall),
                "{dialect:?} {tokens}"
            );
        }
    }
}

#[test]
fn no_cut_without_a_stream_fault() {
    for spec in [
        "close-idle=1s",
        "reset-after=request",
        "first-token-delay=1s",
    ] {
        let mut s = stream(Dialect::Anthropic, 2, spec);
        let len = s.script.len();
        let (events, step) = run(&mut s);
        assert_eq!(
            (events.len(), step),
            (len, Step::Send { last: true }),
            "{spec}"
        );
    }
}

proptest! {
    /// Whatever K and the answer's length, a stream fault happens, before the stream's last event.
    #[test]
    fn a_fault_asked_for_always_happens(k in any::<u32>(), tokens in 0u32..40, d in 0usize..5) {
        let mut s = stream(DIALECTS[d], tokens, &format!("reset-after={k}"));
        let len = s.script.len();
        let (events, step) = run(&mut s);
        prop_assert_eq!(step, Step::Reset);
        prop_assert!(events.len() < len);
    }
}
