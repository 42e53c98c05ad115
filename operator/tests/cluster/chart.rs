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

use heartbeat_crds::HeartbeatMonitorStatus;
use heartbeat_e2e::kafka::ExternalProgram;
use heartbeat_e2e::kube_env::install_crds;
use heartbeat_e2e::monitor::{MonitorBuilder, last_beat};
use heartbeat_e2e::stack::{repo_dir, run, run_ok};
use heartbeat_e2e::{Stack, TestNamespace, TestTopic};
use heartbeat_operator::webhook::config::{WebhookSettings, WebhookTarget, webhook_configuration};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use serde_json::Value;

pub(super) const T: Duration = Duration::from_secs(180);

pub(super) fn chart() -> String {
    repo_dir()
        .join("charts/heartbeat-operator")
        .display()
        .to_string()
}

pub(super) fn helm(stack: &Stack) -> Command {
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
/// (a server-side dry run: schemas, CEL, admission); its schema refuses a
/// bad value and one replica with a PodDisruptionBudget; its replicas
/// prefer different nodes; a NetworkPolicy admits the webhook port only
/// from the API server's addresses and the admin port only from the
/// operator's namespace.
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
    // One replica with the PodDisruptionBudget would block every drain.
    let (ok, out, err) =
        run(helm(stack).args(["template", "x", &chart(), "--set", "replicaCount=1"]));
    assert!(!ok && err.contains("replicaCount"), "{out}\n{err}");
    let (ok, out, err) = run(helm(stack).args([
        "template",
        "x",
        &chart(),
        "--set",
        "replicaCount=1,podDisruptionBudget.enabled=false",
    ]));
    assert!(ok, "{out}\n{err}");
    // The replicas prefer different nodes by default.
    let deployment = render(stack, "x", "ops", &[]);
    let anti = &of_kind(&deployment, "Deployment")["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
        ["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"];
    assert_eq!(anti["topologyKey"], "kubernetes.io/hostname", "{anti:#}");
    // A NetworkPolicy by default: the webhook port from the API server's
    // addresses only, the admin port from the operator's namespace (and
    // the listed scrapers), nothing else.
    let set = ["networkPolicy.apiServerCIDRs={10.0.0.0/28}"];
    let policy = render(stack, "x", "ops", &set);
    let ingress = &of_kind(&policy, "NetworkPolicy")["spec"]["ingress"];
    assert_eq!(ingress[0]["ports"][0]["port"], "webhook", "{ingress:#}");
    assert_eq!(
        ingress[0]["from"],
        serde_json::json!([{"ipBlock": {"cidr": "10.0.0.0/28"}}])
    );
    assert_eq!(ingress[1]["ports"][0]["port"], "admin", "{ingress:#}");
    assert_eq!(ingress[1]["from"], serde_json::json!([{"podSelector": {}}]));
    assert_eq!(ingress.as_array().map(Vec::len), Some(2), "{ingress:#}");

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
            )
            .replace(
                "heartbeat-operator-signing]",
                "rel-heartbeat-operator-signing]",
            )
            .replace(
                "https:heartbeat-operator:keys",
                "https:rel-heartbeat-operator:keys",
            ),
    )
    .map(|d| serde::Deserialize::deserialize(d).expect("rbac YAML"))
    .collect();
    let mut compared = 0;
    for kind in ["ClusterRole", "Role"] {
        for r in repo.iter().filter(|d| d["kind"] == kind) {
            let name = format!("rel-{}", r["metadata"]["name"].as_str().expect("name"));
            let chart_role = docs
                .iter()
                .find(|d| d["kind"] == kind && d["metadata"]["name"] == name.as_str())
                .unwrap_or_else(|| panic!("the chart renders no {kind} {name}"));
            assert_eq!(
                chart_role["rules"], r["rules"],
                "{kind} {name}: rules differ"
            );
            compared += 1;
        }
    }
    assert_eq!(compared, 4, "ClusterRoles and Roles of rbac.yaml");
    let sa = of_kind(&docs, "ServiceAccount");
    assert_eq!(sa["metadata"]["name"], "rel-heartbeat-operator");
}

/// `kubectl auth can-i VERB RESOURCE -n NAMESPACE --as SA`.
fn may(stack: &Stack, sa: &str, verb: &str, resource: &str, namespace: &str) -> bool {
    run(stack
        .kubectl()
        .args(["auth", "can-i", verb, resource, "--as", sa, "-n", namespace]))
    .0
}

/// Rule: in both RBAC modes, the chart's ServiceAccount never lists or
/// watches Secrets, may create no webhook configuration and patch only its
/// own; by default it reads (gets) Secrets by name in every namespace; with
/// `rbac.namespaced=true` only in the namespaces listed in
/// `rbac.namespaces`, never in an unrelated one. What `kubectl auth can-i`
/// says after applying the rendered RBAC, not what the YAML looks like.
#[test]
fn the_charts_rbac_in_both_modes_is_what_can_i_says() {
    let stack = Stack::get();
    for namespaced in [false, true] {
        let op = TestNamespace::create(stack, "chart-rbac");
        let granted = TestNamespace::create(stack, "chart-granted");
        let unrelated = TestNamespace::create(stack, "chart-unrelated");
        let release = format!("rb{}", heartbeat_e2e::unique_suffix());
        let mode = format!("rbac.namespaced={namespaced}");
        let list = format!("rbac.namespaces={{{}}}", granted.name);
        let docs = render(stack, &release, &op.name, &[&mode, &list]);
        let rbac: Vec<&Value> = docs
            .iter()
            .filter(|d| {
                [
                    "ServiceAccount",
                    "ClusterRole",
                    "ClusterRoleBinding",
                    "Role",
                    "RoleBinding",
                ]
                .contains(&d["kind"].as_str().unwrap_or_default())
            })
            .collect();
        let yaml: String = rbac
            .iter()
            .map(|d| format!("---\n{}", serde_yaml::to_string(d).expect("YAML")))
            .collect();
        let applied =
            heartbeat_e2e::stack::run_with_stdin(stack.kubectl().args(["apply", "-f", "-"]), &yaml);
        assert!(applied.0, "{}\n{}", applied.1, applied.2);
        let name = format!("{release}-heartbeat-operator");
        let sa = format!("system:serviceaccount:{}:{name}", op.name);
        let checks = [
            ("get", "secrets", granted.name.as_str(), true),
            ("get", "secrets", unrelated.name.as_str(), !namespaced),
            ("list", "secrets", granted.name.as_str(), false),
            ("watch", "secrets", granted.name.as_str(), false),
            ("list", "secrets", op.name.as_str(), false),
            ("create", "mutatingwebhookconfigurations", "default", false),
            (
                "patch",
                &format!("mutatingwebhookconfigurations/{name}"),
                "default",
                true,
            ),
            (
                "patch",
                "mutatingwebhookconfigurations/another",
                "default",
                false,
            ),
        ];
        let wrong: Vec<String> = checks
            .iter()
            .filter(|(verb, res, ns, want)| may(stack, &sa, verb, res, ns) != *want)
            .map(|(verb, res, ns, want)| format!("{verb} {res} -n {ns}: want {want}"))
            .collect();
        for kind in ["clusterrolebinding", "clusterrole"] {
            for n in [name.clone(), format!("{name}-secrets")] {
                let _ = run(stack.kubectl().args([
                    "delete",
                    kind,
                    &n,
                    "--ignore-not-found",
                    "--wait=false",
                ]));
            }
        }
        assert!(wrong.is_empty(), "namespaced={namespaced}: {wrong:#?}");
    }
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
pub(super) struct Release<'a> {
    pub(super) stack: &'a Stack,
    pub(super) name: String,
    pub(super) namespace: String,
}

impl Drop for Release<'_> {
    fn drop(&mut self) {
        let _ = run(helm(self.stack).args(["uninstall", &self.name, "-n", &self.namespace]));
    }
}

pub(super) fn json(stack: &Stack, args: &[&str]) -> Value {
    let out = run_ok(stack.kubectl().args(args).args(["-o", "json"]));
    serde_json::from_str(&out).expect("kubectl JSON")
}

pub(super) fn eventually<V>(what: &str, mut probe: impl FnMut() -> Result<V, String>) -> V {
    let start = Instant::now();
    loop {
        match probe() {
            Ok(v) => return v,
            Err(last) if start.elapsed() > T => panic!("{what}: not within {T:?}; last: {last}"),
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// `helm install` of the chart as `release` in its namespace, for the
/// monitors labelled `heartbeat.dev/operator=<release>` and the namespaces
/// labelled `heartbeat.dev/injection=<release>`, with `sets`; waits until
/// its pods are Ready.
pub(super) fn install(stack: &Stack, release: &Release<'_>, sets: &[&str]) {
    let injection = format!("injection.namespaceLabel.value={}", release.name);
    let monitor_selector = format!("monitorSelector=heartbeat.dev/operator={}", release.name);
    let mut cmd = helm(stack);
    cmd.args(["install", &release.name, &chart(), "-n", &release.namespace]);
    for set in [injection.as_str(), monitor_selector.as_str()]
        .iter()
        .chain(sets)
    {
        cmd.args(["--set", set]);
    }
    run_ok(cmd.args(["--wait", "--timeout", "180s"]));
}

/// The release's operator pods that are not being deleted.
pub(super) fn operator_pods(stack: &Stack, release: &Release<'_>) -> Vec<Value> {
    let label = format!("app.kubernetes.io/instance={}", release.name);
    let pods = json(
        stack,
        &["get", "pods", "-n", &release.namespace, "-l", &label],
    );
    pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .cloned()
        .collect()
}

fn pod_names(pods: &[Value]) -> Vec<String> {
    pods.iter()
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
        .collect()
}

/// The release's leader Lease (its holderIdentity is a pod name).
pub(super) fn lease(stack: &Stack, release: &Release<'_>) -> Value {
    let name = format!("{}-heartbeat-operator", release.name);
    json(stack, &["get", "lease", &name, "-n", &release.namespace])
}

pub(super) fn holder(lease: &Value) -> String {
    lease["spec"]["holderIdentity"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// A monitor whose sidecars sign: each gets its pod's key through the API
/// server's proxy to the chart's Service (the way sidecars take in a cluster).
fn signing(monitor: MonitorBuilder) -> MonitorBuilder {
    monitor.signing()
}

/// Opts `app` in for `release`: its broker Secret, a monitor `app` on
/// `topic` (Stale after 21 s of silence: the rule of its callers is that
/// nothing alarms, and a loaded machine has held the broker for 10 s) with
/// `spec` changing it, and a 2-replica Deployment `worker`, waited for
/// until both pods are injected.
pub(super) fn deploy_workers(
    stack: &Stack,
    release: &Release<'_>,
    app: &TestNamespace,
    topic: &str,
    spec: impl FnOnce(MonitorBuilder) -> MonitorBuilder,
) {
    run_ok(stack.kubectl().args([
        "label",
        "namespace",
        &app.name,
        &format!("heartbeat.dev/injection={}", release.name),
    ]));
    app.create_broker_secret(&stack.kafka_bootstrap);
    let label = ("heartbeat.dev/operator".to_string(), release.name.clone());
    let monitor = MonitorBuilder::new("app", topic, (2, 15))
        .labelled(&label)
        .selecting_app("worker");
    app.apply_monitor(&spec(monitor).build());
    // Each replica's webhook decides from its own cache: wait until every
    // one of them injects (a dry run through the Service reaches only one).
    let replicas = operator_pods(stack, release);
    assert!(
        !replicas.is_empty(),
        "no operator pod of {} to ask",
        release.name
    );
    for pod in replicas {
        eventually("every replica's webhook injects a worker pod", || {
            replica_injects(stack, release, &pod, &app.name)
        });
    }
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
    // Admitted with the sidecar: every replica injects by now, so a pod
    // without it is either a call the API server could not complete (a
    // timeout under load: it logs failing open, naming the Service) and is
    // recreated once, as the PodsWithoutSidecar Event advises, or a webhook
    // that answered without injecting, which fails.
    let service = format!(
        "{}-heartbeat-operator.{}.svc",
        release.name, release.namespace
    );
    let mut recreated: Vec<String> = Vec::new();
    eventually(
        "the API server called the webhook through the Service",
        || {
            let pods = json(stack, &["get", "pods", "-n", &app.name, "-l", "app=worker"]);
            let mut injected = 0;
            for p in pods["items"].as_array().into_iter().flatten() {
                if !p["metadata"]["deletionTimestamp"].is_null() {
                    continue;
                }
                let has_sidecar = p["spec"]["initContainers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["name"] == "heartbeat");
                let name = p["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                if has_sidecar {
                    injected += 1;
                    continue;
                }
                assert!(
                    !recreated.contains(&name)
                        && failed_open_calls(stack, &service) > recreated.len(),
                    "{name} was admitted without the sidecar, though every replica injected a dry run \
                     and the API server logged no failed call to {service} for it"
                );
                println!(
                    "recreating {name}: the API server's call to {service} failed (it failed open)"
                );
                run_ok(stack.kubectl().args([
                    "delete",
                    "pod",
                    &name,
                    "-n",
                    &app.name,
                    "--wait=false",
                ]));
                recreated.push(name);
            }
            (injected == 2)
                .then_some(())
                .ok_or(format!("{injected} of 2 injected"))
        },
    );
}

/// How many webhook calls to `service` the API server logged as failed
/// (and so admitted the pod unchanged, `failurePolicy: Ignore`).
fn failed_open_calls(stack: &Stack, service: &str) -> usize {
    let log = std::fs::read_to_string(stack.layout.log_file("kube-apiserver")).unwrap_or_default();
    log.lines()
        .filter(|l| l.contains("failing open") && l.contains(service))
        .count()
}

/// Whether the webhook of operator pod `pod` (called on its own, through
/// the API server's pod proxy, as the API server calls it) injects a pod
/// labelled `app: worker` in namespace `app`.
fn replica_injects(
    stack: &Stack,
    release: &Release<'_>,
    pod: &Value,
    app: &str,
) -> Result<(), String> {
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let port = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["ports"].as_array().into_iter().flatten())
        .find(|p| p["name"] == "webhook")
        .and_then(|p| p["containerPort"].as_u64())
        .ok_or(format!("{name} has no webhook port"))?;
    let review = serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": format!("replica-probe-{name}"),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": app,
            "operation": "CREATE",
            "dryRun": true,
            "userInfo": {"username": "replica-probe"},
            "object": {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"generateName": "replica-probe-", "namespace": app, "labels": {"app": "worker"}},
                "spec": {"containers": [{"name": "app", "image": "demo/worker"}]}
            }
        }
    });
    let path = format!(
        "/api/v1/namespaces/{}/pods/https:{name}:{port}/proxy/mutate",
        release.namespace
    );
    let (ok, out, err) = heartbeat_e2e::stack::run_with_stdin(
        stack.kubectl().args(["create", "--raw", &path, "-f", "-"]),
        &review.to_string(),
    );
    if !ok {
        return Err(format!("{name}: {err}"));
    }
    let answer: Value = serde_json::from_str(&out).map_err(|e| format!("{name}: {e}: {out}"))?;
    let response = &answer["response"];
    // kube's AdmissionResponse writes the patch as an array of bytes (which
    // the API server's JSON decoder takes as well as base64).
    let patched = response["patch"].as_array().is_some_and(|p| !p.is_empty())
        || response["patch"].as_str().is_some_and(|p| !p.is_empty());
    (response["allowed"] == true && patched)
        .then_some(())
        .ok_or(format!("{name} did not inject: {answer}"))
}

/// The status of monitor `app` in `app`.
pub(super) fn app_status(app: &TestNamespace) -> HeartbeatMonitorStatus {
    app.monitor_status("app")
}

/// The `HeartbeatStale` Events of namespace `ns`, one line each: when,
/// which replica, what (empty when there is none).
fn stale_events(stack: &Stack, ns: &str) -> String {
    run_ok(stack.kubectl().args([
        "get",
        "events",
        "-n",
        ns,
        "--field-selector",
        "reason=HeartbeatStale",
        "-o",
        "jsonpath={range .items[*]}{.eventTime} {.reportingInstance}: {.message}{\"\\n\"}{end}",
    ]))
}

/// Rule: `helm install` runs the operator in-cluster as the real thing: its
/// pods run on the process node as their ServiceAccount (token mounted),
/// become Ready and elect a leader; the API server calls the webhook
/// through the Service (the sidecar appears in a labelled Deployment's
/// pods), each sidecar gets its pod's signing key through the API server's
/// proxy to the Service's `keys` port (the monitor signs), and the leader
/// reports them Up. `helm upgrade` with a changed
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
    install(stack, &release, &["leaderElection.leaseDurationSeconds=6"]);

    // Two Ready operator pods on the process node, as the chart's ServiceAccount.
    let items = operator_pods(stack, &release);
    assert_eq!(items.len(), 2, "{items:#?}");
    for p in &items {
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
    let names = pod_names(&items);
    let holder = eventually("a leader holds the Lease", || {
        let lease = lease(stack, &release);
        let h = holder(&lease);
        names.contains(&h).then_some(h).ok_or(format!("{lease:#}"))
    });
    assert!(!holder.is_empty());

    // A labelled namespace, its broker Secret, a monitor and a Deployment.
    let topic = TestTopic::create(&stack.kafka_bootstrap, "chart").await;
    deploy_workers(stack, &release, &app, &topic.name, signing);
    let up2 = |what: &str| {
        eventually(what, || {
            let s = app_status(&app);
            (s.up == 2 && s.expected == 2)
                .then_some(())
                .ok_or(format!("{s:#?}"))
        })
    };
    up2("kubectl get hbm shows UP 2");

    // An upgrade with a changed value rolls both pods; status stays.
    let before = names;
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
        let now = pod_names(&operator_pods(stack, &release));
        (now.len() == 2 && now.iter().all(|n| !before.contains(n)))
            .then_some(())
            .ok_or(format!("{now:?}"))
    });
    let status = app_status(&app);
    assert_eq!(
        status.expected, 2,
        "status lost in the upgrade: {status:#?}"
    );
    up2("still UP 2 under the new leader");
    let stale_events = stale_events(stack, &app.name);
    assert!(
        stale_events.trim().is_empty(),
        "a Stale Event across the upgrade:\n{stale_events}\nstatus: {:#?}",
        app_status(&app)
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

/// Rule: in the in-cluster install (2 replicas), deleting the leader's pod
/// hands the Lease to another replica within one lease duration of the old
/// leader giving it up (released on SIGTERM, or expired), and the new
/// leader rebuilds its state from the topic: throughout, every member stays
/// expected and none is Stale, no `HeartbeatStale` Event is emitted, and
/// under the new leader status advances with every member Up. No dip: a
/// new leader keeps the status it found while it reads the topic back (up
/// to 30 s, then members show Unknown, Ready=False `CatchingUp`), and this
/// topic is read back in far less, so no poll sees a member not Up.
#[tokio::test]
async fn deleting_the_leader_pod_hands_over_within_a_lease_without_a_flap() {
    const LEASE_SECS: u64 = 6;
    /// The test's own kubectl polls of the Lease, on a loaded machine: how
    /// late this test may see the hand-over after the fact.
    const POLL_SLACK: Duration = Duration::from_secs(2);
    let stack = Stack::get();
    install_crds(stack);
    let ops = TestNamespace::create(stack, "chart-ha-ops");
    let app = TestNamespace::create(stack, "chart-ha-app");
    let release = Release {
        stack,
        name: format!("r{}", heartbeat_e2e::unique_suffix()),
        namespace: ops.name.clone(),
    };
    install(
        stack,
        &release,
        &[
            "replicaCount=2",
            &format!("leaderElection.leaseDurationSeconds={LEASE_SECS}"),
        ],
    );
    let names = pod_names(&operator_pods(stack, &release));
    assert_eq!(names.len(), 2, "{names:?}");
    let topic = TestTopic::create(&stack.kafka_bootstrap, "chart-ha").await;
    deploy_workers(stack, &release, &app, &topic.name, signing);
    // Never an alarm nor a lost member; true once both are Up.
    let steady = |s: &HeartbeatMonitorStatus| {
        assert_eq!(s.stale, 0, "a Stale member: {s:#?}");
        assert_eq!(s.expected, 2, "a member lost: {s:#?}");
        s.up == 2
    };
    eventually("UP 2", || {
        let s = app_status(&app);
        (s.up == 2 && s.expected == 2)
            .then_some(())
            .ok_or(format!("{s:#?}"))
    });
    let leader = eventually("a leader holds the Lease", || {
        let lease = lease(stack, &release);
        let h = holder(&lease);
        names.contains(&h).then_some(h).ok_or(format!("{lease:#}"))
    });

    run_ok(
        stack
            .kubectl()
            .args(["delete", "pod", &leader, "-n", &ops.name, "--wait=false"]),
    );
    let deleted_at = jiff::Timestamp::now();
    // When the Lease stopped naming the deleted pod as its live holder
    // (released, or its last renewal expired), then who holds it next.
    let mut given_up: Option<Instant> = None;
    // Polls that saw a member not Up, and the first such status: a new
    // leader keeps the status it found while it replays (up to 30 s; this
    // topic replays in far less), so there must be none: no dip.
    let mut not_up = 0u32;
    let mut first_dip: Option<HeartbeatMonitorStatus> = None;
    let deadline = Instant::now() + T;
    let new_leader = loop {
        assert!(Instant::now() < deadline, "no new leader within {T:?}");
        let lease = lease(stack, &release);
        let h = holder(&lease);
        let renewed: Option<jiff::Timestamp> = lease["spec"]["renewTime"]
            .as_str()
            .and_then(|t| t.parse().ok());
        let expired = renewed.is_none_or(|t| {
            jiff::Timestamp::now() > t + jiff::SignedDuration::from_secs(LEASE_SECS as i64)
        });
        if h != leader || expired {
            given_up.get_or_insert_with(Instant::now);
        }
        if !h.is_empty() && h != leader {
            break h;
        }
        let s = app_status(&app);
        if !steady(&s) {
            not_up += 1;
            first_dip.get_or_insert(s);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let waited = given_up.map(|at| at.elapsed()).unwrap_or_default();
    let lease_duration = Duration::from_secs(LEASE_SECS);
    assert!(
        waited <= lease_duration + POLL_SLACK,
        "{new_leader} took the Lease {waited:?} after {leader} gave it up (lease {LEASE_SECS}s)"
    );
    let who = if names.contains(&new_leader) {
        "the other replica"
    } else {
        "the deleted pod's replacement"
    };
    println!(
        "hand-over: {leader} -> {new_leader} ({who}), {waited:?} after the Lease was given up"
    );
    let live = pod_names(&operator_pods(stack, &release));
    assert!(
        live.contains(&new_leader) && new_leader != leader,
        "the Lease went to {new_leader}, not a live replica: {live:?}"
    );

    // The new leader writes: status advances past the deletion, never a flap.
    eventually("status advances under the new leader, UP 2", || {
        let s = app_status(&app);
        let up = steady(&s);
        if !up {
            not_up += 1;
            first_dip.get_or_insert(s.clone());
        }
        let advanced =
            last_beat(&s).is_some_and(|t| t > deleted_at + jiff::SignedDuration::from_secs(1));
        (up && advanced).then_some(()).ok_or(format!("{s:#?}"))
    });
    assert_eq!(
        not_up, 0,
        "polls saw a member not Up across the hand-over (a dip); the first: {first_dip:#?}"
    );
    // A whole Stale window (21 s) and then some for a late alarm to show.
    let quiet = Instant::now();
    while quiet.elapsed() < Duration::from_secs(25) {
        steady(&app_status(&app));
        std::thread::sleep(Duration::from_secs(1));
    }
    let stale = stale_events(stack, &app.name);
    assert!(
        stale.trim().is_empty(),
        "a Stale Event across the hand-over:\n{stale}\nstatus: {:#?}",
        app_status(&app)
    );
}

/// Rule (issue 25): the operator starts as a new user starts it without a
/// restart nobody caused. Two replicas start together (the chart's
/// defaults and probes), a monitor covering a 2-replica Deployment and two
/// programs outside the cluster (one beating every 2 s) follow within
/// seconds, and for a minute, while the replicas elect a leader, serve
/// admission reviews and read the topic, no operator or sidecar container
/// restarts and none of their liveness probes fails: the restart guard of
/// both namespaces (the process node's `Unhealthy` and `Killing` Events and
/// the pods' restart counts). Runs `HB_STARTUP_RUNS` times in a row (2 by
/// default; the issue's evidence is 10).
#[tokio::test]
async fn two_replicas_starting_with_a_monitor_and_external_programs_never_restart() {
    let runs: u32 = std::env::var("HB_STARTUP_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let stack = Stack::get();
    install_crds(stack);
    for run_no in 1..=runs {
        let ops = TestNamespace::create(stack, "chart-start-ops");
        let app = TestNamespace::create(stack, "chart-start-app");
        let release = Release {
            stack,
            name: format!("r{}", heartbeat_e2e::unique_suffix()),
            namespace: ops.name.clone(),
        };
        let topic = TestTopic::create(&stack.kafka_bootstrap, "chart-start").await;
        let _fast = ExternalProgram::start(&stack.kafka_bootstrap, &topic.name, "ext-fast", 2);
        let _slow = ExternalProgram::start(&stack.kafka_bootstrap, &topic.name, "ext-slow", 5);
        install(stack, &release, &[]);
        deploy_workers(stack, &release, &app, &topic.name, |m| {
            m.expecting(&["ext-fast", "ext-slow"])
        });
        eventually("UP 4: two pods and two external programs", || {
            let s = app_status(&app);
            (s.up == 4 && s.expected == 4)
                .then_some(())
                .ok_or(format!("{s:#?}"))
        });
        // Three liveness periods of the chart (10 s each) and then some:
        // long enough for a probe failure to reach its threshold.
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(40) {
            let found = heartbeat_e2e::restart_guard::check(stack, &ops.name, &[])
                .into_iter()
                .chain(heartbeat_e2e::restart_guard::check(stack, &app.name, &[]))
                .collect::<Vec<_>>();
            assert!(found.is_empty(), "run {run_no}: {}", found.join("\n"));
            std::thread::sleep(Duration::from_secs(2));
        }
        println!("run {run_no} of {runs}: no restart, no failed liveness probe");
    }
}
