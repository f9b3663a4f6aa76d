//! Watching the events of a relayed stream without changing a byte of it: where its frames end, and
//! whether a real event (not a comment, not a ping) has gone by.
//!
//! The relay needs two facts about an event stream it passes through, and nothing more:
//!
//! - **Is the client at a frame boundary?** A keep-alive comment (`: keep-alive`) or an error event may be
//!   added only between two frames: inserted inside one, it would become part of that event (SSE fields
//!   are lines, and a frame ends at a blank line). [`SseWatch::at_boundary`].
//! - **Has the first real event come?** The first-token deadline waits for it; comment lines (`: ping`,
//!   the ones some servers send while a model thinks) and `event: ping` frames (Anthropic's) are activity,
//!   not tokens. [`SseWatch::first_event`].
//!
//! It is a small state machine over bytes, fed each payload as it is relayed, so it gives the same answers
//! wherever the upstream's reads split the stream (a property test checks every split). It keeps a few
//! bytes of the current line (enough to tell `data:`, `event: ping` and a comment apart) and nothing else:
//! its memory does not grow with the stream. Line ends are what the SSE specification says: CRLF, LF or
//! CR.

/// How many bytes of a line are kept: enough for `event: ping` (11) and one more, to see that it ends.
const PREFIX: usize = 12;

/// What has been seen of an event stream so far (see the module docs).
#[derive(Debug, Clone)]
pub struct SseWatch {
    /// The first bytes of the current line.
    line: [u8; PREFIX],
    /// How many bytes of the current line were seen (saturating at `u16::MAX`: only "none", "a few" and
    /// "more than the prefix" matter).
    line_len: u16,
    /// The last byte was a CR: an LF right after it belongs to the same line end.
    after_cr: bool,
    /// The current frame has a `data` field.
    frame_has_data: bool,
    /// The current frame is named `ping`.
    frame_is_ping: bool,
    /// No byte of a frame is pending: the stream so far ends with a blank line (or is empty).
    boundary: bool,
    /// A frame with data that is not a ping has ended.
    first_event: bool,
}

impl Default for SseWatch {
    fn default() -> Self {
        SseWatch {
            line: [0; PREFIX],
            line_len: 0,
            after_cr: false,
            frame_has_data: false,
            frame_is_ping: false,
            boundary: true,
            first_event: false,
        }
    }
}

impl SseWatch {
    /// Takes the next bytes of the stream.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while let Some(&first) = bytes.first() {
            if self.after_cr {
                self.after_cr = false;
                if first == b'\n' {
                    bytes = &bytes[1..];
                    continue;
                }
            }
            match memchr::memchr2(b'\n', b'\r', bytes) {
                Some(end) => {
                    self.extend_line(&bytes[..end]);
                    self.end_line();
                    self.after_cr = bytes[end] == b'\r';
                    bytes = &bytes[end + 1..];
                }
                None => {
                    self.extend_line(bytes);
                    return;
                }
            }
        }
    }

    /// The stream so far ends between two frames: bytes of our own (a comment, an event) can go in here
    /// without becoming part of an upstream event.
    pub fn at_boundary(&self) -> bool {
        self.boundary
    }

    /// A frame with data that is not a ping has gone by: the stream has begun in earnest.
    pub fn first_event(&self) -> bool {
        self.first_event
    }

    fn extend_line(&mut self, part: &[u8]) {
        if part.is_empty() {
            return;
        }
        let have = usize::from(self.line_len).min(PREFIX);
        let take = part.len().min(PREFIX - have);
        self.line[have..have + take].copy_from_slice(&part[..take]);
        let len = usize::from(self.line_len).saturating_add(part.len());
        self.line_len = u16::try_from(len).unwrap_or(u16::MAX);
        self.boundary = false;
    }

    fn end_line(&mut self) {
        if self.line_len == 0 {
            // A blank line ends the frame.
            if self.frame_has_data && !self.frame_is_ping {
                self.first_event = true;
            }
            self.frame_has_data = false;
            self.frame_is_ping = false;
            self.boundary = true;
            return;
        }
        let kept = &self.line[..usize::from(self.line_len).min(PREFIX)];
        if kept.starts_with(b"data") && matches!(kept.get(4), None | Some(b':')) {
            self.frame_has_data = true;
        } else if let Some(name) = kept.strip_prefix(b"event:") {
            // The value may start with one space, which is not part of it.
            let name = name.strip_prefix(b" ").unwrap_or(name);
            self.frame_is_ping = name == b"ping" && usize::from(self.line_len) == kept.len();
        }
        self.line_len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn watch(parts: &[&[u8]]) -> SseWatch {
        let mut w = SseWatch::default();
        for p in parts {
            w.feed(p);
        }
        w
    }

    #[test]
    fn frames_end_at_blank_lines_whatever_the_line_ends() {
        assert!(SseWatch::default().at_boundary(), "an empty stream");
        for stream in [
            &b"data: a\n\n"[..],
            b"data: a\r\n\r\n",
            b"data: a\r\r",
            b": ping\n\n",
        ] {
            assert!(watch(&[stream]).at_boundary(), "{stream:?}");
        }
        for stream in [&b"data: a"[..], b"data: a\n", b"data: a\r\n", b": pi"] {
            assert!(!watch(&[stream]).at_boundary(), "{stream:?}");
        }
    }

    #[test]
    fn comments_and_pings_are_not_the_first_event() {
        for stream in [
            &b": ping\n\n"[..],
            b": OPENROUTER PROCESSING\n\n",
            b"event: ping\ndata: {\"type\": \"ping\"}\n\n",
            b"event: ping\r\ndata: {}\r\n\r\n",
            b"id: 1\nretry: 10\n\n",
            b"data: {\"choices\":[]}\n",
        ] {
            assert!(!watch(&[stream]).first_event(), "{stream:?}");
        }
        for stream in [
            &b"data: {\"choices\":[]}\n\n"[..],
            b"event: message_start\ndata: {}\n\n",
            b"event: pingpong\ndata: {}\n\n",
            b"data\n\n",
            b"data: [DONE]\r\n\r\n",
        ] {
            assert!(watch(&[stream]).first_event(), "{stream:?}");
        }
    }

    #[test]
    fn long_lines_are_held_in_a_fixed_prefix() {
        let mut w = SseWatch::default();
        w.feed(b"data: ");
        for _ in 0..10_000 {
            w.feed(&[b'x'; 1000]);
        }
        assert!(!w.at_boundary());
        w.feed(b"\n\n");
        assert!(w.at_boundary() && w.first_event());
    }

    fn facts(w: &SseWatch) -> (bool, bool) {
        (w.at_boundary(), w.first_event())
    }

    proptest! {
        /// Any split of any stream gives the same answers as the whole, after every part.
        #[test]
        fn every_split_gives_the_same_answers(
            stream in proptest::collection::vec(
                prop_oneof![
                    Just(b"data: x".to_vec()), Just(b"event: ping".to_vec()), Just(b": c".to_vec()),
                    Just(b"\n".to_vec()), Just(b"\r".to_vec()), Just(b"\r\n".to_vec()),
                    proptest::collection::vec(any::<u8>(), 0..8),
                ],
                0..24,
            ),
            cut in any::<prop::sample::Index>(),
        ) {
            let stream = stream.concat();
            let cut = if stream.is_empty() { 0 } else { cut.index(stream.len() + 1) };
            let whole = watch(&[&stream]);
            let split = watch(&[&stream[..cut], &stream[cut..]]);
            prop_assert_eq!(facts(&whole), facts(&split));
            // Byte by byte too.
            let mut w = SseWatch::default();
            for b in &stream {
                w.feed(std::slice::from_ref(b));
            }
            prop_assert_eq!(facts(&whole), facts(&w));
        }
    }
}
