//! tokenpipe: relays streamed LLM responses (SSE over chunked HTTP/1.1) from upstream model APIs to many
//! clients, on an event loop written by hand on `mio`.
//!
//! Reading order for the curious: [`reactor`] (the loop), [`conn`] (what each socket waits for),
//! [`relay`] (how a client and an upstream are tied together), [`http`] (the sans-IO protocol code),
//! [`mock`] (the built-in mock LLM). The `docs/` folder tells the same story in prose.

// Module docs link to crate-internal items (`Worker::pump`, `Step`, ...): that is where the story is.
// `cargo doc` documents them (see .cargo/config.toml), so these links resolve.
#![allow(rustdoc::private_intra_doc_links)]

pub mod config;
pub mod conn;
pub mod http;
pub mod mock;
pub mod reactor;
pub mod relay;
pub mod server;
