//! Micro-benchmarks of the reactor's deadline set, [`Timers`] (`src/reactor/timers.rs`), the one ordered
//! set of `(deadline, connection, what)` each worker keeps.
//!
//! Run with `cargo bench --bench timers` (add `-- --warm-up-time 1 --measurement-time 2` for a quick
//! look). Every operation is timed against a set already holding 10, 1,000 and 10,000 armed deadlines: a
//! relay holds a few per stream (an exchange's connect, head and idle deadlines, a lingering client's
//! deadline, each idle pooled upstream connection's expiry), so these are a handful of streams, a busy
//! worker, and a very busy one (some 5,000 streams). The sets are built once, outside the timing loop,
//! with deadlines spread at random over one minute (1 s to 61 s after "now", inserted in random order, two
//! per connection), and every operation is checked once before it is timed. Each timed operation leaves
//! the set as it found it, so its size never drifts while criterion runs.
//!
//! # Why a `BTreeMap` keyed by *(instant, sequence)*
//!
//! The loop asks three things of its deadlines: the earliest one, on *every* iteration (it is the poll
//! timeout); the due ones, in order (phase 5 pops them one by one); and cancelling one by its handle,
//! which is what happens to almost every deadline: a deadline guards a wait (a connect, a response head,
//! the next body bytes, a lingering client) and is cancelled when the wait ends, which it normally does
//! long before the deadline. A `BTreeMap` does all three in O(log n) with the key itself as the handle
//! ([`tokenpipe::reactor::TimerKey`] *is* the map key, so cancelling needs no side index), leaves no
//! garbage behind a cancel, and keeps memory proportional to what is armed. A binary heap would give the
//! earliest deadline in O(1) but cannot remove an arbitrary entry: it would need tombstones (cancelled
//! entries left in the heap until they reach the top, so a per-chunk re-arm would pile up one dead entry
//! per chunk for a whole timeout's worth of chunks) or an index of positions kept up to date on every
//! swap. A timer wheel makes insert and cancel O(1) but needs a tick size and overflow levels, which
//! these figures show nothing calls for.
//!
//! The sequence number is there because instants tie, and often: the reactor reads the clock once per
//! iteration, so every deadline armed in one batch with the same timeout gets the *same* instant. Keyed
//! by instant alone, the second would overwrite the first. With a per-set counter each key is unique,
//! and deadlines that tie fire in the order they were armed.
//!
//! # Groups
//!
//! Each group has one benchmark per set size (the benchmark id is the number of armed deadlines).
//!
//! - **`insert_cancel`**: arm a deadline 30 s from now (the middle of the set) and cancel it: the whole
//!   life of a deadline that never fires, armed when a wait starts and cancelled when it ends.
//! - **`rearm`**: cancel one armed deadline and arm it again a little later, as a per-chunk idle
//!   deadline would on every read of a stream's body (`relay::exchange::Deadlines::arm` does exactly
//!   this when a slot already holds a deadline). The deadline moves 1 µs later on each re-arm, wrapping after 1,000 re-arms (a
//!   1 ms window in the middle of the set) so it never runs off the end however long criterion runs.
//! - **`pop_due_batch`**: the reactor's timer phase: `pop_due(now)` until it returns `None`, with the
//!   100 earliest deadlines due (all of them in the 10-deadline set). Throughput is in deadlines fired.
//!   Only the pops are timed (`iter_custom`, two clock reads per batch, which add a few tens of
//!   nanoseconds per batch); the fired deadlines are collected into a preallocated vector (a stand-in
//!   for the handler call) and re-armed at their instants, untimed, before the next batch.
//! - **`next_deadline`**: the earliest deadline, which the loop asks for on every iteration to compute
//!   its poll timeout.
//!
//! # What the figures say about per-chunk re-arming
//!
//! An idle deadline re-armed on every body read costs one `rearm` per read: one removal and one insert,
//! each a descent of a B-tree of nodes of up to 11 keys, so the cost grows with log n, not n. Indicative
//! figures from the machine this was written on (a noisy two-core VM; expect the last digit to move):
//!
//! | armed deadlines | 10              | 1,000            | 10,000           |
//! |-----------------|-----------------|------------------|------------------|
//! | `insert_cancel` | 42-65 ns        | 48-79 ns         | 57-81 ns         |
//! | `rearm`         | 54-66 ns        | 60-73 ns         | 67-81 ns         |
//! | `pop_due_batch` | 190-240 ns / 10 | 2.1-2.8 µs / 100 | 2.2-2.9 µs / 100 |
//! | `next_deadline` | 0.7-0.8 ns      | 1.2 ns           | 1.4-1.6 ns       |
//!
//! (A fired deadline costs 15 to 30 ns; the 10-deadline batch includes about 45 ns of clock reads.)
//!
//! So a per-chunk re-arm costs 55 to 80 ns at any realistic size. That is *more* than the relay's own
//! work on the bytes of a one-event read (decode, gather and size line take about 15 ns for a 196-byte
//! read in `benches/forward.rs`), but it is about 1% of the two system calls the same read costs: on the
//! same machine, a `read` and a `writev` of such a chunk over loopback take about 3 µs each. Re-arming
//! per chunk is therefore affordable as it is, and going from 10 to 10,000 armed deadlines adds only
//! about 15 ns to it. Nothing here calls for the usual way around it (keep a last-activity instant per
//! stream, let the deadline fire at its original instant, and re-arm then only if the stream was active
//! since), nor for a different structure; if the set ever shows in a profile, that lazy re-arm is the
//! change to make first, since it removes the per-chunk cost instead of shaving it.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tokenpipe::reactor::{ConnId, Conns, TimerKey, Timers};

/// How many deadlines the set holds while an operation is timed.
const SIZES: [usize; 3] = [10, 1_000, 10_000];

/// How many deadlines fall due at once in `pop_due_batch` (fewer if the set is smaller).
const DUE_AT_ONCE: usize = 100;

/// The armed deadlines fall between `now + EARLIEST` and `now + EARLIEST + SPREAD`.
const EARLIEST: Duration = Duration::from_secs(1);
const SPREAD: Duration = Duration::from_secs(60);

/// Where a newly armed deadline lands: a 30-second wait armed now, in the middle of the set.
const WAIT: Duration = Duration::from_secs(30);

/// What a deadline is for (the relay's timer key is a small enum like this one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deadline {
    Head,
    Idle,
}

/// A small deterministic generator (xorshift64*), so every run builds the same sets.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// A set of armed deadlines and what a benchmark needs to know about it.
struct Armed {
    /// "Now" for the benchmark: every armed deadline is at least [`EARLIEST`] later.
    now: Instant,
    timers: Timers<Deadline>,
    /// The connections the deadlines belong to (two deadlines each).
    ids: Vec<ConnId>,
    /// The handles of the armed deadlines, in the order they were armed.
    keys: Vec<TimerKey>,
    /// The armed instants, ascending.
    sorted: Vec<Instant>,
}

/// `n` deadlines at random instants between `now + EARLIEST` and `now + EARLIEST + SPREAD`, armed in
/// random order for `n / 2` connections (rounded up).
fn armed(n: usize) -> Armed {
    let now = Instant::now();
    let mut conns = Conns::default();
    let ids: Vec<ConnId> = (0..n.div_ceil(2))
        .map(|_| conns.insert_with(|_| ()).expect("the slab has room"))
        .collect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let spread_ns = u64::try_from(SPREAD.as_nanos()).expect("a minute fits in a u64");
    let mut timers = Timers::default();
    let mut keys = Vec::with_capacity(n);
    let mut sorted = Vec::with_capacity(n);
    for i in 0..n {
        let at = now + EARLIEST + Duration::from_nanos(rng.next() % spread_ns);
        let what = if i % 2 == 0 {
            Deadline::Head
        } else {
            Deadline::Idle
        };
        keys.push(timers.insert(at, ids[i / 2], what));
        sorted.push(at);
    }
    sorted.sort_unstable();
    assert_eq!(timers.len(), n);
    assert_eq!(timers.next_deadline(), sorted.first().copied());
    assert_eq!(timers.pop_due(now), None, "nothing is due yet");
    Armed {
        now,
        timers,
        ids,
        keys,
        sorted,
    }
}

/// Arms a deadline at `at` and cancels it.
fn insert_cancel_once(timers: &mut Timers<Deadline>, at: Instant, id: ConnId) {
    let key = timers.insert(at, id, Deadline::Idle);
    timers.cancel(black_box(key));
}

/// The `i`-th re-arm's instant: 1 µs later per re-arm, wrapping every 1,000.
fn rearm_at(base: Instant, i: u64) -> Instant {
    base + Duration::from_micros(i % 1_000)
}

/// Cancels `key` and arms the same wait again at `at`; returns the new handle.
fn rearm_once(timers: &mut Timers<Deadline>, key: TimerKey, at: Instant, id: ConnId) -> TimerKey {
    timers.cancel(key);
    timers.insert(at, id, Deadline::Idle)
}

/// Pops every deadline due at `now` into `fired` (cleared first), as the reactor's timer phase does.
fn pop_due_all(
    timers: &mut Timers<Deadline>,
    now: Instant,
    fired: &mut Vec<(Instant, ConnId, Deadline)>,
) {
    fired.clear();
    while let Some(due) = timers.pop_due(black_box(now)) {
        fired.push(due);
    }
}

/// Re-arms what [`pop_due_all`] fired, at the same instants, so the next batch finds the same set.
fn rearm_fired(timers: &mut Timers<Deadline>, fired: &mut Vec<(Instant, ConnId, Deadline)>) {
    for (at, id, what) in fired.drain(..) {
        timers.insert(at, id, what);
    }
}

fn insert_cancel(c: &mut Criterion) {
    let mut group = c.benchmark_group("insert_cancel");
    for n in SIZES {
        let mut set = armed(n);
        let at = set.now + WAIT;
        let id = set.ids[0];
        insert_cancel_once(&mut set.timers, at, id);
        assert_eq!(set.timers.len(), n);
        assert_eq!(set.timers.next_deadline(), set.sorted.first().copied());

        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| insert_cancel_once(&mut set.timers, black_box(at), id));
        });
        assert_eq!(set.timers.len(), n);
    }
    group.finish();
}

fn rearm(c: &mut Criterion) {
    let mut group = c.benchmark_group("rearm");
    for n in SIZES {
        let mut set = armed(n);
        let base = set.now + WAIT;
        // The re-armed deadline is one of the set's own: the first one armed, for the first connection.
        let id = set.ids[0];
        let mut key = rearm_once(&mut set.timers, set.keys[0], rearm_at(base, 0), id);
        assert_eq!(set.timers.len(), n);
        let later = rearm_once(&mut set.timers, key, rearm_at(base, 1), id);
        assert!(later.at() > key.at());
        assert_eq!(set.timers.len(), n);
        key = later;

        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            let mut i = 2;
            b.iter(|| {
                key = rearm_once(&mut set.timers, key, black_box(rearm_at(base, i)), id);
                i += 1;
            });
        });
        assert_eq!(set.timers.len(), n);
    }
    group.finish();
}

fn pop_due_batch(c: &mut Criterion) {
    let mut group = c.benchmark_group("pop_due_batch");
    for n in SIZES {
        let mut set = armed(n);
        let due = DUE_AT_ONCE.min(n);
        // The instant at which exactly the `due` earliest deadlines are due.
        let now = set.sorted[due - 1];
        let mut fired = Vec::with_capacity(due);
        pop_due_all(&mut set.timers, now, &mut fired);
        assert_eq!(fired.len(), due);
        assert!(
            fired
                .iter()
                .map(|f| f.0)
                .eq(set.sorted[..due].iter().copied())
        );
        assert_eq!(set.timers.next_deadline(), set.sorted.get(due).copied());
        rearm_fired(&mut set.timers, &mut fired);
        assert_eq!(set.timers.len(), n);

        group.throughput(Throughput::Elements(due as u64));
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    pop_due_all(&mut set.timers, now, &mut fired);
                    timed += start.elapsed();
                    black_box(fired.as_slice());
                    rearm_fired(&mut set.timers, &mut fired);
                }
                timed
            });
        });
        assert_eq!(set.timers.len(), n);
    }
    group.finish();
}

fn next_deadline(c: &mut Criterion) {
    let mut group = c.benchmark_group("next_deadline");
    for n in SIZES {
        let set = armed(n);
        assert_eq!(set.timers.next_deadline(), set.sorted.first().copied());

        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| black_box(&set.timers).next_deadline());
        });
    }
    group.finish();
}

criterion_group!(benches, insert_cancel, rearm, pop_due_batch, next_deadline);
criterion_main!(benches);
