//! A namespace owned by one test, deleted when the test ends.

use crate::stack::{Stack, run, run_ok};

/// A test's own namespace; dropped means checked by the
/// [restart guard](crate::restart_guard) (the test fails when a product
/// container restarted or failed a liveness probe without the test saying
/// it would), then deleted (without waiting).
pub struct TestNamespace {
    pub name: String,
    stack: Stack,
    /// Product containers the test restarts or fails the probes of itself.
    expected: std::sync::Mutex<Vec<String>>,
}

impl TestNamespace {
    /// Creates `<prefix>-<random>`.
    pub fn create(stack: &Stack, prefix: &str) -> TestNamespace {
        let name = format!("{prefix}-{}", crate::unique_suffix());
        run_ok(stack.kubectl().args(["create", "namespace", &name]));
        // Pods are refused until the controller-manager has made the default ServiceAccount.
        for _ in 0..120 {
            let (ok, _, _) =
                run(stack
                    .kubectl()
                    .args(["get", "serviceaccount", "default", "-n", &name]));
            if ok {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
        TestNamespace {
            name,
            stack: stack.clone(),
            expected: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Says that the test itself restarts `container` (or makes its
    /// liveness probe fail), for the reason `why`: the restart guard lets
    /// it pass in this namespace.
    pub fn expect_restarts(&self, container: &str, why: &str) {
        eprintln!("{}: {container} is restarted by the test: {why}", self.name);
        if let Ok(mut e) = self.expected.lock() {
            e.push(container.to_string());
        }
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // A test that already failed keeps its own message.
        let found = if std::thread::panicking() {
            Vec::new()
        } else {
            let expected = self.expected.lock().map(|e| e.clone()).unwrap_or_default();
            crate::restart_guard::check(&self.stack, &self.name, &expected)
        };
        let _ = run(self
            .stack
            .kubectl()
            .args(["delete", "namespace", &self.name, "--wait=false"]));
        assert!(
            found.is_empty(),
            "restart guard, namespace {}: a product container restarted or failed a liveness probe without the test causing it:\n{}",
            self.name,
            found.join("\n")
        );
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

impl TestNamespace {
    /// `kubectl -n <ns> apply -f -` with `yaml`.
    pub fn apply(&self, yaml: &str) {
        apply_in(&self.stack, Some(&self.name), yaml);
    }

    /// Applies `monitor` (see [`crate::monitor::MonitorBuilder`]).
    pub fn apply_monitor(&self, monitor: &heartbeat_crds::HeartbeatMonitor) {
        let json = serde_json::to_string(monitor).expect("a HeartbeatMonitor serialises");
        self.apply(&json);
    }

    /// HeartbeatMonitor `name`'s status, typed (empty before the first write).
    pub fn monitor_status(&self, name: &str) -> heartbeat_crds::HeartbeatMonitorStatus {
        let json = self.kubectl(&["get", "hbm", name, "-o", "json"]);
        crate::monitor::status_from_json(&json).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    /// HeartbeatMonitor `name`'s status as the API server stores it, every
    /// field kept (for checks that nothing leaked into it; `{}` before the
    /// first write).
    pub fn monitor_status_json(&self, name: &str) -> serde_json::Value {
        let json = self.kubectl(&["get", "hbm", name, "-o", "json"]);
        let hbm: serde_json::Value = serde_json::from_str(&json).expect("HeartbeatMonitor json");
        match &hbm["status"] {
            serde_json::Value::Null => serde_json::json!({}),
            status => status.clone(),
        }
    }

    /// A Deployment `name` of `replicas` demo workers labelled app=`name`.
    pub fn deploy_workers(&self, name: &str, replicas: u32) {
        self.apply(&format!(
            r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      terminationGracePeriodSeconds: 5
      containers: [{{name: app, image: demo/worker}}]
"#
        ));
    }
}

/// `kubectl apply -f -` with `yaml` (objects name their namespaces).
pub fn apply_yaml(stack: &Stack, yaml: &str) {
    apply_in(stack, None, yaml);
}

fn apply_in(stack: &Stack, namespace: Option<&str>, yaml: &str) {
    let mut cmd = stack.kubectl();
    cmd.arg("apply");
    if let Some(ns) = namespace {
        cmd.args(["-n", ns]);
    }
    let (ok, _, err) = crate::stack::run_with_stdin(cmd.args(["-f", "-"]), yaml);
    assert!(ok, "kubectl apply failed:\n{err}\n{yaml}");
}

impl TestNamespace {
    /// `kubectl -n <ns> <args...>`, which must succeed; returns stdout.
    pub fn kubectl(&self, args: &[&str]) -> String {
        run_ok(self.stack.kubectl().arg("-n").arg(&self.name).args(args))
    }

    /// Polls `kubectl get <what> -o jsonpath=<path>` (`what` may hold
    /// several words, such as a label selector) until `pred` holds, or
    /// panics after `timeout` with the last value.
    pub fn wait_jsonpath(
        &self,
        what: &str,
        path: &str,
        timeout: std::time::Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let jp = format!("jsonpath={path}");
        self.poll(timeout, &format!("{what} {path}"), || {
            let (_, out, err) = run(self
                .stack
                .kubectl()
                .args(["get", "-n", &self.name])
                .args(what.split_whitespace())
                .args(["-o", &jp]));
            let done = pred(&out);
            let report = format!("{out:?} {err}");
            (done, out, report)
        })
    }

    /// Calls `probe` every 250 ms until it reports done, returning its
    /// value; after `timeout` panics with its last report and the pods.
    fn poll(
        &self,
        timeout: std::time::Duration,
        what: &str,
        mut probe: impl FnMut() -> (bool, String, String),
    ) -> String {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let (done, value, report) = probe();
            if done {
                return value;
            }
            if std::time::Instant::now() >= deadline {
                let pods = run(self
                    .stack
                    .kubectl()
                    .args(["get", "pods", "-n", &self.name, "-o", "wide"]))
                .1;
                panic!(
                    "{what}: condition not met within {timeout:?}; last:\n{report}\npods:\n{pods}"
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
    }

    /// Waits until pod `name` reports `phase` (Running, Succeeded, ...).
    pub fn wait_pod_phase(&self, name: &str, phase: &str, timeout: std::time::Duration) {
        self.wait_jsonpath(&format!("pod/{name}"), "{.status.phase}", timeout, |p| {
            p == phase
        });
    }

    /// The exit code of `container`'s current run, once it has terminated
    /// (app, init or sidecar container).
    pub fn exit_code(&self, pod: &str, container: &str) -> Option<i32> {
        ["containerStatuses", "initContainerStatuses"].iter().find_map(|list| {
            let path = format!("jsonpath={{.status.{list}[?(@.name==\"{container}\")].state.terminated.exitCode}}");
            self.kubectl(&["get", "pod", pod, "-o", &path]).trim().parse().ok()
        })
    }

    /// The current log of a container run by the process node.
    pub fn container_log(&self, pod: &str, container: &str) -> String {
        self.stack.container_log(&self.name, pod, container)
    }

    /// Polls a container's log until `pred` holds, or panics after
    /// `timeout` showing the log; returns the log.
    pub fn wait_log(
        &self,
        pod: &str,
        container: &str,
        timeout: std::time::Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        self.poll(timeout, &format!("log of {pod}/{container}"), || {
            let log = self.container_log(pod, container);
            (pred(&log), log.clone(), log)
        })
    }

    /// Waits until the webhook injects the heartbeat sidecar into `pod_yaml`
    /// (a Pod) on a server-side dry run, which runs mutating webhooks and
    /// stores nothing. The webhook decides from its cache of monitors: a pod
    /// created before it has seen a new monitor is admitted without one.
    pub fn wait_injectable(&self, pod_yaml: &str, timeout: std::time::Duration) {
        let names = "jsonpath={.spec.initContainers[*].name} {.spec.containers[*].name}";
        self.poll(timeout, "the webhook injects a dry-run pod", || {
            let mut cmd = self.stack.kubectl();
            cmd.args(["create", "-n", &self.name, "--dry-run=server", "-o", names])
                .args(["-f", "-"]);
            let (ok, out, err) = crate::stack::run_with_stdin(&mut cmd, pod_yaml);
            let done = ok && out.split_whitespace().any(|c| c == "heartbeat");
            (done, out.clone(), format!("containers: {out}\n{err}"))
        });
    }

    /// [`Self::wait_injectable`] for a plain pod labelled `app: <app>`: the
    /// webhook has seen the monitor that selects it.
    pub fn wait_injects_app(&self, app: &str, timeout: std::time::Duration) {
        self.wait_injectable(
            &format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: dry-run-probe, labels: {{app: {app}}}}}\n\
                 spec: {{containers: [{{name: app, image: demo/worker}}]}}\n"
            ),
            timeout,
        );
    }

    /// Secret `kafka` with `bootstrap.servers` (the broker Secret a monitor names).
    pub fn create_broker_secret(&self, bootstrap: &str) {
        self.kubectl(&[
            "create",
            "secret",
            "generic",
            "kafka",
            &format!("--from-literal=bootstrap.servers={bootstrap}"),
        ]);
    }
}
