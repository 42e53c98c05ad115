//! The membership state machine over every transition, with a fake clock.

use super::*;
use heartbeat_crds::beat::{BeatApp, BeatPod, BeatSidecar};

const NS: &str = "data";

/// Sighted since `since`, with everything read up to a far future.
fn sighted(since: Timestamp) -> View {
    View::Sighted {
        since,
        until: Timestamp::MAX,
    }
}

fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).expect("valid")
}

/// interval 10 s, 3 missed, 5 s grace: Late after 15 s, Stale after 35 s.
fn spec(external: Option<&[&str]>) -> HeartbeatMonitorSpec {
    let mut v = serde_json::json!({
        "topic": "hb", "intervalSeconds": 10, "missedBeatsTolerated": 3, "graceSeconds": 5,
        "brokerSecretRef": {"name": "kafka"}, "selector": {"matchLabels": {"app": "x"}}
    });
    if let Some(ids) = external {
        v["external"] = serde_json::json!({ "expectedPrograms": ids });
    }
    serde_json::from_value(v).expect("spec")
}

fn limits() -> Limits {
    Limits {
        history: SignedDuration::from_hours(24),
        seen_retention: SignedDuration::from_secs(600),
        max_seen: 3,
        sidecar_version: "0.2.0".into(),
    }
}

fn table(external: Option<&[&str]>) -> Table {
    let mut t0 = Table::new(
        MonitorId {
            namespace: NS.into(),
            name: "ingest".into(),
        },
        Settings::from_spec(&spec(external), &limits()),
        t(0),
    );
    t0.set_view(sighted(t(0)));
    t0
}

fn pod(uid: &str, started: Option<i64>) -> PodFacts {
    PodFacts {
        uid: uid.into(),
        name: format!("pod-{uid}"),
        program_id: format!("{NS}.pod-{uid}"),
        started: started.map(t),
        end: None,
    }
}

fn sidecar_beat(uid: &str, at: i64) -> Beat {
    let mut b = Beat::at(t(at));
    b.monitor = Some(format!("{NS}/ingest"));
    b.phase = Some(Phase::Running);
    b.pod = Some(BeatPod {
        namespace: NS.into(),
        name: format!("pod-{uid}"),
        uid: Some(uid.into()),
        node: None,
    });
    b.sidecar = Some(BeatSidecar {
        version: "0.1.0".into(),
        started_at: t(0),
        undelivered: 0,
    });
    b
}

fn record(table: &mut Table, beat: &Beat, at: i64) -> Recorded {
    let pid = beat
        .program_id
        .clone()
        .unwrap_or_else(|| format!("{NS}.pod-x"));
    table.record(
        &Incoming {
            program_id: &pid,
            beat: &beat.view(),
            broker_time: Some(t(at)),
            position: None,
        },
        t(at),
    )
}

fn state_of(table: &Table, program_or_pod: &str) -> MemberState {
    table
        .members()
        .find(|m| m.program_id == program_or_pod || m.pod.as_deref() == Some(program_or_pod))
        .map(|m| m.judgement.state)
        .unwrap_or_else(|| panic!("no member {program_or_pod}"))
}

fn alarms(ts: &[Transition]) -> Vec<Alarm> {
    ts.iter().filter_map(|t| t.alarm).collect()
}

#[test]
fn pending_up_late_stale_and_back_up_raise_one_stale_and_one_recovered() {
    let mut tb = table(None);
    tb.sync_pods([pod("a", Some(0))], t(0));
    assert!(
        tb.evaluate(t(0), None).is_empty(),
        "the first judgement is no transition"
    );
    assert_eq!(state_of(&tb, "pod-a"), MemberState::Pending);

    assert_eq!(
        record(&mut tb, &sidecar_beat("a", 1), 1),
        Recorded::Member {
            revived: true,
            skewed: false
        }
    );
    let ts = tb.evaluate(t(1), None);
    assert_eq!(
        (ts[0].from, ts[0].to, ts[0].alarm),
        (MemberState::Pending, MemberState::Up, None)
    );

    // 15 s of silence is on time; past it, Late: a warning, no Event.
    assert!(tb.evaluate(t(16), None).is_empty());
    let ts = tb.evaluate(t(17), None);
    assert_eq!((ts[0].to, ts[0].alarm), (MemberState::Late, None));

    // Past 3 x 10 s + 5 s: Stale, one alarm, however often it is judged.
    assert!(tb.evaluate(t(36), None).is_empty());
    let ts = tb.evaluate(t(37), None);
    assert_eq!(
        (ts[0].to, ts[0].alarm),
        (MemberState::Stale, Some(Alarm::Stale))
    );
    assert!(ts[0].reason.contains("no beat for 36s"), "{}", ts[0].reason);
    assert!(tb.evaluate(t(60), None).is_empty());

    record(&mut tb, &sidecar_beat("a", 61), 61);
    let ts = tb.evaluate(t(61), None);
    assert_eq!(
        (ts[0].to, ts[0].alarm),
        (MemberState::Up, Some(Alarm::Recovered))
    );
}

#[test]
fn late_then_a_beat_is_up_again_without_any_event() {
    let mut tb = table(None);
    tb.sync_pods([pod("a", Some(0))], t(0));
    record(&mut tb, &sidecar_beat("a", 0), 0);
    tb.evaluate(t(0), None);
    tb.evaluate(t(20), None);
    assert_eq!(state_of(&tb, "pod-a"), MemberState::Late);
    record(&mut tb, &sidecar_beat("a", 21), 21);
    let ts = tb.evaluate(t(21), None);
    assert_eq!(alarms(&ts), []);
    assert_eq!(state_of(&tb, "pod-a"), MemberState::Up);
}

#[test]
fn a_pending_member_that_never_beats_goes_stale_from_its_pod_start() {
    let mut tb = table(None);
    tb.sync_pods([pod("a", Some(10)), pod("b", None)], t(10));
    tb.evaluate(t(10), None);
    assert_eq!(alarms(&tb.evaluate(t(45), None)), []);
    let ts = tb.evaluate(t(46), None);
    assert_eq!(alarms(&ts), [Alarm::Stale]);
    assert!(ts[0].reason.contains("never beat"), "{}", ts[0].reason);
    // A pod not started yet has no deadline.
    assert_eq!(state_of(&tb, "pod-b"), MemberState::Pending);
}

#[test]
fn a_stopping_beat_stops_the_member_without_alarm_and_a_new_beat_revives_it() {
    let mut tb = table(None);
    tb.sync_pods([pod("a", Some(0))], t(0));
    record(&mut tb, &sidecar_beat("a", 0), 0);
    tb.evaluate(t(0), None);
    let mut last = sidecar_beat("a", 5);
    last.phase = Some(Phase::Stopping);
    record(&mut tb, &last, 5);
    let ts = tb.evaluate(t(5), None);
    assert_eq!(
        (ts[0].to, ts[0].alarm),
        (MemberState::Stopped, Some(Alarm::Stopped))
    );
    assert!(
        tb.evaluate(t(90), None).is_empty(),
        "silence after a stop is no alarm"
    );
    let mut again = sidecar_beat("a", 91);
    again.phase = Some(Phase::Starting);
    record(&mut tb, &again, 91);
    assert_eq!(alarms(&tb.evaluate(t(91), None)), []);
    assert_eq!(state_of(&tb, "pod-a"), MemberState::Up);
}

#[test]
fn a_deleted_or_completed_pod_is_stopped_and_then_leaves_without_alarm() {
    let mut tb = table(None);
    tb.sync_pods([pod("a", Some(0)), pod("b", Some(0))], t(0));
    record(&mut tb, &sidecar_beat("a", 0), 0);
    record(&mut tb, &sidecar_beat("b", 0), 0);
    tb.evaluate(t(0), None);
    let mut a = pod("a", Some(0));
    a.end = Some(PodEnd::Deleting);
    let mut b = pod("b", Some(0));
    b.end = Some(PodEnd::Completed);
    tb.sync_pods([a, b], t(1));
    let ts = tb.evaluate(t(100), None);
    assert_eq!(alarms(&ts), [Alarm::Stopped, Alarm::Stopped]);
    tb.sync_pods([], t(101));
    assert_eq!(tb.members().count(), 0);
    // Their last beats still arrive: genuine, nothing to record.
    assert_eq!(
        record(&mut tb, &sidecar_beat("a", 102), 102),
        Recorded::Departed
    );
    tb.sync_pods([], t(200));
    assert_eq!(
        record(&mut tb, &sidecar_beat("a", 200), 200),
        Recorded::Unattributed("unknown_pod")
    );
    assert!(tb.evaluate(t(200), None).is_empty());
}

/// Rule: a copy of a pod's beat without its `monitor` (a forgery naming a
/// real pod) makes no member of that pod's program id, whether the pod is
/// a member, departed or unknown: the live read and a replay by a new
/// leader, which may see the pods at other times, judge it the same.
#[test]
fn a_pod_beat_without_its_monitor_is_never_a_program_of_its_own() {
    let program = format!("{NS}.pod-a");
    let ids: &[&str] = &[program.as_str()];
    let forged = || {
        let mut b = sidecar_beat("a", 5);
        b.monitor = None;
        b.phase = Some(Phase::Stopping);
        b
    };
    for pods in [vec![pod("a", Some(0))], vec![]] {
        let mut tb = table(Some(ids));
        tb.sync_pods(pods.clone(), t(1));
        let mut b = forged();
        b.program_id = Some(program.clone());
        assert_eq!(
            record(&mut tb, &b, 5),
            Recorded::Unattributed("pod_beat_without_monitor")
        );
        // The expected program of that id stays as it was: never beating.
        let believed = tb
            .members()
            .filter(|m| m.kind != MemberKind::Pod && m.facts.last_beat.is_some())
            .count();
        assert_eq!(believed, 0, "a phantom member (pods {pods:?})");
    }
}

#[test]
fn a_replacement_pod_is_a_new_member_and_beats_of_others_are_not_attributed() {
    let mut tb = table(None);
    tb.sync_pods([pod("old", Some(0))], t(0));
    tb.sync_pods([pod("new", Some(1))], t(1));
    assert_eq!(tb.members().count(), 1);
    // The old pod's late beat is genuine but belongs to no member now.
    assert_eq!(
        record(&mut tb, &sidecar_beat("old", 2), 2),
        Recorded::Departed
    );
    assert_eq!(
        record(&mut tb, &sidecar_beat("never-seen", 2), 2),
        Recorded::Unattributed("unknown_pod")
    );
    tb.evaluate(t(2), None);
    assert_eq!(
        state_of(&tb, "pod-new"),
        MemberState::Pending,
        "not revived by the old pod's beat"
    );

    let mut wrong_ns = sidecar_beat("new", 2);
    if let Some(p) = wrong_ns.pod.as_mut() {
        p.namespace = "other".into();
    }
    assert_eq!(
        record(&mut tb, &wrong_ns, 2),
        Recorded::Unattributed("pod_namespace_mismatch")
    );
    let mut wrong_name = sidecar_beat("new", 2);
    if let Some(p) = wrong_name.pod.as_mut() {
        p.name = "pod-impostor".into();
    }
    assert_eq!(
        record(&mut tb, &wrong_name, 2),
        Recorded::Unattributed("pod_name_mismatch")
    );
    let mut other_monitor = sidecar_beat("new", 2);
    other_monitor.monitor = Some(format!("{NS}/other"));
    assert_eq!(record(&mut tb, &other_monitor, 2), Recorded::NotMine);
    // A foreign beat on a monitor without `external` is not its business.
    assert_eq!(record(&mut tb, &Beat::at(t(2)), 2), Recorded::NotMine);
    assert!(matches!(
        record(&mut tb, &sidecar_beat("new", 2), 2),
        Recorded::Member { .. }
    ));
}

#[test]
fn a_failing_application_is_failing_not_stale_and_its_sidecar_version_is_kept() {
    let mut tb = table(None);
    tb.sync_pods([pod("a", Some(0))], t(0));
    let mut b = sidecar_beat("a", 0);
    b.app = Some(BeatApp {
        status: AppStatus::Failing,
        last_signal: None,
        reason: Some("touch file 40s old".into()),
    });
    record(&mut tb, &b, 0);
    tb.evaluate(t(0), None);
    assert_eq!(state_of(&tb, "pod-a"), MemberState::Failing);
    let m = tb.members().next().expect("member");
    assert!(m.judgement.reason.contains("touch file 40s old"));
    assert_eq!(m.sidecar_version.as_deref(), Some("0.1.0"));
}

#[test]
fn an_expected_program_that_never_beats_is_stale_and_a_seen_one_ages_out_quietly() {
    let mut tb = table(Some(&["lab-1", "lab-2"]));
    let mut b = Beat::at(t(1));
    b.program_id = Some("lab-1".into());
    tb.record(
        &Incoming {
            program_id: "lab-1",
            beat: &b.view(),
            broker_time: Some(t(1)),
            position: None,
        },
        t(1),
    );
    tb.record(
        &Incoming {
            program_id: "script-9",
            beat: &Beat::at(t(1)).view(),
            broker_time: Some(t(1)),
            position: None,
        },
        t(1),
    );
    tb.evaluate(t(1), None);
    assert_eq!(state_of(&tb, "lab-1"), MemberState::Up);
    assert_eq!(state_of(&tb, "lab-2"), MemberState::Pending);
    assert_eq!(state_of(&tb, "script-9"), MemberState::Up);

    tb.record(
        &Incoming {
            program_id: "lab-1",
            beat: &Beat::at(t(30)).view(),
            broker_time: Some(t(30)),
            position: None,
        },
        t(30),
    );
    let ts = tb.evaluate(t(40), None);
    let stale: Vec<_> = ts
        .iter()
        .filter(|t| t.alarm == Some(Alarm::Stale))
        .map(|t| t.program_id.as_str())
        .collect();
    assert_eq!(
        stale,
        ["lab-2"],
        "the seen program is Stale too, but raises nothing"
    );
    assert_eq!(state_of(&tb, "script-9"), MemberState::Stale);
    // Past the retention window it is forgotten.
    tb.evaluate(t(700), None);
    assert!(tb.members().all(|m| m.program_id != "script-9"));
}

#[test]
fn seen_programs_are_capped() {
    let mut tb = table(Some(&[]));
    for i in 0..5 {
        let id = format!("p{i}");
        let r = tb.record(
            &Incoming {
                program_id: &id,
                beat: &Beat::at(t(1)).view(),
                broker_time: None,
                position: None,
            },
            t(1),
        );
        assert_eq!(
            r == Recorded::Unattributed("too_many_programs"),
            i >= 3,
            "{i}: {r:?}"
        );
    }
}

#[test]
fn while_blind_members_are_unknown_never_stale_and_sight_restores_their_allowance() {
    let mut tb = table(None);
    tb.sync_pods([pod("a", Some(0))], t(0));
    record(&mut tb, &sidecar_beat("a", 0), 0);
    tb.evaluate(t(0), None);
    tb.set_view(View::Blind(Blind::Unreadable {
        why: "broker down".into(),
    }));
    let ts = tb.evaluate(t(100), None);
    assert_eq!((ts[0].to, ts[0].alarm), (MemberState::Unknown, None));
    assert!(ts[0].reason.contains("broker down"));
    assert_eq!(tb.next_deadline(t(100)), None);
    // Sight again at 200: the silence before it is not held against anyone.
    tb.set_view(sighted(t(200)));
    assert_eq!(alarms(&tb.evaluate(t(200), None)), []);
    assert_eq!(state_of(&tb, "pod-a"), MemberState::Up);
    assert_eq!(tb.next_deadline(t(200)), Some(t(215)));
    record(&mut tb, &sidecar_beat("a", 205), 205);
    assert_eq!(alarms(&tb.evaluate(t(230), None)), []);
    // ...but a member that stays silent after sight is Stale in the end.
    assert_eq!(alarms(&tb.evaluate(t(241), None)), [Alarm::Stale]);
}

#[test]
fn a_new_consumer_replaying_from_long_ago_does_not_hold_an_outage_gap_against_anyone() {
    let mut tb = table(None);
    tb.sync_pods([pod("a", Some(0))], t(0));
    record(&mut tb, &sidecar_beat("a", 0), 0);
    tb.evaluate(t(0), None);
    // An outage until 100: blind, then sight again from 100.
    tb.set_view(View::Blind(Blind::Unreadable {
        why: "broker down".into(),
    }));
    tb.evaluate(t(50), None);
    tb.set_view(sighted(t(100)));
    assert_eq!(alarms(&tb.evaluate(t(100), None)), []);
    // A new consumer (a rotated broker Secret) replays from a day ago
    // before the member's first beat after the outage is on the topic.
    tb.set_view(View::Blind(Blind::CatchingUp {
        from: String::new(),
    }));
    tb.evaluate(t(105), None);
    tb.set_view(sighted(t(-86_400)));
    assert_eq!(alarms(&tb.evaluate(t(130), None)), []);
    assert_ne!(state_of(&tb, "pod-a"), MemberState::Stale);
    // A new leader told by the status that sight was continuous only
    // since 120 holds nothing before it against anyone either.
    let mut fresh = table(None);
    fresh.sync_pods([pod("a", Some(0))], t(0));
    record(&mut fresh, &sidecar_beat("a", 0), 0);
    fresh.set_view(sighted(t(-86_400)));
    fresh.sighted_from(t(120));
    assert_eq!(alarms(&fresh.evaluate(t(150), None)), []);
    assert_eq!(alarms(&fresh.evaluate(t(156), None)), [Alarm::Stale]);
    // Still judged from the sight it had: silent since 100, Stale after 35 s.
    assert_eq!(alarms(&tb.evaluate(t(134), None)), []);
    assert_eq!(alarms(&tb.evaluate(t(136), None)), [Alarm::Stale]);
}

#[test]
fn silenced_alarms_keep_the_state_and_alarm_once_the_silence_ends() {
    let mut tb = table(None);
    tb.sync_pods([pod("a", Some(0))], t(0));
    record(&mut tb, &sidecar_beat("a", 0), 0);
    tb.evaluate(t(0), None);
    let ts = tb.evaluate(t(40), Some(&Silence::Suspended));
    assert_eq!((ts[0].to, ts[0].alarm), (MemberState::Stale, None));
    assert_eq!(alarms(&tb.evaluate(t(50), Some(&Silence::Suspended))), []);
    assert_eq!(alarms(&tb.evaluate(t(60), None)), [Alarm::Stale]);
}

#[test]
fn a_silenced_stale_member_that_recovers_raises_nothing() {
    let mut tb = table(None);
    tb.sync_pods([pod("a", Some(0))], t(0));
    record(&mut tb, &sidecar_beat("a", 0), 0);
    tb.evaluate(t(0), None);
    tb.evaluate(t(40), Some(&Silence::Suspended));
    record(&mut tb, &sidecar_beat("a", 41), 41);
    assert_eq!(alarms(&tb.evaluate(t(41), None)), []);
}

#[test]
fn broker_clock_judges_lateness_and_skewed_beats_are_flagged() {
    let mut tb = table(None);
    tb.sync_pods([pod("a", Some(0))], t(0));
    // The beat claims to be from the future; the broker says 10.
    let b = sidecar_beat("a", 1000);
    let r = tb.record(
        &Incoming {
            program_id: "x",
            beat: &b.view(),
            broker_time: Some(t(10)),
            position: None,
        },
        t(10),
    );
    assert_eq!(
        r,
        Recorded::Member {
            revived: true,
            skewed: true
        }
    );
    tb.evaluate(t(10), None);
    assert_eq!(
        alarms(&tb.evaluate(t(46), None)),
        [Alarm::Stale],
        "judged by the broker's 10, not 1000"
    );
}

#[test]
fn beat_clock_uses_the_beat_time_capped_at_now() {
    let mut s = spec(None);
    s.clock.source = ClockSource::Beat;
    let mut tb = Table::new(
        MonitorId {
            namespace: NS.into(),
            name: "ingest".into(),
        },
        Settings::from_spec(&s, &limits()),
        t(0),
    );
    tb.set_view(sighted(t(0)));
    tb.sync_pods([pod("a", Some(0))], t(0));
    let b = sidecar_beat("a", 1000);
    tb.record(
        &Incoming {
            program_id: "x",
            beat: &b.view(),
            broker_time: Some(t(10)),
            position: None,
        },
        t(10),
    );
    tb.evaluate(t(10), None);
    assert_eq!(
        alarms(&tb.evaluate(t(46), None)),
        [Alarm::Stale],
        "a future beat counts as now, no later"
    );
    let b = sidecar_beat("a", 50);
    tb.record(
        &Incoming {
            program_id: "x",
            beat: &b.view(),
            broker_time: Some(t(60)),
            position: None,
        },
        t(60),
    );
    assert_eq!(tb.last_beat, Some(t(50)));
}

#[test]
fn replayed_beats_change_nothing() {
    let mut tb = table(None);
    tb.sync_pods([pod("a", Some(0))], t(0));
    record(&mut tb, &sidecar_beat("a", 20), 20);
    let mut old_stop = sidecar_beat("a", 10);
    old_stop.phase = Some(Phase::Stopping);
    record(&mut tb, &old_stop, 10);
    tb.evaluate(t(20), None);
    assert_eq!(state_of(&tb, "pod-a"), MemberState::Up);
}

#[test]
fn silence_is_measured_only_up_to_what_the_broker_confirmed_was_read() {
    let mut tb = table(None);
    tb.sync_pods([pod("a", Some(0))], t(0));
    record(&mut tb, &sidecar_beat("a", 0), 0);
    tb.evaluate(t(0), None);
    // The consumer confirmed the topic up to 30 only (it fell behind, or
    // the broker just died): at 40, the member is Late, not yet Stale.
    tb.set_view(View::Sighted {
        since: t(0),
        until: t(30),
    });
    assert_eq!(alarms(&tb.evaluate(t(40), None)), []);
    assert_eq!(state_of(&tb, "pod-a"), MemberState::Late);
    assert_eq!(
        tb.next_deadline(t(40)),
        Some(t(35)),
        "the deadline waits for confirmation"
    );
    tb.set_view(View::Sighted {
        since: t(0),
        until: t(40),
    });
    assert_eq!(alarms(&tb.evaluate(t(40), None)), [Alarm::Stale]);
}

#[test]
fn a_longer_interval_announced_by_the_beats_wins_over_a_lowered_spec() {
    let mut tb = table(None);
    tb.sync_pods([pod("a", Some(0))], t(0));
    // The sidecar was admitted with a 60 s interval; the spec says 10 now.
    let mut b = sidecar_beat("a", 0);
    b.interval_secs = Some(60);
    record(&mut tb, &b, 0);
    tb.evaluate(t(0), None);
    assert_eq!(
        alarms(&tb.evaluate(t(100), None)),
        [],
        "60 x 3 + 5 s allowed"
    );
    assert_eq!(state_of(&tb, "pod-a"), MemberState::Late);
    assert_eq!(alarms(&tb.evaluate(t(186), None)), [Alarm::Stale]);
}

/// Rule: no beat can make deadline arithmetic overflow. The beat that
/// crash-looped every replica (`interval_secs: 4294967295` for a monitor
/// tolerating 100 missed beats) is read with the field dropped, and even a
/// member whose facts carry such an interval (bypassing the parser) is
/// judged and given deadlines without a panic.
#[test]
fn an_interval_beyond_any_bound_neither_panics_nor_stretches_the_deadline() {
    let mut v = serde_json::to_value(spec(Some(&["lab-1"]))).expect("spec");
    v["missedBeatsTolerated"] = 100.into();
    let settings = Settings::from_spec(&serde_json::from_value(v).expect("spec"), &limits());
    let id = MonitorId {
        namespace: NS.into(),
        name: "ingest".into(),
    };
    let mut tb = Table::new(id, settings, t(0));
    tb.set_view(sighted(t(0)));
    let parsed =
        Beat::parse_lenient(br#"{"timestamp":"2027-01-15T08:00:00Z","interval_secs":4294967295}"#)
            .expect("a sign of life");
    assert_eq!(parsed.dropped.len(), 1, "interval_secs dropped and counted");
    let mut b = parsed.beat;
    b.timestamp = t(0);
    b.program_id = Some("lab-1".into());
    record(&mut tb, &b, 0);
    tb.evaluate(t(0), None);
    // 10 s x 100 + 5 s: Stale after 1005 s, as the spec says.
    assert_eq!(alarms(&tb.evaluate(t(1006), None)), [Alarm::Stale]);

    // Past the parser: the facts themselves hold the largest interval.
    let mut tb = table(Some(&["lab-1"]));
    let mut b = Beat::at(t(0));
    b.program_id = Some("lab-1".into());
    record(&mut tb, &b, 0);
    for m in tb.members_mut() {
        m.facts.beat_interval = Some(SignedDuration::from_secs(i64::from(u32::MAX)));
    }
    tb.evaluate(t(0), None);
    let _ = tb.next_deadline(t(1));
    tb.evaluate(t(1_000_000), None);
    let _ = tb.next_deadline(Timestamp::MAX);
}

#[test]
fn a_pod_joining_a_monitor_that_already_reads_gets_a_fresh_allowance() {
    let mut tb = table(None);
    tb.set_view(sighted(t(0)));
    // Relabelled into the monitor at 500; running since 0, its beats until
    // now went to no member.
    tb.sync_pods([pod("a", Some(0))], t(500));
    assert_eq!(alarms(&tb.evaluate(t(500), None)), []);
    assert_eq!(state_of(&tb, "pod-a"), MemberState::Pending);
    assert_eq!(
        alarms(&tb.evaluate(t(536), None)),
        [Alarm::Stale],
        "but it must beat after all"
    );
}

#[test]
fn a_pod_sidecar_silent_long_after_a_stopping_beat_while_its_pod_runs_is_judged_again() {
    let mut tb = table(Some(&["lab-1"]));
    tb.sync_pods([pod("a", Some(0))], t(0));
    let mut stop = sidecar_beat("a", 0);
    stop.phase = Some(Phase::Stopping);
    record(&mut tb, &stop, 0);
    let mut ext = Beat::at(t(0));
    ext.phase = Some(Phase::Stopping);
    tb.record(
        &Incoming {
            program_id: "lab-1",
            beat: &ext.view(),
            broker_time: Some(t(0)),
            position: None,
        },
        t(0),
    );
    tb.evaluate(t(0), None);
    assert_eq!(
        alarms(&tb.evaluate(t(95), None)),
        [],
        "35 s + 60 s of grace"
    );
    assert_eq!(tb.next_deadline(t(90)), Some(t(95)));
    let ts = tb.evaluate(t(96), None);
    assert_eq!(alarms(&ts), [Alarm::Stale]);
    assert_eq!(
        ts[0].pod.as_deref(),
        Some("pod-a"),
        "the program outside stopped for good"
    );
    assert_eq!(state_of(&tb, "lab-1"), MemberState::Stopped);
}

#[test]
fn an_alarm_inherited_from_the_previous_status_is_not_raised_twice() {
    let mut tb = table(None);
    tb.sync_pods([pod("a", Some(0)), pod("b", Some(0))], t(0));
    tb.inherit_alarms(["data.pod-a"]);
    let ts = tb.evaluate(t(100), None);
    let stale: Vec<_> = ts
        .iter()
        .filter(|t| t.alarm == Some(Alarm::Stale))
        .map(|t| t.pod.as_deref())
        .collect();
    assert_eq!(stale, [Some("pod-b")]);
    record(&mut tb, &sidecar_beat("a", 101), 101);
    assert_eq!(alarms(&tb.evaluate(t(101), None)), [Alarm::Recovered]);
}

#[test]
fn a_repeated_seq_is_a_replay_unless_it_is_the_operators_own_re_read() {
    let mut tb = table(None);
    tb.sync_pods([pod("a", Some(0))], t(0));
    fn at<'a>(b: &'a Beat<&'a str>, secs: i64, offset: i64) -> Incoming<'a> {
        Incoming {
            program_id: "x",
            beat: b,
            broker_time: Some(t(secs)),
            position: Some((0, offset)),
        }
    }
    let mut first = sidecar_beat("a", 0);
    first.seq = Some(7);
    assert!(matches!(
        tb.record(&at(&first.view(), 0, 10), t(0)),
        Recorded::Member { .. }
    ));
    // The consumer reads offset 10 again after a seek: nothing new.
    assert!(matches!(
        tb.record(&at(&first.view(), 0, 10), t(1)),
        Recorded::Member { revived: false, .. }
    ));
    // The same beat produced again later (a new offset): a replay.
    assert_eq!(
        tb.record(&at(&first.view(), 30, 11), t(30)),
        Recorded::Unattributed("replayed")
    );
    tb.evaluate(t(30), None);
    assert_eq!(
        state_of(&tb, "pod-a"),
        MemberState::Late,
        "the replay did not make it look alive"
    );
    // A restarted sidecar (a new started_at) starts its seq again: fine.
    let mut restarted = sidecar_beat("a", 51);
    restarted.seq = Some(1);
    if let Some(sc) = restarted.sidecar.as_mut() {
        sc.started_at = t(51);
    }
    assert!(matches!(
        tb.record(&at(&restarted.view(), 51, 12), t(51)),
        Recorded::Member { .. }
    ));
    // A beat of the earlier run produced again (any seq): a replay too;
    // read again at its own offset it is just the operator's re-read.
    let mut earlier = first.clone();
    earlier.seq = Some(1_000);
    assert_eq!(
        tb.record(&at(&earlier.view(), 60, 13), t(60)),
        Recorded::Unattributed("replayed")
    );
    assert!(matches!(
        tb.record(&at(&restarted.view(), 61, 12), t(61)),
        Recorded::Member { revived: false, .. }
    ));
}

/// Rule: with signing on, a beat whose timestamp lies further than
/// `clock.maxSkewSeconds` from the broker's time is refused (a captured
/// signed beat cannot be produced again later) and leaves no member
/// behind; without signing it still counts, as skewed.
#[test]
fn a_signed_beat_far_from_the_broker_time_is_refused() {
    let spec_with = |signed: bool| {
        let mut v = serde_json::to_value(spec(Some(&[]))).expect("spec");
        v["signing"] = serde_json::json!({"enabled": signed});
        v["clock"] = serde_json::json!({"source": "Broker", "maxSkewSeconds": 120});
        serde_json::from_value::<HeartbeatMonitorSpec>(v).expect("spec")
    };
    for signed in [true, false] {
        let id = MonitorId {
            namespace: NS.into(),
            name: "ingest".into(),
        };
        let mut tb = Table::new(id, Settings::from_spec(&spec_with(signed), &limits()), t(0));
        tb.set_view(sighted(t(0)));
        let mut b = Beat::at(t(0));
        b.program_id = Some("lab-9".into());
        // Produced 121 s after its timestamp.
        let got = record(&mut tb, &b, 121);
        if signed {
            assert_eq!(got, Recorded::Unattributed("signed_beat_skewed"));
            assert_eq!(tb.members().count(), 0, "a refused beat left a member");
        } else {
            assert_eq!(
                got,
                Recorded::Member {
                    revived: true,
                    skewed: true
                }
            );
        }
        // Within the bound it counts either way.
        let mut fresh = Beat::at(t(200));
        fresh.program_id = Some("lab-9".into());
        assert!(matches!(
            record(&mut tb, &fresh, 300),
            Recorded::Member { .. }
        ));
    }
}

/// A program's beat at `at` with `seq` of a sidecar run started at 0.
fn program_beat(id: &str, at: i64, seq: u64) -> Beat {
    let mut b = Beat::at(t(at));
    b.program_id = Some(id.into());
    b.seq = Some(seq);
    b.interval_secs = Some(10);
    b.sidecar = Some(BeatSidecar {
        version: "0.1.0".into(),
        started_at: t(0),
        undelivered: 0,
    });
    b
}

fn states(tb: &Table) -> Vec<(String, MemberState)> {
    let mut v: Vec<_> = tb
        .members()
        .map(|m| (m.program_id.clone(), m.judgement.state))
        .collect();
    v.sort_by(|x, y| x.0.cmp(&y.0));
    v
}

/// Rule (issue 20, checkpoints): a table restored from a checkpoint judges
/// every member as the table it was taken from, keeps its availability and
/// refuses the same replays; through a JSON round trip, as it is stored.
#[test]
fn a_restored_table_judges_as_the_original_and_refuses_the_same_replays() {
    let mut a = table(Some(&["etl"]));
    a.sync_pods([pod("a", Some(0)), pod("b", Some(0))], t(0));
    record(&mut a, &sidecar_beat("a", 5), 5);
    record(&mut a, &program_beat("etl", 6, 1), 6);
    record(&mut a, &program_beat("etl", 30, 2), 30);
    record(&mut a, &program_beat("adhoc", 28, 7), 28);
    a.evaluate(t(40), None);

    let json = serde_json::to_string(&a.checkpoint()).expect("serializes");
    let cp: TableRecord = serde_json::from_str(&json).expect("parses");
    // As a new leader: pods listed, the checkpoint loaded, then sight
    // from the checkpoint's `since` (the replay continues from it).
    let mut b = Table::new(a.id.clone(), a.settings.clone(), t(40));
    b.sync_pods([pod("a", Some(0)), pod("b", Some(0))], t(40));
    assert_eq!(b.restore(&cp, t(40)), 3, "a, etl and adhoc beat");
    b.set_view(sighted(cp.sighted_since.expect("sighted")));
    b.evaluate(t(40), None);
    assert_eq!(states(&b), states(&a));
    assert_eq!(b.last_beat, a.last_beat);
    for id in ["etl", "adhoc"] {
        let ratio = |tb: &mut Table| {
            let s = tb.settings.clone();
            tb.members
                .get_mut(&MemberKey::Program(id.into()))
                .and_then(|m| m.availability(t(40), &s))
        };
        assert_eq!(ratio(&mut b), ratio(&mut a), "availability of {id}");
    }
    // A new message repeating an old beat is refused by both.
    let replay = |tb: &mut Table| {
        tb.record(
            &Incoming {
                program_id: "etl",
                beat: &program_beat("etl", 30, 2).view(),
                broker_time: Some(t(41)),
                position: Some((0, 99)),
            },
            t(41),
        )
    };
    assert_eq!(replay(&mut b), Recorded::Unattributed("replayed"));
    assert_eq!(replay(&mut a), Recorded::Unattributed("replayed"));
}

/// Rule: a checkpoint never makes a member Up that its beats do not show:
/// an old last beat is judged as old, a last beat from the future, an
/// interval no monitor could set or oversized text drop the record, and
/// unexpected programs stay within the cap.
#[test]
fn a_checkpoint_never_makes_a_member_up_its_beats_do_not_show() {
    let mut a = table(Some(&["etl"]));
    record(&mut a, &program_beat("etl", 5, 1), 5);
    let good = a.checkpoint();
    let etl = good.members[0].clone();

    // Restored long after its last beat: Stale, as the topic shows.
    let mut b = table(Some(&["etl"]));
    assert_eq!(b.restore(&good, t(100)), 1);
    b.evaluate(t(100), None);
    assert_eq!(state_of(&b, "etl"), MemberState::Stale);

    let mut hostile = good.clone();
    hostile.members = vec![
        MemberRecord {
            last_beat: Some(t(10_000)),
            ..etl.clone()
        },
        MemberRecord {
            beat_interval_secs: Some(u32::MAX),
            ..etl.clone()
        },
        MemberRecord {
            program_id: "x".repeat(300),
            ..etl.clone()
        },
        MemberRecord {
            app_failing: Some("r".repeat(300)),
            ..etl.clone()
        },
    ];
    let mut c = table(Some(&["etl"]));
    assert_eq!(c.restore(&hostile, t(20)), 0);
    c.evaluate(t(20), None);
    assert_ne!(state_of(&c, "etl"), MemberState::Up);

    // A pod the table does not list (gone since) is not brought back.
    let mut pods = table(None);
    pods.sync_pods([pod("a", Some(0))], t(0));
    record(&mut pods, &sidecar_beat("a", 5), 5);
    let with_pod = pods.checkpoint();
    let mut e = table(None);
    assert_eq!(e.restore(&with_pod, t(10)), 0);
    assert_eq!(e.members().count(), 0);

    // Unexpected programs: at most max_seen (3) are taken.
    let mut many = good.clone();
    many.members = (0..10)
        .map(|i| MemberRecord {
            program_id: format!("seen-{i}"),
            ..etl.clone()
        })
        .collect();
    let mut d = table(Some(&["etl"]));
    assert_eq!(d.restore(&many, t(20)), 3);
}
