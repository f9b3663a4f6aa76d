//! The exchange's deadlines in simulated time: instants in, decisions out, no socket.
//!
//! Test code only: its parent declares it `#[cfg(test)]`.

use super::*;
use crate::reactor::Conns;

fn setup() -> (Timers<Wait>, ConnId, UpstreamTimeouts, Instant) {
    let mut conns = Conns::default();
    let id = conns.insert_with(|_| ()).unwrap();
    let t = UpstreamTimeouts {
        connect: Duration::from_secs(1),
        handshake: Duration::from_secs(2),
        head: Duration::from_secs(3),
        first_token: Duration::from_secs(4),
        idle: Duration::from_secs(5),
        total: None,
        sse_keepalive: Some(Duration::from_secs(10)),
    };
    (Timers::default(), id, t, Instant::now())
}

fn s(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// The step wait follows the exchange: connect, handshake, head, first token, idle.
#[test]
fn the_step_wait_follows_the_facts() {
    let f = StepFacts {
        queued: false,
        backing_off: false,
        streaming: false,
        connection: false,
        connected: false,
        handshaking: false,
        first_token: false,
    };
    assert_eq!(wanted(f), Wait::Connect, "resolving");
    let f = StepFacts {
        connection: true,
        ..f
    };
    assert_eq!(wanted(f), Wait::Connect, "connecting");
    let f = StepFacts {
        connected: true,
        handshaking: true,
        ..f
    };
    assert_eq!(wanted(f), Wait::Handshake);
    let f = StepFacts {
        handshaking: false,
        ..f
    };
    assert_eq!(wanted(f), Wait::Head);
    let f = StepFacts {
        streaming: true,
        ..f
    };
    assert_eq!(wanted(f), Wait::FirstToken);
    let f = StepFacts {
        first_token: true,
        ..f
    };
    assert_eq!(wanted(f), Wait::Idle);
}

/// Staying in a wait does not touch the timer set; moving on replaces the deadline.
#[test]
fn a_wait_is_armed_once_and_replaced_when_it_changes() {
    let (mut timers, id, t, t0) = setup();
    let mut x = ExchangeTimers::default();
    x.expect(&mut timers, &t, Wait::Connect, false, t0, id, |w| w);
    x.expect(&mut timers, &t, Wait::Connect, false, t0 + s(0), id, |w| w);
    assert_eq!(timers.next_deadline(), Some(t0 + s(1)));
    x.expect(&mut timers, &t, Wait::Head, false, t0 + s(1) / 2, id, |w| w);
    assert_eq!(timers.len(), 1, "the connect deadline is gone");
    assert_eq!(timers.next_deadline(), Some(t0 + s(1) / 2 + s(3)));
    x.cancel_all(&mut timers);
    assert_eq!(timers.len(), 0);
}

/// An idle deadline restarts from the last read without being re-armed per read: when it fires early it
/// moves forward, and it expires only after a real silence.
#[test]
fn idle_restarts_from_the_last_read() {
    let (mut timers, id, t, t0) = setup();
    let mut x = ExchangeTimers::default();
    x.expect(&mut timers, &t, Wait::Idle, false, t0, id, |w| w);
    for n in 1..=4 {
        x.read_at(t0 + s(n));
    }
    assert_eq!(timers.len(), 1, "reads did not re-arm anything");
    let (due, _, w) = timers.pop_due(t0 + s(5)).unwrap();
    assert_eq!((due, w), (t0 + s(5), Wait::Idle));
    assert_eq!(x.check(&mut timers, &t, w, due, id, |w| w), Fired::NotYet);
    assert_eq!(timers.next_deadline(), Some(t0 + s(4) + s(5)));
    let (due, _, w) = timers.pop_due(t0 + s(9)).unwrap();
    assert_eq!(
        x.check(&mut timers, &t, w, due, id, |w| w),
        Fired::Expired(Wait::Idle)
    );
}

/// The first-token deadline counts from the head; reads (pings, comments) do not move it.
#[test]
fn the_first_token_deadline_does_not_restart() {
    let (mut timers, id, t, t0) = setup();
    let mut x = ExchangeTimers::default();
    x.expect(&mut timers, &t, Wait::FirstToken, false, t0, id, |w| w);
    x.read_at(t0 + s(3));
    let (due, _, w) = timers.pop_due(t0 + s(4)).unwrap();
    assert_eq!(
        x.check(&mut timers, &t, w, due, id, |w| w),
        Fired::Expired(Wait::FirstToken)
    );
}

/// Keep-alive comments come one interval after the stream went quiet, and again each interval while it
/// stays quiet; a read pushes the next one back.
#[test]
fn keepalives_follow_the_silence() {
    let (mut timers, id, t, t0) = setup();
    let t = UpstreamTimeouts {
        first_token: s(100),
        ..t
    };
    let mut x = ExchangeTimers::default();
    x.expect(&mut timers, &t, Wait::FirstToken, true, t0, id, |w| w);
    let fire = |timers: &mut Timers<Wait>, x: &mut ExchangeTimers, at| {
        let (due, _, w) = timers.pop_due(at).expect("a deadline due");
        assert_eq!(w, Wait::KeepAlive);
        x.check(timers, &t, w, due, id, |w| w)
    };
    assert_eq!(fire(&mut timers, &mut x, t0 + s(10)), Fired::KeepAlive);
    x.kept_alive(t0 + s(10));
    assert_eq!(fire(&mut timers, &mut x, t0 + s(20)), Fired::KeepAlive);
    x.kept_alive(t0 + s(20));
    x.read_at(t0 + s(25));
    assert_eq!(fire(&mut timers, &mut x, t0 + s(30)), Fired::NotYet);
    assert_eq!(fire(&mut timers, &mut x, t0 + s(35)), Fired::KeepAlive);
    // Off when the stream no longer wants them.
    x.expect(
        &mut timers,
        &t,
        Wait::FirstToken,
        false,
        t0 + s(36),
        id,
        |w| w,
    );
    assert_eq!(timers.len(), 1, "only the step deadline is left");
}

/// The total deadline is armed once, whatever the waits do.
#[test]
fn the_total_deadline_is_armed_once() {
    let (mut timers, id, t, t0) = setup();
    let t = UpstreamTimeouts {
        total: Some(s(60)),
        sse_keepalive: None,
        ..t
    };
    let mut x = ExchangeTimers::default();
    x.expect(&mut timers, &t, Wait::Connect, false, t0, id, |w| w);
    x.expect(&mut timers, &t, Wait::Head, false, t0 + s(1), id, |w| w);
    x.expect(
        &mut timers,
        &t,
        Wait::FirstToken,
        false,
        t0 + s(2),
        id,
        |w| w,
    );
    assert_eq!(timers.len(), 2);
    assert!(
        timers
            .pop_due(t0 + s(59))
            .is_some_and(|(_, _, w)| w == Wait::FirstToken)
    );
    let (due, _, w) = timers.pop_due(t0 + s(60)).unwrap();
    assert_eq!(
        x.check(&mut timers, &t, w, due, id, |w| w),
        Fired::Expired(Wait::Total)
    );
}
