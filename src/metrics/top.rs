//! `tokenpipe top`: watch a running relay through its `GET /metrics`.
//!
//! - [`client`]: a blocking `GET` over `std::net::TcpStream`, with time-outs (plain `http://` only);
//! - [`expo`]: the Prometheus text format, read leniently (garbage is skipped, never a panic);
//! - [`figures`]: two scrapes and the wall time between them in, one row of figures out: a pure function.

mod client;
pub mod expo;
pub mod figures;

#[cfg(test)]
mod tests_client;
#[cfg(test)]
mod tests_figures;
#[cfg(test)]
mod tests_props;

pub use client::{MetricsUrl, get};
pub use expo::Exposition;
pub use figures::Figures;
