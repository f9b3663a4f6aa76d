//! Keep-alive pool of idle upstream connections, for one origin, in one worker.
//!
//! Opening a TCP connection (and a TLS session) costs round trips and CPU; a relay that serves one
//! generation after another should reuse them. The pool holds only *idle* connections: ones whose last
//! response body was read to its very end, so the next response starts at the first byte the socket gives.
//!
//! It hands out the most recently returned connection first (LIFO): warm connections stay busy and the
//! others reach their idle timeout and close, so the pool shrinks by itself after a burst. The pool holds ids
//! only; each idle connection is a slab entry of its own (`relay::Entry::Idle`) carrying its expiry timer,
//! because nobody owns it while it idles: its events (the server closing it) need an entry to reach.
//! [`Pool::park`] and [`Pool::take_for`] move a connection between an exchange and such an entry, each
//! with one re-registration (`epoll_ctl`), the price of an exchange owning its upstream.

use super::{Entry, Idle, RelayTimer, UPSTREAM};
use crate::conn::transport::{IdleCheck, Transport};
use crate::reactor::instrument::{Held, Level};
use crate::reactor::token::ConnId;
use crate::reactor::{Cx, Tag};
use std::time::Duration;

/// Idle connections to one origin.
pub struct Pool {
    idle: Vec<ConnId>,
    max_idle: usize,
}

impl Pool {
    /// A pool that keeps at most `max_idle` idle connections.
    pub fn new(max_idle: usize) -> Self {
        Pool {
            idle: Vec::new(),
            max_idle,
        }
    }

    /// The most recently returned idle connection, if any.
    pub fn take(&mut self) -> Option<ConnId> {
        self.idle.pop()
    }

    /// Offers an idle connection; false when the pool is full (the caller closes it).
    pub fn put(&mut self, id: ConnId) -> bool {
        if self.idle.len() >= self.max_idle {
            return false;
        }
        self.idle.push(id);
        true
    }

    /// Forgets a connection that closed while idle (timeout, or the server hung up).
    pub fn remove(&mut self, id: ConnId) {
        self.idle.retain(|&i| i != id);
    }

    /// Closes every idle connection (their entries are reaped, and `relay::Relay::on_close` forgets them)
    /// and keeps none from now on: a draining worker must empty its slab.
    pub fn close_all(&mut self, cx: &mut Cx<super::Relay>) {
        self.max_idle = 0;
        for id in self.idle.drain(..) {
            cx.close(id);
        }
    }

    /// True when no more idle connections may be kept.
    pub fn is_full(&self) -> bool {
        self.idle.len() >= self.max_idle
    }

    /// Puts `io`, a connection of upstream `via` whose exchange ended cleanly, in the pool: an entry of its
    /// own that expires after `idle_timeout`. A full pool closes it instead (by dropping it).
    pub fn park(
        &mut self,
        cx: &mut Cx<super::Relay>,
        io: Transport,
        via: usize,
        idle_timeout: Duration,
    ) {
        if self.is_full() {
            return;
        }
        let at = cx.now + idle_timeout;
        let timers = &mut cx.timers;
        let Ok(idle_id) = cx.conns.insert_with(|idle_id| {
            let expires = timers.insert(at, idle_id, RelayTimer::IdleExpired);
            Entry::Idle(Idle {
                io,
                expires,
                via,
                _pooled: Held::new(Level::PooledUpstreams),
            })
        }) else {
            return;
        };
        let Some(Entry::Idle(idle)) = cx.conns.get_mut(idle_id) else {
            return;
        };
        if idle.io.reregister(&cx.registry, idle_id, Tag::MAIN).is_ok() {
            self.put(idle_id);
        } else {
            cx.close(idle_id);
        }
    }

    /// The most recently parked connection that is still quiet, out of its entry and re-registered as the
    /// upstream socket of client `id`. One that the server closed (or spoke on) while it idled, its edge not
    /// dispatched yet, is dropped on the way (closing it).
    pub fn take_for(&mut self, cx: &mut Cx<super::Relay>, id: ConnId) -> Option<Transport> {
        while let Some(idle_id) = self.take() {
            if !matches!(cx.conns.get(idle_id), Some(Entry::Idle(_))) {
                continue;
            }
            let Some(Entry::Idle(idle)) = cx.conns.take(idle_id) else {
                continue;
            };
            cx.timers.cancel(idle.expires);
            let mut io = idle.io;
            if io.check_idle() == IdleCheck::Quiet
                && io.reregister(&cx.registry, id, UPSTREAM).is_ok()
            {
                return Some(io);
            }
        }
        None
    }

    /// Idle connections held.
    pub fn len(&self) -> usize {
        self.idle.len()
    }

    pub fn is_empty(&self) -> bool {
        self.idle.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reactor::token::Conns;

    #[test]
    fn lifo_bounded_and_removable() {
        let mut conns = Conns::default();
        let ids: Vec<ConnId> = (0..3).map(|i| conns.insert_with(|_| i).unwrap()).collect();
        let mut pool = Pool::new(2);
        assert!(pool.put(ids[0]));
        assert!(pool.put(ids[1]));
        assert!(pool.is_full());
        assert!(!pool.put(ids[2]), "full");
        assert_eq!(pool.take(), Some(ids[1]), "most recent first");
        pool.remove(ids[0]);
        assert!(pool.is_empty());
        assert_eq!(pool.take(), None);
    }
}
