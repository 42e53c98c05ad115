//! The status a monitor should have, pure: counts, conditions a person can
//! act on, and the bounded member list (worst first), from the membership
//! table and what the reconciler found out about the broker and the pods.

use heartbeat_crds::conditions::{FALSE, HEALTHY, INJECTED, READY, TRUE, UNKNOWN, reason};
use heartbeat_crds::monitor::{
    HeartbeatMonitorStatus, MAX_STATUS_MEMBERS, MemberState, MemberStatus,
};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::membership::silence::{BadWindow, Silence};
use crate::membership::table::{MemberKind, Table};
use crate::membership::{Blind, View};

/// Whether the operator reads the monitor's topic, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Reading `what` (`topic T on B`); `warning` e.g. a too short retention.
    Reading {
        what: String,
        warning: Option<String>,
    },
    /// Not reading: a condition reason and an actionable message.
    NotReading {
        reason: &'static str,
        message: String,
    },
}

impl Readiness {
    /// Adds a warning to a Reading (kept with any earlier one).
    pub fn warn(&mut self, w: String) {
        if let Readiness::Reading { warning, .. } = self {
            *warning = Some(match warning.take() {
                Some(earlier) => format!("{earlier}; {w}"),
                None => w,
            });
        }
    }
}

/// One member as status shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub kind: MemberKind,
    pub program_id: String,
    pub pod: Option<String>,
    pub state: MemberState,
    pub reason: String,
    pub last_beat: Option<Timestamp>,
    pub since: Timestamp,
    pub availability: Option<f64>,
    pub outdated: bool,
}

/// The members of `table`, worst first.
pub fn rows(table: &mut Table, now: Timestamp) -> Vec<Row> {
    let settings = table.settings.clone();
    let mut v: Vec<Row> = table
        .members_mut()
        .map(|m| Row {
            kind: m.kind,
            program_id: m.program_id.clone(),
            pod: m.pod.clone(),
            state: m.judgement.state,
            reason: m.judgement.reason.clone(),
            last_beat: m.facts.last_beat,
            since: m.since,
            availability: m.availability(now, &settings),
            outdated: m.kind == MemberKind::Pod
                && m.sidecar_version
                    .as_deref()
                    .is_some_and(|v| v != settings.sidecar_version),
        })
        .collect();
    v.sort_by(|a, b| {
        crate::membership::state::severity(a.state)
            .cmp(&crate::membership::state::severity(b.state))
            .then(a.since.cmp(&b.since))
            .then(a.program_id.cmp(&b.program_id))
    });
    v
}

/// Everything the status is built from.
pub struct Inputs<'a> {
    pub generation: Option<i64>,
    pub namespace: &'a str,
    pub rows: &'a [Row],
    pub view: &'a View,
    pub readiness: &'a Readiness,
    pub silence: Option<&'a Silence>,
    pub bad_windows: &'a [BadWindow],
    pub uninjected: &'a [String],
    pub last_beat: Option<Timestamp>,
    pub stale_after: SignedDuration,
    pub previous: Option<&'a HeartbeatMonitorStatus>,
    pub now: Timestamp,
}

fn who(r: &Row) -> String {
    match &r.pod {
        Some(p) => format!("pod {p}"),
        None => format!("program {}", r.program_id),
    }
}

fn list(rows: &[&Row], max: usize) -> String {
    let mut s: Vec<String> = rows.iter().take(max).map(|r| who(r)).collect();
    if rows.len() > max {
        s.push(format!("and {} more", rows.len() - max));
    }
    s.join(", ")
}

/// A condition, keeping the previous transition time when its status did not change.
fn condition(
    previous: Option<&HeartbeatMonitorStatus>,
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let last = previous
        .and_then(|p| p.conditions.iter().find(|c| c.type_ == type_))
        .filter(|c| c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time: last,
    }
}

fn ready(i: &Inputs<'_>) -> (&'static str, &'static str, String) {
    match (i.readiness, i.view) {
        (Readiness::NotReading { reason, message }, _) => (FALSE, reason, message.clone()),
        (Readiness::Reading { what, .. }, View::Blind(Blind::CatchingUp { from })) => (
            FALSE,
            reason::CATCHING_UP,
            if from.is_empty() {
                format!("reading {what} back to rebuild state; members are Unknown until caught up")
            } else {
                // What the replay starts from: a checkpoint, or why none.
                format!(
                    "reading {what} back to rebuild state, {from}; members are Unknown until caught up"
                )
            },
        ),
        (Readiness::Reading { what, .. }, View::Blind(why)) => (
            FALSE,
            reason::BROKER_UNAVAILABLE,
            format!(
                "cannot read {what}: {why}; members are Unknown (never Stale) until it is back"
            ),
        ),
        (
            Readiness::Reading {
                what,
                warning: Some(w),
            },
            View::Sighted { .. },
        ) => (
            TRUE,
            reason::READING_WITH_WARNINGS,
            format!("reading {what}; {w}"),
        ),
        (
            Readiness::Reading {
                what,
                warning: None,
            },
            View::Sighted { .. },
        ) => (TRUE, reason::READING, format!("reading {what}")),
    }
}

fn healthy(i: &Inputs<'_>) -> (&'static str, &'static str, String) {
    let alarming: Vec<&Row> = i
        .rows
        .iter()
        .filter(|r| r.state == MemberState::Stale && r.kind != MemberKind::Seen)
        .collect();
    let mut notes = Vec::new();
    for w in i.bad_windows {
        notes.push(format!("{w} (it silences nothing)"));
    }
    let failing: Vec<&Row> = i
        .rows
        .iter()
        .filter(|r| r.state == MemberState::Failing)
        .collect();
    if !failing.is_empty() {
        notes.push(format!("application failing in {}", list(&failing, 5)));
    }
    let suffix = if notes.is_empty() {
        String::new()
    } else {
        format!("; {}", notes.join("; "))
    };
    if let View::Blind(_) = i.view {
        return (
            UNKNOWN,
            reason::NOT_READING,
            format!("members cannot be judged while the topic is not read (see Ready){suffix}"),
        );
    }
    let counted = i.rows.iter().filter(|r| r.kind != MemberKind::Seen).count();
    if alarming.is_empty() {
        let up = i
            .rows
            .iter()
            .filter(|r| r.state == MemberState::Up && r.kind != MemberKind::Seen)
            .count();
        return (
            TRUE,
            reason::NO_MEMBER_STALE,
            format!("{up} of {counted} members up{suffix}"),
        );
    }
    let detail = format!(
        "{} of {counted} members Stale (silent for over {}s): {}",
        alarming.len(),
        i.stale_after.as_secs(),
        list(&alarming, 5)
    );
    match i.silence {
        Some(s) => (
            UNKNOWN,
            s.reason(),
            format!("{detail}; {}{suffix}", s.describe()),
        ),
        None => (
            FALSE,
            reason::MEMBERS_STALE,
            format!(
                "{detail}; see each sidecar's log (kubectl logs -n {} POD -c heartbeat) and the broker{suffix}",
                i.namespace
            ),
        ),
    }
}

fn injected(i: &Inputs<'_>) -> (&'static str, &'static str, String) {
    if i.uninjected.is_empty() {
        return (
            TRUE,
            reason::ALL_INJECTED,
            "every covered pod has the sidecar".into(),
        );
    }
    let names = i
        .uninjected
        .iter()
        .take(5)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    (
        FALSE,
        reason::PODS_WITHOUT_SIDECAR,
        format!(
            "{} covered pods have no sidecar ({names}{}), created while the webhook was down or before the monitor: recreate them (kubectl -n {} rollout restart deployment/NAME, or delete the pods)",
            i.uninjected.len(),
            if i.uninjected.len() > 5 { ", ..." } else { "" },
            i.namespace
        ),
    )
}

/// The status `i` describes.
pub fn build(i: &Inputs<'_>) -> HeartbeatMonitorStatus {
    let count = |s: MemberState| i.rows.iter().filter(|r| r.state == s).count() as u32;
    let conditions = [
        (READY, ready(i)),
        (HEALTHY, healthy(i)),
        (INJECTED, injected(i)),
    ]
    .into_iter()
    .map(|(t, (status, reason, message))| {
        condition(i.previous, t, status, reason, message, i.generation, i.now)
    })
    .collect();
    HeartbeatMonitorStatus {
        observed_generation: i.generation,
        conditions,
        expected: i.rows.iter().filter(|r| r.kind != MemberKind::Seen).count() as u32,
        up: count(MemberState::Up),
        late: count(MemberState::Late),
        stale: count(MemberState::Stale),
        stopped: count(MemberState::Stopped),
        pending: count(MemberState::Pending),
        failing: count(MemberState::Failing),
        unknown: count(MemberState::Unknown),
        uninjected: i.uninjected.len() as u32,
        outdated: i.rows.iter().filter(|r| r.outdated).count() as u32,
        last_beat_time: i.last_beat.map(Time),
        members: i
            .rows
            .iter()
            .take(MAX_STATUS_MEMBERS)
            .map(|r| MemberStatus {
                program_id: r.program_id.clone(),
                pod: r.pod.clone(),
                state: r.state,
                last_beat_time: r.last_beat.map(Time),
                since: Some(Time(r.since)),
                reason: Some(r.reason.clone()),
                availability: r.availability.map(|a| format!("{:.2}%", a * 100.0)),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests;
