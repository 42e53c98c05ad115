//! Fixtures for the tests that need servers, in two tiers:
//!
//! - **Kafka tier** ([`KafkaStack::get`], [`TestTopic`], [`PrivateKafka`],
//!   [`process::SidecarProcess`]): a broker only (`HB_COMPONENTS=kafka`).
//! - **Cluster tier** ([`Stack::get`], [`TestNamespace`]): the full local
//!   stack (API server, controller-manager, scheduler, process node, Kafka).
//!
//! Each `get` uses the stack already up in its state directory (test-all
//! starts one per tier), or starts one for this test binary that `e2e/stack`
//! stops when the binary exits. A missing tool is a test failure that names
//! the tool, never a skip. Fixtures panic with what went wrong: they are
//! test code. Nothing here compiles the process node or kube-runtime.
#![forbid(unsafe_code)]

pub mod alerts;
pub mod kafka;
pub mod kube_env;
pub mod metrics;
pub mod monitor;
pub mod operator;
pub mod process;
pub mod procfs;
pub mod restart_guard;
pub mod stack;
pub mod status;

pub use kafka::{KafkaStack, PrivateKafka, TestTopic};
pub use kube_env::TestNamespace;
pub use stack::Stack;

/// A short random suffix for test-owned names (namespaces, topics).
pub fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{:x}{:x}{n}", std::process::id() % 0xfff, nanos % 0xfffff)
}
