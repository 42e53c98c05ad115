//! Bounds shared by every HTTP listener of the sidecar and the operator,
//! so that no client (or set of clients) can starve another, in
//! particular the kubelet's probes: connections capped per source address
//! and overall, with a lighter source displacing the busiest when the
//! listener is full ([`table`], pure); the live bookkeeping and the
//! stream that closes on eviction or when idle ([`held`]); a request
//! timeout ([`timeout`]); a plain HTTP/1 server with all of it
//! ([`serve`]), and (feature `axum-server`) the same caps as an
//! `axum_server` acceptor for a TLS listener ([`tls`]).
#![forbid(unsafe_code)]

pub mod held;
pub mod serve;
pub mod table;
pub mod timeout;
#[cfg(feature = "axum-server")]
pub mod tls;

pub use held::{Connections, Held, Slot};
pub use serve::{Limits, serve};
pub use table::{Caps, Refusal};
#[cfg(feature = "axum-server")]
pub use tls::{LimitedAcceptor, TlsLimits};
