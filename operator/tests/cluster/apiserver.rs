//! The operator through an API server outage: `e2e/stack stop apiserver`,
//! a while down, `e2e/stack start apiserver`. It runs on a stack of its own
//! ([`Stack::alone`]), so stopping that API server disturbs no other test.
//!
//! Members go silent by losing their route to the broker (a blackhole
//! route in the pod's network namespace): the sidecar keeps running and
//! its `/livez` keeps answering, so it stays silent for as long as the test
//! needs. A SIGSTOPped sidecar would not: its livenessProbe restarts it 20
//! to 30 s later, less than the outage and the catch-up after it.
//!
//! Tests never assert on speed: every wait is a poll with a generous
//! timeout ([`T`]); a rule that must hold throughout is checked on every poll.

use std::time::{Duration, Instant};

use heartbeat_crds::HeartbeatMonitorStatus;
use heartbeat_crds::monitor::MemberState;
use heartbeat_e2e::kube_env::install_crds;
use heartbeat_e2e::monitor::{MonitorBuilder, member_is, status_from_json};
use heartbeat_e2e::operator::OperatorProcess;
use heartbeat_e2e::stack::{run, run_ok, stack_command};
use heartbeat_e2e::status::eventually;
use heartbeat_e2e::{Stack, TestNamespace, TestTopic};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_heartbeat-operator");
/// The bound of every wait: generous, a slow machine is not a failure.
const T: Duration = Duration::from_secs(120);
/// A beat every 2 s, Stale after 3 missed beats plus 15 s of grace (21 s
/// of silence): a loaded 2-core machine has been seen to hold the broker's
/// produce requests for 10 s, which must not alarm about the steady pod.
const INTERVAL_SECS: u64 = 2;
const GRACE_SECS: u64 = 15;
const STALE_WINDOW: Duration = Duration::from_secs(3 * INTERVAL_SECS + GRACE_SECS);
/// How long the API server stays down: longer than the Stale window, and
/// than half the operator's default 15 s lease (its leader guard must drop
/// leadership when it cannot confirm its Lease).
const OUTAGE: Duration = Duration::from_secs(26);
const LEADER: &str = "heartbeat_operator_leader";

/// Rule: the operator survives an API server outage longer than its lease
/// and the Stale window: it stops leading while it cannot confirm its Lease,
/// leads again once the API server is back, its watches resume and status
/// catches up (a member that went silent during the outage is Stale, one
/// that was Stale before stays Stale), and every Stale member has exactly
/// one `HeartbeatStale` Event: none repeated by the new leadership, none
/// lost. A monitor and a pod created after the outage are injected (the
/// webhook's cache resumed) and tracked Up.
#[tokio::test]
async fn the_operator_survives_an_api_server_outage_without_duplicate_events() {
    // Stops the API server: a stack of its own.
    let (stack, _alone) = Stack::alone();
    install_crds(stack);
    let op = OperatorProcess::start(stack, BIN.as_ref());
    let topic = TestTopic::create(&stack.kafka_bootstrap, "api-out").await;
    let ns = TestNamespace::create(stack, "api-out");
    op.enable_injection(&ns);
    ns.create_broker_secret(&stack.kafka_bootstrap);
    let mut case = Case { stack, op, ns };
    case.apply_monitor("ingest", &topic.name, "ingest");
    case.run_pods("ingest", &["steady", "before", "during"]);
    case.wait_status("ingest", "up 3", |s| s.up == 3);
    eventually("the operator leads", T, || {
        (case.op.metric_value(LEADER, &[]) == Some(1.0))
            .then_some(())
            .ok_or_else(|| case.op.log_tail(20))
    });

    // Silent before the outage: Stale, with its one Event.
    let _before = case.cut_off("before");
    case.wait_status("ingest", "before is Stale", |s| s.stale == 1 && s.up == 2);
    case.wait_event("ingest", "before");

    case.stack.stop_apiserver();
    let _restart = RestartApiserver(case.stack);
    let down_at = Instant::now();
    // Silent while nobody can write: its Stale comes after the outage.
    let _during = case.cut_off("during");
    let mut lost_lead = false;
    while down_at.elapsed() < OUTAGE {
        assert!(
            case.op.is_running(),
            "the operator exited:\n{}",
            case.op.log_tail(60)
        );
        lost_lead |= case.op.metric_value(LEADER, &[]) == Some(0.0);
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        down_at.elapsed() > STALE_WINDOW,
        "the outage is longer than the Stale window"
    );
    assert!(
        lost_lead,
        "still leading without its Lease after {OUTAGE:?}:\n{}",
        case.op.log_tail(60)
    );
    case.stack.start_apiserver();

    eventually("the operator leads again", T, || {
        assert!(
            case.op.is_running(),
            "the operator exited:\n{}",
            case.op.log_tail(60)
        );
        (case.op.metric_value(LEADER, &[]) == Some(1.0))
            .then_some(())
            .ok_or_else(|| case.op.log_tail(30))
    });
    let status = case.wait_status("ingest", "stale 2 (before, during), up 1 (steady)", |s| {
        s.stale == 2 && s.up == 1
    });
    for pod in ["before", "during"] {
        assert!(
            member_is(&status, pod, MemberState::Stale),
            "{pod} is not listed Stale: {status:#?}"
        );
    }
    case.wait_event("ingest", "during");
    // A few intervals and reconciles more for a repeated Event to show.
    let end = Instant::now() + Duration::from_secs(5 * INTERVAL_SECS);
    while Instant::now() < end {
        case.assert_one_stale_event_each(&["before", "during"]);
        std::thread::sleep(Duration::from_secs(1));
    }

    // A monitor and a pod made after the outage: the webhook's monitor
    // cache (`apply_monitor` waits until it injects) and the controller's
    // watches have resumed.
    case.apply_monitor("late", &topic.name, "late");
    case.run_pods("late", &["late"]);
    case.wait_status("late", "late is Up", |s| s.up == 1 && s.expected == 1);
    case.wait_status("ingest", "still stale 2, up 1", |s| {
        s.stale == 2 && s.up == 1
    });
    case.assert_one_stale_event_each(&["before", "during"]);
    assert!(
        case.op.is_running(),
        "the operator exited:\n{}",
        case.op.log_tail(60)
    );
}

/// The test's world: the stack, its operator and namespace.
struct Case {
    stack: &'static Stack,
    op: OperatorProcess,
    ns: TestNamespace,
}

/// Starts the API server again if this test ends while it is stopped (a
/// failed assertion), so the tests after it find the stack up.
struct RestartApiserver(&'static Stack);

impl Drop for RestartApiserver {
    fn drop(&mut self) {
        // A no-op when it runs; never a panic while unwinding.
        let _ = run(stack_command(self.0.layout.root())
            .env("HB_COMPONENTS", "")
            .args(["start", "apiserver"]));
    }
}

/// A pod's sidecar cut off from the broker; reconnected on drop.
struct CutOff {
    net: String,
    route: String,
}

impl Drop for CutOff {
    fn drop(&mut self) {
        let _ = run(std::process::Command::new("nsenter").arg(&self.net).args([
            "ip",
            "route",
            "del",
            "blackhole",
            &self.route,
        ]));
    }
}

impl Case {
    /// Monitor `name` on `topic` for the pods labelled app=`app`, labelled
    /// for this test's operator.
    fn apply_monitor(&self, name: &str, topic: &str, app: &str) {
        let monitor = MonitorBuilder::new(name, topic, (INTERVAL_SECS, GRACE_SECS))
            .labelled(&self.op.monitor_label())
            .selecting_app(app);
        self.ns.apply_monitor(&monitor.build());
        // The webhook decides from its cache: wait until it has seen the monitor.
        self.ns
            .wait_injectable(&Self::pod_yaml(app, "dry-run-probe"), T);
    }

    fn pod_yaml(app: &str, name: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{app: {app}}}}}\n\
             spec: {{terminationGracePeriodSeconds: 5, containers: [{{name: app, image: demo/worker}}]}}\n"
        )
    }

    /// Bare demo-worker pods labelled app=`app`, waited for until Running.
    fn run_pods(&self, app: &str, names: &[&str]) {
        for name in names {
            self.ns.apply(&Self::pod_yaml(app, name));
        }
        for name in names {
            self.ns.wait_pod_phase(name, "Running", T);
        }
    }

    /// Cuts pod `pod`'s sidecar off from the broker: a blackhole route to
    /// the stack address in the pod's network namespace. Probes from the
    /// node come from the pod network's gateway and still pass.
    fn cut_off(&self, pod: &str) -> CutOff {
        let pid = self.stack.container_pid(&self.ns.name, pod, "heartbeat");
        let addr = self.stack.env.stack_addr.clone().expect("HB_STACK_ADDR");
        let cut = CutOff {
            net: format!("--net=/proc/{pid}/ns/net"),
            route: format!("{addr}/32"),
        };
        run_ok(std::process::Command::new("nsenter").arg(&cut.net).args([
            "ip",
            "route",
            "add",
            "blackhole",
            &cut.route,
        ]));
        cut
    }

    /// Monitor `name`'s status (empty before the first write).
    fn status(&self, monitor: &str) -> HeartbeatMonitorStatus {
        self.ns.monitor_status(monitor)
    }

    /// Polls the status until `done` holds; returns it.
    fn wait_status(
        &self,
        monitor: &str,
        what: &str,
        done: impl Fn(&HeartbeatMonitorStatus) -> bool,
    ) -> HeartbeatMonitorStatus {
        eventually(&format!("{monitor}: {what}"), T, || {
            // While the API server is back but slow to answer, kubectl fails:
            // that is a poll that did not see it yet.
            let (ok, json, err) = run(self
                .ns_kubectl()
                .args(["get", "hbm", monitor, "-o", "json"]));
            if !ok {
                return Err(format!("kubectl: {err}\n{}", self.report(None)));
            }
            let status = status_from_json(&json).map_err(|e| format!("{monitor}: {e}"))?;
            if done(&status) {
                Ok(status)
            } else {
                Err(self.report(Some(&status)))
            }
        })
    }

    fn ns_kubectl(&self) -> std::process::Command {
        let mut cmd = self.stack.kubectl();
        cmd.args(["-n", &self.ns.name]);
        cmd
    }

    /// The `HeartbeatStale` Events (events.k8s.io/v1) whose note names `pod`.
    fn stale_events(&self, pod: &str) -> Vec<Value> {
        let json = self
            .ns
            .kubectl(&["get", "events.events.k8s.io", "-o", "json"]);
        let list: Value = serde_json::from_str(&json).expect("event list json");
        let names_pod = |e: &Value| {
            e["note"]
                .as_str()
                .is_some_and(|n| n.contains(&format!("pod {pod} ")))
        };
        list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["reason"] == "HeartbeatStale" && names_pod(e))
            .cloned()
            .collect()
    }

    /// Waits for the `HeartbeatStale` Event regarding `monitor` naming `pod`.
    fn wait_event(&self, monitor: &str, pod: &str) {
        eventually(&format!("a HeartbeatStale Event naming {pod}"), T, || {
            let found = self.stale_events(pod).into_iter().any(|e| {
                e["regarding"]["kind"] == "HeartbeatMonitor" && e["regarding"]["name"] == monitor
            });
            found
                .then_some(())
                .ok_or_else(|| self.report(Some(&self.status(monitor))))
        });
    }

    /// Each of `pods` has exactly one `HeartbeatStale` Event, not a series
    /// of repeats; the steady pod has none.
    fn assert_one_stale_event_each(&self, pods: &[&str]) {
        for pod in pods {
            let events = self.stale_events(pod);
            let repeats = events
                .iter()
                .filter_map(|e| e["series"]["count"].as_u64())
                .sum::<u64>();
            assert!(
                events.len() == 1 && repeats == 0,
                "{pod}: want one HeartbeatStale Event, not repeated; got {events:#?}\n{}",
                self.report(None)
            );
        }
        let steady = self.stale_events("steady");
        assert!(steady.is_empty(), "steady alarmed: {steady:#?}");
    }

    /// What a failure shows: the status, the Events, the pods and the operator's log.
    fn report(&self, status: Option<&HeartbeatMonitorStatus>) -> String {
        let events = run(self.ns_kubectl().args([
            "get",
            "events.events.k8s.io",
            "-o",
            "jsonpath={range .items[*]}{.reason}: {.note} (series {.series.count}){\"\\n\"}{end}",
        ]))
        .1;
        let pods = run(self.ns_kubectl().args(["get", "pods", "-o", "wide"])).1;
        format!(
            "status: {status:#?}\nevents:\n{events}\npods:\n{pods}\noperator log (tail):\n{}",
            self.op.log_tail(40)
        )
    }
}
