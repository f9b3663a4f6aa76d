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

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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
    iterations: AtomicU64,
    slow_iterations: AtomicU64,
    max_busy_micros: AtomicU64,
    /// Times accepting paused because `accept` failed (above all for lack of descriptors): counted when
    /// it happens, which is rare, rather than published per iteration.
    accept_paused: AtomicU64,
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

    /// Records one iteration and publishes the figures to `shared`; returns true (and logs a warning)
    /// when the iteration was too slow.
    pub fn record(
        &mut self,
        worker: &str,
        busy: Duration,
        events: usize,
        shared: &WorkerStats,
    ) -> bool {
        self.iterations += 1;
        self.max_busy = self.max_busy.max(busy);
        let slow = busy > self.warn_after;
        if slow {
            self.slow_iterations += 1;
            log::warn!(
                "{worker}: loop iteration busy for {:.1} ms handling {events} events (over --loop-warn-ms {})",
                busy.as_secs_f64() * 1e3,
                self.warn_after.as_millis()
            );
        }
        shared.publish(self);
        slow
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_iterations_over_the_threshold_count_as_slow() {
        let shared = WorkerStats::default();
        let mut s = LoopStats::new(Duration::from_millis(10));
        assert!(!s.record("w", Duration::from_millis(10), 3, &shared));
        assert!(s.record("w", Duration::from_millis(11), 3, &shared));
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
            s.record("w", Duration::ZERO, 0, &shared);
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
