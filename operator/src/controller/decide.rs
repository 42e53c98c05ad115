//! One reconcile's decision, pure: from what the pass observed (the view
//! of the topic, whether it is read and why not, the pods without the
//! sidecar, the status found) and the monitor's state (its member table,
//! what was reported and written), the member transitions and the Events
//! they raise, the status to write and when to look again. Time is passed
//! in; `reconcile` does the I/O around it.

use std::collections::HashSet;
use std::time::Duration;

use heartbeat_crds::conditions::{READY, TRUE};
use heartbeat_crds::monitor::{HeartbeatMonitor, HeartbeatMonitorStatus, MemberState};
use jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use kube::runtime::events::Event;

use super::status::{self, Inputs, Readiness, Row};
use super::{events, secrets};
use crate::membership::View;
use crate::membership::silence;
use crate::membership::table::{Table, Transition};

/// The longest a changed status waits for its write.
const MAX_HOLD: SignedDuration = SignedDuration::from_secs(60);

/// The least time between two writes when Ready changed (see
/// [`readiness_changed`]).
const READY_NEWS_GAP: SignedDuration = SignedDuration::from_secs(1);

/// How long a new leader keeps the status it found while it replays the
/// topic; a longer replay shows members Unknown (`CatchingUp`) meanwhile.
const CATCH_UP_HOLD: SignedDuration = SignedDuration::from_secs(30);

/// How soon a new leader that keeps the status it found looks again.
const CATCH_UP_RECHECK: Duration = Duration::from_millis(200);

/// How long to wait for the consumer to confirm the topic past a deadline
/// (it confirms every [`crate::consumer`] check, 500 ms, or sooner).
const CONFIRM_WAIT: SignedDuration = SignedDuration::from_millis(200);

/// One monitor's state in this replica, as the decision changes it.
pub struct State<'a> {
    pub table: &'a mut Table,
    /// Uninjected pods already reported in an Event.
    pub uninjected_reported: &'a mut HashSet<String>,
    /// The last status this replica wrote, and when.
    pub written: Option<&'a (Timestamp, HeartbeatMonitorStatus)>,
    /// When this replica began tracking the monitor.
    pub since: Timestamp,
}

/// What one pass found out.
pub struct Observation<'a> {
    /// The monitor as the cache has it (its spec, and the status found).
    pub monitor: &'a HeartbeatMonitor,
    /// Whether the topic is read, and if not why.
    pub readiness: &'a Readiness,
    /// The view of the topic.
    pub view: View,
    /// The consumer still replays the topic for this monitor.
    pub replaying: bool,
    /// Covered pods admitted without the sidecar.
    pub uninjected: &'a [String],
}

/// What to do about the status.
#[derive(Debug, Clone, PartialEq)]
pub enum StatusPlan {
    /// Keep the status found: a new leader replaying the topic, briefly.
    KeepFound,
    /// The status the monitor should have; `write`: now (else it is
    /// unchanged or held for its slot).
    Desired {
        status: Box<HeartbeatMonitorStatus>,
        write: bool,
    },
}

/// What a pass does.
pub struct Decision {
    pub transitions: Vec<Transition>,
    /// To publish, in order (within the monitor's Event budget).
    pub events: Vec<Event>,
    /// The members, worst first (for the metrics).
    pub rows: Vec<Row>,
    /// Alarms are silenced (suspended, or in a maintenance window).
    pub silenced: bool,
    pub status: StatusPlan,
    /// When to look again (unless woken earlier).
    pub requeue: Duration,
}

/// Decides one pass at `now`.
pub fn decide(state: &mut State<'_>, seen: Observation<'_>, now: Timestamp) -> Decision {
    let monitor = seen.monitor;
    let table = &mut *state.table;
    let timing = table.settings.timing;
    table.set_view(seen.view);
    // Members an earlier leader already alarmed about raise no second
    // Stale Event.
    if state.written.is_none()
        && let Some(found) = &monitor.status
    {
        table.sighted_from(sight_floor(found, state.since));
        table.inherit_alarms(
            found
                .members
                .iter()
                .filter(|m| m.state == MemberState::Stale)
                .map(|m| m.program_id.as_str()),
        );
    }
    let (silence, bad_windows) = silence::silence(&monitor.spec, now);
    let transitions = table.evaluate(now, silence.as_ref());
    let mut events = events::for_transitions(monitor, &transitions, timing.stale_after);
    // Pods admitted without the sidecar: one Event per newly seen pod.
    let reported = &mut *state.uninjected_reported;
    reported.retain(|p| seen.uninjected.contains(p));
    let fresh: Vec<String> = seen
        .uninjected
        .iter()
        .filter(|p| reported.insert((*p).clone()))
        .cloned()
        .collect();
    let namespace = monitor.namespace().unwrap_or_default();
    events.extend(events::uninjected_event(&fresh, &namespace));
    let rows = status::rows(table, now);
    let silenced = silence.is_some();

    // A new leader (or a restarted operator) keeps the status it finds
    // while it replays the topic, briefly: writing every member Unknown for
    // the second a replay takes would be a flap on every failover.
    if seen.replaying
        && state.written.is_none()
        && monitor.status.is_some()
        && now < state.since + CATCH_UP_HOLD
    {
        return Decision {
            transitions,
            events,
            rows,
            silenced,
            status: StatusPlan::KeepFound,
            requeue: CATCH_UP_RECHECK,
        };
    }

    let previous = state.written.map(|(_, s)| s).or(monitor.status.as_ref());
    let desired = status::build(&Inputs {
        generation: monitor.metadata.generation,
        namespace: &namespace,
        rows: &rows,
        view: table.view(),
        readiness: seen.readiness,
        silence: silence.as_ref(),
        bad_windows: &bad_windows,
        uninjected: seen.uninjected,
        last_beat: table.last_beat,
        stale_after: timing.stale_after,
        previous,
        now,
    });
    let (write, not_before) = write_slot(state.written, &desired, timing.interval, now);
    let requeue = requeue(now, timing.interval, table.next_deadline(now), not_before);
    Decision {
        transitions,
        events,
        rows,
        silenced,
        status: StatusPlan::Desired {
            status: Box::new(desired),
            write,
        },
        requeue,
    }
}

/// Whether `status` says the topic is read.
pub fn is_ready(status: &HeartbeatMonitorStatus) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.type_ == READY && c.status == TRUE)
}

/// From when the status a new leader finds says the topic was read
/// without a break: `Ready` True since its last transition. Otherwise (not
/// ready, or no condition) nothing is known before `fallback`, this
/// replica's first sight of the monitor. A replay cannot tell an outage's
/// gap in the topic from silence; the previous leader could.
pub fn sight_floor(previous: &HeartbeatMonitorStatus, fallback: Timestamp) -> Timestamp {
    previous
        .conditions
        .iter()
        .find(|c| c.type_ == READY)
        .filter(|c| c.status == TRUE)
        .map_or(fallback, |c| c.last_transition_time.0.min(fallback))
}

/// Whether the Ready condition changed (caught up, lost sight, a Secret
/// fixed): such news is written at once, not held for the write slot; a
/// new leader's first correct status, above all, must not wait a minute
/// after its replay.
fn readiness_changed(last: &HeartbeatMonitorStatus, desired: &HeartbeatMonitorStatus) -> bool {
    let ready = |s: &HeartbeatMonitorStatus| {
        s.conditions
            .iter()
            .find(|c| c.type_ == READY)
            .map(|c| (c.status.clone(), c.reason.clone()))
    };
    ready(last) != ready(desired)
}

/// Whether `desired` is written now: when it differs from the last write
/// and an interval has passed since, or at once (a second after the last at
/// the soonest) when its Ready condition changed. Else, when a held-back
/// write may go.
fn write_slot(
    written: Option<&(Timestamp, HeartbeatMonitorStatus)>,
    desired: &HeartbeatMonitorStatus,
    interval: SignedDuration,
    now: Timestamp,
) -> (bool, Option<Timestamp>) {
    // Once per interval, but at least once a minute: a monitor beating
    // daily must not take a day to show Stale.
    let hold = interval.min(MAX_HOLD);
    let Some((at, last)) = written else {
        return (true, None);
    };
    if last == desired {
        return (false, None);
    }
    if now < *at + hold {
        if !readiness_changed(last, desired) {
            return (false, Some(*at + hold));
        }
        // News goes at once, but a flapping Ready at most once a second.
        let news = *at + READY_NEWS_GAP;
        if now < news {
            return (false, Some(news));
        }
    }
    (true, None)
}

/// When to look again: at the next deadline (a member going Late or
/// Stale), when a held-back write may go, at least once per interval, and
/// in time to read the Secrets again (nothing watches them).
fn requeue(
    now: Timestamp,
    interval: SignedDuration,
    deadline: Option<Timestamp>,
    not_before: Option<Timestamp>,
) -> Duration {
    let recheck = SignedDuration::try_from(secrets::RECHECK).unwrap_or(MAX_HOLD);
    let mut next = now + interval.min(MAX_HOLD).min(recheck);
    if let Some(d) = deadline {
        // A deadline already past `now` waits for the consumer to confirm
        // the topic up to it (within a check or two).
        let d = d.checked_add(SignedDuration::from_millis(100)).unwrap_or(d);
        next = next.min(d.max(now + CONFIRM_WAIT));
    }
    if let Some(w) = not_before {
        next = next.min(w);
    }
    let wait = now
        .duration_until(next)
        .max(SignedDuration::from_millis(100));
    Duration::try_from(wait).unwrap_or(Duration::from_secs(1))
}

#[cfg(test)]
mod tests;
