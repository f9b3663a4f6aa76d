//! The hand-written event loop: one [`Worker`] per thread, sharing nothing.
//!
//! A worker owns a `mio::Poll`, one slab holding every socket it has (its listener, its clients, its
//! upstream connections; see [`token`]), one ordered set of deadlines ([`timers`]) and one read buffer that all
//! its connections borrow in turn. [`Worker::run`] is the whole loop. Every iteration goes through the same
//! phases, in this order:
//!
//! 1. **clock**: read `Instant::now()`;
//! 2. **timeout**: the poll timeout is the time to the earliest deadline (none: wait for ever), or zero when
//!    some connection yielded its turn and waits to continue;
//! 3. **poll**: sleep in `epoll_wait` until a socket is ready or the timeout passes, then read the clock
//!    again: that instant is `now` for the whole batch (deadlines, timer firing, busy time);
//! 4. **dispatch**: hand each event to its connection (events for connections closed earlier in the batch
//!    find nothing and are dropped). Handlers write eagerly: there is no separate flush phase, because a
//!    byte that can be written now should not wait for the end of the batch;
//! 5. **timers**: fire every deadline that is due;
//! 6. **resume**: drive again the connections that used up their turn ([`TURN_BUDGET`]), now that the rest
//!    of the batch has been served; one that yields again here waits for the next iteration;
//! 7. **reap**: free the connections that handlers marked for closing, and whatever they take with them
//!    (a client's upstream); handlers never free anything themselves;
//! 8. **measure**: record how long the iteration was busy, and warn when it passed `--loop-warn-ms`.
//!
//! What the handlers do lives elsewhere: the client side of every exchange in [`crate::relay::downstream`],
//! the upstream side and the relay between them in [`crate::relay`], the mock LLM in [`crate::mock`].

pub mod fdlimit;
pub mod instrument;
pub mod timers;
pub mod token;

use std::io;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll};

use crate::conn::{ClientConn, Conn};
use crate::http::request::{Limits, RequestReader};
use crate::mock::MockService;
use crate::relay::RelayService;
use instrument::LoopStats;
use timers::{TimerKind, Timers};
use token::{ConnId, Conns};

/// How many reads (relay) or events (mock) one stream may handle in one turn before it yields to the others
/// ([`Worker::defer`]). A stream whose peer is always ready would otherwise keep the loop to itself.
pub const TURN_BUDGET: usize = 16;

/// Size of the per-worker read buffer. Every socket read lands here first; a connection keeps only what it
/// cannot pass on at once, so memory per idle stream does not depend on this figure.
pub const SCRATCH_BYTES: usize = 64 * 1024;

/// Settings every worker shares (read-only).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Request limits (head size, body size, header count).
    pub limits: Limits,
    /// Most bytes held for one stream that the client has not taken yet (`--stream-buffer-bytes`). When
    /// reached, the relay stops reading the upstream until the client drains.
    pub stream_buffer: usize,
    /// An iteration busier than this is logged (`--loop-warn-ms`).
    pub loop_warn: Duration,
}

/// What a worker serves.
pub enum Service {
    /// The relay: clients' prompts go to an upstream model API.
    Relay(RelayService),
    /// The built-in mock LLM upstream.
    Mock(MockService),
}

/// One event loop and everything it owns.
pub struct Worker {
    /// This worker's name in logs, e.g. `relay-0` or `mock-0`.
    pub(crate) name: String,
    pub(crate) poll: Poll,
    pub(crate) conns: Conns<Conn>,
    pub(crate) timers: Timers,
    /// The instant read at the top of the current iteration (phase 1).
    pub(crate) now: Instant,
    /// Where every read lands first ([`SCRATCH_BYTES`]).
    pub(crate) scratch: Box<[u8]>,
    /// Payload ranges found by a body decoder in the last read; reused to avoid an allocation per read.
    pub(crate) payload: Vec<Range<usize>>,
    /// Scratch for bytes we compose (mock events).
    pub(crate) compose: Vec<u8>,
    /// Connections that yielded their turn and are driven again in phase 6.
    deferred: Vec<ConnId>,
    pub(crate) settings: Arc<Settings>,
    pub(crate) service: Service,
    stats: LoopStats,
}

impl Worker {
    /// A worker that will accept on `listener` and serve `service`.
    pub fn new(
        name: String,
        listener: std::net::TcpListener,
        settings: Arc<Settings>,
        service: Service,
    ) -> io::Result<Worker> {
        listener.set_nonblocking(true)?;
        let poll = Poll::new()?;
        let mut conns = Conns::default();
        let id = conns.insert_with(|_| Conn::Listener(TcpListener::from_std(listener)));
        if let Some(Conn::Listener(l)) = conns.get_mut(id) {
            poll.registry()
                .register(l, id.token(), Interest::READABLE)?;
        }
        Ok(Worker {
            name,
            poll,
            conns,
            timers: Timers::default(),
            now: Instant::now(),
            scratch: vec![0; SCRATCH_BYTES].into_boxed_slice(),
            payload: Vec::new(),
            compose: Vec::new(),
            deferred: Vec::new(),
            stats: LoopStats::new(settings.loop_warn),
            settings,
            service,
        })
    }

    /// Runs the loop until an unrecoverable `poll` error. Errors of one connection close that connection only.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            // 1. clock, 2. timeout (zero if work was deferred: then we only collect what is ready)
            self.now = Instant::now();
            let timeout = if self.deferred.is_empty() {
                self.timers
                    .next_deadline()
                    .map(|at| at.saturating_duration_since(self.now))
            } else {
                Some(Duration::ZERO)
            };
            // 3. poll
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            self.now = Instant::now();
            let busy_from = self.now;
            // 4. dispatch
            let mut n_events = 0;
            for event in events.iter() {
                n_events += 1;
                self.dispatch(event);
            }
            // 5. timers
            while let Some((id, kind)) = self.timers.pop_due(self.now) {
                self.on_timer(id, kind);
            }
            // 6. resume connections that yielded their turn
            self.resume_deferred();
            // 7. reap
            self.reap();
            // 8. measure
            self.stats.record(&self.name, busy_from.elapsed(), n_events);
        }
    }

    fn dispatch(&mut self, event: &Event) {
        let id = ConnId::from_token(event.token());
        match self.conns.get_mut(id) {
            // Closed earlier (in this batch or before): the event was for a previous occupant.
            None => {}
            Some(Conn::Listener(_)) => self.accept(id),
            Some(Conn::Client(c)) => {
                c.ready.absorb(event);
                self.drive_client(id);
            }
            Some(Conn::Upstream(u)) => {
                u.ready.absorb(event);
                self.on_upstream_ready(id);
            }
        }
    }

    fn on_timer(&mut self, id: ConnId, kind: TimerKind) {
        match kind {
            TimerKind::UpstreamIdle => self.on_upstream_idle_timeout(id),
            TimerKind::MockTick => self.on_mock_tick(id),
            TimerKind::Linger => self.close(id),
        }
    }

    /// Accepts until the backlog is empty (the listener is edge-triggered too).
    fn accept(&mut self, listener: ConnId) {
        loop {
            let Some(Conn::Listener(l)) = self.conns.get_mut(listener) else {
                return;
            };
            match l.accept() {
                Ok((sock, _peer)) => self.add_client(sock),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(e) => {
                    // EMFILE/ENFILE and the like: stop for now. The next incoming connection raises a new edge.
                    // A proper fd budget (refusing politely before the limit) comes with the resilience work.
                    log::warn!("{}: accept failed: {e}", self.name);
                    return;
                }
            }
        }
    }

    fn add_client(&mut self, sock: TcpStream) {
        // Tokens are small writes that must leave at once; Nagle would hold them back.
        if let Err(e) = sock.set_nodelay(true) {
            log::debug!("{}: set_nodelay: {e}", self.name);
        }
        let reader = RequestReader::new(self.settings.limits.clone());
        let id = self
            .conns
            .insert_with(|_| Conn::Client(Box::new(ClientConn::new(sock, reader))));
        if let Service::Mock(m) = &self.service {
            m.stats.on_accept();
        }
        if let Err(e) = self.register(id) {
            log::warn!("{}: cannot register a new client: {e}", self.name);
            self.close(id);
        }
    }

    /// Registers a connection's socket for both directions, once. Edge-triggered readiness for both means no
    /// `epoll_ctl` call is ever needed to switch interest: the flags in [`crate::conn::Readiness`] say
    /// what the socket can do, and the state says what we want from it.
    /// On error the caller decides what the failure means (a client is dropped, an upstream is a 502).
    pub(crate) fn register(&mut self, id: ConnId) -> io::Result<()> {
        let registry = self.poll.registry();
        let both = Interest::READABLE | Interest::WRITABLE;
        match self.conns.get_mut(id) {
            Some(Conn::Client(c)) => registry.register(&mut c.sock, id.token(), both),
            Some(Conn::Upstream(u)) => registry.register(&mut u.sock, id.token(), both),
            Some(Conn::Listener(_)) | None => Ok(()),
        }
    }

    /// Asks for `id` to be driven again in phase 6, after the rest of the batch. A handler that has done its share of work
    /// for one turn (see [`TURN_BUDGET`]) yields this way, so one fast stream cannot hold up the others.
    pub(crate) fn defer(&mut self, id: ConnId) {
        self.deferred.push(id);
    }

    /// Phase 6: drive the connections that yielded their turn. The list is taken first, so one that yields
    /// again is left for the next iteration (whose poll then does not wait).
    fn resume_deferred(&mut self) {
        let mut ids = std::mem::take(&mut self.deferred);
        // A connection may have yielded twice in one batch (say, an upstream from its own event and again
        // from its client's): it still gets one turn, not two.
        ids.sort_unstable();
        ids.dedup();
        for id in ids {
            match self.conns.get(id) {
                Some(Conn::Client(_)) => self.drive_client(id),
                Some(Conn::Upstream(_)) => self.on_upstream_ready(id),
                Some(Conn::Listener(_)) | None => {}
            }
        }
    }

    /// Marks a connection for closing: from now on no handler sees it; the reap phase frees it.
    pub(crate) fn close(&mut self, id: ConnId) {
        self.conns.mark_closing(id);
    }

    /// Phase 7. Freeing a connection may mark others (a client takes its upstream along), so this runs until
    /// nothing is left to free. Dropping a socket closes its descriptor, which also removes it from the epoll
    /// set: no `epoll_ctl(DEL)` call is needed.
    fn reap(&mut self) {
        while let Some((id, conn)) = self.conns.pop_closing() {
            match conn {
                Conn::Client(c) => self.on_client_freed(id, c),
                Conn::Upstream(u) => self.on_upstream_freed(id, u),
                Conn::Listener(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests_turns;
