//! Connection ids that stay safe when a slab slot is reused.
//!
//! Every socket of a worker lives in one [`slab::Slab`]. A slab reuses the slot of a removed entry for the
//! next insert, so a bare slot index is not a safe name for a connection. Names outlive what they name: a
//! timer armed for a connection, an idle connection's place in the pool, a client's note of its upstream,
//! the events of the batch being dispatched. If the connection closed and its slot went to a newcomer,
//! such a name would reach the newcomer: the classic ABA bug.
//!
//! The fix lives here, in one place: a [`ConnId`] is a *(slot, generation)* pair. The worker bumps a counter on
//! every insert and stores it next to the entry; the `mio::Token` carries both halves. [`Conns::get_mut`] checks
//! the generation, so an event or timer for a previous occupant finds nothing and is dropped.
//!
//! Closing is deferred as well: [`Conns::mark_closing`] hides an entry from every lookup at once (so the rest
//! of the batch cannot see it), and the reactor's reap
//! phase ([`Conns::pop_closing`]) removes it at the end of the iteration. Handlers therefore never free a connection
//! under the feet of another handler that is still running in the same batch.

use std::collections::VecDeque;

use mio::Token;
use slab::Slab;

// The token packs two u32 halves into one usize.
const _: () = assert!(
    usize::BITS >= 64,
    "tokenpipe needs a 64-bit usize to pack (slot, generation)"
);

/// The name of one connection for as long as it lives, and never of another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    slot: u32,
    generation: u32,
}

impl ConnId {
    /// The `mio` token registered for this connection.
    pub fn token(self) -> Token {
        Token(((self.generation as usize) << 32) | self.slot as usize)
    }

    /// The id a token was made from. Any token decodes; lookups decide whether it is still alive.
    pub fn from_token(token: Token) -> ConnId {
        ConnId {
            slot: (token.0 & 0xffff_ffff) as u32,
            generation: (token.0 >> 32) as u32,
        }
    }
}

struct Entry<T> {
    generation: u32,
    /// Set by [`Conns::mark_closing`]: the entry is invisible to lookups and waits for [`Conns::pop_closing`].
    closing: bool,
    value: T,
}

/// A slab whose keys are generation-checked [`ConnId`]s and whose removals are deferred to a reap phase.
pub struct Conns<T> {
    slab: Slab<Entry<T>>,
    next_generation: u32,
    /// Ids marked for closing during this iteration, in the order they were marked.
    closing: VecDeque<ConnId>,
}

impl<T> Default for Conns<T> {
    fn default() -> Self {
        Conns {
            slab: Slab::new(),
            next_generation: 0,
            closing: VecDeque::new(),
        }
    }
}

impl<T> Conns<T> {
    /// Inserts a value built from its own id (so a connection can know its name, e.g. to register itself).
    pub fn insert_with(&mut self, make: impl FnOnce(ConnId) -> T) -> ConnId {
        let generation = self.next_generation;
        // Wrapping is fine: a stale event would need to survive 2^32 inserts into the same slot to alias.
        self.next_generation = self.next_generation.wrapping_add(1);
        let entry = self.slab.vacant_entry();
        let id = ConnId {
            slot: entry.key() as u32,
            generation,
        };
        entry.insert(Entry {
            generation,
            closing: false,
            value: make(id),
        });
        id
    }

    /// The live value named by `id`, or `None` if it was closed (or the slot now belongs to someone else).
    pub fn get(&self, id: ConnId) -> Option<&T> {
        match self.slab.get(id.slot as usize) {
            Some(e) if e.generation == id.generation && !e.closing => Some(&e.value),
            _ => None,
        }
    }

    /// Mutable form of [`Conns::get`].
    pub fn get_mut(&mut self, id: ConnId) -> Option<&mut T> {
        match self.slab.get_mut(id.slot as usize) {
            Some(e) if e.generation == id.generation && !e.closing => Some(&mut e.value),
            _ => None,
        }
    }

    /// Two distinct live values at once (a client and its upstream). `None` if either is gone or `a == b`.
    pub fn pair_mut(&mut self, a: ConnId, b: ConnId) -> Option<(&mut T, &mut T)> {
        if a.slot == b.slot {
            // `Slab::get2_mut` panics on equal keys; two names for one slot is simply "not a pair".
            return None;
        }
        let (ea, eb) = self.slab.get2_mut(a.slot as usize, b.slot as usize)?;
        let live = |e: &Entry<T>, id: ConnId| e.generation == id.generation && !e.closing;
        if live(ea, a) && live(eb, b) {
            Some((&mut ea.value, &mut eb.value))
        } else {
            None
        }
    }

    /// Hides `id` from all lookups; the value is handed back by [`Conns::pop_closing`] in the reap phase. Returns false if it
    /// was already gone or already marked, so a connection is closed exactly once.
    pub fn mark_closing(&mut self, id: ConnId) -> bool {
        match self.slab.get_mut(id.slot as usize) {
            Some(e) if e.generation == id.generation && !e.closing => {
                e.closing = true;
                self.closing.push_back(id);
                true
            }
            _ => false,
        }
    }

    /// Removes one entry marked for closing and hands it back (oldest mark first), or `None` when none is left.
    /// The reactor's reap phase calls this until `None`; freeing one entry may mark others.
    pub fn pop_closing(&mut self) -> Option<(ConnId, T)> {
        let id = self.closing.pop_front()?;
        Some((id, self.slab.remove(id.slot as usize).value))
    }

    /// Number of entries, including those marked but not yet reaped.
    pub fn len(&self) -> usize {
        self.slab.len()
    }

    /// True when the worker holds no entries at all.
    pub fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trips() {
        let mut conns = Conns::default();
        let a = conns.insert_with(|_| "a");
        let b = conns.insert_with(|_| "b");
        assert_eq!(ConnId::from_token(a.token()), a);
        assert_eq!(ConnId::from_token(b.token()), b);
        assert_ne!(a.token(), b.token());
    }

    #[test]
    fn stale_id_does_not_reach_the_slots_next_occupant() {
        let mut conns = Conns::default();
        let old = conns.insert_with(|_| "old");
        assert!(conns.mark_closing(old));
        // Marked: invisible at once, before the reap phase.
        assert!(conns.get(old).is_none());
        assert_eq!(conns.pop_closing(), Some((old, "old")));
        assert_eq!(conns.pop_closing(), None);

        let new = conns.insert_with(|_| "new");
        assert_eq!(new.slot, old.slot, "the slab reuses the slot");
        assert!(
            conns.get(old).is_none(),
            "an event for the old occupant is dropped"
        );
        assert_eq!(conns.get(new), Some(&"new"));
    }

    #[test]
    fn closing_twice_is_a_no_op() {
        let mut conns = Conns::default();
        let a = conns.insert_with(|_| 1);
        assert!(conns.mark_closing(a));
        assert!(!conns.mark_closing(a));
        assert!(conns.pop_closing().is_some());
        assert!(conns.pop_closing().is_none());
        assert!(conns.is_empty());
    }

    #[test]
    fn pair_mut_needs_two_live_entries() {
        let mut conns = Conns::default();
        let a = conns.insert_with(|_| 1);
        let b = conns.insert_with(|_| 2);
        assert!(conns.pair_mut(a, a).is_none());
        if let Some((x, y)) = conns.pair_mut(a, b) {
            std::mem::swap(x, y);
        }
        assert_eq!(conns.get(a), Some(&2));
        conns.mark_closing(b);
        assert!(conns.pair_mut(a, b).is_none());
    }
}

#[cfg(test)]
mod more_tests {
    use super::*;

    /// Every lookup, not only `get`, refuses a stale id whose slot has a new occupant.
    #[test]
    fn stale_id_reaches_nothing_through_any_lookup() {
        let mut conns = Conns::default();
        let other = conns.insert_with(|_| "other");
        let old = conns.insert_with(|_| "old");
        conns.mark_closing(old);
        conns.pop_closing();
        let new = conns.insert_with(|_| "new");
        assert_eq!(new.slot, old.slot);
        assert!(
            conns.get_mut(old).is_none(),
            "get_mut reached the slot's new occupant"
        );
        assert!(conns.pair_mut(old, other).is_none());
        assert!(
            !conns.mark_closing(old),
            "closing a stale id closed the new occupant"
        );
        assert_eq!(conns.get(new), Some(&"new"));
    }
}
