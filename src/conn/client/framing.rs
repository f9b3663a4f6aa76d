//! How a response's body is delimited for a client, and what follows it.

use crate::http::request::Request;

/// How a streamed body is delimited for this client. It also fixes what follows the body, so the two can
/// never disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFraming {
    /// HTTP/1.1: chunked. Only the last (zero-size) chunk marks the body complete; then `AfterReply`.
    Chunked(AfterReply),
    /// HTTP/1.0 clients cannot read chunked bodies (RFC 9112 §6.1): the payload goes as it is and closing
    /// the connection ends it. A failure mid-way can then only be told in-band, by the SSE error event.
    UntilClose,
}

impl StreamFraming {
    /// The framing a request of HTTP/1.`version` gets, `then` being what its client asked for afterwards.
    pub fn for_request(version: u8, then: AfterReply) -> Self {
        if version == 0 {
            StreamFraming::UntilClose
        } else {
            StreamFraming::Chunked(then)
        }
    }

    /// What follows the body.
    pub fn after(self) -> AfterReply {
        match self {
            StreamFraming::Chunked(then) => then,
            StreamFraming::UntilClose => AfterReply::Close,
        }
    }
}

/// What happens when a response has been written out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterReply {
    KeepAlive,
    Close,
}

impl AfterReply {
    /// What a request asked for.
    pub fn of(req: &Request) -> AfterReply {
        if req.keep_alive {
            AfterReply::KeepAlive
        } else {
            AfterReply::Close
        }
    }
}
