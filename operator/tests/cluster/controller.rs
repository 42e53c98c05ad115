//! The controller on the real stack: the real operator binary (as its
//! least-privilege ServiceAccount) consumes the beats of injected pods and
//! of external programs from the real Kafka, judges every member and writes
//! HeartbeatMonitor status, Events and metrics. Each test has its own
//! operator (monitors carry its `monitor_label()`), namespace and topic.
//!
//! Timing of the monitors: a beat every 2 s, Stale after 3 missed beats
//! plus 3 s of grace (9 s of silence) where a test waits for Stale, plus
//! 15 s (21 s) where the rule is that nothing alarms: a loaded 2-core
//! machine has been seen to hold a broker's produce requests for 10 s. Tests never assert on speed: every
//! wait is a poll with a generous timeout ([`T`]); a rule that must hold
//! throughout is checked on every poll.

use std::time::{Duration, Instant};

use heartbeat_crds::HeartbeatMonitorStatus;
use heartbeat_crds::conditions::{FALSE, HEALTHY, INJECTED, READY, TRUE, UNKNOWN, reason};
use heartbeat_crds::monitor::{MaintenanceWindow, MemberState};
use heartbeat_e2e::kafka::{
    ExternalProgram, Grants, kafka_principal, kafka_principal_named, kcat_produce, produce_history,
};
use heartbeat_e2e::kube_env::install_crds;
use heartbeat_e2e::monitor::{
    MonitorBuilder, condition_is, condition_message, condition_reason, last_beat, member,
    member_absent_or, member_is,
};
use heartbeat_e2e::operator::{Network, OperatorOptions, OperatorProcess};
use heartbeat_e2e::stack::run;
use heartbeat_e2e::status::eventually;
use heartbeat_e2e::{PrivateKafka, Stack, TestNamespace, TestTopic};
use serde_json::Value;

/// The injected sidecar container, as the restart guard names it.
const SIDECAR: &str = heartbeat_crds::sidecar_contract::CONTAINER_NAME;
const BIN: &str = env!("CARGO_BIN_EXE_heartbeat-operator");
/// The bound of every wait: generous, a slow machine is not a failure.
const T: Duration = Duration::from_secs(120);
/// The Stale window of the tolerant monitors (21 s) and then some: how long
/// a "nothing bad happens" check watches.
const QUIET: Duration = Duration::from_secs(25);
/// Grace of the monitors that must go Stale (9 s of silence) and of those
/// whose rule is that nothing alarms (21 s).
const GRACE_SECS: u64 = 3;
const TOLERANT_GRACE_SECS: u64 = 15;
/// The monitors' timing.
const INTERVAL_SECS: u64 = 2;
const REJECTED: &str = "heartbeat_operator_beats_rejected_total";
const WRITES: &str = "heartbeat_operator_status_writes_total";
const LEADER: &str = "heartbeat_operator_leader";

/// One test's world: its operator, a topic, and a namespace the operator
/// injects, holding the broker Secret.
struct Case {
    stack: &'static Stack,
    op: OperatorProcess,
    topic: TestTopic,
    ns: TestNamespace,
    bootstrap: String,
}

impl Case {
    /// A fresh operator on the stack's broker.
    async fn start(prefix: &str) -> Case {
        let stack = Stack::get();
        install_crds(stack);
        let op = OperatorProcess::start(stack, BIN.as_ref());
        Case::with(stack, op, &stack.kafka_bootstrap, prefix).await
    }

    /// A case around `op`, with its topic and broker Secret on `bootstrap`.
    async fn with(
        stack: &'static Stack,
        op: OperatorProcess,
        bootstrap: &str,
        prefix: &str,
    ) -> Case {
        let topic = TestTopic::create(bootstrap, prefix).await;
        let ns = TestNamespace::create(stack, prefix);
        op.enable_injection(&ns);
        ns.create_broker_secret(bootstrap);
        Case {
            stack,
            op,
            topic,
            ns,
            bootstrap: bootstrap.to_string(),
        }
    }

    /// Monitor `name` on the case's topic, labelled for its operator, with
    /// the short timing (Stale after 9 s of silence).
    fn monitor(&self, name: &str) -> MonitorBuilder {
        self.monitor_with_grace(name, GRACE_SECS)
    }

    /// [`Case::monitor`] with a Stale window of 21 s, for tests whose rule
    /// is that nothing alarms: on a loaded 2-core machine the broker has
    /// been seen to hold every producer back for 10 s, which is a real
    /// silence on the topic, not what these tests are about.
    fn tolerant_monitor(&self, name: &str) -> MonitorBuilder {
        self.monitor_with_grace(name, TOLERANT_GRACE_SECS)
    }

    fn monitor_with_grace(&self, name: &str, grace: u64) -> MonitorBuilder {
        MonitorBuilder::new(name, &self.topic.name, (INTERVAL_SECS, grace))
            .labelled(&self.op.monitor_label())
    }

    /// Applies `monitor`; one over pods is waited for until the webhook,
    /// which decides from its cache, injects for it (a monitor of external
    /// programs needs no webhook).
    fn apply(&self, monitor: MonitorBuilder) {
        let app = monitor.selected_app();
        self.ns.apply_monitor(&monitor.build());
        if let Some(app) = app {
            self.ns.wait_injects_app(&app, T);
        }
    }

    /// Waits until the operator has `want` (Kafka clients, consumer tasks).
    fn wait_clients_and_tasks(&self, what: &str, want: (f64, f64)) {
        let gauge = |name: &str| self.op.metric_value(name, &[]).unwrap_or(-1.0);
        eventually(what, T, || {
            let got = (
                gauge("heartbeat_operator_consumers"),
                gauge("heartbeat_operator_tasks"),
            );
            (got == want)
                .then_some(())
                .ok_or(format!("(clients, tasks) {got:?}"))
        });
    }

    /// Bare demo-worker pods (app=ingest) named `names`, waited for until Running.
    fn run_pods(&self, names: &[&str]) {
        for name in names {
            self.ns.apply(&format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{app: ingest}}}}\n\
                 spec: {{terminationGracePeriodSeconds: 5, containers: [{{name: app, image: demo/worker}}]}}\n"
            ));
        }
        for name in names {
            self.ns.wait_pod_phase(name, "Running", T);
        }
    }

    /// The names of the pods labelled app=ingest.
    fn ingest_pods(&self) -> Vec<String> {
        self.ns
            .kubectl(&[
                "get",
                "pods",
                "-l",
                "app=ingest",
                "-o",
                "jsonpath={.items[*].metadata.name}",
            ])
            .split_whitespace()
            .map(str::to_string)
            .collect()
    }

    /// Monitor `name`'s status (Null before the first write).
    fn status(&self, monitor: &str) -> HeartbeatMonitorStatus {
        self.ns.monitor_status(monitor)
    }

    /// Polls the status until `done` holds; returns it. `done` may assert
    /// what must hold on every poll. Panics after [`T`] with what was seen.
    fn wait_status(
        &self,
        monitor: &str,
        what: &str,
        done: impl Fn(&HeartbeatMonitorStatus) -> bool,
    ) -> HeartbeatMonitorStatus {
        eventually(&format!("{monitor}: {what}"), T, || {
            let status = self.status(monitor);
            if done(&status) {
                Ok(status)
            } else {
                Err(self.report(Some(&status)))
            }
        })
    }

    /// Polls the status for `how_long`; panics the first time `holds` does not.
    fn status_holds(
        &self,
        monitor: &str,
        how_long: Duration,
        what: &str,
        holds: impl Fn(&HeartbeatMonitorStatus) -> bool,
    ) {
        let end = Instant::now() + how_long;
        while Instant::now() < end {
            let status = self.status(monitor);
            assert!(
                holds(&status),
                "{monitor}: {what}: broken\n{}",
                self.report(Some(&status))
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The Events (events.k8s.io/v1) of the case's namespace with `reason`.
    fn events_with_reason(&self, reason: &str) -> Vec<Value> {
        let json = self
            .ns
            .kubectl(&["get", "events.events.k8s.io", "-o", "json"]);
        let list: Value = serde_json::from_str(&json).expect("event list json");
        list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["reason"] == reason)
            .cloned()
            .collect()
    }

    /// Waits for an Event `reason` regarding HeartbeatMonitor `monitor` whose note names `pod`.
    fn wait_event(&self, monitor: &str, reason: &str, pod: &str) -> Value {
        let what = format!("a {reason} Event regarding {monitor} naming {pod}");
        eventually(&what, T, || {
            self.events_with_reason(reason)
                .into_iter()
                .find(|e| {
                    e["regarding"]["kind"] == "HeartbeatMonitor"
                        && e["regarding"]["name"] == monitor
                        && e["note"].as_str().is_some_and(|n| n.contains(pod))
                })
                .ok_or_else(|| self.report(Some(&self.status(monitor))))
        })
    }

    /// Asserts that no `HeartbeatStale` Event exists in the namespace.
    fn assert_no_stale_event(&self) {
        let stale = self.events_with_reason("HeartbeatStale");
        assert!(
            stale.is_empty(),
            "unexpected HeartbeatStale Events: {stale:#?}\n{}",
            self.report(None)
        );
    }

    /// SIGSTOPs the heartbeat sidecar of `pod` (its whole process group); returns its pid.
    fn freeze_sidecar(&self, pod: &str) -> i32 {
        self.ns.expect_restarts(
            SIDECAR,
            "frozen with SIGSTOP: its liveness probe fails and the node restarts it",
        );
        let pid = self.stack.container_pid(&self.ns.name, pod, "heartbeat");
        assert!(signal(&format!("-{pid}"), "STOP"), "SIGSTOP {pid}");
        pid
    }

    /// What a failure shows: the status, the Events, the pods and the operator's log.
    fn report(&self, status: Option<&HeartbeatMonitorStatus>) -> String {
        let events = run(self.stack.kubectl().args([
            "get",
            "events.events.k8s.io",
            "-n",
            &self.ns.name,
            "-o",
            "jsonpath={range .items[*]}{.reason}: {.note}{\"\\n\"}{end}",
        ]))
        .1;
        let pods =
            run(self
                .stack
                .kubectl()
                .args(["get", "pods", "-n", &self.ns.name, "-o", "wide"]))
            .1;
        format!(
            "status: {status:#?}\nevents:\n{events}\npods:\n{pods}\noperator log (tail):\n{}",
            self.op.log_tail(40)
        )
    }
}

/// Resumes a frozen sidecar (a no-op if the kubelet restarted it meanwhile).
fn thaw_sidecar(pid: i32) {
    signal(&format!("-{pid}"), "CONT");
}

/// `kill -<sig> -- <target>` (a negative target is a process group).
pub(super) fn signal(target: &str, sig: &str) -> bool {
    run(std::process::Command::new("kill").args([&format!("-{sig}"), "--", target])).0
}

/// A column of the one-row `kubectl get` table `table`.
fn column<'a>(table: &'a str, name: &str) -> Option<&'a str> {
    let mut lines = table.lines();
    let i = lines.next()?.split_whitespace().position(|h| h == name)?;
    lines.next()?.split_whitespace().nth(i)
}

/// Rule: a monitor over a 3-pod Deployment whose injected pods all beat
/// shows expected 3 and up 3 (in `kubectl get hbm` too), Ready=True and
/// Healthy=True.
#[tokio::test]
async fn three_beating_pods_are_up_ready_and_healthy() {
    let case = Case::start("ctl-up").await;
    case.apply(case.tolerant_monitor("ingest").selecting_app("ingest"));
    case.ns.deploy_workers("ingest", 3);
    let status = case.wait_status("ingest", "expected 3, up 3, Ready and Healthy", |s| {
        s.expected == 3
            && s.up == 3
            && condition_is(s, READY, TRUE)
            && condition_is(s, HEALTHY, TRUE)
    });
    assert_eq!(status.stale, 0, "{status:#?}");
    eventually("`kubectl get hbm` shows EXPECTED 3, UP 3", T, || {
        let table = case.ns.kubectl(&["get", "hbm", "ingest"]);
        let shown = (column(&table, "EXPECTED"), column(&table, "UP"));
        (shown == (Some("3"), Some("3"))).then_some(()).ok_or(table)
    });
}

/// Rule: a member silent for interval*missed+grace (its pod still Running)
/// is Stale, with a `HeartbeatStale` Event regarding the monitor that names
/// the pod; when it beats again it is Up, with a `HeartbeatRecovered` Event.
#[tokio::test]
async fn a_frozen_sidecar_goes_stale_with_an_event_and_recovers_with_one() {
    let case = Case::start("ctl-stale").await;
    case.apply(case.monitor("ingest").selecting_app("ingest"));
    case.run_pods(&["steady", "frozen"]);
    case.wait_status("ingest", "up 2", |s| s.up == 2);
    let pid = case.freeze_sidecar("frozen");
    // The sidecar's livenessProbe restarts a frozen sidecar after about 30 s,
    // far past the 9 s Stale window.
    let status = case.wait_status("ingest", "stale 1, up 1", |s| s.stale == 1 && s.up == 1);
    assert!(
        member_is(&status, "frozen", MemberState::Stale),
        "the frozen pod is not listed Stale: {status:#?}"
    );
    case.wait_event("ingest", "HeartbeatStale", "frozen");
    thaw_sidecar(pid);
    case.wait_status("ingest", "up 2 again", |s| s.up == 2 && s.stale == 0);
    case.wait_event("ingest", "HeartbeatRecovered", "frozen");
}

/// Rule: a sidecar stopped with SIGTERM says so in a last `stopping` beat:
/// no alarm (stale stays 0, no `HeartbeatStale` Event); once the process
/// node restarts it (a native sidecar) the member is Up again.
#[tokio::test]
async fn a_sigtermed_sidecar_raises_no_alarm_and_comes_back_up() {
    let case = Case::start("ctl-term").await;
    case.apply(case.tolerant_monitor("ingest").selecting_app("ingest"));
    case.ns.deploy_workers("ingest", 3);
    case.wait_status("ingest", "up 3", |s| s.up == 3);
    let pod = case.ingest_pods().remove(0);
    let restarts =
        "{.status.initContainerStatuses[?(@.name==\"heartbeat\")].restartCount}".to_string();
    let before = case
        .ns
        .kubectl(&["get", "pod", &pod, "-o", &format!("jsonpath={restarts}")]);
    case.ns
        .expect_restarts(SIDECAR, "stopped with SIGTERM by the test");
    let pid = case.stack.container_pid(&case.ns.name, &pod, "heartbeat");
    assert!(signal(&pid.to_string(), "TERM"), "SIGTERM {pid}");
    case.ns
        .wait_jsonpath(&format!("pod/{pod}"), &restarts, T, |n| *n != before);
    case.wait_status("ingest", "up 3 again, never stale", |s| {
        assert_eq!(s.stale, 0, "{s:#?}");
        s.up == 3
    });
    case.status_holds("ingest", QUIET, "never stale", |s| s.stale == 0);
    case.assert_no_stale_event();
}

/// Rule: pods removed on purpose (a deleted pod, a Deployment scaled down)
/// leave the monitor without an alarm: expected follows the pods, no member
/// is Stale, no `HeartbeatStale` Event.
#[tokio::test]
async fn deleted_and_scaled_down_pods_leave_without_an_alarm() {
    let case = Case::start("ctl-scale").await;
    case.apply(case.tolerant_monitor("ingest").selecting_app("ingest"));
    case.ns.deploy_workers("ingest", 3);
    case.run_pods(&["extra"]);
    case.wait_status("ingest", "expected 4, up 4", |s| {
        s.expected == 4 && s.up == 4
    });
    let never_stale = |s: &HeartbeatMonitorStatus| {
        assert_eq!(s.stale, 0, "{s:#?}");
    };
    case.ns.kubectl(&["delete", "pod", "extra", "--wait=false"]);
    case.wait_status("ingest", "expected 3 after the delete", |s| {
        never_stale(s);
        s.expected == 3 && s.up == 3
    });
    case.ns
        .kubectl(&["scale", "deployment", "ingest", "--replicas=2"]);
    case.wait_status("ingest", "expected 2 after scaling down", |s| {
        never_stale(s);
        s.expected == 2 && s.up == 2
    });
    case.status_holds("ingest", QUIET, "never stale", |s| s.stale == 0);
    case.assert_no_stale_event();
}

/// Rule: an injected Job's pod that completes (app exits 0, then its
/// sidecar stops) raises no alarm: its member is Stopped or gone, never
/// Stale, and there is no `HeartbeatStale` Event.
#[tokio::test]
async fn a_completed_job_pod_is_stopped_not_stale() {
    let case = Case::start("ctl-job").await;
    case.apply(case.tolerant_monitor("ingest").selecting_app("ingest"));
    case.ns.apply(
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
      containers: [{name: work, image: demo/job, env: [{name: JOB_SECONDS, value: "6"}]}]
"#,
    );
    case.ns
        .wait_jsonpath("job/batch", "{.status.succeeded}", T, |s| s == "1");
    let pod = case.ingest_pods().remove(0);
    case.wait_status(
        "ingest",
        "the job's beats seen, its member stopped or gone",
        |s| {
            assert_eq!(s.stale, 0, "{s:#?}");
            last_beat(s).is_some() && s.up == 0 && member_absent_or(s, &pod, MemberState::Stopped)
        },
    );
    case.status_holds("ingest", QUIET, "never stale", |s| {
        s.stale == 0 && member_absent_or(s, &pod, MemberState::Stopped)
    });
    case.assert_no_stale_event();
}

/// Rule: a program outside the cluster beating in OpenMSIStream's own
/// format (naive UTC timestamp, a float counter) is tracked and Up; an
/// expected program that never beats is Stale, and each silent program has
/// a `HeartbeatStale` Event of its own naming it (not one folded series).
#[tokio::test]
async fn an_openmsistream_program_is_up_and_a_silent_expected_one_is_stale() {
    let case = Case::start("ctl-ext").await;
    let uploaders = ["lab-uploader-1", "lab-uploader-2", "lab-uploader-3"];
    case.apply(case.monitor("lab").expecting(&uploaders));
    let _uploader = ExternalProgram::start(
        &case.bootstrap,
        &case.topic.name,
        "lab-uploader-1",
        INTERVAL_SECS,
    );
    let status = case.wait_status("lab", "uploader 1 Up, uploaders 2 and 3 Stale", |s| {
        s.up == 1
            && s.stale == 2
            && member_absent_or(s, "lab-uploader-1", MemberState::Up)
            && member_is(s, "lab-uploader-2", MemberState::Stale)
    });
    assert!(last_beat(&status).is_some(), "{status:#?}");
    case.wait_event("lab", "HeartbeatStale", "program lab-uploader-2 ");
    case.wait_event("lab", "HeartbeatStale", "program lab-uploader-3 ");
}

/// Rule (issue 20): monitors reading different topics through the same
/// broker settings share one Kafka client (one task per topic): threads
/// and memory grow with brokers, not topics. Each topic's beats reach only
/// its monitors, and a monitor deleted and made again on its topic reads
/// it again through the shared client (the stopping task released its
/// partitions first) while the other topic goes on.
#[tokio::test]
async fn monitors_on_different_topics_through_the_same_brokers_share_one_client() {
    let case = Case::start("ctl-share").await;
    let other = TestTopic::create(&case.bootstrap, "ctl-share-b").await;
    let monitor_b = || {
        let b = MonitorBuilder::new("b", &other.name, (INTERVAL_SECS, TOLERANT_GRACE_SECS));
        case.apply(b.labelled(&case.op.monitor_label()).expecting(&["lab-b"]));
    };
    case.apply(case.tolerant_monitor("a").expecting(&["lab-a"]));
    monitor_b();
    let _a = ExternalProgram::start(&case.bootstrap, &case.topic.name, "lab-a", INTERVAL_SECS);
    let _b = ExternalProgram::start(&case.bootstrap, &other.name, "lab-b", INTERVAL_SECS);
    let only = |program: &'static str| {
        move |s: &HeartbeatMonitorStatus| s.up == 1 && member_absent_or(s, program, MemberState::Up)
    };
    case.wait_status("a", "lab-a alone Up", only("lab-a"));
    case.wait_status("b", "lab-b alone Up", only("lab-b"));
    let gauge = |name: &str| case.op.metric_value(name, &[]).unwrap_or(-1.0);
    let (clients, tasks) = (
        gauge("heartbeat_operator_consumers"),
        gauge("heartbeat_operator_tasks"),
    );
    assert_eq!((clients, tasks), (1.0, 2.0), "(clients, tasks)");

    case.ns.kubectl(&["delete", "hbm", "b"]);
    case.wait_clients_and_tasks("b's task stopped, the client kept", (1.0, 1.0));
    monitor_b();
    case.wait_status("b", "lab-b Up again on the shared client", only("lab-b"));
    case.status_holds("a", Duration::from_secs(5), "lab-a still Up", only("lab-a"));
    assert_eq!(gauge("heartbeat_operator_consumers"), 1.0);
    case.assert_no_stale_event();
}

/// Rule: malformed messages on the topic (not JSON, no timestamp, a key
/// without `_heartbeat`, an oversized value) are rejected and counted by
/// reason in `heartbeat_operator_beats_rejected_total`, never a crash; a
/// pod beating on the same topic stays Up.
#[tokio::test]
async fn malformed_messages_are_counted_by_reason_and_crash_nothing() {
    let mut case = Case::start("ctl-bad").await;
    case.apply(case.tolerant_monitor("ingest").selecting_app("ingest"));
    case.run_pods(&["steady"]);
    case.wait_status("ingest", "up 1", |s| s.up == 1);
    let topic = case.topic.name.clone();
    let by_topic = [("topic", topic.as_str())];
    let before = case.op.metric_sum(REJECTED, &by_topic);
    let now = jiff::Timestamp::now().to_string();
    let big = format!(
        r#"{{"timestamp": "{now}", "padding": "{}"}}"#,
        "x".repeat(100 * 1024)
    );
    let bad = [
        ("lab-bad-1_heartbeat", "this is not json".to_string()),
        (
            "lab-bad-2_heartbeat",
            r#"{"n_messages_read": 3}"#.to_string(),
        ),
        ("lab-bad-3", format!(r#"{{"timestamp": "{now}"}}"#)),
        ("lab-bad-4_heartbeat", big),
    ];
    for (key, value) in &bad {
        kcat_produce(&case.bootstrap, &topic, key, value).unwrap_or_else(|e| panic!("{e}"));
    }
    let want = before + bad.len() as f64;
    eventually("the rejections counted", T, || {
        let samples = case.op.metrics();
        if heartbeat_e2e::metrics::sum(&samples, REJECTED, &by_topic) >= want {
            Ok(())
        } else {
            let rejected: Vec<_> = samples.iter().filter(|s| s.name == REJECTED).collect();
            Err(format!("{rejected:?}\n{}", case.report(None)))
        }
    });
    // Counted once each: give a double count the time to show.
    std::thread::sleep(Duration::from_secs(2 * INTERVAL_SECS));
    let samples = case.op.metrics();
    let rejected: Vec<_> = samples
        .iter()
        .filter(|s| s.matches(REJECTED, &by_topic) && s.value > 0.0)
        .collect();
    let total: f64 = rejected.iter().map(|s| s.value).sum();
    assert_eq!(total, want, "{rejected:?}");
    let mut reasons: Vec<&str> = rejected
        .iter()
        .filter_map(|s| s.labels.get("reason").map(String::as_str))
        .collect();
    reasons.sort_unstable();
    reasons.dedup();
    assert!(reasons.len() >= 2, "one reason for all: {rejected:?}");
    assert!(
        case.op.is_running(),
        "the operator died:\n{}",
        case.op.log()
    );
    let status = case.wait_status("ingest", "up 1 after the bad messages", |s| {
        s.up == 1 && s.stale == 0
    });
    for (key, _) in &bad {
        let id = key.trim_end_matches("_heartbeat");
        assert!(
            member(&status, id).is_none(),
            "{id} became a member: {status:#?}"
        );
    }
}

/// Rule: while the operator cannot read the topic (its broker down past the
/// tolerance window) members are Unknown, never Stale, and Ready=False names
/// the broker; with the broker back they are Up again, and no
/// `HeartbeatStale` Event was emitted.
///
/// The broker is a private one, so other tests keep theirs. The stack's
/// network namespace (pods, and an operator run there) has no route to
/// another stack, so the operator runs on the host and the member is an
/// external program beating with kcat.
#[tokio::test]
async fn a_broker_outage_makes_members_unknown_never_stale() {
    let stack = Stack::get();
    install_crds(stack);
    let kafka = PrivateKafka::start();
    let options = OperatorOptions {
        network: Network::Host,
        ..OperatorOptions::default()
    };
    let op = OperatorProcess::start_with(stack, BIN.as_ref(), options);
    let case = Case::with(stack, op, &kafka.bootstrap, "ctl-outage").await;
    case.apply(case.tolerant_monitor("lab").expecting(&["lab-uploader-1"]));
    let _uploader = ExternalProgram::start(
        &kafka.bootstrap,
        &case.topic.name,
        "lab-uploader-1",
        INTERVAL_SECS,
    );
    case.wait_status("lab", "up 1, Ready", |s| {
        s.up == 1 && condition_is(s, READY, TRUE)
    });
    let never_stale = |s: &HeartbeatMonitorStatus| assert_eq!(s.stale, 0, "{s:#?}");
    kafka.stop_broker();
    let broker_host = kafka.bootstrap.rsplit_once(':').map_or("", |(h, _)| h);
    let status = case.wait_status("lab", "unknown, Ready=False naming the broker", |s| {
        never_stale(s);
        s.unknown > 0
            && condition_is(s, READY, FALSE)
            && condition_message(s, READY).contains(broker_host)
    });
    assert_eq!(status.up, 0, "{status:#?}");
    // Down well past the Stale window.
    case.status_holds("lab", QUIET, "unknown, never stale", |s| {
        s.stale == 0 && s.unknown > 0
    });
    kafka.start_broker();
    case.wait_status("lab", "up 1 and Ready again", |s| {
        never_stale(s);
        s.up == 1 && s.unknown == 0 && condition_is(s, READY, TRUE)
    });
    case.assert_no_stale_event();
}

/// Rule: on the broker's SASL_SSL listener, a wrong SCRAM password and then
/// a CA that did not sign the broker's certificate each make the monitor
/// `Ready=False` naming the cause, and no Secret value, while its members
/// are Unknown, never Stale; with the right password and CA it reads again
/// and no `HeartbeatStale` Event was emitted, nor after a password rotated
/// on the broker and then in the Secret. The tenant's principal has
/// the README's consumer ACLs (the operator consumes with its Secret here).
#[tokio::test]
async fn a_wrong_password_or_an_untrusted_ca_makes_members_unknown_never_stale() {
    let stack = Stack::get();
    install_crds(stack);
    let op = OperatorProcess::start(stack, BIN.as_ref());
    let case = Case::with(stack, op, &stack.kafka_bootstrap, "ctl-sasl").await;
    let checkpoints = "heartbeat-operator.checkpoints".to_string();
    let grants = Grants {
        write: vec![checkpoints.clone()],
        read: vec![case.topic.name.clone(), checkpoints],
        groups: vec!["heartbeat-operator".into()],
    };
    let tenant = kafka_principal(stack.layout.root(), "tenant", &grants);
    let password = tenant.get("sasl.password").to_string();
    let ca = tenant.get("ssl.ca.location").to_string();
    case.ns.kubectl(&[
        "create",
        "secret",
        "generic",
        "kafka-sasl",
        &format!(
            "--from-literal=bootstrap.servers={}",
            tenant.get("bootstrap.servers")
        ),
        "--from-literal=security.protocol=SASL_SSL",
        "--from-literal=sasl.mechanisms=SCRAM-SHA-512",
        &format!(
            "--from-literal=sasl.username={}",
            tenant.get("sasl.username")
        ),
        &format!("--from-literal=sasl.password={password}"),
        &format!("--from-file=ssl.ca.pem={ca}"),
    ]);
    case.apply(
        case.tolerant_monitor("lab")
            .broker_secret("kafka-sasl")
            .expecting(&["lab-uploader-1"]),
    );
    // The program beats on the PLAINTEXT listener: only the operator's
    // reading goes through SASL_SSL.
    let _uploader = ExternalProgram::start(
        &case.bootstrap,
        &case.topic.name,
        "lab-uploader-1",
        INTERVAL_SECS,
    );
    let up = |what: &str| {
        case.wait_status("lab", what, |s| {
            s.stale == 0 && s.up == 1 && s.unknown == 0 && condition_is(s, READY, TRUE)
        })
    };
    up("up 1 and Ready over SASL_SSL");
    let patch = |key: &str, value: &str| {
        let data = serde_json::json!({ "stringData": { key: value } }).to_string();
        case.ns
            .kubectl(&["patch", "secret", "kafka-sasl", "--type=merge", "-p", &data]);
    };
    let refused = |what: &str, cause: &str, planted: &str| {
        let status = case.wait_status("lab", what, |s| {
            assert_eq!(s.stale, 0, "a member went Stale: {s:#?}");
            s.unknown > 0
                && condition_is(s, READY, FALSE)
                && condition_message(s, READY).contains(cause)
        });
        let message = condition_message(&status, READY).to_string();
        for secret in [password.as_str(), planted] {
            assert!(
                !message.contains(secret),
                "Ready shows a Secret value: {message}"
            );
        }
        case.status_holds("lab", QUIET, "unknown, never stale", |s| {
            s.stale == 0 && s.unknown > 0
        });
    };
    let wrong = "wrong-password-5150";
    patch("sasl.password", wrong);
    refused(
        "Ready=False naming the SASL failure",
        "SASL authentication",
        wrong,
    );
    patch("sasl.password", &password);
    up("up again with the right password");

    // A CA of its own, which signed nothing the broker shows.
    let other = tempfile_dir("sasl-ca");
    heartbeat_testbed::pki::self_signed_ca(&other, "/CN=not-the-stack-ca").expect("the other CA");
    let untrusted = std::fs::read_to_string(other.join("ca.crt")).expect("the other CA");
    patch("ssl.ca.pem", &untrusted);
    refused(
        "Ready=False naming the certificate",
        "certificate verify failed",
        wrong,
    );
    patch(
        "ssl.ca.pem",
        &std::fs::read_to_string(&ca).expect("the stack's CA"),
    );
    up("up again with the stack's CA");

    // A rotation: the broker takes a new password (the old one stops
    // working at once), then the Secret follows.
    let rotated = kafka_principal_named(stack.layout.root(), tenant.get("sasl.username"), &grants);
    assert_ne!(rotated.get("sasl.password"), password);
    // The client already open stays authenticated; a new one must use the
    // new password, so the rotation counts once a client was opened since.
    let opened = || case.op.log().matches("opened a Kafka client").count();
    let before = opened();
    patch("sasl.password", rotated.get("sasl.password"));
    eventually("a client opened with the rotated Secret", T, || {
        (opened() > before)
            .then_some(())
            .ok_or_else(|| "none yet".to_string())
    });
    up("up with the rotated password");
    case.status_holds("lab", QUIET, "up with the rotated password", |s| {
        s.stale == 0 && s.up == 1 && s.unknown == 0 && condition_is(s, READY, TRUE)
    });
    case.assert_no_stale_event();
    let _ = std::fs::remove_dir_all(&other);
}

/// A new empty directory under the system's temp dir.
fn tempfile_dir(prefix: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("{prefix}-{}", heartbeat_e2e::unique_suffix()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Rule: an operator that restarts rebuilds its state from the topic
/// (its checkpoint, or a replay) instead of starting blind: through a
/// SIGKILL and a pause longer than the Stale window, the members that
/// kept beating are never Stale, and a program that went silent before
/// the kill is Stale in the first Ready status the new process writes. An
/// operator that did not read the topic back would count that silence
/// from its own start and call it Stale only a whole window later.
#[tokio::test]
async fn a_restarted_operator_declares_no_one_stale() {
    const QUIET_PROGRAM: &str = "lab-quiet";
    let mut case = Case::start("ctl-restart").await;
    case.apply(
        case.tolerant_monitor("ingest")
            .selecting_app("ingest")
            .expecting(&[QUIET_PROGRAM]),
    );
    case.run_pods(&["one", "two"]);
    let quiet = ExternalProgram::start(
        &case.bootstrap,
        &case.topic.name,
        QUIET_PROGRAM,
        INTERVAL_SECS,
    );
    case.wait_status("ingest", "up 3", |s| s.up == 3);
    drop(quiet);
    let silent_since = Instant::now();
    case.op.kill();
    // Until the silent program's Stale deadline has passed (its last beat
    // is at most `silent_since`): the topic alone now shows it Stale.
    let stale_window = Duration::from_secs(3 * INTERVAL_SECS + TOLERANT_GRACE_SECS);
    let past_deadline = stale_window + Duration::from_secs(INTERVAL_SECS);
    std::thread::sleep(past_deadline.saturating_sub(silent_since.elapsed()));
    case.op.restart();
    let by_monitor = [("namespace", case.ns.name.as_str()), ("monitor", "ingest")];
    let pods_never_stale = |s: &HeartbeatMonitorStatus| {
        assert!(
            s.stale <= 1
                && (s.members.iter())
                    .filter(|m| m.state == MemberState::Stale)
                    .all(|m| m.program_id == QUIET_PROGRAM),
            "a pod that kept beating is Stale: {s:#?}"
        );
    };
    let first = case.wait_status("ingest", "the new process's first Ready status", |s| {
        pods_never_stale(s);
        case.op.metric_sum(WRITES, &by_monitor) > 0.0 && condition_is(s, READY, TRUE)
    });
    assert!(
        member_is(&first, QUIET_PROGRAM, MemberState::Stale) && first.up == 2 && first.stale == 1,
        "the new process did not rebuild its state: {}",
        case.report(Some(&first))
    );
    case.status_holds("ingest", QUIET, "the pods never stale", |s| {
        pods_never_stale(s);
        s.up == 2
    });
    let stale = case.events_with_reason("HeartbeatStale");
    assert!(
        stale.iter().all(|e| e["note"]
            .as_str()
            .is_some_and(|n| n.contains(QUIET_PROGRAM))),
        "a HeartbeatStale Event for a member that kept beating: {stale:#?}"
    );
}

/// Rule (issue 20): a new leader starts from the checkpoint of each
/// monitor's table and replays only what came after it, so its time to a
/// correct status does not grow with the history kept: the topic holds
/// 200,000 beats (far more than the debug operator replays in 5 s), and
/// the restarted operator reads only what came after its checkpoint and
/// writes a correct status within 5 s of leading.
#[tokio::test]
async fn a_restarted_operator_with_a_checkpoint_replays_only_what_came_after_it() {
    const HISTORY: usize = 200_000;
    const CONSUMED: &str = "heartbeat_operator_beats_consumed_total";
    const WRITTEN: &str = "heartbeat_operator_checkpoints_written_total";
    const RESTORED: &str = "heartbeat_operator_checkpoints_restored_total";
    let mut case = Case::start("ctl-checkpoint").await;
    // Programs of no monitor here: each is read, judged and refused.
    produce_history(&case.bootstrap, &case.topic.name, HISTORY);
    case.apply(case.tolerant_monitor("ingest").selecting_app("ingest"));
    case.run_pods(&["one"]);
    let read = |op: &OperatorProcess| op.metric_sum(CONSUMED, &[]) + op.metric_sum(REJECTED, &[]);
    case.wait_status("ingest", "up 1 after the whole history", |s| {
        s.up == 1 && read(&case.op) >= HISTORY as f64
    });
    eventually("a checkpoint written", T, || {
        let n = case.op.metric_sum(WRITTEN, &[]);
        (n > 0.0).then_some(()).ok_or(format!("{WRITTEN}: {n}"))
    });
    case.op.restart();
    eventually("the new process leads", T, || {
        (case.op.metric_value(LEADER, &[]) == Some(1.0))
            .then_some(())
            .ok_or_else(|| case.op.log_tail(20))
    });
    let leading = Instant::now();
    let by_monitor = [("namespace", case.ns.name.as_str()), ("monitor", "ingest")];
    eventually(
        "a correct status from the new process within 5 s of leading",
        Duration::from_secs(5),
        || {
            let s = case.status("ingest");
            let written = case.op.metric_sum(WRITES, &by_monitor) > 0.0;
            (written && s.up == 1 && condition_is(&s, READY, TRUE))
                .then_some(())
                .ok_or_else(|| case.report(Some(&s)))
        },
    );
    let took = leading.elapsed();
    assert_eq!(
        case.op.metric_sum(RESTORED, &[]),
        1.0,
        "{}",
        case.op.log_tail(30)
    );
    let replayed = read(&case.op);
    assert!(
        replayed < (HISTORY / 10) as f64,
        "the new process read {replayed} messages of a {HISTORY}-beat history (status in {took:?})"
    );
    case.status_holds("ingest", QUIET, "never stale", |s| s.stale == 0);
    case.assert_no_stale_event();
}

/// Rule: of two replicas exactly one leads (`heartbeat_operator_leader` 1)
/// and only it writes status; SIGKILL the leader and the other leads within
/// about one lease duration, and status keeps advancing.
#[tokio::test]
async fn one_of_two_replicas_leads_and_the_other_takes_over() {
    const LEASE_SECS: u32 = 6;
    let stack = Stack::get();
    install_crds(stack);
    let options = OperatorOptions {
        lease_duration_seconds: Some(LEASE_SECS),
        ..OperatorOptions::default()
    };
    let op = OperatorProcess::start_with(stack, BIN.as_ref(), options);
    let mut replica = op.start_replica();
    let mut case = Case::with(stack, op, &stack.kafka_bootstrap, "ctl-ha").await;
    case.apply(case.tolerant_monitor("ingest").selecting_app("ingest"));
    case.run_pods(&["steady"]);
    case.wait_status("ingest", "up 1", |s| s.up == 1);

    let leaders = |a: &OperatorProcess, b: &OperatorProcess| {
        [a, b].map(|p| p.metric_value(LEADER, &[]) == Some(1.0))
    };
    let first_leads = eventually("exactly one leader", T, || {
        match leaders(&case.op, &replica) {
            [true, false] => Ok(true),
            [false, true] => Ok(false),
            seen => Err(format!("{LEADER} == 1 on (first, replica): {seen:?}")),
        }
    });
    let (leader, follower) = if first_leads {
        (&case.op, &replica)
    } else {
        (&replica, &case.op)
    };
    let by_monitor = [("namespace", case.ns.name.as_str()), ("monitor", "ingest")];
    let written = leader.metric_sum(WRITES, &by_monitor);
    eventually("the leader's status writes grow", T, || {
        let now = leader.metric_sum(WRITES, &by_monitor);
        (now > written)
            .then_some(())
            .ok_or(format!("{WRITES}: {now}"))
    });
    let follower_writes = follower.metric_sum(WRITES, &[]);
    assert_eq!(follower_writes, 0.0, "the follower wrote status");
    assert_eq!(leaders(&case.op, &replica), [first_leads, !first_leads]);

    let killed_at = jiff::Timestamp::now();
    let survivor = if first_leads {
        case.op.kill();
        &replica
    } else {
        replica.kill();
        &case.op
    };
    let takeover = Duration::from_secs(3 * u64::from(LEASE_SECS));
    eventually("the survivor leads", takeover, || {
        (survivor.metric_value(LEADER, &[]) == Some(1.0))
            .then_some(())
            .ok_or_else(|| survivor.log_tail(40))
    });
    let after = killed_at + jiff::SignedDuration::from_secs(1);
    eventually("status advances after the takeover", T, || {
        let status = case.status("ingest");
        let advanced = last_beat(&status).is_some_and(|t| t > after) && status.up == 1;
        if advanced && survivor.metric_sum(WRITES, &by_monitor) > 0.0 {
            Ok(())
        } else {
            Err(format!("{status:#?}\n{}", survivor.log_tail(40)))
        }
    });
}

/// Rule: a suspended monitor still tracks its members (a frozen sidecar
/// counts as stale) but emits no `HeartbeatStale` Event, and Healthy is
/// not False: status Unknown, reason Suspended.
#[tokio::test]
async fn a_suspended_monitor_tracks_a_frozen_sidecar_without_alarm() {
    silenced_monitor_raises_no_alarm("ctl-suspend", MonitorBuilder::suspended, reason::SUSPENDED)
        .await;
}

/// Rule: inside a maintenance window (one active now) a frozen sidecar
/// counts as stale but no `HeartbeatStale` Event is emitted, and Healthy is
/// not False: status Unknown, reason InMaintenance.
#[tokio::test]
async fn in_a_maintenance_window_a_frozen_sidecar_raises_no_alarm() {
    let now = |m: MonitorBuilder| {
        m.maintenance(MaintenanceWindow {
            schedule: "* * * * *".to_string(),
            duration_minutes: 5,
            time_zone: "Europe/Berlin".to_string(),
        })
    };
    silenced_monitor_raises_no_alarm("ctl-maint", now, reason::IN_MAINTENANCE).await;
}

/// A monitor that `silence` changes: a frozen sidecar is stale in the
/// counts, Healthy is Unknown with reason `why`, and no HeartbeatStale Event.
async fn silenced_monitor_raises_no_alarm(
    prefix: &str,
    silence: impl FnOnce(MonitorBuilder) -> MonitorBuilder,
    why: &str,
) {
    let case = Case::start(prefix).await;
    case.apply(silence(case.monitor("ingest").selecting_app("ingest")));
    case.run_pods(&["steady", "frozen"]);
    case.wait_status("ingest", "up 2", |s| s.up == 2);
    let pid = case.freeze_sidecar("frozen");
    let silenced = |s: &HeartbeatMonitorStatus| {
        assert!(!condition_is(s, HEALTHY, FALSE), "{s:#?}");
        condition_is(s, HEALTHY, UNKNOWN) && condition_reason(s, HEALTHY) == Some(why)
    };
    case.wait_status("ingest", "stale 1, up 1, silenced", |s| {
        s.stale == 1 && s.up == 1 && silenced(s)
    });
    // A Stale window more for a wrong Event to show (the kubelet restarts
    // the frozen sidecar after about 30 s, so this stays well inside).
    case.status_holds("ingest", Duration::from_secs(6), "silenced", silenced);
    case.assert_no_stale_event();
    thaw_sidecar(pid);
}

/// Rule: the operator creates no topics and needs its broker Secret: a
/// missing topic is Ready=False `TopicMissing` with the command to create
/// it, a missing Secret is Ready=False `SecretMissing` naming it; once
/// either exists, the monitor becomes Ready without being touched.
#[tokio::test]
async fn a_missing_topic_or_secret_is_not_ready_with_how_to_fix_it() {
    let case = Case::start("ctl-missing").await;
    let missing = TestTopic::reserve(&case.bootstrap, "ctl-missing");
    let topic = missing.name.clone();
    let monitor = |name: &str, topic: &str, secret: &str| {
        MonitorBuilder::new(name, topic, (INTERVAL_SECS, GRACE_SECS))
            .labelled(&case.op.monitor_label())
            .broker_secret(secret)
            .expecting(&["lab-1"])
    };
    case.apply(monitor("no-topic", &topic, "kafka"));
    case.apply(monitor("no-secret", &case.topic.name, "kafka-later"));
    let status = case.wait_status("no-topic", "Ready=False TopicMissing", |s| {
        condition_reason(s, READY) == Some(reason::TOPIC_MISSING)
    });
    let message = condition_message(&status, READY);
    assert!(
        message.contains("kafka-topics.sh") && message.contains(&topic),
        "{status:#?}"
    );
    assert!(condition_is(&status, READY, FALSE), "{status:#?}");
    let status = case.wait_status("no-secret", "Ready=False SecretMissing", |s| {
        condition_reason(s, READY) == Some(reason::SECRET_MISSING)
    });
    assert!(
        condition_message(&status, READY).contains("kafka-later"),
        "{status:#?}"
    );
    assert_eq!(status.stale, 0, "blind is never Stale: {status:#?}");

    missing.create_now().await;
    case.ns.kubectl(&[
        "create",
        "secret",
        "generic",
        "kafka-later",
        &format!("--from-literal=bootstrap.servers={}", case.bootstrap),
    ]);
    for name in ["no-topic", "no-secret"] {
        case.wait_status(name, "Ready=True once it exists", |s| {
            condition_is(s, READY, TRUE)
        });
    }
}

/// Rule: a rotated broker Secret restarts the consumer with the new
/// settings (still one consumer, members stay Up, no Stale); deleting the
/// monitor stops its consumer and task (the metrics go back to 0) and
/// removes its per-member series.
#[tokio::test]
async fn a_rotated_secret_restarts_the_consumer_and_a_deleted_monitor_leaks_nothing() {
    let case = Case::start("ctl-rotate").await;
    case.apply(case.tolerant_monitor("ingest").selecting_app("ingest"));
    case.run_pods(&["one"]);
    case.wait_status("ingest", "up 1", |s| s.up == 1);
    let gauge = |name: &str| case.op.metric_value(name, &[]).unwrap_or(-1.0);
    assert_eq!(gauge("heartbeat_operator_consumers"), 1.0);
    assert_eq!(gauge("heartbeat_operator_tasks"), 1.0);

    // New settings (same broker, another connection property the consumer
    // takes from a Secret; one outside its allowlist would change nothing):
    // a new consumer.
    let rotated = case.ns.kubectl(&[
        "create",
        "secret",
        "generic",
        "kafka",
        &format!("--from-literal=bootstrap.servers={}", case.bootstrap),
        "--from-literal=security.protocol=plaintext",
        "--dry-run=client",
        "-o",
        "yaml",
    ]);
    case.ns.apply(&rotated);
    eventually("the consumer restarted with the new settings", T, || {
        let log = case.op.log();
        let starts = log.matches("starting a consumer").count();
        let stops = log.matches("stopping the consumer").count();
        (starts >= 2 && stops >= 1)
            .then_some(())
            .ok_or(format!("{starts} starts, {stops} stops"))
    });
    let quiet = Instant::now();
    while quiet.elapsed() < QUIET {
        let s = case.status("ingest");
        assert_eq!(s.stale, 0, "{s:#?}");
        std::thread::sleep(Duration::from_secs(1));
    }
    case.wait_status("ingest", "up 1 on the new consumer", |s| s.up == 1);
    assert_eq!(
        gauge("heartbeat_operator_consumers"),
        1.0,
        "the old consumer leaked"
    );
    assert_eq!(
        gauge("heartbeat_operator_tasks"),
        1.0,
        "the old task leaked"
    );
    case.assert_no_stale_event();

    case.ns.kubectl(&["delete", "hbm", "ingest"]);
    case.wait_clients_and_tasks("the consumer and its task stopped", (0.0, 0.0));
    let left: Vec<String> = case
        .op
        .metrics()
        .iter()
        .filter(|m| m.name == "heartbeat_member_up" || m.name == "heartbeat_member_stale")
        .map(|m| format!("{} {:?}", m.name, m.labels))
        .collect();
    assert!(left.is_empty(), "per-member series left behind: {left:#?}");
}

/// The operator's signing master Secret: its current master (the bytes the
/// keys derive from) and its generation.
fn signing_master(case: &Case) -> Result<(Vec<u8>, u64), String> {
    let (ok, json, err) = run(case.stack.kubectl().args([
        "get",
        "secret",
        "-n",
        case.op.namespace(),
        &format!("{}-signing", case.op.name),
        "-o",
        "json",
    ]));
    if !ok {
        return Err(err);
    }
    let secret: Value = serde_json::from_str(&json).map_err(|e| e.to_string())?;
    use base64::Engine;
    let key = secret["data"]["key"]
        .as_str()
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .ok_or_else(|| format!("no key in {secret:#}"))?;
    let generation = secret["metadata"]["annotations"]["heartbeat.dev/generation"]
        .as_str()
        .and_then(|g| g.parse().ok())
        .ok_or_else(|| format!("no generation in {secret:#}"))?;
    Ok((key, generation))
}

/// The newest beat of `key` on the case's topic read from message `from`
/// on: its value as sent, its signature header, and how many messages
/// were read.
async fn newest_beat(case: &Case, key: &str, from: usize) -> (String, Option<String>, usize) {
    let got = heartbeat_e2e::kafka::read_until(&case.bootstrap, &case.topic.name, T, |r| {
        r.iter()
            .skip(from)
            .any(|m| m.key.as_deref() == Some(key.as_bytes()))
    })
    .await;
    let n = got.len();
    let m = got
        .into_iter()
        .skip(from)
        .rfind(|m| m.key.as_deref() == Some(key.as_bytes()))
        .expect("a beat of the pod");
    let sig = m
        .headers
        .iter()
        .find(|(k, _)| k == heartbeat_crds::signing::HEADER)
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned());
    let value = String::from_utf8(m.value.unwrap_or_default()).expect("a UTF-8 beat");
    (value, sig, n)
}

/// Rule: with `signing: {enabled: true}` each sidecar signs with its own
/// pod's key, which it gets from the operator (through the API server's
/// proxy, proving its pod with a projected token): no key is in the pod
/// spec and the operator writes no Secret in the monitor's namespace.
/// Signed beats keep the members Up. Pod two's beat announcing `stopping`
/// is refused and counted when unsigned, when signed with garbage and when
/// signed with pod one's key (`forged`), and counts only when signed with
/// pod two's own key. A pod's genuine signed beat produced again, of this
/// sidecar run or of the run before a restart, is a replay, refused and
/// counted. Two master rotations reach the running sidecars without a
/// restart (each asks again within the refresh period) and raise no alarm.
#[tokio::test]
async fn each_pod_signs_only_for_itself_replays_are_refused_and_rotation_needs_no_restart() {
    let stack = Stack::get();
    install_crds(stack);
    let options = OperatorOptions {
        extra_args: vec!["--signing-key-refresh-seconds=5".into()],
        ..Default::default()
    };
    let op = OperatorProcess::start_with(stack, BIN.as_ref(), options);
    let case = Case::with(stack, op, &stack.kafka_bootstrap, "ctl-sign").await;
    // Stale only after 90 s: pod two's sidecar is frozen for a while below.
    case.apply(
        case.monitor_with_grace("ingest", 90)
            .selecting_app("ingest")
            .signing(),
    );
    let (first, generation) = eventually("the operator makes its master Secret", T, || {
        signing_master(&case)
    });
    assert_eq!(generation, 1);
    case.run_pods(&["one", "two"]);
    case.wait_status("ingest", "up 2 with signed beats", |s| s.up == 2);
    let secrets = case.ns.kubectl(&["get", "secrets", "-o", "name"]);
    assert_eq!(
        secrets.trim(),
        "secret/kafka",
        "a Secret made in the tenant's namespace"
    );
    let pod_json = case.ns.kubectl(&["get", "pod", "two", "-o", "json"]);
    assert!(
        !pod_json.contains(&hex::encode(&first)),
        "the master is in the pod spec"
    );
    let uid = |pod: &str| {
        case.ns
            .kubectl(&["get", "pod", pod, "-o", "jsonpath={.metadata.uid}"])
    };
    let (uid_one, uid_two) = (uid("one"), uid("two"));
    for (pod, u) in [("one", &uid_one), ("two", &uid_two)] {
        let key = hex::encode(heartbeat_crds::signing::pod_key(&first, u));
        assert!(
            !case
                .ns
                .kubectl(&["get", "pod", pod, "-o", "json"])
                .contains(&key),
            "a pod key in the pod spec"
        );
    }

    // Pod two's beat saying it stops, without its sidecar's run fields
    // (so a genuine one is no replay), in four signings, while its sidecar
    // is frozen (so a believed one would stay believed).
    let program_two = format!("{}.two", case.ns.name);
    let key_two = format!("{program_two}_heartbeat");
    let (sent, sig, _) = newest_beat(&case, &key_two, 0).await;
    assert!(sig.is_some(), "the sidecar's beats are signed");
    case.ns
        .expect_restarts(SIDECAR, "frozen with SIGSTOP: its liveness probe fails");
    let frozen = case.stack.container_pid(&case.ns.name, "two", "heartbeat");
    assert!(signal(&frozen.to_string(), "STOP"), "SIGSTOP {frozen}");
    let mut beat: Value = serde_json::from_str(&sent).expect("beat json");
    let obj = beat.as_object_mut().expect("beat object");
    obj.remove("seq");
    obj.remove("sidecar");
    obj.insert("phase".into(), "stopping".into());
    obj.insert(
        "timestamp".into(),
        jiff::Timestamp::now().to_string().into(),
    );
    let fake = beat.to_string();
    let signed_by = |uid: &str| {
        let k = heartbeat_crds::signing::pod_key(&first, uid);
        heartbeat_crds::signing::sign(&k, key_two.as_bytes(), fake.as_bytes())
    };
    let garbage = format!("v1={}", "ab".repeat(32));
    let with_ones_key = signed_by(&uid_one);
    let produce = |headers: &[(&str, &str)]| {
        heartbeat_e2e::kafka::kcat_produce_with_headers(
            &case.bootstrap,
            &case.topic.name,
            &key_two,
            &fake,
            headers,
        )
        .expect("produce")
    };
    let by = |reason| case.op.metric_sum(REJECTED, &[("reason", reason)]);
    produce(&[]);
    produce(&[("heartbeat-signature", garbage.as_str())]);
    produce(&[("heartbeat-signature", with_ones_key.as_str())]);
    eventually("unsigned and two forged counted", T, || {
        let seen = (by("unsigned"), by("forged"));
        (seen.0 >= 1.0 && seen.1 >= 2.0)
            .then_some(())
            .ok_or(format!("{seen:?}"))
    });
    // Late is allowed (two is frozen); Stopped (a believed forgery) is not.
    case.status_holds("ingest", Duration::from_secs(5), "not stopped", |s| {
        s.up + s.late == 2 && s.stopped == 0
    });
    // Signed with its own key, the same beat counts: it was the key.
    produce(&[("heartbeat-signature", signed_by(&uid_two).as_str())]);
    case.wait_status("ingest", "two stopped by its own signed beat", |s| {
        s.stopped == 1
    });
    assert!(signal(&frozen.to_string(), "CONT"), "SIGCONT {frozen}");
    case.wait_status("ingest", "two up again with its next beat", |s| s.up == 2);

    // Pod one's own signed beat produced again (same run, old seq), then,
    // after its sidecar restarted (a new run), a signed beat of the earlier
    // run produced again: both replays, refused and counted.
    let key_one = format!("{}.one_heartbeat", case.ns.name);
    let replays = || {
        ["replayed", "signed_beat_skewed"]
            .iter()
            .map(|r| case.op.metric_sum(REJECTED, &[("reason", r)]))
            .sum::<f64>()
    };
    let (earlier, earlier_sig, read) = newest_beat(&case, &key_one, 0).await;
    let earlier_sig = earlier_sig.expect("signed");
    for expect in [1.0, 2.0] {
        if expect == 2.0 {
            let restarts = "{.status.initContainerStatuses[?(@.name==\"heartbeat\")].restartCount}";
            let before =
                case.ns
                    .kubectl(&["get", "pod", "one", "-o", &format!("jsonpath={restarts}")]);
            case.ns
                .expect_restarts(SIDECAR, "stopped with SIGTERM by the test");
            let pid = case.stack.container_pid(&case.ns.name, "one", "heartbeat");
            assert!(signal(&pid.to_string(), "TERM"), "SIGTERM {pid}");
            case.ns
                .wait_jsonpath("pod/one", restarts, T, |n| *n != before);
            // A beat of the new run read, so the earlier run is the older one.
            let _ = newest_beat(&case, &key_one, read).await;
        }
        let before = replays();
        heartbeat_e2e::kafka::kcat_produce_with_headers(
            &case.bootstrap,
            &case.topic.name,
            &key_one,
            &earlier,
            &[("heartbeat-signature", earlier_sig.as_str())],
        )
        .expect("produce");
        eventually("the replay refused and counted", T, || {
            (replays() >= before + 1.0)
                .then_some(())
                .ok_or(format!("replays {} (before {before})", replays()))
        });
    }
    case.wait_status("ingest", "up 2 after the replays", |s| {
        s.up == 2 && s.stopped == 0
    });

    // Two rotations: after the second, only keys of the last two masters
    // count, so the pods are believed only if they asked again.
    let forged_before = by("forged");
    for (n, request) in [(2u64, "1"), (3, "2")] {
        heartbeat_e2e::stack::run_ok(case.stack.kubectl().args([
            "annotate",
            "secret",
            "-n",
            case.op.namespace(),
            &format!("{}-signing", case.op.name),
            &format!("heartbeat.dev/rotate-signing-key={request}"),
            "--overwrite",
        ]));
        eventually("the master rotated", T, || {
            let (_, g) = signing_master(&case)?;
            (g == n).then_some(()).ok_or(format!("generation {g}"))
        });
        for pod in ["one", "two"] {
            let line = format!("generation={n}");
            case.ns
                .wait_log(pod, "heartbeat", T, |log| log.contains(&line));
        }
    }
    case.status_holds("ingest", QUIET, "both beating across the rotations", |s| {
        s.up + s.late == 2 && s.stale == 0
    });
    assert_eq!(
        by("forged"),
        forged_before,
        "a rotated-out key was still in use"
    );
    case.assert_no_stale_event();
}

/// Rule: with the webhook down (the operator stopped) a covered pod is
/// still created, without the sidecar (failurePolicy Ignore); the operator
/// back counts it as `uninjected` with `Injected=False` saying how to fix
/// it (recreate the pod), never as Stale; recreated, it has the sidecar, is
/// Up, and `Injected` is True again.
#[tokio::test]
async fn pods_created_while_the_webhook_is_down_are_uninjected_until_recreated() {
    let mut case = Case::start("ctl-nohook").await;
    case.apply(case.tolerant_monitor("ingest").selecting_app("ingest"));
    case.op.kill();
    case.run_pods(&["bare"]);
    let containers = case.ns.kubectl(&[
        "get",
        "pod",
        "bare",
        "-o",
        "jsonpath={.spec.initContainers[*].name} {.spec.containers[*].name}",
    ]);
    assert!(!containers.contains("heartbeat"), "injected: {containers}");
    case.op.restart();
    let status = case.wait_status("ingest", "uninjected 1, Injected=False: recreate", |s| {
        let message = condition_message(s, INJECTED);
        s.uninjected == 1
            && condition_is(s, INJECTED, FALSE)
            && message.contains("bare")
            && message.contains("rollout restart")
    });
    assert_eq!(status.stale, 0, "{status:#?}");
    case.ns.kubectl(&["delete", "pod", "bare", "--wait=true"]);
    case.run_pods(&["bare"]);
    case.wait_status("ingest", "recreated: injected and up", |s| {
        s.uninjected == 0 && s.up == 1 && condition_is(s, INJECTED, TRUE)
    });
    case.assert_no_stale_event();
}
