//! Status from a snapshot: counts, conditions a person can act on, the
//! bounded list.

use super::*;

/// Sighted since `since`, with everything read up to a far future.
fn sighted(since: Timestamp) -> View {
    View::Sighted {
        since,
        until: Timestamp::MAX,
    }
}

fn t(s: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + s).expect("valid")
}

fn row(name: &str, state: MemberState, kind: MemberKind) -> Row {
    Row {
        kind,
        program_id: format!("data.{name}"),
        pod: (kind == MemberKind::Pod).then(|| name.to_string()),
        state,
        reason: "why".into(),
        last_beat: Some(t(0)),
        since: t(0),
        availability: Some(0.99951),
        outdated: false,
    }
}

fn reading() -> Readiness {
    Readiness::Reading {
        what: "topic hb on kafka:9092".into(),
        warning: None,
    }
}

fn inputs<'a>(
    rows: &'a [Row],
    view: &'a View,
    readiness: &'a Readiness,
    silence: Option<&'a Silence>,
    uninjected: &'a [String],
) -> Inputs<'a> {
    Inputs {
        generation: Some(3),
        namespace: "data",
        rows,
        view,
        readiness,
        silence,
        bad_windows: &[],
        uninjected,
        last_beat: Some(t(5)),
        stale_after: SignedDuration::from_secs(35),
        previous: None,
        now: t(10),
    }
}

fn cond<'a>(s: &'a HeartbeatMonitorStatus, type_: &str) -> &'a Condition {
    s.conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition"))
}

#[test]
fn counts_and_conditions_of_a_healthy_monitor() {
    let rows = [
        row("a", MemberState::Up, MemberKind::Pod),
        row("b", MemberState::Up, MemberKind::Pod),
        row("seen", MemberState::Up, MemberKind::Seen),
    ];
    let view = sighted(t(0));
    let r = reading();
    let s = build(&inputs(&rows, &view, &r, None, &[]));
    assert_eq!((s.expected, s.up, s.stale), (2, 3, 0));
    assert_eq!(s.observed_generation, Some(3));
    assert_eq!(cond(&s, "Ready").status, "True");
    assert_eq!(cond(&s, "Healthy").status, "True");
    assert_eq!(cond(&s, "Injected").status, "True");
    assert_eq!(s.members[0].availability.as_deref(), Some("99.95%"));
}

#[test]
fn stale_members_make_healthy_false_naming_them_unless_silenced() {
    let rows = [
        row("a", MemberState::Stale, MemberKind::Pod),
        row("b", MemberState::Up, MemberKind::Pod),
    ];
    let view = sighted(t(0));
    let r = reading();
    let s = build(&inputs(&rows, &view, &r, None, &[]));
    let h = cond(&s, "Healthy");
    assert_eq!(
        (h.status.as_str(), h.reason.as_str()),
        ("False", "MembersStale")
    );
    assert!(
        h.message.contains("1 of 2 members Stale") && h.message.contains("pod a"),
        "{}",
        h.message
    );
    let s = build(&inputs(&rows, &view, &r, Some(&Silence::Suspended), &[]));
    let h = cond(&s, "Healthy");
    assert_eq!(
        (h.status.as_str(), h.reason.as_str()),
        ("Unknown", "Suspended")
    );
    assert_eq!(s.stale, 1, "the count still shows it");
}

#[test]
fn a_blind_operator_says_why_in_ready_and_judges_no_one() {
    let rows = [row("a", MemberState::Unknown, MemberKind::Pod)];
    let view = View::Blind(Blind::Unreadable {
        why: "Meta data fetch error: BrokerTransportFailure (Local: Broker transport failure)"
            .into(),
    });
    let r = reading();
    let s = build(&inputs(&rows, &view, &r, None, &[]));
    let ready = cond(&s, "Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "BrokerUnavailable")
    );
    assert!(
        ready.message.contains("kafka:9092") && ready.message.contains("BrokerTransportFailure")
    );
    assert_eq!(cond(&s, "Healthy").status, "Unknown");
    assert_eq!(s.unknown, 1);

    let missing = Readiness::NotReading {
        reason: "TopicMissing",
        message: "create it".into(),
    };
    let s = build(&inputs(&rows, &view, &missing, None, &[]));
    assert_eq!(cond(&s, "Ready").reason, "TopicMissing");
}

#[test]
fn uninjected_pods_are_counted_with_how_to_fix_it() {
    let view = sighted(t(0));
    let r = reading();
    let names = ["p1".to_string(), "p2".to_string()];
    let s = build(&inputs(&[], &view, &r, None, &names));
    assert_eq!(s.uninjected, 2);
    let c = cond(&s, "Injected");
    assert_eq!(c.status, "False");
    assert!(
        c.message.contains("p1, p2") && c.message.contains("rollout restart"),
        "{}",
        c.message
    );
}

#[test]
fn the_member_list_is_bounded_and_transition_times_are_kept() {
    let rows: Vec<Row> = (0..80)
        .map(|i| row(&format!("p{i}"), MemberState::Up, MemberKind::Pod))
        .collect();
    let view = sighted(t(0));
    let r = reading();
    let first = build(&inputs(&rows, &view, &r, None, &[]));
    assert_eq!(first.members.len(), MAX_STATUS_MEMBERS);
    assert_eq!(first.expected, 80);
    let mut later = inputs(&rows, &view, &r, None, &[]);
    later.previous = Some(&first);
    later.now = t(100);
    let second = build(&later);
    assert_eq!(cond(&second, "Ready").last_transition_time, Time(t(10)));
}
