//! The admission side of the operator: the injection decision (pure), the
//! `/mutate` endpoint, its listener's bounds, its serving certificate and
//! its configuration.

pub mod certs;
pub mod config;
pub mod inject;
pub mod listener;
pub mod server;
