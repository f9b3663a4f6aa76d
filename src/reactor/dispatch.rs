//! Phase 4 of [`super::Worker::turn`] for one event: which handler callback it goes to.

use mio::event::Event;

use super::door::Door;
use super::instrument::Call;
use super::token::Target;
use super::{Cx, Handler, Ready};

/// Phase 4 for one event. A free function over the worker's parts, so that the batch of events can stay
/// borrowed while the handler runs. Returns what the call was for (for [`Stopwatch`]).
pub(super) fn dispatch<H: Handler>(
    event: &Event,
    handler: &mut H,
    cx: &mut Cx<H>,
    door: &mut Door,
) -> Call {
    let ready = Ready::of(event);
    match Target::of(event.token()) {
        Target::Conn(id, tag) => {
            // Closed earlier (in this batch or before): the event was for a previous occupant.
            if cx.conns.get(id).is_some() {
                handler.on_ready(cx, id, tag, ready);
            }
            Call::Event(id, tag)
        }
        Target::Listener => {
            door.on_event();
            door.accept(handler, cx);
            Call::Accept
        }
        Target::Waker => {
            if door.drain_requested() {
                door.close(handler, cx);
                handler.on_drain(cx);
            }
            handler.on_wake(cx);
            Call::Wake
        }
    }
}
