//! Pods on the process node get what a kubelet with the CNI bridge plugin
//! gives them: a network namespace with its own loopback and a routable pod
//! IP, volumes at their real paths in a mount namespace per container, a
//! service-account token for the API server, and Services whose
//! EndpointSlices list them, so the API server calls a webhook in a pod.

use std::net::Ipv4Addr;
use std::time::Duration;

use base64::Engine;
use heartbeat_e2e::kafka::read_until;
use heartbeat_e2e::stack::{run, run_ok};
use heartbeat_e2e::{Stack, TestNamespace, TestTopic};

const T: Duration = Duration::from_secs(90);

/// The stack's pod network, `(first address, prefix length)`.
fn pod_cidr(stack: &Stack) -> (Ipv4Addr, u32) {
    let cidr = stack.env.pod_cidr.clone().expect("HB_POD_CIDR");
    let (addr, len) = cidr.split_once('/').expect("a/len");
    (addr.parse().expect("ip"), len.parse().expect("len"))
}

fn in_pod_network(stack: &Stack, ip: &str) -> bool {
    let (net, len) = pod_cidr(stack);
    let mask = u32::MAX << (32 - len);
    ip.parse::<Ipv4Addr>()
        .is_ok_and(|ip| u32::from(ip) & mask == u32::from(net) & mask)
}

/// A pod whose `srv` container answers its pod name on port 9190 (all
/// addresses) and whose `cli` container asks 127.0.0.1:9190 every second.
fn loopback_pod(name: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: srv
    image: demo/worker
    env: [{{name: POD_NAME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}]
    command: [python3, -c, "import http.server as h, os\nclass H(h.BaseHTTPRequestHandler):\n  def do_GET(s):\n    s.send_response(200); s.end_headers(); s.wfile.write(os.environ['POD_NAME'].encode())\n  def log_message(s, *a): pass\nh.HTTPServer(('0.0.0.0', 9190), H).serve_forever()"]
  - name: cli
    image: demo/worker
    command: [sh, -c, "while :; do python3 -c \"import urllib.request as u; print('got', u.urlopen('http://127.0.0.1:9190', timeout=2).read().decode(), flush=True)\" 2>/dev/null; sleep 1; done"]
"#
    )
}

#[test]
fn two_pods_listen_on_the_same_loopback_port_and_each_reaches_its_own() {
    let stack = Stack::get();
    let ns = TestNamespace::create(stack, "net-loopback");
    ns.apply(&format!(
        "{}---{}",
        loopback_pod("one"),
        loopback_pod("two")
    ));
    for pod in ["one", "two"] {
        ns.wait_pod_phase(pod, "Running", T);
        ns.wait_log(pod, "cli", T, |log| log.contains(&format!("got {pod}\n")));
    }
    for pod in ["one", "two"] {
        let other = if pod == "one" { "two" } else { "one" };
        let log = ns.container_log(pod, "cli");
        assert!(
            !log.contains(&format!("got {other}")),
            "{pod} reached {other}:\n{log}"
        );
    }
    // Routable pod IPs in the pod network, reached from the host through
    // the stack namespace.
    let ips = ns.kubectl(&["get", "pods", "-o", "jsonpath={.items[*].status.podIP}"]);
    let ips: Vec<&str> = ips.split_whitespace().collect();
    assert_eq!(ips.len(), 2, "{ips:?}");
    assert_ne!(ips[0], ips[1]);
    for ip in &ips {
        assert!(
            in_pod_network(stack, ip),
            "{ip} is outside {:?}",
            stack.env.pod_cidr
        );
        let body = run_ok(std::process::Command::new("curl").args([
            "-sf",
            "--noproxy",
            "*",
            "--max-time",
            "5",
            &format!("http://{ip}:9190/"),
        ]));
        assert!(body == "one" || body == "two", "{ip}: {body}");
    }
}

#[test]
fn a_pod_reaches_the_api_server_with_its_token_and_rbac_limits_it() {
    let stack = Stack::get();
    let ns = TestNamespace::create(stack, "net-token");
    ns.apply(
        r#"
apiVersion: v1
kind: ServiceAccount
metadata: {name: reader}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: read-pods}
rules: [{apiGroups: [""], resources: [pods], verbs: [get]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: reader-reads-pods}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: read-pods}
subjects: [{kind: ServiceAccount, name: reader}]
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  serviceAccountName: reader
  terminationGracePeriodSeconds: 2
  containers:
  - name: api
    image: demo/kubeapi
    env: [{name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}]
"#,
    );
    let log = ns.wait_log("client", "api", T, |log| log.contains("list secrets:"));
    assert!(log.contains("get own pod: 200 client"), "{log}");
    assert!(log.contains("list secrets: 403"), "{log}");
}

#[test]
fn secret_and_configmap_volumes_sit_at_their_paths_and_an_empty_dir_is_shared_only_in_its_pod() {
    let stack = Stack::get();
    let ns = TestNamespace::create(stack, "net-volumes");
    ns.apply(
        r#"
apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData: {password: s3cret}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {mode: fast}
---
apiVersion: v1
kind: Pod
metadata: {name: writer}
spec:
  terminationGracePeriodSeconds: 2
  volumes:
  - {name: creds, secret: {secretName: creds}}
  - {name: settings, configMap: {name: settings}}
  - {name: shared, emptyDir: {}}
  containers:
  - name: write
    image: demo/worker
    volumeMounts:
    - {name: creds, mountPath: /run/hb-e2e/creds}
    - {name: settings, mountPath: /run/hb-e2e/settings}
    - {name: shared, mountPath: /run/hb-e2e/shared}
    command: [sh, -c, "echo from-writer > /run/hb-e2e/shared/note; echo password=$(cat /run/hb-e2e/creds/password) mode=$(cat /run/hb-e2e/settings/mode); touch /run/hb-e2e/creds/x 2>/dev/null || echo secret-read-only; sleep 3600"]
  - name: read
    image: demo/worker
    volumeMounts: [{name: shared, mountPath: /run/hb-e2e/shared}]
    command: [sh, -c, "while :; do cat /run/hb-e2e/shared/note 2>/dev/null && break; sleep 0.5; done; echo creds-here=$(ls -A /run/hb-e2e/creds 2>/dev/null | wc -l); sleep 3600"]
"#,
    );
    let write = ns.wait_log("writer", "write", T, |l| l.contains("secret-read-only"));
    assert!(write.contains("password=s3cret mode=fast"), "{write}");
    // Each container has its own mounts: the Secret is not mounted here.
    let read = ns.wait_log("writer", "read", T, |l| l.contains("creds-here="));
    assert!(read.contains("from-writer"), "{read}");
    assert!(read.contains("creds-here=0"), "{read}");
    // Only now, with the note written, a second pod looks at its own emptyDir.
    ns.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: other}
spec:
  terminationGracePeriodSeconds: 2
  volumes: [{name: shared, emptyDir: {}}]
  containers:
  - name: look
    image: demo/worker
    volumeMounts: [{name: shared, mountPath: /run/hb-e2e/shared}]
    command: [sh, -c, "ls -A /run/hb-e2e/shared | wc -l | sed 's/^/entries=/'; sleep 3600"]
"#,
    );
    let other = ns.wait_log("other", "look", T, |l| l.contains("entries="));
    assert!(other.contains("entries=0"), "{other}");
    // The host itself has none of it, not even the mount points.
    assert!(!std::path::Path::new("/run/hb-e2e").exists());
}

/// A CA and a serving certificate for `dns` (openssl, in `dir`).
fn webhook_certs(dir: &std::path::Path, dns: &str) {
    let sh = format!(
        "set -e; cd '{}'; \
         openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=e2e-ca -keyout ca.key -out ca.crt; \
         openssl req -newkey rsa:2048 -nodes -subj /CN={dns} -keyout tls.key -out tls.csr; \
         printf 'subjectAltName=DNS:{dns}\\nextendedKeyUsage=serverAuth\\n' > ext; \
         openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 -extfile ext -out tls.crt",
        dir.display()
    );
    run_ok(std::process::Command::new("sh").args(["-c", &sh]));
}

/// Deletes a cluster-scoped webhook configuration when the test ends.
struct WebhookConfig<'a>(&'a Stack, String);

impl Drop for WebhookConfig<'_> {
    fn drop(&mut self) {
        let _ = run(self.0.kubectl().args([
            "delete",
            "mutatingwebhookconfiguration",
            &self.1,
            "--wait=false",
        ]));
    }
}

#[test]
fn a_service_lists_its_ready_pods_and_the_api_server_calls_its_webhook() {
    let stack = Stack::get();
    let ns = TestNamespace::create(stack, "net-webhook");
    let dir = tempfile::tempdir().expect("tempdir");
    webhook_certs(dir.path(), &format!("whook.{}.svc", ns.name));
    let file = |f: &str| dir.path().join(f).display().to_string();
    ns.kubectl(&[
        "create",
        "secret",
        "tls",
        "whook-tls",
        &format!("--cert={}", file("tls.crt")),
        &format!("--key={}", file("tls.key")),
    ]);
    ns.apply(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: whook}
spec:
  replicas: 2
  selector: {matchLabels: {app: whook}}
  template:
    metadata: {labels: {app: whook}}
    spec:
      terminationGracePeriodSeconds: 2
      volumes: [{name: tls, secret: {secretName: whook-tls}}]
      containers:
      - name: webhook
        image: demo/webhook
        env:
        - {name: TLS_DIR, value: /etc/webhook/tls}
        - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
        volumeMounts: [{name: tls, mountPath: /etc/webhook/tls}]
        ports: [{containerPort: 8443}]
        readinessProbe: {tcpSocket: {port: 8443}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: whook}
spec:
  selector: {app: whook}
  ports: [{port: 443, targetPort: 8443}]
"#,
    );
    ns.wait_jsonpath("deployment/whook", "{.status.readyReplicas}", T, |r| {
        r == "2"
    });
    let pod_ips = ns.kubectl(&[
        "get",
        "pods",
        "-l",
        "app=whook",
        "-o",
        "jsonpath={.items[*].status.podIP}",
    ]);
    let mut pod_ips: Vec<&str> = pod_ips.split_whitespace().collect();
    pod_ips.sort_unstable();
    let slice_ips = ns.wait_jsonpath(
        "endpointslices -l kubernetes.io/service-name=whook",
        "{.items[*].endpoints[?(@.conditions.ready==true)].addresses[*]}",
        T,
        |s| s.split_whitespace().count() == 2,
    );
    let mut slice_ips: Vec<&str> = slice_ips.split_whitespace().collect();
    slice_ips.sort_unstable();
    assert_eq!(slice_ips, pod_ips, "the EndpointSlice lists the ready pods");

    let ca = std::fs::read(dir.path().join("ca.crt")).expect("ca.crt");
    let config = format!("e2e-{}", ns.name);
    let _guard = WebhookConfig(stack, config.clone());
    let webhook = format!(
        r#"
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata: {{name: {config}}}
webhooks:
- name: whook.e2e.heartbeat.dev
  admissionReviewVersions: [v1]
  sideEffects: None
  failurePolicy: Fail
  timeoutSeconds: 5
  namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: {ns}}}}}
  rules: [{{apiGroups: [""], apiVersions: [v1], operations: [CREATE], resources: [configmaps]}}]
  clientConfig:
    service: {{namespace: {ns}, name: whook, path: /mutate, port: 443}}
    caBundle: {ca}
"#,
        ns = ns.name,
        ca = base64::engine::general_purpose::STANDARD.encode(&ca),
    );
    ns.apply(&webhook);
    // The configuration takes a moment to reach the API server's admission chain.
    let deadline = std::time::Instant::now() + T;
    let seen_by = loop {
        let _ = run(stack.kubectl().args([
            "-n",
            &ns.name,
            "delete",
            "configmap",
            "probe",
            "--ignore-not-found",
        ]));
        let (created, _, err) =
            run(stack
                .kubectl()
                .args(["-n", &ns.name, "create", "configmap", "probe"]));
        if created {
            let seen = ns.kubectl(&[
                "get",
                "configmap",
                "probe",
                "-o",
                "jsonpath={.metadata.annotations.webhook\\.e2e/seen-by}",
            ]);
            if !seen.is_empty() {
                break seen;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the webhook was never called: {err}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let pods = ns.kubectl(&[
        "get",
        "pods",
        "-l",
        "app=whook",
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ]);
    assert!(
        pods.split_whitespace().any(|p| p == seen_by),
        "{seen_by} is not one of {pods}"
    );
}

#[tokio::test]
async fn the_sidecars_beats_arrive_on_kafka_from_inside_a_pod() {
    let stack = Stack::get();
    let ns = TestNamespace::create(stack, "net-beats");
    let topic = TestTopic::create(&stack.kafka_bootstrap, "net-beats").await;
    ns.create_broker_secret(&stack.kafka_bootstrap);
    ns.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: beater}}
spec:
  terminationGracePeriodSeconds: 3
  initContainers:
  - name: heartbeat
    image: heartbeat-sidecar:dev
    restartPolicy: Always
    envFrom: [{{prefix: KAFKA_, secretRef: {{name: kafka}}}}]
    env:
    - {{name: POD_NAME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}
    - {{name: POD_IP, valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}}}
    - {{name: HEARTBEAT_TOPIC, value: {topic}}}
    - {{name: HEARTBEAT_PROGRAM_ID, value: "net.$(POD_NAME)"}}
    - {{name: HEARTBEAT_INTERVAL_SECS, value: "1"}}
    - {{name: HEARTBEAT_HTTP_ADDR, value: "$(POD_IP):9190"}}
  containers:
  - {{name: app, image: demo/worker}}
"#,
        topic = topic.name
    ));
    let got = read_until(&stack.kafka_bootstrap, &topic.name, T, |r| r.len() >= 2).await;
    let key = String::from_utf8_lossy(got[0].key.as_deref().unwrap_or_default()).into_owned();
    assert_eq!(key, "net.beater_heartbeat");
    // The sidecar serves on its pod IP, which the host reaches.
    let ip = ns.kubectl(&["get", "pod", "beater", "-o", "jsonpath={.status.podIP}"]);
    let livez = run_ok(std::process::Command::new("curl").args([
        "-sf",
        "--max-time",
        "5",
        &format!("http://{ip}:9190/livez"),
    ]));
    assert!(!livez.is_empty());
}

/// `ip -n <stack namespace> args...`, its output.
fn ip_in_stack(stack: &Stack, args: &[&str]) -> String {
    let netns = stack.env.netns.clone().expect("HB_STACK_NETNS");
    run_ok(
        std::process::Command::new("ip")
            .args(["-n", &netns])
            .args(args),
    )
}

/// The MAC the stack's namespace has for pod address `ip` (empty: none).
fn neighbour_mac(stack: &Stack, ip: &str) -> String {
    let out = ip_in_stack(
        stack,
        &[
            "neigh",
            "show",
            ip,
            "dev",
            heartbeat_testbed::network::BRIDGE,
        ],
    );
    let mut words = out.split_whitespace();
    words
        .by_ref()
        .find(|w| *w == "lladdr")
        .and_then(|_| words.next())
        .unwrap_or_default()
        .to_string()
}

/// The pod bridge's MAC address in the stack's namespace.
fn bridge_mac(stack: &Stack) -> String {
    let out = ip_in_stack(
        stack,
        &["-br", "link", "show", heartbeat_testbed::network::BRIDGE],
    );
    out.split_whitespace()
        .nth(2)
        .unwrap_or_default()
        .to_string()
}

/// A pod `name` running demo/http, with `more` added to its container's
/// fields (`, readinessProbe: {...}`).
fn http_pod(name: &str, more: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\n\
         spec: {{terminationGracePeriodSeconds: 1, containers: [{{name: app, image: demo/http{more}}}]}}\n"
    )
}

/// Rule (issue 25, the probe timeouts' root cause): the pods' gateway keeps
/// one MAC address while pods come and go. A bridge left to itself takes
/// the lowest MAC of its ports, so when that pod went, every pod that had
/// cached the old one lost its replies to the node (probes timed out for
/// tens of seconds, kept stale by TCP's own confirmations).
#[test]
fn the_pod_gateways_mac_stays_put_while_pods_come_and_go() {
    let stack = Stack::get();
    let ns = TestNamespace::create(stack, "net-mac");
    let pod = |name: &str| http_pod(name, "");
    let before = bridge_mac(stack);
    for name in ["a", "b", "c"] {
        ns.apply(&pod(name));
    }
    for name in ["a", "b", "c"] {
        ns.wait_pod_phase(name, "Running", T);
    }
    let with_pods = bridge_mac(stack);
    ns.kubectl(&["delete", "pod", "a", "b", "c", "--wait=true"]);
    ns.apply(&pod("d"));
    ns.wait_pod_phase("d", "Running", T);
    let after = bridge_mac(stack);
    assert!(!before.is_empty(), "no MAC read for the bridge");
    assert_eq!(
        (with_pods.as_str(), after.as_str()),
        (before.as_str(), before.as_str()),
        "the bridge's MAC changed as pods came and went"
    );
}

/// Rule (the probe timeouts on a busy node): a pod that takes a freed
/// address is reached from the node at once. Pod addresses are reused
/// lowest first; with a new random MAC per pod, the node's neighbour entry
/// for the address (reachable for 15 to 45 s after the last pod answered)
/// sent the new pod's first probes to the gone pod's link, and they timed
/// out for seconds. The MAC now follows the address, as the CNI bridge
/// plugin's does.
#[test]
fn a_pod_taking_a_freed_address_is_reached_from_the_node_at_once() {
    let stack = Stack::get();
    let ns = TestNamespace::create(stack, "net-reuse");
    let pod = |name: &str| {
        http_pod(
            name,
            ", readinessProbe: {httpGet: {port: 8080, path: /healthz}, periodSeconds: 1}",
        )
    };
    let ip_of = |name: &str| ns.kubectl(&["get", "pod", name, "-o", "jsonpath={.status.podIP}"]);
    // Other tests make pods beside this one and may take the freed slot
    // first: try until the second pod lands on the first one's address.
    for round in 0..5 {
        let (first, second) = (format!("first{round}"), format!("second{round}"));
        ns.apply(&pod(&first));
        // Ready: the node has just talked to it, so its neighbour entry is fresh.
        ns.wait_jsonpath(
            &format!("pod/{first}"),
            "{.status.containerStatuses[0].ready}",
            T,
            |s| s == "true",
        );
        let freed = ip_of(&first);
        let first_mac = neighbour_mac(stack, &freed);
        ns.kubectl(&["delete", "pod", &first, "--wait=true"]);
        ns.apply(&pod(&second));
        ns.wait_jsonpath(
            &format!("pod/{second}"),
            "{.status.containerStatuses[0].ready}",
            T,
            |s| s == "true",
        );
        if ip_of(&second) != freed {
            ns.kubectl(&["delete", "pod", &second, "--wait=true"]);
            continue;
        }
        let timeouts = ns.kubectl(&[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.name={second},reason=Unhealthy"),
            "-o",
            "jsonpath={range .items[*]}{.message}{\"\\n\"}{end}",
        ]);
        // Refused while the app starts is fine; a timeout is the stale entry.
        assert!(
            !timeouts.contains("timed out"),
            "probes of the pod on the freed address {freed} timed out:\n{timeouts}"
        );
        // The mechanism itself: the address kept its MAC from pod to pod.
        assert!(!first_mac.is_empty(), "no neighbour entry for {freed}");
        assert_eq!(
            neighbour_mac(stack, &freed),
            first_mac,
            "the freed address {freed} came back with another MAC"
        );
        return;
    }
    panic!("five times another pod took the freed address first");
}
