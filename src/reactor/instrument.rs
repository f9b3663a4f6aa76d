//! Loop-latency measurement and system-call counts.
//!
//! A reactor has one thread doing everything, so one slow handler delays every connection of the worker.
//! The number that tells an operator this is happening is the *busy time* of an iteration: from the moment
//! `poll` returned to the moment the loop is ready to wait again. [`LoopStats`] measures it every iteration
//! (it starts at the clock read the loop makes after `poll` anyway, and costs one more read at the end) and
//! warns, with the duration and the batch size, when it passes the threshold (`--loop-warn-ms`). It also
//! keeps how late the latest timer fired, which is the same delay seen from a deadline's side.
//!
//! # System calls
//!
//! What a relayed token costs is mostly system calls, so every call site counts itself with [`count`]:
//! the reactor its `epoll_wait` and `accept`, the connection layer's transport its reads, writes
//! and the rest. The counters are thread-local `Cell`s: a worker is one thread, so they are per worker
//! with no lock and no atomic on the hot path. Once per iteration (phase 8) the worker copies its counters
//! into its [`WorkerStats`], relaxed atomics that any thread may read, which is how tests, and later the
//! metrics endpoint, see them.

pub mod histogram;

use std::cell::Cell;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::token::{ConnId, Tag};

pub use histogram::{COUNT_BOUNDS, DURATION_BOUNDS, Histogram, HistogramSnapshot};

/// The kinds of system call the reactor and the transport make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syscall {
    /// `epoll_wait` (or `kevent`): one per loop iteration.
    Poll,
    /// `accept4`, including the one that finds the backlog empty.
    Accept,
    /// A non-blocking `connect` (it "fails" with `EINPROGRESS`, as it should).
    Connect,
    /// `recv`/`read`, including those that return `EAGAIN`.
    Read,
    /// A `read` that returned `EAGAIN`: the cost of learning that a socket is drained.
    ReadWouldBlock,
    /// `send`/`write`.
    Write,
    /// `writev`.
    Writev,
    /// `recv(MSG_PEEK)`: a look at a socket without taking its bytes.
    Peek,
    /// `shutdown`.
    Shutdown,
    /// `epoll_ctl` (register, reregister).
    Register,
}

impl Syscall {
    /// Every kind, in a fixed order.
    pub const ALL: [Syscall; 10] = [
        Syscall::Poll,
        Syscall::Accept,
        Syscall::Connect,
        Syscall::Read,
        Syscall::ReadWouldBlock,
        Syscall::Write,
        Syscall::Writev,
        Syscall::Peek,
        Syscall::Shutdown,
        Syscall::Register,
    ];

    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Syscall::Poll => "poll",
            Syscall::Accept => "accept",
            Syscall::Connect => "connect",
            Syscall::Read => "read",
            Syscall::ReadWouldBlock => "read_would_block",
            Syscall::Write => "write",
            Syscall::Writev => "writev",
            Syscall::Peek => "peek",
            Syscall::Shutdown => "shutdown",
            Syscall::Register => "register",
        }
    }
}

const KINDS: usize = Syscall::ALL.len();

thread_local! {
    static COUNTS: [Cell<u64>; KINDS] = const { [const { Cell::new(0) }; KINDS] };
}

/// Counts one system call of `kind` on this thread (that is, in this worker).
#[inline]
pub fn count(kind: Syscall) {
    COUNTS.with(|c| {
        let cell = &c[kind as usize];
        cell.set(cell.get() + 1);
    });
}

/// Quantities that go up and down, kept like the system-call counts (thread-local, so per worker, and
/// published once per iteration): who holds descriptors, and what waits in output buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Accepted sockets open (clients).
    ClientSockets,
    /// Sockets to upstreams open, pooled ones included.
    UpstreamSockets,
    /// Upstream sockets idle in a pool.
    PooledUpstreams,
    /// Bytes queued in output buffers that their socket has not taken yet (backpressure).
    HeldBytes,
    /// Output buffers holding such bytes: connections whose peer reads slower than they are written to.
    HeldBuffers,
}

impl Level {
    /// Every level, in a fixed order.
    pub const ALL: [Level; 5] = [
        Level::ClientSockets,
        Level::UpstreamSockets,
        Level::PooledUpstreams,
        Level::HeldBytes,
        Level::HeldBuffers,
    ];
}

const LEVELS: usize = Level::ALL.len();

thread_local! {
    static LEVEL: [Cell<i64>; LEVELS] = const { [const { Cell::new(0) }; LEVELS] };
}

/// Moves a level of this thread (this worker) by `delta`. Whoever raises a level lowers it when the thing
/// goes (most often in a `Drop`), on the same thread, so a worker's levels come back to zero when its
/// connections are gone.
#[inline]
pub fn adjust(level: Level, delta: i64) {
    LEVEL.with(|l| {
        let cell = &l[level as usize];
        cell.set(cell.get() + delta);
    });
}

/// One unit of a level for as long as it lives: raised when made, lowered when dropped (a pooled
/// connection's entry holds one of [`Level::PooledUpstreams`]).
#[derive(Debug)]
pub struct Held(Level);

impl Held {
    pub fn new(level: Level) -> Held {
        adjust(level, 1);
        Held(level)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        adjust(self.0, -1);
    }
}

/// This thread's current value of `level`.
pub fn level(level: Level) -> i64 {
    LEVEL.with(|l| l[level as usize].get())
}

/// System calls by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyscallCounts([u64; KINDS]);

impl SyscallCounts {
    /// This thread's counts since it started.
    pub fn this_thread() -> SyscallCounts {
        COUNTS.with(|c| SyscallCounts(std::array::from_fn(|i| c[i].get())))
    }

    /// The count of one kind.
    pub fn get(&self, kind: Syscall) -> u64 {
        self.0[kind as usize]
    }

    /// Every call counted (a would-block read is already counted as a read).
    pub fn total(&self) -> u64 {
        Syscall::ALL
            .iter()
            .filter(|&&k| k != Syscall::ReadWouldBlock)
            .map(|&k| self.get(k))
            .sum()
    }

    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &SyscallCounts) -> SyscallCounts {
        SyscallCounts(std::array::from_fn(|i| {
            self.0[i].saturating_sub(earlier.0[i])
        }))
    }
}

impl std::ops::Add for SyscallCounts {
    type Output = SyscallCounts;
    fn add(self, other: SyscallCounts) -> SyscallCounts {
        SyscallCounts(std::array::from_fn(|i| self.0[i] + other.0[i]))
    }
}

/// A worker's figures, readable from any thread (relaxed atomics: statistics, not synchronization).
#[derive(Debug, Default)]
pub struct WorkerStats {
    syscalls: [AtomicU64; KINDS],
    levels: [AtomicI64; LEVELS],
    iterations: AtomicU64,
    slow_iterations: AtomicU64,
    max_busy_micros: AtomicU64,
    /// Times accepting paused because `accept` failed (above all for lack of descriptors): counted when
    /// it happens, which is rare, rather than published per iteration.
    accept_paused: AtomicU64,
    /// The worker's listener is open (descriptors: the listener, and its spare).
    listening: std::sync::atomic::AtomicBool,
    /// The loop's own histograms, recorded by the worker as it goes.
    pub histograms: LoopHistograms,
}

/// How a worker's iterations went, one observation per iteration (per fired timer for the lateness).
#[derive(Debug)]
pub struct LoopHistograms {
    /// Time asleep in `epoll_wait` (phase 2): long waits mean an idle worker.
    pub poll_wait: Histogram,
    /// Time from the wakeup to the end of the iteration: what every connection of the worker waited.
    pub busy: Histogram,
    /// Events handed out per wakeup: how much work one `epoll_wait` brings.
    pub events: Histogram,
    /// How long after its deadline each timer fired.
    pub timer_lateness: Histogram,
}

impl Default for LoopHistograms {
    fn default() -> Self {
        LoopHistograms {
            poll_wait: Histogram::durations(),
            busy: Histogram::durations(),
            events: Histogram::new(COUNT_BOUNDS),
            timer_lateness: Histogram::durations(),
        }
    }
}

/// A copy of [`WorkerStats`] at one moment; several workers' copies add up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub syscalls: SyscallCounts,
    pub iterations: u64,
    pub slow_iterations: u64,
    pub max_busy: Duration,
    /// Times accepting paused: `accept` failed, above all with `EMFILE`/`ENFILE` (`reactor::door`).
    pub accept_paused: u64,
}

impl WorkerStats {
    /// Reads the figures.
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            syscalls: SyscallCounts(std::array::from_fn(|i| get(&self.syscalls[i]))),
            iterations: get(&self.iterations),
            slow_iterations: get(&self.slow_iterations),
            max_busy: Duration::from_micros(get(&self.max_busy_micros)),
            accept_paused: get(&self.accept_paused),
        }
    }

    /// The worker's current `level` (as of its last iteration).
    pub fn level(&self, level: Level) -> i64 {
        self.levels[level as usize].load(Ordering::Relaxed)
    }

    /// Whether the worker's listener is open.
    pub fn listening(&self) -> bool {
        self.listening.load(Ordering::Relaxed)
    }

    /// The worker's door opened or closed its listener.
    pub fn set_listening(&self, open: bool) {
        self.listening.store(open, Ordering::Relaxed);
    }

    /// Counts one pause of accepting (the worker's door, when `accept` fails).
    pub fn count_accept_pause(&self) {
        self.accept_paused.fetch_add(1, Ordering::Relaxed);
    }

    /// Copies the loop's figures and this thread's system-call counts (phase 8 of every iteration).
    fn publish(&self, stats: &LoopStats) {
        let counts = SyscallCounts::this_thread();
        for (atomic, value) in self.syscalls.iter().zip(counts.0) {
            atomic.store(value, Ordering::Relaxed);
        }
        LEVEL.with(|l| {
            for (atomic, cell) in self.levels.iter().zip(l) {
                atomic.store(cell.get(), Ordering::Relaxed);
            }
        });
        self.iterations.store(stats.iterations, Ordering::Relaxed);
        self.slow_iterations
            .store(stats.slow_iterations, Ordering::Relaxed);
        let micros = u64::try_from(stats.max_busy.as_micros()).unwrap_or(u64::MAX);
        self.max_busy_micros.store(micros, Ordering::Relaxed);
    }
}

impl std::ops::Add for StatsSnapshot {
    type Output = StatsSnapshot;
    fn add(self, other: StatsSnapshot) -> StatsSnapshot {
        StatsSnapshot {
            syscalls: self.syscalls + other.syscalls,
            iterations: self.iterations + other.iterations,
            slow_iterations: self.slow_iterations + other.slow_iterations,
            max_busy: self.max_busy.max(other.max_busy),
            accept_paused: self.accept_paused + other.accept_paused,
        }
    }
}

/// Per-worker loop statistics, kept by the loop itself.
pub struct LoopStats {
    warn_after: Duration,
    /// Iterations run so far.
    pub iterations: u64,
    /// The longest busy time seen.
    pub max_busy: Duration,
    /// Iterations whose busy time passed `warn_after`.
    pub slow_iterations: u64,
    /// How late the most recent timer fired (its deadline to the moment it ran).
    pub last_timer_lateness: Duration,
}

impl LoopStats {
    /// Statistics that warn about iterations busier than `warn_after`.
    pub fn new(warn_after: Duration) -> Self {
        LoopStats {
            warn_after,
            iterations: 0,
            max_busy: Duration::ZERO,
            slow_iterations: 0,
            last_timer_lateness: Duration::ZERO,
        }
    }

    /// Whether an iteration busy for `busy` is over the threshold.
    pub fn is_slow(&self, busy: Duration) -> bool {
        busy > self.warn_after
    }

    /// Records one iteration and publishes the figures to `shared`; returns true (and logs a warning
    /// naming `culprit`, the slowest handler, when known) when the iteration was too slow.
    pub fn record(&mut self, worker: &str, it: Iteration, shared: &WorkerStats) -> bool {
        self.iterations += 1;
        self.max_busy = self.max_busy.max(it.busy);
        let h = &shared.histograms;
        h.busy.record_duration(it.busy);
        h.poll_wait.record_duration(it.poll_wait);
        h.events.record(it.events as u64);
        let slow = self.is_slow(it.busy);
        if slow {
            self.slow_iterations += 1;
            let culprit = it.culprit.as_deref().unwrap_or("unknown");
            log::warn!(
                "{worker}: loop iteration busy for {:.1} ms handling {} events (over --loop-warn-ms {}); \
                 slowest: {culprit}",
                it.busy.as_secs_f64() * 1e3,
                it.events,
                self.warn_after.as_millis()
            );
        }
        shared.publish(self);
        slow
    }
}

/// What one iteration of the loop came to (phase 8).
#[derive(Debug, Default)]
pub struct Iteration {
    /// From the wakeup to now.
    pub busy: Duration,
    /// Asleep in `epoll_wait` before it.
    pub poll_wait: Duration,
    /// Events the poll returned.
    pub events: usize,
    /// The slowest handler call, described by its handler; only asked for when the iteration is slow.
    pub culprit: Option<String>,
}

/// What a handler call was for, so that the slowest one of an iteration can be named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// An event of socket `tag` of entry `id`.
    Event(ConnId, Tag),
    /// A deadline of entry `id`.
    Timer(ConnId),
    /// Entry `id` continuing its turn.
    Resume(ConnId),
    /// The listener accepting.
    Accept,
    /// The waker (`on_wake`, a drain).
    Wake,
}

/// Times each handler call of an iteration (one clock read per call) and remembers the slowest.
#[derive(Debug)]
pub struct Stopwatch {
    mark: Instant,
    slowest: Option<(Duration, Call)>,
}

impl Stopwatch {
    /// Starts at `now` (the wakeup).
    pub fn start(now: Instant) -> Stopwatch {
        Stopwatch {
            mark: now,
            slowest: None,
        }
    }

    /// A call for `what` just returned: it took the time since the previous mark.
    #[inline]
    pub fn lap(&mut self, what: Call) {
        let now = Instant::now();
        let took = now.saturating_duration_since(self.mark);
        self.mark = now;
        if self.slowest.is_none_or(|(t, _)| took > t) {
            self.slowest = Some((took, what));
        }
    }

    /// The time of the last mark (the end of the last call).
    pub fn mark(&self) -> Instant {
        self.mark
    }

    /// The slowest call and how long it took.
    pub fn slowest(&self) -> Option<(Duration, Call)> {
        self.slowest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_iterations_over_the_threshold_count_as_slow() {
        let shared = WorkerStats::default();
        let mut s = LoopStats::new(Duration::from_millis(10));
        let it = |ms| Iteration {
            busy: Duration::from_millis(ms),
            events: 3,
            ..Iteration::default()
        };
        assert!(!s.record("w", it(10), &shared));
        assert!(s.record("w", it(11), &shared));
        assert_eq!(shared.histograms.busy.snapshot().count_above(10_000_000), 1);
        assert_eq!(shared.histograms.events.snapshot().count(), 2);
        assert_eq!((s.iterations, s.slow_iterations), (2, 1));
        assert_eq!(s.max_busy, Duration::from_millis(11));
        let snap = shared.snapshot();
        assert_eq!((snap.iterations, snap.slow_iterations), (2, 1));
        assert_eq!(snap.max_busy, Duration::from_millis(11));
    }

    #[test]
    fn counts_are_per_thread_and_published() {
        let shared = WorkerStats::default();
        std::thread::spawn(move || {
            count(Syscall::Read);
            count(Syscall::Read);
            count(Syscall::ReadWouldBlock);
            count(Syscall::Writev);
            let mine = SyscallCounts::this_thread();
            assert_eq!(mine.get(Syscall::Read), 2);
            assert_eq!(
                mine.total(),
                3,
                "a would-block read is one read, not two calls"
            );
            let mut s = LoopStats::new(Duration::from_secs(1));
            adjust(Level::HeldBytes, 5);
            s.record("w", Iteration::default(), &shared);
            assert_eq!(shared.level(Level::HeldBytes), 5);
            assert_eq!(shared.snapshot().syscalls, mine);
        })
        .join()
        .unwrap();
        assert_eq!(
            SyscallCounts::this_thread().get(Syscall::Writev),
            0,
            "another thread's calls are not this thread's"
        );
    }
}
