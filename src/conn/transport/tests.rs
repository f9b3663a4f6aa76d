//! The transport on real loopback sockets: the short-read rule, end of file, idle checks.
//!
//! Test code only: its parent declares it `#[cfg(test)]`.
use super::*;
use std::io::Write;
use std::time::Duration;

/// A connected pair: our non-blocking transport and the test's blocking peer.
fn pair() -> (Transport, std::net::TcpStream, mio::Poll) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let peer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (sock, _) = listener.accept().unwrap();
    sock.set_nonblocking(true).unwrap();
    let mut t = Transport::accepted(TcpStream::from_std(sock));
    let poll = mio::Poll::new().unwrap();
    poll.registry()
        .register(
            &mut t.sock,
            mio::Token(0),
            mio::Interest::READABLE | mio::Interest::WRITABLE,
        )
        .unwrap();
    (t, peer, poll)
}

/// Polls until `until(t)` holds (bounded): synchronized on the event, not on time.
fn wait(t: &mut Transport, poll: &mut mio::Poll, until: fn(&Transport) -> bool) {
    let mut events = mio::Events::with_capacity(4);
    for _ in 0..50 {
        if until(t) {
            return;
        }
        poll.poll(&mut events, Some(Duration::from_millis(200)))
            .unwrap();
        for e in events.iter() {
            t.absorb(Ready {
                readable: e.is_readable(),
                writable: e.is_writable(),
                read_closed: e.is_read_closed(),
                error: e.is_error(),
            });
        }
    }
    panic!("no such event within 10 s");
}

fn wait_readable(t: &mut Transport, poll: &mut mio::Poll) {
    wait(t, poll, Transport::readable);
}

#[test]
fn a_short_read_clears_readable_without_a_would_block_read() {
    let (mut t, mut peer, mut poll) = pair();
    peer.write_all(b"abc").unwrap();
    wait_readable(&mut t, &mut poll);
    let before = crate::reactor::instrument::SyscallCounts::this_thread();
    let mut buf = [0u8; 16];
    assert!(matches!(t.read(&mut buf), ReadOutcome::Data(3)));
    assert!(!t.readable(), "a short read means the socket is drained");
    let spent = crate::reactor::instrument::SyscallCounts::this_thread().since(&before);
    assert_eq!(spent.get(Syscall::Read), 1);
    assert_eq!(spent.get(Syscall::ReadWouldBlock), 0);
    // The next bytes raise a new edge.
    peer.write_all(b"de").unwrap();
    wait_readable(&mut t, &mut poll);
    assert!(matches!(t.read(&mut buf), ReadOutcome::Data(2)));
}

#[test]
fn a_full_read_keeps_readable() {
    let (mut t, mut peer, mut poll) = pair();
    peer.write_all(b"abcdef").unwrap();
    wait_readable(&mut t, &mut poll);
    let mut buf = [0u8; 4];
    assert!(matches!(t.read(&mut buf), ReadOutcome::Data(4)));
    assert!(t.readable(), "the buffer was full: more may be there");
    assert!(matches!(t.read(&mut buf), ReadOutcome::Data(2)));
    assert!(!t.readable());
}

#[test]
fn data_then_fin_is_read_to_the_end_of_file() {
    let (mut t, mut peer, mut poll) = pair();
    peer.write_all(b"last").unwrap();
    peer.shutdown(Shutdown::Write).unwrap();
    // Wait for the hang-up itself, so that the data and the FIN are both in before we read.
    wait(&mut t, &mut poll, Transport::read_closed);
    assert!(t.read_closed(), "no EPOLLRDHUP within 10 s");
    let mut buf = [0u8; 16];
    assert!(matches!(t.read(&mut buf), ReadOutcome::Data(4)));
    assert!(
        t.readable(),
        "a short read must not hide a pending end-of-file"
    );
    assert!(matches!(t.read(&mut buf), ReadOutcome::Eof));
    assert!(!t.readable());
}

#[test]
fn idle_check_tells_quiet_from_closed_from_unexpected() {
    let (mut t, mut peer, mut poll) = pair();
    assert_eq!(
        t.check_idle(),
        IdleCheck::Quiet,
        "no edge: no system call, quiet"
    );
    peer.write_all(b"x").unwrap();
    wait_readable(&mut t, &mut poll);
    assert_eq!(t.check_idle(), IdleCheck::Unexpected);
    assert_eq!(
        t.check_idle(),
        IdleCheck::Unexpected,
        "a peek takes nothing"
    );
    let mut buf = [0u8; 4];
    assert!(matches!(t.read(&mut buf), ReadOutcome::Data(1)));
    drop(peer);
    wait_readable(&mut t, &mut poll);
    assert_eq!(t.check_idle(), IdleCheck::Closed);
}
