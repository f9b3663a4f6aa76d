//! Micro-benchmarks of the sans-IO HTTP layer (`tokenpipe::http`), the code every byte of a relayed
//! stream passes through.
//!
//! Run with `cargo bench --bench http` (add `-- --warm-up-time 1 --measurement-time 2` for a quick
//! look). Every figure is reported as throughput in bytes of wire input, so the groups compare with
//! each other and with a link's bandwidth. All inputs are built once, outside the timing loop, and
//! checked once before they are timed, so a benchmark can never time an error path by mistake.
//!
//! # Groups
//!
//! - **`request_reader`**: [`RequestReader::advance`] on a typical relay request, `POST
//!   /api/v1/generate-stream` with 8 header fields and a ~200-byte JSON body:
//!   - `content_length`: the whole request in one read, body framed by `Content-Length`;
//!   - `chunked_body`: the same request with `Transfer-Encoding: chunked` (the JSON in one chunk,
//!     then the last chunk), which adds the chunked decoder and the body limit checks;
//!   - `head_in_two_reads`: the `content_length` request arriving in two reads split in the middle
//!     of the head, so the reader first finds no head end, then resumes its search where it stopped
//!     (the caller's buffer grows in place, as the reactor's does).
//!
//!   The reader runs once per client request, not per streamed byte, so this is the fixed cost a
//!   request pays before the relay calls upstream: it includes httparse, the framing rules and the
//!   allocations of the [`Request`] it returns. One reader is reused for every iteration, as on a
//!   keep-alive connection that carries request after request.
//!
//! - **`chunked_decoder`**: the upstream side's hot path. An upstream streams its answer as a
//!   chunked body of SSE events, and the relay calls the body decoder once for *every* read from
//!   the upstream socket, for as long as the stream lasts, to find the payload ranges it forwards to
//!   the client. The body here is 50 OpenAI-style `data: {...}\n\n` events, each in its own chunk,
//!   decoded to the end:
//!   - `one_chunk_per_read`: one decode call per chunk (the common case: the upstream writes one
//!     event per chunk and each arrives as its own read), so the per-call overhead shows;
//!   - `whole_body_one_read`: all 50 chunks in one call (an upstream faster than we read);
//!   - `7_byte_reads`: the body cut into 7-byte reads, so size lines, CRLFs and payload are split
//!     everywhere: the cost of resuming the state machine;
//!   - `body_decoder_one_chunk_per_read`: `one_chunk_per_read` through [`BodyDecoder`], the enum the
//!     relay actually holds, to show what its dispatch adds.
//!
//!   The payload-range vector is allocated once and cleared before each read, as the relay does.
//!
//! - **`response_head`**: [`parse_response_head`] on an OpenAI-like `200 OK` SSE response head
//!   (22 header fields, chunked). It runs once per upstream request:
//!   - `whole_head`: the head in one read;
//!   - `head_in_two_reads`: the head in two reads split in the middle. The parser is stateless and
//!     rescans the grown buffer on each call, which this makes visible (throughput still counts the
//!     head's bytes once).

use std::hint::black_box;
use std::ops::Range;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tokenpipe::http::body::{BodyDecoder, Framing};
use tokenpipe::http::chunked::{ChunkError, ChunkedDecoder, Decoded};
use tokenpipe::http::request::{Limits, Progress, Request, RequestReader};
use tokenpipe::http::response::parse_response_head;

// ---------------------------------------------------------------------------------------------
// Request reader

/// The JSON a client posts to `/api/v1/generate-stream` (about 200 bytes).
const REQUEST_JSON: &str = concat!(
    r#"{"prompt":"Summarize this support ticket in two sentences: the customer reports that "#,
    r#"streamed answers stop after about thirty seconds behind the corporate proxy.","#,
    r#""model":"gpt-4o-mini","max_tokens":256}"#,
);

/// How the request body is framed.
#[derive(Clone, Copy)]
enum BodyFraming {
    ContentLength,
    Chunked,
}

/// A typical relay request: 8 header fields, then [`REQUEST_JSON`] framed as asked.
fn relay_request(framing: BodyFraming) -> Vec<u8> {
    let framing_field = match framing {
        BodyFraming::ContentLength => format!("Content-Length: {}", REQUEST_JSON.len()),
        BodyFraming::Chunked => "Transfer-Encoding: chunked".to_owned(),
    };
    let mut request = format!(
        "POST /api/v1/generate-stream HTTP/1.1\r\n\
         Host: relay.example.internal:8080\r\n\
         User-Agent: python-httpx/0.27.0\r\n\
         Accept: text/event-stream\r\n\
         Accept-Encoding: identity\r\n\
         Content-Type: application/json\r\n\
         Authorization: Bearer tp_live_4f9c2a7e1b3d48a6a0c5e9f1d2b7c8e3\r\n\
         X-Request-Id: 7d3f0b9e-2c41-4e8a-9a5f-61b2c0d4e8f7\r\n\
         {framing_field}\r\n\
         \r\n"
    )
    .into_bytes();
    match framing {
        BodyFraming::ContentLength => request.extend_from_slice(REQUEST_JSON.as_bytes()),
        BodyFraming::Chunked => {
            request.extend_from_slice(format!("{:x}\r\n", REQUEST_JSON.len()).as_bytes());
            request.extend_from_slice(REQUEST_JSON.as_bytes());
            request.extend_from_slice(b"\r\n0\r\n\r\n");
        }
    }
    request
}

/// Where the head of `request` ends (just after its blank line).
fn head_len(request: &[u8]) -> usize {
    request
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("the request has a blank line")
        + 4
}

/// Checks, before timing, that `reads` (growing prefixes of one buffer) yield the expected request
/// from a single reader: only the last read completes it, and it consumes everything.
fn check_request(reads: &[&[u8]]) {
    let mut reader = RequestReader::new(Limits::default());
    let (last, earlier) = reads.split_last().expect("at least one read");
    for read in earlier {
        assert_eq!(reader.advance(read), (0, Ok(Progress::NeedMore)));
    }
    let (consumed, progress) = reader.advance(last);
    assert_eq!(consumed, last.len());
    let Ok(Progress::Complete(request)) = progress else {
        panic!("expected a complete request, got {progress:?}");
    };
    assert_eq!(
        request,
        Request {
            method: "POST".to_owned(),
            path: "/api/v1/generate-stream".to_owned(),
            query: None,
            version: 1,
            keep_alive: true,
            headers: request.headers.clone(),
            body: REQUEST_JSON.as_bytes().to_vec(),
        }
    );
    assert_eq!(
        request.headers.len(),
        8,
        "the eight header fields, in order"
    );
    assert!(reader.is_idle());
}

fn request_reader(c: &mut Criterion) {
    let content_length = relay_request(BodyFraming::ContentLength);
    let chunked = relay_request(BodyFraming::Chunked);
    let split = head_len(&content_length) / 2;
    check_request(&[&content_length]);
    check_request(&[&chunked]);
    check_request(&[&content_length[..split], &content_length]);

    let mut group = c.benchmark_group("request_reader");
    for (name, request) in [
        ("content_length", &content_length),
        ("chunked_body", &chunked),
    ] {
        group.throughput(Throughput::Bytes(request.len() as u64));
        group.bench_function(name, |b| {
            let mut reader = RequestReader::new(Limits::default());
            b.iter(|| reader.advance(black_box(request)));
        });
    }

    group.throughput(Throughput::Bytes(content_length.len() as u64));
    group.bench_function("head_in_two_reads", |b| {
        let mut reader = RequestReader::new(Limits::default());
        let first = &content_length[..split];
        b.iter(|| {
            // The first read ends inside the head: nothing is consumed, the search position is kept.
            black_box(&reader.advance(black_box(first)));
            // The buffer has grown in place; the reader resumes and completes the request.
            reader.advance(black_box(&content_length))
        });
    });
    group.finish();
}

// ---------------------------------------------------------------------------------------------
// Chunked decoder

/// Number of SSE events in the upstream body.
const EVENTS: usize = 50;

/// 50 OpenAI-style streaming events as an upstream sends them: a role delta, content deltas of a
/// token each, a `stop` delta, and `data: [DONE]`.
fn sse_events() -> Vec<Vec<u8>> {
    const HEAD: &str = concat!(
        r#"data: {"id":"chatcmpl-9ZxQ2m7TbL4kV8pR1sNw3yHc","object":"chat.completion.chunk","#,
        r#""created":1718000000,"model":"gpt-4o-mini-2024-07-18","#,
        r#""system_fingerprint":"fp_0f03d4f0ee","choices":[{"index":0,"delta":"#,
    );
    const TOKENS: [&str; 12] = [
        " The",
        " relay",
        " forwards",
        " each",
        " token",
        " as",
        " soon",
        " as",
        " it",
        " arrives",
        ",",
        " unchanged",
    ];
    (0..EVENTS)
        .map(|i| {
            let event = match i {
                0 => format!(
                    r#"{HEAD}{{"role":"assistant","content":""}},"logprobs":null,"finish_reason":null}}]}}"#
                ),
                i if i == EVENTS - 2 => {
                    format!(r#"{HEAD}{{}},"logprobs":null,"finish_reason":"stop"}}]}}"#)
                }
                i if i == EVENTS - 1 => "data: [DONE]".to_owned(),
                i => {
                    let token = TOKENS[i % TOKENS.len()];
                    format!(
                        r#"{HEAD}{{"content":"{token}"}},"logprobs":null,"finish_reason":null}}]}}"#
                    )
                }
            };
            format!("{event}\n\n").into_bytes()
        })
        .collect()
}

/// The events as a chunked body, one event per chunk, and the position where each chunk ends. The
/// last chunk (`0\r\n\r\n`) is counted with the last event's chunk, as an upstream that writes its
/// final event and ends the body at once delivers them.
fn chunked_body(events: &[Vec<u8>]) -> (Vec<u8>, Vec<usize>) {
    let mut body = Vec::new();
    let mut ends = Vec::new();
    for event in events {
        body.extend_from_slice(format!("{:x}\r\n", event.len()).as_bytes());
        body.extend_from_slice(event);
        body.extend_from_slice(b"\r\n");
        ends.push(body.len());
    }
    body.extend_from_slice(b"0\r\n\r\n");
    if let Some(last) = ends.last_mut() {
        *last = body.len();
    }
    (body, ends)
}

/// Feeds `reads` to `decode` one after another, as the relay does with its upstream reads: the
/// range vector is cleared before each read, and the ranges it then holds are what would be
/// forwarded. Returns what the last call decoded.
fn decode_reads(
    mut decode: impl FnMut(&[u8], &mut Vec<Range<usize>>) -> Result<Decoded, ChunkError>,
    reads: &[&[u8]],
    ranges: &mut Vec<Range<usize>>,
) -> Decoded {
    let mut decoded = Decoded {
        consumed: 0,
        done: false,
    };
    for read in reads {
        ranges.clear();
        decoded = decode(black_box(read), ranges).expect("a well-formed chunked body");
        black_box(ranges.as_slice());
    }
    decoded
}

/// Checks, before timing, that decoding `reads` yields exactly the events' bytes and ends the body
/// at the end of the last read.
fn check_body(reads: &[&[u8]], events: &[Vec<u8>]) {
    let mut decoder = ChunkedDecoder::new();
    let mut payload = Vec::new();
    let mut decoded = None;
    for read in reads {
        let mut ranges = Vec::new();
        decoded = Some(decoder.decode(read, &mut ranges).expect("well-formed"));
        for range in ranges {
            payload.extend_from_slice(&read[range]);
        }
    }
    let last = reads.last().expect("at least one read");
    assert_eq!(
        decoded,
        Some(Decoded {
            consumed: last.len(),
            done: true
        })
    );
    assert_eq!(payload, events.concat());
}

fn chunked_decoder(c: &mut Criterion) {
    let events = sse_events();
    let (body, ends) = chunked_body(&events);
    let per_chunk: Vec<&[u8]> = ends
        .iter()
        .scan(0, |start, &end| {
            let read = &body[*start..end];
            *start = end;
            Some(read)
        })
        .collect();
    let whole: Vec<&[u8]> = vec![&body];
    let tiny: Vec<&[u8]> = body.chunks(7).collect();
    for reads in [&per_chunk, &whole, &tiny] {
        check_body(reads, &events);
    }

    let mut group = c.benchmark_group("chunked_decoder");
    group.throughput(Throughput::Bytes(body.len() as u64));
    for (name, reads) in [
        ("one_chunk_per_read", &per_chunk),
        ("whole_body_one_read", &whole),
        ("7_byte_reads", &tiny),
    ] {
        group.bench_function(name, |b| {
            let mut ranges = Vec::new();
            b.iter(|| {
                let mut decoder = ChunkedDecoder::new();
                decode_reads(|r, p| decoder.decode(r, p), reads, &mut ranges)
            });
        });
    }
    group.bench_function("body_decoder_one_chunk_per_read", |b| {
        let mut ranges = Vec::new();
        b.iter(|| {
            let mut decoder = BodyDecoder::new(black_box(Framing::Chunked));
            decode_reads(|r, p| decoder.decode(r, p), &per_chunk, &mut ranges)
        });
    });
    group.finish();
}

// ---------------------------------------------------------------------------------------------
// Response head

/// The head of an OpenAI-like streaming response: 22 header fields, chunked, `text/event-stream`.
const RESPONSE_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\n\
Date: Mon, 10 Jun 2024 06:13:20 GMT\r\n\
Content-Type: text/event-stream; charset=utf-8\r\n\
Transfer-Encoding: chunked\r\n\
Connection: keep-alive\r\n\
access-control-expose-headers: X-Request-ID\r\n\
openai-organization: user-abc123\r\n\
openai-processing-ms: 187\r\n\
openai-version: 2020-10-01\r\n\
strict-transport-security: max-age=31536000; includeSubDomains; preload\r\n\
x-ratelimit-limit-requests: 10000\r\n\
x-ratelimit-limit-tokens: 200000\r\n\
x-ratelimit-remaining-requests: 9999\r\n\
x-ratelimit-remaining-tokens: 199969\r\n\
x-ratelimit-reset-requests: 8.64s\r\n\
x-ratelimit-reset-tokens: 9ms\r\n\
x-request-id: req_4b7c1e0f9a2d43c6b8e5f7a1c3d9e2b0\r\n\
Cache-Control: no-cache, must-revalidate\r\n\
CF-Cache-Status: DYNAMIC\r\n\
Server: cloudflare\r\n\
CF-RAY: 8913a2b4cd5e6f70-AMS\r\n\
alt-svc: h3=\":443\"; ma=86400\r\n\
\r\n";

fn response_head(c: &mut Criterion) {
    let max_head_bytes = Limits::default().max_head_bytes;
    let split = RESPONSE_HEAD.len() / 2;
    assert_eq!(
        parse_response_head(&RESPONSE_HEAD[..split], max_head_bytes),
        Ok(None)
    );
    let (head, consumed) = parse_response_head(RESPONSE_HEAD, max_head_bytes)
        .expect("a valid head")
        .expect("a complete head");
    assert_eq!(consumed, RESPONSE_HEAD.len());
    assert_eq!((head.status, head.framing), (200, Framing::Chunked));
    assert!(head.keep_alive);
    assert_eq!(
        head.content_type.as_deref(),
        Some("text/event-stream; charset=utf-8")
    );

    let mut group = c.benchmark_group("response_head");
    group.throughput(Throughput::Bytes(RESPONSE_HEAD.len() as u64));
    group.bench_function("whole_head", |b| {
        b.iter(|| parse_response_head(black_box(RESPONSE_HEAD), max_head_bytes));
    });
    group.bench_function("head_in_two_reads", |b| {
        let first = &RESPONSE_HEAD[..split];
        b.iter(|| {
            black_box(&parse_response_head(black_box(first), max_head_bytes));
            parse_response_head(black_box(RESPONSE_HEAD), max_head_bytes)
        });
    });
    group.finish();
}

criterion_group!(benches, request_reader, chunked_decoder, response_head);
criterion_main!(benches);
