//! A minimal blocking HTTP/1.1 connection (client side, and the server side of fake upstreams), and a
//! non-blocking response parser for many sockets driven by `mio`.

use super::*;

/// A parsed message head: the status line (or request line) and the header fields.
#[derive(Debug, Clone)]
pub struct Head {
    /// The start line, e.g. `HTTP/1.1 200 OK` or `POST /v1/chat/completions HTTP/1.1`.
    pub start_line: String,
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// First value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The status code of a response head (panics on a request head).
    pub fn status(&self) -> u16 {
        let mut parts = self.start_line.split(' ');
        let version = parts.next().unwrap_or("");
        assert!(
            version.starts_with("HTTP/1."),
            "not a status line: {:?}",
            self.start_line
        );
        parts
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {:?}", self.start_line))
    }

    /// `HTTP/1.1` or `HTTP/1.0` of a response head.
    pub fn version(&self) -> &str {
        self.start_line.split(' ').next().unwrap_or("")
    }

    /// (method, target) of a request head.
    pub fn method_and_target(&self) -> (&str, &str) {
        let mut parts = self.start_line.split(' ');
        (parts.next().unwrap_or(""), parts.next().unwrap_or(""))
    }

    /// True if the final transfer coding is `chunked`.
    pub fn is_chunked(&self) -> bool {
        self.header("transfer-encoding").is_some_and(|v| {
            v.rsplit(',')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("chunked")
        })
    }

    pub fn content_length(&self) -> Option<usize> {
        self.header("content-length")
            .map(|v| v.trim().parse().expect("numeric Content-Length"))
    }

    /// True if a `Connection` header lists `close`.
    pub fn says_close(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
    }

    fn parse(raw: &[u8]) -> io::Result<Head> {
        let text = std::str::from_utf8(raw).map_err(|_| invalid("head is not UTF-8"))?;
        let mut lines = text.split("\r\n");
        let start_line = lines.next().unwrap_or("").to_string();
        let mut headers = Vec::new();
        for line in lines.filter(|l| !l.is_empty()) {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| invalid(&format!("bad header line {line:?}")))?;
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
        Ok(Head {
            start_line,
            headers,
        })
    }
}

/// One step of reading a chunked body.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunk {
    /// A data chunk's payload.
    Data(Vec<u8>),
    /// The final `0` chunk and its trailer fields: the body is complete.
    Last(Vec<(String, String)>),
    /// The connection ended (EOF or reset) before the final chunk.
    Eof,
}

/// A chunked body read to its end (or to the connection's end).
#[derive(Debug, Default)]
pub struct ChunkedBody {
    /// The concatenated chunk payloads.
    pub payload: Vec<u8>,
    /// Arrival time and size of every data chunk, in order.
    pub chunks: Vec<(Instant, usize)>,
    /// True if the final `0\r\n\r\n` chunk arrived.
    pub complete: bool,
}

/// A whole response: head and body.
#[derive(Debug)]
pub struct Response {
    pub head: Head,
    pub body: Vec<u8>,
    /// False only for a chunked body that ended without its final chunk, or a Content-Length body cut short.
    pub complete: bool,
}

impl Response {
    pub fn status(&self) -> u16 {
        self.head.status()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}\nhead: {:?}",
                self.text(),
                self.head
            )
        })
    }
}

/// A request read by a fake upstream.
#[derive(Debug)]
pub struct Request {
    pub head: Head,
    pub body: Vec<u8>,
}

impl Request {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "request body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A buffered, blocking HTTP/1.1 connection. Every read is bounded by the socket's read timeout; a timeout is
/// returned as an `io::Error` of kind `TimedOut`.
pub struct Conn {
    pub stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    /// True once a read returned EOF or a reset.
    pub eof: bool,
    /// True if the connection ended with a reset rather than a FIN.
    pub reset: bool,
}

impl Conn {
    /// Connects to `addr` with `TCP_NODELAY` and the default read timeout.
    pub fn connect(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        Conn::new(stream)
    }

    pub fn new(stream: TcpStream) -> Conn {
        stream.set_nodelay(true).expect("nodelay");
        stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .expect("read timeout");
        stream
            .set_write_timeout(Some(IO_TIMEOUT))
            .expect("write timeout");
        Conn {
            stream,
            buf: Vec::with_capacity(64 * 1024),
            start: 0,
            eof: false,
            reset: false,
        }
    }

    pub fn set_read_timeout(&mut self, timeout: Duration) {
        self.stream
            .set_read_timeout(Some(timeout))
            .expect("read timeout");
    }

    /// Writes all of `bytes` in one `write_all`.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("send: {e}"));
    }

    /// Bytes received but not consumed yet.
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Reads more bytes into the buffer. `Ok(0)` means EOF (or reset, which sets `self.reset`).
    pub fn fill(&mut self) -> io::Result<usize> {
        if self.eof {
            return Ok(0);
        }
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let mut tmp = [0u8; 64 * 1024];
        loop {
            match self.stream.read(&mut tmp) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(0);
                }
                Ok(n) => {
                    self.buf.extend_from_slice(&tmp[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    self.eof = true;
                    self.reset = true;
                    return Ok(0);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "read timed out"));
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn consume(&mut self, n: usize) -> Vec<u8> {
        let out = self.buf[self.start..self.start + n].to_vec();
        self.start += n;
        out
    }

    /// Reads up to and including the next CRLF; returns the line without it, or `None` at EOF.
    fn read_line(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(i) = find(self.buffered(), b"\r\n") {
                let line = self.consume(i + 2);
                return Ok(Some(line[..i].to_vec()));
            }
            if self.buffered().len() > 64 * 1024 {
                return Err(invalid("line longer than 64 KiB"));
            }
            if self.fill()? == 0 {
                return Ok(None);
            }
        }
    }

    /// Reads a message head (up to the blank line). `Ok(None)` on EOF before any byte.
    pub fn read_head(&mut self) -> io::Result<Option<Head>> {
        loop {
            if let Some(i) = find(self.buffered(), b"\r\n\r\n") {
                let raw = self.consume(i + 4);
                return Head::parse(&raw[..i]).map(Some);
            }
            if self.buffered().len() > 1024 * 1024 {
                return Err(invalid("head longer than 1 MiB"));
            }
            if self.fill()? == 0 {
                return if self.buffered().is_empty() {
                    Ok(None)
                } else {
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "EOF inside a head",
                    ))
                };
            }
        }
    }

    /// Reads a response head; panics with `what` on timeout, EOF or garbage.
    pub fn expect_head(&mut self, what: &str) -> Head {
        match self.read_head() {
            Ok(Some(head)) => head,
            Ok(None) => panic!(
                "{what}: connection closed before a response head (reset: {})",
                self.reset
            ),
            Err(e) => panic!(
                "{what}: no response head: {e}; received so far: {:?}",
                self.buffered_text()
            ),
        }
    }

    pub fn buffered_text(&self) -> String {
        String::from_utf8_lossy(self.buffered()).into_owned()
    }

    /// Reads one step of a chunked body.
    pub fn read_chunk(&mut self) -> io::Result<Chunk> {
        let Some(line) = self.read_line()? else {
            return Ok(Chunk::Eof);
        };
        let line = String::from_utf8(line).map_err(|_| invalid("chunk-size line is not UTF-8"))?;
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| invalid(&format!("bad chunk-size line {line:?}")))?;
        if size == 0 {
            let mut trailers = Vec::new();
            loop {
                let Some(t) = self.read_line()? else {
                    return Ok(Chunk::Eof);
                };
                if t.is_empty() {
                    return Ok(Chunk::Last(trailers));
                }
                let t = String::from_utf8_lossy(&t).into_owned();
                let (n, v) = t
                    .split_once(':')
                    .ok_or_else(|| invalid(&format!("bad trailer {t:?}")))?;
                trailers.push((n.trim().to_string(), v.trim().to_string()));
            }
        }
        while self.buffered().len() < size + 2 {
            if self.fill()? == 0 {
                return Ok(Chunk::Eof);
            }
        }
        if &self.buffered()[size..size + 2] != b"\r\n" {
            return Err(invalid("chunk data not followed by CRLF"));
        }
        let data = self.consume(size);
        self.start += 2;
        Ok(Chunk::Data(data))
    }

    /// Reads a chunked body to its final chunk or to the connection's end.
    pub fn read_chunked_body(&mut self) -> io::Result<ChunkedBody> {
        let mut body = ChunkedBody::default();
        loop {
            match self.read_chunk()? {
                Chunk::Data(d) => {
                    body.chunks.push((Instant::now(), d.len()));
                    body.payload.extend_from_slice(&d);
                }
                Chunk::Last(_) => {
                    body.complete = true;
                    return Ok(body);
                }
                Chunk::Eof => return Ok(body),
            }
        }
    }

    /// Reads exactly `n` body bytes; returns what arrived and whether it was all of it.
    pub fn read_exact_body(&mut self, n: usize) -> io::Result<(Vec<u8>, bool)> {
        while self.buffered().len() < n {
            if self.fill()? == 0 {
                let got = self.buffered().len();
                return Ok((self.consume(got), false));
            }
        }
        Ok((self.consume(n), true))
    }

    /// Reads until the connection ends.
    pub fn read_to_eof(&mut self) -> io::Result<Vec<u8>> {
        while self.fill()? > 0 {}
        let got = self.buffered().len();
        Ok(self.consume(got))
    }

    /// Reads the body that `head` announces (chunked, Content-Length, none for 1xx/204/304, else to EOF).
    pub fn read_body(&mut self, head: &Head) -> io::Result<(Vec<u8>, bool)> {
        if head.is_chunked() {
            let body = self.read_chunked_body()?;
            Ok((body.payload, body.complete))
        } else if let Some(n) = head.content_length() {
            self.read_exact_body(n)
        } else if head.start_line.starts_with("HTTP/")
            && matches!(head.status(), 100..=199 | 204 | 304)
        {
            Ok((Vec::new(), true))
        } else if head.start_line.starts_with("HTTP/") {
            Ok((self.read_to_eof()?, true))
        } else {
            Ok((Vec::new(), true)) // a request without a body
        }
    }

    /// Reads one whole response; panics with `what` on failure.
    pub fn read_response(&mut self, what: &str) -> Response {
        let head = self.expect_head(what);
        match self.read_body(&head) {
            Ok((body, complete)) => Response {
                head,
                body,
                complete,
            },
            Err(e) => panic!("{what}: reading body after {head:?}: {e}"),
        }
    }

    /// Reads one request (fake-upstream side). `Ok(None)` when the peer closed between requests.
    pub fn read_request(&mut self) -> io::Result<Option<Request>> {
        let Some(head) = self.read_head()? else {
            return Ok(None);
        };
        let (body, complete) = self.read_body(&head)?;
        if !complete {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "request body cut short",
            ));
        }
        Ok(Some(Request { head, body }))
    }

    /// Waits up to `within` for the peer to close the connection. Returns `Ok(())` on EOF or reset, `Err`
    /// describing what happened instead (data arrived, or the connection stayed open).
    pub fn wait_closed(&mut self, within: Duration) -> Result<(), String> {
        if !self.buffered().is_empty() {
            return Err(format!(
                "unexpected bytes after the response: {:?}",
                self.buffered_text()
            ));
        }
        self.set_read_timeout(within);
        let result = match self.fill() {
            Ok(0) => Ok(()),
            Ok(_) => Err(format!(
                "unexpected bytes after the response: {:?}",
                self.buffered_text()
            )),
            Err(e) => Err(format!("connection still open after {within:?} ({e})")),
        };
        self.set_read_timeout(IO_TIMEOUT);
        result
    }
}

/// Result of parsing a buffer that should hold one response with a chunked body.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// More bytes are needed.
    Incomplete,
    /// The whole response: status, decoded payload, bytes consumed.
    Complete {
        status: u16,
        payload: Vec<u8>,
        consumed: usize,
    },
    /// The bytes cannot be a valid response.
    Invalid(String),
}

/// Parses one response whose body is chunked (or has a Content-Length) from the start of `buf`.
pub fn parse_response(buf: &[u8]) -> Parsed {
    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        return Parsed::Incomplete;
    };
    let head = match Head::parse(&buf[..head_end]) {
        Ok(h) => h,
        Err(e) => return Parsed::Invalid(e.to_string()),
    };
    let status = head.status();
    let mut pos = head_end + 4;
    if let Some(n) = head
        .header("content-length")
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        if buf.len() < pos + n {
            return Parsed::Incomplete;
        }
        return Parsed::Complete {
            status,
            payload: buf[pos..pos + n].to_vec(),
            consumed: pos + n,
        };
    }
    if !head.is_chunked() {
        return Parsed::Invalid(format!("neither chunked nor Content-Length: {head:?}"));
    }
    let mut payload = Vec::new();
    loop {
        let Some(eol) = find(&buf[pos..], b"\r\n") else {
            return Parsed::Incomplete;
        };
        let line = String::from_utf8_lossy(&buf[pos..pos + eol]).into_owned();
        let Ok(size) = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
        else {
            return Parsed::Invalid(format!("bad chunk-size line {line:?}"));
        };
        pos += eol + 2;
        if size == 0 {
            // Trailer section: lines until an empty one.
            loop {
                let Some(eol) = find(&buf[pos..], b"\r\n") else {
                    return Parsed::Incomplete;
                };
                pos += eol + 2;
                if eol == 0 {
                    return Parsed::Complete {
                        status,
                        payload,
                        consumed: pos,
                    };
                }
            }
        }
        if buf.len() < pos + size + 2 {
            return Parsed::Incomplete;
        }
        payload.extend_from_slice(&buf[pos..pos + size]);
        if &buf[pos + size..pos + size + 2] != b"\r\n" {
            return Parsed::Invalid("chunk data not followed by CRLF".into());
        }
        pos += size + 2;
    }
}
