//! The admission side of the operator: the injection decision (pure), the
//! `/mutate` endpoint, its listener's bounds, its serving certificate and
//! its configuration; `serve` starts it.

pub mod certs;
pub mod config;
pub mod inject;
pub mod listener;
pub mod serve;
pub mod server;

pub use serve::serve;
