//! The local test bed's supervisor and its one definition of files on disk.
//!
//! `e2e/stack` (the shell entry point) installs the pinned tools and hands
//! every other command to the `hb-stack` binary built from this crate: it
//! starts etcd, kube-apiserver, kube-controller-manager, kube-scheduler, the
//! process node, a KRaft Kafka broker, Alertmanager and Prometheus in a
//! network namespace of the stack's own (see [`network`]), waits until each is
//! healthy, and stops exactly what it started. [`layout`] is the single
//! owner of the state directory's files, used by the process node and the
//! e2e fixtures too.
#![forbid(unsafe_code)]

pub mod alerting;
pub mod components;
pub mod error;
pub mod layout;
pub mod network;
pub mod owner;
pub mod pki;
pub mod process;
pub mod supervisor;

pub use error::Error;
pub use layout::{StackEnv, StackLayout};

/// Messages to the user, as `[stack] ...` on stderr.
pub fn say(msg: impl std::fmt::Display) {
    eprintln!("[stack] {msg}");
}
