//! A namespace owned by one test, deleted when the test ends.

use crate::stack::{Stack, run, run_ok};

/// A test's own namespace; dropped means deleted (without waiting).
pub struct TestNamespace {
    pub name: String,
    stack: Stack,
}

impl TestNamespace {
    /// Creates `<prefix>-<random>`.
    pub fn create(stack: &Stack, prefix: &str) -> TestNamespace {
        let name = format!("{prefix}-{}", crate::unique_suffix());
        run_ok(stack.kubectl().args(["create", "namespace", &name]));
        TestNamespace {
            name,
            stack: stack.clone(),
        }
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let _ = run(self
            .stack
            .kubectl()
            .args(["delete", "namespace", &self.name, "--wait=false"]));
    }
}

/// Applies the CRDs under crds/ and waits until they are served.
pub fn install_crds(stack: &Stack) {
    let crds = crate::stack::repo_dir().join("crds");
    run_ok(
        stack
            .kubectl()
            .arg("apply")
            .arg("--server-side")
            .arg("-f")
            .arg(&crds),
    );
    run_ok(stack.kubectl().args([
        "wait",
        "--for=condition=Established",
        "crd/heartbeatmonitors.heartbeat.dev",
        "--timeout=60s",
    ]));
}
