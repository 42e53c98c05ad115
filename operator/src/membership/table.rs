//! The members of one monitor: which beat belongs to whom, the facts each
//! member's judgement is made from, and the transitions (with the Events
//! they raise) between two evaluations. Time is passed in.

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use heartbeat_crds::beat::{AppStatus, Beat, Phase};
use heartbeat_crds::monitor::{ClockSource, HeartbeatMonitorSpec, MemberState};
use jiff::{SignedDuration, Timestamp};

use super::availability::Availability;
use super::silence::Silence;
use super::state::{Blind, Facts, Judgement, PodEnd, Timing, View, judge, next_deadline};

/// A monitor, `namespace/name` (what a beat's `monitor` field holds).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MonitorId {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for MonitorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What identifies a member: a pod by uid (a replacement pod is a new
/// member), a program outside the cluster by its program id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MemberKey {
    Pod(String),
    Program(String),
}

/// Where a member comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberKind {
    /// A pod the monitor covers, injected with the sidecar.
    Pod,
    /// A program listed in `spec.external.expectedPrograms`: it must beat.
    Expected,
    /// Another program seen on the topic: tracked, aged out after the
    /// retention window, never an alarm.
    Seen,
}

/// The monitor's settings the table judges by.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub timing: Timing,
    pub expected: BTreeSet<String>,
    /// Track programs that are not expected (the monitor has `external`).
    pub track_unexpected: bool,
    pub clock: ClockSource,
    pub max_skew: SignedDuration,
    /// Beats must be signed (`spec.signing`): a beat further than
    /// `max_skew` from the broker's time is refused, so a captured signed
    /// beat cannot be produced again later.
    pub signed: bool,
    /// Availability window (24 h).
    pub history: SignedDuration,
    /// A seen program silent this long is forgotten.
    pub seen_retention: SignedDuration,
    /// Most seen programs tracked per monitor (a flood of invented keys
    /// must not grow memory without bound).
    pub max_seen: usize,
    /// The sidecar version the operator injects now (older ones are `outdated`).
    pub sidecar_version: String,
}

impl Settings {
    /// Settings from a monitor's spec and the operator's own limits.
    pub fn from_spec(spec: &HeartbeatMonitorSpec, limits: &Limits) -> Settings {
        Settings {
            timing: Timing::from_spec(spec),
            expected: spec
                .external
                .iter()
                .flat_map(|e| e.expected_programs.iter().cloned())
                .collect(),
            track_unexpected: spec.external.is_some(),
            clock: spec.clock.source,
            max_skew: SignedDuration::from_secs(i64::from(spec.clock.max_skew_seconds)),
            signed: spec.signing.as_ref().is_some_and(|s| s.enabled),
            history: limits.history,
            seen_retention: limits.seen_retention,
            max_seen: limits.max_seen,
            sidecar_version: limits.sidecar_version.clone(),
        }
    }
}

/// The operator-wide limits (flags).
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub history: SignedDuration,
    pub seen_retention: SignedDuration,
    pub max_seen: usize,
    pub sidecar_version: String,
}

/// What the reconciler knows about a pod the monitor covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodFacts {
    pub uid: String,
    pub name: String,
    /// The program id the pod's sidecar beats as (rendered from the template).
    pub program_id: String,
    /// `status.startTime`: silence counts from then.
    pub started: Option<Timestamp>,
    pub end: Option<PodEnd>,
}

/// One member.
#[derive(Debug, Clone)]
pub struct Member {
    pub kind: MemberKind,
    pub program_id: String,
    pub pod: Option<String>,
    pub facts: Facts,
    pub judgement: Judgement,
    /// When it entered its current state.
    pub since: Timestamp,
    pub sidecar_version: Option<String>,
    /// A Stale Event was raised and not yet answered by a recovery.
    alarmed: bool,
    availability: Availability,
    /// Judged once at least: the first judgement is no transition.
    judged: bool,
    /// Silence before this does not count: the member joined while the
    /// topic was already being read, so its earlier beats were not kept.
    clock_floor: Option<Timestamp>,
    /// The newest sidecar run (its start) and beat `seq` seen, and where
    /// that beat was on the topic.
    last_seq: Option<(Timestamp, u64)>,
    last_position: Option<(i32, i64)>,
}

impl Member {
    fn new(kind: MemberKind, program_id: String, pod: Option<String>, now: Timestamp) -> Member {
        Member {
            kind,
            program_id,
            pod,
            facts: Facts {
                clock_start: None,
                last_beat: None,
                stopping: false,
                stop_is_final: kind != MemberKind::Pod,
                beat_interval: None,
                app_failing: None,
                pod_end: None,
            },
            judgement: Judgement {
                state: MemberState::Pending,
                reason: "not judged yet".into(),
            },
            since: now,
            sidecar_version: None,
            alarmed: false,
            availability: Availability::default(),
            judged: false,
            clock_floor: None,
            last_seq: None,
            last_position: None,
        }
    }

    /// The share of the availability window it was up (0..=1).
    pub fn availability(&mut self, now: Timestamp, s: &Settings) -> Option<f64> {
        self.availability.ratio(now, s.history, s.timing.late_after)
    }
}

/// A beat as read off the topic.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    pub program_id: &'a str,
    /// Its text borrowed from the message (or from a beat parsed owned).
    pub beat: &'a Beat<&'a str>,
    /// The message's broker timestamp.
    pub broker_time: Option<Timestamp>,
    /// The message's (partition, offset): tells the operator's own re-read
    /// of a message from a new message repeating an old beat.
    pub position: Option<(i32, i64)>,
}

/// What [`Table::record`] did with a beat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Recorded for a member; `revived`: it was not beating before (the
    /// reconciler is woken so a recovery is reported at once); `skewed`:
    /// the beat's own time is off the broker's by more than maxSkew.
    Member { revived: bool, skewed: bool },
    /// The beat is for another monitor on the same topic.
    NotMine,
    /// The beat claims this monitor but matches no member (reason label).
    Unattributed(&'static str),
    /// A late beat (the last `stopping` one, typically) of a pod that just
    /// left: a genuine beat, nothing to record.
    Departed,
}

/// The Event a transition raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alarm {
    Stale,
    Recovered,
    Stopped,
}

impl Alarm {
    /// The Event reason.
    pub fn reason(self) -> &'static str {
        match self {
            Alarm::Stale => "HeartbeatStale",
            Alarm::Recovered => "HeartbeatRecovered",
            Alarm::Stopped => "HeartbeatStopped",
        }
    }
}

/// A member's change of state between two evaluations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub program_id: String,
    pub pod: Option<String>,
    pub from: MemberState,
    pub to: MemberState,
    pub reason: String,
    pub alarm: Option<Alarm>,
}

/// The members of one monitor.
#[derive(Debug)]
pub struct Table {
    pub id: MonitorId,
    pub settings: Settings,
    /// Boxed: a map's slots are up to twice its length, and an empty slot
    /// of an unboxed member costs its 392 bytes (at 100,000 members this
    /// halves the tables' memory).
    members: HashMap<MemberKey, Box<Member>>,
    /// Pods that left recently (uid, when): their last beats still arrive.
    departed: HashMap<String, Timestamp>,
    seen: usize,
    view: View,
    /// The latest `since` of a sighted view: what this table saw
    /// continuously from. Never moves back (see [`Table::set_view`]).
    sighted_since: Option<Timestamp>,
    /// When the table was made: expected programs must beat from then.
    created: Timestamp,
    /// Judged time of the newest beat for this monitor.
    pub last_beat: Option<Timestamp>,
    /// The text of the last key looked up, kept for its allocation: a beat
    /// finds its member without a `String` made per beat.
    key_buf: String,
}

/// Whose a beat claims to be, as [`Table::attribute`] reads it.
enum Claim<'b> {
    Pod { uid: &'b str, name: &'b str },
    Program(&'b str),
}

impl Table {
    /// An empty table; members are Unknown until the view is set.
    pub fn new(id: MonitorId, settings: Settings, now: Timestamp) -> Table {
        let mut t = Table {
            id,
            settings: settings.clone(),
            members: HashMap::new(),
            departed: HashMap::new(),
            seen: 0,
            view: View::Blind(Blind::NotStarted),
            created: now,
            sighted_since: None,
            last_beat: None,
            key_buf: String::new(),
        };
        t.configure(settings, now);
        t
    }

    /// Applies changed settings: expected programs are added or dropped.
    pub fn configure(&mut self, settings: Settings, now: Timestamp) {
        self.members.retain(|k, m| match (k, m.kind) {
            (MemberKey::Program(id), MemberKind::Expected) => settings.expected.contains(id),
            _ => true,
        });
        // A new table grows once, not by doubling (each step holds both
        // copies); a later change of the list grows as it must.
        if self.members.is_empty() {
            self.members.reserve(settings.expected.len());
        }
        for id in &settings.expected {
            let key = MemberKey::Program(id.clone());
            match self.members.get_mut(&key) {
                Some(m) => {
                    if m.kind == MemberKind::Seen {
                        self.seen -= 1;
                    }
                    m.kind = MemberKind::Expected;
                    m.facts.clock_start = m.facts.clock_start.or(Some(now));
                }
                None => {
                    let mut m = Member::new(MemberKind::Expected, id.clone(), None, now);
                    m.facts.clock_start = Some(self.created.max(now));
                    m.availability.observe_from(now);
                    self.members.insert(key, Box::new(m));
                }
            }
        }
        if !settings.track_unexpected {
            self.members.retain(|_, m| m.kind != MemberKind::Seen);
            self.seen = 0;
        }
        self.settings = settings;
    }

    /// Makes the pod members exactly `pods`: new pods are added (Pending),
    /// vanished ones removed, the rest updated.
    pub fn sync_pods(&mut self, pods: impl IntoIterator<Item = PodFacts>, now: Timestamp) {
        let mut present = BTreeSet::new();
        let sighted = matches!(self.view, View::Sighted { .. });
        for p in pods {
            let key = MemberKey::Pod(p.uid.clone());
            present.insert(p.uid.clone());
            let m = self.members.entry(key).or_insert_with(|| {
                let mut m = Box::new(Member::new(
                    MemberKind::Pod,
                    p.program_id.clone(),
                    Some(p.name.clone()),
                    now,
                ));
                // A pod that joins a monitor already reading (a label or
                // selector change) had its earlier beats dropped.
                m.clock_floor = sighted.then_some(now);
                m
            });
            m.facts.clock_start = match (p.started, m.clock_floor) {
                (Some(s), Some(floor)) => Some(s.max(floor)),
                (started, _) => started,
            };
            m.facts.pod_end = p.end;
            if let Some(started) = p.started {
                m.availability
                    .observe_from(started.max(now - self.settings.history));
            }
        }
        let departed = &mut self.departed;
        self.members.retain(|k, _| match k {
            MemberKey::Pod(uid) if !present.contains(uid) => {
                departed.insert(uid.clone(), now);
                false
            }
            _ => true,
        });
        let keep = self.settings.timing.stale_after;
        departed.retain(|_, at| now.duration_since(*at) <= keep);
    }

    /// Sets whether the operator can see the topic.
    pub fn set_view(&mut self, view: View) {
        // `since` never moves back: a consumer that replaces another (a new
        // broker Secret) replays the topic from long ago, and the gap an
        // outage left in it, which the earlier consumer knew it was blind
        // for, would otherwise count as every member's silence.
        self.view = match view {
            View::Sighted { since, until } => {
                let since = self.sighted_since.map_or(since, |s| s.max(since));
                self.sighted_since = Some(since);
                View::Sighted { since, until }
            }
            blind => blind,
        };
    }

    /// Nothing before `floor` is held against anyone: what a new leader
    /// learns from the status it inherits (sight was continuous only since
    /// then), applied to the current view and every later one.
    pub fn sighted_from(&mut self, floor: Timestamp) {
        let since = self.sighted_since.map_or(floor, |s| s.max(floor));
        self.sighted_since = Some(since);
        if let View::Sighted { since: s, .. } = &mut self.view {
            *s = (*s).max(since);
        }
    }

    /// The current view.
    pub fn view(&self) -> &View {
        &self.view
    }

    /// Attributes a beat and records it for its member.
    pub fn record(&mut self, beat: &Incoming<'_>, now: Timestamp) -> Recorded {
        let claim = match self.attribute(beat) {
            Ok(c) => c,
            Err(r) => return r,
        };
        let mut buf = std::mem::take(&mut self.key_buf);
        buf.clear();
        let key = match claim {
            Claim::Pod { uid, .. } => {
                buf.push_str(uid);
                MemberKey::Pod(buf)
            }
            Claim::Program(id) => {
                buf.push_str(id);
                MemberKey::Program(buf)
            }
        };
        let recorded = self.record_for(&key, &claim, beat, now);
        self.key_buf = match key {
            MemberKey::Pod(b) | MemberKey::Program(b) => b,
        };
        recorded
    }

    /// [`Table::record`] for the member `key` the beat claims.
    fn record_for(
        &mut self,
        key: &MemberKey,
        claim: &Claim<'_>,
        beat: &Incoming<'_>,
        now: Timestamp,
    ) -> Recorded {
        if let Claim::Pod { uid, name } = *claim {
            match self.members.get(key) {
                Some(m) if m.pod.as_deref() == Some(name) => {}
                Some(_) => return Recorded::Unattributed("pod_name_mismatch"),
                None if self.departed.contains_key(uid) => return Recorded::Departed,
                None => return Recorded::Unattributed("unknown_pod"),
            }
        }
        // Judged before anything is recorded: a refused beat leaves no trace.
        let skewed = beat
            .broker_time
            .is_some_and(|b| beat.beat.timestamp.duration_since(b).abs() > self.settings.max_skew);
        if skewed && self.settings.signed {
            return Recorded::Unattributed("signed_beat_skewed");
        }
        if !self.members.contains_key(key) {
            if self.seen >= self.settings.max_seen {
                return Recorded::Unattributed("too_many_programs");
            }
            self.seen += 1;
            let m = Member::new(MemberKind::Seen, beat.program_id.to_string(), None, now);
            self.members.insert(key.clone(), Box::new(m));
        }
        let s = &self.settings;
        let judged = match s.clock {
            ClockSource::Broker => beat.broker_time.unwrap_or(now),
            ClockSource::Beat => beat.beat.timestamp,
        }
        .min(now);
        let late_after = s.timing.late_after;
        let Some(m) = self.members.get_mut(key) else {
            return Recorded::Unattributed("unknown_member");
        };
        // A beat of the same sidecar run with a `seq` not above the newest,
        // or of an earlier run, is a repeat: the operator's own re-read (an
        // offset it already read) is ignored; a new message repeating an
        // old beat is a replay (someone re-producing captured beats to fake
        // life) and refused.
        if let (Some(sc), Some(seq)) = (&beat.beat.sidecar, beat.beat.seq)
            && let Some((started, last_seq)) = m.last_seq
            && (sc.started_at < started || (started == sc.started_at && seq <= last_seq))
        {
            let new_message = match (m.last_position, beat.position) {
                (Some((p, o)), Some((p2, o2))) if p == p2 => o2 > o,
                _ => true,
            };
            return if new_message {
                Recorded::Unattributed("replayed")
            } else {
                Recorded::Member {
                    revived: false,
                    skewed,
                }
            };
        }
        if let (Some(sc), Some(seq)) = (&beat.beat.sidecar, beat.beat.seq) {
            m.last_seq = Some((sc.started_at, seq));
        }
        if beat.position.is_some() {
            m.last_position = beat.position;
        }
        if m.facts.last_beat.is_some_and(|last| judged <= last) {
            // A replayed or reordered beat: the newest one already counts.
            return Recorded::Member {
                revived: false,
                skewed,
            };
        }
        let revived = !matches!(m.judgement.state, MemberState::Up | MemberState::Failing);
        m.facts.last_beat = Some(judged);
        m.facts.stopping = beat.beat.phase == Some(Phase::Stopping);
        m.facts.beat_interval = beat
            .beat
            .interval_secs
            .map(|s| SignedDuration::from_secs(i64::from(s)));
        m.facts.app_failing = beat
            .beat
            .app
            .as_ref()
            .filter(|a| a.status == AppStatus::Failing)
            .map(|a| a.reason.unwrap_or("no reason given").to_string());
        if m.kind == MemberKind::Seen {
            m.facts.clock_start = m.facts.clock_start.or(Some(judged));
        }
        if let Some(sc) = &beat.beat.sidecar
            && m.sidecar_version.as_deref() != Some(sc.version)
        {
            m.sidecar_version = Some(sc.version.to_string());
        }
        m.availability.beat(judged, late_after);
        self.last_beat = self.last_beat.max(Some(judged));
        Recorded::Member { revived, skewed }
    }

    /// Which member a beat is for: our sidecars name their monitor and pod;
    /// anything else is a program outside the cluster.
    fn attribute<'b>(&self, beat: &Incoming<'b>) -> Result<Claim<'b>, Recorded> {
        let b = beat.beat;
        if let Some(monitor) = b.monitor {
            if monitor.split_once('/') != Some((&self.id.namespace, &self.id.name)) {
                return Err(Recorded::NotMine);
            }
            let pod = b.pod.as_ref().ok_or(Recorded::Unattributed("no_pod"))?;
            if pod.namespace != self.id.namespace {
                return Err(Recorded::Unattributed("pod_namespace_mismatch"));
            }
            let uid = pod.uid.ok_or(Recorded::Unattributed("no_pod_uid"))?;
            return Ok(Claim::Pod {
                uid,
                name: pod.name,
            });
        }
        // A beat naming a pod is our sidecar's and is judged only as one:
        // without its monitor it is no program outside the cluster, or a
        // forged copy of a pod's beat would make a second member of that
        // pod's program id, whether or not the pod is still there (so the
        // live read and a new leader's replay would judge it differently).
        if b.pod.is_some() {
            return Err(Recorded::Unattributed("pod_beat_without_monitor"));
        }
        if self.settings.expected.contains(beat.program_id) || (self.settings.track_unexpected) {
            Ok(Claim::Program(beat.program_id))
        } else {
            Err(Recorded::NotMine)
        }
    }

    /// Marks the members an earlier leader (or an earlier run) already
    /// alarmed about, by program id: when they are first judged Stale here,
    /// no second HeartbeatStale is raised.
    pub fn inherit_alarms<'a>(&mut self, program_ids: impl IntoIterator<Item = &'a str>) {
        let ids: BTreeSet<&str> = program_ids.into_iter().collect();
        for m in self.members.values_mut() {
            if !m.judged && ids.contains(m.program_id.as_str()) {
                m.alarmed = true;
            }
        }
    }

    /// Judges every member at `now`; returns the changes, with the alarms
    /// they raise (none while `silence` holds, none for seen programs).
    pub fn evaluate(&mut self, now: Timestamp, silence: Option<&Silence>) -> Vec<Transition> {
        let retention = self.settings.seen_retention;
        let before = self.members.len();
        self.members.retain(|_, m| {
            m.kind != MemberKind::Seen
                || m.facts
                    .last_beat
                    .is_some_and(|t| now.duration_since(t) <= retention)
        });
        self.seen -= before - self.members.len();
        let mut out = Vec::new();
        for m in self.members.values_mut() {
            let j = judge(&m.facts, &self.settings.timing, &self.view, now);
            let from = m.judgement.state;
            let changed = !m.judged || j.state != from;
            let mut alarm = None;
            match j.state {
                MemberState::Stale
                    if silence.is_none() && m.kind != MemberKind::Seen && !m.alarmed =>
                {
                    m.alarmed = true;
                    alarm = Some(Alarm::Stale);
                }
                MemberState::Up | MemberState::Failing if m.alarmed => {
                    m.alarmed = false;
                    alarm = Some(Alarm::Recovered);
                }
                MemberState::Stopped if changed && m.judged => {
                    m.alarmed = false;
                    alarm = Some(Alarm::Stopped);
                }
                _ => {}
            }
            if changed {
                m.since = now;
            }
            if (changed && m.judged) || alarm.is_some() {
                out.push(Transition {
                    program_id: m.program_id.clone(),
                    pod: m.pod.clone(),
                    from,
                    to: j.state,
                    reason: j.reason.clone(),
                    alarm,
                });
            }
            m.judged = true;
            m.judgement = j;
        }
        out
    }

    /// The first instant after `now` at which some member's state changes
    /// without a beat.
    pub fn next_deadline(&self, now: Timestamp) -> Option<Timestamp> {
        self.members
            .values()
            .filter_map(|m| next_deadline(&m.facts, &self.settings.timing, &self.view, now))
            .min()
    }

    /// Every member.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values().map(|m| &**m)
    }

    /// Every member, to read availability (which prunes as it goes).
    pub fn members_mut(&mut self) -> impl Iterator<Item = &mut Member> {
        self.members.values_mut().map(|m| &mut **m)
    }
}

mod checkpoint;
pub use checkpoint::{MemberRecord, TableRecord};

#[cfg(test)]
mod tests;
