//! The worker's door: its listening socket, and whether it may accept now.
//!
//! Four things decide whether a worker calls `accept` in a turn, and they all live here:
//!
//! - **The edge.** The listener is edge-triggered like every socket: one event may stand for many queued
//!   connections, and no new event comes for those. `ready` remembers the edge; it is set by the
//!   listener's event and cleared only by `WouldBlock`.
//! - **The budget.** One call accepts at most [`ACCEPT_BUDGET`] connections; while `ready` stays set, the
//!   worker's next poll does not wait, and phase 6 accepts the next handful (chapter 1).
//! - **A pause.** An `accept` that fails for any reason but "nothing queued" or "that client gave up"
//!   would fail again if retried at once: above all `EMFILE`/`ENFILE`, when no descriptor is left. Nothing
//!   frees a descriptor between two calls, so retrying would spin, and waiting for the next edge (what an
//!   earlier version did) can wait for ever: the queued connections raised their edge already. So the door
//!   *pauses*: `ready` stays set, no `accept` is made until a reap frees an entry ([`Door::freed`]: its
//!   descriptors are closed) or [`ACCEPT_RETRY`] has passed (descriptors freed elsewhere: an upstream
//!   socket, another process for `ENFILE`), and meanwhile the queued connections wait in the backlog.
//! - **Closing.** A drain ([`super::Remote::drain`]) closes the door for good: what is queued is accepted
//!   first (a queued connection would otherwise be reset with the socket), then the listener is dropped.
//!
//! # The spare descriptor
//!
//! A client left in the backlog while the worker is out of descriptors learns nothing: it waits, and
//! retries on its own clock. The door keeps one descriptor in reserve (`/dev/null`, opened with the
//! listener) to do better: on `EMFILE`/`ENFILE` it closes the spare, accepts one connection with the
//! descriptor that frees, hands it to [`Handler::on_shed`] (the relay writes a 503 and drops it), and
//! reopens the spare, then pauses. nginx and libuv (`uv__emfile_trick`) do the same. If another thread
//! takes the freed descriptor first, the spare cannot be reopened; the door tries again when accepting
//! works again.

use std::fs::File;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mio::net::TcpListener;

use super::instrument::{Syscall, WorkerStats, count};
use super::{ACCEPT_BUDGET, Cx, Handler};

/// How long a door paused for lack of descriptors waits before it tries again, if no entry of its worker
/// closed in between (nginx waits 500 ms too).
pub const ACCEPT_RETRY: Duration = Duration::from_millis(500);

/// At most one warning about pauses per this long: under a sustained overload the door may pause and
/// resume many times a second, and one line with a count says as much as a hundred.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Most connections a closing door accepts from its backlog before it drops the listener (the backlog's
/// default depth, `somaxconn`, is 4096 on current Linux).
const FINAL_ACCEPTS: usize = 64 * ACCEPT_BUDGET;

/// The listening side of one worker (see the module docs).
pub struct Door {
    /// `None` before `Worker::listen`, and after a drain closed it.
    listener: Option<TcpListener>,
    /// The backlog may hold connections (the edge, remembered).
    ready: bool,
    /// Out of descriptors: no `accept` before this instant, unless a reap frees an entry first.
    paused_until: Option<Instant>,
    /// One descriptor in reserve, given up for a moment to turn a connection away when none is left.
    spare: Option<File>,
    /// Set by `Remote::drain`; read once per wake.
    drain_asked: Arc<AtomicBool>,
    /// The door was closed by a drain: it never opens again.
    draining: bool,
    /// When a pause was last logged, and the pauses since (logged with the next line).
    warned: Option<Instant>,
    unwarned: u64,
    stats: Arc<WorkerStats>,
}

impl Door {
    /// A door with no listener yet; `drain_asked` is the flag `Remote::drain` sets.
    pub fn new(drain_asked: Arc<AtomicBool>, stats: Arc<WorkerStats>) -> Door {
        Door {
            listener: None,
            ready: false,
            paused_until: None,
            spare: None,
            drain_asked,
            draining: false,
            warned: None,
            unwarned: 0,
            stats,
        }
    }

    /// Accepts from `listener` (registered by the caller) from now on, with a spare descriptor at hand.
    pub fn open(&mut self, listener: TcpListener) {
        self.listener = Some(listener);
        self.stats.set_listening(true);
        self.spare = open_spare();
        if self.spare.is_none() {
            log::warn!(
                "cannot open a spare descriptor: clients over the limit will wait unanswered"
            );
        }
    }

    /// The listener reported an event: its backlog may hold connections.
    pub fn on_event(&mut self) {
        self.ready = true;
    }

    /// True when the next accept may run at once: the poll must not wait (phase 1).
    pub fn wants_turn(&self) -> bool {
        self.listener.is_some() && self.ready && self.paused_until.is_none()
    }

    /// When a paused door with connections queued tries again: a deadline for phase 1, like a timer's.
    pub fn resume_at(&self) -> Option<Instant> {
        self.paused_until
            .filter(|_| self.listener.is_some() && self.ready)
    }

    /// An entry was freed (phase 7), and its descriptors with it: a paused door may try at once.
    pub fn freed(&mut self) {
        self.paused_until = None;
    }

    /// True once a drain has closed the door.
    pub fn draining(&self) -> bool {
        self.draining
    }

    /// True, once, after `Remote::drain` was called: the caller then closes the door and tells the handler.
    pub fn drain_requested(&self) -> bool {
        !self.draining && self.drain_asked.load(Ordering::Acquire)
    }

    /// Accepts at most [`ACCEPT_BUDGET`] connections, unless the door is paused. A backlog that may hold
    /// more stays `ready`: phase 6 gives it another turn, and the next poll does not wait.
    pub fn accept<H: Handler>(&mut self, handler: &mut H, cx: &mut Cx<H>) {
        if let Some(at) = self.paused_until {
            if cx.now < at {
                return;
            }
            self.paused_until = None;
        }
        if let Some(e) = self.accept_up_to(ACCEPT_BUDGET, handler, cx) {
            self.pause(handler, cx, e);
        }
    }

    /// Closes the door for a drain: accepts what is queued (at most [`FINAL_ACCEPTS`]), then drops the
    /// listener. With `SO_REUSEPORT`, new connections then go to the workers whose listeners are still
    /// open; once all are closed, connecting is refused.
    pub fn close<H: Handler>(&mut self, handler: &mut H, cx: &mut Cx<H>) {
        self.draining = true;
        self.ready = true;
        self.paused_until = None;
        // An error here (no descriptor left) ends the pass: what is still queued is reset with the socket.
        let _ = self.accept_up_to(FINAL_ACCEPTS, handler, cx);
        self.listener = None;
        self.stats.set_listening(false);
        self.ready = false;
    }

    /// Accepts up to `n` connections while the backlog may hold some; returns the error that calls for a
    /// pause, if one came.
    fn accept_up_to<H: Handler>(
        &mut self,
        n: usize,
        handler: &mut H,
        cx: &mut Cx<H>,
    ) -> Option<io::Error> {
        let listener = self.listener.as_ref()?;
        for _ in 0..n {
            if !self.ready {
                return None;
            }
            count(Syscall::Accept);
            match listener.accept() {
                Ok((sock, peer)) => {
                    if self.spare.is_none() {
                        self.spare = open_spare();
                    }
                    handler.on_accept(cx, sock, peer);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.ready = false,
                // Interrupted, or a client that gave up while queued: the next one may be fine.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(e) => return Some(e),
            }
        }
        None
    }

    /// `accept` failed with `e`, and would fail again at once: turn one client away with the spare if
    /// descriptors ran out, then pause (see the module docs). `ready` stays set: the backlog still holds
    /// the connections whose edge came already.
    fn pause<H: Handler>(&mut self, handler: &mut H, cx: &mut Cx<H>, e: io::Error) {
        let out_of_descriptors = matches!(
            rustix::io::Errno::from_io_error(&e),
            Some(rustix::io::Errno::MFILE | rustix::io::Errno::NFILE)
        );
        if out_of_descriptors {
            self.shed_one(handler, cx);
        }
        self.paused_until = Some(cx.now + ACCEPT_RETRY);
        self.stats.count_accept_pause();
        self.unwarned += 1;
        if self
            .warned
            .is_none_or(|at| cx.now.saturating_duration_since(at) >= WARN_EVERY)
        {
            log::warn!(
                "{}: accept failed: {e}; accepting pauses until a connection closes (or for {} ms) \
                 ({} pauses since the last such line, this one included)",
                cx.name(),
                ACCEPT_RETRY.as_millis(),
                self.unwarned
            );
            self.warned = Some(cx.now);
            self.unwarned = 0;
        }
    }

    /// The spare-descriptor trick: close the spare, accept one connection with the descriptor that frees,
    /// let the handler turn it away (it drops it), reopen the spare.
    fn shed_one<H: Handler>(&mut self, handler: &mut H, cx: &mut Cx<H>) {
        let (Some(listener), Some(spare)) = (&self.listener, self.spare.take()) else {
            return;
        };
        drop(spare);
        count(Syscall::Accept);
        match listener.accept() {
            Ok((sock, peer)) => handler.on_shed(cx, sock, peer),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.ready = false,
            Err(_) => {}
        }
        self.spare = open_spare();
    }
}

/// The spare descriptor: any file will do; `/dev/null` is always there and costs nothing.
fn open_spare() -> Option<File> {
    File::open("/dev/null").ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn door() -> Door {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let mut door = Door::new(Arc::default(), Arc::default());
        door.open(TcpListener::from_std(listener));
        door
    }

    /// A paused door with connections queued neither asks for a zero timeout (that would spin) nor
    /// forgets them (that would stall): it gives phase 1 a deadline, and a freed entry resumes it at once.
    #[test]
    fn a_paused_door_waits_for_a_deadline_or_a_freed_entry() {
        let mut d = door();
        assert!(
            d.spare.is_some(),
            "a spare descriptor comes with the listener"
        );
        d.on_event();
        assert!(d.wants_turn());
        let now = Instant::now();
        d.paused_until = Some(now + ACCEPT_RETRY);
        assert!(
            !d.wants_turn(),
            "a paused door must not make the poll return at once"
        );
        assert_eq!(d.resume_at(), Some(now + ACCEPT_RETRY));
        d.freed();
        assert!(d.wants_turn(), "a freed entry resumes accepting");
        assert_eq!(d.resume_at(), None);
    }

    /// A pause with nothing queued needs no deadline: the next connection raises an edge.
    #[test]
    fn a_pause_with_an_empty_backlog_sets_no_deadline() {
        let mut d = door();
        d.paused_until = Some(Instant::now() + ACCEPT_RETRY);
        assert_eq!(d.resume_at(), None);
        assert!(!d.wants_turn());
    }
}
