//! `tokenpipe loadgen`: a streaming HTTP load generator on the relay's own reactor.
//!
//! Modules: [`schedule`] (when streams start), [`events`] (what an event is), [`tally`] (what is counted).

pub mod events;
pub mod schedule;
pub mod tally;
