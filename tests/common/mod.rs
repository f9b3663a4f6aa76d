//! Shared helpers for the loopback integration tests.
//!
//! Everything here talks to the real `tokenpipe` binary over real sockets on `127.0.0.1`, with ephemeral
//! ports. The rules every test follows:
//!
//! - Synchronize on events (a line printed, bytes received, a socket EOF), never on sleeps. The only sleeps
//!   are the tiny pauses a fake upstream makes between writes so that the relay sees split reads.
//! - Bound every wait: socket reads have timeouts, channel receives have deadlines, fake servers accept a
//!   bounded number of connections.
//! - Child processes are owned by a [`Proc`] guard that kills and reaps them on drop, also when a test panics.
#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_tokenpipe");

/// How long a child gets to print its `listening on` line.
pub const STARTUP_DEADLINE: Duration = Duration::from_secs(15);

/// Default read timeout of every test socket: no single read may block longer than this.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// The model name the tests pass both to the relay and in direct requests to the mock.
pub const MODEL: &str = "test-model";

// ---------------------------------------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------------------------------------

/// A running `tokenpipe` child process. Dropping it kills and reaps the process.
pub struct Proc {
    child: Child,
    /// The address from the `listening on http://ADDR` line.
    pub addr: SocketAddr,
    /// The arguments, for failure messages.
    pub args: Vec<String>,
}

impl Proc {
    /// Spawns `tokenpipe ARGS`, with API keys removed from the environment and `RUST_LOG=warn`, and waits (with
    /// a deadline) until it prints `listening on http://ADDR` on stdout.
    ///
    /// The child's stderr is inherited so that its warnings show up next to a failing test; set
    /// `TOKENPIPE_TEST_STDERR=null` to silence it.
    pub fn spawn(args: &[&str]) -> Proc {
        let stderr = match std::env::var("TOKENPIPE_TEST_STDERR").as_deref() {
            Ok("null") => Stdio::null(),
            _ => Stdio::inherit(),
        };
        let mut command = Command::new(BIN);
        // The binary reads `TOKENPIPE_*` settings from the environment: the tests' arguments must be all it sees.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("TOKENPIPE_") {
                command.env_remove(key);
            }
        }
        let mut child = command
            .args(args)
            .env_remove("OPENAI_API_KEY")
            .env_remove("GEMINI_API_KEY")
            .env("RUST_LOG", std::env::var("TOKENPIPE_TEST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {BIN} {args:?}: {e}"));
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();

        // A thread reads stdout line by line: it reports the `listening on` line (or EOF) through a channel and
        // then keeps draining stdout so that the child never blocks on a full pipe.
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel::<Result<String, String>>();
        thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let mut reported = false;
            let mut seen = Vec::new();
            loop {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if !reported && line.trim_start().starts_with("listening on ") {
                            reported = true;
                            let _ = tx.send(Ok(line.trim().to_string()));
                        } else if !reported {
                            seen.push(line.trim_end().to_string());
                        }
                    }
                }
            }
            if !reported {
                let _ = tx.send(Err(format!("stdout closed before `listening on`; stdout was {seen:?}")));
            }
        });

        let line = match rx.recv_timeout(STARTUP_DEADLINE) {
            Ok(Ok(line)) => line,
            Ok(Err(why)) => {
                let status = child.wait().ok();
                panic!("{BIN} {args:?} did not start: {why}; exit status {status:?}");
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{BIN} {args:?} printed no `listening on` line within {STARTUP_DEADLINE:?}");
            }
        };
        let addr_text = line
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected startup line {line:?}"));
        let addr: SocketAddr = match addr_text.trim_end_matches('/').parse() {
            Ok(addr) => addr,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("cannot parse address in {line:?}: {e}");
            }
        };
        Proc { child, addr, args }
    }

    /// `http://ADDR`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Panics if the process has exited (crashed) on its own.
    pub fn assert_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{BIN} {:?} exited unexpectedly: {status}", self.args);
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tokenpipe mock-upstream --listen 127.0.0.1:0 ARGS` (pass `--tokens`, `--interval-ms`, `--format`...).
pub fn spawn_mock(args: &[&str]) -> Proc {
    let mut all = vec!["mock-upstream", "--listen", "127.0.0.1:0"];
    all.extend_from_slice(args);
    Proc::spawn(&all)
}

/// `tokenpipe serve --listen 127.0.0.1:0 --workers 1 --upstream URL --provider P EXTRA`.
pub fn spawn_relay(upstream_url: &str, provider: &str, extra: &[&str]) -> Proc {
    let mut all = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "1",
        "--upstream",
        upstream_url,
        "--provider",
        provider,
    ];
    all.extend_from_slice(extra);
    Proc::spawn(&all)
}

/// An address on which nothing listens: bound to an ephemeral port, then closed.
pub fn closed_port_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local_addr");
    drop(listener);
    addr
}

/// Raises this test process's soft `RLIMIT_NOFILE` to at least `want` (up to the hard limit) and returns the
/// resulting soft limit.
pub fn raise_nofile(want: u64) -> u64 {
    rlimit::increase_nofile_limit(want).expect("increase RLIMIT_NOFILE")
}

/// Resident set size of a process, from `/proc/PID/status`, in KiB.
pub fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line")
}

// ---------------------------------------------------------------------------------------------------------
// A minimal blocking HTTP/1.1 connection (client side, and the server side of fake upstreams)
// ---------------------------------------------------------------------------------------------------------

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
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The status code of a response head (panics on a request head).
    pub fn status(&self) -> u16 {
        let mut parts = self.start_line.split(' ');
        let version = parts.next().unwrap_or("");
        assert!(version.starts_with("HTTP/1."), "not a status line: {:?}", self.start_line);
        parts.next().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("bad status line {:?}", self.start_line))
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
        self.header("transfer-encoding")
            .is_some_and(|v| v.rsplit(',').next().unwrap_or("").trim().eq_ignore_ascii_case("chunked"))
    }

    pub fn content_length(&self) -> Option<usize> {
        self.header("content-length").map(|v| v.trim().parse().expect("numeric Content-Length"))
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
            let (name, value) = line.split_once(':').ok_or_else(|| invalid(&format!("bad header line {line:?}")))?;
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
        Ok(Head { start_line, headers })
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
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}\nhead: {:?}", self.text(), self.head))
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
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("request body is not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
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
        stream.set_read_timeout(Some(IO_TIMEOUT)).expect("read timeout");
        stream.set_write_timeout(Some(IO_TIMEOUT)).expect("write timeout");
        Conn { stream, buf: Vec::with_capacity(64 * 1024), start: 0, eof: false, reset: false }
    }

    pub fn set_read_timeout(&mut self, timeout: Duration) {
        self.stream.set_read_timeout(Some(timeout)).expect("read timeout");
    }

    /// Writes all of `bytes` in one `write_all`.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap_or_else(|e| panic!("send: {e}"));
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
                Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted) => {
                    self.eof = true;
                    self.reset = true;
                    return Ok(0);
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
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
                    Err(io::Error::new(io::ErrorKind::UnexpectedEof, "EOF inside a head"))
                };
            }
        }
    }

    /// Reads a response head; panics with `what` on timeout, EOF or garbage.
    pub fn expect_head(&mut self, what: &str) -> Head {
        match self.read_head() {
            Ok(Some(head)) => head,
            Ok(None) => panic!("{what}: connection closed before a response head (reset: {})", self.reset),
            Err(e) => panic!("{what}: no response head: {e}; received so far: {:?}", self.buffered_text()),
        }
    }

    pub fn buffered_text(&self) -> String {
        String::from_utf8_lossy(self.buffered()).into_owned()
    }

    /// Reads one step of a chunked body.
    pub fn read_chunk(&mut self) -> io::Result<Chunk> {
        let Some(line) = self.read_line()? else { return Ok(Chunk::Eof) };
        let line = String::from_utf8(line).map_err(|_| invalid("chunk-size line is not UTF-8"))?;
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| invalid(&format!("bad chunk-size line {line:?}")))?;
        if size == 0 {
            let mut trailers = Vec::new();
            loop {
                let Some(t) = self.read_line()? else { return Ok(Chunk::Eof) };
                if t.is_empty() {
                    return Ok(Chunk::Last(trailers));
                }
                let t = String::from_utf8_lossy(&t).into_owned();
                let (n, v) = t.split_once(':').ok_or_else(|| invalid(&format!("bad trailer {t:?}")))?;
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
        } else if head.start_line.starts_with("HTTP/") && matches!(head.status(), 100..=199 | 204 | 304) {
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
            Ok((body, complete)) => Response { head, body, complete },
            Err(e) => panic!("{what}: reading body after {head:?}: {e}"),
        }
    }

    /// Reads one request (fake-upstream side). `Ok(None)` when the peer closed between requests.
    pub fn read_request(&mut self) -> io::Result<Option<Request>> {
        let Some(head) = self.read_head()? else { return Ok(None) };
        let (body, complete) = self.read_body(&head)?;
        if !complete {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "request body cut short"));
        }
        Ok(Some(Request { head, body }))
    }

    /// Waits up to `within` for the peer to close the connection. Returns `Ok(())` on EOF or reset, `Err`
    /// describing what happened instead (data arrived, or the connection stayed open).
    pub fn wait_closed(&mut self, within: Duration) -> Result<(), String> {
        if !self.buffered().is_empty() {
            return Err(format!("unexpected bytes after the response: {:?}", self.buffered_text()));
        }
        self.set_read_timeout(within);
        let result = match self.fill() {
            Ok(0) => Ok(()),
            Ok(_) => Err(format!("unexpected bytes after the response: {:?}", self.buffered_text())),
            Err(e) => Err(format!("connection still open after {within:?} ({e})")),
        };
        self.set_read_timeout(IO_TIMEOUT);
        result
    }
}

// ---------------------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------------------

/// A relay request body: `{"prompt": P, "model"?: M, "max_tokens"?: N}`.
pub fn prompt_body(prompt: &str, model: Option<&str>, max_tokens: Option<u64>) -> String {
    let mut v = serde_json::json!({ "prompt": prompt });
    if let Some(m) = model {
        v["model"] = m.into();
    }
    if let Some(n) = max_tokens {
        v["max_tokens"] = n.into();
    }
    v.to_string()
}

/// `POST PATH HTTP/1.1` with a JSON body and Content-Length.
pub fn post_json(path: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// `POST /api/v1/generate-stream` with `body`.
pub fn stream_request(body: &str) -> Vec<u8> {
    post_json("/api/v1/generate-stream", body)
}

/// `GET PATH HTTP/1.1`.
pub fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").into_bytes()
}

/// Sends `raw` on a fresh connection and reads one response.
pub fn fetch(addr: SocketAddr, raw: &[u8]) -> Response {
    let mut c = Conn::connect(addr);
    c.send(raw);
    c.read_response(&format!("request {:?}", String::from_utf8_lossy(&raw[..raw.len().min(80)])))
}

/// Streams one prompt through the relay on a fresh connection; asserts a complete `200` SSE stream and returns
/// its payload.
pub fn relay_stream(relay: SocketAddr, body: &str) -> Vec<u8> {
    let mut c = Conn::connect(relay);
    c.send(&stream_request(body));
    let head = c.expect_head("relay stream");
    assert_stream_head(&head);
    let body = c.read_chunked_body().expect("read relayed body");
    assert!(body.complete, "relayed stream ended without its final chunk; payload {:?}", lossy(&body.payload));
    body.payload
}

/// Asserts the response head of a relayed stream: 200, SSE content type, no caching, no proxy buffering, chunked.
pub fn assert_stream_head(head: &Head) {
    assert_eq!(head.status(), 200, "stream head: {head:?}");
    let ct = head.header("content-type").unwrap_or("");
    assert!(ct.starts_with("text/event-stream"), "Content-Type {ct:?} in {head:?}");
    assert_eq!(head.header("cache-control"), Some("no-cache"), "Cache-Control in {head:?}");
    assert_eq!(head.header("x-accel-buffering"), Some("no"), "X-Accel-Buffering in {head:?}");
    assert!(head.is_chunked(), "not chunked: {head:?}");
}

/// Asserts a JSON error response: the status and a body `{"error":{"code":"...","message":"..."}}`.
pub fn assert_json_error(resp: &Response, status: u16, what: &str) {
    assert_eq!(resp.status(), status, "{what}: head {:?}, body {:?}", resp.head, resp.text());
    let v = resp.json();
    let code = v["error"]["code"].as_str();
    let message = v["error"]["message"].as_str();
    assert!(code.is_some_and(|c| !c.is_empty()), "{what}: error.code missing in {v}");
    assert!(message.is_some(), "{what}: error.message missing in {v}");
}

/// Asserts that `GET /healthz` on a fresh connection answers 200.
pub fn assert_healthy(relay: SocketAddr, after: &str) {
    let resp = fetch(relay, &get("/healthz"));
    assert_eq!(resp.status(), 200, "GET /healthz after {after}: {:?} {:?}", resp.head, resp.text());
}

pub fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

// ---------------------------------------------------------------------------------------------------------
// The mock upstream, asked directly
// ---------------------------------------------------------------------------------------------------------

/// `GET /stats` on the mock upstream.
pub fn mock_stats(mock: SocketAddr) -> serde_json::Value {
    let resp = fetch(mock, &get("/stats"));
    assert_eq!(resp.status(), 200, "mock /stats: {:?}", resp.head);
    resp.json()
}

/// Reads a counter from a `/stats` document.
pub fn stat(stats: &serde_json::Value, name: &str) -> u64 {
    stats[name].as_u64().unwrap_or_else(|| panic!("mock /stats has no numeric {name:?}: {stats}"))
}

/// The request an upstream of `format` receives for `prompt`, as the relay would send it.
pub fn upstream_request(format: &str, model: &str, prompt: &str, max_tokens: u64) -> Vec<u8> {
    match format {
        "openai" => {
            let body = serde_json::json!({
                "model": model,
                "messages": [{ "role": "user", "content": prompt }],
                "stream": true,
                "max_tokens": max_tokens,
            });
            post_json("/v1/chat/completions", &body.to_string())
        }
        "gemini" => {
            let body = serde_json::json!({
                "contents": [{ "role": "user", "parts": [{ "text": prompt }] }],
                "generationConfig": { "maxOutputTokens": max_tokens },
            });
            post_json(&format!("/v1beta/models/{model}:streamGenerateContent?alt=sse"), &body.to_string())
        }
        other => panic!("unknown format {other}"),
    }
}

/// The SSE payload the mock sends for `prompt` when asked directly (chunked framing removed).
pub fn direct_mock_payload(mock: SocketAddr, format: &str, model: &str, prompt: &str, max_tokens: u64) -> Vec<u8> {
    let mut c = Conn::connect(mock);
    c.send(&upstream_request(format, model, prompt, max_tokens));
    let head = c.expect_head("direct mock request");
    assert_eq!(head.status(), 200, "direct mock request: {head:?}");
    assert!(head.is_chunked(), "mock answered without chunked encoding: {head:?}");
    let body = c.read_chunked_body().expect("read mock body");
    assert!(body.complete, "mock body ended without its final chunk");
    body.payload
}

// ---------------------------------------------------------------------------------------------------------
// SSE
// ---------------------------------------------------------------------------------------------------------

/// Splits an SSE payload into events (each event's lines joined by `\n`, line endings normalized).
pub fn sse_events(payload: &[u8]) -> Vec<String> {
    let text = lossy(payload).replace("\r\n", "\n").replace('\r', "\n");
    text.split("\n\n").filter(|e| !e.trim().is_empty()).map(|e| e.to_string()).collect()
}

/// The `data:` value of every event that has one (multi-line data joined by `\n`).
pub fn sse_data(payload: &[u8]) -> Vec<String> {
    sse_events(payload)
        .iter()
        .filter_map(|e| {
            let data: Vec<&str> = e
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            (!data.is_empty()).then(|| data.join("\n"))
        })
        .collect()
}

/// The generated text of every token event, for either provider's event shape: OpenAI
/// `choices[0].delta.content`, Gemini `candidates[0].content.parts[].text`. Closing events without text
/// (`finish_reason`, `[DONE]`) are not tokens.
pub fn token_texts(payload: &[u8]) -> Vec<String> {
    sse_data(payload)
        .iter()
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter_map(|v| {
            if let Some(c) = v["choices"][0]["delta"]["content"].as_str() {
                return (!c.is_empty()).then(|| c.to_string());
            }
            let parts = v["candidates"][0]["content"]["parts"].as_array()?;
            let text: String = parts.iter().filter_map(|p| p["text"].as_str()).collect();
            (!text.is_empty()).then_some(text)
        })
        .collect()
}

/// A deterministic OpenAI-shaped SSE payload of `events` token events plus `data: [DONE]`; event sizes vary.
pub fn fake_sse_payload(events: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..events {
        let text = "tok".repeat(1 + (i * 7) % 13);
        let ev = serde_json::json!({
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "choices": [{ "index": 0, "delta": { "content": format!("{text}{i} ") } }],
        });
        out.extend_from_slice(format!("data: {ev}\n\n").as_bytes());
    }
    out.extend_from_slice(b"data: [DONE]\n\n");
    out
}

// ---------------------------------------------------------------------------------------------------------
// Fake upstreams written in the tests
// ---------------------------------------------------------------------------------------------------------

/// A fake upstream server on `127.0.0.1:0`: accepts at most `max_conns` connections, each handled on its own
/// thread by `handler(connection_index, conn)`. Threads end on their own (every read has a timeout).
pub struct FakeUpstream {
    pub addr: SocketAddr,
}

impl FakeUpstream {
    pub fn start<F>(max_conns: usize, handler: F) -> FakeUpstream
    where
        F: Fn(usize, Conn) + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake upstream");
        let addr = listener.local_addr().expect("local_addr");
        let handler = Arc::new(handler);
        thread::spawn(move || {
            for i in 0..max_conns {
                let Ok((stream, _)) = listener.accept() else { return };
                let handler = Arc::clone(&handler);
                thread::spawn(move || handler(i, Conn::new(stream)));
            }
        });
        FakeUpstream { addr }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Encodes `payload` as a chunked body with odd chunk sizes, size lines in varied hex spellings (lower, upper,
/// leading zeros), chunk extensions (token and quoted-string values) and a trailer section.
pub fn odd_chunked(payload: &[u8]) -> Vec<u8> {
    const SIZES: [usize; 13] = [1, 2, 3, 5, 7, 11, 13, 31, 64, 127, 255, 1, 600];
    let mut out = Vec::new();
    let mut rest = payload;
    let mut i = 0;
    while !rest.is_empty() {
        let n = SIZES[i % SIZES.len()].min(rest.len());
        let size = match i % 3 {
            0 => format!("{n:x}"),
            1 => format!("{n:X}"),
            _ => format!("{n:04x}"),
        };
        let ext = match i % 4 {
            1 => ";ext=1",
            3 => ";name=\"quoted; value\"",
            _ => "",
        };
        out.extend_from_slice(format!("{size}{ext}\r\n").as_bytes());
        out.extend_from_slice(&rest[..n]);
        out.extend_from_slice(b"\r\n");
        rest = &rest[n..];
        i += 1;
    }
    out.extend_from_slice(b"0;final=yes\r\nX-Trailer-One: 1\r\nX-Trailer-Two: two\r\n\r\n");
    out
}

/// Plain chunked encoding with fixed-size chunks and the final chunk.
pub fn chunked(payload: &[u8], chunk_size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for c in payload.chunks(chunk_size) {
        out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        out.extend_from_slice(c);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// Writes `bytes` in fragments of 1..=7 bytes (sizes from a fixed pseudo-random sequence seeded by `seed`),
/// pausing `pause` between writes so that the reader sees many split reads.
pub fn write_fragmented(stream: &mut TcpStream, bytes: &[u8], seed: u64, pause: Duration) -> io::Result<()> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut rest = bytes;
    while !rest.is_empty() {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let n = (1 + (state >> 33) % 7) as usize;
        let n = n.min(rest.len());
        stream.write_all(&rest[..n])?;
        rest = &rest[n..];
        if !pause.is_zero() {
            thread::sleep(pause);
        }
    }
    Ok(())
}

/// The head of a fake upstream's chunked SSE response.
pub const SSE_CHUNKED_HEAD: &str =
    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n";

// ---------------------------------------------------------------------------------------------------------
// A non-blocking response parser (for many sockets driven by mio)
// ---------------------------------------------------------------------------------------------------------

/// Result of parsing a buffer that should hold one response with a chunked body.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// More bytes are needed.
    Incomplete,
    /// The whole response: status, decoded payload, bytes consumed.
    Complete { status: u16, payload: Vec<u8>, consumed: usize },
    /// The bytes cannot be a valid response.
    Invalid(String),
}

/// Parses one response whose body is chunked (or has a Content-Length) from the start of `buf`.
pub fn parse_response(buf: &[u8]) -> Parsed {
    let Some(head_end) = find(buf, b"\r\n\r\n") else { return Parsed::Incomplete };
    let head = match Head::parse(&buf[..head_end]) {
        Ok(h) => h,
        Err(e) => return Parsed::Invalid(e.to_string()),
    };
    let status = head.status();
    let mut pos = head_end + 4;
    if let Some(n) = head.header("content-length").and_then(|v| v.trim().parse::<usize>().ok()) {
        if buf.len() < pos + n {
            return Parsed::Incomplete;
        }
        return Parsed::Complete { status, payload: buf[pos..pos + n].to_vec(), consumed: pos + n };
    }
    if !head.is_chunked() {
        return Parsed::Invalid(format!("neither chunked nor Content-Length: {head:?}"));
    }
    let mut payload = Vec::new();
    loop {
        let Some(eol) = find(&buf[pos..], b"\r\n") else { return Parsed::Incomplete };
        let line = String::from_utf8_lossy(&buf[pos..pos + eol]).into_owned();
        let Ok(size) = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16) else {
            return Parsed::Invalid(format!("bad chunk-size line {line:?}"));
        };
        pos += eol + 2;
        if size == 0 {
            // Trailer section: lines until an empty one.
            loop {
                let Some(eol) = find(&buf[pos..], b"\r\n") else { return Parsed::Incomplete };
                pos += eol + 2;
                if eol == 0 {
                    return Parsed::Complete { status, payload, consumed: pos };
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
