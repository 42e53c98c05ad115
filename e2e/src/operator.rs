//! The real `heartbeat-operator` binary run by a test: in the stack's
//! network namespace (the API server calls its webhook there), as a
//! ServiceAccount with the repo's least-privilege RBAC, never as admin.
//! Each operator has names of its own (RBAC, certificate Secret, webhook
//! configuration, leader Lease, the namespace label it injects, the monitor
//! label it handles), so tests run side by side. Several processes may share
//! one operator's names: replicas (leader election) and restarts.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::TestNamespace;
use crate::metrics::{self, Sample};
use crate::stack::{Stack, repo_dir, run, run_ok, stack_command};

/// The label key an operator's monitors carry (`--monitor-selector`).
pub const MONITOR_LABEL: &str = "heartbeat.dev/operator";

/// Where an operator process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Network {
    /// In the stack's network namespace, on the stack address: it reaches
    /// the API server, pods and the stack's broker (the usual place).
    #[default]
    Stack,
    /// On the host, on the host end of the stack's /30: it reaches the API
    /// server and other stacks' brokers (a [`crate::PrivateKafka`]), and the
    /// API server still reaches its webhook. The stack's namespace has no
    /// route to another stack, so this is how an operator reads a private
    /// broker.
    Host,
}

/// Settings every process of one operator shares.
#[derive(Debug, Clone, Default)]
pub struct OperatorOptions {
    pub network: Network,
    /// `--lease-duration-seconds` (unset: the binary's default).
    pub lease_duration_seconds: Option<u32>,
    /// The chart's `rbac.namespaced` mode with no namespace granted: the
    /// Secret rights' ClusterRole is not bound anywhere (a test grants a
    /// namespace with the command the operator reports).
    pub namespaced_secrets: bool,
    /// More flags for every process (e.g. `--allowed-brokers=...`).
    pub extra_args: Vec<String>,
    /// `HEARTBEAT_OPERATOR_LOG` (unset: `info`, what a failing test shows;
    /// a benchmark asks for less).
    pub log_filter: Option<String>,
}

/// An operator's identity: its namespace, names, RBAC and token, shared by
/// all its processes. Dropped with the last of them: its cluster-scoped
/// objects are deleted (its namespace goes with [`TestNamespace`]).
struct Identity {
    stack: Stack,
    namespace: TestNamespace,
    name: String,
    kubeconfig: PathBuf,
    bin: PathBuf,
    options: OperatorOptions,
}

impl Identity {
    /// A new namespace and names; the RBAC applied under those names.
    fn create(stack: &Stack, bin: &Path, options: OperatorOptions) -> Identity {
        let namespace = TestNamespace::create(stack, "hb-op");
        let name = format!("hbop-{}", crate::unique_suffix());
        let rbac = std::fs::read_to_string(repo_dir().join("operator/deploy/rbac.yaml"))
            .expect("operator/deploy/rbac.yaml")
            .replace("heartbeat-operator", &name)
            .replace("heartbeat-system", &namespace.name);
        let secrets_binding =
            format!("kind: ClusterRoleBinding\nmetadata:\n  name: {name}-secrets\n");
        let rbac: Vec<&str> = rbac
            .split("\n---\n")
            .filter(|doc| !(options.namespaced_secrets && doc.contains(&secrets_binding)))
            .collect();
        assert!(
            !options.namespaced_secrets
                || rbac.len() > 1 && !rbac.join("").contains(&secrets_binding),
            "rbac.yaml has no Secret ClusterRoleBinding to leave out"
        );
        // As the chart does: the operator patches its webhook configuration
        // and may not create one.
        let webhook_config = format!(
            "apiVersion: admissionregistration.k8s.io/v1\nkind: MutatingWebhookConfiguration\nmetadata: {{name: {name}}}\n"
        );
        crate::kube_env::apply_yaml(stack, &(rbac.join("\n---\n") + "\n---\n" + &webhook_config));
        let kubeconfig = stack.service_account_kubeconfig(&namespace.name, &name);
        Identity {
            stack: stack.clone(),
            namespace,
            name,
            kubeconfig,
            bin: bin.to_path_buf(),
            options,
        }
    }

    fn addr(&self) -> String {
        let env = &self.stack.env;
        match self.options.network {
            Network::Stack => env.stack_addr.clone().expect("HB_STACK_ADDR"),
            Network::Host => env.host_addr.clone().expect("HB_HOST_ADDR"),
        }
    }
}

impl Drop for Identity {
    fn drop(&mut self) {
        let secrets = format!("{}-secrets", self.name);
        for (what, name) in [
            ("mutatingwebhookconfiguration", &self.name),
            ("clusterrolebinding", &self.name),
            ("clusterrole", &self.name),
            ("clusterrolebinding", &secrets),
            ("clusterrole", &secrets),
        ] {
            let _ = run(self.stack.kubectl().args([
                "delete",
                what,
                name,
                "--wait=false",
                "--ignore-not-found",
            ]));
        }
        let _ = std::fs::remove_file(&self.kubeconfig);
    }
}

/// One running operator process and what it owns.
pub struct OperatorProcess {
    child: Child,
    identity: Arc<Identity>,
    /// Whether this process writes the webhook configuration (the first
    /// process of an operator and its restarts; replicas only serve).
    manages_webhook_config: bool,
    /// The base of its names (ServiceAccount, ClusterRole, webhook config, Lease).
    pub name: String,
    /// `--identity`: this process's name in the leader election.
    pub process_identity: String,
    /// The namespace label (key, value) its webhook injects.
    pub injection_label: (String, String),
    /// `host:port` of its admin endpoints (reachable from the host).
    pub admin: String,
    /// `host:port` of its webhook (reachable from the host).
    pub webhook: String,
    log: PathBuf,
}

/// Three adjacent ports (webhook, admin, keys) for this process's next
/// operator process, distinct for up to 333 operator processes per test binary.
fn ports() -> (u16, u16, u16) {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    // Below the kernel's ephemeral range (32768 and up), where any outgoing
    // connection in the stack's namespace may already hold a port.
    let base = 20_000 + (std::process::id() % 12) as u16 * 1_000;
    let p = base + (NEXT.fetch_add(3, Ordering::Relaxed) % 999);
    (p, p + 1, p + 2)
}

impl OperatorProcess {
    /// Applies the RBAC under new names and starts `bin` as that
    /// ServiceAccount in the stack's network; returns once `/readyz` answers 200.
    pub fn start(stack: &Stack, bin: &Path) -> OperatorProcess {
        Self::start_with(stack, bin, OperatorOptions::default())
    }

    /// [`OperatorProcess::start`] with `options`.
    pub fn start_with(stack: &Stack, bin: &Path, options: OperatorOptions) -> OperatorProcess {
        let identity = Arc::new(Identity::create(stack, bin, options));
        Self::spawn(identity, true)
    }

    /// Another process of this operator (same names, namespace,
    /// ServiceAccount, Lease, monitor selector and options; ports and
    /// `--identity` of its own). It serves the webhook but leaves the
    /// webhook configuration to this one.
    pub fn start_replica(&self) -> OperatorProcess {
        Self::spawn(self.identity.clone(), false)
    }

    /// SIGKILLs this process (if it still runs) and starts a fresh one with
    /// the same names, in its place (new ports and `--identity`).
    pub fn restart(&mut self) {
        self.kill();
        let fresh = Self::spawn(self.identity.clone(), self.manages_webhook_config);
        *self = fresh;
    }

    fn spawn(identity: Arc<Identity>, manages_webhook_config: bool) -> OperatorProcess {
        let id = &identity;
        let name = id.name.clone();
        let addr = id.addr();
        let (webhook_port, admin_port, keys_port) = ports();
        let webhook = format!("{addr}:{webhook_port}");
        let admin = format!("{addr}:{admin_port}");
        let process_identity = format!("{name}-{admin_port}");
        let log = std::env::temp_dir().join(format!("{process_identity}.log"));
        let out = std::fs::File::create(&log).expect("operator log");
        let err = out.try_clone().expect("operator log");
        let mut cmd = match id.options.network {
            Network::Stack => {
                let mut cmd = stack_command(id.stack.layout.root());
                cmd.args(["exec", "--"]).arg(&id.bin);
                cmd
            }
            Network::Host => Command::new(&id.bin),
        };
        cmd.arg("--kubeconfig")
            .arg(&id.kubeconfig)
            .args(["--namespace", &id.namespace.name])
            .args(["--webhook-addr", &webhook, "--admin-addr", &admin])
            .args(["--keys-addr", &format!("{addr}:{keys_port}")])
            // Directly, as for the webhook: the API server's service proxy
            // reaches only pods (the chart's tests take that way).
            .args([
                "--signing-key-url",
                &format!("https://{addr}:{keys_port}/keys/pod"),
            ])
            .args(["--signing-secret", &format!("{name}-signing")])
            .args(["--webhook-url", &format!("https://{webhook}/mutate")])
            .args(["--webhook-config-name", &name])
            .args(["--cert-secret", &format!("{name}-webhook-tls")])
            .args([
                "--injection-label",
                &format!("heartbeat.dev/injection={name}"),
            ])
            .args(["--sidecar-image", "heartbeat-sidecar:dev"])
            .args(["--monitor-selector", &format!("{MONITOR_LABEL}={name}")])
            .args(["--lease-name", &name])
            .args(["--secrets-cluster-role", &format!("{name}-secrets")])
            .args(["--service-account", &name])
            .args(["--identity", &process_identity]);
        if manages_webhook_config {
            cmd.arg("--manage-webhook-config");
        }
        cmd.args(&id.options.extra_args);
        if let Some(secs) = id.options.lease_duration_seconds {
            cmd.args(["--lease-duration-seconds", &secs.to_string()]);
        }
        for var in ["http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"] {
            cmd.env_remove(var);
        }
        let child = cmd
            .env(
                "HEARTBEAT_OPERATOR_LOG",
                id.options.log_filter.as_deref().unwrap_or("info"),
            )
            .env("HEARTBEAT_OPERATOR_LOG_FORMAT", "text")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start the operator");
        let mut op = OperatorProcess {
            child,
            manages_webhook_config,
            injection_label: ("heartbeat.dev/injection".to_string(), name.clone()),
            name,
            process_identity,
            identity,
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
            if ok && self.is_running() {
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

    /// The operator's own namespace (RBAC, certificate Secret, Lease).
    pub fn namespace(&self) -> &str {
        &self.identity.namespace.name
    }

    /// The label (key, value) a HeartbeatMonitor carries so this operator
    /// (`--monitor-selector`) handles it.
    pub fn monitor_label(&self) -> (String, String) {
        (MONITOR_LABEL.to_string(), self.name.clone())
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

    /// Whether this process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// This process's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `lines` lines of its log (for failure messages).
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Every sample its `/metrics` serves now (none when it does not answer).
    pub fn metrics(&self) -> Vec<Sample> {
        metrics::parse(&self.metrics_text())
    }

    /// Its `/metrics` text now (empty when it does not answer).
    pub fn metrics_text(&self) -> String {
        let (_, text, _) = run(Command::new("curl").args([
            "-sf",
            "--noproxy",
            "*",
            "--max-time",
            "5",
            &format!("http://{}/metrics", self.admin),
        ]));
        text
    }

    /// The value of metric `name` with (at least) `labels`, if served.
    pub fn metric_value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        metrics::value(&self.metrics(), name, labels)
    }

    /// The sum of metric `name` over the samples with (at least) `labels`
    /// (0 when none is served).
    pub fn metric_sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metrics::sum(&self.metrics(), name, labels)
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

    /// Stops the process with SIGKILL (an outage, not a shutdown) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.log);
        // The names, RBAC and namespace go with the last process (Identity's Drop).
    }
}

/// Runs `kubectl` and returns stdout (panics on failure).
pub fn kubectl_ok(stack: &Stack, args: &[&str]) -> String {
    run_ok(stack.kubectl().args(args))
}
