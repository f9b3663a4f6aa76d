//! SIGTERM and SIGINT: the first drains, the second exits at once.
//!
//! Signals arrive on one small thread of their own, never on a worker: `signal-hook` turns each into a byte
//! on a pipe (the only thing a signal handler may safely do is write to one), and the thread waits for that
//! pipe in a `mio::Poll` of its own, like any other socket. The first SIGTERM or SIGINT starts the drain
//! the configuration asks for ([`Drainer::drain`], the same call `Running::drain` makes); the process then
//! exits with status 0 when the drain is over (`Running::wait` returns). A second signal of either kind
//! means the operator will not wait: the process exits at once, with the shell's status for death by that
//! signal, 128 + its number (143 for SIGTERM, 130 for SIGINT), since it was not a clean exit.
//!
//! The handlers are installed by [`drain_on_signals`] before it returns, so a signal that comes after
//! the binary prints its `listening on` line always finds them.

use std::io;

use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

use super::supervisor::Drainer;
use crate::config::DrainPlan;

/// Installs the handlers and starts the signal thread (see the module docs).
pub fn drain_on_signals(drainer: Drainer, plan: DrainPlan) -> io::Result<()> {
    let mut signals = Signals::new([SIGTERM, SIGINT])?;
    let poll = Poll::new()?;
    poll.registry()
        .register(&mut signals, Token(0), Interest::READABLE)?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || watch(poll, signals, drainer, plan))?;
    Ok(())
}

fn watch(mut poll: Poll, mut signals: Signals, drainer: Drainer, plan: DrainPlan) {
    let mut events = Events::with_capacity(4);
    let mut draining = false;
    loop {
        if let Err(e) = poll.poll(&mut events, None)
            && e.kind() != io::ErrorKind::Interrupted
        {
            // Without this thread a signal still arrives, as a byte nobody reads: the process would
            // ignore it. Better to say so than to hang at the next SIGTERM.
            log::error!(
                "the signal thread stopped: {e}; SIGTERM and SIGINT are ignored from now on"
            );
            return;
        }
        for signal in signals.pending() {
            let name = if signal == SIGTERM {
                "SIGTERM"
            } else {
                "SIGINT"
            };
            if draining {
                log::warn!("{name} again: exiting now, without waiting for the drain");
                std::process::exit(128 + signal);
            }
            draining = true;
            log::debug!("{name}: draining (a second signal exits at once)");
            drainer.drain(plan);
        }
    }
}
