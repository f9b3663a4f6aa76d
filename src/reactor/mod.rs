//! The hand-written event loop: one [`Worker`] per thread, sharing nothing. It knows `mio` and nothing
//! else: no HTTP, no relay, no mock. Those are *handlers* that the loop drives.
//!
//! # The API, on one screen
//!
//! ```text
//! trait Handler                          what an application implements
//!   type Conn                              one entry of the worker's slab (a connection, or more sockets)
//!   type Timer                             what a deadline is for
//!   on_accept(cx, socket, peer)            the listener had a connection
//!   on_ready(cx, id, tag, Ready)           socket `tag` of entry `id` changed readiness
//!   on_resume(cx, id)                      `id` yielded its turn (cx.defer) and may go on
//!   on_timer(cx, id, Timer)                a deadline set with cx.timers fell due
//!   on_wake(cx)                            another thread called Remote::wake (or stop, or drain)
//!   on_close(cx, id, Conn)                 reap: `id` was closed (cx.close); release what it held
//!   on_drain(cx)                           Remote::drain closed the listener: close what is idle
//!   on_shed(cx, socket, peer)              out of descriptors: turn this connection away, drop it
//!
//! struct Context                         what every callback gets
//!   now                                    the instant this iteration read (phase 3)
//!   batch                                  this iteration's number
//!   conns: Conns<Conn>                     the slab: insert_with, get_mut, take; ids are ConnId
//!   timers: Timers<Timer>                  insert(at, id, what) -> TimerKey, cancel(key)
//!   scratch                                one 64 KiB read buffer shared by every connection
//!   registry                               mio's: register(socket, id.token(tag), interest)
//!   defer(id), close(id), name()
//!
//! struct Worker                          the loop
//!   new(name, loop_warn, handler) | build(.., |remote| handler), listen(listener), remote(), stats()
//!   run(), turn()                          loop until Remote::stop (or a drain empties the slab); one
//!                                          iteration
//!
//! struct Remote                          for other threads
//!   wake()                                 on_wake soon
//!   stop()                                 run returns after this iteration; the slab is dropped
//!   drain()                                stop accepting (what is queued is accepted first), on_drain,
//!                                          and run returns once the slab is empty
//! ```
//!
//! # The phases of one iteration
//!
//! [`Worker::turn`] is one iteration; [`Worker::run`] repeats it. The phases, in this order:
//!
//! 1. **timeout**: the time to the earliest deadline (none: wait for ever), or zero when some connection,
//!    or the listener, yielded its turn and waits to continue; a listener paused for lack of descriptors
//!    counts as a deadline ([`ACCEPT_RETRY`]);
//! 2. **poll**: sleep in `epoll_wait` until a socket is ready, the waker is woken or the timeout passes;
//! 3. **clock**: read `Instant::now()` once; that is `now` for the whole batch, whose number `batch` counts
//!    up here;
//! 4. **dispatch**: hand each event to its entry (events for entries closed earlier find nothing and are
//!    dropped); a listener event accepts up to [`ACCEPT_BUDGET`] connections; the waker's event starts a
//!    drain if [`Remote::drain`] asked for one. Handlers write eagerly: there is no flush phase, because a
//!    byte that can be written now should not wait for the end of the batch;
//! 5. **timers**: fire every deadline that is due;
//! 6. **resume**: give another turn to the entries that used up theirs ([`TURN_BUDGET`]), and to the
//!    listener if its backlog is not empty yet, now that the rest of the batch has been served; one that
//!    yields again here waits for the next iteration;
//! 7. **reap**: free the entries that handlers closed, calling [`Handler::on_close`] for each; handlers
//!    never free anything themselves. A freed entry ends a pause of the listener: descriptors are free;
//! 8. **measure**: record how long the iteration was busy, warn when it passed `--loop-warn-ms`, and
//!    publish the worker's figures ([`instrument::WorkerStats`]).

mod dispatch;
use dispatch::dispatch;
mod door;
pub mod fdlimit;
pub mod instrument;
pub mod timers;
pub mod token;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Registry, Waker};

pub use door::ACCEPT_RETRY;
use door::Door;
use instrument::{Call, Iteration, LoopStats, Stopwatch, Syscall, WorkerStats, count};
pub use timers::{TimerKey, Timers};
pub use token::{ConnId, Conns, Tag, Target};

/// How many steps (reads, events) one entry may take in one turn before it yields to the others
/// ([`Context::defer`]). A stream whose peer is always ready would otherwise keep the loop to itself.
pub const TURN_BUDGET: usize = 16;

/// How many connections one turn accepts. Accepting drains the backlog in budgeted turns, so that a burst
/// of thousands of connections cannot freeze the streams already running (each accepted connection also
/// costs its handler a read, a connect, a write), and the first of the burst get served while the last are
/// still queued.
pub const ACCEPT_BUDGET: usize = 64;

/// Size of the per-worker read buffer. Every socket read lands here first; a connection keeps only what it
/// cannot pass on at once, so memory per idle stream does not depend on this figure.
pub const SCRATCH_BYTES: usize = 64 * 1024;

/// What an application does with the loop's events. Every callback gets the worker's [`Context`].
pub trait Handler {
    /// One entry of the worker's slab.
    type Conn;
    /// What a deadline is for; handed back to [`Handler::on_timer`].
    type Timer;

    /// The listener accepted `sock` (non-blocking, not registered yet).
    fn on_accept(&mut self, cx: &mut Cx<Self>, sock: TcpStream, peer: SocketAddr);
    /// Socket `tag` of entry `id` reported readiness. Edge-triggered: remember it (see `conn::Readiness`).
    fn on_ready(&mut self, cx: &mut Cx<Self>, id: ConnId, tag: Tag, ready: Ready);
    /// `id` yielded its turn with [`Context::defer`]; it may go on.
    fn on_resume(&mut self, cx: &mut Cx<Self>, id: ConnId);
    /// A deadline of `id` fell due.
    fn on_timer(&mut self, cx: &mut Cx<Self>, id: ConnId, what: Self::Timer);
    /// Another thread called [`Remote::wake`] (wakes coalesce; `stop` and `drain` wake too).
    fn on_wake(&mut self, _cx: &mut Cx<Self>) {}
    /// Reap: `conn` was closed and is out of the slab. Release what it holds elsewhere (its timers, its
    /// place in a pool); dropping it closes its sockets.
    fn on_close(&mut self, _cx: &mut Cx<Self>, _id: ConnId, _conn: Self::Conn) {}
    /// The worker drains ([`Remote::drain`]), called once: its listener is closed (the connections it had
    /// queued were accepted first) and [`Worker::run`] returns as soon as the slab is empty. Close what is
    /// idle now, let what is in progress finish, and keep nothing new (a pool) alive.
    fn on_drain(&mut self, _cx: &mut Cx<Self>) {}
    /// Describes entry `id` (socket `tag`) for a log line: its kind and state, e.g. "client 127.0.0.1:5000
    /// streaming". Asked only for the slowest call of a slow iteration, so it may allocate.
    fn describe(&self, _cx: &Cx<Self>, id: ConnId, tag: Tag) -> String {
        format!("entry {id:?} (socket {})", tag.0)
    }
    /// The worker is out of descriptors: `sock` was accepted with its spare descriptor only to be turned
    /// away. Write a short refusal if there is one, without reading (be quick), and let it drop: the spare
    /// is taken back right after, for the next. The default closes it at once.
    fn on_shed(&mut self, _cx: &mut Cx<Self>, _sock: TcpStream, _peer: SocketAddr) {}
}

/// The context of handler `H`.
pub type Cx<H> = Context<<H as Handler>::Conn, <H as Handler>::Timer>;

/// Readiness as one event reported it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ready {
    pub readable: bool,
    pub writable: bool,
    /// The peer shut its sending side (`EPOLLRDHUP`, or `EV_EOF` on kqueue).
    pub read_closed: bool,
    /// The socket has an error pending; the next read or write reports it.
    pub error: bool,
}

impl Ready {
    fn of(event: &Event) -> Ready {
        Ready {
            readable: event.is_readable(),
            writable: event.is_writable() || event.is_write_closed(),
            read_closed: event.is_read_closed(),
            error: event.is_error(),
        }
    }
}

/// What every handler callback may use. Fields are public so that a handler can borrow two at once (a
/// connection from `conns` and the `scratch` buffer to read into).
pub struct Context<C, T> {
    /// The instant read after this iteration's poll: every handler and timer of the batch agrees on it.
    pub now: Instant,
    /// This iteration's number (counted by phase 3). A socket registered during batch `n` cannot have
    /// events in batch `n`, which was collected before it existed: so an event for a token whose socket
    /// was replaced during this batch is the old socket's, and a handler that remembers when it
    /// registered a socket can tell.
    pub batch: u64,
    /// Every entry of the worker.
    pub conns: Conns<C>,
    /// Every deadline of the worker.
    pub timers: Timers<T>,
    /// Where reads land first ([`SCRATCH_BYTES`]), borrowed by one connection at a time.
    pub scratch: Box<[u8]>,
    /// For registering sockets: `registry.register(&mut sock, id.token(tag), interest)`.
    pub registry: Registry,
    name: String,
    /// Entries that yielded their turn, driven again in phase 6.
    deferred: Vec<ConnId>,
}

impl<C, T> Context<C, T> {
    /// This worker's name in logs, e.g. `relay-0`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Asks for `id` to be resumed in phase 6, after the rest of the batch. A handler that has done its
    /// share of work for one turn ([`TURN_BUDGET`]) yields this way, so one fast stream cannot hold up the
    /// others.
    pub fn defer(&mut self, id: ConnId) {
        self.deferred.push(id);
    }

    /// True when `id` has yielded and waits for its resume (for tests of turn budgets).
    pub fn is_deferred(&self, id: ConnId) -> bool {
        self.deferred.contains(&id)
    }

    /// Closes `id`: from now on no lookup finds it, and the reap phase frees it. Closing twice is harmless.
    pub fn close(&mut self, id: ConnId) {
        self.conns.mark_closing(id);
    }
}

/// A handle other threads use to wake a worker, stop it or drain it.
#[derive(Clone)]
pub struct Remote {
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
    drain: Arc<AtomicBool>,
}

impl Remote {
    /// Makes the worker call [`Handler::on_wake`] soon.
    pub fn wake(&self) -> io::Result<()> {
        self.waker.wake()
    }

    /// Makes [`Worker::run`] return after its current iteration. Its connections are dropped with it.
    pub fn stop(&self) -> io::Result<()> {
        self.stop.store(true, Ordering::Release);
        self.waker.wake()
    }

    /// Makes the worker drain: at its next wake it accepts what its listener has queued, closes the
    /// listener, calls [`Handler::on_drain`] (once, however often this is called), and from then on
    /// [`Worker::run`] returns as soon as its slab is empty. [`Remote::stop`] still cuts a drain short.
    pub fn drain(&self) -> io::Result<()> {
        self.drain.store(true, Ordering::Release);
        self.waker.wake()
    }
}

/// One event loop and everything it owns.
pub struct Worker<H: Handler> {
    poll: Poll,
    events: Events,
    door: Door,
    handler: H,
    cx: Cx<H>,
    stats: LoopStats,
    /// When the last iteration ended: the poll's sleep is measured from there.
    idle_from: Instant,
    shared: Arc<WorkerStats>,
    remote: Remote,
}

impl<H: Handler> Worker<H> {
    /// A worker named `name` (in logs) that serves `handler` and warns about iterations busier than
    /// `loop_warn`.
    pub fn new(name: String, loop_warn: Duration, handler: H) -> io::Result<Worker<H>> {
        Worker::build(name, loop_warn, |_| handler)
    }

    /// Like [`Worker::new`], for a handler that needs the worker's [`Remote`] (to be woken by threads it
    /// hands work to).
    pub fn build(
        name: String,
        loop_warn: Duration,
        make: impl FnOnce(Remote) -> H,
    ) -> io::Result<Worker<H>> {
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let waker = Arc::new(Waker::new(poll.registry(), token::WAKER)?);
        let remote = Remote {
            waker,
            stop: Arc::default(),
            drain: Arc::default(),
        };
        let shared = Arc::<WorkerStats>::default();
        Ok(Worker {
            poll,
            events: Events::with_capacity(1024),
            door: Door::new(remote.drain.clone(), shared.clone()),
            cx: Context {
                now: Instant::now(),
                batch: 0,
                conns: Conns::default(),
                timers: Timers::default(),
                scratch: vec![0; SCRATCH_BYTES].into_boxed_slice(),
                registry,
                name,
                deferred: Vec::new(),
            },
            stats: LoopStats::new(loop_warn),
            idle_from: Instant::now(),
            shared,
            handler: make(remote.clone()),
            remote,
        })
    }

    /// Accepts connections from `listener` (made non-blocking here) for [`Handler::on_accept`]; opens the
    /// spare descriptor that turns clients away when no other is left (`door`).
    pub fn listen(&mut self, listener: std::net::TcpListener) -> io::Result<()> {
        listener.set_nonblocking(true)?;
        let mut sock = TcpListener::from_std(listener);
        count(Syscall::Register);
        self.poll
            .registry()
            .register(&mut sock, token::LISTENER, Interest::READABLE)?;
        self.door.open(sock);
        Ok(())
    }

    /// A handle to wake or stop this worker from another thread.
    pub fn remote(&self) -> Remote {
        self.remote.clone()
    }

    /// This worker's figures, readable from any thread.
    pub fn stats(&self) -> Arc<WorkerStats> {
        self.shared.clone()
    }

    /// The application (for tests and examples that look inside between turns).
    pub fn handler(&mut self) -> &mut H {
        &mut self.handler
    }

    /// The context (for tests and examples that look inside between turns).
    pub fn context(&mut self) -> &mut Cx<H> {
        &mut self.cx
    }

    /// The application and the context together (for tests that call a handler as a batch would).
    pub fn parts(&mut self) -> (&mut H, &mut Cx<H>) {
        (&mut self.handler, &mut self.cx)
    }

    /// Runs iterations until [`Remote::stop`], a drain that has emptied the slab ([`Remote::drain`]), or
    /// an unrecoverable `poll` error. Errors of one connection close that connection only.
    pub fn run(mut self) -> io::Result<()> {
        while !self.remote.stop.load(Ordering::Acquire) {
            self.turn(None)?;
            // Checked after the reap: a drained worker leaves when its last entry has been freed.
            if self.door.draining() && self.cx.conns.is_empty() {
                break;
            }
        }
        self.close_all();
        Ok(())
    }

    /// The worker stops with entries left (a drain whose time ran out, or [`Remote::stop`]): each is
    /// closed through [`Handler::on_close`], as the reap phase would, so that what the application does
    /// when a connection goes (ending a request's record: its count and its access log line) happens
    /// for these too, on this thread.
    fn close_all(&mut self) {
        let ids: Vec<ConnId> = self.cx.conns.iter().map(|(id, _)| id).collect();
        for id in ids {
            self.cx.close(id);
        }
        self.cx.now = Instant::now();
        while let Some((id, conn)) = self.cx.conns.pop_closing() {
            self.handler.on_close(&mut self.cx, id, conn);
        }
    }

    /// True once a drain has begun: the listener is closed and [`Handler::on_drain`] was called.
    pub fn draining(&self) -> bool {
        self.door.draining()
    }

    /// One iteration of the loop. `max_wait` caps the poll's wait (tests and examples pass one; `run`
    /// waits as long as the deadlines allow).
    pub fn turn(&mut self, max_wait: Option<Duration>) -> io::Result<()> {
        // 1. timeout: zero if someone waits to continue its turn (then we only collect what is ready)
        let more_to_do = !self.cx.deferred.is_empty() || self.door.wants_turn();
        let timeout = if more_to_do {
            Some(Duration::ZERO)
        } else {
            // A listener paused for lack of descriptors tries again at a deadline of its own.
            let now = Instant::now();
            let next = self.cx.timers.next_deadline();
            let until_deadline = next
                .into_iter()
                .chain(self.door.resume_at())
                .min()
                .map(|at| at.saturating_duration_since(now));
            until_deadline.into_iter().chain(max_wait).min()
        };
        // 2. poll
        count(Syscall::Poll);
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        }
        // 3. clock
        self.cx.now = Instant::now();
        self.cx.batch += 1;
        let woke = self.cx.now;
        let poll_wait = woke.saturating_duration_since(self.idle_from);
        // Times each handler call, to name the slowest if the iteration turns out slow.
        let mut watch = Stopwatch::start(woke);
        // 4. dispatch
        let mut n_events = 0;
        for event in self.events.iter() {
            n_events += 1;
            let call = dispatch(event, &mut self.handler, &mut self.cx, &mut self.door);
            watch.lap(call);
        }
        // 5. timers
        while let Some((due, id, what)) = self.cx.timers.pop_due(self.cx.now) {
            let late = self.cx.now.saturating_duration_since(due);
            self.stats.last_timer_lateness = late;
            self.shared.histograms.timer_lateness.record_duration(late);
            if self.cx.conns.get(id).is_some() {
                self.handler.on_timer(&mut self.cx, id, what);
                watch.lap(Call::Timer(id));
            }
        }
        // 6. resume
        self.resume(&mut watch);
        // Before the reap, while the slowest call's entry is still in the slab to be described.
        let culprit = match watch.slowest() {
            Some((took, call)) if self.stats.is_slow(watch.mark().duration_since(woke)) => {
                Some(self.describe(call, took))
            }
            _ => None,
        };
        // 7. reap
        while let Some((id, conn)) = self.cx.conns.pop_closing() {
            self.handler.on_close(&mut self.cx, id, conn);
            // Its sockets are closed: a listener paused for lack of descriptors may accept again.
            self.door.freed();
        }
        // 8. measure
        self.idle_from = Instant::now();
        let it = Iteration {
            busy: self.idle_from.saturating_duration_since(woke),
            poll_wait,
            events: n_events,
            culprit,
        };
        self.stats.record(&self.cx.name, it, &self.shared);
        Ok(())
    }

    /// Names the slowest call of a slow iteration: what it was for, how long it took, and what its
    /// handler says of the entry ([`Handler::describe`]).
    fn describe(&self, call: Call, took: Duration) -> String {
        let ms = took.as_secs_f64() * 1e3;
        let what = match call {
            Call::Event(id, tag) => {
                format!("an event for {}", self.handler.describe(&self.cx, id, tag))
            }
            Call::Timer(id) => format!(
                "a deadline of {}",
                self.handler.describe(&self.cx, id, Tag::MAIN)
            ),
            Call::Resume(id) => format!(
                "the resumed turn of {}",
                self.handler.describe(&self.cx, id, Tag::MAIN)
            ),
            Call::Accept => "accepting connections".to_string(),
            Call::Wake => "a wakeup (on_wake)".to_string(),
        };
        format!("{what}, {ms:.1} ms")
    }

    /// Phase 6. The list is taken first, so an entry that yields again is left for the next iteration
    /// (whose poll then does not wait).
    fn resume(&mut self, watch: &mut Stopwatch) {
        let mut ids = std::mem::take(&mut self.cx.deferred);
        // An entry may have yielded twice in one batch (from two of its sockets): one turn, not two.
        ids.sort_unstable();
        ids.dedup();
        for id in ids {
            if self.cx.conns.get(id).is_some() {
                self.handler.on_resume(&mut self.cx, id);
                watch.lap(Call::Resume(id));
            }
        }
        let accepting = self.door.wants_turn();
        self.door.accept(&mut self.handler, &mut self.cx);
        if accepting {
            watch.lap(Call::Accept);
        }
    }
}

#[cfg(test)]
mod tests;
