//! The load generator as a reactor application: a [`Handler`] whose entries are streams it opened.
//!
//! The relay's handler (`relay::Relay`) has clients that arrive; this one has none, and makes its own
//! work: it starts streams when its [`Schedule`] says so, drives each one's [`LoadStream`] on its
//! socket's events, and, when one ends, notes how in its [`Tally`] and starts the next. The reactor is the
//! relay's, unchanged: the same loop, slab, timers and transport, which is the point (chapter 15).
//!
//! The slab holds one [`Entry::Stream`] per stream in flight, and one [`Entry::Clock`]: the reactor's
//! timers each name an entry, and the worker-wide ones (the open loop's next start, the run's own
//! deadline) belong to no stream. Deadlines ([`LoadTimer`]):
//!
//! | timer | on | when | what happens |
//! | --- | --- | --- | --- |
//! | `Timeout` | a stream | its origin + `--timeout` | it fails (`timeout`), and the next starts |
//! | `Tick` | the clock | the open loop's next start | the starts that fell due, then the next tick |
//! | `Refill` | the clock | 10 ms after a connect failed at once | the closed loop tries its empty slots again |
//! | `HardStop` | the clock | start + `--duration` + `--timeout` + 1 s | every stream left is cut (`timeout`) |
//!
//! The worker's thread turns the loop until [`Generator::finished`]: nothing is left to start and no
//! stream is in flight, or the hard stop has passed. The run stops by itself.

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ClientConfig;
use rustls::pki_types::ServerName;

use crate::conn::tls::Tls;
use crate::conn::upstream::{UpstreamConn, UpstreamState};
use crate::reactor::{ConnId, Cx, Handler, Ready, TURN_BUDGET, Tag, TimerKey};

use super::progress::Live;
use super::schedule::Schedule;
use super::stream::{Ending, LoadStream, Step, StepIo};
use super::tally::{Reason, Tally};

/// How long the closed loop waits before it tries again after a connect that failed at once. Such a
/// failure is this process's own (out of descriptors or ports), not the server's: trying again at once
/// would spin the loop until the duration is up.
const REFILL_PAUSE: Duration = Duration::from_millis(10);

/// One entry of the worker's slab.
pub enum Entry {
    /// Holds the worker-wide deadlines.
    Clock,
    Stream(LoadStream),
}

/// What a deadline is for (module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadTimer {
    Timeout,
    Tick,
    Refill,
    HardStop,
}

/// What one worker is to do.
pub struct WorkerPlan {
    pub addr: SocketAddr,
    pub request: Arc<[u8]>,
    /// `https`: this worker's client configuration (with its own session cache) and the server's name.
    pub tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    pub schedule: Schedule,
    pub timeout: Duration,
    pub hard_stop: Instant,
    /// Closed loop: a completed stream's connection carries the next stream of its slot.
    pub keep_alive: bool,
    /// The largest gap of a sustained stream, if judged.
    pub gap_limit: Option<Duration>,
}

/// The handler (module docs).
pub struct Generator {
    plan: WorkerPlan,
    /// Streams in flight.
    active: u64,
    tally: Tally,
    /// The chunked decoder's payload ranges, reused by every read.
    ranges: Vec<Range<usize>>,
    /// The entry that holds the worker-wide deadlines, once [`Generator::begin`] made it.
    clock: Option<ConnId>,
    /// The armed `Tick` (open loop) and `Refill` (closed loop), so that one of each is armed at most.
    tick: Option<TimerKey>,
    refill: Option<TimerKey>,
    finished: bool,
}

/// How a stream's socket joins the worker.
enum Join {
    /// A new connection: registered.
    Fresh,
    /// A kept-alive connection from the stream before: moved to the new entry's id (one `epoll_ctl`).
    Moved,
}

impl Generator {
    pub fn new(plan: WorkerPlan) -> Generator {
        Generator {
            tally: Tally::new(plan.gap_limit),
            plan,
            active: 0,
            ranges: Vec::new(),
            clock: None,
            tick: None,
            refill: None,
            finished: false,
        }
    }

    /// Starts the run: the clock entry, the hard stop, and the first streams.
    pub fn begin(&mut self, cx: &mut Cx<Self>) {
        let Ok(clock) = cx.conns.insert_with(|_| Entry::Clock) else {
            self.finished = true;
            return;
        };
        self.clock = Some(clock);
        cx.timers
            .insert(self.plan.hard_stop, clock, LoadTimer::HardStop);
        self.fill(cx);
        self.check_finished();
    }

    /// Nothing is left to do: the worker's thread stops turning the loop.
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// The figures so far, taken out (the worker keeps an empty tally).
    pub fn take_tally(&mut self) -> Tally {
        std::mem::replace(&mut self.tally, Tally::new(self.plan.gap_limit))
    }

    /// Copies the figures the progress line shows (between turns of the loop).
    pub fn publish(&self, live: &Live) {
        let t = &self.tally;
        live.set(
            t.started,
            self.active,
            t.completed,
            t.failed_total(),
            t.events,
        );
    }

    /// Starts what the schedule says is due now.
    fn fill(&mut self, cx: &mut Cx<Self>) {
        if self.finished {
            return;
        }
        let mut failed_at_once = false;
        loop {
            // The clock is read per start, not once per iteration: a start's instant is a measurement.
            let now = Instant::now();
            let Some(origin) = self.plan.schedule.take(now, self.active) else {
                break;
            };
            if !self.launch(cx, origin, now) {
                failed_at_once = true;
                if self.plan.schedule.is_closed() {
                    break;
                }
            }
        }
        let Some(clock) = self.clock else { return };
        if failed_at_once && self.plan.schedule.is_closed() && self.refill.is_none() {
            let at = Instant::now() + REFILL_PAUSE;
            self.refill = Some(cx.timers.insert(at, clock, LoadTimer::Refill));
        }
        if self.tick.is_none()
            && let Some(at) = self.plan.schedule.next_due()
        {
            self.tick = Some(cx.timers.insert(at, clock, LoadTimer::Tick));
        }
    }

    /// Opens a connection for a stream due at `origin`. False if that failed at once (counted).
    fn launch(&mut self, cx: &mut Cx<Self>, origin: Instant, now: Instant) -> bool {
        let tls = match &self.plan.tls {
            None => None,
            Some((config, name)) => match Tls::client(config.clone(), name.clone()) {
                Ok(tls) => Some(tls),
                Err(e) => {
                    self.tally.start(origin, now);
                    self.tally.fail(Reason::Tls, e);
                    return false;
                }
            },
        };
        match UpstreamConn::connect(self.plan.addr, tls) {
            Ok(conn) => self.insert(cx, conn, origin, now, Join::Fresh),
            Err(e) => {
                self.tally.start(origin, now);
                self.tally.fail(Reason::Connect, e);
                false
            }
        }
    }

    /// Makes `conn` the entry of a stream due at `origin`, with its deadline. False if it could not
    /// join the worker (counted).
    fn insert(
        &mut self,
        cx: &mut Cx<Self>,
        conn: UpstreamConn,
        origin: Instant,
        now: Instant,
        join: Join,
    ) -> bool {
        self.tally.start(origin, now);
        let at = origin + self.plan.timeout;
        let timers = &mut cx.timers;
        let made = cx.conns.insert_with(|id| {
            let deadline = timers.insert(at, id, LoadTimer::Timeout);
            Entry::Stream(LoadStream::new(conn, origin, deadline))
        });
        let Ok(id) = made else {
            self.tally
                .fail(Reason::Connect, "the worker's slab is full");
            return false;
        };
        let Some(Entry::Stream(s)) = cx.conns.get_mut(id) else {
            return false;
        };
        let registered = match join {
            Join::Fresh => s.conn.io.register(&cx.registry, id, Tag::MAIN),
            Join::Moved => s.conn.io.reregister(&cx.registry, id, Tag::MAIN),
        };
        if let Err(e) = registered {
            // Not through `end`: it would start the next stream, which would fail the same way, within
            // this very call.
            cx.timers.cancel(s.deadline);
            cx.close(id);
            self.tally.fail(Reason::Connect, e);
            return false;
        }
        self.active += 1;
        if let Join::Moved = join {
            // The connection is writable already (its last event said so): send the request in phase 6
            // of this iteration rather than wait for the next.
            cx.defer(id);
        }
        true
    }

    /// Steps stream `id` while it makes progress, for one turn at most.
    fn drive(&mut self, cx: &mut Cx<Self>, id: ConnId) {
        for _ in 0..TURN_BUDGET {
            let Some(Entry::Stream(s)) = cx.conns.get_mut(id) else {
                return;
            };
            let mut io = StepIo {
                scratch: &mut cx.scratch,
                ranges: &mut self.ranges,
                request: &self.plan.request,
                tally: &mut self.tally,
            };
            match s.step(&mut io) {
                Step::Continue => {}
                Step::Wait => return,
                Step::Ended(ending) => return self.end(cx, id, ending),
            }
        }
        cx.defer(id);
    }

    /// Stream `id` ended: note how, then start the next (on its connection, with `--keep-alive`).
    fn end(&mut self, cx: &mut Cx<Self>, id: ConnId, ending: Ending) {
        let Some(Entry::Stream(s)) = cx.conns.get_mut(id) else {
            return;
        };
        cx.timers.cancel(s.deadline);
        let timing = *s.timing();
        let reusable = match ending {
            Ending::Completed { at, reusable } => {
                let took = at.saturating_duration_since(timing.origin);
                self.tally.complete(took, timing.events, timing.max_gap);
                reusable
            }
            Ending::Refused(status) => {
                self.tally.refused(status);
                false
            }
            Ending::Failed(reason, detail) => {
                self.tally.fail(reason, detail);
                false
            }
        };
        self.active -= 1;
        let now = Instant::now();
        let next = match reusable && self.plan.keep_alive && !self.finished {
            true => self.plan.schedule.take(now, self.active),
            false => None,
        };
        match next {
            // The connection moves to the next stream's entry; this one's goes without a reap, since
            // it holds nothing more.
            Some(origin) => {
                if let Some(Entry::Stream(old)) = cx.conns.take(id) {
                    let conn = UpstreamConn::reuse(old.conn.into_transport());
                    self.insert(cx, conn, origin, now, Join::Moved);
                }
            }
            // Dropped in the reap, which closes its socket.
            None => cx.close(id),
        }
        self.fill(cx);
        self.check_finished();
    }

    /// The hard stop: every stream left fails, and the run is over.
    fn cut_all(&mut self, cx: &mut Cx<Self>) {
        self.finished = true;
        let streams: Vec<ConnId> = (cx.conns.iter())
            .filter(|(_, e)| matches!(e, Entry::Stream(_)))
            .map(|(id, _)| id)
            .collect();
        for id in streams {
            let why = "cut by the run's own deadline (--duration + --timeout + 1 s)";
            self.end(cx, id, Ending::Failed(Reason::Timeout, why.to_string()));
        }
    }

    fn check_finished(&mut self) {
        if self.active == 0 && self.plan.schedule.exhausted(Instant::now()) {
            self.finished = true;
        }
    }
}

/// What a stream was doing, for a timeout's message.
fn doing(s: &LoadStream) -> String {
    match &s.conn.state {
        UpstreamState::Handshaking if !s.conn.io.connected() => "connecting".to_string(),
        UpstreamState::Handshaking => "in the TLS handshake".to_string(),
        UpstreamState::Sending { .. } if !s.conn.io.connected() => "connecting".to_string(),
        UpstreamState::Sending { .. } => "sending the request".to_string(),
        UpstreamState::AwaitingHead { .. } => "waiting for the response head".to_string(),
        UpstreamState::Body { .. } => format!("in the body, after {} events", s.timing().events),
    }
}

impl Handler for Generator {
    type Conn = Entry;
    type Timer = LoadTimer;

    /// Never called: a load generator has no listener.
    fn on_accept(&mut self, _cx: &mut Cx<Self>, _sock: mio::net::TcpStream, _peer: SocketAddr) {}

    fn on_ready(&mut self, cx: &mut Cx<Self>, id: ConnId, _tag: Tag, ready: Ready) {
        if let Some(Entry::Stream(s)) = cx.conns.get_mut(id) {
            s.conn.io.absorb(ready);
            self.drive(cx, id);
        }
    }

    fn on_resume(&mut self, cx: &mut Cx<Self>, id: ConnId) {
        self.drive(cx, id);
    }

    fn on_timer(&mut self, cx: &mut Cx<Self>, id: ConnId, what: LoadTimer) {
        match what {
            LoadTimer::Timeout => {
                let Some(Entry::Stream(s)) = cx.conns.get(id) else {
                    return;
                };
                let why = format!(
                    "no end within --timeout {:?}, {}",
                    self.plan.timeout,
                    doing(s)
                );
                self.end(cx, id, Ending::Failed(Reason::Timeout, why));
            }
            LoadTimer::Tick => {
                self.tick = None;
                self.fill(cx);
            }
            LoadTimer::Refill => {
                self.refill = None;
                self.fill(cx);
            }
            LoadTimer::HardStop => self.cut_all(cx),
        }
        self.check_finished();
    }

    fn on_close(&mut self, cx: &mut Cx<Self>, _id: ConnId, entry: Entry) {
        if let Entry::Stream(s) = entry {
            cx.timers.cancel(s.deadline);
        }
    }

    fn describe(&self, cx: &Cx<Self>, id: ConnId, _tag: Tag) -> String {
        match cx.conns.get(id) {
            Some(Entry::Stream(s)) => format!("stream {id:?}, {}", doing(s)),
            Some(Entry::Clock) => "the clock (starts and deadlines)".to_string(),
            None => format!("entry {id:?}, gone"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a stream in flight costs the worker, beyond its socket: its slab entry. The budget is about
    /// 2 KiB a stream (9,000 streams on two cores); the entry is a fraction of it, and nothing else is
    /// held per stream once its head is read.
    #[test]
    fn a_stream_entry_is_small() {
        let entry = std::mem::size_of::<Entry>();
        // 192 bytes when this was written: the connection (72), the timing (72), the deadline's key and
        // the event counter.
        assert!(entry <= 256, "a slab entry is {entry} bytes");
    }
}
