//! The listeners' bounds on the real stack: another pod holding as many
//! connections to a sidecar as it likes cannot starve the kubelet's probes
//! of it (the process node probes from the pod network's gateway, each
//! pod has its own IP, so each is a source of its own).

use heartbeat_e2e::{Stack, TestNamespace};
use serde_json::Value;

const T: std::time::Duration = std::time::Duration::from_secs(120);

/// The intruder: `CONNS` keep-alive connections to `TARGET`:9190, each
/// sent `GET /livez` in turn (so the sidecar's header timeout never closes
/// them) and reopened whenever the sidecar closes it; after each round it
/// prints how many answered.
const INTRUDER: &str = r#"
import os, socket, sys, time
target, conns = os.environ["TARGET"], int(os.environ["CONNS"])
def request(s):
    s.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
    got = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            return False
        got += chunk
        head, sep, body = got.partition(b"\r\n\r\n")
        if sep:
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(body) >= length:
                return head.startswith(b"HTTP/1.1 200")
held = [None] * conns
while True:
    alive = 0
    for i in range(conns):
        try:
            if held[i] is None:
                held[i] = socket.create_connection((target, 9190), timeout=1)
            if request(held[i]):
                alive += 1
                continue
        except OSError as e:
            print(f"connection {i}: {e!r}", file=sys.stderr, flush=True)
        if held[i] is not None:
            held[i].close()
            held[i] = None
    print(f"held {alive}", flush=True)
    time.sleep(0.2)
"#;

/// The intruder's last count of connections it holds, from its log.
fn intruder_holds(stack: &Stack, ns: &TestNamespace) -> Option<usize> {
    stack
        .container_log(&ns.name, "intruder", "intruder")
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("held ")?.trim().parse().ok())
}

/// The sidecar container's (restartCount, ready).
fn sidecar_status(ns: &TestNamespace) -> (i64, bool) {
    let pod: Value = serde_json::from_str(&ns.kubectl(&["get", "pod", "beats", "-o", "json"]))
        .expect("pod JSON");
    let status = pod["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == "heartbeat")
        .cloned()
        .unwrap_or(Value::Null);
    (
        status["restartCount"].as_i64().unwrap_or(-1),
        status["ready"].as_bool().unwrap_or(false),
    )
}

/// Rule: the kubelet's probes of a sidecar always answer within their
/// timeout while another pod holds as many connections to it as it likes:
/// with an intruder pod holding (and reopening) 300 keep-alive connections
/// to the sidecar's pod IP, the sidecar's liveness probe never fails (its
/// restartCount stays 0) and neither does its readiness probe (it stays
/// ready; failureThreshold 1, every 2 s), over 10 probe periods. The
/// intruder does get its share (32 connections, not more), so under one
/// cap for all (the old 128) the probes would be refused.
#[test]
fn another_pod_holding_connections_cannot_starve_the_sidecars_probes() {
    let stack = Stack::get();
    let ns = TestNamespace::create(stack, "starve");
    // The share of one source, as the sidecar's limits set it.
    let per_source = 32;
    // The sidecar as the webhook injects it, run as a plain pod: the
    // probes are what is tested, not the injection.
    ns.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: beats, annotations: {{heartbeat.dev/inject: "false"}}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: heartbeat
    image: heartbeat-sidecar
    args: [--topic, starve, --program-id, starve, --interval-secs, "2"]
    env:
    - {{name: POD_IP, valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}}}
    - {{name: HEARTBEAT_HTTP_ADDR, value: "$(POD_IP):9190"}}
    - {{name: KAFKA_BOOTSTRAP_SERVERS, value: "{kafka}"}}
    livenessProbe: {{httpGet: {{path: /livez, port: 9190}}, initialDelaySeconds: 3, periodSeconds: 2, timeoutSeconds: 1, failureThreshold: 1}}
    readinessProbe: {{httpGet: {{path: /livez, port: 9190}}, initialDelaySeconds: 3, periodSeconds: 2, timeoutSeconds: 1, failureThreshold: 1}}
"#,
        kafka = stack.kafka_bootstrap
    ));
    ns.wait_pod_phase("beats", "Running", T);
    let ip = ns.wait_jsonpath("pod beats", "{.status.podIP}", T, |s| !s.is_empty());
    let start = std::time::Instant::now();
    while sidecar_status(&ns) != (0, true) {
        assert!(
            start.elapsed() < T,
            "the sidecar never became ready: {:?}",
            sidecar_status(&ns)
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }

    ns.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: intruder, annotations: {{heartbeat.dev/inject: "false"}}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: intruder
    image: demo/worker
    command: [/usr/bin/python3, -c, {script}]
    env:
    - {{name: TARGET, value: "{ip}"}}
    - {{name: CONNS, value: "300"}}
"#,
        script = serde_json::to_string(INTRUDER).expect("script as a YAML string")
    ));
    ns.wait_pod_phase("intruder", "Running", T);
    // It gets its connections: its full share, and no more.
    let start = std::time::Instant::now();
    while intruder_holds(stack, &ns) < Some(per_source) {
        assert!(
            start.elapsed() < T,
            "the intruder never held {per_source} connections: {:?}\n{}",
            intruder_holds(stack, &ns),
            stack.container_log(&ns.name, "intruder", "intruder")
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }

    // Ten probe periods with the intruder holding on.
    let mut most = 0;
    let watch = std::time::Instant::now();
    while watch.elapsed() < std::time::Duration::from_secs(20) {
        let holds = intruder_holds(stack, &ns).unwrap_or(0);
        most = most.max(holds);
        let (restarts, ready) = sidecar_status(&ns);
        assert!(
            restarts == 0 && ready,
            "a probe failed while the intruder held {holds} connections: \
             restartCount {restarts}, ready {ready}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert!(
        most <= per_source,
        "one pod held {most} connections (share {per_source})"
    );
    assert_eq!(
        intruder_holds(stack, &ns),
        Some(per_source),
        "the intruder let go of its connections during the watch"
    );
}
