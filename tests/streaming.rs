//! Streaming correctness: tokens are relayed as they arrive, byte for byte, whatever the upstream's framing and
//! read boundaries, and a stream that dies upstream is visibly truncated downstream.

mod common;

use common::*;
use std::io::Write as _;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// (a) The first event reaches the client long before the upstream has finished, and the rest trickle in.
#[test]
fn tokens_arrive_incrementally() {
    let mock = spawn_mock(&[
        "--tokens",
        "10",
        "--interval-ms",
        "50",
        "--format",
        "openai",
    ]);
    let relay = spawn_relay(&mock.url(), "openai", &["--model", MODEL]);

    let mut client = Conn::connect(relay.addr);
    let sent_at = Instant::now();
    client.send(&stream_request(&prompt_body(
        "tell me something slowly",
        None,
        None,
    )));
    let head = client.expect_head("stream");
    assert_stream_head(&head);
    let body = client.read_chunked_body().expect("read stream");
    assert!(
        body.complete,
        "stream ended without its final chunk: {:?}",
        lossy(&body.payload)
    );

    let tokens = token_texts(&body.payload);
    assert_eq!(tokens.len(), 10, "expected 10 token events, got {tokens:?}");
    assert_eq!(
        sse_data(&body.payload).last().map(String::as_str),
        Some("[DONE]")
    );

    let first = body.chunks.first().expect("no data chunk").0;
    let last = body.chunks.last().expect("no data chunk").0;
    let to_first = first - sent_at;
    let first_to_last = last - first;
    assert!(
        to_first < Duration::from_millis(250),
        "first chunk arrived {to_first:?} after the request"
    );
    assert!(
        first_to_last >= Duration::from_millis(400),
        "the whole stream arrived within {first_to_last:?}: it was buffered, not streamed"
    );
    eprintln!(
        "first chunk after {to_first:?}; first to last chunk {first_to_last:?}; {} chunks",
        body.chunks.len()
    );
    let distinct = body.chunks.len();
    assert!(
        distinct >= 5,
        "only {distinct} chunks for 10 tokens 50 ms apart: events are being batched"
    );
}

/// (b) The relayed SSE payload equals what the mock sends when asked directly, for both formats.
fn relayed_payload_equals_direct(format: &str) {
    let mock = spawn_mock(&["--tokens", "8", "--interval-ms", "2", "--format", format]);
    let relay = spawn_relay(&mock.url(), format, &["--model", MODEL]);
    let prompt = "compare the relayed bytes with the mock's";

    let relayed = relay_stream(relay.addr, &prompt_body(prompt, Some(MODEL), Some(5)));
    let direct = direct_mock_payload(mock.addr, format, MODEL, prompt, 5);
    assert_eq!(
        lossy(&relayed),
        lossy(&direct),
        "relayed payload differs from the mock's ({format})"
    );

    // The shape is what the spec promises, so that the comparison is not vacuous.
    let tokens = token_texts(&relayed);
    assert_eq!(
        tokens.len(),
        5,
        "max_tokens 5 -> 5 token events: {tokens:?}"
    );
    match format {
        "openai" => assert!(
            relayed.ends_with(b"data: [DONE]\n\n"),
            "openai stream must end with [DONE]"
        ),
        "gemini" => {
            // Gemini separates events with CRLF CRLF; the relay must not normalize them.
            assert!(
                !lossy(&relayed).contains("\n\n"),
                "a gemini event ended with LF LF"
            );
            assert!(
                relayed.ends_with(b"\r\n\r\n"),
                "gemini events end with CRLF CRLF"
            );
        }
        _ => unreachable!(),
    }
}

#[test]
fn relayed_payload_equals_direct_openai() {
    relayed_payload_equals_direct("openai");
}

#[test]
fn relayed_payload_equals_direct_gemini() {
    relayed_payload_equals_direct("gemini");
}

/// How a fake upstream frames its body.
#[derive(Clone, Copy, Debug)]
enum Framing {
    /// Odd chunk sizes, extensions, a trailer.
    OddChunked,
    ContentLength,
    /// No length: the body ends when the upstream closes.
    CloseDelimited,
}

/// (c) A fake upstream writes its whole response (head included) in 1..7-byte fragments with tiny pauses; the
/// relayed payload must be exactly the fake's payload, and the stream must end properly.
fn split_reads(framing: Framing, seed: u64) {
    let payload = fake_sse_payload(24);
    let (req_tx, req_rx) = mpsc::channel();
    let fake_payload = payload.clone();
    let fake = FakeUpstream::start(2, move |_, mut conn| {
        let Ok(Some(req)) = conn.read_request() else {
            return;
        };
        let _ = req_tx.send(req);
        let wire = match framing {
            Framing::OddChunked => [SSE_CHUNKED_HEAD.as_bytes(), &odd_chunked(&fake_payload)].concat(),
            Framing::ContentLength => [
                format!("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: {}\r\n\r\n", fake_payload.len())
                    .as_bytes(),
                &fake_payload,
            ]
            .concat(),
            Framing::CloseDelimited => {
                [b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n".as_slice(), &fake_payload]
                    .concat()
            }
        };
        if write_fragmented(&mut conn.stream, &wire, seed, Duration::from_micros(200)).is_err() {
            return;
        }
        match framing {
            Framing::CloseDelimited => drop(conn),
            // Keep-alive: wait (bounded by the read timeout) for a next request or the relay's close.
            _ => while let Ok(Some(_)) = conn.read_request() {},
        }
    });
    let relay = spawn_relay(&fake.url(), "openai", &["--model", MODEL]);

    let prompt = format!("split reads {framing:?}");
    let relayed = relay_stream(relay.addr, &prompt_body(&prompt, None, None));
    assert_eq!(
        lossy(&relayed),
        lossy(&payload),
        "relayed payload differs ({framing:?})"
    );

    // The upstream request has the OpenAI shape the mock expects.
    let req = req_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("fake saw no request");
    assert_eq!(
        req.head.method_and_target(),
        ("POST", "/v1/chat/completions"),
        "{:?}",
        req.head
    );
    let json = req.json();
    assert_eq!(json["stream"], true, "upstream request {json}");
    let content = json["messages"]
        .as_array()
        .and_then(|m| m.last())
        .map(|m| m["content"].clone());
    assert_eq!(
        content,
        Some(prompt.clone().into()),
        "upstream request {json}"
    );
}

#[test]
fn split_reads_odd_chunks_extensions_trailer() {
    split_reads(Framing::OddChunked, 1);
}

#[test]
fn split_reads_content_length_body() {
    split_reads(Framing::ContentLength, 2);
}

#[test]
fn split_reads_close_delimited_body() {
    split_reads(Framing::CloseDelimited, 3);
}

/// (d) An upstream that dies half-way: the client's body ends without the final chunk, after the half that was
/// sent (optionally followed by an SSE `event: error`).
fn upstream_dies_mid_body(content_length: bool) {
    let payload = fake_sse_payload(20);
    let half = payload.len() / 2;
    // The fake sends the head and the first half, then waits for the test's go-ahead (the client has received
    // the first half) before closing: the truncation then certainly happens mid-stream.
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let go_rx = std::sync::Mutex::new(go_rx);
    let fake_payload = payload.clone();
    let fake = FakeUpstream::start(1, move |_, mut conn| {
        let Ok(Some(_)) = conn.read_request() else {
            return;
        };
        let wire = if content_length {
            [
                format!("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: {}\r\n\r\n", fake_payload.len())
                    .as_bytes(),
                &fake_payload[..half],
            ]
            .concat()
        } else {
            // Complete chunks for the first half, then a chunk that announces more than it delivers.
            let mut w = SSE_CHUNKED_HEAD.as_bytes().to_vec();
            let c = chunked(&fake_payload[..half], 97);
            w.extend_from_slice(&c[..c.len() - 5]); // without the final "0\r\n\r\n"
            w.extend_from_slice(format!("{:x}\r\n", fake_payload.len() - half).as_bytes());
            w.extend_from_slice(&fake_payload[half..half + 10]);
            w
        };
        use std::io::Write;
        if conn.stream.write_all(&wire).is_err() {
            return;
        }
        let _ = go_rx.lock().unwrap().recv_timeout(Duration::from_secs(10));
        drop(conn);
    });
    let relay = spawn_relay(&fake.url(), "openai", &["--model", MODEL]);

    let mut client = Conn::connect(relay.addr);
    client.send(&stream_request(&prompt_body(
        "this one will break",
        None,
        None,
    )));
    let head = client.expect_head("stream");
    assert_stream_head(&head);

    let mut received = Vec::new();
    let mut signalled = false;
    let complete = loop {
        match client.read_chunk().expect("read relayed chunk") {
            Chunk::Data(d) => received.extend_from_slice(&d),
            Chunk::Last(_) => break true,
            Chunk::Eof => break false,
        }
        if !signalled && received.len() >= half {
            signalled = true;
            let _ = go_tx.send(());
        }
    };
    assert!(
        signalled,
        "the client never received the first half: {:?}",
        lossy(&received)
    );
    assert!(
        !complete,
        "a truncated upstream body was relayed with a final 0-chunk (the client cannot tell it was cut): {:?}",
        lossy(&received)
    );
    assert!(
        received.starts_with(&payload[..half]),
        "relayed prefix differs: {:?}",
        lossy(&received)
    );
    // Anything after the upstream's bytes may only be an SSE error event.
    let common_prefix = received
        .iter()
        .zip(&payload)
        .take_while(|(a, b)| a == b)
        .count();
    let extra = lossy(&received[common_prefix..]);
    assert!(
        extra.contains("event: error"),
        "no SSE error event after the truncated upstream payload: {extra:?}"
    );
    // The upstream broke off inside an event: the error must still parse as an event of its own, not as
    // more lines of the broken one.
    let events = sse_events(&received);
    let last = events.last().map(String::as_str).unwrap_or_default();
    let data = last
        .strip_prefix("event: error\ndata: ")
        .unwrap_or_else(|| panic!("the failure is not an SSE event of its own: {last:?}"));
    let data: serde_json::Value = serde_json::from_str(data).expect("error event data is JSON");
    assert_eq!(data["error"]["code"], "upstream_failed", "{data}");
    assert_healthy(relay.addr, "an upstream that died mid-body");
}

#[test]
fn upstream_dies_mid_chunked_body() {
    upstream_dies_mid_body(false);
}

#[test]
fn upstream_dies_mid_content_length_body() {
    upstream_dies_mid_body(true);
}

/// The alias route streams too.
#[test]
fn alias_route_streams() {
    let mock = spawn_mock(&["--tokens", "4", "--interval-ms", "2", "--format", "openai"]);
    let relay = spawn_relay(&mock.url(), "openai", &["--model", MODEL]);
    let mut client = Conn::connect(relay.addr);
    client.send(&post_json(
        "/api/v1/stream",
        &prompt_body("via the alias", None, None),
    ));
    let head = client.expect_head("alias stream");
    assert_stream_head(&head);
    let body = client.read_chunked_body().expect("read stream");
    assert!(body.complete, "no final chunk: {:?}", lossy(&body.payload));
    assert_eq!(
        token_texts(&body.payload).len(),
        4,
        "{:?}",
        lossy(&body.payload)
    );
}

/// Streams `body` through a relay (`--provider provider --model MODEL`) to a fake upstream and returns the
/// request the upstream received.
fn upstream_request_seen(provider: &str, body: &str) -> Request {
    let (tx, rx) = mpsc::channel();
    let fake = FakeUpstream::start(2, move |_, mut conn| {
        let Ok(Some(req)) = conn.read_request() else {
            return;
        };
        let _ = tx.send(req);
        let payload: &[u8] =
            b"data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"hi\"}],\"role\":\"model\"},\"index\":0}]}\r\n\r\n";
        let wire = sse_chunked_response(payload, 1000);
        if std::io::Write::write_all(&mut conn.stream, &wire).is_ok() {
            while let Ok(Some(_)) = conn.read_request() {}
        }
    });
    let relay = spawn_relay(&fake.url(), provider, &["--model", MODEL]);
    let relayed = relay_stream(relay.addr, body);
    assert!(
        lossy(&relayed).contains("\"hi\""),
        "relayed {:?}",
        lossy(&relayed)
    );
    rx.recv_timeout(Duration::from_secs(5))
        .expect("the fake upstream saw no request")
}

/// OpenAI request shape: path, the client's model and max_tokens, `stream: true`, the prompt as the last user
/// message.
#[test]
fn openai_upstream_request_shape() {
    let req = upstream_request_seen(
        "openai",
        &prompt_body("openai shape", Some("other-model"), Some(7)),
    );
    assert_eq!(
        req.head.method_and_target(),
        ("POST", "/v1/chat/completions"),
        "{:?}",
        req.head
    );
    assert!(
        req.head.header("host").is_some(),
        "no Host header: {:?}",
        req.head
    );
    let json = req.json();
    assert_eq!(json["model"], "other-model", "{json}");
    assert_eq!(json["stream"], true, "{json}");
    assert_eq!(json["max_tokens"], 7, "{json}");
    let last = json["messages"]
        .as_array()
        .and_then(|m| m.last())
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (last["role"].as_str(), last["content"].as_str()),
        (Some("user"), Some("openai shape")),
        "{json}"
    );

    // Without a model in the request, the configured default is used.
    let req = upstream_request_seen("openai", &prompt_body("default model", None, None));
    assert_eq!(req.json()["model"], MODEL);
}

/// Gemini request shape: the model in the path, `alt=sse`, the prompt in `contents[].parts[].text`,
/// `generationConfig.maxOutputTokens`.
#[test]
fn gemini_upstream_request_shape() {
    let req = upstream_request_seen("gemini", &prompt_body("gemini shape", None, Some(7)));
    let expected_target = format!("/v1beta/models/{MODEL}:streamGenerateContent?alt=sse");
    assert_eq!(
        req.head.method_and_target(),
        ("POST", expected_target.as_str()),
        "{:?}",
        req.head
    );
    let json = req.json();
    let last = json["contents"]
        .as_array()
        .and_then(|c| c.last())
        .cloned()
        .unwrap_or_default();
    let text: String = last["parts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["text"].as_str())
        .collect();
    assert_eq!(text, "gemini shape", "{json}");
    assert_eq!(json["generationConfig"]["maxOutputTokens"], 7, "{json}");

    let req = upstream_request_seen(
        "gemini",
        &prompt_body("client model", Some("other-model"), None),
    );
    assert_eq!(
        req.head.method_and_target().1,
        "/v1beta/models/other-model:streamGenerateContent?alt=sse"
    );
}

/// An upstream may send interim `1xx` responses before the real one: they are skipped, not relayed.
#[test]
fn upstream_interim_responses_are_skipped() {
    let payload = fake_sse_payload(4);
    let fake_payload = payload.clone();
    let fake = FakeUpstream::start(2, move |_, mut conn| {
        let Ok(Some(_)) = conn.read_request() else {
            return;
        };
        let wire = [
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>; rel=preload\r\n\r\n".as_slice(),
            SSE_CHUNKED_HEAD.as_bytes(),
            &chunked(&fake_payload, 50),
        ]
        .concat();
        if write_fragmented(&mut conn.stream, &wire, 9, Duration::from_micros(100)).is_ok() {
            while let Ok(Some(_)) = conn.read_request() {}
        }
    });
    let relay = spawn_relay(&fake.url(), "openai", &["--model", MODEL]);
    let relayed = relay_stream(relay.addr, &prompt_body("interim first", None, None));
    assert_eq!(lossy(&relayed), lossy(&payload));
}

/// The stream head goes out as soon as the upstream says 2xx, before any token.
#[test]
fn stream_head_is_sent_before_the_first_token() {
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let go_rx = std::sync::Mutex::new(go_rx);
    let fake = FakeUpstream::start(1, move |_, mut conn| {
        let Ok(Some(_)) = conn.read_request() else {
            return;
        };
        if conn.stream.write_all(SSE_CHUNKED_HEAD.as_bytes()).is_err() {
            return;
        }
        if !go_ahead(&go_rx) {
            return;
        }
        let _ = conn.stream.write_all(&chunked(&fake_sse_payload(2), 64));
        let _ = conn.read_request();
    });
    let relay = spawn_relay(&fake.url(), "openai", &["--model", MODEL]);
    let mut c = Conn::connect(relay.addr);
    c.set_read_timeout(Duration::from_secs(3));
    c.send(&stream_request(&prompt_body(
        "slow first token",
        None,
        None,
    )));
    let head = c.expect_head("head while the upstream holds its first token");
    assert_stream_head(&head);
    c.set_read_timeout(IO_TIMEOUT);
    go_tx.send(()).unwrap();
    let body = c.read_chunked_body().expect("body");
    assert!(body.complete);
    assert_eq!(lossy(&body.payload), lossy(&fake_sse_payload(2)));
}

/// A 2xx with no body (`Content-Length: 0`, then a 204) on the simple route: the client's chunked stream
/// still ends with its last chunk, and the keep-alive connection carries the next request in step.
#[test]
fn an_empty_upstream_answer_ends_the_stream() {
    let fake = FakeUpstream::start(2, move |_, mut conn| {
        let answers = [
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 0\r\n\r\n",
            "HTTP/1.1 204 No Content\r\n\r\n",
        ];
        for answer in answers {
            let Ok(Some(_)) = conn.read_request() else {
                return;
            };
            if conn.stream.write_all(answer.as_bytes()).is_err() {
                return;
            }
        }
        let _ = conn.read_request();
    });
    let relay = InProcess::relay(&fake.url(), |_| {});
    let mut c = Conn::connect(relay.addr);
    for what in ["Content-Length: 0", "204"] {
        c.send(&stream_request(&small_prompt()));
        let resp = c.read_response(what);
        assert_eq!(resp.status(), 200, "{what}");
        assert!(resp.complete, "{what}: no last chunk");
        assert!(resp.body.is_empty(), "{what}: {:?}", resp.text());
    }
}
