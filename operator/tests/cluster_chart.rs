//! The Helm chart (`charts/heartbeat-operator`) on the real stack: it lints,
//! renders what the API server accepts, grants exactly the repo's RBAC,
//! installs the webhook configuration the operator itself would apply, and
//! runs in-cluster: operator pods on the process node with their
//! ServiceAccount token, a leader, the API server calling the webhook
//! through the Service, a labelled Deployment reported Up; `helm upgrade`
//! rolls the operator without losing status; `helm uninstall` leaves
//! nothing of the release behind but the CRD.

use std::process::Command;
use std::time::{Duration, Instant};

use heartbeat_e2e::kube_env::install_crds;
use heartbeat_e2e::stack::{repo_dir, run, run_ok};
use heartbeat_e2e::{Stack, TestNamespace, TestTopic};
use heartbeat_operator::webhook::config::{WebhookSettings, WebhookTarget, webhook_configuration};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use serde_json::Value;

const T: Duration = Duration::from_secs(180);

fn chart() -> String {
    repo_dir()
        .join("charts/heartbeat-operator")
        .display()
        .to_string()
}

fn helm(stack: &Stack) -> Command {
    stack.tool("helm")
}

/// `helm template` with `sets` as parsed documents.
fn render(stack: &Stack, release: &str, namespace: &str, sets: &[&str]) -> Vec<Value> {
    let mut cmd = helm(stack);
    cmd.args(["template", release, &chart(), "--namespace", namespace]);
    for s in sets {
        cmd.args(["--set", s]);
    }
    let out = run_ok(&mut cmd);
    serde_yaml::Deserializer::from_str(&out)
        .filter_map(|d| {
            let v: Value = serde::Deserialize::deserialize(d).expect("rendered YAML");
            (!v.is_null()).then_some(v)
        })
        .collect()
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} rendered"))
}

/// Rule: the chart is lint-clean with its defaults and with every optional
/// part on, and what it renders by default is accepted by the API server
/// (a server-side dry run: schemas, CEL, admission).
#[test]
fn the_chart_lints_and_the_api_server_accepts_what_it_renders() {
    let stack = Stack::get();
    install_crds(stack);
    for sets in [
        "",
        "webhook.certManager.enabled=true,serviceMonitor.enabled=true,prometheusRule.enabled=true",
    ] {
        let mut cmd = helm(stack);
        cmd.args(["lint", "--strict", &chart()]);
        if !sets.is_empty() {
            cmd.args(["--set", sets]);
        }
        let (ok, out, err) = run(&mut cmd);
        assert!(ok, "helm lint {sets}:\n{out}\n{err}");
    }
    // A bad value is refused by values.schema.json, naming it.
    let (ok, out, err) =
        run(helm(stack).args(["template", "x", &chart(), "--set", "log.format=xml"]));
    assert!(!ok && err.contains("log/format"), "{out}\n{err}");

    let ns = TestNamespace::create(stack, "chart-dry");
    let rendered = run_ok(helm(stack).args(["template", "dry", &chart(), "--namespace", &ns.name]));
    let mut apply = stack.kubectl();
    apply.args(["apply", "--dry-run=server", "-f", "-"]);
    let out = heartbeat_e2e::stack::run_with_stdin(&mut apply, &rendered);
    assert!(out.0, "dry run refused:\n{}\n{}", out.1, out.2);
    for kind in [
        "deployment",
        "service",
        "mutatingwebhookconfiguration",
        "poddisruptionbudget",
        "lease",
    ] {
        assert!(out.1.contains(kind), "{kind} missing from:\n{}", out.1);
    }
}

/// Rule: the chart grants exactly the rules of operator/deploy/rbac.yaml
/// (the repo's one statement of the operator's rights), with its names.
#[test]
fn the_chart_grants_the_repos_rbac_under_its_own_names() {
    let stack = Stack::get();
    let docs = render(stack, "rel", "ops", &[]);
    let repo: Vec<Value> = serde_yaml::Deserializer::from_str(
        &std::fs::read_to_string(repo_dir().join("operator/deploy/rbac.yaml"))
            .expect("rbac.yaml")
            .replace(
                "heartbeat-operator-webhook-tls",
                "rel-heartbeat-operator-webhook-tls",
            )
            .replace(
                "resourceNames: [heartbeat-operator]",
                "resourceNames: [rel-heartbeat-operator]",
            ),
    )
    .map(|d| serde::Deserialize::deserialize(d).expect("rbac YAML"))
    .collect();
    for kind in ["ClusterRole", "Role"] {
        let chart_rules = &of_kind(&docs, kind)["rules"];
        let repo_rules = &of_kind(&repo, kind)["rules"];
        assert_eq!(chart_rules, repo_rules, "{kind} rules differ");
    }
    let sa = of_kind(&docs, "ServiceAccount");
    assert_eq!(sa["metadata"]["name"], "rel-heartbeat-operator");
}

/// Rule: the chart's MutatingWebhookConfiguration is the one the operator
/// applies with its caBundle (so the two never fight over a field).
#[test]
fn the_charts_webhook_configuration_is_the_one_the_operator_applies() {
    let stack = Stack::get();
    let docs = render(stack, "rel", "ops", &[]);
    let chart: MutatingWebhookConfiguration =
        serde_json::from_value(of_kind(&docs, "MutatingWebhookConfiguration").clone())
            .expect("a MutatingWebhookConfiguration");
    let operator = webhook_configuration(
        &WebhookSettings {
            name: "rel-heartbeat-operator".into(),
            target: WebhookTarget::Service {
                namespace: "ops".into(),
                name: "rel-heartbeat-operator".into(),
                port: 443,
            },
            namespace_label: ("heartbeat.dev/injection".into(), "enabled".into()),
            operator_namespace: "ops".into(),
            timeout_seconds: 5,
        },
        "CA",
    );
    let mut expected = operator.webhooks.expect("webhooks");
    expected[0].client_config.ca_bundle = None;
    assert_eq!(chart.webhooks.expect("webhooks"), expected);
    assert_eq!(chart.metadata.name, operator.metadata.name);
}

/// Uninstalls the release when a test ends, whatever happened.
struct Release<'a> {
    stack: &'a Stack,
    name: String,
    namespace: String,
}

impl Drop for Release<'_> {
    fn drop(&mut self) {
        let _ = run(helm(self.stack).args(["uninstall", &self.name, "-n", &self.namespace]));
    }
}

fn json(stack: &Stack, args: &[&str]) -> Value {
    let out = run_ok(stack.kubectl().args(args).args(["-o", "json"]));
    serde_json::from_str(&out).expect("kubectl JSON")
}

fn eventually<V>(what: &str, mut probe: impl FnMut() -> Result<V, String>) -> V {
    let start = Instant::now();
    loop {
        match probe() {
            Ok(v) => return v,
            Err(last) if start.elapsed() > T => panic!("{what}: not within {T:?}; last: {last}"),
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// Rule: `helm install` runs the operator in-cluster as the real thing: its
/// pods run on the process node as their ServiceAccount (token mounted),
/// become Ready and elect a leader; the API server calls the webhook
/// through the Service (the sidecar appears in a labelled Deployment's
/// pods) and the leader reports them Up. `helm upgrade` with a changed
/// value rolls the pods and the monitor's status survives; `helm
/// uninstall` removes every object of the release (the CRD stays).
#[tokio::test]
async fn install_runs_in_cluster_and_upgrade_and_uninstall_are_clean() {
    let stack = Stack::get();
    install_crds(stack);
    let ops = TestNamespace::create(stack, "chart-ops");
    let app = TestNamespace::create(stack, "chart-app");
    let release = Release {
        stack,
        name: format!("r{}", heartbeat_e2e::unique_suffix()),
        namespace: ops.name.clone(),
    };
    let full = format!("{}-heartbeat-operator", release.name);
    let selector = format!("heartbeat.dev/operator={}", release.name);
    let injection = format!("injection.namespaceLabel.value={}", release.name);
    let monitor_selector = format!("monitorSelector={selector}");
    run_ok(helm(stack).args([
        "install",
        &release.name,
        &chart(),
        "-n",
        &ops.name,
        "--set",
        &injection,
        "--set",
        &monitor_selector,
        "--set",
        "leaderElection.leaseDurationSeconds=6",
        "--wait",
        "--timeout",
        "180s",
    ]));

    // Two Ready operator pods on the process node, as the chart's ServiceAccount.
    let pods = json(
        stack,
        &[
            "get",
            "pods",
            "-n",
            &ops.name,
            "-l",
            &format!("app.kubernetes.io/instance={}", release.name),
        ],
    );
    let items = pods["items"].as_array().expect("pods");
    assert_eq!(items.len(), 2, "{pods:#}");
    for p in items {
        assert_eq!(p["spec"]["nodeName"], "process-node");
        assert_eq!(p["spec"]["serviceAccountName"], full.as_str());
        let projected_token = p["spec"]["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|v| {
                v["projected"]["sources"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|s| s["serviceAccountToken"].is_object())
            });
        assert!(projected_token, "no ServiceAccount token volume: {p:#}");
        assert_eq!(p["status"]["phase"], "Running");
    }
    let names: Vec<&str> = items
        .iter()
        .filter_map(|p| p["metadata"]["name"].as_str())
        .collect();
    let holder = eventually("a leader holds the Lease", || {
        let lease = json(stack, &["get", "lease", &full, "-n", &ops.name]);
        let h = lease["spec"]["holderIdentity"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        names
            .contains(&h.as_str())
            .then_some(h.clone())
            .ok_or(format!("{lease:#}"))
    });
    assert!(!holder.is_empty());

    // A labelled namespace, its broker Secret, a monitor and a Deployment.
    run_ok(stack.kubectl().args([
        "label",
        "namespace",
        &app.name,
        &format!("heartbeat.dev/injection={}", release.name),
    ]));
    app.create_broker_secret(&stack.kafka_bootstrap);
    let topic = TestTopic::create(&stack.kafka_bootstrap, "chart").await;
    app.apply(&format!(
        r#"
apiVersion: heartbeat.dev/v1alpha1
kind: HeartbeatMonitor
metadata: {{name: app, labels: {{heartbeat.dev/operator: "{}"}}}}
spec:
  topic: {}
  intervalSeconds: 2
  missedBeatsTolerated: 3
  graceSeconds: 15
  brokerSecretRef: {{name: kafka}}
  selector: {{matchLabels: {{app: worker}}}}
"#,
        release.name, topic.name
    ));
    // The webhook decides from its cache: let it see the monitor.
    std::thread::sleep(Duration::from_secs(2));
    app.apply(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: worker}
spec:
  replicas: 2
  selector: {matchLabels: {app: worker}}
  template:
    metadata: {labels: {app: worker}}
    spec: {terminationGracePeriodSeconds: 2, containers: [{name: app, image: demo/worker}]}
"#,
    );
    eventually(
        "the API server called the webhook through the Service",
        || {
            let pods = json(stack, &["get", "pods", "-n", &app.name, "-l", "app=worker"]);
            let injected = pods["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| {
                    p["spec"]["initContainers"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|c| c["name"] == "heartbeat")
                })
                .count();
            (injected == 2)
                .then_some(())
                .ok_or(format!("{injected} of 2 injected"))
        },
    );
    let up2 = |what: &str| {
        eventually(what, || {
            let hbm = json(stack, &["get", "hbm", "app", "-n", &app.name]);
            let s = &hbm["status"];
            (s["up"] == 2 && s["expected"] == 2)
                .then_some(())
                .ok_or(format!("{s:#}"))
        })
    };
    up2("kubectl get hbm shows UP 2");

    // An upgrade with a changed value rolls both pods; status stays.
    let before: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    run_ok(helm(stack).args([
        "upgrade",
        &release.name,
        &chart(),
        "-n",
        &ops.name,
        "--reuse-values",
        "--set",
        "log.level=debug",
        "--wait",
        "--timeout",
        "180s",
    ]));
    eventually("the old operator pods are replaced", || {
        let pods = json(
            stack,
            &[
                "get",
                "pods",
                "-n",
                &ops.name,
                "-l",
                &format!("app.kubernetes.io/instance={}", release.name),
            ],
        );
        let now: Vec<String> = pods["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
            .collect();
        (now.len() == 2 && now.iter().all(|n| !before.contains(n)))
            .then_some(())
            .ok_or(format!("{now:?}"))
    });
    let hbm = json(stack, &["get", "hbm", "app", "-n", &app.name]);
    assert_eq!(
        hbm["status"]["expected"], 2,
        "status lost in the upgrade: {hbm:#}"
    );
    up2("still UP 2 under the new leader");
    let stale_events = run_ok(stack.kubectl().args([
        "get",
        "events",
        "-n",
        &app.name,
        "--field-selector",
        "reason=HeartbeatStale",
        "-o",
        "name",
    ]));
    assert!(
        stale_events.trim().is_empty(),
        "a Stale Event across the upgrade: {stale_events}"
    );

    // Uninstall: nothing of the release is left; the CRD stays.
    run_ok(helm(stack).args(["uninstall", &release.name, "-n", &ops.name, "--wait"]));
    let label = format!("app.kubernetes.io/instance={}", release.name);
    let cluster = run_ok(stack.kubectl().args([
        "get",
        "mutatingwebhookconfigurations,clusterroles,clusterrolebindings",
        "-l",
        &label,
        "-o",
        "name",
    ]));
    assert!(cluster.trim().is_empty(), "left behind: {cluster}");
    eventually("every namespaced object of the release is gone", || {
        let left = run_ok(stack.kubectl().args([
            "get",
            "deployments,replicasets,services,serviceaccounts,secrets,leases,roles,rolebindings,configmaps,poddisruptionbudgets,pods",
            "-n",
            &ops.name,
            "-l",
            &label,
            "-o",
            "name",
        ]));
        let named =
            run_ok(
                stack
                    .kubectl()
                    .args(["get", "secrets,leases", "-n", &ops.name, "-o", "name"]),
            );
        let ours: Vec<&str> = named.lines().filter(|l| l.contains(&full)).collect();
        (left.trim().is_empty() && ours.is_empty())
            .then_some(())
            .ok_or(format!("{left}{ours:?}"))
    });
    run_ok(
        stack
            .kubectl()
            .args(["get", "crd", "heartbeatmonitors.heartbeat.dev"]),
    );
}
