//! What reading a stream's first token, usage and model costs (`src/relay/usage.rs`), per relayed event.
//!
//! Run with `cargo bench --bench usage` (add `-- --warm-up-time 1 --measurement-time 2` for a quick look).
//! The relay would call [`UsageWatch::feed`] once per upstream read with the payload it relays, so the
//! cases feed one event per call, as an upstream writing an event per token and a relay keeping up make
//! it, and report the time per event (criterion's `elem/s`; the time per iteration divided by 50 is the
//! time per event).
//!
//! # Cases
//!
//! Each stream is 50 events of the provider's real shape, one token each:
//!
//! - `openai`: a Chat Completions stream with `stream_options.include_usage`, as the relay asks for it: a
//!   role-only chunk, 46 content chunks, the `finish_reason` chunk, the usage chunk and `[DONE]`, every
//!   chunk but the usage one with `"usage":null` (about 250 bytes each);
//! - `openai_one_read`: the same stream in one read (the relay fell behind);
//! - `anthropic`: `message_start`, `content_block_start`, `ping`, 44 `content_block_delta`s,
//!   `content_block_stop`, `message_delta` (the output tokens), `message_stop`;
//! - `gemini`: 50 chunks, CRLF-separated, each with `usageMetadata` and `modelVersion`, as Gemini sends
//!   them;
//! - `sse_watch`: for scale, the frame watch that is already on the hot path ([`SseWatch`]), over the
//!   OpenAI stream.
//!
//! A fresh watch per iteration: the opening events (parsed until the first token) are in every
//! iteration, so this is the whole cost of a stream divided by its events. `openai_steady` is one content
//! event fed to a watch that is past its first token, the cost of each event after the opening.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tokenpipe::relay::sse::SseWatch;
use tokenpipe::relay::usage::{Dialect, Usage, UsageWatch};

const EVENTS: usize = 50;

const WORDS: [&str; 8] = [
    " The",
    " relay",
    " forwards",
    " each",
    " token",
    " as",
    " it",
    " arrives",
];

fn openai_chunk(delta: &str, finish: &str, usage: &str) -> String {
    format!(
        concat!(
            r#"data: {{"id":"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT","object":"chat.completion.chunk","#,
            r#""created":1741569952,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","#,
            r#""system_fingerprint":"fp_06737a9306","choices":[{{"index":0,"delta":{},"logprobs":null,"#,
            r#""finish_reason":{}}}],"usage":{}}}"#,
            "\n\n"
        ),
        delta, finish, usage
    )
}

fn openai() -> Vec<String> {
    let mut events = vec![openai_chunk(
        r#"{"role":"assistant","content":"","refusal":null}"#,
        "null",
        "null",
    )];
    for i in 0..EVENTS - 4 {
        let delta = format!(r#"{{"content":"{}"}}"#, WORDS[i % WORDS.len()]);
        events.push(openai_chunk(&delta, "null", "null"));
    }
    events.push(openai_chunk("{}", r#""stop""#, "null"));
    let usage = r#"{"prompt_tokens":19,"completion_tokens":46,"total_tokens":65,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}"#;
    events.push(openai_chunk("{}", "null", usage).replace(
        r#""choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":null}]"#,
        r#""choices":[]"#,
    ));
    events.push("data: [DONE]\n\n".into());
    events
}

fn anthropic() -> Vec<String> {
    let event = |name: &str, data: String| format!("event: {name}\ndata: {data}\n\n");
    let mut events = vec![
        event(
            "message_start",
            r#"{"type":"message_start","message":{"id":"msg_01","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":19,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":1}}}"#.into(),
        ),
        event(
            "content_block_start",
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#
                .into(),
        ),
        event("ping", r#"{"type": "ping"}"#.into()),
    ];
    for i in 0..EVENTS - 6 {
        let data = format!(
            r#"{{"type":"content_block_delta","index":0,"delta":{{"type":"text_delta","text":"{}"}}}}"#,
            WORDS[i % WORDS.len()]
        );
        events.push(event("content_block_delta", data));
    }
    events.push(event(
        "content_block_stop",
        r#"{"type":"content_block_stop","index":0}"#.into(),
    ));
    events.push(event("message_delta", r#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":44}}"#.into()));
    events.push(event("message_stop", r#"{"type":"message_stop"}"#.into()));
    events
}

fn gemini() -> Vec<String> {
    (0..EVENTS)
        .map(|i| {
            let finish = if i + 1 == EVENTS { r#","finishReason": "STOP""# } else { "" };
            format!(
                concat!(
                    r#"data: {{"candidates": [{{"content": {{"parts": [{{"text": "{}"}}],"role": "model"}}{},"index": 0}}],"#,
                    r#""usageMetadata": {{"promptTokenCount": 19,"candidatesTokenCount": {},"totalTokenCount": {}}},"#,
                    r#""modelVersion": "gemini-2.0-flash","responseId": "mOvQaJ2aBpKbz7IPiMe7iQ4"}}"#,
                    "\r\n\r\n"
                ),
                WORDS[i % WORDS.len()],
                finish,
                i + 1,
                i + 20
            )
        })
        .collect()
}

/// The whole stream through a fresh watch, one event per call.
fn read(dialect: Dialect, events: &[String]) -> UsageWatch {
    let mut w = UsageWatch::new(dialect);
    for e in events {
        w.feed(black_box(e.as_bytes()));
    }
    w
}

/// Checks, before timing, that each stream gives its first token, usage and model.
fn check() {
    let cases = [
        (Dialect::OpenAi, openai(), 19, 46, "gpt-4o-mini-2024-07-18"),
        (
            Dialect::Anthropic,
            anthropic(),
            19,
            44,
            "claude-sonnet-4-5-20250929",
        ),
        (Dialect::Gemini, gemini(), 19, 50, "gemini-2.0-flash"),
    ];
    for (dialect, events, input, output, model) in cases {
        assert_eq!(events.len(), EVENTS);
        let w = read(dialect, &events);
        assert!(w.first_token(), "{dialect:?}");
        assert_eq!(w.usage(), Some(Usage { input, output }), "{dialect:?}");
        assert_eq!(w.model(), Some(model), "{dialect:?}");
    }
}

fn usage(c: &mut Criterion) {
    check();
    let mut group = c.benchmark_group("usage");
    group.throughput(Throughput::Elements(EVENTS as u64));
    for (name, dialect, events) in [
        ("openai", Dialect::OpenAi, openai()),
        ("anthropic", Dialect::Anthropic, anthropic()),
        ("gemini", Dialect::Gemini, gemini()),
    ] {
        group.bench_function(BenchmarkId::new("per_event", name), |b| {
            b.iter(|| black_box(read(dialect, &events).usage()))
        });
    }
    let whole = openai().concat();
    group.bench_function(BenchmarkId::new("one_read", "openai"), |b| {
        b.iter(|| {
            let mut w = UsageWatch::new(Dialect::OpenAi);
            w.feed(black_box(whole.as_bytes()));
            black_box(w.usage())
        })
    });
    let events = openai();
    group.bench_function(BenchmarkId::new("sse_watch", "openai"), |b| {
        b.iter(|| {
            let mut w = SseWatch::default();
            for e in &events {
                w.feed(black_box(e.as_bytes()));
            }
            black_box(w.first_event())
        })
    });
    group.throughput(Throughput::Elements(1));
    let mut steady = read(Dialect::OpenAi, &events[..2]);
    assert!(steady.first_token() && steady.model().is_some());
    let content = &events[2];
    group.bench_function(BenchmarkId::new("steady", "openai"), |b| {
        b.iter(|| {
            steady.feed(black_box(content.as_bytes()));
            black_box(steady.first_token())
        })
    });
    group.finish();
}

criterion_group!(benches, usage);
criterion_main!(benches);
