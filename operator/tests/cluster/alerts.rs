//! Alerts end to end: the chart's PrometheusRule, rendered by helm, on the
//! stack's Prometheus (which finds the operator's pods as the chart's
//! ServiceMonitor says) and Alertmanager (which routes the chart's
//! `alertLabels` to a webhook receiver this test runs); promtool's own unit
//! tests of each rule; and the Grafana dashboard's queries on real series.

use std::time::{Duration, Instant};

use heartbeat_e2e::alerts::{AlertReceiver, has_labels};
use heartbeat_e2e::kafka::{ExternalProgram, kcat_produce};
use heartbeat_e2e::kube_env::install_crds;
use heartbeat_e2e::monitor::MonitorBuilder;
use heartbeat_e2e::stack::{repo_dir, run, run_ok};
use heartbeat_e2e::{Stack, TestNamespace, TestTopic};
use serde_json::Value;

use super::chart::{Release, T, app_status, deploy_workers, eventually, install};

const SIDECAR: &str = "heartbeat";

/// Stale 7 s after the last beat (every 2 s, 3 missed, 1 s grace): well
/// before a frozen sidecar's liveness probe restarts it (20-30 s).
fn quick_stale(m: MonitorBuilder) -> MonitorBuilder {
    m.with(|s| s.grace_seconds = 1)
}

/// Waits until `probe` holds on Prometheus (or Alertmanager).
async fn until<V, F, Fut>(what: &str, mut probe: F) -> V
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<V, String>>,
{
    let start = Instant::now();
    loop {
        match probe().await {
            Ok(v) => return v,
            Err(last) if start.elapsed() > T => panic!("{what}: not within {T:?}; last: {last}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// A query's result when it has at least one series.
async fn series(stack: &Stack, expr: &str) -> Result<Vec<Value>, String> {
    let r = stack.prometheus_query(expr).await?;
    if r.is_empty() {
        Err(format!("{expr}: no series"))
    } else {
        Ok(r)
    }
}

/// `kill -<sig> -- -<pgid>`: the container's whole process group.
fn signal_group(pid: i32, sig: &str) {
    super::controller::signal(&format!("-{pid}"), sig);
}

/// Rule: `promtool check rules` accepts the rules the chart renders, and
/// promtool's unit tests (`e2e/alerts/rules.test.yml`) pass: for each alert,
/// the series that fire it (with its labels and text) and the ones that
/// must not (silenced, ready, a leader, a far expiry).
#[test]
fn the_charts_alert_rules_pass_promtool_check_and_its_unit_tests() {
    let stack = Stack::get();
    let dir = tempfile::tempdir().expect("tempdir");
    // The unit tests name this release and namespace.
    let rules = stack.render_alert_rules("rel", "ops");
    std::fs::write(dir.path().join("rules.yml"), rules).expect("write rules");
    let tests = dir.path().join("rules.test.yml");
    std::fs::copy(repo_dir().join("e2e/alerts/rules.test.yml"), &tests).expect("copy tests");
    let (ok, out, err) = run(std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(dir.path().join("rules.yml")));
    assert!(ok, "promtool check rules:\n{out}{err}");
    assert!(out.contains("4 rules found"), "{out}");
    let (ok, out, err) = run(std::process::Command::new("promtool")
        .args(["test", "rules"])
        .arg(&tests));
    assert!(ok, "promtool test rules:\n{out}{err}");
}

/// Rule: a frozen sidecar's member raises `HeartbeatMemberStale`, which
/// reaches the receiver through Alertmanager naming the namespace, monitor
/// and member (and no other member of the monitor), and is resolved once
/// the sidecar thaws. Meanwhile every query of the Grafana dashboard parses
/// and returns series from the operator's scraped metrics.
#[tokio::test]
async fn a_frozen_sidecar_raises_member_stale_at_the_receiver_until_it_thaws() {
    let stack = Stack::get();
    install_crds(stack);
    let ops = TestNamespace::create(stack, "alert-ops");
    let app = TestNamespace::create(stack, "alert-app");
    let release = Release {
        stack,
        name: format!("r{}", heartbeat_e2e::unique_suffix()),
        namespace: ops.name.clone(),
    };
    install(stack, &release, &["leaderElection.leaseDurationSeconds=6"]);
    let _rules = stack.alert_rules(&release.name, &ops.name, &["prometheusRule.staleFor=1s"]);
    let mut receiver = AlertReceiver::bind(stack).await;
    let topic = TestTopic::create(&stack.kafka_bootstrap, "alert").await;
    deploy_workers(stack, &release, &app, &topic.name, quick_stale);
    eventually("UP 2", || {
        let s = app_status(&app);
        (s.up == 2 && s.expected == 2)
            .then_some(())
            .ok_or(format!("{s:#?}"))
    });
    let up = format!("heartbeat_member_up{{namespace=\"{}\"}} == 1", app.name);
    until(
        "Prometheus scrapes both members Up from the leader",
        || async {
            let r = series(stack, &up).await?;
            (r.len() == 2).then_some(()).ok_or(format!("{r:?}"))
        },
    )
    .await;

    // A message that is no beat, so the rejections panel has a series.
    kcat_produce(
        &stack.kafka_bootstrap,
        &topic.name,
        "x_heartbeat",
        "not json",
    )
    .expect("produce a malformed message");
    dashboard_queries_return_series(stack, &app.name, "app").await;

    let pods = run_ok(stack.kubectl().args([
        "get",
        "pods",
        "-n",
        &app.name,
        "-l",
        "app=worker",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ]));
    let pod = pods.trim().to_string();
    app.expect_restarts(SIDECAR, "frozen with SIGSTOP: its liveness probe fails");
    let pid = stack.container_pid(&app.name, &pod, SIDECAR);
    signal_group(pid, "STOP");
    let labels = [
        ("alertname", "HeartbeatMemberStale"),
        ("namespace", app.name.as_str()),
        ("monitor", "app"),
        ("member", pod.as_str()),
    ];
    let firing = receiver.wait_for("firing", &labels, T).await;
    signal_group(pid, "CONT");
    let firing = firing.unwrap_or_else(|e| panic!("{e}\nstatus: {:#?}", app_status(&app)));
    assert_eq!(firing["labels"]["severity"], "page", "{firing:#}");
    let summary = firing["annotations"]["summary"]
        .as_str()
        .unwrap_or_default();
    assert!(
        summary.contains(&pod) && summary.contains(&app.name),
        "{firing:#}"
    );
    receiver
        .wait_for("resolved", &labels, T)
        .await
        .unwrap_or_else(|e| panic!("{e}\nstatus: {:#?}", app_status(&app)));
    let others = [
        ("alertname", "HeartbeatMemberStale"),
        ("namespace", app.name.as_str()),
    ];
    let wrong: Vec<&Value> = receiver
        .received()
        .iter()
        .filter(|a| has_labels(a, &others) && a["labels"]["member"] != pod.as_str())
        .collect();
    assert!(
        wrong.is_empty(),
        "alerts for a member that beat: {wrong:#?}"
    );
}

/// Every query of the chart's Grafana dashboard, its variables set to this
/// monitor, parses and returns at least one series on the stack's Prometheus.
async fn dashboard_queries_return_series(stack: &Stack, namespace: &str, monitor: &str) {
    let path = repo_dir().join("charts/heartbeat-operator/dashboards/heartbeat-operator.json");
    let text = std::fs::read_to_string(&path).expect("read the dashboard");
    let dashboard: Value = serde_json::from_str(&text).expect("dashboard JSON");
    let vars = |q: &str| {
        q.replace("$namespace", namespace)
            .replace("$monitor", monitor)
            .replace("$__range", "5m")
    };
    let mut queries: Vec<String> = dashboard["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter_map(|t| t["expr"].as_str().map(vars))
        .collect();
    // Grafana's `label_values(<series>, <label>)`: the label's values of those series.
    for v in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let Some(q) = v["query"].as_str() else {
            continue;
        };
        if let Some(inner) = q
            .strip_prefix("label_values(")
            .and_then(|r| r.strip_suffix(')'))
            && let Some((selector, label)) = inner.rsplit_once(',')
        {
            queries.push(vars(&format!("group by ({}) ({selector})", label.trim())));
        }
    }
    assert!(queries.len() >= 10, "the dashboard's queries: {queries:#?}");
    for q in &queries {
        until(&format!("the dashboard's {q}"), || series(stack, q)).await;
    }
}

/// Rule: a monitor whose member is Stale raises no alert while it is
/// suspended, nor inside a maintenance window, though Prometheus sees the
/// member Stale and the monitor silenced for longer than the rule's `for`
/// and a few evaluations; once neither holds the alert reaches
/// Alertmanager (so the silences were what kept it away). With no
/// replica left, `HeartbeatOperatorDown` names the operator's namespace.
#[tokio::test]
async fn a_silenced_monitor_raises_no_alert_and_no_replica_raises_operator_down() {
    let stack = Stack::get();
    install_crds(stack);
    let ops = TestNamespace::create(stack, "alert-down-ops");
    let app = TestNamespace::create(stack, "alert-quiet-app");
    let release = Release {
        stack,
        name: format!("r{}", heartbeat_e2e::unique_suffix()),
        namespace: ops.name.clone(),
    };
    install(stack, &release, &["leaderElection.leaseDurationSeconds=6"]);
    let _rules = stack.alert_rules(
        &release.name,
        &ops.name,
        &[
            "prometheusRule.staleFor=1s",
            "prometheusRule.operatorDownFor=4s",
        ],
    );
    let topic = TestTopic::create(&stack.kafka_bootstrap, "alert-quiet").await;
    app.create_broker_secret(&stack.kafka_bootstrap);
    let program = ExternalProgram::start(&stack.kafka_bootstrap, &topic.name, "ext", 1);
    let label = ("heartbeat.dev/operator".to_string(), release.name.clone());
    let monitor = |m: MonitorBuilder| m.labelled(&label).expecting(&["ext"]);
    app.apply_monitor(
        &monitor(MonitorBuilder::new("app", &topic.name, (2, 1)))
            .suspended()
            .build(),
    );
    eventually("ext is Up", || {
        let s = app_status(&app);
        (s.up == 1).then_some(()).ok_or(format!("{s:#?}"))
    });
    // It stops without a last beat: Stale, for good.
    drop(program);

    let ns = app.name.as_str();
    // Stale and silenced in every sample of the last `window` (the rule
    // fires 1 s after a Stale sample; samples and evaluations are 2 s apart).
    let window = Duration::from_secs(12);
    let quiet = format!(
        "min_over_time(heartbeat_member_stale{{namespace=\"{ns}\",member=\"ext\"}}[{w}s]) == 1 \
         and on (namespace, monitor) min_over_time(heartbeat_monitor_alarms_silenced{{namespace=\"{ns}\"}}[{w}s]) == 1 \
         and on (namespace, monitor) count_over_time(heartbeat_member_stale{{namespace=\"{ns}\",member=\"ext\"}}[{w}s]) >= 5",
        w = window.as_secs()
    );
    let no_alert = |phase: &'static str| {
        let quiet = quiet.clone();
        async move {
            let since = Instant::now();
            until(
                &format!("{phase}: Prometheus sees ext Stale and silenced"),
                || async {
                    if since.elapsed() < window {
                        return Err("the window has not passed since the change".into());
                    }
                    series(stack, &quiet).await
                },
            )
            .await;
            let alerts = format!(
                "count_over_time(ALERTS{{alertname=\"HeartbeatMemberStale\",namespace=\"{ns}\"}}[{}s])",
                window.as_secs()
            );
            let r = stack.prometheus_query(&alerts).await.expect("query ALERTS");
            assert!(
                r.is_empty(),
                "{phase}: HeartbeatMemberStale pending or firing: {r:#?}"
            );
            let held = stack
                .alertmanager_alerts(&[("alertname", "HeartbeatMemberStale"), ("namespace", ns)])
                .await
                .expect("Alertmanager's alerts");
            assert!(held.is_empty(), "{phase}: Alertmanager has {held:#?}");
        }
    };
    no_alert("suspended").await;

    // A maintenance window that covers now, the suspension lifted.
    app.apply_monitor(
        &monitor(MonitorBuilder::new("app", &topic.name, (2, 1)))
            .maintenance(heartbeat_crds::monitor::MaintenanceWindow {
                schedule: "* * * * *".into(),
                duration_minutes: 60,
                time_zone: "UTC".into(),
            })
            .build(),
    );
    eventually("the monitor is in its maintenance window", || {
        let s = app_status(&app);
        s.conditions
            .iter()
            .any(|c| c.reason == heartbeat_crds::conditions::reason::IN_MAINTENANCE)
            .then_some(())
            .ok_or(format!("{s:#?}"))
    });
    no_alert("in a maintenance window").await;

    // Neither: the alert reaches Alertmanager.
    app.apply_monitor(&monitor(MonitorBuilder::new("app", &topic.name, (2, 1))).build());
    let stale = [
        ("alertname", "HeartbeatMemberStale"),
        ("namespace", ns),
        ("member", "ext"),
    ];
    until(
        "HeartbeatMemberStale in Alertmanager once unsilenced",
        || async {
            let held = stack.alertmanager_alerts(&stale).await?;
            (!held.is_empty())
                .then_some(())
                .ok_or("none yet".to_string())
        },
    )
    .await;

    // No replica: nobody watches. First Prometheus sees one leader, so the
    // alert below is the scale-down's (absent() holds before discovery too).
    let leader = format!(
        "sum by (namespace) (heartbeat_operator_leader{{namespace=\"{}\"}}) == 1",
        ops.name
    );
    until("Prometheus sees the release's leader", || {
        series(stack, &leader)
    })
    .await;
    let scaled_at = jiff::Timestamp::now();
    let deployment = format!("{}-heartbeat-operator", release.name);
    run_ok(stack.kubectl().args([
        "scale",
        "deployment",
        &deployment,
        "-n",
        &ops.name,
        "--replicas=0",
    ]));
    let down = [
        ("alertname", "HeartbeatOperatorDown"),
        ("namespace", ops.name.as_str()),
    ];
    let held = until("HeartbeatOperatorDown in Alertmanager", || async {
        let held = stack.alertmanager_alerts(&down).await?;
        held.first().cloned().ok_or("none yet".to_string())
    })
    .await;
    assert_eq!(held["labels"]["severity"], "page", "{held:#}");
    let started: jiff::Timestamp = held["startsAt"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no startsAt: {held:#}"));
    assert!(
        started > scaled_at,
        "HeartbeatOperatorDown started at {started}, before the scale-down at {scaled_at}"
    );
}
