//! The decision of one pass, over passes with a fake clock: no cluster,
//! no consumer; a beat is recorded into the table as the consumer would.

use super::*;
use heartbeat_crds::beat::Beat;
use heartbeat_crds::conditions::{FALSE, reason};
use serde_json::json;

use crate::membership::Blind;
use crate::membership::table::{Incoming, Limits, MonitorId, Settings};

fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).expect("valid")
}

/// Program `lab-1` expected; interval 10 s, 3 missed, 5 s grace: Late
/// after 15 s, Stale after 35 s. `extra` is merged into the spec.
fn monitor(extra: serde_json::Value, status: Option<serde_json::Value>) -> HeartbeatMonitor {
    let mut spec = json!({
        "topic": "hb", "intervalSeconds": 10, "missedBeatsTolerated": 3, "graceSeconds": 5,
        "brokerSecretRef": {"name": "kafka"},
        "external": {"expectedPrograms": ["lab-1"]}
    });
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    let mut m = json!({
        "apiVersion": "heartbeat.dev/v1alpha1", "kind": "HeartbeatMonitor",
        "metadata": {"name": "lab", "namespace": "data", "uid": "u-1", "generation": 1},
        "spec": spec,
    });
    if let Some(s) = status {
        m["status"] = s;
    }
    serde_json::from_value(m).expect("monitor")
}

fn reading() -> Readiness {
    Readiness::Reading {
        what: "topic hb on kafka:9092".into(),
        warning: None,
    }
}

fn sighted() -> View {
    View::Sighted {
        since: t(0),
        until: Timestamp::MAX,
    }
}

/// One monitor's state, as `Tracked` holds it, made at t(0).
struct Fixture {
    monitor: HeartbeatMonitor,
    table: Table,
    reported: HashSet<String>,
    written: Option<(Timestamp, HeartbeatMonitorStatus)>,
    /// When this replica began tracking the monitor.
    since: Timestamp,
}

impl Fixture {
    fn new(monitor: HeartbeatMonitor) -> Fixture {
        let limits = Limits {
            history: SignedDuration::from_hours(24),
            seen_retention: SignedDuration::from_secs(600),
            max_seen: 3,
            sidecar_version: "0.2.0".into(),
        };
        let table = Table::new(
            MonitorId {
                namespace: "data".into(),
                name: "lab".into(),
            },
            Settings::from_spec(&monitor.spec, &limits),
            t(0),
        );
        Fixture {
            monitor,
            table,
            reported: HashSet::new(),
            written: None,
            since: t(0),
        }
    }

    /// A beat of `program` at `at`, as the consumer records it.
    fn beat(&mut self, program: &str, at: i64) {
        let mut b = Beat::at(t(at));
        b.program_id = Some(program.into());
        self.table.record(
            &Incoming {
                program_id: program,
                beat: &b.view(),
                broker_time: Some(t(at)),
                position: None,
            },
            t(at),
        );
    }

    /// A pass at `at` that reads the topic; a status to write is written.
    fn pass(&mut self, at: i64) -> Decision {
        self.pass_with(at, sighted(), false, &[])
    }

    fn pass_with(
        &mut self,
        at: i64,
        view: View,
        replaying: bool,
        uninjected: &[String],
    ) -> Decision {
        let readiness = reading();
        let d = decide(
            &mut State {
                table: &mut self.table,
                uninjected_reported: &mut self.reported,
                written: self.written.as_ref(),
                since: self.since,
            },
            Observation {
                monitor: &self.monitor,
                readiness: &readiness,
                view,
                replaying,
                uninjected,
            },
            t(at),
        );
        if let StatusPlan::Desired {
            status,
            write: true,
        } = &d.status
        {
            self.written = Some((t(at), (**status).clone()));
        }
        d
    }
}

fn reasons(d: &Decision) -> Vec<String> {
    d.events.iter().map(|e| e.reason.clone()).collect()
}

fn state_of(d: &Decision, program: &str) -> MemberState {
    d.rows
        .iter()
        .find(|r| r.program_id == program)
        .map(|r| r.state)
        .unwrap_or_else(|| panic!("no member {program}"))
}

#[test]
fn a_member_whose_beats_stop_is_late_then_stale_and_gets_one_heartbeat_stale_event() {
    let mut f = Fixture::new(monitor(json!({}), None));
    f.beat("lab-1", 1);
    let d = f.pass(1);
    assert_eq!(state_of(&d, "lab-1"), MemberState::Up);
    assert!(d.events.is_empty(), "{:?}", reasons(&d));

    let d = f.pass(17);
    assert_eq!(state_of(&d, "lab-1"), MemberState::Late);
    assert!(
        d.events.is_empty(),
        "Late raises no Event: {:?}",
        reasons(&d)
    );

    let d = f.pass(37);
    assert_eq!(state_of(&d, "lab-1"), MemberState::Stale);
    assert_eq!(reasons(&d), ["HeartbeatStale"]);
    let related = d.events[0].secondary.as_ref().expect("related object");
    assert_eq!(related.field_path.as_deref(), Some("status.members{lab-1}"));

    let d = f.pass(60);
    assert!(
        d.events.is_empty(),
        "a second Stale Event: {:?}",
        reasons(&d)
    );
}

#[test]
fn a_suspended_monitor_raises_no_event_but_still_judges_its_members() {
    let mut f = Fixture::new(monitor(json!({"suspend": true}), None));
    f.beat("lab-1", 1);
    f.pass(1);
    let d = f.pass(37);
    assert_eq!(state_of(&d, "lab-1"), MemberState::Stale);
    assert!(d.silenced);
    assert!(d.events.is_empty(), "{:?}", reasons(&d));
}

#[test]
fn while_catching_up_the_status_keeps_what_it_found_and_no_stale_is_declared() {
    // The status a previous leader wrote, and a member silent past its
    // Stale deadline (35 s) while the new leader, leading since 30,
    // replays.
    let found = json!({"conditions": [{
        "type": "Ready", "status": "True", "reason": "Reading", "message": "m",
        "lastTransitionTime": t(0).to_string(),
    }]});
    let mut f = Fixture::new(monitor(json!({}), Some(found)));
    f.since = t(30);
    let catching_up = View::Blind(Blind::CatchingUp {
        from: String::new(),
    });
    let d = f.pass_with(40, catching_up.clone(), true, &[]);
    assert_eq!(d.status, StatusPlan::KeepFound);
    assert_eq!(d.requeue, Duration::from_millis(200));
    assert_ne!(state_of(&d, "lab-1"), MemberState::Stale);
    assert!(d.events.is_empty(), "{:?}", reasons(&d));

    // Past the hold, the replay shows as what it is: Ready False,
    // CatchingUp; still no one Stale.
    let d = f.pass_with(61, catching_up, true, &[]);
    let StatusPlan::Desired { status, write } = d.status else {
        panic!("kept the found status past the hold");
    };
    assert!(write);
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == READY)
        .expect("Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        (FALSE, reason::CATCHING_UP)
    );
    assert_eq!(status.stale, 0);
}

#[test]
fn requeue_is_at_the_next_deadline_when_it_comes_before_the_interval() {
    let mut f = Fixture::new(monitor(json!({}), None));
    f.beat("lab-1", 1);
    f.pass(1);
    // Late at 1 + 15 s, and 100 ms for the consumer to confirm the topic.
    let d = f.pass(10);
    assert_eq!(d.requeue, Duration::from_millis(6_100));
    // Late now; the next deadline (Stale at 36) is past the interval.
    let d = f.pass(17);
    assert_eq!(d.requeue, Duration::from_secs(10));
}

#[test]
fn a_changed_status_waits_for_its_write_slot_unless_ready_changed() {
    let mut f = Fixture::new(monitor(json!({}), None));
    f.beat("lab-1", 1);
    assert!(matches!(
        f.pass(1).status,
        StatusPlan::Desired { write: true, .. }
    ));
    // A pod without the sidecar changes Injected only: held until an
    // interval after the write at 1, and the pass wakes then.
    let d = f.pass_with(5, sighted(), false, &["p1".to_string()]);
    assert!(matches!(d.status, StatusPlan::Desired { write: false, .. }));
    assert_eq!(d.requeue, Duration::from_secs(6));
    // Unreadable: Ready changed, written at once.
    let d = f.pass_with(
        6,
        View::Blind(Blind::Unreadable { why: "x".into() }),
        false,
        &["p1".to_string()],
    );
    assert!(matches!(d.status, StatusPlan::Desired { write: true, .. }));
}

#[test]
fn a_pod_without_the_sidecar_is_reported_once_and_again_only_after_it_left() {
    let mut f = Fixture::new(monitor(json!({}), None));
    let p1 = ["p1".to_string()];
    assert_eq!(
        reasons(&f.pass_with(1, sighted(), false, &p1)),
        [reason::PODS_WITHOUT_SIDECAR]
    );
    assert!(f.pass_with(2, sighted(), false, &p1).events.is_empty());
    f.pass_with(3, sighted(), false, &[]);
    assert_eq!(
        reasons(&f.pass_with(4, sighted(), false, &p1)),
        [reason::PODS_WITHOUT_SIDECAR]
    );
}

#[test]
fn a_new_leader_raises_no_second_stale_event_for_a_member_the_found_status_lists_stale() {
    let found = json!({"members": [{"programId": "lab-1", "state": "Stale"}]});
    let mut f = Fixture::new(monitor(json!({}), Some(found)));
    let d = f.pass(40);
    assert_eq!(state_of(&d, "lab-1"), MemberState::Stale);
    assert!(d.events.is_empty(), "{:?}", reasons(&d));
}
#[test]
fn a_new_leader_trusts_sight_only_since_ready_last_became_true() {
    let at = |s: i64| Timestamp::from_second(1_800_000_000 + s).expect("time");
    let status = |ready: &str, since: i64| -> HeartbeatMonitorStatus {
        serde_json::from_value(json!({"conditions": [{
            "type": "Ready", "status": ready, "reason": "R", "message": "",
            "lastTransitionTime": at(since).to_string(),
        }]}))
        .expect("status")
    };
    assert_eq!(sight_floor(&status("True", 50), at(100)), at(50));
    assert_eq!(sight_floor(&status("False", 50), at(100)), at(100));
    assert_eq!(
        sight_floor(&HeartbeatMonitorStatus::default(), at(100)),
        at(100)
    );
    // A clock ahead of ours is not trusted past our own start.
    assert_eq!(sight_floor(&status("True", 500), at(100)), at(100));
}

/// Rule (issue 20): a change of Ready (caught up, above all) is
/// written at once; anything else waits for the write slot.
#[test]
fn only_a_change_of_ready_skips_the_write_slot() {
    let status = |ready: &str, reason: &str, up: u32| -> HeartbeatMonitorStatus {
        serde_json::from_value(json!({"up": up, "conditions": [{
            "type": "Ready", "status": ready, "reason": reason, "message": "m",
            "lastTransitionTime": "2026-12-06T00:00:00Z",
        }]}))
        .expect("status")
    };
    let catching_up = status(FALSE, reason::CATCHING_UP, 0);
    assert!(readiness_changed(
        &catching_up,
        &status("True", "Reading", 1000)
    ));
    assert!(readiness_changed(
        &catching_up,
        &status("False", "BrokerUnavailable", 0)
    ));
    assert!(!readiness_changed(
        &status("True", "Reading", 999),
        &status("True", "Reading", 1000)
    ));
}
