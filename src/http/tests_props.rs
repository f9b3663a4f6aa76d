//! Property tests: results never depend on how input is split, and no input panics or escapes the
//! limits.
//!
//! Test code only: its parent declares it `#[cfg(test)]`.

use proptest::prelude::*;
use proptest::sample::Index;

use super::body::{BodyDecoder, Framing};
use super::chunked::{ChunkError, ChunkedDecoder};
use super::request::{Limits, Request};
use super::response::parse_response_head;
use super::tests_request::{Event, feed, feed_pieces};

// -------------------------------------------------------------------------------------------------
// Generating valid chunked bodies

#[derive(Debug, Clone)]
struct Chunk {
    data: Vec<u8>,
    /// Extension text after `;` (and optional BWS before it).
    extension: Option<(bool, String)>,
    uppercase: bool,
    leading_zeros: usize,
}

#[derive(Debug, Clone)]
struct ChunkedBody {
    chunks: Vec<Chunk>,
    last_extension: Option<(bool, String)>,
    trailers: Vec<(String, String)>,
}

fn extension() -> impl Strategy<Value = Option<(bool, String)>> {
    let text = prop_oneof![
        "[a-z]{1,6}",
        "[a-z]{1,4}=[a-z0-9]{1,4}",
        "[a-z]{1,3}=\"[ a-z;=]{0,6}\";x"
    ];
    proptest::option::of((any::<bool>(), text))
}

fn chunk() -> impl Strategy<Value = Chunk> {
    (
        proptest::collection::vec(any::<u8>(), 1..40),
        extension(),
        any::<bool>(),
        0..3usize,
    )
        .prop_map(|(data, extension, uppercase, leading_zeros)| Chunk {
            data,
            extension,
            uppercase,
            leading_zeros,
        })
}

fn chunked_body() -> impl Strategy<Value = ChunkedBody> {
    (
        proptest::collection::vec(chunk(), 0..6),
        extension(),
        proptest::collection::vec(("[A-Za-z-]{1,8}", "[ -~]{0,10}"), 0..3),
    )
        .prop_map(|(chunks, last_extension, trailers)| ChunkedBody {
            chunks,
            last_extension,
            trailers,
        })
}

fn push_extension(out: &mut Vec<u8>, extension: &Option<(bool, String)>) {
    if let Some((bws, text)) = extension {
        if *bws {
            out.extend_from_slice(b" \t");
        }
        out.push(b';');
        out.extend_from_slice(text.as_bytes());
    }
}

impl ChunkedBody {
    /// The wire bytes, and the payload they carry.
    fn encode(&self) -> (Vec<u8>, Vec<u8>) {
        let (mut wire, mut payload) = (Vec::new(), Vec::new());
        for chunk in &self.chunks {
            let size = format!("{}{:x}", "0".repeat(chunk.leading_zeros), chunk.data.len());
            let size = if chunk.uppercase {
                size.to_uppercase()
            } else {
                size
            };
            wire.extend_from_slice(size.as_bytes());
            push_extension(&mut wire, &chunk.extension);
            wire.extend_from_slice(b"\r\n");
            wire.extend_from_slice(&chunk.data);
            wire.extend_from_slice(b"\r\n");
            payload.extend_from_slice(&chunk.data);
        }
        wire.push(b'0');
        push_extension(&mut wire, &self.last_extension);
        wire.extend_from_slice(b"\r\n");
        for (name, value) in &self.trailers {
            wire.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        wire.extend_from_slice(b"\r\n");
        (wire, payload)
    }
}

/// How a decode run ended: done at an offset of the whole input, failed, or still waiting.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    DoneAt(usize),
    Failed(ChunkError),
    Incomplete,
}

/// Decode `input` cut at `cuts` (sorted offsets), checking the `decode` contract on every piece.
fn decode_pieces(decoder: &mut BodyDecoder, input: &[u8], cuts: &[usize]) -> (Vec<u8>, Outcome) {
    let mut payload = Vec::new();
    let mut start = 0;
    for end in cuts.iter().copied().chain([input.len()]) {
        let piece = &input[start..end.max(start)];
        let mut ranges = Vec::new();
        let result = decoder.decode(piece, &mut ranges);
        for range in ranges {
            assert!(
                range.start <= range.end && range.end <= piece.len(),
                "range out of bounds"
            );
            payload.extend_from_slice(&piece[range]);
        }
        match result {
            Err(error) => return (payload, Outcome::Failed(error)),
            Ok(decoded) if decoded.done => {
                return (payload, Outcome::DoneAt(start + decoded.consumed));
            }
            Ok(decoded) => assert_eq!(
                decoded.consumed,
                piece.len(),
                "consumed less without being done"
            ),
        }
        start = end.max(start);
    }
    (payload, Outcome::Incomplete)
}

fn decode_chunked(input: &[u8], cuts: &[usize]) -> (Vec<u8>, Outcome) {
    decode_pieces(&mut BodyDecoder::new(Framing::Chunked), input, cuts)
}

/// Up to 8 random cut points.
fn cuts() -> impl Strategy<Value = Vec<Index>> {
    proptest::collection::vec(any::<Index>(), 0..8)
}

fn sorted_cuts(cuts: &[Index], len: usize) -> Vec<usize> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(len + 1)).collect();
    cuts.sort_unstable();
    cuts
}

proptest! {
    #[test]
    fn chunked_decoding_is_independent_of_splits(body in chunked_body(), cuts in cuts()) {
        let (wire, payload) = body.encode();
        let input = [wire.as_slice(), b"NEXT"].concat();
        let expected = (payload, Outcome::DoneAt(wire.len()));
        prop_assert_eq!(&decode_chunked(&input, &[]), &expected);
        for split in 0..=input.len() {
            prop_assert_eq!(&decode_chunked(&input, &[split]), &expected, "split at {}", split);
        }
        prop_assert_eq!(&decode_chunked(&input, &sorted_cuts(&cuts, input.len())), &expected);
    }

    #[test]
    fn chunked_decoder_survives_garbage(input in garbage(CHUNK_TOKENS), cuts in cuts()) {
        // Whatever the input, the outcome does not depend on how it is split, and nothing panics.
        let whole = decode_chunked(&input, &[]);
        prop_assert_eq!(&decode_chunked(&input, &sorted_cuts(&cuts, input.len())), &whole);
        let mut decoder = ChunkedDecoder::new();
        let mut ranges = Vec::new();
        let first = decoder.decode(&input, &mut ranges);
        prop_assert!(ranges.iter().all(|r| r.end <= input.len()));
        if first.is_err() {
            // Sticky: a failed decoder never resumes.
            prop_assert_eq!(decoder.decode(b"0\r\n\r\n", &mut ranges), first);
        }
    }

    #[test]
    fn body_decoder_survives_garbage(
        input in garbage(CHUNK_TOKENS),
        framing in framing(),
        cuts in cuts(),
    ) {
        let whole = decode_pieces(&mut BodyDecoder::new(framing), &input, &[]);
        let cuts = sorted_cuts(&cuts, input.len());
        let split = decode_pieces(&mut BodyDecoder::new(framing), &input, &cuts);
        prop_assert_eq!(split, whole);
    }
}

fn framing() -> impl Strategy<Value = Framing> {
    prop_oneof![
        Just(Framing::None),
        (0..64u64).prop_map(Framing::Length),
        Just(Framing::Length(u64::MAX)),
        Just(Framing::Chunked),
        Just(Framing::UntilClose),
    ]
}

// -------------------------------------------------------------------------------------------------
// Garbage: random bytes, and random sequences of protocol fragments that reach deeper states.

const CHUNK_TOKENS: &[&str] = &[
    "0", "1", "a", "F", "\r", "\n", "\r\n", ";", " ", "\t", "=", "\"", "x", ":",
];

const REQUEST_TOKENS: &[&str] = &[
    "GET / HTTP/1.1\r\n",
    "POST /p?q HTTP/1.0\r\n",
    "Host: a\r\n",
    "Content-Length: 5\r\n",
    "Content-Length: 3, 3\r\n",
    "Transfer-Encoding: chunked\r\n",
    "Transfer-Encoding: gzip\r\n",
    "Expect: 100-continue\r\n",
    "Connection: close\r\n",
    "\r\n",
    "\n",
    "\r",
    "5\r\nhello\r\n",
    "0\r\n\r\n",
    "HTTP/1.1 100 Continue\r\n",
    "HTTP/1.1 200 OK\r\n",
    "x",
    " ",
    "GET /a-long-request-target?with=a&query HTTP/1.1\r\n",
    "X-Long: a field line long enough to break a small limit\r\n",
];

fn garbage(tokens: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
    let fragment = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..16),
        proptest::sample::select(tokens).prop_map(|t| t.as_bytes().to_vec()),
    ];
    proptest::collection::vec(fragment, 0..40).prop_map(|fragments| fragments.concat())
}

fn small_limits() -> impl Strategy<Value = Limits> {
    (0..160usize, 0..40usize, 0..8usize, 0..60usize, 0..60usize).prop_map(
        |(max_head_bytes, max_body_bytes, max_headers, max_target_bytes, max_field_line_bytes)| {
            Limits {
                max_head_bytes,
                max_body_bytes,
                max_headers,
                max_target_bytes,
                max_field_line_bytes,
            }
        },
    )
}

// -------------------------------------------------------------------------------------------------
// Generating valid requests

#[derive(Debug, Clone)]
enum BodySpec {
    Empty,
    Length(Vec<u8>),
    Chunked(ChunkedBody),
}

#[derive(Debug, Clone)]
struct RequestSpec {
    method: String,
    path: String,
    query: Option<String>,
    http_1_0: bool,
    connection: Option<&'static str>,
    expect_continue: bool,
    leading_empty_line: bool,
    body: BodySpec,
}

fn request_spec() -> impl Strategy<Value = RequestSpec> {
    let body = prop_oneof![
        Just(BodySpec::Empty),
        proptest::collection::vec(any::<u8>(), 0..60).prop_map(BodySpec::Length),
        chunked_body().prop_map(BodySpec::Chunked),
    ];
    (
        prop_oneof![
            Just("GET".to_owned()),
            Just("POST".to_owned()),
            "[A-Z]{1,7}"
        ],
        "/[a-z0-9/._-]{0,20}",
        proptest::option::of("[a-z0-9=&]{0,12}"),
        any::<bool>(),
        proptest::option::of(proptest::sample::select(
            &["close", "keep-alive", "Keep-Alive, x", "x, CLOSE"][..],
        )),
        any::<bool>(),
        any::<bool>(),
        body,
    )
        .prop_map(
            |(
                method,
                path,
                query,
                http_1_0,
                connection,
                expect_continue,
                leading_empty_line,
                body,
            )| {
                // HTTP/1.0 has no chunked coding; such a request would be (rightly) refused.
                let http_1_0 = http_1_0 && !matches!(body, BodySpec::Chunked(_));
                RequestSpec {
                    method,
                    path,
                    query,
                    http_1_0,
                    connection,
                    expect_continue,
                    leading_empty_line,
                    body,
                }
            },
        )
}

impl RequestSpec {
    /// The wire bytes, and the events a reader must report for them.
    fn encode(&self) -> (Vec<u8>, Vec<Event>) {
        let mut wire = Vec::new();
        if self.leading_empty_line {
            wire.extend_from_slice(b"\r\n");
        }
        let query = self
            .query
            .as_ref()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        let version = if self.http_1_0 { "1.0" } else { "1.1" };
        wire.extend_from_slice(
            format!(
                "{} {}{query} HTTP/{version}\r\nHost: h\r\n",
                self.method, self.path
            )
            .as_bytes(),
        );
        // The header fields the reader must report, in order.
        let mut headers: Vec<(String, Vec<u8>)> = vec![("Host".into(), b"h".to_vec())];
        if let Some(connection) = self.connection {
            wire.extend_from_slice(format!("Connection: {connection}\r\n").as_bytes());
            headers.push(("Connection".into(), connection.as_bytes().to_vec()));
        }
        if self.expect_continue {
            wire.extend_from_slice(b"Expect: 100-continue\r\n");
            headers.push(("Expect".into(), b"100-continue".to_vec()));
        }
        let (body, has_body) = match &self.body {
            BodySpec::Empty => {
                wire.extend_from_slice(b"\r\n");
                (Vec::new(), false)
            }
            BodySpec::Length(data) => {
                wire.extend_from_slice(
                    format!("Content-Length: {}\r\n\r\n", data.len()).as_bytes(),
                );
                headers.push(("Content-Length".into(), data.len().to_string().into_bytes()));
                wire.extend_from_slice(data);
                (data.clone(), !data.is_empty())
            }
            BodySpec::Chunked(chunked) => {
                headers.push(("Transfer-Encoding".into(), b"chunked".to_vec()));
                wire.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                let (encoded, payload) = chunked.encode();
                wire.extend_from_slice(&encoded);
                (payload, true)
            }
        };
        let token = |t: &str| {
            self.connection
                .is_some_and(|c| c.to_lowercase().split(", ").any(|x| x == t))
        };
        let keep_alive = !token("close") && (!self.http_1_0 || token("keep-alive"));
        let mut events = Vec::new();
        if self.expect_continue && has_body && !self.http_1_0 {
            events.push(Event::Continue);
        }
        events.push(Event::Request(Request {
            method: self.method.clone(),
            path: self.path.clone(),
            query: self.query.clone(),
            version: if self.http_1_0 { 0 } else { 1 },
            keep_alive,
            headers,
            body,
        }));
        (wire, events)
    }
}

proptest! {
    #[test]
    fn requests_read_the_same_however_they_arrive(
        specs in proptest::collection::vec(request_spec(), 1..3),
        cuts in proptest::collection::vec(any::<Index>(), 0..10),
    ) {
        let (mut wire, mut expected) = (Vec::new(), Vec::new());
        for spec in &specs {
            let (bytes, events) = spec.encode();
            wire.extend_from_slice(&bytes);
            expected.extend(events);
        }
        let limits = Limits::default();
        prop_assert_eq!(&feed(&limits, &wire, wire.len()), &expected);
        prop_assert_eq!(&feed(&limits, &wire, 1), &expected);
        let cuts = sorted_cuts(&cuts, wire.len());
        let pieces: Vec<&[u8]> = cuts
            .iter()
            .chain([&wire.len()])
            .scan(0, |start, &end| {
                let piece = &wire[*start..end];
                *start = end;
                Some(piece)
            })
            .collect();
        prop_assert_eq!(&feed_pieces(&limits, &pieces), &expected);
    }

    #[test]
    fn request_reader_survives_garbage(
        input in garbage(REQUEST_TOKENS),
        limits in small_limits(),
        step in 1..20usize,
    ) {
        // `feed` asserts the memory contract (bytes left to the caller, body held) after every
        // call.
        let whole = feed(&limits, &input, input.len());
        prop_assert_eq!(feed(&limits, &input, step), whole.clone());
        prop_assert_eq!(feed(&limits, &input, 1), whole);
    }

    #[test]
    fn response_parser_survives_garbage(
        input in garbage(REQUEST_TOKENS),
        max in 0..200usize,
        extra in proptest::collection::vec(any::<u8>(), 0..8),
    ) {
        match parse_response_head(&input, max) {
            Ok(Some((head, consumed))) => {
                prop_assert!(consumed <= input.len() && consumed <= max);
                // Bytes after a complete head cannot change it.
                let longer = [input.as_slice(), &extra].concat();
                prop_assert_eq!(parse_response_head(&longer, max), Ok(Some((head, consumed))));
            }
            Ok(None) => prop_assert!(input.is_empty() || input.len() < max),
            Err(_) => {}
        }
    }
}
