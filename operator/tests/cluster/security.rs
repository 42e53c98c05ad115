//! Security properties on the real stack: what the operator's ServiceAccount
//! may do is exactly the documented minimum, and what the webhook injects
//! passes the Kubernetes "restricted" Pod Security Standard.

use std::collections::BTreeSet;

use heartbeat_crds::conditions::{READY, TRUE, reason};
use heartbeat_crds::monitor::{AppHealth, AppHealthMode, FileHealth, PingHealth};
use heartbeat_e2e::kube_env::install_crds;
use heartbeat_e2e::monitor::{MonitorBuilder, condition_is, condition_message, condition_reason};
use heartbeat_e2e::operator::OperatorProcess;
use heartbeat_e2e::stack::run;
use heartbeat_e2e::status::eventually;
use heartbeat_e2e::{Stack, TestNamespace};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_heartbeat-operator");
const T: std::time::Duration = std::time::Duration::from_secs(120);

/// `kubectl auth can-i --list` rows (resource, resource names, verbs) of
/// `sa` in `namespace`, whitespace normalised, non-resource URLs left out.
fn can_i(stack: &Stack, sa: &str, namespace: &str) -> BTreeSet<String> {
    let out = heartbeat_e2e::stack::run_ok(stack.kubectl().args([
        "auth",
        "can-i",
        "--list",
        "--as",
        sa,
        "-n",
        namespace,
        "--no-headers",
    ]));
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| {
            // Columns: resources, non-resource URLs, resource names, verbs.
            let cols: Vec<&str> = l.split_whitespace().collect();
            let resource = cols.first()?;
            if resource.starts_with('[') {
                return None;
            }
            // Verbs sorted: kubectl merges the rules of several roles in
            // no fixed order.
            // Columns: resource, non-resource URLs, resource names, verbs.
            let verbs_at = 3;
            if cols.len() <= verbs_at {
                return None;
            }
            let mut verbs: Vec<&str> = cols[verbs_at..]
                .iter()
                .map(|v| v.trim_matches(|c| c == '[' || c == ']'))
                .filter(|v| !v.is_empty())
                .collect();
            verbs.sort_unstable();
            Some(format!(
                "{} [{}]",
                cols[..verbs_at].join(" "),
                verbs.join(" ")
            ))
        })
        .collect()
}

/// The documented minimum (operator/deploy/rbac.yaml, each rule there
/// says why), as `kubectl auth can-i --list` prints it.
fn minimum(name: &str, own_namespace: bool) -> BTreeSet<String> {
    // Secrets by name only (never list or watch), and written nowhere but
    // in its own namespace, where the Role's `create` folds into the `get`.
    let secrets = if own_namespace {
        "secrets [] [] [create get]"
    } else {
        "secrets [] [] [get]"
    };
    let mut rows = vec![
        "tokenreviews.authentication.k8s.io [] [] [create]".to_string(),
        "heartbeatmonitors.heartbeat.dev [] [] [get list watch]".to_string(),
        "heartbeatmonitors.heartbeat.dev/status [] [] [get patch]".to_string(),
        "pods [] [] [list watch]".to_string(),
        secrets.to_string(),
        "events.events.k8s.io [] [] [create patch]".to_string(),
        format!("mutatingwebhookconfigurations.admissionregistration.k8s.io [] [{name}] [patch]"),
    ];
    if own_namespace {
        rows.extend([
            format!("secrets [] [{name}-webhook-tls] [get update]"),
            format!("secrets [] [{name}-signing] [get update]"),
            "leases.coordination.k8s.io [] [] [create]".to_string(),
            format!("leases.coordination.k8s.io [] [{name}] [get patch]"),
        ]);
    }
    rows.into_iter().collect()
}

/// Rule: the operator's ServiceAccount can do exactly the documented
/// minimum: cluster-wide reads of monitors and pods, Secrets by name only
/// (no list or watch: those return every value) and never written outside
/// its own namespace, its status, Events, TokenReviews (the pod key
/// endpoint) and a patch of its one webhook configuration (no create: no
/// new webhook can be pointed at every pod); in its own namespace, its
/// certificate and signing master Secrets and its Lease; nothing else (no
/// pod writes, no other Leases).
#[test]
fn the_operators_service_account_can_do_exactly_the_documented_minimum() {
    let stack = Stack::get();
    install_crds(stack);
    let op = OperatorProcess::start(stack, BIN.as_ref());
    let sa = format!("system:serviceaccount:{}:{}", op.namespace(), op.name);
    // What any ServiceAccount may do (self reviews, public info) is not the
    // operator's doing: a ServiceAccount without bindings shows it.
    let anyone = format!("system:serviceaccount:{}:default", op.namespace());
    let elsewhere = TestNamespace::create(stack, "rbac-other");
    for (namespace, own) in [(op.namespace(), true), (elsewhere.name.as_str(), false)] {
        let baseline = can_i(stack, &anyone, namespace);
        let got: BTreeSet<String> = can_i(stack, &sa, namespace)
            .difference(&baseline)
            .cloned()
            .collect();
        let want = minimum(&op.name, own);
        let extra: Vec<_> = got.difference(&want).collect();
        let missing: Vec<_> = want.difference(&got).collect();
        assert!(
            extra.is_empty() && missing.is_empty(),
            "in {namespace}: more than the minimum: {extra:#?}\nless than it: {missing:#?}"
        );
    }
}

/// `kubectl auth can-i VERB RESOURCE -n NAMESPACE --as SA`.
fn may(stack: &Stack, sa: &str, verb: &str, resource: &str, namespace: &str) -> bool {
    run(stack
        .kubectl()
        .args(["auth", "can-i", verb, resource, "--as", sa, "-n", namespace]))
    .0
}

/// Rule (the chart's rbac.namespaced mode): the operator reads Secrets only
/// in namespaces granted to it, never lists or watches them anywhere; a
/// monitor in a namespace not granted is Ready=False `SecretForbidden`
/// with the exact command that grants it, and no Secret value anywhere;
/// once that command is run, the monitor is Ready, while an unrelated
/// namespace's Secret stays unreadable.
#[tokio::test]
async fn in_the_namespaced_mode_secrets_are_read_only_where_granted_and_ready_says_how() {
    let stack = Stack::get();
    install_crds(stack);
    let options = heartbeat_e2e::operator::OperatorOptions {
        namespaced_secrets: true,
        ..Default::default()
    };
    let op = OperatorProcess::start_with(stack, BIN.as_ref(), options);
    let sa = format!("system:serviceaccount:{}:{}", op.namespace(), op.name);
    let ns = TestNamespace::create(stack, "rbac-granted");
    let unrelated = TestNamespace::create(stack, "rbac-unrelated");
    unrelated.kubectl(&[
        "create",
        "secret",
        "generic",
        "private",
        "--from-literal=password=MARKER-unrelated-7731",
    ]);
    for n in [&ns.name, &unrelated.name, op.namespace()] {
        for verb in ["list", "watch"] {
            assert!(
                !may(stack, &sa, verb, "secrets", n),
                "{verb} secrets in {n}"
            );
        }
    }
    assert!(
        !may(stack, &sa, "get", "secrets", &ns.name),
        "granted before the command"
    );
    op.enable_injection(&ns);
    ns.create_broker_secret(&stack.kafka_bootstrap);
    ns.kubectl(&[
        "patch",
        "secret",
        "kafka",
        "--type=merge",
        "-p",
        r#"{"stringData":{"sasl.password":"MARKER-broker-4410"}}"#,
    ]);
    let topic = heartbeat_e2e::TestTopic::create(&stack.kafka_bootstrap, "granted").await;
    let monitor = MonitorBuilder::new("app", &topic.name, (2, 15))
        .labelled(&op.monitor_label())
        .selecting_app("granted");
    ns.apply_monitor(&monitor.build());
    let message = eventually("Ready=False SecretForbidden", T, || {
        let s = ns.monitor_status("app");
        if condition_reason(&s, READY) == Some(reason::SECRET_FORBIDDEN) {
            Ok(condition_message(&s, READY).to_string())
        } else {
            Err(format!("{s:#?}"))
        }
    });
    assert!(!message.contains("MARKER"), "{message}");
    let command = message
        .split_once("grant it with: ")
        .map(|(_, c)| c.trim().to_string())
        .unwrap_or_else(|| panic!("no command in {message:?}"));
    let args: Vec<&str> = command.split_whitespace().collect();
    assert_eq!(args.first(), Some(&"kubectl"), "{command}");
    assert!(command.contains(&format!("-n {}", ns.name)), "{command}");
    heartbeat_e2e::stack::run_ok(stack.kubectl().args(&args[1..]));
    assert!(
        may(stack, &sa, "get", "secrets", &ns.name),
        "{command} granted nothing"
    );
    assert!(!may(stack, &sa, "get", "secrets", &unrelated.name));
    eventually("Ready=True once granted", T, || {
        let s = ns.monitor_status("app");
        condition_is(&s, READY, TRUE)
            .then_some(())
            .ok_or(format!("{s:#?}"))
    });
    let status = ns.monitor_status_json("app").to_string();
    assert!(!status.contains("MARKER"), "{status}");
    assert!(!op.log().contains("MARKER"), "{}", op.log());
}

/// Rule: no value of a broker Secret (but the broker address) reaches a
/// monitor's status, an Event, the operator's log or its metrics. A marker
/// is planted in every other key, including one librdkafka refuses (its
/// error names the value: it is redacted) and settings the consumer must
/// not take from a tenant (a queue size, `debug`, a file path: ignored, so
/// the monitor reads once the refused value is fixed).
#[tokio::test]
async fn no_secret_value_reaches_status_events_logs_or_metrics() {
    let stack = Stack::get();
    install_crds(stack);
    let op = OperatorProcess::start(stack, BIN.as_ref());
    let ns = TestNamespace::create(stack, "marker");
    let topic = heartbeat_e2e::TestTopic::create(&stack.kafka_bootstrap, "marker").await;
    let planted = [
        ("security.protocol", "MARKER-protocol-1190"),
        ("sasl.username", "MARKER-user-2281"),
        ("sasl.password", "MARKER-password-3372"),
        ("ssl.key.password", "MARKER-keypw-4463"),
        ("queued.max.messages.kbytes", "MARKER-kbytes-5554"),
        ("debug", "MARKER-debug-6645"),
        ("ssl.ca.location", "/MARKER-path-7736"),
        ("an.unknown.key", "MARKER-unknown-8827"),
    ];
    let mut args = vec![
        "create".to_string(),
        "secret".into(),
        "generic".into(),
        "kafka".into(),
        format!("--from-literal=bootstrap.servers={}", stack.kafka_bootstrap),
    ];
    args.extend(
        planted
            .iter()
            .map(|(k, v)| format!("--from-literal={k}={v}")),
    );
    ns.kubectl(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let monitor = MonitorBuilder::new("app", &topic.name, (2, 5))
        .labelled(&op.monitor_label())
        .selecting_app("marker");
    ns.apply_monitor(&monitor.build());
    let everything = || {
        let status = ns.monitor_status_json("app").to_string();
        let events = ns.kubectl(&["get", "events", "-o", "json"]);
        format!("{status}\n{events}\n{}\n{}", op.log(), op.metrics_text())
    };
    let refused = eventually("Ready=False for the refused security.protocol", T, || {
        let s = ns.monitor_status("app");
        (condition_reason(&s, READY) == Some(reason::INVALID_BROKER_SETTINGS))
            .then(|| condition_message(&s, READY).to_string())
            .ok_or(format!("{s:#?}"))
    });
    assert!(refused.contains("security.protocol"), "{refused}");
    let seen = everything();
    for (key, value) in planted {
        assert!(!seen.contains(value), "the value of {key} leaked:\n{seen}");
    }
    // Fixed, the monitor reads: the other planted settings were never passed on.
    ns.kubectl(&[
        "patch",
        "secret",
        "kafka",
        "--type=merge",
        "-p",
        r#"{"stringData":{"security.protocol":"PLAINTEXT"}}"#,
    ]);
    eventually("Ready=True once the protocol is fixed", T, || {
        let s = ns.monitor_status("app");
        condition_is(&s, READY, TRUE)
            .then_some(())
            .ok_or(format!("{s:#?}"))
    });
    let seen = everything();
    for (key, value) in planted {
        assert!(!seen.contains(value), "the value of {key} leaked:\n{seen}");
    }
}

/// Rule: with `--allowed-brokers`, a monitor whose Secret names another
/// broker is `Ready=False` (`BrokerNotAllowed`) and never connected to, so
/// its status says nothing of what answers there (no port-scan oracle); a
/// monitor on an allowed broker reads as usual.
#[tokio::test]
async fn a_broker_outside_the_allowlist_is_never_connected_to() {
    let stack = Stack::get();
    install_crds(stack);
    let options = heartbeat_e2e::operator::OperatorOptions {
        extra_args: vec![format!("--allowed-brokers={}", stack.kafka_bootstrap)],
        ..Default::default()
    };
    let op = OperatorProcess::start_with(stack, BIN.as_ref(), options);
    let topic = heartbeat_e2e::TestTopic::create(&stack.kafka_bootstrap, "allowlist").await;
    let host = stack
        .kafka_bootstrap
        .rsplit_once(':')
        .map(|(h, _)| h.to_string())
        .expect("host:port");
    let mut namespaces = Vec::new();
    for (name, bootstrap) in [
        ("allowed", stack.kafka_bootstrap.clone()),
        ("scan", format!("{host}:19")),
    ] {
        let ns = TestNamespace::create(stack, name);
        ns.create_broker_secret(&bootstrap);
        let monitor = MonitorBuilder::new("app", &topic.name, (2, 5))
            .labelled(&op.monitor_label())
            .selecting_app("x");
        ns.apply_monitor(&monitor.build());
        namespaces.push(ns);
    }
    let [allowed, scan] = [&namespaces[0], &namespaces[1]];
    eventually("the allowed broker is read", T, || {
        let s = allowed.monitor_status("app");
        condition_is(&s, READY, TRUE)
            .then_some(())
            .ok_or(format!("{s:#?}"))
    });
    let message = eventually("Ready=False BrokerNotAllowed", T, || {
        let s = scan.monitor_status("app");
        (condition_reason(&s, READY) == Some(reason::BROKER_NOT_ALLOWED))
            .then(|| condition_message(&s, READY).to_string())
            .ok_or(format!("{s:#?}"))
    });
    assert!(message.contains("did not connect"), "{message}");
    // librdkafka names a broker it tried as `host:port/bootstrap`.
    let tried = format!("{host}:19/");
    assert!(!op.log().contains(&tried), "{}", op.log());
}

/// An operator, and a namespace it injects with the broker Secret and a
/// monitor `app` on `topic`, labelled for it, over the pods labelled
/// `app: <app>`, as `spec` changes it.
fn monitored(
    stack: &Stack,
    prefix: &str,
    (app, topic, interval_secs): (&str, &str, u64),
    spec: impl FnOnce(MonitorBuilder) -> MonitorBuilder,
) -> (OperatorProcess, TestNamespace) {
    let op = OperatorProcess::start(stack, BIN.as_ref());
    let ns = TestNamespace::create(stack, prefix);
    op.enable_injection(&ns);
    ns.create_broker_secret(&stack.kafka_bootstrap);
    let monitor = MonitorBuilder::new("app", topic, (interval_secs, 5))
        .labelled(&op.monitor_label())
        .selecting_app(app);
    ns.apply_monitor(&spec(monitor).build());
    // The webhook decides from its cache: wait until it has seen the
    // monitor (the positive control of the tests that then expect no
    // injection).
    ns.wait_injects_app(app, T);
    (op, ns)
}

/// Rule: the injected sidecar passes the "restricted" Pod Security
/// Standard: in a namespace that enforces it, a compliant pod is admitted
/// with the sidecar injected (admission checks the mutated pod), while a
/// non-compliant one is refused (so enforcement is really on).
#[test]
fn the_injected_sidecar_passes_the_restricted_pod_security_standard() {
    let stack = Stack::get();
    install_crds(stack);
    let (_op, ns) = monitored(stack, "pss", ("restricted", "pss", 5), |m| {
        m.app_health(AppHealth {
            mode: AppHealthMode::File,
            file: Some(FileHealth {
                path: "/var/run/heartbeat/health".to_string(),
                max_age_seconds: 30,
            }),
            inject_liveness_probe: true,
            ..AppHealth::default()
        })
    });
    ns.kubectl(&[
        "label",
        "namespace",
        &ns.name,
        "pod-security.kubernetes.io/enforce=restricted",
    ]);
    let pod = |name: &str, secure: bool| {
        let sc = if secure {
            "securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}, runAsNonRoot: true, runAsUser: 1000, seccompProfile: {type: RuntimeDefault}}"
        } else {
            "securityContext: {privileged: true}"
        };
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{app: restricted}}}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: app\n    image: demo/worker\n    {sc}\n"
        )
    };
    let mut apply = stack.kubectl();
    apply.args(["apply", "-n", &ns.name, "-f", "-"]);
    let (ok, _, err) = heartbeat_e2e::stack::run_with_stdin(&mut apply, &pod("compliant", true));
    assert!(
        ok,
        "a compliant pod with the injected sidecar was refused: {err}"
    );
    let created: Value =
        serde_json::from_str(&ns.kubectl(&["get", "pod", "compliant", "-o", "json"]))
            .expect("pod JSON");
    let injected = created["spec"]["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["name"] == "heartbeat");
    assert!(injected, "not injected: {created:#}");

    let mut apply = stack.kubectl();
    apply.args(["apply", "-n", &ns.name, "-f", "-"]);
    let (ok, _, err) = heartbeat_e2e::stack::run_with_stdin(&mut apply, &pod("privileged", false));
    assert!(
        !ok && err.contains("restricted"),
        "a privileged pod was admitted: {err}"
    );
    let _ =
        run(stack
            .kubectl()
            .args(["delete", "pod", "compliant", "-n", &ns.name, "--wait=false"]));
}

fn curl(args: &[&str]) -> (u16, String) {
    let out = heartbeat_e2e::stack::run_ok(
        std::process::Command::new("curl")
            .args(["-s", "--noproxy", "*", "-m", "5", "-w", "\n%{http_code}"])
            .args(args),
    );
    let (body, code) = out.rsplit_once('\n').unwrap_or((&out, "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// Rule: only the application in the same pod can signal progress or
/// failure to its sidecar. Another pod (and the host) posting `/ping/fail`
/// to the pod's IP is refused with 403 and changes nothing: the member stays
/// Up and its app healthy; the app's own pings (to its pod IP) still count.
#[test]
fn only_the_pod_itself_can_ping_its_sidecar() {
    let stack = Stack::get();
    install_crds(stack);
    let topic = format!("ping-auth-{}", heartbeat_e2e::unique_suffix());
    heartbeat_e2e::stack::run_ok(
        heartbeat_e2e::stack::stack_command(stack.layout.root()).args(["create-topic", &topic]),
    );
    let (_op, ns) = monitored(stack, "ping-auth", ("pinger", &topic, 2), |m| {
        m.with(|spec| spec.grace_seconds = 3).app_health(AppHealth {
            mode: AppHealthMode::Ping,
            ping: Some(PingHealth { max_age_seconds: 5 }),
            ..AppHealth::default()
        })
    });
    ns.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: app, labels: {app: pinger}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: demo/worker
    env:
    - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
    - {name: PING_URL, value: "http://$(POD_IP):9190/ping"}
"#,
    );
    ns.wait_pod_phase("app", "Running", T);
    let ip = ns.wait_jsonpath("pod app", "{.status.podIP}", T, |s| !s.is_empty());
    let status = |what: &str| ns.kubectl(&["get", "hbm", "app", "-o", &format!("jsonpath={what}")]);
    let start = std::time::Instant::now();
    while status("{.status.up}") != "1" {
        assert!(start.elapsed() < T, "never Up: {}", status("{.status}"));
        std::thread::sleep(std::time::Duration::from_millis(500));
    }

    // Another pod keeps telling the sidecar the app fails; so does the host.
    ns.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: intruder, annotations: {{heartbeat.dev/inject: "false"}}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: demo/worker
    command:
    - /bin/sh
    - -c
    - 'while :; do echo "ping/fail answered $(curl -s -o /dev/null -w "%{{http_code}}" -m 2 -X POST http://{ip}:9190/ping/fail)"; sleep 1; done'
"#
    ));
    ns.wait_pod_phase("intruder", "Running", T);
    let intruder_ip = ns.wait_jsonpath("pod intruder", "{.status.podIP}", T, |s| !s.is_empty());
    assert_ne!(intruder_ip, ip, "the intruder shares the app's pod IP");
    // The intruder itself sees the refusal.
    ns.wait_log("intruder", "app", T, |log| {
        log.contains("ping/fail answered 403")
    });
    let (code, body) = curl(&["-X", "POST", &format!("http://{ip}:9190/ping/fail")]);
    assert_eq!(code, 403, "the host's /ping/fail: {body}");
    let watch = std::time::Instant::now();
    while watch.elapsed() < std::time::Duration::from_secs(15) {
        let (code, body) = curl(&[&format!("http://{ip}:9190/healthz/app")]);
        assert_eq!(code, 200, "the app's health flipped: {body}");
        assert_eq!(status("{.status.failing}"), "0", "{}", status("{.status}"));
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    assert_eq!(status("{.status.up}"), "1", "{}", status("{.status}"));
    let log = stack.container_log(&ns.name, "app", "heartbeat");
    let refused_from = |peer: &str| {
        log.lines().any(|l| {
            l.contains("refused a ping from outside the pod")
                && l.contains(&format!("peer={peer}:"))
        })
    };
    assert!(
        refused_from(&intruder_ip),
        "the sidecar did not log refusing the intruder pod ({intruder_ip}):\n{log}"
    );
    let intruder_log = ns.container_log("intruder", "app");
    assert!(
        !intruder_log.contains("ping/fail answered 2"),
        "a ping/fail from the intruder pod was accepted:\n{intruder_log}"
    );
}

/// Rule: the API server verifies the webhook's TLS through the caBundle: a
/// wrong CA makes injection fail open (the pod is admitted, without the
/// sidecar), and the operator says so: `uninjected` counts the pod,
/// `Injected=False`, and a `PodsWithoutSidecar` Event names it.
#[test]
fn a_wrong_ca_fails_open_with_the_pod_admitted_counted_and_an_event() {
    let stack = Stack::get();
    install_crds(stack);
    let (op, ns) = monitored(stack, "wrong-ca", ("victim", "wrong-ca", 5), |m| m);
    // A CA that did not sign the webhook's certificate.
    let bogus = heartbeat_e2e::stack::run_ok(std::process::Command::new("openssl").args([
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "/dev/null",
        "-subj",
        "/CN=not-the-webhook-ca",
        "-days",
        "1",
    ]));
    use base64::Engine;
    let patch = format!(
        r#"[{{"op": "replace", "path": "/webhooks/0/clientConfig/caBundle", "value": "{}"}}]"#,
        base64::engine::general_purpose::STANDARD.encode(bogus.as_bytes())
    );
    heartbeat_e2e::stack::run_ok(stack.kubectl().args([
        "patch",
        "mutatingwebhookconfiguration",
        &op.name,
        "--type=json",
        "-p",
        &patch,
    ]));
    // The API server picks the configuration up from its watch.
    std::thread::sleep(std::time::Duration::from_secs(3));
    ns.apply(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: victim, labels: {app: victim}}\n\
         spec: {terminationGracePeriodSeconds: 1, containers: [{name: app, image: demo/worker}]}\n",
    );
    let pod: Value =
        serde_json::from_str(&ns.kubectl(&["get", "pod", "victim", "-o", "json"])).expect("pod");
    let injected = pod["spec"]["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["name"] == "heartbeat");
    assert!(
        !injected,
        "injected through a webhook whose CA is wrong: {pod:#}"
    );
    let start = std::time::Instant::now();
    loop {
        let status: Value =
            serde_json::from_str(&ns.kubectl(&["get", "hbm", "app", "-o", "json"])).expect("hbm");
        let injected_false = status["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Injected" && c["status"] == "False");
        let events = ns.kubectl(&[
            "get",
            "events",
            "--field-selector",
            "reason=PodsWithoutSidecar",
            "-o",
            "jsonpath={.items[*].message}",
        ]);
        if status["status"]["uninjected"] == 1 && injected_false && events.contains("victim") {
            break;
        }
        assert!(
            start.elapsed() < T,
            "not reported: {:#}\nevents: {events}",
            status["status"]
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}
