//! The judgement of one member at one instant: a pure function of what is
//! known about it (its beats, its pod, whether the operator can see the
//! topic) and the clock. Transitions are the difference between two
//! judgements, so a restart that rebuilds the facts rebuilds the states.

use heartbeat_crds::monitor::{HeartbeatMonitorSpec, MemberState};
use jiff::{SignedDuration, Timestamp};

/// The deadlines of one monitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub interval: SignedDuration,
    /// Silent this long: Late (a warning; one slow beat is not an alarm).
    pub late_after: SignedDuration,
    /// Silent this long: Stale (the alarm): interval * missed + grace.
    pub stale_after: SignedDuration,
}

impl Timing {
    /// The deadlines a monitor's spec sets.
    pub fn from_spec(spec: &HeartbeatMonitorSpec) -> Timing {
        let interval = SignedDuration::from_secs(i64::from(spec.interval_seconds));
        let stale_after = SignedDuration::from_secs(
            i64::from(spec.interval_seconds) * i64::from(spec.missed_beats_tolerated)
                + i64::from(spec.grace_seconds),
        );
        // Half an interval of slack before Late: scheduling jitter and the
        // broker's batching are not lateness.
        let late_after = (interval + interval / 2).min(stale_after);
        Timing {
            interval,
            late_after,
            stale_after,
        }
    }
}

/// Whether the operator can see the topic, as far as one monitor is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum View {
    /// Reading the topic: everything on it up to `until` has been read
    /// (silence is measured up to then, never past what the broker
    /// confirmed); nothing before `since` can be held against a member (the
    /// operator was blind, or had not started, then).
    Sighted { since: Timestamp, until: Timestamp },
    /// Not reading it (broker down, auth error, topic missing, catching up):
    /// members are Unknown, never Stale.
    Blind { why: String },
}

/// How a member's pod ended, if it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodEnd {
    /// Being deleted (deletionTimestamp set).
    Deleting,
    /// Phase Succeeded or Failed: a completed Job, for example.
    Completed,
}

/// What is known about one member, the input of [`judge`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// From when silence counts against it (pod start, or when an expected
    /// program was first required); `None`: not running yet, no deadline.
    pub clock_start: Option<Timestamp>,
    /// The judged time of its newest beat.
    pub last_beat: Option<Timestamp>,
    /// The newest beat was a `stopping` beat.
    pub stopping: bool,
    /// The newest beat says the application is failing (with why).
    pub app_failing: Option<String>,
    pub pod_end: Option<PodEnd>,
}

/// A member's state and why, for a person to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judgement {
    pub state: MemberState,
    pub reason: String,
}

fn secs(d: SignedDuration) -> String {
    format!("{}s", d.as_secs())
}

/// Judges one member at `now`.
pub fn judge(facts: &Facts, timing: &Timing, view: &View, now: Timestamp) -> Judgement {
    let j = |state, reason: String| Judgement { state, reason };
    match facts.pod_end {
        Some(PodEnd::Deleting) => return j(MemberState::Stopped, "pod is being deleted".into()),
        Some(PodEnd::Completed) => return j(MemberState::Stopped, "pod completed".into()),
        None => {}
    }
    if facts.stopping {
        return j(MemberState::Stopped, "sent a stopping beat".into());
    }
    // Silence is measured up to what the broker confirmed was read, never
    // past it: a consumer that fell behind must not make anyone Stale.
    let (since, now) = match view {
        View::Blind { why } => {
            return j(
                MemberState::Unknown,
                format!("operator cannot read the topic: {why}"),
            );
        }
        View::Sighted { since, until } => (*since, now.min(*until)),
    };
    let Some(start) = facts.clock_start.or(facts.last_beat) else {
        return j(MemberState::Pending, "pod not started yet".into());
    };
    // Silence counts from the newest beat, but never from before the
    // operator could see: its own blindness is not the member's fault.
    let silent_from = facts.last_beat.unwrap_or(start).max(since);
    let silence = now.duration_since(silent_from);
    let stale = format!(
        "tolerates {} ({}x{} + grace)",
        secs(timing.stale_after),
        (timing.stale_after.as_secs() / timing.interval.as_secs().max(1)),
        secs(timing.interval)
    );
    match facts.last_beat {
        None if silence > timing.stale_after => j(
            MemberState::Stale,
            format!("never beat in {}; {stale}", secs(silence)),
        ),
        None => j(MemberState::Pending, "waiting for the first beat".into()),
        Some(_) if silence > timing.stale_after => j(
            MemberState::Stale,
            format!("no beat for {}; {stale}", secs(silence)),
        ),
        Some(_) if silence > timing.late_after => {
            j(MemberState::Late, format!("no beat for {}", secs(silence)))
        }
        Some(_) => match &facts.app_failing {
            Some(why) => j(MemberState::Failing, format!("application failing: {why}")),
            None => j(MemberState::Up, "beating".into()),
        },
    }
}

/// When the judgement of `facts` changes next without a new beat (the
/// first deadline after `now`), if ever: the reconciler wakes up then, so
/// an alarm is not late.
pub fn next_deadline(
    facts: &Facts,
    timing: &Timing,
    view: &View,
    now: Timestamp,
) -> Option<Timestamp> {
    let View::Sighted { since, until } = view else {
        return None;
    };
    let now = now.min(*until);
    if facts.pod_end.is_some() || facts.stopping {
        return None;
    }
    let start = facts.clock_start.or(facts.last_beat)?;
    let silent_from = facts.last_beat.unwrap_or(start).max(*since);
    let late = facts
        .last_beat
        .map(|_| silent_from + timing.late_after)
        .filter(|t| *t > now);
    let stale = Some(silent_from + timing.stale_after).filter(|t| *t > now);
    late.or(stale)
}

/// Orders states from most to least in need of attention (status lists
/// the worst members first).
pub fn severity(state: MemberState) -> u8 {
    match state {
        MemberState::Stale => 0,
        MemberState::Failing => 1,
        MemberState::Late => 2,
        MemberState::Unknown => 3,
        MemberState::Pending => 4,
        MemberState::Stopped => 5,
        MemberState::Up => 6,
    }
}
