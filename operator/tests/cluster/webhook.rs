//! The webhook on the real stack: the real operator binary (as its
//! least-privilege ServiceAccount, in the stack's network namespace), the
//! real API server calling it, pods run by the process node, beats on the
//! real Kafka.

use std::time::{Duration, Instant};

use heartbeat_crds::conditions::{READY, reason};
use heartbeat_crds::monitor::{AppHealth, AppHealthMode, FileHealth};
use heartbeat_e2e::kafka::read_until;
use heartbeat_e2e::kube_env::install_crds;
use heartbeat_e2e::monitor::{MonitorBuilder, condition_reason};
use heartbeat_e2e::operator::{OperatorOptions, OperatorProcess};
use heartbeat_e2e::stack::run;
use heartbeat_e2e::{Stack, TestNamespace, TestTopic};

use super::chart::json;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_heartbeat-operator");
const T: Duration = Duration::from_secs(120);

/// A labelled namespace with the broker Secret and a monitor over
/// `app=ingest` (a beat a second), as `spec` changes it.
fn monitored_namespace(
    stack: &Stack,
    op: &OperatorProcess,
    prefix: &str,
    topic: &str,
    spec: impl FnOnce(MonitorBuilder) -> MonitorBuilder,
) -> TestNamespace {
    let ns = TestNamespace::create(stack, prefix);
    op.enable_injection(&ns);
    ns.create_broker_secret(&stack.kafka_bootstrap);
    // The operator handles only monitors with its label (--monitor-selector).
    let monitor = MonitorBuilder::new("ingest", topic, (1, 5))
        .labelled(&op.monitor_label())
        .selecting_app("ingest");
    ns.apply_monitor(&spec(monitor).build());
    // The webhook decides from its cache: wait until it has seen the
    // monitor (the positive control of the tests that then expect no
    // injection).
    ns.wait_injects_app("ingest", T);
    ns
}

fn pod_json(ns: &TestNamespace, name: &str) -> Value {
    serde_json::from_str(&ns.kubectl(&["get", "pod", name, "-o", "json"])).expect("pod json")
}

fn init_names(pod: &Value) -> Vec<String> {
    pod["spec"]["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect()
}

fn events_for(ns: &TestNamespace) -> String {
    ns.kubectl(&[
        "get",
        "events.events.k8s.io",
        "-o",
        "jsonpath={range .items[*]}{.reason}: {.note}{\"\\n\"}{end}",
    ])
}

#[tokio::test]
async fn a_labelled_deployment_gets_sidecars_that_beat_with_their_own_program_ids() {
    let stack = Stack::get();
    install_crds(stack);
    let op = OperatorProcess::start(stack, BIN.as_ref());
    let topic = TestTopic::create(&stack.kafka_bootstrap, "webhook-beats").await;
    let ns = monitored_namespace(stack, &op, "wh-deploy", &topic.name, |m| m);
    ns.kubectl(&[
        "create",
        "deployment",
        "ingest",
        "--image=demo/worker",
        "--replicas=3",
    ]);
    ns.wait_jsonpath("pods -l app=ingest", "{.items[*].status.phase}", T, |s| {
        s.split_whitespace().filter(|p| *p == "Running").count() == 3
    });
    let pods = ns.kubectl(&[
        "get",
        "pods",
        "-l",
        "app=ingest",
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ]);
    let pods: Vec<String> = pods.split_whitespace().map(str::to_string).collect();
    let all = ns.kubectl(&["get", "pods", "-o", "json"]);
    assert!(
        !all.contains(&stack.kafka_bootstrap),
        "a Secret value reached a pod spec:\n{all}"
    );
    for pod in &pods {
        let p = pod_json(&ns, pod);
        assert_eq!(
            init_names(&p).first().map(String::as_str),
            Some("heartbeat"),
            "{p}"
        );
        let sidecar = &p["spec"]["initContainers"][0];
        assert_eq!(sidecar["restartPolicy"], "Always");
        assert_eq!(sidecar["envFrom"][0]["prefix"], "KAFKA_");
        assert_eq!(sidecar["envFrom"][0]["secretRef"]["name"], "kafka");
        assert!(
            p["metadata"]["annotations"]["heartbeat.dev/injected"]
                .as_str()
                .is_some_and(|a| a.starts_with("monitor=ingest,")),
            "{p}"
        );
    }
    // Each pod beats under its own program id: the env references were expanded.
    let wanted: Vec<String> = pods
        .iter()
        .map(|p| format!("{}.{p}_heartbeat", ns.name))
        .collect();
    read_until(&stack.kafka_bootstrap, &topic.name, T, |r| {
        wanted
            .iter()
            .all(|w| r.iter().any(|m| m.key.as_deref() == Some(w.as_bytes())))
    })
    .await;
    let injected = op.metric("heartbeat_operator_webhook_admissions_total{outcome=\"injected\"");
    // The three replicas, and the dry-run pod that showed the webhook had
    // seen the monitor (a dry run is counted too).
    assert!(injected.is_some_and(|n| n >= 4.0), "{injected:?}");
}

#[test]
fn opted_out_and_unmatched_pods_are_untouched_and_a_missing_secret_is_an_event() {
    let stack = Stack::get();
    install_crds(stack);
    let op = OperatorProcess::start(stack, BIN.as_ref());
    let ns = monitored_namespace(stack, &op, "wh-skip", "skips", |m| m);
    ns.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: opted-out, labels: {app: ingest}, annotations: {heartbeat.dev/inject: "false"}}
spec: {terminationGracePeriodSeconds: 1, containers: [{name: app, image: demo/worker}]}
---
apiVersion: v1
kind: Pod
metadata: {name: unmatched, labels: {app: web}}
spec: {terminationGracePeriodSeconds: 1, containers: [{name: app, image: demo/worker}]}
"#,
    );
    let nosecret = MonitorBuilder::new("nosecret", "skips", (5, 5))
        .labelled(&op.monitor_label())
        .broker_secret("missing")
        .selecting_app("orphan");
    ns.apply_monitor(&nosecret.build());
    // The webhook reads no Secret: it learns that one is missing from the
    // monitor's status, which the controller writes.
    heartbeat_e2e::status::eventually("Ready=False SecretMissing", T, || {
        let s = ns.monitor_status("nosecret");
        (condition_reason(&s, READY) == Some(reason::SECRET_MISSING))
            .then_some(())
            .ok_or(format!("{s:#?}"))
    });
    ns.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: orphan, labels: {app: orphan}}
spec: {terminationGracePeriodSeconds: 1, containers: [{name: app, image: demo/worker}]}
"#,
    );
    for pod in ["opted-out", "unmatched", "orphan"] {
        let p = pod_json(&ns, pod);
        assert!(init_names(&p).is_empty(), "{pod} was injected: {p}");
        assert!(
            p["metadata"]["annotations"]["heartbeat.dev/injected"].is_null(),
            "{p}"
        );
    }
    let deadline = Instant::now() + T;
    loop {
        let events = events_for(&ns);
        if events
            .contains("InjectionSkipped: pod orphan: the broker Secret \"missing\" does not exist")
            && events.contains("InjectionSkipped: pod opted-out: the pod opts out")
        {
            assert!(!events.contains("pod unmatched"), "{events}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no InjectionSkipped Events:\n{events}\n{}",
            op.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn with_the_operator_down_pods_are_still_created_without_a_sidecar() {
    let stack = Stack::get();
    install_crds(stack);
    let mut op = OperatorProcess::start(stack, BIN.as_ref());
    let ns = monitored_namespace(stack, &op, "wh-down", "down", |m| m);
    op.kill();
    ns.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: during-outage, labels: {app: ingest}}
spec: {terminationGracePeriodSeconds: 1, containers: [{name: app, image: demo/worker}]}
"#,
    );
    ns.wait_pod_phase("during-outage", "Running", T);
    assert!(init_names(&pod_json(&ns, "during-outage")).is_empty());
}

#[tokio::test]
async fn a_job_with_the_sidecar_completes_and_a_deleted_pod_leaves_a_stopping_beat() {
    let stack = Stack::get();
    install_crds(stack);
    let op = OperatorProcess::start(stack, BIN.as_ref());
    let topic = TestTopic::create(&stack.kafka_bootstrap, "webhook-job").await;
    let ns = monitored_namespace(stack, &op, "wh-job", &topic.name, |m| m);
    ns.apply(
        r#"
apiVersion: batch/v1
kind: Job
metadata: {name: batch}
spec:
  backoffLimit: 0
  template:
    metadata: {labels: {app: ingest}}
    spec:
      restartPolicy: Never
      containers: [{name: work, image: demo/job, env: [{name: JOB_SECONDS, value: "2"}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: doomed, labels: {app: ingest}}
spec: {terminationGracePeriodSeconds: 5, containers: [{name: app, image: demo/worker}]}
"#,
    );
    ns.wait_jsonpath("job/batch", "{.status.succeeded}", T, |s| s == "1");
    let job_pod = ns.kubectl(&[
        "get",
        "pods",
        "-l",
        "job-name=batch",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ]);
    assert_eq!(
        init_names(&pod_json(&ns, &job_pod))
            .first()
            .map(String::as_str),
        Some("heartbeat")
    );
    ns.wait_pod_phase("doomed", "Running", T);
    let key = format!("{}.doomed_heartbeat", ns.name);
    read_until(&stack.kafka_bootstrap, &topic.name, T, |r| {
        r.iter().any(|m| m.key.as_deref() == Some(key.as_bytes()))
    })
    .await;
    ns.kubectl(&["delete", "pod", "doomed", "--wait=true"]);
    read_until(&stack.kafka_bootstrap, &topic.name, T, |r| {
        r.iter().any(|m| {
            m.key.as_deref() == Some(key.as_bytes())
                && m.value
                    .as_deref()
                    .is_some_and(|v| String::from_utf8_lossy(v).contains("\"stopping\""))
        })
    })
    .await;
}

#[test]
fn file_mode_follows_the_touch_file_and_the_injected_probe_restarts_a_stuck_app() {
    let stack = Stack::get();
    install_crds(stack);
    let op = OperatorProcess::start(stack, BIN.as_ref());
    let ns = monitored_namespace(stack, &op, "wh-file", "file-mode", |m| {
        m.app_health(AppHealth {
            mode: AppHealthMode::File,
            file: Some(FileHealth {
                path: "/var/run/heartbeat/health".to_string(),
                max_age_seconds: 3,
            }),
            inject_liveness_probe: true,
            ..AppHealth::default()
        })
    });
    ns.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: stuck, labels: {app: ingest}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: demo/worker
    env:
    - {name: TOUCH_FILE, value: /var/run/heartbeat/health}
    - {name: STALL_AFTER_SECONDS, value: "15"}
"#,
    );
    ns.wait_pod_phase("stuck", "Running", T);
    let ip = ns.kubectl(&["get", "pod", "stuck", "-o", "jsonpath={.status.podIP}"]);
    let app_health = || {
        run(std::process::Command::new("curl").args([
            "-s",
            "--noproxy",
            "*",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "3",
            &format!("http://{ip}:9190/healthz/app"),
        ]))
        .1
    };
    let wait_for = |code: &str| {
        let deadline = Instant::now() + T;
        while app_health() != code {
            assert!(
                Instant::now() < deadline,
                "/healthz/app never answered {code}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    wait_for("200");
    wait_for("503");
    // The injected livenessProbe on the app points at /healthz/app.
    ns.wait_jsonpath(
        "pod/stuck",
        "{.status.containerStatuses[?(@.name==\"app\")].restartCount}",
        T,
        |n| n.parse::<i32>().is_ok_and(|n| n >= 1),
    );
}

/// POSTs `body` to the webhook over TLS; returns (HTTP status, body).
fn post_mutate(op: &OperatorProcess, body: &[u8]) -> (String, String) {
    let file = std::env::temp_dir().join(format!("hb-review-{}", heartbeat_e2e::unique_suffix()));
    std::fs::write(&file, body).expect("write body");
    let (_, out, err) = run(std::process::Command::new("curl").args([
        "-sSk",
        "--http1.1",
        "--noproxy",
        "*",
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        &format!("@{}", file.display()),
        "-w",
        "\n%{http_code}",
        &format!("https://{}/mutate", op.webhook),
    ]));
    let _ = std::fs::remove_file(&file);
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", &out));
    (code.to_string(), format!("{body}{err}"))
}

fn review(kind: &str, object: Value) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "e2e-uid-1",
            "kind": {"group": "", "version": "v1", "kind": kind},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "default",
            "operation": "CREATE",
            "userInfo": {"username": "e2e"},
            "object": object,
            "dryRun": false,
        }
    }))
    .expect("json")
}

#[test]
fn bad_requests_get_clear_errors_and_odd_reviews_admit_unchanged() {
    let stack = Stack::get();
    install_crds(stack);
    let mut op = OperatorProcess::start(stack, BIN.as_ref());
    let (code, body) = post_mutate(&op, b"{not json");
    assert_eq!(code, "400", "{body}");
    assert!(body.contains("not an AdmissionReview"), "{body}");
    let (code, body) = post_mutate(
        &op,
        b"{\"apiVersion\": \"admission.k8s.io/v1\", \"kind\": \"AdmissionReview\"}",
    );
    assert_eq!(code, "400", "{body}");
    // Far over the body limit: refused by size, never read whole.
    let (code, body) = post_mutate(&op, &vec![b' '; 9 * 1024 * 1024]);
    assert_eq!(code, "413", "{body}");
    // A review of something else, and a pod the webhook cannot read: allowed, no patch.
    for (kind, object) in [
        (
            "ConfigMap",
            serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}),
        ),
        (
            "Pod",
            serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": "not a list"}}),
        ),
    ] {
        let (code, body) = post_mutate(&op, &review(kind, object));
        assert_eq!(code, "200", "{body}");
        let answer: Value = serde_json::from_str(&body).expect("an AdmissionReview");
        assert_eq!(answer["response"]["uid"], "e2e-uid-1");
        assert_eq!(answer["response"]["allowed"], true);
        assert!(answer["response"]["patch"].is_null(), "{answer}");
    }
    // Malformed in every other way: an answer each (refused, or admitted
    // unchanged), never a crash.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let odd: Vec<(&str, Vec<u8>)> = vec![
        ("nested 100,000 deep", deep.into_bytes()),
        ("not UTF-8", vec![0xff, 0xfe, b'{', 0x80, b'}']),
        ("request null", br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":null}"#.to_vec()),
        ("v1beta1", br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"u"}}"#.to_vec()),
        ("no object", review("Pod", Value::Null)),
        ("object a string", review("Pod", Value::from("pod"))),
        (
            "10,000 containers",
            review(
                "Pod",
                serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "big"},
                    "spec": {"containers": (0..10_000).map(|i| serde_json::json!({"name": format!("c{i}"), "image": "x"})).collect::<Vec<_>>()}}),
            ),
        ),
    ];
    for (what, body) in odd {
        let (code, answer) = post_mutate(&op, &body);
        match code.as_str() {
            "400" | "413" | "422" => {}
            "200" => {
                let a: Value = serde_json::from_str(&answer).expect("an AdmissionReview");
                assert_eq!(a["response"]["allowed"], true, "{what}: {a}");
                assert!(a["response"]["patch"].is_null(), "{what}: {a}");
            }
            other => panic!("{what}: HTTP {other}: {answer}"),
        }
        assert!(op.is_running(), "{what} killed the webhook:\n{}", op.log());
    }
    assert!(
        op.metric("heartbeat_operator_webhook_bad_requests_total")
            .is_some_and(|n| n >= 2.0)
    );
    assert!(
        op.metric("heartbeat_operator_webhook_admissions_total{outcome=\"error\",reason=\"unreadable_pod\"}")
            .is_some_and(|n| n >= 1.0),
        "{}",
        op.log()
    );
}

/// Rule: `InjectionSkipped` Events share the controller's per-monitor
/// budget: a burst of pods the webhook skips (here 40 that opt out, never
/// scheduled) publishes at most the burst (20) plus the refill, and the
/// rest are counted as suppressed, so a flood of pods cannot flood the API
/// server with Events.
#[test]
fn injection_skipped_events_are_budgeted_per_monitor() {
    const PODS: usize = 40;
    let stack = Stack::get();
    install_crds(stack);
    let op = OperatorProcess::start(stack, BIN.as_ref());
    let ns = monitored_namespace(stack, &op, "wh-budget", "budget", |m| m);
    let pods: String = (0..PODS)
        .map(|i| {
            format!(
                "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: out-{i}, labels: {{app: ingest}}, annotations: {{heartbeat.dev/inject: \"false\"}}}}\n\
                 spec: {{nodeSelector: {{no-such-node: \"true\"}}, containers: [{{name: app, image: demo/worker}}]}}\n"
            )
        })
        .collect();
    let started = Instant::now();
    ns.apply(&pods);
    let counted = |name: &str| op.metric_sum(name, &[("reason", "InjectionSkipped")]);
    let (published, suppressed) =
        heartbeat_e2e::status::eventually("every skipped pod published or suppressed", T, || {
            let (p, s) = (
                counted("heartbeat_operator_events_total"),
                counted("heartbeat_operator_events_suppressed_total"),
            );
            (p + s >= PODS as f64)
                .then_some((p, s))
                .ok_or(format!("published {p}, suppressed {s}"))
        });
    // 20 at once, then one every 3 s.
    let allowed = 20.0 + (started.elapsed().as_secs_f64() / 3.0).ceil();
    assert!(
        published <= allowed && suppressed >= 1.0,
        "published {published} (allowed {allowed}), suppressed {suppressed}"
    );
    let events = events_for(&ns);
    let shown = events.matches("InjectionSkipped").count();
    assert!(shown as f64 <= allowed, "{shown} Events:\n{events}");
}

/// Rule (issue 22): the webhook's serving certificate is renewed before it
/// ends and its CA rotated while pods keep being admitted. With short
/// lifetimes (a 40 s leaf renewed 25 s ahead, a 120 s CA rotated 70 s
/// ahead in 15 s phases), a server-side dry-run pod a second comes back
/// injected every time through two whole rotations (the third CA signs and
/// the second has left the bundle), so no call failed open; at every poll a new TLS
/// connection trusting only the configuration's caBundle accepts the
/// served leaf (the API server reuses its connection, so injection alone
/// would not show a bundle left behind); the leaf is renewed and the
/// bundle follows each step, twice in order: both CAs while the new one is
/// added and while the old one leaves (the overlap), then only the new one.
#[test]
fn the_serving_certificate_renews_and_its_ca_rotates_with_every_pod_injected() {
    let stack = Stack::get();
    install_crds(stack);
    let options = OperatorOptions {
        extra_args: [
            "--cert-check-seconds=1",
            "--cert-lifetime-seconds=40",
            "--cert-renew-before-seconds=25",
            "--ca-lifetime-seconds=120",
            "--ca-renew-before-seconds=70",
            "--ca-overlap-seconds=15",
        ]
        .map(String::from)
        .to_vec(),
        ..OperatorOptions::default()
    };
    let op = OperatorProcess::start_with(stack, BIN.as_ref(), options);
    let ns = monitored_namespace(stack, &op, "wh-rotate", "rotate", |m| m);
    let secret_name = format!("{}-webhook-tls", op.name);
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: rotation-probe, labels: {app: ingest}}\n\
               spec: {containers: [{name: app, image: demo/worker}]}\n";
    let certs = |pem: &str| pem.matches("BEGIN CERTIFICATE").count();
    let (mut admitted, mut leaves) = (0u32, std::collections::BTreeSet::new());
    // (rotation phase of the Secret, CAs in the configuration's bundle),
    // each change once, in order.
    let mut seen: Vec<(String, usize)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let mut cmd = stack.kubectl();
        cmd.args(["create", "-n", &ns.name, "--dry-run=server", "-o"])
            .args(["jsonpath={.spec.initContainers[*].name}", "-f", "-"]);
        let (ok, out, err) = heartbeat_e2e::stack::run_with_stdin(&mut cmd, pod);
        assert!(
            ok && out.split_whitespace().any(|c| c == "heartbeat"),
            "dry-run pod {} was not injected (ok={ok}): {out}{err}\nphases so far: {seen:?}\noperator log:\n{}",
            admitted + 1,
            op.log_tail(40)
        );
        admitted += 1;
        let secret = json(
            stack,
            &["get", "secret", &secret_name, "-n", op.namespace()],
        );
        let note = |k: &str| {
            secret["metadata"]["annotations"][format!("heartbeat.dev/{k}")]
                .as_str()
                .unwrap_or_default()
                .to_string()
        };
        leaves.insert(note("not-after"));
        let config = json(stack, &["get", "mutatingwebhookconfiguration", &op.name]);
        let bundle = config["webhooks"][0]["clientConfig"]["caBundle"]
            .as_str()
            .and_then(base64_decode)
            .unwrap_or_default();
        // The API server keeps its connection to the webhook open, so the
        // pods above may go through a handshake made long ago: check that a
        // new one, trusting only the configuration's bundle, succeeds now.
        let roots = std::env::temp_dir().join(format!("{}-ca-bundle.pem", op.name));
        std::fs::write(&roots, &bundle).expect("write the bundle");
        let url = format!("https://{}/mutate", op.webhook);
        let (ok, _, err) = run(std::process::Command::new("curl")
            .args([
                "-sS",
                "-o",
                "/dev/null",
                "--noproxy",
                "*",
                "--max-time",
                "5",
            ])
            .arg("--cacert")
            .arg(&roots)
            .arg(&url));
        assert!(
            ok,
            "a new connection to {url} does not trust the served leaf with the configuration's bundle: {err}\nphases so far: {seen:?}\noperator log:\n{}",
            op.log_tail(40)
        );
        let phase = match note("ca-rotation").as_str() {
            "" => "steady".to_string(),
            p => p.to_string(),
        };
        let now = (phase, certs(&bundle));
        let steady = now.0 == "steady";
        if seen.last() != Some(&now) {
            seen.push(now);
        }
        let generation: u32 = note("ca-generation").parse().unwrap_or(0);
        if generation >= 2 && steady {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the third CA did not become the only one within 300 s: phases {seen:?}\n{}",
            op.log_tail(40)
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    println!(
        "{admitted} dry-run pods injected; {} leaves; phases: {seen:?}",
        leaves.len()
    );
    assert!(leaves.len() >= 4, "the leaf was not renewed: {leaves:?}");
    assert!(
        seen.iter().all(|(_, n)| *n <= 2),
        "more than two CAs trusted: {seen:?}"
    );
    // Twice, in order: both CAs while added and while switched, then one.
    let wanted = [("added", 2), ("switched", 2), ("steady", 1)].repeat(2);
    let mut rest = seen.iter();
    for (phase, n) in &wanted {
        assert!(
            rest.any(|(p, m)| p == phase && m == n),
            "the bundle did not go ({phase}, {n} CAs) in order {wanted:?}: {seen:?}"
        );
    }
}

fn base64_decode(b64: &str) -> Option<String> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    String::from_utf8(bytes).ok()
}
