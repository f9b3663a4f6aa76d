//! Counting the events of a stream as its bytes arrive, split wherever the reads split them.
//!
//! An *event* here is what a client of a model API waits for: an SSE frame (lines ended by a blank line)
//! with a `data` field, that is not a ping. Comments (`: keep-alive`) and `event: ping` frames are not
//! events. Through the relay, an OpenAI-shaped answer of five tokens is eight events: five tokens, the
//! `finish_reason` chunk, the `usage` chunk and `data: [DONE]`.
//!
//! The relay's [`SseWatch`] already knows where frames end and whether a real event has gone by, over any
//! split of the stream (its property test checks every split). It answers "has the *first* event come?",
//! and a load generator needs every one. So [`EventCounter`] hands it the bytes one line at a time, and
//! when an event has ended, counts it and starts a fresh watch. The reset happens exactly at a frame
//! boundary (just after the blank line), where a watch holds nothing but one fact: whether the line ended
//! with a CR that an LF may follow. Losing it turns that LF into one more empty line, which at a boundary
//! ends no event: the count is the same as the whole stream's (`any_split_counts_the_same`).
//!
//! Memory is the watch's few bytes; nothing grows with the stream, and nothing is allocated per event.

use crate::relay::sse::SseWatch;

/// The events seen so far in one stream (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct EventCounter {
    watch: SseWatch,
}

impl EventCounter {
    /// Takes the next bytes of the stream; returns how many events ended in them.
    pub fn feed(&mut self, mut bytes: &[u8]) -> u32 {
        let mut ended = 0;
        while !bytes.is_empty() {
            // One line end at most per piece: at most one frame can end in it.
            let cut = memchr::memchr2(b'\n', b'\r', bytes).map_or(bytes.len(), |i| i + 1);
            self.watch.feed(&bytes[..cut]);
            if self.watch.first_event() {
                ended += 1;
                self.watch = SseWatch::default();
            }
            bytes = &bytes[cut..];
        }
        ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn count(parts: &[&[u8]]) -> u32 {
        let mut c = EventCounter::default();
        parts.iter().map(|p| c.feed(p)).sum()
    }

    /// What an event is, said the simplest way: split into frames at blank lines (any line end), and count
    /// the frames with a `data` field that are not named `ping`.
    fn reference(stream: &[u8]) -> u32 {
        let text = String::from_utf8_lossy(stream)
            .replace("\r\n", "\n")
            .replace('\r', "\n");
        let mut events = 0;
        let (mut data, mut ping) = (false, false);
        for line in text.split_inclusive('\n') {
            let Some(line) = line.strip_suffix('\n') else {
                break; // an unfinished line ends nothing
            };
            if line.is_empty() {
                events += u32::from(data && !ping);
                (data, ping) = (false, false);
            } else if line == "data" || line.starts_with("data:") {
                data = true;
            } else if let Some(name) = line.strip_prefix("event:") {
                ping = name.strip_prefix(' ').unwrap_or(name) == "ping";
            }
        }
        events
    }

    #[test]
    fn the_relays_openai_answer_is_eight_events() {
        let mut stream = Vec::new();
        for i in 0..5 {
            stream.extend_from_slice(format!("data: {{\"token\":{i}}}\n\n").as_bytes());
        }
        stream.extend_from_slice(b"data: {\"finish_reason\":\"stop\"}\n\n");
        stream.extend_from_slice(b"data: {\"usage\":{}}\n\n");
        stream.extend_from_slice(b"data: [DONE]\n\n");
        assert_eq!(count(&[&stream]), 8);
    }

    #[test]
    fn comments_pings_and_unfinished_frames_are_not_events() {
        assert_eq!(count(&[b": keep-alive\n\n"]), 0);
        assert_eq!(count(&[b"event: ping\ndata: {}\n\n"]), 0);
        assert_eq!(count(&[b"data: half a frame\n"]), 0);
        assert_eq!(count(&[b"event: pingpong\ndata: {}\n\n"]), 1);
    }

    #[test]
    fn line_ends_of_every_kind_count_once() {
        for stream in [
            &b"data: a\n\ndata: b\n\n"[..],
            b"data: a\r\n\r\ndata: b\r\n\r\n",
            b"data: a\r\rdata: b\r\r",
            b"data: a\r\n\r\n\r\n\r\ndata: b\n\n",
        ] {
            assert_eq!(count(&[stream]), 2, "{stream:?}");
            // Byte by byte, each CR apart from its LF.
            let bytes: Vec<&[u8]> = stream.chunks(1).collect();
            assert_eq!(count(&bytes), 2, "{stream:?} byte by byte");
        }
    }

    proptest! {
        /// Any stream, cut anywhere: the count is the whole stream's, and what the simple reference says.
        #[test]
        fn any_split_counts_the_same(
            stream in proptest::collection::vec(
                prop_oneof![
                    Just(b"data: x".to_vec()), Just(b"data".to_vec()), Just(b"event: ping".to_vec()),
                    Just(b": c".to_vec()), Just(b"\n".to_vec()), Just(b"\r".to_vec()),
                    Just(b"\r\n".to_vec()), proptest::collection::vec(any::<u8>(), 0..6),
                ],
                0..32,
            ),
            cut in any::<prop::sample::Index>(),
        ) {
            let stream = stream.concat();
            let cut = if stream.is_empty() { 0 } else { cut.index(stream.len() + 1) };
            let whole = count(&[&stream]);
            prop_assert_eq!(whole, count(&[&stream[..cut], &stream[cut..]]));
            let bytes: Vec<&[u8]> = stream.chunks(1).collect();
            prop_assert_eq!(whole, count(&bytes));
            // The reference reads text: compare where the stream is ASCII, so that lossy decoding does
            // not change a byte.
            if stream.is_ascii() {
                prop_assert_eq!(whole, reference(&stream));
            }
        }
    }
}
