//! Many concurrent streams on one worker: every one of them completes intact.
//!
//! The test drives all client sockets from one thread with `mio` (non-blocking, edge-triggered), so that 1,000
//! streams are really open at the same time without 1,000 threads.

mod common;

use common::*;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

const STREAMS: usize = 1_000;
const TOKENS: u64 = 5;
const PROMPTS: usize = 4;

struct Client {
    sock: Option<TcpStream>,
    request: Vec<u8>,
    written: usize,
    received: Vec<u8>,
    prompt: usize,
}

enum Outcome {
    Pending,
    Done,
    Failed(String),
}

impl Client {
    /// Writes what is left of the request; returns an error message on a hard failure.
    fn on_writable(&mut self) -> Result<(), String> {
        let sock = self.sock.as_mut().expect("open socket");
        while self.written < self.request.len() {
            match sock.write(&self.request[self.written..]) {
                Ok(n) => self.written += n,
                // Not connected yet, or the send buffer is full: wait for the next writable event.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::NotConnected
                    ) =>
                {
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("write: {e}")),
            }
        }
        Ok(())
    }

    /// Reads until `WouldBlock` and checks whether the whole response has arrived.
    fn on_readable(&mut self, expected: &[Vec<u8>]) -> Outcome {
        let sock = self.sock.as_mut().expect("open socket");
        let mut buf = [0u8; 16 * 1024];
        let mut eof = false;
        loop {
            match sock.read(&mut buf) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => self.received.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::NotConnected => break,
                Err(e) => {
                    return Outcome::Failed(format!(
                        "read: {e}; received {:?}",
                        lossy(&self.received)
                    ));
                }
            }
        }
        match parse_response(&self.received) {
            Parsed::Complete {
                status,
                payload,
                consumed,
            } => {
                if status != 200 {
                    Outcome::Failed(format!("status {status}: {:?}", lossy(&self.received)))
                } else if consumed != self.received.len() {
                    Outcome::Failed(format!(
                        "bytes after the final chunk: {:?}",
                        lossy(&self.received[consumed..])
                    ))
                } else if payload != expected[self.prompt] {
                    Outcome::Failed(format!(
                        "payload differs from the mock's for prompt {}: {:?}",
                        self.prompt,
                        lossy(&payload)
                    ))
                } else {
                    Outcome::Done
                }
            }
            Parsed::Invalid(why) => Outcome::Failed(format!("{why}: {:?}", lossy(&self.received))),
            Parsed::Incomplete if eof => Outcome::Failed(format!(
                "connection closed before the final chunk: {:?}",
                lossy(&self.received)
            )),
            Parsed::Incomplete => Outcome::Pending,
        }
    }
}

#[test]
fn thousand_concurrent_streams_on_one_worker() {
    let limit = raise_nofile(8192);
    assert!(
        limit as usize > STREAMS + 100,
        "RLIMIT_NOFILE of the test process is only {limit}"
    );

    let mock = spawn_mock(&[
        "--tokens",
        "5",
        "--interval-ms",
        "100",
        "--format",
        "openai",
        "--workers",
        "1",
    ]);
    let relay = spawn_relay(&mock.url(), "openai", &["--model", MODEL]);

    // Streams use a few different prompts so that crossed wires between streams would show.
    let prompts: Vec<String> = (0..PROMPTS)
        .map(|k| format!("concurrent prompt number {k}"))
        .collect();
    let mock_addr = mock.addr;
    let expected: Vec<Vec<u8>> = prompts
        .iter()
        .map(|p| {
            let p = p.clone();
            std::thread::spawn(move || direct_mock_payload(mock_addr, "openai", MODEL, &p, TOKENS))
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().expect("direct mock request"))
        .collect();
    for e in &expected {
        assert_eq!(
            token_texts(e).len() as u64,
            TOKENS,
            "mock payload: {:?}",
            lossy(e)
        );
    }

    let started = Instant::now();
    let mut poll = Poll::new().expect("poll");
    let mut clients: Vec<Client> = Vec::with_capacity(STREAMS);
    for i in 0..STREAMS {
        let mut sock = TcpStream::connect(relay.addr).expect("connect");
        sock.set_nodelay(true).expect("nodelay");
        poll.registry()
            .register(&mut sock, Token(i), Interest::READABLE | Interest::WRITABLE)
            .expect("register");
        let prompt = i % PROMPTS;
        clients.push(Client {
            sock: Some(sock),
            request: stream_request(&prompt_body(&prompts[prompt], None, Some(TOKENS))),
            written: 0,
            received: Vec::new(),
            prompt,
        });
    }

    let deadline = started + Duration::from_secs(30);
    let mut events = Events::with_capacity(1024);
    let mut done = 0usize;
    let mut failures: Vec<(usize, String)> = Vec::new();
    // Streams that have received response bytes and not finished yet: shows that they really overlap.
    let mut in_flight_peak = 0usize;
    while done + failures.len() < STREAMS {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let in_flight = clients
            .iter()
            .filter(|c| c.sock.is_some() && !c.received.is_empty())
            .count();
        in_flight_peak = in_flight_peak.max(in_flight);
        poll.poll(
            &mut events,
            Some((deadline - now).min(Duration::from_millis(200))),
        )
        .expect("poll");
        for event in events.iter() {
            let i = event.token().0;
            let client = &mut clients[i];
            if client.sock.is_none() {
                continue;
            }
            let mut outcome = Outcome::Pending;
            if event.is_writable()
                && let Err(why) = client.on_writable()
            {
                outcome = Outcome::Failed(why);
            }
            if matches!(outcome, Outcome::Pending)
                && (event.is_readable() || event.is_read_closed() || event.is_error())
            {
                outcome = client.on_readable(&expected);
            }
            match outcome {
                Outcome::Pending => continue,
                Outcome::Done => done += 1,
                Outcome::Failed(why) => failures.push((i, why)),
            }
            // Finished: close the socket now, so that file descriptors are freed as streams complete.
            if let Some(mut sock) = client.sock.take() {
                let _ = poll.registry().deregister(&mut sock);
            }
        }
    }
    let elapsed = started.elapsed();
    let pending = STREAMS - done - failures.len();
    eprintln!(
        "{done} of {STREAMS} streams complete in {elapsed:?} ({} failed, {pending} pending, peak {in_flight_peak} in flight)",
        failures.len()
    );
    if let Some(stuck) = clients.iter().position(|c| c.sock.is_some()) {
        let c = &clients[stuck];
        eprintln!(
            "first pending stream #{stuck}: wrote {}/{} bytes, received {:?}",
            c.written,
            c.request.len(),
            lossy(&c.received)
        );
    }
    assert!(
        failures.is_empty(),
        "{} streams failed; first ones: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert_eq!(
        done, STREAMS,
        "{pending} streams did not complete within the deadline"
    );
    assert!(
        elapsed < Duration::from_secs(15),
        "1,000 streams took {elapsed:?}"
    );

    assert_healthy(relay.addr, "1,000 concurrent streams");
}
