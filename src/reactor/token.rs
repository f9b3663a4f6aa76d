//! Connection ids that stay safe when a slab slot is reused, and the `mio` tokens made from them.
//!
//! Every connection of a worker lives in one [`slab::Slab`]. A slab reuses the slot of a removed entry for
//! the next insert, so a bare slot index is not a safe name for a connection. Names outlive what they name:
//! a timer armed for a connection, an idle connection's place in a pool, the events of the batch being
//! dispatched. If the connection closed and its slot went to a newcomer, such a name would reach the
//! newcomer: the classic ABA bug.
//!
//! The fix lives here, in one place: a [`ConnId`] is a *(slot, generation)* pair. [`Conns`] bumps a counter
//! on every insert and stores it next to the entry; [`Conns::get_mut`] checks it, so an event or timer for a
//! previous occupant finds nothing and is dropped.
//!
//! # Tokens
//!
//! A `mio::Token` is one `usize`. It carries the id's two halves and a [`Tag`], which says *which socket of
//! the entry* an event is for: an entry may own more than one socket (a relayed exchange owns its client's
//! socket and the upstream's), and an event for either must reach the one entry that owns both.
//!
//! ```text
//!   63            32 31      24 23             0
//!  +----------------+----------+----------------+
//!  |   generation   |   tag    |      slot      |
//!  +----------------+----------+----------------+
//! ```
//!
//! Slots therefore stop below 2^24 (16.7 million entries: more than any descriptor limit in use), and the
//! highest slot value is not a slot at all: it marks the tokens the reactor keeps for itself ([`Target`]),
//! its listener and its waker.
//!
//! # Closing is deferred
//!
//! [`Conns::mark_closing`] hides an entry from every lookup at once (so the rest of the batch cannot see
//! it), and the reactor's reap phase ([`Conns::pop_closing`]) removes it at the end of the iteration.
//! Handlers therefore never free a connection under the feet of another handler that is still running in
//! the same batch.

use std::collections::VecDeque;

use mio::Token;
use slab::Slab;

// The token packs a u32 generation above 32 bits of tag and slot.
const _: () = assert!(
    usize::BITS >= 64,
    "tokenpipe needs a 64-bit usize to pack (generation, tag, slot) in a token"
);

const SLOT_BITS: u32 = 24;
const SLOT_MASK: usize = (1 << SLOT_BITS) - 1;
/// The slot value no entry ever gets: tokens carrying it belong to the reactor.
const RESERVED_SLOT: usize = SLOT_MASK;
/// Most entries a [`Conns`] holds at once (slots `0..MAX_ENTRIES`).
pub const MAX_ENTRIES: usize = RESERVED_SLOT;

/// Which socket of an entry an event is for. An application whose entries own one socket uses
/// [`Tag::MAIN`] only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(pub u8);

impl Tag {
    /// The entry's first (often only) socket.
    pub const MAIN: Tag = Tag(0);
}

/// The name of one connection for as long as it lives, and never of another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    slot: u32,
    generation: u32,
}

impl ConnId {
    /// The `mio` token to register the entry's socket `tag` with.
    pub fn token(self, tag: Tag) -> Token {
        Token(
            ((self.generation as usize) << 32)
                | ((tag.0 as usize) << SLOT_BITS)
                | self.slot as usize,
        )
    }
}

/// What an event's token names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Socket `Tag` of entry `ConnId` (which may have closed since: lookups decide).
    Conn(ConnId, Tag),
    /// The worker's listening socket.
    Listener,
    /// The worker's `mio::Waker`.
    Waker,
}

/// The listener's token.
pub const LISTENER: Token = Token(RESERVED_SLOT);
/// The waker's token.
pub const WAKER: Token = Token((1 << SLOT_BITS) | RESERVED_SLOT);

impl Target {
    /// Decodes any token. A token the reactor never made decodes to *something*; a stale or bogus
    /// [`Target::Conn`] finds nothing in [`Conns`], and unknown reserved tokens are treated as the waker,
    /// whose handler only looks for work.
    pub fn of(token: Token) -> Target {
        let slot = token.0 & SLOT_MASK;
        if slot == RESERVED_SLOT {
            return if token == LISTENER {
                Target::Listener
            } else {
                Target::Waker
            };
        }
        let id = ConnId {
            slot: slot as u32,
            generation: (token.0 >> 32) as u32,
        };
        Target::Conn(id, Tag((token.0 >> SLOT_BITS) as u8))
    }
}

struct Entry<T> {
    generation: u32,
    /// Set by [`Conns::mark_closing`]: the entry is invisible to lookups and waits for [`Conns::pop_closing`].
    closing: bool,
    value: T,
}

/// The slab is full ([`MAX_ENTRIES`]): the caller drops what it wanted to insert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

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
    pub fn insert_with(&mut self, make: impl FnOnce(ConnId) -> T) -> Result<ConnId, Full> {
        let entry = self.slab.vacant_entry();
        if entry.key() >= MAX_ENTRIES {
            return Err(Full);
        }
        let generation = self.next_generation;
        // Wrapping is fine: a stale event would need to survive 2^32 inserts into the same slot to alias.
        self.next_generation = self.next_generation.wrapping_add(1);
        let id = ConnId {
            slot: entry.key() as u32,
            generation,
        };
        entry.insert(Entry {
            generation,
            closing: false,
            value: make(id),
        });
        Ok(id)
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

    /// Removes a live entry *now* and hands its value back, for moving what it owns elsewhere (an idle
    /// pooled connection joining an exchange). Not a way to close: closing is [`Conns::mark_closing`], so
    /// that the reap phase sees every closed entry. Events of this batch for `id` then find nothing.
    pub fn take(&mut self, id: ConnId) -> Option<T> {
        self.get(id)?;
        Some(self.slab.remove(id.slot as usize).value)
    }

    /// Hides `id` from all lookups; the value is handed back by [`Conns::pop_closing`] in the reap phase.
    /// Returns false if it was already gone or already marked, so a connection is closed exactly once.
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

    /// Removes one entry marked for closing and hands it back (oldest mark first), or `None` when none is
    /// left. The reactor's reap phase calls this until `None`; freeing one entry may mark others.
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

    /// The live entries (not those marked closing), in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (ConnId, &T)> {
        self.slab
            .iter()
            .filter(|(_, e)| !e.closing)
            .map(|(slot, e)| {
                let id = ConnId {
                    slot: slot as u32,
                    generation: e.generation,
                };
                (id, &e.value)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_with_their_tag() {
        let mut conns = Conns::default();
        let a = conns.insert_with(|_| "a").unwrap();
        let b = conns.insert_with(|_| "b").unwrap();
        assert_eq!(Target::of(a.token(Tag::MAIN)), Target::Conn(a, Tag::MAIN));
        assert_eq!(Target::of(b.token(Tag(1))), Target::Conn(b, Tag(1)));
        assert_eq!(Target::of(b.token(Tag(255))), Target::Conn(b, Tag(255)));
        assert_ne!(a.token(Tag::MAIN), b.token(Tag::MAIN));
        assert_ne!(a.token(Tag::MAIN), a.token(Tag(1)));
    }

    #[test]
    fn reserved_tokens_never_name_a_connection() {
        assert_eq!(Target::of(LISTENER), Target::Listener);
        assert_eq!(Target::of(WAKER), Target::Waker);
        let max = ConnId {
            slot: (MAX_ENTRIES - 1) as u32,
            generation: u32::MAX,
        };
        for tag in [Tag(0), Tag(1), Tag(255)] {
            let t = max.token(tag);
            assert_ne!(t, LISTENER);
            assert_ne!(t, WAKER);
            assert_eq!(Target::of(t), Target::Conn(max, tag));
        }
    }

    #[test]
    fn stale_id_does_not_reach_the_slots_next_occupant() {
        let mut conns = Conns::default();
        let old = conns.insert_with(|_| "old").unwrap();
        assert!(conns.mark_closing(old));
        // Marked: invisible at once, before the reap phase.
        assert!(conns.get(old).is_none());
        assert_eq!(conns.pop_closing(), Some((old, "old")));
        assert_eq!(conns.pop_closing(), None);

        let new = conns.insert_with(|_| "new").unwrap();
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
        let a = conns.insert_with(|_| 1).unwrap();
        assert!(conns.mark_closing(a));
        assert!(!conns.mark_closing(a));
        assert!(conns.pop_closing().is_some());
        assert!(conns.pop_closing().is_none());
        assert!(conns.is_empty());
    }

    /// Every lookup, not only `get`, refuses a stale id whose slot has a new occupant.
    #[test]
    fn stale_id_reaches_nothing_through_any_lookup() {
        let mut conns = Conns::default();
        let old = conns.insert_with(|_| "old").unwrap();
        conns.mark_closing(old);
        conns.pop_closing();
        let new = conns.insert_with(|_| "new").unwrap();
        assert_eq!(new.slot, old.slot);
        assert!(
            conns.get_mut(old).is_none(),
            "get_mut reached the slot's new occupant"
        );
        assert!(conns.take(old).is_none(), "take removed the new occupant");
        assert!(
            !conns.mark_closing(old),
            "closing a stale id closed the new occupant"
        );
        assert_eq!(conns.get(new), Some(&"new"));
    }

    #[test]
    fn take_removes_at_once_and_only_live_entries() {
        let mut conns = Conns::default();
        let a = conns.insert_with(|_| "a").unwrap();
        let b = conns.insert_with(|_| "b").unwrap();
        conns.mark_closing(b);
        assert_eq!(
            conns.take(b),
            None,
            "an entry marked closing belongs to the reap"
        );
        assert_eq!(conns.take(a), Some("a"));
        assert!(conns.get(a).is_none());
        assert_eq!(conns.len(), 1, "only b, waiting for its reap");
        assert_eq!(conns.iter().count(), 0, "iter skips entries marked closing");
    }
}
