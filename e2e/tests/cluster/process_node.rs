//! The process node with the real controller-manager and scheduler: pods
//! really start, stop, restart and complete as local processes.

use std::time::Duration;

use heartbeat_e2e::{Stack, TestNamespace};

const T: Duration = Duration::from_secs(90);

fn phases(s: &str) -> Vec<&str> {
    s.split_whitespace().collect()
}

#[test]
fn deployment_of_three_runs_and_scaling_to_one_sends_sigterm() {
    let stack = Stack::get();
    let ns = TestNamespace::create(stack, "node-deploy");
    ns.kubectl(&[
        "create",
        "deployment",
        "demo",
        "--image=demo/worker",
        "--replicas=3",
    ]);
    ns.wait_jsonpath("pods", "{.items[*].status.phase}", T, |s| {
        phases(s) == ["Running"; 3]
    });
    let before = ns.kubectl(&["get", "pods", "-o", "jsonpath={.items[*].metadata.name}"]);
    let before: Vec<String> = before.split_whitespace().map(str::to_string).collect();
    for pod in &before {
        assert!(
            ns.container_log(pod, "worker").contains("started"),
            "{pod} did not start"
        );
    }

    ns.kubectl(&["scale", "deployment", "demo", "--replicas=1"]);
    let after = ns.wait_jsonpath("pods", "{.items[*].metadata.name}", T, |s| {
        s.split_whitespace().count() == 1
    });
    let removed: Vec<&String> = before
        .iter()
        .filter(|p| !after.contains(p.as_str()))
        .collect();
    assert_eq!(removed.len(), 2, "before {before:?}, after {after}");
    for pod in removed {
        let log = ns.container_log(pod, "worker");
        assert!(
            log.contains("worker: received SIGTERM"),
            "{pod} was not stopped with SIGTERM:\n{log}"
        );
    }
}

#[test]
fn job_with_a_native_sidecar_completes() {
    let stack = Stack::get();
    let ns = TestNamespace::create(stack, "node-job");
    ns.apply(
        r#"
apiVersion: batch/v1
kind: Job
metadata: {name: work}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      initContainers:
      - {name: side, image: demo/worker, restartPolicy: Always}
      containers:
      - name: main
        image: demo/job
        env: [{name: JOB_SECONDS, value: "2"}]
"#,
    );
    ns.kubectl(&[
        "wait",
        "--for=condition=complete",
        "job/work",
        "--timeout=90s",
    ]);
    let pod = ns.kubectl(&[
        "get",
        "pods",
        "-l",
        "job-name=work",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ]);
    let status = |path: &str| ns.kubectl(&["get", "pod", &pod, "-o", &format!("jsonpath={path}")]);
    ns.wait_pod_phase(&pod, "Succeeded", T);
    assert_eq!(ns.exit_code(&pod, "main"), Some(0));
    // The sidecar ran beside the job and was stopped after it.
    assert!(
        ns.container_log(&pod, "side")
            .contains("worker: received SIGTERM")
    );
    assert!(!status("{.status.initContainerStatuses[0].state.terminated}").is_empty());
}

/// The Events of `pod` in `ns` with `reason`, as `fieldPath message` lines.
fn events(ns: &TestNamespace, pod: &str, reason: &str) -> Vec<String> {
    let out = ns.kubectl(&[
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.name={pod},reason={reason}"),
        "-o",
        "jsonpath={range .items[*]}{.involvedObject.fieldPath} {.message}{\"\\n\"}{end}",
    ]);
    out.lines().map(str::to_string).collect()
}

/// Rule: a liveness probe failing its threshold restarts the container,
/// and the node says so as the kubelet does: an `Unhealthy` Event per
/// failed run (the probe's answer and how long it took), a `Killing` Event
/// before the restart, and `lastState.terminated` telling the probe kill
/// from the process's own exit.
#[test]
fn failing_http_liveness_probe_restarts_the_container() {
    let stack = Stack::get();
    let ns = TestNamespace::create(stack, "node-live");
    ns.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: live}
spec:
  containers:
  - name: app
    image: demo/http
    env: [{name: FAIL_AFTER_SECONDS, value: "2"}]
    livenessProbe:
      httpGet: {port: 8080, path: /healthz}
      # Listening by then: the failures are the app's 500s.
      initialDelaySeconds: 3
      periodSeconds: 1
      failureThreshold: 2
"#,
    );
    let restarts = ns.wait_jsonpath(
        "pod/live",
        "{.status.containerStatuses[0].restartCount}",
        T,
        |s| s.parse::<u32>().is_ok_and(|n| n >= 2),
    );
    assert!(restarts.parse::<u32>().unwrap_or(0) >= 2);
    let last = ns.kubectl(&[
        "get",
        "pod",
        "live",
        "-o",
        "jsonpath={.status.containerStatuses[0].lastState.terminated.reason}",
    ]);
    assert!(!last.is_empty(), "lastState records the killed run");
    let why = ns.kubectl(&[
        "get",
        "pod",
        "live",
        "-o",
        "jsonpath={.status.containerStatuses[0].lastState.terminated.message}",
    ]);
    assert!(
        why.starts_with(
            "killed by the node: liveness probe failed: HTTP probe failed with statuscode: 500"
        ),
        "lastState.terminated.message: {why:?}"
    );
    let unhealthy = events(&ns, "live", "Unhealthy");
    assert!(
        unhealthy.iter().any(|e| e.starts_with(
            "spec.containers{app} Liveness probe failed: HTTP probe failed with statuscode: 500 (the probe took "
        )),
        "Unhealthy Events: {unhealthy:#?}"
    );
    let killing = events(&ns, "live", "Killing");
    assert!(
        killing
            .iter()
            .any(|e| e
                == "spec.containers{app} Container app failed liveness probe, will be restarted"),
        "Killing Events: {killing:#?}"
    );
}

/// Rule: with a startupProbe, liveness and readiness wait until it passes
/// (`started` false, not ready), and one failing its threshold restarts the
/// container with `Startup probe failed` naming the whole cause (the
/// connection refused under the HTTP client's "error sending request").
#[test]
fn a_startup_probe_holds_liveness_back_and_restarts_a_container_that_never_starts() {
    let stack = Stack::get();
    let ns = TestNamespace::create(stack, "node-startup");
    ns.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: never}
spec:
  containers:
  - name: app
    image: demo/http
    # Its liveness probe would pass; the startup probe asks a closed port.
    startupProbe:
      httpGet: {port: 8081, path: /healthz}
      periodSeconds: 2
      failureThreshold: 4
    livenessProbe:
      httpGet: {port: 8080, path: /healthz}
      periodSeconds: 1
    readinessProbe:
      httpGet: {port: 8080, path: /healthz}
      periodSeconds: 1
---
apiVersion: v1
kind: Pod
metadata: {name: slow}
spec:
  containers:
  - name: app
    image: demo/http
    startupProbe:
      httpGet: {port: 8080, path: /healthz}
      periodSeconds: 1
      failureThreshold: 30
"#,
    );
    ns.wait_jsonpath(
        "pod/never",
        "{.status.containerStatuses[0].restartCount}",
        T,
        |s| s.parse::<u32>().is_ok_and(|n| n >= 1),
    );
    let status =
        |pod: &str, path: &str| ns.kubectl(&["get", "pod", pod, "-o", &format!("jsonpath={path}")]);
    assert_eq!(
        status("never", "{.status.containerStatuses[0].ready}"),
        "false"
    );
    assert_eq!(
        status("never", "{.status.containerStatuses[0].started}"),
        "false"
    );
    let why = status(
        "never",
        "{.status.containerStatuses[0].lastState.terminated.message}",
    );
    assert!(
        why.starts_with("killed by the node: startup probe failed: Get \"http://"),
        "lastState.terminated.message: {why:?}"
    );
    let unhealthy = events(&ns, "never", "Unhealthy");
    assert!(
        unhealthy
            .iter()
            .all(|e| e.starts_with("spec.containers{app} Startup probe failed: "))
            && unhealthy.iter().any(|e| e.contains("Connection refused")),
        "only the startup probe ran, and it names the refusal: {unhealthy:#?}"
    );
    let killing = events(&ns, "never", "Killing");
    assert!(
        killing
            .iter()
            .any(|e| e
                == "spec.containers{app} Container app failed startup probe, will be restarted"),
        "Killing Events: {killing:#?}"
    );
    // One that starts: started, then ready (no readiness probe), never restarted.
    ns.wait_jsonpath(
        "pod/slow",
        "{.status.containerStatuses[0].started}",
        T,
        |s| s == "true",
    );
    ns.wait_jsonpath("pod/slow", "{.status.containerStatuses[0].ready}", T, |s| {
        s == "true"
    });
    assert_eq!(
        status("slow", "{.status.containerStatuses[0].restartCount}"),
        "0"
    );
}

#[test]
fn env_from_a_secret_and_the_downward_api_reach_the_process_exactly() {
    let stack = Stack::get();
    let ns = TestNamespace::create(stack, "node-env");
    ns.kubectl(&[
        "create",
        "secret",
        "generic",
        "kafka",
        "--from-literal=bootstrap.servers=127.0.0.1:9092,other:9093",
    ]);
    ns.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: env}
spec:
  containers:
  - name: app
    image: demo/printenv
    env:
    - {name: LITERAL, value: "a b  c"}
    - {name: KAFKA_BOOTSTRAP_SERVERS, valueFrom: {secretKeyRef: {name: kafka, key: bootstrap.servers}}}
    - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: POD_NAMESPACE, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
    - {name: POD_UID, valueFrom: {fieldRef: {fieldPath: metadata.uid}}}
    - {name: NODE_NAME, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
    - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
    - {name: COMBINED, value: "$(POD_NAME)@$(NODE_NAME)"}
"#,
    );
    ns.wait_jsonpath("pod/env", "{.status.phase}", T, |s| s == "Running");
    let uid = ns.kubectl(&["get", "pod", "env", "-o", "jsonpath={.metadata.uid}"]);
    let ip = ns.kubectl(&["get", "pod", "env", "-o", "jsonpath={.status.podIP}"]);
    let mut log = String::new();
    for _ in 0..40 {
        log = ns.container_log("env", "app");
        if log.contains("POD_UID=") {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let lines: Vec<&str> = log.lines().collect();
    for want in [
        "LITERAL=a b  c".to_string(),
        "KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092,other:9093".to_string(),
        "POD_NAME=env".to_string(),
        format!("POD_NAMESPACE={}", ns.name),
        format!("POD_UID={uid}"),
        "NODE_NAME=process-node".to_string(),
        format!("POD_IP={ip}"),
        "COMBINED=env@process-node".to_string(),
    ] {
        assert!(
            lines.contains(&want.as_str()),
            "missing {want:?} in:\n{log}"
        );
    }
}

#[test]
fn an_image_outside_the_map_is_err_image_pull_with_a_clear_message() {
    let stack = Stack::get();
    let ns = TestNamespace::create(stack, "node-image");
    ns.kubectl(&["run", "nginx", "--image=nginx:1.27", "--restart=Never"]);
    let reason = ns.wait_jsonpath(
        "pod/nginx",
        "{.status.containerStatuses[0].state.waiting.reason}",
        T,
        |s| s == "ErrImagePull",
    );
    assert_eq!(reason, "ErrImagePull");
    let msg = ns.kubectl(&[
        "get",
        "pod",
        "nginx",
        "-o",
        "jsonpath={.status.containerStatuses[0].state.waiting.message}",
    ]);
    assert!(msg.contains("not in the process node's image map"), "{msg}");
}
