//! Admission: how many requests an upstream is sent at once, and who waits for a turn.
//!
//! Each upstream has one [`Gate`], shared by every worker (it lives in the `UpstreamTarget` they share).
//! A request takes a [`Permit`] before it looks for a connection; past the cap it takes a place in the
//! queue instead (a [`Ticket`]), up to the queue's bound; past that it is refused at once with a 503. A
//! place in the queue has a deadline: an exchange still waiting when it passes is refused with a 503 too.
//! `Retry-After` tells the client when to come back.
//!
//! Both permits and tickets are released by `Drop`, so every path that ends an exchange (it completes, it
//! fails, its client leaves, a deadline passes) gives them back without having to remember to: the
//! counts cannot leak. When a permit is given back while requests wait, the workers that have some are
//! woken ([`crate::reactor::Remote::wake`]); each admits its own waiters, in order, while permits last
//! ([`Gate::try_acquire`]). Waiters live in their worker (a queue of client ids, `Upstreams::admit`),
//! since only that worker may touch them; the gate only counts.
//!
//! The counts are atomics: taken once per request, never per chunk.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::reactor::Remote;

/// How many requests an upstream takes at once (per process; instances share nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionLimits {
    /// Most requests in flight to the upstream (`None`: no cap).
    pub max_concurrent: Option<usize>,
    /// Most requests waiting for a turn beyond the cap.
    pub queue: usize,
    /// How long a request may wait for its turn.
    pub queue_timeout: Duration,
}

impl Default for AdmissionLimits {
    fn default() -> Self {
        AdmissionLimits {
            max_concurrent: None,
            queue: 64,
            queue_timeout: Duration::from_secs(5),
        }
    }
}

/// A worker that may have requests waiting: how to wake it, and how many it has.
struct Waker {
    remote: Remote,
    waiting: Arc<AtomicUsize>,
}

/// The admission counts of one upstream.
pub struct Gate {
    limits: AdmissionLimits,
    in_flight: AtomicUsize,
    queued: AtomicUsize,
    wakers: Mutex<Vec<Waker>>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("limits", &self.limits)
            .field("in_flight", &self.in_flight())
            .field("queued", &self.queued())
            .finish()
    }
}

/// The right to send one request to the upstream; given back when dropped.
#[derive(Debug)]
pub struct Permit {
    gate: Arc<Gate>,
}

/// A place in the upstream's queue; given back when dropped (admitted, refused, or its client left).
#[derive(Debug)]
pub struct Ticket {
    gate: Arc<Gate>,
    /// The waiting count of the worker that holds it.
    waiting: Arc<AtomicUsize>,
}

/// What asking for a turn came to.
#[derive(Debug)]
pub enum Admission {
    Admitted(Permit),
    /// Wait in the queue (at most `queue_timeout`).
    Queued(Ticket),
    /// The queue is full too.
    Refused,
}

impl Gate {
    pub fn new(limits: AdmissionLimits) -> Arc<Gate> {
        Arc::new(Gate {
            limits,
            in_flight: AtomicUsize::new(0),
            queued: AtomicUsize::new(0),
            wakers: Mutex::new(Vec::new()),
        })
    }

    pub fn limits(&self) -> AdmissionLimits {
        self.limits
    }

    /// Requests holding a permit now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Requests waiting in the queue now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// A worker joins: it is woken when a permit frees while `waiting` (its count of waiters) is not zero.
    pub fn register(&self, remote: Remote, waiting: Arc<AtomicUsize>) {
        if let Ok(mut wakers) = self.wakers.lock() {
            wakers.push(Waker { remote, waiting });
        }
    }

    /// A permit, if one is free.
    pub fn try_acquire(self: &Arc<Gate>) -> Option<Permit> {
        let cap = self.limits.max_concurrent.unwrap_or(usize::MAX);
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < cap).then_some(n + 1)
            })
            .ok()
            .map(|_| Permit { gate: self.clone() })
    }

    /// A permit, or a place in the queue for a worker whose count of waiters is `waiting`, or neither.
    pub fn admit(self: &Arc<Gate>, waiting: &Arc<AtomicUsize>) -> Admission {
        if let Some(permit) = self.try_acquire() {
            return Admission::Admitted(permit);
        }
        let bound = self.limits.queue;
        let placed = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < bound).then_some(n + 1)
            })
            .is_ok();
        if !placed {
            return Admission::Refused;
        }
        waiting.fetch_add(1, Ordering::AcqRel);
        // A permit may have been given back between the first try and taking the place, with nobody
        // queued yet to be woken for it: try once more, so that the waiter never waits for a free permit.
        let ticket = Ticket {
            gate: self.clone(),
            waiting: waiting.clone(),
        };
        match self.try_acquire() {
            Some(permit) => {
                drop(ticket);
                Admission::Admitted(permit)
            }
            None => Admission::Queued(ticket),
        }
    }

    /// A permit was given back: wake the workers that have requests waiting.
    fn released(&self) {
        if self.queued.load(Ordering::Acquire) == 0 {
            return;
        }
        if let Ok(wakers) = self.wakers.lock() {
            for w in wakers.iter() {
                if w.waiting.load(Ordering::Acquire) > 0 {
                    // A failed wake means the worker is gone: nothing waits there any more.
                    let _ = w.remote.wake();
                }
            }
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.gate.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.gate.released();
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.gate.queued.fetch_sub(1, Ordering::AcqRel);
        self.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(cap: usize, queue: usize) -> AdmissionLimits {
        AdmissionLimits {
            max_concurrent: Some(cap),
            queue,
            queue_timeout: Duration::from_secs(1),
        }
    }

    /// With a cap of 4 and a queue of 4, the 9th request is refused; every permit and place comes back.
    #[test]
    fn the_cap_then_the_queue_then_refusal() {
        let gate = Gate::new(limits(4, 4));
        let waiting = Arc::new(AtomicUsize::new(0));
        let mut held = Vec::new();
        for i in 0..9 {
            match (i, gate.admit(&waiting)) {
                (0..4, Admission::Admitted(p)) => held.push((Some(p), None)),
                (4..8, Admission::Queued(t)) => held.push((None, Some(t))),
                (8, Admission::Refused) => {}
                (i, other) => panic!("request {i}: {other:?}"),
            }
        }
        assert_eq!((gate.in_flight(), gate.queued()), (4, 4));
        assert_eq!(waiting.load(Ordering::Acquire), 4);
        drop(held);
        assert_eq!((gate.in_flight(), gate.queued()), (0, 0));
        assert_eq!(waiting.load(Ordering::Acquire), 0);
        assert!(matches!(gate.admit(&waiting), Admission::Admitted(_)));
    }

    #[test]
    fn no_cap_admits_everyone() {
        let gate = Gate::new(AdmissionLimits::default());
        let waiting = Arc::new(AtomicUsize::new(0));
        let permits: Vec<_> = (0..1000)
            .map(|_| match gate.admit(&waiting) {
                Admission::Admitted(p) => p,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(gate.in_flight(), 1000);
        drop(permits);
        assert_eq!(gate.in_flight(), 0);
    }

    /// Many threads taking and giving back permits never see more than the cap in flight.
    #[test]
    fn the_cap_holds_across_threads() {
        let gate = Gate::new(limits(3, 0));
        let peak = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (gate, peak) = (gate.clone(), peak.clone());
                std::thread::spawn(move || {
                    for _ in 0..2000 {
                        if let Some(p) = gate.try_acquire() {
                            peak.fetch_max(gate.in_flight(), Ordering::AcqRel);
                            drop(p);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(peak.load(Ordering::Acquire) <= 3);
        assert_eq!(gate.in_flight(), 0);
    }
}
