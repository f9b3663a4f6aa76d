//! floor-relay: the floor of the benchmark, a relay loop that does nothing but what the kernel must.
//!
//! For each upstream read it does one `read` and one `write` (plus its share of an `epoll_wait`), so its
//! CPU time per relayed chunk is close to what moving the bytes through two sockets costs in the
//! kernel. The benchmark quotes every relay's CPU per chunk as a ratio to this one.
//!
//! One thread, one `mio::Poll`, edge-triggered. For each client connection:
//!
//! 1. read the client's first request: its head up to `\r\n\r\n`, then `Content-Length` bytes of body;
//! 2. open one upstream connection for this client (non-blocking connect) and write that request to it
//!    *verbatim*;
//! 3. from then on copy bytes both ways as they come, `read` -> `write`, until either side closes.
//!
//! It is a floor, not a product. Its shortcuts, each on purpose:
//!
//! - **No translation.** The request goes upstream byte for byte, so its client must send what the
//!   upstream understands: for tokenpipe's mock, the `POST /v1/chat/completions` with the OpenAI body that
//!   tokenpipe builds for `/api/v1/generate-stream` (see `baselines/README.md`). A client that sends
//!   `/api/v1/generate-stream` here gets the mock's 404.
//! - **No parsing of the response.** The upstream's status line, head and chunked framing reach the
//!   client unchanged; the floor never knows where a response ends. So the client connection and its
//!   upstream connection are a pair for life: later requests on a keep-alive client connection are
//!   copied verbatim too, and the mock answers them on the same upstream connection. No pool: when
//!   either side closes, both are closed.
//! - **No errors to the client.** A failed connect, a bad request head, a head over 64 KiB, a read or
//!   write error: the pair is closed, nothing is said.
//! - **No deadlines, no limits** beyond the descriptor limit; no TLS, no IPv6 names, no drain.
//! - **Backpressure, minimal:** when a `write` takes less than what was read, the rest waits in a buffer
//!   and the source is not read again until the buffer is written (so at most one read, 64 KiB, per
//!   direction is held).
//! - **A short read means the socket is empty**, so it does not read again to see `EAGAIN`: with
//!   edge-triggered readiness, bytes that arrive later raise a new event. (Unless the event also said the
//!   peer closed: then it reads on to the end of file.) tokenpipe relies on the same fact.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

#[path = "../../shared/args.rs"]
mod args;

const LISTENER: Token = Token(usize::MAX);
/// The bytes read at once: one scratch buffer for the whole loop, as tokenpipe's worker has.
const READ_SIZE: usize = 64 * 1024;
/// A first request head that is not complete by then is refused (closed).
const MAX_HEAD: usize = 64 * 1024;

/// One client connection and, once its first request is in, its upstream connection. Its slot `i` in
/// the loop's table gives the tokens `2i` (client) and `2i + 1` (upstream).
struct Pair {
    client: TcpStream,
    upstream: Option<TcpStream>,
    /// The upstream's non-blocking connect has completed.
    connected: bool,
    /// Client to upstream: at first the first request, as it is read.
    up: Direction,
    /// Upstream to client.
    down: Direction,
}

/// One direction of a pair.
#[derive(Default)]
struct Direction {
    /// Bytes read that the destination's `write` did not take yet.
    pending: Vec<u8>,
    /// The source was left unread because `pending` was not empty: read it when `pending` drains.
    paused: bool,
}

/// Whatever goes wrong with a pair (an error, an end of file on either side) closes it: `Err(Close)`.
struct Close;
type Step = Result<(), Close>;

fn main() {
    let args = args::Args::from_env("floor-relay");
    if args.workers != 1 {
        exit("the floor is single-threaded: --workers 1 only");
    }
    let Ok(upstream) = args
        .upstream
        .trim_start_matches("http://")
        .parse::<SocketAddr>()
    else {
        exit("--upstream must be http://IP:PORT (no name, no path)")
    };
    if let Err(e) = run(args.listen, upstream) {
        exit(&format!("event loop: {e}"));
    }
}

fn run(listen: SocketAddr, upstream_addr: SocketAddr) -> io::Result<()> {
    let mut poll = Poll::new()?;
    let mut listener = TcpListener::bind(listen)?;
    // mio listens with a backlog of 128; listening again raises it to the kernel's `somaxconn` (which
    // caps what we ask), tokenpipe's default, so that a burst of connections is not dropped and retried.
    // SAFETY: listen(2) on a descriptor we own, with no pointer.
    if unsafe { libc::listen(listener.as_raw_fd(), 65535) } != 0 {
        return Err(io::Error::last_os_error());
    }
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    println!("listening on http://{}", listener.local_addr()?);

    let mut pairs: Vec<Option<Pair>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    // Slots closed during one batch of events are reused only after it, so that a later event of the
    // same batch cannot reach a new pair through an old token.
    let mut closed: Vec<usize> = Vec::new();
    let mut buf = vec![0u8; READ_SIZE];
    let mut events = Events::with_capacity(1024);
    loop {
        match poll.poll(&mut events, None) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            result => result?,
        }
        for event in events.iter() {
            if event.token() == LISTENER {
                accept_all(&listener, &poll, &mut pairs, &mut free);
                continue;
            }
            let slot = event.token().0 >> 1;
            let Some(pair) = pairs.get_mut(slot).and_then(Option::as_mut) else {
                continue;
            };
            // The peer closed: a short read no longer means there is nothing more to read.
            let closing = event.is_read_closed() || event.is_error();
            let readable = event.is_readable() || closing;
            let step = if event.token().0 & 1 == 1 {
                on_upstream(pair, event.is_writable(), readable, closing, &mut buf)
            } else if pair.connected {
                on_client(pair, event.is_writable(), readable, closing, &mut buf)
            } else if readable {
                first_request(pair, slot, &poll, upstream_addr, &mut buf)
            } else {
                Ok(())
            };
            if step.is_err() {
                // Dropping both streams closes them; a closed socket leaves epoll by itself.
                pairs[slot] = None;
                closed.push(slot);
            }
        }
        free.append(&mut closed);
    }
}

fn accept_all(
    listener: &TcpListener,
    poll: &Poll,
    pairs: &mut Vec<Option<Pair>>,
    free: &mut Vec<usize>,
) {
    loop {
        let mut client = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) => {
                // Out of descriptors, most likely: the connection waits in the backlog until a next event.
                eprintln!("floor-relay: accept: {e}");
                return;
            }
        };
        let _ = client.set_nodelay(true);
        let slot = free.pop().unwrap_or_else(|| {
            pairs.push(None);
            pairs.len() - 1
        });
        let interest = Interest::READABLE | Interest::WRITABLE;
        if poll
            .registry()
            .register(&mut client, Token(slot << 1), interest)
            .is_err()
        {
            free.push(slot);
            continue;
        }
        let (upstream, connected) = (None, false);
        let (up, down) = (Direction::default(), Direction::default());
        pairs[slot] = Some(Pair {
            client,
            upstream,
            connected,
            up,
            down,
        });
    }
}

/// Before the upstream is connected: gather the client's bytes; connect once the first request is whole.
fn first_request(
    pair: &mut Pair,
    slot: usize,
    poll: &Poll,
    to: SocketAddr,
    buf: &mut [u8],
) -> Step {
    let head = &mut pair.up.pending;
    loop {
        match pair.client.read(buf) {
            Ok(0) => return Err(Close),
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Err(Close),
        }
    }
    let whole = request_len(head)?.is_some_and(|n| head.len() >= n);
    if whole && pair.upstream.is_none() {
        let mut upstream = TcpStream::connect(to).map_err(|_| Close)?;
        let _ = upstream.set_nodelay(true);
        let interest = Interest::READABLE | Interest::WRITABLE;
        let token = Token((slot << 1) | 1);
        poll.registry()
            .register(&mut upstream, token, interest)
            .map_err(|_| Close)?;
        pair.upstream = Some(upstream);
    }
    Ok(())
}

fn on_client(
    pair: &mut Pair,
    writable: bool,
    readable: bool,
    closing: bool,
    buf: &mut [u8],
) -> Step {
    let Some(upstream) = pair.upstream.as_mut() else {
        return Ok(());
    };
    if writable {
        resume(upstream, &mut pair.client, &mut pair.down, buf)?;
    }
    if readable {
        copy(&mut pair.client, upstream, &mut pair.up, closing, buf)?;
    }
    Ok(())
}

fn on_upstream(
    pair: &mut Pair,
    writable: bool,
    readable: bool,
    closing: bool,
    buf: &mut [u8],
) -> Step {
    let Some(upstream) = pair.upstream.as_mut() else {
        return Ok(());
    };
    if writable && !pair.connected {
        // The first writable event of a non-blocking connect: did it succeed?
        if !matches!(upstream.take_error(), Ok(None)) {
            return Err(Close);
        }
        match upstream.peer_addr() {
            Ok(_) => pair.connected = true,
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(()),
            Err(_) => return Err(Close),
        }
    }
    if !pair.connected {
        return Ok(());
    }
    if writable {
        resume(&mut pair.client, upstream, &mut pair.up, buf)?;
    }
    if readable {
        copy(upstream, &mut pair.client, &mut pair.down, closing, buf)?;
    }
    Ok(())
}

/// The destination turned writable: write what waits, and read the source again if it was left unread.
fn resume(src: &mut TcpStream, dst: &mut TcpStream, dir: &mut Direction, buf: &mut [u8]) -> Step {
    if dir.pending.is_empty() && !dir.paused {
        return Ok(());
    }
    copy(src, dst, dir, true, buf)
}

/// Write what waits for `dst`; then read `src` and write what came to `dst`, until `src` is empty for
/// now or `dst` is full. `read_to_end`: read until `EAGAIN` or the end of file, even after a short read.
fn copy(
    src: &mut TcpStream,
    dst: &mut TcpStream,
    dir: &mut Direction,
    read_to_end: bool,
    buf: &mut [u8],
) -> Step {
    let written = write_some(dst, &dir.pending)?;
    dir.pending.drain(..written);
    if !dir.pending.is_empty() {
        dir.paused = true;
        return Ok(());
    }
    // A source left unread may hold more than one read's worth, whatever its last event said.
    let read_to_end = read_to_end || std::mem::take(&mut dir.paused);
    loop {
        let n = match src.read(buf) {
            Ok(0) => return Err(Close),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Err(Close),
        };
        let written = write_some(dst, &buf[..n])?;
        if written < n {
            dir.pending.extend_from_slice(&buf[written..n]);
            dir.paused = true;
            return Ok(());
        }
        if n < buf.len() && !read_to_end {
            return Ok(());
        }
    }
}

/// Write what `dst` takes now; how much it took.
fn write_some(dst: &mut TcpStream, mut bytes: &[u8]) -> Result<usize, Close> {
    let total = bytes.len();
    while !bytes.is_empty() {
        match dst.write(bytes) {
            Ok(0) => return Err(Close),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Err(Close),
        }
    }
    Ok(total - bytes.len())
}

/// The length of the first request (head, then `Content-Length` bytes of body) once its head is in.
fn request_len(bytes: &[u8]) -> Result<Option<usize>, Close> {
    let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if bytes.len() > MAX_HEAD {
            Err(Close)
        } else {
            Ok(None)
        };
    };
    let head = std::str::from_utf8(&bytes[..end]).map_err(|_| Close)?;
    let mut body = 0;
    for line in head.split("\r\n").skip(1) {
        if let Some((name, value)) = line.split_once(':')
            && name.trim().eq_ignore_ascii_case("content-length")
        {
            body = value.trim().parse::<usize>().map_err(|_| Close)?;
        }
    }
    Ok(Some(end + 4 + body))
}

fn exit(message: &str) -> ! {
    eprintln!("floor-relay: {message}");
    std::process::exit(1)
}
