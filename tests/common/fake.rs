//! Fake upstreams written in the tests: servers with hostile framing and timing that the mock cannot produce.

use super::*;

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
                let Ok((stream, _)) = listener.accept() else {
                    return;
                };
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
pub fn write_fragmented(
    stream: &mut TcpStream,
    bytes: &[u8],
    seed: u64,
    pause: Duration,
) -> io::Result<()> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut rest = bytes;
    while !rest.is_empty() {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
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
pub const SSE_CHUNKED_HEAD: &str = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n";

/// A complete chunked SSE response: the head every fake upstream uses, then `payload` in chunks of at most
/// `chunk` bytes and the last chunk.
pub fn sse_chunked_response(payload: &[u8], chunk: usize) -> Vec<u8> {
    [SSE_CHUNKED_HEAD.as_bytes(), &chunked(payload, chunk)].concat()
}

/// Waits (at most 10 s) for the test's go-ahead on a channel a fake upstream shares with it; false if it
/// never came (the fake then gives up).
pub fn go_ahead(rx: &std::sync::Mutex<mpsc::Receiver<()>>) -> bool {
    rx.lock()
        .map(|rx| rx.recv_timeout(Duration::from_secs(10)).is_ok())
        .unwrap_or(false)
}
