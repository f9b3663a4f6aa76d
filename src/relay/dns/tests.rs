//! The cache in simulated time (instants made up, queries recorded by a fake [`Ask`]); the resolver
//! threads with injected lookups that block until the test opens a gate, so every test waits on events
//! (with bounded waits), never on a sleep; and one real worker, woken by an answer, driven by
//! `Worker::turn`.
//!
//! Test code only: its parent declares it `#[cfg(test)]`.

use super::*;
use crate::reactor::{ConnId, Cx, Handler, Ready, Tag, Worker};
use mio::net::TcpStream;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{RecvTimeoutError, TryRecvError};

/// The longest any test waits for an event that should come at once.
const PATIENCE: Duration = Duration::from_secs(5);

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

// ---------------------------------------------------------------------------------------------------------
// The cache, in simulated time.

/// An [`Ask`] that records the queries, or refuses them when told to.
#[derive(Clone, Default)]
struct Recorder {
    asked: Rc<RefCell<Vec<(String, u16)>>>,
    refuse: Rc<Cell<bool>>,
}

impl Ask for Recorder {
    fn ask(&mut self, host: &str, port: u16) -> Result<(), String> {
        if self.refuse.get() {
            return Err(format!("cannot resolve {host}: the resolver is busy"));
        }
        self.asked.borrow_mut().push((host.to_owned(), port));
        Ok(())
    }
}

impl Recorder {
    fn count(&self) -> usize {
        self.asked.borrow().len()
    }
}

fn cache(config: CacheConfig) -> (DnsCache<u32, Recorder>, Recorder) {
    let recorder = Recorder::default();
    (DnsCache::new(recorder.clone(), config), recorder)
}

fn answer(host: &str, port: u16, result: Resolved) -> Answer {
    Answer {
        host: host.into(),
        port,
        result,
    }
}

#[test]
fn a_fresh_entry_is_served_from_the_cache() {
    let (mut dns, asked) = cache(CacheConfig::default());
    let t0 = Instant::now();
    assert_eq!(dns.lookup("api.test", 443, t0, 1), Lookup::Pending);
    assert_eq!(*asked.asked.borrow(), [("api.test".to_string(), 443)]);
    let addrs = vec![addr("10.0.0.1:443"), addr("10.0.0.2:443")];
    let (waiters, result) = dns.on_answer(answer("api.test", 443, Ok(addrs.clone())), t0);
    assert_eq!((waiters, result), (vec![1], Ok(addrs.clone())));
    // Fresh until the TTL is over, with the addresses in the resolver's order.
    let later = t0 + DEFAULT_TTL - Duration::from_millis(1);
    assert_eq!(dns.lookup("api.test", 443, later, 2), Lookup::Ready(addrs));
    assert_eq!(asked.count(), 1);
    // Another port is another entry.
    assert_eq!(dns.lookup("api.test", 80, later, 3), Lookup::Pending);
    assert_eq!(asked.count(), 2);
}

#[test]
fn an_entry_expires_after_its_ttl() {
    let config = CacheConfig {
        ttl: Duration::from_secs(10),
        ..CacheConfig::default()
    };
    let (mut dns, asked) = cache(config);
    let t0 = Instant::now();
    dns.lookup("api.test", 443, t0, 1);
    let t1 = t0 + Duration::from_secs(2); // the answer took 2 s: the TTL counts from the answer
    let (waiters, _) = dns.on_answer(answer("api.test", 443, Ok(vec![addr("10.0.0.1:443")])), t1);
    assert_eq!(waiters, [1]);
    let fresh = dns.lookup("api.test", 443, t1 + Duration::from_secs(9), 2);
    assert!(matches!(fresh, Lookup::Ready(_)), "{fresh:?}");
    assert_eq!(
        dns.lookup("api.test", 443, t1 + Duration::from_secs(10), 3),
        Lookup::Pending
    );
    assert_eq!(asked.count(), 2);
    // The new answer replaces the old one in place.
    let new = vec![addr("10.0.0.9:443")];
    let (waiters, _) = dns.on_answer(
        answer("api.test", 443, Ok(new.clone())),
        t1 + Duration::from_secs(11),
    );
    assert_eq!(waiters, [3]);
    assert_eq!(
        dns.lookup("api.test", 443, t1 + Duration::from_secs(12), 4),
        Lookup::Ready(new)
    );
    assert_eq!(dns.len(), 1);
}

#[test]
fn a_failure_is_cached_for_the_negative_ttl() {
    let (mut dns, asked) = cache(CacheConfig::default());
    let t0 = Instant::now();
    dns.lookup("dead.test", 443, t0, 1);
    let why = "cannot resolve dead.test: Name or service not known".to_string();
    let (waiters, result) = dns.on_answer(answer("dead.test", 443, Err(why.clone())), t0);
    assert_eq!((waiters, result), (vec![1], Err(why.clone())));
    // Failed at once, without a query, for the negative TTL.
    let soon = t0 + DEFAULT_NEGATIVE_TTL - Duration::from_millis(1);
    assert_eq!(dns.lookup("dead.test", 443, soon, 2), Lookup::Failed(why));
    assert_eq!(asked.count(), 1);
    // Then asked again.
    assert_eq!(
        dns.lookup("dead.test", 443, t0 + DEFAULT_NEGATIVE_TTL, 3),
        Lookup::Pending
    );
    assert_eq!(asked.count(), 2);
}

#[test]
fn many_waiters_share_one_query() {
    let (mut dns, asked) = cache(CacheConfig::default());
    let t0 = Instant::now();
    for waiter in 1..=5 {
        let now = t0 + Duration::from_millis(waiter.into());
        assert_eq!(dns.lookup("api.test", 443, now, waiter), Lookup::Pending);
    }
    assert_eq!(asked.count(), 1);
    let addrs = vec![addr("10.0.0.1:443")];
    let (waiters, result) = dns.on_answer(answer("api.test", 443, Ok(addrs.clone())), t0);
    assert_eq!(waiters, [1, 2, 3, 4, 5], "every waiter, first come first");
    assert_eq!(result, Ok(addrs));
    // The same answer again (nobody asked for it) resumes nobody.
    let (waiters, _) = dns.on_answer(answer("api.test", 443, Ok(vec![])), t0);
    assert!(waiters.is_empty());
}

#[test]
fn ip_literals_are_answered_at_once() {
    let (mut dns, asked) = cache(CacheConfig::default());
    let t0 = Instant::now();
    for (host, expected) in [
        ("127.0.0.1", "127.0.0.1:8080"),
        ("::1", "[::1]:8080"),
        ("[::1]", "[::1]:8080"),
        ("[fe80::1]", "[fe80::1]:8080"),
    ] {
        assert_eq!(
            dns.lookup(host, 8080, t0, 1),
            Lookup::Ready(vec![addr(expected)]),
            "{host}"
        );
    }
    assert_eq!(asked.count(), 0, "literals never reach the resolver");
    assert!(dns.is_empty(), "nor the cache");
    // Brackets hold IPv6 only; what is not a literal is a name.
    assert_eq!(dns.lookup("[127.0.0.1]", 80, t0, 2), Lookup::Pending);
    assert_eq!(dns.lookup("127.0.0.1.example", 80, t0, 3), Lookup::Pending);
    assert_eq!(asked.count(), 2);
}

#[test]
fn the_cache_is_bounded_and_drops_the_oldest() {
    let config = CacheConfig {
        capacity: 3,
        ..CacheConfig::default()
    };
    let (mut dns, asked) = cache(config);
    let t0 = Instant::now();
    for (i, host) in ["a.test", "b.test", "c.test"].into_iter().enumerate() {
        let now = t0 + Duration::from_secs(i as u64);
        dns.lookup(host, 443, now, 0);
        let (waiters, _) = dns.on_answer(answer(host, 443, Ok(vec![addr("10.0.0.1:443")])), now);
        assert_eq!(waiters, [0]);
    }
    assert_eq!(dns.len(), 3);
    // A fourth name pushes out the oldest (a.test), and only it.
    let t4 = t0 + Duration::from_secs(4);
    assert_eq!(dns.lookup("d.test", 443, t4, 4), Lookup::Pending);
    assert_eq!(dns.len(), 3);
    for host in ["b.test", "c.test"] {
        assert!(matches!(dns.lookup(host, 443, t4, 0), Lookup::Ready(_)));
    }
    assert_eq!(asked.count(), 4);
    // a.test must be asked again, pushing out b.test, the oldest answered one (d.test is still waiting).
    assert_eq!(dns.lookup("a.test", 443, t4, 5), Lookup::Pending);
    assert_eq!(asked.count(), 5);
    assert_eq!(dns.len(), 3);
    assert!(!dns.entries.contains_key(&("b.test".to_string(), 443)));
}

#[test]
fn names_being_resolved_are_never_dropped() {
    let config = CacheConfig {
        capacity: 2,
        ..CacheConfig::default()
    };
    let (mut dns, asked) = cache(config);
    let t0 = Instant::now();
    dns.lookup("a.test", 443, t0, 1);
    dns.lookup("b.test", 443, t0, 2);
    let full = dns.lookup("c.test", 443, t0, 3);
    assert_eq!(
        full,
        Lookup::Failed("cannot resolve c.test: 2 names are being resolved already".into())
    );
    assert_eq!(asked.count(), 2);
    // The waiters of a and b still hear back; then c finds room.
    let (waiters, _) = dns.on_answer(answer("a.test", 443, Err("x".into())), t0);
    assert_eq!(waiters, [1]);
    assert_eq!(dns.lookup("c.test", 443, t0, 3), Lookup::Pending);
}

#[test]
fn a_refused_query_keeps_no_waiter() {
    let (mut dns, asked) = cache(CacheConfig::default());
    let t0 = Instant::now();
    asked.refuse.set(true);
    let refused = dns.lookup("api.test", 443, t0, 1);
    assert_eq!(
        refused,
        Lookup::Failed("cannot resolve api.test: the resolver is busy".into())
    );
    assert!(
        dns.is_empty(),
        "an overload is not the name's fault: not cached"
    );
    asked.refuse.set(false);
    assert_eq!(dns.lookup("api.test", 443, t0, 2), Lookup::Pending);
    let (waiters, _) = dns.on_answer(answer("api.test", 443, Err("x".into())), t0);
    assert_eq!(waiters, [2]);
}

#[test]
fn an_empty_answer_is_a_failure() {
    let (mut dns, _) = cache(CacheConfig::default());
    let t0 = Instant::now();
    dns.lookup("api.test", 443, t0, 1);
    let (_, result) = dns.on_answer(answer("api.test", 443, Ok(vec![])), t0);
    assert_eq!(result, Err("api.test has no address".into()));
    assert_eq!(
        dns.lookup("api.test", 443, t0, 2),
        Lookup::Failed("api.test has no address".into())
    );
}

#[test]
fn huge_ttls_are_capped() {
    let config = CacheConfig {
        ttl: Duration::MAX,
        negative_ttl: Duration::MAX,
        capacity: 0,
    };
    let (mut dns, _) = cache(config);
    let t0 = Instant::now();
    dns.lookup("api.test", 443, t0, 1);
    let (_, result) = dns.on_answer(answer("api.test", 443, Ok(vec![addr("10.0.0.1:443")])), t0);
    assert!(result.is_ok());
    assert!(matches!(
        dns.lookup("api.test", 443, t0 + MAX_TTL, 2),
        Lookup::Pending
    ));
}

// ---------------------------------------------------------------------------------------------------------
// The resolver threads.

/// A test handler: counts its wakes and, if it has a cache, drains its answers there on each wake.
#[derive(Default)]
struct Probe {
    wakes: usize,
    dns: Option<(DnsCache<u32>, Receiver<Answer>)>,
    resumed: Vec<(Vec<u32>, Resolved)>,
}

impl Handler for Probe {
    type Conn = ();
    type Timer = ();

    fn on_accept(&mut self, _cx: &mut Cx<Self>, _sock: TcpStream, _peer: SocketAddr) {}
    fn on_ready(&mut self, _cx: &mut Cx<Self>, _id: ConnId, _tag: Tag, _ready: Ready) {}
    fn on_resume(&mut self, _cx: &mut Cx<Self>, _id: ConnId) {}
    fn on_timer(&mut self, _cx: &mut Cx<Self>, _id: ConnId, _what: ()) {}

    fn on_wake(&mut self, cx: &mut Cx<Self>) {
        self.wakes += 1;
        if let Some((dns, answers)) = &mut self.dns {
            while let Ok(answer) = answers.try_recv() {
                self.resumed.push(dns.on_answer(answer, cx.now));
            }
        }
    }
}

fn worker() -> Worker<Probe> {
    Worker::new("dns-test".into(), Duration::from_secs(10), Probe::default()).unwrap()
}

/// The test's side of a [`gated`] lookup.
struct Gate {
    /// One send lets one `slow.test` lookup finish.
    open: Sender<()>,
    /// The name of every lookup, as it starts.
    started: Receiver<String>,
}

impl Gate {
    fn started(&self) -> String {
        self.started
            .recv_timeout(PATIENCE)
            .expect("a lookup started")
    }
}

/// A lookup that resolves `slow.test` only once the test opens the gate, and any other name at once; it
/// reports every lookup it starts, and fails or panics for the names that say so.
fn gated() -> (Box<LookupFn>, Gate) {
    let (open, gate_rx) = mpsc::channel::<()>();
    let (started_tx, started) = mpsc::channel();
    let gate_rx = Mutex::new(gate_rx);
    let lookup = move |host: &str, port: u16| {
        let _ = started_tx.send(host.to_owned());
        match host {
            "slow.test" => {
                let opened = gate_rx.lock().map(|g| g.recv_timeout(PATIENCE));
                assert!(matches!(opened, Ok(Ok(()))), "the gate never opened");
            }
            "bad.test" => return Err(io::Error::other("no such host")),
            "empty.test" => return Ok(vec![]),
            "boom.test" => panic!("a lookup that panics (expected by the test)"),
            _ => {}
        }
        Ok(vec![SocketAddr::from(([10, 0, 0, 1], port))])
    };
    (Box::new(lookup), Gate { open, started })
}

fn next(answers: &Receiver<Answer>) -> Answer {
    answers.recv_timeout(PATIENCE).expect("an answer in time")
}

#[test]
fn a_slow_name_does_not_hold_up_the_others() {
    let (lookup, gate) = gated();
    let resolver = Resolver::spawn(2, 8, lookup).unwrap();
    let w = worker();
    let (tx, answers) = mpsc::channel();
    resolver.query("slow.test", 443, &tx, &w.remote()).unwrap();
    assert_eq!(gate.started(), "slow.test");
    // One thread is stuck in slow.test; the other answers fast.test meanwhile.
    resolver.query("fast.test", 443, &tx, &w.remote()).unwrap();
    let fast = next(&answers);
    assert_eq!(fast.host, "fast.test");
    assert_eq!(fast.result, Ok(vec![addr("10.0.0.1:443")]));
    gate.open.send(()).unwrap();
    assert_eq!(next(&answers).host, "slow.test");
}

#[test]
fn one_thread_takes_lookups_in_turn() {
    let (lookup, gate) = gated();
    let resolver = Resolver::spawn(1, 8, lookup).unwrap();
    let w = worker();
    let (tx, answers) = mpsc::channel();
    resolver.query("slow.test", 443, &tx, &w.remote()).unwrap();
    assert_eq!(gate.started(), "slow.test");
    resolver.query("fast.test", 443, &tx, &w.remote()).unwrap();
    // The only thread is held by slow.test: nothing can have been answered (why the default is a pool).
    assert_eq!(answers.try_recv(), Err(TryRecvError::Empty));
    gate.open.send(()).unwrap();
    assert_eq!(next(&answers).host, "slow.test");
    assert_eq!(next(&answers).host, "fast.test");
}

#[test]
fn a_full_queue_refuses_at_once() {
    let (lookup, gate) = gated();
    let resolver = Resolver::spawn(1, 1, lookup).unwrap();
    let w = worker();
    let (tx, answers) = mpsc::channel();
    resolver.query("slow.test", 443, &tx, &w.remote()).unwrap();
    assert_eq!(gate.started(), "slow.test");
    resolver.query("a.test", 443, &tx, &w.remote()).unwrap(); // queued
    let refused = resolver.query("b.test", 443, &tx, &w.remote());
    assert_eq!(
        refused,
        Err("cannot resolve b.test: the resolver is busy (1 lookups queued)".into())
    );
    gate.open.send(()).unwrap();
    assert_eq!(next(&answers).host, "slow.test");
    assert_eq!(next(&answers).host, "a.test");
}

#[test]
fn failures_read_well_and_a_panic_spares_the_thread() {
    let (lookup, _gate) = gated();
    let resolver = Resolver::spawn(1, 8, lookup).unwrap();
    let w = worker();
    let (tx, answers) = mpsc::channel();
    for host in ["bad.test", "empty.test", "boom.test", "ok.test"] {
        resolver.query(host, 443, &tx, &w.remote()).unwrap();
    }
    let results: Vec<_> = (0..4).map(|_| next(&answers).result).collect();
    assert_eq!(
        results,
        [
            Err("cannot resolve bad.test: no such host".to_string()),
            Err("empty.test has no address".to_string()),
            Err("cannot resolve boom.test: the lookup panicked".to_string()),
            Ok(vec![addr("10.0.0.1:443")]),
        ]
    );
}

#[test]
fn the_threads_end_with_the_last_handle() {
    // The lookup owns `alive`; it is dropped when the last thread that shares the lookup has ended.
    let (alive, ended) = mpsc::channel::<()>();
    let lookup = move |_: &str, port: u16| {
        let _alive = &alive;
        Ok(vec![SocketAddr::from(([10, 0, 0, 1], port))])
    };
    let resolver = Resolver::spawn(3, 8, lookup).unwrap();
    let w = worker();
    let (link, answers) = ResolverLink::new(resolver.clone(), w.remote());
    drop(resolver);
    let mut link = link;
    link.ask("a.test", 443).unwrap(); // the link's handle keeps the threads
    assert_eq!(next(&answers).host, "a.test");
    assert_eq!(ended.try_recv(), Err(TryRecvError::Empty));
    drop(link);
    assert_eq!(
        ended.recv_timeout(PATIENCE),
        Err(RecvTimeoutError::Disconnected)
    );
}

#[test]
fn an_answer_wakes_the_worker_and_resumes_every_waiter() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let resolver = Resolver::with_lookup(move |_: &str, port: u16| {
        counted.fetch_add(1, Ordering::SeqCst);
        Ok(vec![SocketAddr::from(([10, 0, 0, 7], port))])
    })
    .unwrap();
    let mut w = worker();
    let (link, answers) = ResolverLink::new(resolver, w.remote());
    let mut dns = DnsCache::new(link, CacheConfig::default());
    let now = Instant::now();
    assert_eq!(dns.lookup("api.test", 443, now, 7), Lookup::Pending);
    assert_eq!(dns.lookup("api.test", 443, now, 8), Lookup::Pending);
    w.handler().dns = Some((dns, answers));
    // Turns until the answer has come through the waker (at most 50 turns of at most 200 ms).
    for _ in 0..50 {
        if !w.handler().resumed.is_empty() {
            break;
        }
        w.turn(Some(Duration::from_millis(200))).unwrap();
    }
    let probe = w.handler();
    assert!(probe.wakes >= 1);
    let expected = vec![addr("10.0.0.7:443")];
    assert_eq!(probe.resumed, [(vec![7, 8], Ok(expected.clone()))]);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "one query for both waiters"
    );
    // Now cached: answered at once, without a lookup.
    let (dns, _) = probe.dns.as_mut().unwrap();
    assert_eq!(dns.lookup("api.test", 443, now, 9), Lookup::Ready(expected));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}
