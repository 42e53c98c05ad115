//! The real `heartbeat-operator` binary run by a test: in the stack's
//! network namespace (the API server calls its webhook there), as a
//! ServiceAccount with the repo's least-privilege RBAC, never as admin.
//! Each instance has names of its own (RBAC, certificate Secret, webhook
//! configuration, the namespace label it injects), so tests run side by side.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::TestNamespace;
use crate::stack::{Stack, repo_dir, run, run_ok, stack_command};

/// A running operator and what it owns.
pub struct OperatorProcess {
    child: Child,
    stack: Stack,
    /// Its own namespace (RBAC, certificate Secret).
    pub namespace: TestNamespace,
    /// The base of its names (ServiceAccount, ClusterRole, webhook config).
    pub name: String,
    /// The namespace label (key, value) its webhook injects.
    pub injection_label: (String, String),
    /// `host:port` of its admin endpoints (reachable from the host).
    pub admin: String,
    /// `host:port` of its webhook (reachable from the host).
    pub webhook: String,
    log: PathBuf,
}

/// Two adjacent ports (webhook, admin) for this process's next operator in
/// the stack namespace, distinct for up to 500 operators per test binary.
fn ports() -> (u16, u16) {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 40) as u16 * 1_000;
    let p = base + (NEXT.fetch_add(2, Ordering::Relaxed) % 1_000);
    (p, p + 1)
}

impl OperatorProcess {
    /// Applies the RBAC under new names and starts `bin` as that
    /// ServiceAccount; returns once `/readyz` answers 200.
    pub fn start(stack: &Stack, bin: &Path) -> OperatorProcess {
        let namespace = TestNamespace::create(stack, "hb-op");
        let name = format!("hbop-{}", crate::unique_suffix());
        let rbac = std::fs::read_to_string(repo_dir().join("operator/deploy/rbac.yaml"))
            .expect("operator/deploy/rbac.yaml")
            .replace("heartbeat-operator", &name)
            .replace("heartbeat-system", &namespace.name);
        crate::kube_env::apply_yaml(stack, &rbac);
        let kubeconfig = stack.service_account_kubeconfig(&namespace.name, &name);
        let addr = stack.env.stack_addr.clone().expect("HB_STACK_ADDR");
        let (webhook_port, admin_port) = ports();
        let webhook = format!("{addr}:{webhook_port}");
        let admin = format!("{addr}:{admin_port}");
        let injection_label = ("heartbeat.dev/injection".to_string(), name.clone());
        let log = std::env::temp_dir().join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("operator log");
        let err = out.try_clone().expect("operator log");
        let child = stack_command(stack.layout.root())
            .args(["exec", "--"])
            .arg(bin)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["--namespace", &namespace.name])
            .args(["--webhook-addr", &webhook, "--admin-addr", &admin])
            .args(["--webhook-url", &format!("https://{webhook}/mutate")])
            .args(["--manage-webhook-config", "--webhook-config-name", &name])
            .args(["--cert-secret", &format!("{name}-webhook-tls")])
            .args([
                "--injection-label",
                &format!("heartbeat.dev/injection={name}"),
            ])
            .args(["--sidecar-image", "heartbeat-sidecar:dev"])
            .env("HEARTBEAT_OPERATOR_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start the operator");
        let mut op = OperatorProcess {
            child,
            stack: stack.clone(),
            namespace,
            name,
            injection_label,
            admin,
            webhook,
            log,
        };
        op.wait_ready(Duration::from_secs(60));
        op
    }

    fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let url = format!("http://{}/readyz", self.admin);
        loop {
            let (ok, _, _) =
                run(Command::new("curl").args(["-sf", "--noproxy", "*", "--max-time", "2", &url]));
            // Ready, and ours: a /readyz from someone else's process does not count.
            if ok && matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the operator exited ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "the operator was not ready in {timeout:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Labels `ns` so this operator injects its pods.
    pub fn enable_injection(&self, ns: &TestNamespace) {
        let (k, v) = &self.injection_label;
        ns.kubectl(&[
            "label",
            "namespace",
            &ns.name,
            &format!("{k}={v}"),
            "--overwrite",
        ]);
    }

    /// The operator's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A metric's value from its `/metrics` (the first sample whose line starts with `prefix`).
    pub fn metric(&self, prefix: &str) -> Option<f64> {
        let (_, text, _) = run(Command::new("curl").args([
            "-sf",
            "--noproxy",
            "*",
            &format!("http://{}/metrics", self.admin),
        ]));
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }

    /// Stops the operator (SIGKILL: an outage, not a shutdown).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        self.kill();
        for what in [
            "mutatingwebhookconfiguration",
            "clusterrolebinding",
            "clusterrole",
        ] {
            let _ = run(self
                .stack
                .kubectl()
                .args(["delete", what, &self.name, "--wait=false"]));
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Runs `kubectl` and returns stdout (panics on failure).
pub fn kubectl_ok(stack: &Stack, args: &[&str]) -> String {
    run_ok(stack.kubectl().args(args))
}
