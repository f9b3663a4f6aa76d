//! The reactor on its own, with a small test handler that records what the loop asks of it: accept
//! budgets, turns and yields, stale events, deadlines, the reap, waking and stopping, loop statistics.
//! Each test drives a `Worker` one iteration at a time ([`Worker::turn`]) on loopback sockets.
//!
//! Test code only: its parent declares it `#[cfg(test)]`.

use super::*;
use std::io::Write;
use std::net::TcpStream as StdStream;

/// What the test handler was asked to do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    Accept,
    Ready(ConnId),
    Resume(ConnId),
    Timer(ConnId, u8),
    Wake,
    Close(ConnId),
    Drain,
}

/// A handler that keeps each accepted socket in the slab and does what the test scripted.
#[derive(Default)]
struct Probe {
    calls: Vec<Call>,
    /// On its first readiness event, an entry closes these.
    close_on_ready: Vec<ConnId>,
    /// Entries that defer themselves on every event and every resume.
    always_yield: Vec<ConnId>,
    /// Busy time to burn in `on_ready`, to make an iteration slow.
    burn: Duration,
}

impl Handler for Probe {
    type Conn = TcpStream;
    type Timer = u8;

    fn on_accept(&mut self, cx: &mut Cx<Self>, sock: TcpStream, _peer: SocketAddr) {
        self.calls.push(Call::Accept);
        if let Ok(id) = cx.conns.insert_with(|_| sock)
            && let Some(s) = cx.conns.get_mut(id)
        {
            cx.registry
                .register(s, id.token(Tag::MAIN), Interest::READABLE)
                .unwrap();
        }
    }

    fn on_ready(&mut self, cx: &mut Cx<Self>, id: ConnId, _tag: Tag, _ready: Ready) {
        self.calls.push(Call::Ready(id));
        for other in std::mem::take(&mut self.close_on_ready) {
            cx.close(other);
        }
        if self.always_yield.contains(&id) {
            cx.defer(id);
        }
        let start = Instant::now();
        while start.elapsed() < self.burn {}
    }

    fn on_resume(&mut self, cx: &mut Cx<Self>, id: ConnId) {
        self.calls.push(Call::Resume(id));
        if self.always_yield.contains(&id) {
            cx.defer(id);
        }
    }

    fn on_timer(&mut self, _cx: &mut Cx<Self>, id: ConnId, what: u8) {
        self.calls.push(Call::Timer(id, what));
    }

    fn on_wake(&mut self, _cx: &mut Cx<Self>) {
        self.calls.push(Call::Wake);
    }

    fn on_close(&mut self, _cx: &mut Cx<Self>, id: ConnId, _conn: TcpStream) {
        self.calls.push(Call::Close(id));
    }

    fn on_drain(&mut self, _cx: &mut Cx<Self>) {
        self.calls.push(Call::Drain);
    }
}

fn worker() -> (Worker<Probe>, SocketAddr) {
    // A backlog that holds the whole burst of `accepting_a_burst_takes_budgeted_turns` (std's is 128).
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    socket.listen(1024).unwrap();
    let listener: std::net::TcpListener = socket.into();
    let addr = listener.local_addr().unwrap();
    let mut w = Worker::new("test".into(), Duration::from_secs(10), Probe::default()).unwrap();
    w.listen(listener).unwrap();
    (w, addr)
}

const WAIT: Option<Duration> = Some(Duration::from_millis(200));

/// Turns until `done` holds (at most 50 turns of at most 200 ms): synchronized on what the loop saw.
fn turn_until(w: &mut Worker<Probe>, what: &str, mut done: impl FnMut(&mut Worker<Probe>) -> bool) {
    for _ in 0..50 {
        if done(w) {
            return;
        }
        w.turn(WAIT).unwrap();
    }
    panic!("{what}: not within 50 turns");
}

fn accepted(w: &mut Worker<Probe>) -> usize {
    w.handler()
        .calls
        .iter()
        .filter(|c| **c == Call::Accept)
        .count()
}

/// Connected clients, and the ids the worker gave them.
fn clients(w: &mut Worker<Probe>, addr: SocketAddr, n: usize) -> (Vec<StdStream>, Vec<ConnId>) {
    let peers: Vec<StdStream> = (0..n).map(|_| StdStream::connect(addr).unwrap()).collect();
    turn_until(w, "accepted", |w| accepted(w) >= n);
    let ids = w.context().conns.iter().map(|(id, _)| id).collect();
    w.handler().calls.clear();
    (peers, ids)
}

/// A burst is accepted in budgeted turns: no turn accepts more than its budget (one in dispatch, one in
/// the resume phase), and the rest is accepted in the next turns without waiting for a new edge.
#[test]
fn accepting_a_burst_takes_budgeted_turns() {
    let (mut w, addr) = worker();
    let n = 3 * ACCEPT_BUDGET;
    let _peers: Vec<StdStream> = (0..n).map(|_| StdStream::connect(addr).unwrap()).collect();
    let mut per_turn = Vec::new();
    turn_until(&mut w, "the whole burst accepted", |w| {
        per_turn.push(accepted(w));
        w.handler().calls.clear();
        per_turn.iter().sum::<usize>() >= n
    });
    assert!(
        per_turn.iter().all(|&k| k <= 2 * ACCEPT_BUDGET),
        "accepted per turn: {per_turn:?}"
    );
    assert!(
        per_turn.iter().filter(|&&k| k > 0).count() >= 2,
        "one turn took all: {per_turn:?}"
    );
}

/// An entry that yields on every turn is resumed once per turn, even if it deferred itself twice, and the
/// poll does not wait while it has work.
#[test]
fn a_yielding_entry_gets_one_resume_per_turn() {
    let (mut w, addr) = worker();
    let (mut peers, ids) = clients(&mut w, addr, 1);
    let id = ids[0];
    w.handler().always_yield.push(id);
    w.context().defer(id);
    peers[0].write_all(b"x").unwrap();
    turn_until(&mut w, "readable", |w| {
        w.handler().calls.contains(&Call::Ready(id))
    });
    let resumes = w
        .handler()
        .calls
        .iter()
        .filter(|c| **c == Call::Resume(id))
        .count();
    assert_eq!(
        resumes,
        1,
        "deferred twice in one turn: {:?}",
        w.handler().calls
    );
    // No event will come: it goes on in the next turns anyway, without the poll waiting 200 ms.
    let t0 = Instant::now();
    w.handler().calls.clear();
    for _ in 0..3 {
        w.turn(Some(Duration::from_secs(5))).unwrap();
    }
    assert_eq!(w.handler().calls, vec![Call::Resume(id); 3]);
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "the poll waited with work deferred"
    );
}

/// An entry closed by a handler earlier in the batch gets no event, and is reaped exactly once, after the
/// batch.
#[test]
fn an_entry_closed_in_the_batch_gets_no_event_and_one_reap() {
    let (mut w, addr) = worker();
    let (mut peers, ids) = clients(&mut w, addr, 2);
    // Whichever of the two is dispatched first closes both.
    w.handler().close_on_ready = ids.clone();
    for p in &mut peers {
        p.write_all(b"x").unwrap();
    }
    turn_until(&mut w, "an event", |w| {
        w.handler()
            .calls
            .iter()
            .any(|c| matches!(c, Call::Ready(_)))
    });
    let calls = w.handler().calls.clone();
    let readies = calls.iter().filter(|c| matches!(c, Call::Ready(_))).count();
    assert_eq!(
        readies, 1,
        "an entry closed earlier in the batch got an event: {calls:?}"
    );
    for id in &ids {
        assert_eq!(
            calls.iter().filter(|c| **c == Call::Close(*id)).count(),
            1,
            "{calls:?}"
        );
    }
    let last_ready = calls
        .iter()
        .rposition(|c| matches!(c, Call::Ready(_)))
        .unwrap();
    let first_close = calls
        .iter()
        .position(|c| matches!(c, Call::Close(_)))
        .unwrap();
    assert!(
        last_ready < first_close,
        "reaped before the batch was over: {calls:?}"
    );
    assert!(w.context().conns.is_empty());
}

/// Deadlines fire in order with their keys, after the events of the same turn; a deadline for an entry
/// closed since is dropped.
#[test]
fn timers_fire_after_events_and_skip_closed_entries() {
    let (mut w, addr) = worker();
    let (mut peers, ids) = clients(&mut w, addr, 2);
    let now = Instant::now();
    let cx = w.context();
    cx.timers.insert(now, ids[0], 7);
    cx.timers.insert(now, ids[1], 8);
    cx.timers.insert(now, ids[0], 9);
    cx.close(ids[1]);
    peers[0].write_all(b"x").unwrap();
    turn_until(&mut w, "the timers", |w| {
        w.handler().calls.contains(&Call::Timer(ids[0], 9))
    });
    let calls = w.handler().calls.clone();
    let t7 = calls
        .iter()
        .position(|c| *c == Call::Timer(ids[0], 7))
        .unwrap();
    let t9 = calls
        .iter()
        .position(|c| *c == Call::Timer(ids[0], 9))
        .unwrap();
    assert!(t7 < t9, "{calls:?}");
    assert!(
        !calls.contains(&Call::Timer(ids[1], 8)),
        "fired for a closed entry: {calls:?}"
    );
    if let Some(ready) = calls.iter().position(|c| *c == Call::Ready(ids[0])) {
        assert!(
            ready < t7,
            "a timer ran before an event of its own turn: {calls:?}"
        );
    }
}

#[test]
fn remote_wakes_and_stops_the_loop() {
    let (mut w, _addr) = worker();
    let remote = w.remote();
    remote.wake().unwrap();
    turn_until(&mut w, "woken", |w| w.handler().calls.contains(&Call::Wake));
    let stats = w.stats();
    let thread = std::thread::spawn(move || w.run());
    remote.stop().unwrap();
    thread.join().unwrap().unwrap();
    assert!(stats.snapshot().iterations >= 1);
}

/// A slow iteration is counted (and logged) in the published figures; system calls are counted too.
#[test]
fn slow_iterations_and_system_calls_are_published() {
    let (mut w, addr) = worker();
    let (mut peers, _ids) = clients(&mut w, addr, 1);
    w.handler().burn = Duration::from_millis(30);
    let mut slow = Worker::new(
        "slow".into(),
        Duration::from_millis(20),
        std::mem::take(w.handler()),
    )
    .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    slow.listen(listener).unwrap();
    let mut peer = StdStream::connect(addr).unwrap();
    for _ in 0..50 {
        if slow.stats().snapshot().slow_iterations > 0 {
            break;
        }
        peer.write_all(b"x").unwrap();
        slow.turn(WAIT).unwrap();
    }
    let snap = slow.stats().snapshot();
    assert!(snap.slow_iterations >= 1, "{snap:?}");
    assert!(snap.max_busy >= Duration::from_millis(30), "{snap:?}");
    assert!(snap.syscalls.get(Syscall::Poll) >= snap.iterations);
    assert!(
        snap.syscalls.get(Syscall::Accept) >= 2,
        "the accept and the empty backlog: {snap:?}"
    );
    drop(peers.pop());
}

/// A drain accepts what the backlog holds (a queued connection would be reset with the listener), then
/// closes the listener, so that connecting is refused; the handler hears of it once, however often the
/// drain is asked for, and the entries it has stay.
#[test]
fn a_drain_accepts_what_is_queued_then_refuses_connections() {
    let (mut w, addr) = worker();
    let (_peers, _ids) = clients(&mut w, addr, 1);
    let _queued = StdStream::connect(addr).unwrap();
    let remote = w.remote();
    remote.drain().unwrap();
    remote.drain().unwrap();
    turn_until(&mut w, "the drain", |w| {
        w.handler().calls.contains(&Call::Drain)
    });
    assert!(w.draining());
    let calls = w.handler().calls.clone();
    let drain = calls.iter().position(|c| *c == Call::Drain).unwrap();
    assert!(
        calls[..drain].contains(&Call::Accept),
        "the queued connection was not accepted first: {calls:?}"
    );
    assert_eq!(w.context().conns.len(), 2, "entries stay while they drain");
    let refused = StdStream::connect(addr).expect_err("the listener is closed");
    assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
    remote.drain().unwrap();
    w.turn(WAIT).unwrap();
    w.turn(WAIT).unwrap();
    let drains = w
        .handler()
        .calls
        .iter()
        .filter(|c| **c == Call::Drain)
        .count();
    assert_eq!(drains, 1, "{:?}", w.handler().calls);
}

/// A drained worker's `run` returns on its own once its last entry is gone: no `stop` is needed.
#[test]
fn a_drained_worker_returns_once_its_slab_is_empty() {
    let (mut w, addr) = worker();
    let (mut peers, ids) = clients(&mut w, addr, 1);
    w.remote().drain().unwrap();
    turn_until(&mut w, "the drain", |w| w.draining());
    // The client hangs up: its event makes the handler close it, and the reap empties the slab.
    w.handler().close_on_ready = ids;
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(w.run().is_ok());
    });
    drop(peers.pop());
    assert_eq!(
        finished.recv_timeout(Duration::from_secs(10)),
        Ok(true),
        "run did not return once the slab was empty"
    );
}
