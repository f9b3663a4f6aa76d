//! Tests of `usage`: each provider's real-looking streams, the mock's streams against what it says it
//! sent, every split of a stream, bounded memory, and garbage.
//!
//! Test code only: its parent declares it `#[cfg(test)]`.

use proptest::prelude::*;

use super::*;
use crate::mock::script::{Dialect as MockDialect, MockRequest, MockScript};

fn watch(dialect: Dialect, parts: &[&[u8]]) -> UsageWatch {
    let mut w = UsageWatch::new(dialect);
    for p in parts {
        w.feed(p);
    }
    w
}

/// The capacity of the key search's value buffer.
fn scan_capacity(w: &UsageWatch) -> usize {
    w.scan.value_capacity()
}

type Facts = (bool, Option<Usage>, Option<String>);

fn facts(w: &UsageWatch) -> Facts {
    (w.first_token(), w.usage(), w.model().map(str::to_string))
}

fn usage(input: u64, output: u64) -> Option<Usage> {
    Some(Usage { input, output })
}

/// Feeds `events` one by one and reports `first_token()` after each.
fn first_token_after_each(dialect: Dialect, events: &[&str]) -> Vec<bool> {
    let mut w = UsageWatch::new(dialect);
    events
        .iter()
        .map(|e| {
            w.feed(e.as_bytes());
            w.first_token()
        })
        .collect()
}

/// The facts of `stream` fed whole, cut once at every place, and byte by byte: all must agree.
fn same_for_every_split(dialect: Dialect, stream: &[u8]) -> Facts {
    let whole = facts(&watch(dialect, &[stream]));
    for cut in 0..=stream.len() {
        let split = facts(&watch(dialect, &[&stream[..cut], &stream[cut..]]));
        assert_eq!(split, whole, "{dialect:?} cut at {cut}");
    }
    let mut w = UsageWatch::new(dialect);
    for b in stream {
        w.feed(std::slice::from_ref(b));
    }
    assert_eq!(facts(&w), whole, "{dialect:?} byte by byte");
    whole
}

// An OpenAI Chat Completions stream with `stream_options.include_usage`, as api.openai.com sends it.
const OPENAI: [&str; 6] = [
    "data: {\"id\":\"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT\",\"object\":\"chat.completion.chunk\",\"created\":1741569952,\"model\":\"gpt-4o-mini-2024-07-18\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_06737a9306\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n",
    "data: {\"id\":\"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT\",\"object\":\"chat.completion.chunk\",\"created\":1741569952,\"model\":\"gpt-4o-mini-2024-07-18\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_06737a9306\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n",
    "data: {\"id\":\"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT\",\"object\":\"chat.completion.chunk\",\"created\":1741569952,\"model\":\"gpt-4o-mini-2024-07-18\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_06737a9306\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"! \\\"usage\\\"\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n",
    "data: {\"id\":\"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT\",\"object\":\"chat.completion.chunk\",\"created\":1741569952,\"model\":\"gpt-4o-mini-2024-07-18\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_06737a9306\",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
    "data: {\"id\":\"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT\",\"object\":\"chat.completion.chunk\",\"created\":1741569952,\"model\":\"gpt-4o-mini-2024-07-18\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_06737a9306\",\"choices\":[],\"usage\":{\"prompt_tokens\":19,\"completion_tokens\":10,\"total_tokens\":29,\"prompt_tokens_details\":{\"cached_tokens\":0,\"audio_tokens\":0},\"completion_tokens_details\":{\"reasoning_tokens\":0,\"audio_tokens\":0,\"accepted_prediction_tokens\":0,\"rejected_prediction_tokens\":0}}}\n\n",
    "data: [DONE]\n\n",
];

#[test]
fn openai_chat_usage_comes_last_and_the_role_chunk_is_no_token() {
    assert_eq!(
        first_token_after_each(Dialect::OpenAi, &OPENAI),
        [false, true, true, true, true, true]
    );
    let stream = OPENAI.concat();
    assert_eq!(
        same_for_every_split(Dialect::OpenAi, stream.as_bytes()),
        (true, usage(19, 10), Some("gpt-4o-mini-2024-07-18".into()))
    );
    // Before the usage chunk: `"usage":null` everywhere, and a `\"usage\"` inside the text.
    let w = watch(Dialect::OpenAi, &[OPENAI[..4].concat().as_bytes()]);
    assert_eq!(w.usage(), None);
}

#[test]
fn openai_without_include_usage_has_a_model_and_no_usage() {
    let stream: String = OPENAI[..4]
        .iter()
        .map(|e| e.replace(",\"usage\":null", ""))
        .chain(["data: [DONE]\n\n".to_string()])
        .collect();
    let w = watch(Dialect::OpenAi, &[stream.as_bytes()]);
    assert_eq!(
        facts(&w),
        (true, None, Some("gpt-4o-mini-2024-07-18".into()))
    );
}

#[test]
fn what_counts_as_an_openai_token() {
    let content = [
        r#"{"choices":[{"index":0,"delta":{"content":"Hi"}}]}"#,
        // A tool call, a refusal, reasoning (DeepSeek, vLLM), a legacy completion's text.
        r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get_weather","arguments":""}}]}}]}"#,
        r#"{"choices":[{"index":0,"delta":{"refusal":"I can't"}}]}"#,
        r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":"","reasoning_content":"Let me"}}]}"#,
        r#"{"id":"cmpl-1","object":"text_completion","created":1,"choices":[{"text":" Paris","index":0,"logprobs":null,"finish_reason":null}],"model":"gpt-3.5-turbo-instruct"}"#,
        // The second choice has the content.
        r#"{"choices":[{"index":0,"delta":{}},{"index":1,"delta":{"content":"x"}}]}"#,
    ];
    let none = [
        r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#,
        // llama.cpp's first chunk.
        r#"{"choices":[{"finish_reason":null,"index":0,"delta":{"role":"assistant","content":null}}],"created":1,"id":"x","model":"m","object":"chat.completion.chunk"}"#,
        r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
        r#"{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":0}}"#,
        r#"{"choices":[{"text":"","index":0}]}"#,
        r#"{"error":{"message":"overloaded","type":"server_error"}}"#,
        r#"{"choices":null}"#,
        r#"{"choices":[{"delta":"weird"}]}"#,
        "[DONE]",
        "not json",
    ];
    for data in content {
        let w = watch(Dialect::OpenAi, &[format!("data: {data}\n\n").as_bytes()]);
        assert!(w.first_token(), "{data}");
    }
    for data in none {
        let w = watch(Dialect::OpenAi, &[format!("data: {data}\n\n").as_bytes()]);
        assert!(!w.first_token(), "{data}");
    }
}

#[test]
fn comments_pings_line_ends_and_multi_line_data() {
    let stream = concat!(
        ": OPENROUTER PROCESSING\r\n\r\n",
        ": ping\n\n",
        "event: ping\ndata: {\"choices\":[{\"delta\":{\"content\":\"no\"}}]}\n",
        // Not ended yet: the event above ends only at the blank line below.
        "\n",
        "id: 7\r\nretry: 100\r\n\r\n",
    );
    // OpenAI's dialect does not go by names: that `ping` carried content.
    assert!(watch(Dialect::OpenAi, &[stream.as_bytes()]).first_token());
    let quiet = ": ping\n\nid: 7\r\n\r\n: OPENROUTER PROCESSING\r\r";
    assert!(!watch(Dialect::OpenAi, &[quiet.as_bytes()]).first_token());
    // An event is not over until its blank line.
    let open = "data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\r\n";
    assert!(!watch(Dialect::OpenAi, &[open.as_bytes()]).first_token());
    assert!(watch(Dialect::OpenAi, &[open.as_bytes(), b"\r\n"]).first_token());
    // Lines of data join with LF; `data` without a colon is an empty line of it; no space is fine.
    let multi = concat!(
        "data:{\"model\":\r\n",
        "data\r",
        "data: \"m-1\",\"choices\":[{\"delta\":\n",
        "data: {\"content\":\"x\"}}],\n",
        "data: \"usage\":\n",
        "data: {\"prompt_tokens\":4,\n",
        "data:  \"completion_tokens\":2}}\n",
        "\n",
    );
    assert_eq!(
        same_for_every_split(Dialect::OpenAi, multi.as_bytes()),
        (true, usage(4, 2), Some("m-1".into()))
    );
}

/// The Responses API: named events; `response.created` echoes the request's tools (here with parameters
/// named `model` and `usage`), and `response.completed` repeats the whole answer before its usage.
fn responses_stream(answer: &str) -> Vec<String> {
    let tools = r#""tools":[{"type":"function","name":"lookup","parameters":{"type":"object","properties":{"usage":{"type":"string","description":"how"},"model":{"type":"string"}}}}]"#;
    let response = |status: &str, output: &str, usage: &str| {
        format!(
            r#"{{"id":"resp_1","object":"response","created_at":1741476542,"status":"{status}","error":null,"instructions":"Say \"model\": {{\"usage\": 1}}","max_output_tokens":null,"model":"gpt-4o-2024-08-06","output":[{output}],"parallel_tool_calls":true,{tools},"usage":{usage},"metadata":{{}}}}"#
        )
    };
    let event = |name: &str, body: String| format!("event: {name}\ndata: {body}\n\n");
    let item = format!(
        r#"{{"id":"msg_1","type":"message","status":"completed","role":"assistant","content":[{{"type":"output_text","text":{},"annotations":[]}}]}}"#,
        serde_json::to_string(answer).unwrap()
    );
    let usage = r#"{"input_tokens":36,"input_tokens_details":{"cached_tokens":0},"output_tokens":87,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":123}"#;
    vec![
        event("response.created", format!(r#"{{"type":"response.created","sequence_number":0,"response":{}}}"#, response("in_progress", "", "null"))),
        event("response.in_progress", format!(r#"{{"type":"response.in_progress","sequence_number":1,"response":{}}}"#, response("in_progress", "", "null"))),
        event("response.output_item.added", r#"{"type":"response.output_item.added","sequence_number":2,"output_index":0,"item":{"id":"msg_1","type":"message","status":"in_progress","role":"assistant","content":[]}}"#.into()),
        event("response.content_part.added", r#"{"type":"response.content_part.added","sequence_number":3,"item_id":"msg_1","output_index":0,"content_index":0,"part":{"type":"output_text","text":"","annotations":[]}}"#.into()),
        event("response.output_text.delta", r#"{"type":"response.output_text.delta","sequence_number":4,"item_id":"msg_1","output_index":0,"content_index":0,"delta":"Hi"}"#.into()),
        event("response.output_text.done", r#"{"type":"response.output_text.done","sequence_number":5,"item_id":"msg_1","output_index":0,"content_index":0,"text":"Hi"}"#.into()),
        event("response.completed", format!(r#"{{"type":"response.completed","sequence_number":6,"response":{}}}"#, response("completed", &item, usage))),
    ]
}

#[test]
fn responses_usage_after_a_long_answer_and_tools_that_look_like_usage() {
    let events = responses_stream("Hi");
    let events: Vec<&str> = events.iter().map(String::as_str).collect();
    assert_eq!(
        first_token_after_each(Dialect::Responses, &events),
        [false, false, false, false, true, true, true]
    );
    let stream = events.concat();
    assert_eq!(
        same_for_every_split(Dialect::Responses, stream.as_bytes()),
        (true, usage(36, 87), Some("gpt-4o-2024-08-06".into()))
    );
    // An answer far larger than any cap: the usage after it is still found, and nothing grew.
    let long = "word \"usage\": {\"input_tokens\": 1} ".repeat(4000);
    let stream = responses_stream(&long).concat();
    let w = watch(Dialect::Responses, &[stream.as_bytes()]);
    assert_eq!(
        facts(&w),
        (true, usage(36, 87), Some("gpt-4o-2024-08-06".into()))
    );
    assert!(w.opening.capacity() == 0 && scan_capacity(&w) <= VALUE_CAP);
    // Unnamed events go by their `type`.
    let unnamed: String = responses_stream("Hi")
        .iter()
        .map(|e| e.split_once('\n').unwrap().1.to_string())
        .collect();
    assert_eq!(
        facts(&watch(Dialect::Responses, &[unnamed.as_bytes()])),
        (true, usage(36, 87), Some("gpt-4o-2024-08-06".into()))
    );
}

// An Anthropic Messages stream, as api.anthropic.com sends it (a prompt-cache hit, a ping).
const ANTHROPIC: [&str; 8] = [
    "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5-20250929\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":25,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":100,\"output_tokens\":1}}}\n\n",
    "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
    "event: ping\ndata: {\"type\": \"ping\"}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"! \\\"usage\\\": {\\\"output_tokens\\\": 9}\"}}\n\n",
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
    "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":15}}\n\n",
    "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
];

#[test]
fn anthropic_input_from_message_start_output_from_message_delta() {
    assert_eq!(
        first_token_after_each(Dialect::Anthropic, &ANTHROPIC),
        [false, false, false, true, true, true, true, true]
    );
    let mut w = UsageWatch::new(Dialect::Anthropic);
    w.feed(ANTHROPIC[0].as_bytes());
    assert_eq!(w.usage(), usage(125, 1), "cached input counts");
    let stream = ANTHROPIC.concat();
    assert_eq!(
        same_for_every_split(Dialect::Anthropic, stream.as_bytes()),
        (
            true,
            usage(125, 15),
            Some("claude-sonnet-4-5-20250929".into())
        )
    );
    // A `message_delta` that repeats the input (cumulative, the last wins), CRLF line ends.
    let repeat = ANTHROPIC[6].replace(
        "\"usage\":{\"output_tokens\":15}",
        "\"usage\":{\"input_tokens\":30,\"output_tokens\":16}",
    );
    let stream = [&ANTHROPIC[..6], &[repeat.as_str()][..], &ANTHROPIC[7..]]
        .concat()
        .concat()
        .replace('\n', "\r\n");
    assert_eq!(
        facts(&watch(Dialect::Anthropic, &[stream.as_bytes()])),
        (
            true,
            usage(30, 16),
            Some("claude-sonnet-4-5-20250929".into())
        )
    );
}

// A Gemini stream as `streamGenerateContent?alt=sse` sends it: CRLF, `usageMetadata` in every chunk
// (the first without candidates, zeros left out), a thinking model's thoughts.
const GEMINI: [&str; 3] = [
    "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"\"}],\"role\": \"model\"},\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 8,\"totalTokenCount\": 8,\"promptTokensDetails\": [{\"modality\": \"TEXT\",\"tokenCount\": 8}]},\"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"abc\"}\r\n\r\n",
    "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"The\"}],\"role\": \"model\"},\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 8,\"candidatesTokenCount\": 1,\"totalTokenCount\": 30,\"thoughtsTokenCount\": 21},\"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"abc\"}\r\n\r\n",
    "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \" sky is blue.\"}],\"role\": \"model\"},\"finishReason\": \"STOP\",\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 8,\"candidatesTokenCount\": 6,\"totalTokenCount\": 35,\"thoughtsTokenCount\": 21},\"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"abc\"}\r\n\r\n",
];

#[test]
fn gemini_usage_metadata_is_cumulative_and_thoughts_are_output() {
    assert_eq!(
        first_token_after_each(Dialect::Gemini, &GEMINI),
        [false, true, true]
    );
    let mut w = UsageWatch::new(Dialect::Gemini);
    w.feed(GEMINI[0].as_bytes());
    assert_eq!(w.usage(), usage(8, 0));
    let stream = GEMINI.concat();
    assert_eq!(
        same_for_every_split(Dialect::Gemini, stream.as_bytes()),
        (true, usage(8, 27), Some("gemini-2.5-flash".into()))
    );
    let call = r#"data: {"candidates":[{"content":{"parts":[{"functionCall":{"name":"f","args":{}}}],"role":"model"}}]}"#;
    assert!(watch(Dialect::Gemini, &[call.as_bytes(), b"\n\n"]).first_token());
}

#[test]
fn opening_events_too_large_to_parse() {
    let big = "x".repeat(EVENT_CAP);
    // OpenAI and Gemini: no opening event is that large, so it is content.
    let openai = format!("data: {{\"choices\":[{{\"delta\":{{\"content\":\"{big}\"}}}}]}}\n\n");
    let w = watch(Dialect::OpenAi, &[openai.as_bytes()]);
    assert!(w.first_token() && w.opening.capacity() == 0);
    // A named dialect goes by the name, whatever the size.
    let created = format!(
        "event: response.created\ndata: {{\"response\":{{\"instructions\":\"{big}\",\"model\":\"gpt-5\"}}}}\n\n"
    );
    let w = watch(Dialect::Responses, &[created.as_bytes()]);
    assert_eq!(facts(&w), (false, None, Some("gpt-5".into())));
    assert!(w.opening.capacity() <= EVENT_CAP);
    // Unnamed and too large to read its type: not content.
    let unnamed = format!("data: {{\"type\":\"content_block_delta\",\"pad\":\"{big}\"}}\n\n");
    assert!(!watch(Dialect::Anthropic, &[unnamed.as_bytes()]).first_token());
}

#[test]
fn models_and_usages_that_do_not_count() {
    let long = "m".repeat(MAX_MODEL_LEN + 1);
    let cases: [(&str, Option<Usage>, Option<&str>); 7] = [
        (r#"{"model":"","usage":{}}"#, None, None),
        (
            r#"{"model":"a\u0007b","usage":{"total_tokens":3}}"#,
            None,
            None,
        ),
        (r#"{"model":5,"usage":"12"}"#, None, None),
        (
            r#"{"model" : "ok\/x","usage" : {"prompt_tokens" : 1}}"#,
            usage(1, 0),
            Some("ok/x"),
        ),
        (
            r#"{"x":"model","model":"y","usage":{"prompt_tokens":-1}}"#,
            None,
            Some("y"),
        ),
        (
            r#"{"usage":{"prompt_tokens":1,"completion_tokens":2.5}}"#,
            None,
            None,
        ),
        (
            r#"{"usage":{"prompt_tokens":1,"completion_tokens":null}}"#,
            usage(1, 0),
            None,
        ),
    ];
    for (data, u, m) in cases {
        let w = watch(Dialect::OpenAi, &[format!("data: {data}\n\n").as_bytes()]);
        assert_eq!((w.usage(), w.model()), (u, m), "{data}");
    }
    let too_long = format!("data: {{\"model\":\"{long}\"}}\n\ndata: {{\"model\":\"short\"}}\n\n");
    assert_eq!(
        watch(Dialect::OpenAi, &[too_long.as_bytes()]).model(),
        Some("short")
    );
    // A usage object over its cap is followed to its end and dropped; the search goes on after it.
    let pad = "1,".repeat(VALUE_CAP);
    let huge = format!(
        "data: {{\"usage\":{{\"pad\":[{pad}1],\"prompt_tokens\":9}},\"usage\":{{\"prompt_tokens\":3}}}}\n\n"
    );
    let w = watch(Dialect::OpenAi, &[huge.as_bytes()]);
    assert_eq!(w.usage(), usage(3, 0));
    assert!(scan_capacity(&w) <= VALUE_CAP);
}

#[test]
fn dialects_of_providers_and_paths() {
    use crate::relay::providers::Provider;
    let cases = [
        (Provider::OpenAi, "/api/v1/generate-stream", Dialect::OpenAi),
        (Provider::OpenAi, "/v1/chat/completions", Dialect::OpenAi),
        (Provider::OpenAi, "/v1/completions", Dialect::OpenAi),
        (Provider::OpenAi, "/v1/responses", Dialect::Responses),
        (Provider::OpenAi, "/v1/responses?x=1", Dialect::Responses),
        (Provider::Anthropic, "/v1/messages", Dialect::Anthropic),
        (
            Provider::Anthropic,
            "/api/v1/generate-stream",
            Dialect::Anthropic,
        ),
        (
            Provider::Gemini,
            "/v1beta/models/m:streamGenerateContent",
            Dialect::Gemini,
        ),
    ];
    for (provider, path, dialect) in cases {
        assert_eq!(Dialect::of(provider, path), dialect, "{provider} {path}");
    }
}

/// What the mock sends, read back: the counts it reports are the counts of its generation, and the
/// first token is the event the mock says carries it.
#[test]
fn the_mocks_streams_report_what_the_mock_generated() {
    let req = MockRequest {
        prompt: "the quick brown fox".into(),
        max_tokens: None,
    };
    let dialects = [
        (
            MockDialect::OpenAiChat {
                include_usage: true,
            },
            Dialect::OpenAi,
            true,
        ),
        (
            MockDialect::OpenAiChat {
                include_usage: false,
            },
            Dialect::OpenAi,
            false,
        ),
        (
            MockDialect::OpenAiCompletion {
                include_usage: true,
            },
            Dialect::OpenAi,
            true,
        ),
        (
            MockDialect::OpenAiResponses {
                max_output_tokens: None,
            },
            Dialect::Responses,
            true,
        ),
        (MockDialect::Anthropic, Dialect::Anthropic, true),
        (MockDialect::Gemini, Dialect::Gemini, true),
    ];
    for (mock, dialect, reports) in dialects {
        for tokens in [0, 1, 7] {
            let script = MockScript::in_dialect(mock, &req, tokens);
            let mut w = UsageWatch::new(dialect);
            for i in 0..script.len() {
                let mut event = Vec::new();
                script.write_event(i, &mut event);
                w.feed(&event);
                let expected = tokens > 0 && i >= script.first_token_event();
                assert_eq!(w.first_token(), expected, "{mock:?} {tokens} event {i}");
            }
            let g = script.generation();
            let counts = reports.then(|| Usage {
                input: g.prompt_tokens().into(),
                output: g.token_count().into(),
            });
            assert_eq!(w.usage(), counts, "{mock:?} {tokens}");
            assert_eq!(w.model(), Some("mock"), "{mock:?} {tokens}");
        }
    }
}

#[test]
fn memory_stays_bounded_on_endless_lines() {
    for dialect in [
        Dialect::OpenAi,
        Dialect::Responses,
        Dialect::Anthropic,
        Dialect::Gemini,
    ] {
        let mut w = UsageWatch::new(dialect);
        w.feed(b"event: ");
        w.feed(&[b'e'; 1000]);
        w.feed(b"\ndata: {\"usage\":{\"model\":\"");
        for _ in 0..2000 {
            w.feed(&[b'x'; 1000]);
            assert!(w.opening.capacity() <= EVENT_CAP && scan_capacity(&w) <= VALUE_CAP);
        }
        w.feed(b"\"}}\n\n");
        // Too large to be an opening event: content where events have no names.
        let content = matches!(dialect, Dialect::OpenAi | Dialect::Gemini);
        assert_eq!(facts(&w), (content, None, None), "{dialect:?}");
    }
}

const DIALECTS: [Dialect; 4] = [
    Dialect::OpenAi,
    Dialect::Responses,
    Dialect::Anthropic,
    Dialect::Gemini,
];

/// Pieces of streams: whole events of every provider, the keys, line ends, comments, and noise.
fn piece() -> impl Strategy<Value = Vec<u8>> {
    let mut known: Vec<Vec<u8>> = [&OPENAI[..], &ANTHROPIC[..], &GEMINI[..]]
        .concat()
        .iter()
        .map(|e| e.as_bytes().to_vec())
        .collect();
    known.extend(responses_stream("a").into_iter().map(String::into_bytes));
    let bits: Vec<Vec<u8>> = [
        "data: ",
        "data:",
        "event: message_delta\n",
        "event: content_block_delta\n",
        "event: response.completed\n",
        ": ping",
        "\"usage\"",
        "\"usageMetadata\"",
        "\"model\"",
        "\"modelVersion\"",
        ":",
        " ",
        "{",
        "}",
        "\"",
        "\\",
        "null",
        "{\"prompt_tokens\":3}",
        "{\"input_tokens\":5,\"output_tokens\":6}",
        "{\"promptTokenCount\":7}",
        "\"m\"",
        "\n",
        "\r",
        "\r\n",
        "\n\n",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    prop_oneof![
        proptest::sample::select(known),
        proptest::sample::select(bits),
        proptest::collection::vec(any::<u8>(), 0..12),
    ]
}

proptest! {
    /// Any split of any stream, in every dialect, gives the same answers as the whole.
    #[test]
    fn every_split_gives_the_same_answers(
        pieces in proptest::collection::vec(piece(), 0..16),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
    ) {
        let stream = pieces.concat();
        let mut at: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
        at.sort_unstable();
        let mut parts = Vec::new();
        let mut from = 0;
        for &to in &at {
            parts.push(&stream[from..to]);
            from = to;
        }
        parts.push(&stream[from..]);
        for dialect in DIALECTS {
            let whole = facts(&watch(dialect, &[&stream]));
            prop_assert_eq!(&facts(&watch(dialect, &parts)), &whole);
            let mut w = UsageWatch::new(dialect);
            for b in &stream {
                w.feed(std::slice::from_ref(b));
            }
            prop_assert_eq!(&facts(&w), &whole);
        }
    }

    /// Garbage never panics, and the buffers stay within their caps.
    #[test]
    fn garbage_never_panics(parts in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..32)) {
        for dialect in DIALECTS {
            let mut w = UsageWatch::new(dialect);
            for p in &parts {
                w.feed(p);
                prop_assert!(w.opening.capacity() <= EVENT_CAP && scan_capacity(&w) <= VALUE_CAP);
            }
            let _ = facts(&w);
        }
    }
}
