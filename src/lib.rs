//! tokenpipe: relays streamed LLM responses (SSE over chunked HTTP/1.1) from upstream model APIs to many
//! clients, on an event loop written by hand on `mio`.
//!
//! Reading order for the curious: [`reactor`] (the loop), [`conn`] (what each socket waits for),
//! [`relay`] (how a client and an upstream are tied together), [`http`] (the sans-IO protocol code),
//! [`mock`] (the built-in mock LLM). The `docs/` folder tells the same story in prose.

pub mod config;
pub mod conn;
pub mod http;
pub mod mock;
pub mod reactor;
pub mod relay;
pub mod server;
