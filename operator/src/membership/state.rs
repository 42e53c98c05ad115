//! The judgement of one member at one instant: a pure function of what is
//! known about it (its beats, its pod, whether the operator can see the
//! topic) and the clock. Transitions are the difference between two
//! judgements, so a restart that rebuilds the facts rebuilds the states.

use heartbeat_crds::monitor::{HeartbeatMonitorSpec, MemberState};
use heartbeat_crds::sidecar_contract::MAX_INTERVAL_SECS;
use jiff::{SignedDuration, Timestamp};

/// The deadlines of one monitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub interval: SignedDuration,
    /// Silent this long: Late (a warning; one slow beat is not an alarm).
    pub late_after: SignedDuration,
    /// Silent this long: Stale (the alarm): interval * missed + grace.
    pub stale_after: SignedDuration,
    missed: i32,
    grace: SignedDuration,
}

impl Timing {
    /// The deadlines a monitor's spec sets.
    pub fn from_spec(spec: &HeartbeatMonitorSpec) -> Timing {
        Timing::new(
            SignedDuration::from_secs(i64::from(spec.interval_seconds)),
            spec.missed_beats_tolerated as i32,
            SignedDuration::from_secs(i64::from(spec.grace_seconds)),
        )
    }

    fn new(interval: SignedDuration, missed: i32, grace: SignedDuration) -> Timing {
        // Saturating: the spec and the beats are bounded where they are
        // parsed, but no input may make deadline arithmetic panic.
        let stale_after = interval
            .checked_mul(missed)
            .and_then(|d| d.checked_add(grace))
            .unwrap_or(SignedDuration::MAX);
        // Half an interval of slack before Late: scheduling jitter and the
        // broker's batching are not lateness.
        let late_after = interval
            .checked_add(interval / 2)
            .unwrap_or(SignedDuration::MAX)
            .min(stale_after);
        Timing {
            interval,
            late_after,
            stale_after,
            missed,
            grace,
        }
    }

    /// The deadlines for a member that beats every `beat_interval` (what its
    /// beats say): a longer one than the spec's wins, so lowering the spec's
    /// interval does not make running sidecars (admitted with the old one)
    /// Stale before their pods are recreated.
    pub fn for_member(&self, beat_interval: Option<SignedDuration>) -> Timing {
        match beat_interval {
            // Clamped to what a spec may set: the beats are bounded where
            // they are parsed, this is the second line.
            Some(i) if i > self.interval => Timing::new(
                i.min(SignedDuration::from_secs(i64::from(MAX_INTERVAL_SECS))),
                self.missed,
                self.grace,
            ),
            _ => *self,
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
    Blind(Blind),
}

/// Why the operator cannot see the topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blind {
    /// Not reading the topic yet (the monitor was just made).
    NotStarted,
    /// Reading the topic back to rebuild state; `from`: what the replay
    /// starts from (a checkpoint, or why none), empty when unknown.
    CatchingUp { from: String },
    /// The consumer has read nothing newer than `behind_secs` ago.
    Stalled { behind_secs: i64 },
    /// Cannot read it: the consumer's or the reconciler's words.
    Unreadable { why: String },
}

impl std::fmt::Display for Blind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Blind::NotStarted => f.write_str("not reading the topic yet"),
            Blind::CatchingUp { from } if from.is_empty() => {
                f.write_str("catching up with the topic")
            }
            Blind::CatchingUp { from } => write!(f, "catching up with the topic, {from}"),
            Blind::Stalled { behind_secs } => write!(
                f,
                "the consumer has read nothing newer than {behind_secs}s ago (far behind, or fetching fails)"
            ),
            Blind::Unreadable { why } => f.write_str(why),
        }
    }
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
    /// A stop is final (a program outside the cluster). For a pod it is
    /// not: a sidecar that said it stops while its pod keeps running is
    /// judged again once it stayed silent for the Stale time plus a minute
    /// (killed and not coming back, say).
    pub stop_is_final: bool,
    /// The interval the newest beat announced.
    pub beat_interval: Option<SignedDuration>,
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
    let timing = &timing.for_member(facts.beat_interval);
    if facts.stopping && (facts.stop_is_final || !stop_expired(facts, timing, view, now)) {
        return j(MemberState::Stopped, "sent a stopping beat".into());
    }
    // Silence is measured up to what the broker confirmed was read, never
    // past it: a consumer that fell behind must not make anyone Stale.
    let (since, now) = match view {
        View::Blind(why) => {
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

/// How long a pod's sidecar may stay silent after a stopping beat while the
/// pod still runs, beyond the Stale time.
const STOP_GRACE: SignedDuration = SignedDuration::from_secs(60);

/// `at + d`, or `None` past the end of time (no deadline then).
fn after(at: Timestamp, d: SignedDuration) -> Option<Timestamp> {
    at.checked_add(d).ok()
}

/// How long a stopped pod's sidecar may be silent before it is judged again.
fn stop_window(timing: &Timing) -> SignedDuration {
    timing
        .stale_after
        .checked_add(STOP_GRACE)
        .unwrap_or(SignedDuration::MAX)
}

fn stop_expired(facts: &Facts, timing: &Timing, view: &View, now: Timestamp) -> bool {
    let View::Sighted { until, .. } = view else {
        return false;
    };
    facts
        .last_beat
        .is_some_and(|last| now.min(*until).duration_since(last) > stop_window(timing))
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
    let reference = now.min(*until);
    let timing = &timing.for_member(facts.beat_interval);
    if facts.pod_end.is_some() {
        return None;
    }
    if facts.stopping {
        if facts.stop_is_final {
            return None;
        }
        return facts
            .last_beat
            .and_then(|last| after(last, stop_window(timing)))
            .filter(|t| *t > reference);
    }
    let now = reference;
    let start = facts.clock_start.or(facts.last_beat)?;
    let silent_from = facts.last_beat.unwrap_or(start).max(*since);
    let late = facts
        .last_beat
        .and_then(|_| after(silent_from, timing.late_after))
        .filter(|t| *t > now);
    let stale = after(silent_from, timing.stale_after).filter(|t| *t > now);
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
