//! A worker's side of admission: asking an upstream's breaker and gate for a turn, the queue of its own
//! exchanges that wait for one, and the waits between retries.
//!
//! The shared counts are in `relay::admission` (the gate) and `relay::health` (the breaker); what only
//! this worker may touch (which of its clients wait, in what order) is here.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use super::admission::Admission;
use super::connector::Connector;
use super::exchange::{Exchange, Failure, exchange_in};
use super::health::Verdict;
use super::retry::{Jitter, RetryPolicy};
use super::{Entry, UpstreamTarget};
use crate::reactor::{ConnId, Conns, Remote};

/// What asking for a turn came to.
#[derive(Debug)]
pub(super) enum Asked {
    /// The exchange holds a permit: it may connect.
    Go,
    /// It waits in the upstream's queue (until `queue_timeout`).
    Queued(Duration),
    /// No turn: the upstream's breaker is open, or its queue is full.
    No(Failure),
}

/// This worker's waiters and retry waits.
pub(super) struct Turns {
    /// Per upstream: the clients of this worker that wait for a turn, in order (some may have left or
    /// moved on since; they are skipped).
    queues: Vec<VecDeque<ConnId>>,
    /// Per upstream: how many of this worker's exchanges hold a ticket (the gate wakes us while it is not
    /// zero).
    waiting: Vec<Arc<AtomicUsize>>,
    pub(super) policy: RetryPolicy,
    jitter: Jitter,
}

impl Turns {
    /// Turns for `targets`, joining each gate so that a freed permit wakes this worker through `remote`.
    pub(super) fn new(
        targets: &[Arc<UpstreamTarget>],
        policy: RetryPolicy,
        remote: &Remote,
    ) -> Turns {
        let waiting: Vec<Arc<AtomicUsize>> = targets.iter().map(|_| Arc::default()).collect();
        for (t, w) in targets.iter().zip(&waiting) {
            t.gate.register(remote.clone(), w.clone());
        }
        // The clock and an address that differs per worker: workers that start together spread apart.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            ^ (waiting.as_ptr() as usize as u64);
        Turns {
            queues: targets.iter().map(|_| VecDeque::new()).collect(),
            waiting,
            policy,
            jitter: Jitter::new(seed),
        }
    }

    /// Asks `target` (upstream `via`) for a turn for exchange `x` of client `id`: its breaker, then its
    /// gate. The permit, probe or ticket goes into the exchange, which gives it back when it ends.
    pub(super) fn ask(
        &mut self,
        target: &Arc<UpstreamTarget>,
        x: &mut Exchange,
        id: ConnId,
        now: Instant,
    ) -> Asked {
        if x.permit.is_some() {
            return Asked::Go;
        }
        match target.health.check(now) {
            Verdict::Pass => {}
            Verdict::Probe(probe) => x.probe = Some(probe),
            Verdict::Open { retry_after } => return Asked::No(Failure::Unavailable(retry_after)),
        }
        let Some(waiting) = self.waiting.get(x.via) else {
            return Asked::No(Failure::Busy(None));
        };
        match target.gate.admit(waiting) {
            Admission::Admitted(permit) => {
                x.permit = Some(permit);
                Asked::Go
            }
            Admission::Queued(ticket) => {
                x.ticket = Some(ticket);
                if let Some(q) = self.queues.get_mut(x.via) {
                    q.push_back(id);
                }
                Asked::Queued(target.gate.limits().queue_timeout)
            }
            Admission::Refused => Asked::No(Failure::Busy(None)),
        }
    }

    /// A permit was given back somewhere: this worker's waiters take the free turns, in order, each
    /// swapping its ticket for a permit. Returns them, to connect.
    pub(super) fn admit(&mut self, upstreams: &Connector, conns: &mut Conns<Entry>) -> Vec<ConnId> {
        let mut admitted = Vec::new();
        for (via, queue) in self.queues.iter_mut().enumerate() {
            let Some(target) = upstreams.target(via) else {
                continue;
            };
            while let Some(&id) = queue.front() {
                let waiting =
                    exchange_in(conns, id).is_some_and(|x| x.ticket.is_some() && x.via == via);
                if !waiting {
                    // Left, refused at its deadline, or moved on: its ticket is gone already.
                    queue.pop_front();
                    continue;
                }
                let Some(permit) = target.gate.try_acquire() else {
                    break;
                };
                queue.pop_front();
                if let Some(x) = exchange_in(conns, id) {
                    x.ticket = None;
                    x.permit = Some(permit);
                }
                admitted.push(id);
            }
        }
        admitted
    }

    /// The wait before retry `n` (1 for the first).
    pub(super) fn backoff(&mut self, n: u32) -> Duration {
        self.policy.backoff(n, self.jitter.sample())
    }
}
