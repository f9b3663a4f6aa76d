//! Tests of `responses`: the Responses API's events and response object.
//!
//! Test code only: its parent declares it `#[cfg(test)]`.

use super::*;

/// (name, JSON) of every event of a stream.
fn events(g: &Generation, max: Option<u32>) -> Vec<(String, Value)> {
    (0..event_count(g))
        .map(|i| {
            let mut out = Vec::new();
            write_event(g, max, i, &mut out);
            let ev = String::from_utf8(out).unwrap();
            let rest = ev.strip_prefix("event: ").unwrap();
            let (name, data) = rest.split_once("\ndata: ").unwrap();
            let data = data.strip_suffix("\n\n").unwrap();
            assert!(!data.contains('\n'), "{ev:?}");
            (name.to_string(), serde_json::from_str(data).unwrap())
        })
        .collect()
}

#[test]
fn event_order_and_sequence_numbers() {
    let g = Generation::new("hi there", None, 3);
    let names: Vec<String> = events(&g, None).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    for (i, (name, v)) in events(&g, None).iter().enumerate() {
        assert_eq!(v["type"], name.as_str());
        assert_eq!(v["sequence_number"], i);
    }
    let mut past = Vec::new();
    write_event(&g, None, event_count(&g), &mut past);
    write_event(&g, None, usize::MAX, &mut past);
    assert!(past.is_empty());
}

#[test]
fn exact_bytes_of_the_token_events() {
    let g = Generation::new("hi there", None, 2);
    let event = |i| {
        let mut out = Vec::new();
        write_event(&g, Some(2), i, &mut out);
        String::from_utf8(out).unwrap()
    };
    assert_eq!(
        event(3),
        concat!(
            "event: response.content_part.added\n",
            r#"data: {"type":"response.content_part.added","sequence_number":3,"item_id":"msg_mock","output_index":0,"content_index":0,"part":{"type":"output_text","annotations":[],"logprobs":[],"text":""}}"#,
            "\n\n"
        )
    );
    assert_eq!(
        event(5),
        concat!(
            "event: response.output_text.delta\n",
            r#"data: {"type":"response.output_text.delta","sequence_number":5,"item_id":"msg_mock","output_index":0,"content_index":0,"delta":" there","logprobs":[]}"#,
            "\n\n"
        )
    );
    assert_eq!(
        event(6),
        concat!(
            "event: response.output_text.done\n",
            r#"data: {"type":"response.output_text.done","sequence_number":6,"item_id":"msg_mock","output_index":0,"content_index":0,"text":"hi there","logprobs":[]}"#,
            "\n\n"
        )
    );
}

#[test]
fn the_whole_response_object() {
    let g = Generation::new("hi there", Some(3), 10);
    assert_eq!(
        String::from_utf8(response(&g, Some(3))).unwrap(),
        concat!(
            r#"{"id":"resp_mock","object":"response","created_at":0,"status":"completed","error":null,"incomplete_details":null,"#,
            r#""instructions":null,"max_output_tokens":3,"model":"mock","output":[{"id":"msg_mock","type":"message","status":"completed","#,
            r#""content":[{"type":"output_text","annotations":[],"logprobs":[],"text":"hi there hi"}],"role":"assistant"}],"#,
            r#""parallel_tool_calls":true,"previous_response_id":null,"text":{"format":{"type":"text"}},"tool_choice":"auto","#,
            r#""tools":[],"truncation":"disabled","usage":{"input_tokens":2,"input_tokens_details":{"cached_tokens":0},"#,
            r#""output_tokens":3,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":5},"metadata":{}}"#
        )
    );
}

/// The deltas add up to the text of every closing event, and `response.completed` holds the same response as
/// a non-streaming answer.
#[test]
fn the_stream_adds_up_to_the_response() {
    for tokens in [0, 1, 4] {
        let g = Generation::new("x \"y\" \u{1F98A}", None, tokens);
        let all = events(&g, None);
        let deltas: String = all
            .iter()
            .filter(|(n, _)| n == "response.output_text.delta")
            .map(|(_, v)| v["delta"].as_str().unwrap())
            .collect();
        assert_eq!(deltas, g.text());
        let (_, created) = &all[0];
        assert_eq!(created["response"]["status"], "in_progress");
        assert_eq!(created["response"]["usage"], Value::Null);
        assert_eq!(all[n_done(&g)].1["text"], g.text().as_str());
        assert_eq!(all[n_done(&g) + 1].1["part"]["text"], g.text().as_str());
        assert_eq!(all[n_done(&g) + 2].1["item"]["status"], "completed");
        let whole: Value = serde_json::from_slice(&response(&g, None)).unwrap();
        assert_eq!(all.last().unwrap().1["response"], whole);
        assert_eq!(whole["usage"]["output_tokens"], tokens);
    }
}

fn n_done(g: &Generation) -> usize {
    OPENING + g.count()
}

#[test]
fn requests() {
    let ask =
        parse_responses(br#"{"model":"m","input":"tell me","max_output_tokens":20,"stream":true}"#)
            .unwrap();
    assert_eq!(
        (
            ask.request.prompt.as_str(),
            ask.request.max_tokens,
            ask.stream
        ),
        ("tell me", Some(20), true)
    );
    let body = br#"{"instructions":"be brief","input":[
        {"role":"user","content":"old"},
        {"type":"message","role":"assistant","content":[{"type":"output_text","text":"ok"}]},
        {"type":"message","role":"user","content":[{"type":"input_text","text":"new "},{"type":"input_image","image_url":"x"},{"type":"input_text","text":"one"}]}
    ]}"#;
    let ask = parse_responses(body).unwrap();
    assert_eq!(
        (
            ask.request.prompt.as_str(),
            ask.request.max_tokens,
            ask.stream
        ),
        ("new one", None, false)
    );
    for (body, needle) in [
        ("{}", "`input`"),
        (r#"{"input":5}"#, "`input`"),
        (
            r#"{"input":[{"role":"assistant","content":"x"}]}"#,
            "role \"user\"",
        ),
        (r#"{"input":[{"role":"user","content":5}]}"#, "content"),
        (
            r#"{"input":"x","max_output_tokens":-2}"#,
            "max_output_tokens",
        ),
        (r#"{"input":"x","stream":1}"#, "stream"),
    ] {
        let e = parse_responses(body.as_bytes()).unwrap_err();
        assert!(e.contains(needle), "{body}: {e}");
    }
}
