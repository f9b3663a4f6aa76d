//! tokenpipe: relays streamed LLM responses (SSE over chunked HTTP/1.1) from upstream model APIs to many
//! clients, on an event loop written by hand on `mio`.
//!
//! Reading order for the curious: [`reactor`] (the loop, which knows nothing of HTTP), [`conn`] (the
//! transport every socket byte passes through, and what each connection waits for), [`relay`] (how a
//! client and an upstream are tied together), [`http`] (the sans-IO protocol code), [`mock`] (the built-in
//! mock LLM, a second application of the same reactor), [`server`] (assembly). The `docs/` folder tells the
//! same story in prose; `examples/` holds small programs on the bare reactor.
//!
//! ```text
//! main.rs            CLI -> Config -> Server::start
//! server.rs          workers, listeners, the relay or the mock as each worker's handler, stop
//! relay/   mock/     applications: handlers the reactor drives
//! conn/              per-socket state machines and the one transport
//! reactor/  http/    the ground: the event loop (knows only mio) and sans-IO HTTP/1.1 (knows only bytes)
//! ```

// Module docs link to crate-internal items: that is where the story is. `cargo doc` documents them (see
// .cargo/config.toml), so these links resolve.
#![allow(rustdoc::private_intra_doc_links)]

pub mod config;
pub mod conn;
pub mod http;
pub mod loadgen;
pub mod metrics;
pub mod mock;
pub mod reactor;
pub mod relay;
pub mod server;

pub use config::Config;
pub use server::{Running, Server, UpstreamLoad};
