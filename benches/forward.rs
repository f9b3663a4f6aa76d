//! Micro-benchmarks of the relay's per-read hot path (`src/relay/forward.rs`), without the socket.
//!
//! Run with `cargo bench --bench forward` (add `-- --warm-up-time 1 --measurement-time 2` for a quick
//! look). For every read from an upstream socket, the relay runs the same three steps before it writes to
//! the client:
//!
//! 1. [`BodyDecoder::decode`] (chunked framing here) finds the payload ranges inside the bytes just read,
//!    skipping the upstream's chunk framing and copying nothing;
//! 2. [`gather`] moves those ranges together at the front of the read buffer (a `memmove` inside the
//!    buffer, nothing when there is one range) and returns them as one slice;
//! 3. [`chunk_size_line`] writes the size line of the one chunk the client gets, on the stack.
//!
//! Then one `writev` sends size line, payload and CRLF. That write, the read before it and the
//! connection's state handling are not measured here: this is the user-space work on the bytes, the part
//! that grows with the stream's byte rate. Throughput is in bytes of upstream wire input (framing
//! included), so the cases compare with each other, with `benches/http.rs`, and with a link's bandwidth.
//!
//! # Cases
//!
//! The body is a stream of OpenAI-style `data: {...}\n\n` SSE events (about 190 bytes each, one token
//! of content), each in its own upstream chunk:
//!
//! - `one_event`: a read holding exactly one chunk, one event: the common case, an upstream writing an
//!   event per token and the relay keeping up, so the per-read overhead shows. [`gather`] has a single
//!   range and moves nothing;
//! - `four_chunks`: a read holding four chunks (the relay fell slightly behind): four ranges, and
//!   [`gather`] moves the last three next to the first;
//! - `read_16k`: a 16 KiB read cut from a long run of chunks (an upstream faster than the relay), starting
//!   at a chunk boundary and ending inside a chunk: 83 chunks (the last one cut), 83 ranges.
//!
//! # What is timed
//!
//! [`gather`] moves bytes, so each iteration starts from a pristine copy of the read: the template is
//! copied into one reused 64 KiB buffer (the size of the worker's read buffer,
//! [`tokenpipe::reactor::SCRATCH_BYTES`]) at the start of the iteration, and **that copy is included in
//! the time**. It stands in for the copy the kernel's `read` makes into the same buffer (so the bytes are
//! as warm in cache as they are in the relay), but it is not the relay's own work; `copy_only` times that
//! copy alone for each case, so it can be subtracted. The decoder is a fresh one each iteration (a few
//! bytes), positioned before a chunk-size line, and the payload-range vector is allocated once and
//! cleared before each read, as the relay does. Each case is checked once before timing: the payload
//! gathered must be exactly the events' bytes that the read holds, and the size line its length in hex.

use std::hint::black_box;
use std::ops::Range;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tokenpipe::http::body::{BodyDecoder, Framing};
use tokenpipe::http::chunked::Decoded;
use tokenpipe::http::response::chunk_size_line;
use tokenpipe::reactor::SCRATCH_BYTES;
use tokenpipe::relay::forward::gather;

/// The size of the large read.
const LARGE_READ: usize = 16 * 1024;

/// One OpenAI-style streaming event carrying one token of content (about 190 bytes).
fn sse_event(i: usize) -> Vec<u8> {
    const TOKENS: [&str; 8] = [
        " The",
        " relay",
        " forwards",
        " each",
        " token",
        " as",
        " it",
        " arrives",
    ];
    let token = TOKENS[i % TOKENS.len()];
    format!(
        concat!(
            r#"data: {{"id":"chatcmpl-9ZxQ2m7TbL4kV8pR","object":"chat.completion.chunk","#,
            r#""created":1718000000,"model":"gpt-4o-mini","choices":[{{"index":0,"#,
            r#""delta":{{"content":"{}"}},"finish_reason":null}}]}}"#,
            "\n\n"
        ),
        token
    )
    .into_bytes()
}

/// One upstream read and the payload it must yield.
struct Case {
    name: &'static str,
    /// The bytes of the read, as they arrive from the upstream socket.
    read: Vec<u8>,
    /// The event bytes inside `read`, in order: what the client must get.
    payload: Vec<u8>,
}

/// The first `events` events of the stream, each in its own chunk, cut to the first `limit` bytes.
fn chunked_read(name: &'static str, events: usize, limit: usize) -> Case {
    let mut read = Vec::new();
    let mut payload = Vec::new();
    for i in 0..events {
        let event = sse_event(i);
        read.extend_from_slice(format!("{:x}\r\n", event.len()).as_bytes());
        let start = read.len();
        read.extend_from_slice(&event);
        read.extend_from_slice(b"\r\n");
        // The part of this event that falls inside the read.
        let inside = limit.saturating_sub(start).min(event.len());
        payload.extend_from_slice(&event[..inside]);
    }
    assert!(read.len() >= limit, "enough events to fill the read");
    read.truncate(limit);
    Case {
        name,
        read,
        payload,
    }
}

fn cases() -> Vec<Case> {
    let one_event = sse_event(0).len() + 6;
    let four = (0..4).map(|i| sse_event(i).len() + 6).sum();
    // Enough events to pass 16 KiB whatever their exact size.
    let many = LARGE_READ / 64;
    vec![
        chunked_read("one_event", 1, one_event),
        chunked_read("four_chunks", 4, four),
        chunked_read("read_16k", many, LARGE_READ),
    ]
}

/// One upstream read as the relay handles it up to its `writev`: decode, gather, size line. Returns what
/// the decoder reported and the two pieces the `writev` would start with (size line, payload).
fn forward_read<'a>(
    decoder: &mut BodyDecoder,
    input: &'a mut [u8],
    ranges: &mut Vec<Range<usize>>,
    line: &'a mut [u8; 20],
) -> (Decoded, [&'a [u8]; 2]) {
    ranges.clear();
    let decoded = decoder
        .decode(input, ranges)
        .expect("a well-formed chunked body");
    let payload = gather(input, ranges);
    let size_line = chunk_size_line(payload.len(), line);
    (decoded, [size_line, payload])
}

/// Checks, before timing, that one pass over `case` forwards exactly its payload, with the right size
/// line, and reports the whole read consumed with the body still going.
fn check(case: &Case) {
    let mut input = case.read.clone();
    let mut ranges = Vec::new();
    let mut line = [0u8; 20];
    let mut decoder = BodyDecoder::new(Framing::Chunked);
    let (decoded, [size_line, payload]) =
        forward_read(&mut decoder, &mut input, &mut ranges, &mut line);
    assert_eq!(
        decoded,
        Decoded {
            consumed: case.read.len(),
            done: false
        }
    );
    assert_eq!(payload, case.payload, "{}: gathered payload", case.name);
    assert_eq!(
        size_line,
        format!("{:x}\r\n", case.payload.len()).as_bytes()
    );
}

fn forward(c: &mut Criterion) {
    let cases = cases();
    for case in &cases {
        check(case);
    }

    let mut scratch = vec![0u8; SCRATCH_BYTES].into_boxed_slice();
    let mut group = c.benchmark_group("forward");
    for case in &cases {
        let n = case.read.len();
        group.throughput(Throughput::Bytes(n as u64));
        group.bench_function(
            BenchmarkId::new("decode_gather_size_line", case.name),
            |b| {
                let mut ranges = Vec::new();
                let mut line = [0u8; 20];
                b.iter(|| {
                    // Included in the time: the stand-in for the kernel's copy into the read buffer.
                    scratch[..n].copy_from_slice(black_box(&case.read));
                    let mut decoder = BodyDecoder::new(black_box(Framing::Chunked));
                    let (decoded, iov) =
                        forward_read(&mut decoder, &mut scratch[..n], &mut ranges, &mut line);
                    black_box((decoded, iov));
                });
            },
        );
        group.bench_function(BenchmarkId::new("copy_only", case.name), |b| {
            b.iter(|| {
                scratch[..n].copy_from_slice(black_box(&case.read));
                black_box(&scratch[..n]);
            });
        });
    }
    group.finish();
}

criterion_group!(benches, forward);
criterion_main!(benches);
