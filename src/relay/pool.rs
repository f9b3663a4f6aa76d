//! Keep-alive pool of idle upstream connections, for one origin, in one worker.
//!
//! Opening a TCP connection (and, later, a TLS session) costs round trips and CPU; a relay that serves one
//! generation after another should reuse them. The pool holds only *idle* connections: ones whose last
//! response body was read to its very end, so the next response starts at the first byte the socket gives.
//!
//! It hands out the most recently returned connection first (LIFO): warm connections stay busy and the
//! others reach their idle timeout and close, so the pool shrinks by itself after a burst. The pool holds ids
//! only; each idle connection is a slab entry of its own (`relay::Entry::Idle`) carrying its expiry timer.

use crate::reactor::token::ConnId;

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

    /// True when no more idle connections may be kept.
    pub fn is_full(&self) -> bool {
        self.idle.len() >= self.max_idle
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
