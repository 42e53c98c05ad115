//! Fixtures for end-to-end tests on the local real stack (kube-apiserver,
//! etcd, Kafka) that `e2e/stack` runs.
//!
//! [`Stack::get`] uses the stack named by `HB_STACK_DIR` when it is already
//! up, and otherwise starts one for this test binary, which `e2e/stack`
//! stops when the binary exits. A missing tool is a test failure that names
//! the tool, never a skip.
#![forbid(unsafe_code)]

pub mod error;
pub mod kafka;
pub mod kube_env;
pub mod node;
pub mod process;
pub mod stack;

pub use error::Error;
pub use kafka::TestTopic;
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
