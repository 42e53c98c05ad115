//! A monitor's member table as a checkpoint keeps it, so that a new leader
//! starts from it and replays only what came after (issue 20). Only the
//! facts beats established are kept; every state is judged again from
//! them, so a checkpoint never makes a member Up that its beats do not
//! show. A checkpoint comes off a topic like a beat: each record is bounded
//! and checked on the way in, and one that fails is dropped.

use heartbeat_crds::beat::{MAX_REASON_CHARS, MAX_VERSION_CHARS};
use heartbeat_crds::sidecar_contract::MAX_INTERVAL_SECS;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use super::{Member, MemberKey, MemberKind, Table};
use crate::membership::availability::{Availability, AvailabilityRecord};

/// Longest program id, pod name or uid taken back (Kubernetes names are
/// at most 253 characters).
const MAX_ID_CHARS: usize = 253;

/// A table's members and what its reading covered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableRecord {
    /// The table saw the topic continuously from then.
    pub sighted_since: Option<Timestamp>,
    pub members: Vec<MemberRecord>,
}

/// What one member's beats established.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// A pod's uid and name; `None`: a program outside the cluster.
    pub pod: Option<(String, String)>,
    pub program_id: String,
    pub last_beat: Option<Timestamp>,
    pub stopping: bool,
    pub beat_interval_secs: Option<u32>,
    pub app_failing: Option<String>,
    pub sidecar_version: Option<String>,
    /// The newest sidecar run (its start) and `seq`: replays stay refused.
    pub last_seq: Option<(Timestamp, u64)>,
    pub last_position: Option<(i32, i64)>,
    pub availability: AvailabilityRecord,
}

impl Table {
    /// The members that have beaten, as a checkpoint keeps them.
    pub fn checkpoint(&self) -> TableRecord {
        let members = self
            .members
            .iter()
            .filter(|(_, m)| m.facts.last_beat.is_some())
            .map(|(key, m)| MemberRecord {
                pod: match key {
                    MemberKey::Pod(uid) => Some((uid.clone(), m.pod.clone().unwrap_or_default())),
                    MemberKey::Program(_) => None,
                },
                program_id: m.program_id.clone(),
                last_beat: m.facts.last_beat,
                stopping: m.facts.stopping,
                beat_interval_secs: m
                    .facts
                    .beat_interval
                    .and_then(|d| u32::try_from(d.as_secs()).ok()),
                app_failing: m.facts.app_failing.clone(),
                sidecar_version: m.sidecar_version.clone(),
                last_seq: m.last_seq,
                last_position: m.last_position,
                availability: m.availability.record(),
            })
            .collect();
        TableRecord {
            sighted_since: self.sighted_since,
            members,
        }
    }

    /// Takes back what a checkpoint says each member's beats established,
    /// where it is newer than what the table holds. Programs are taken as
    /// the spec says now (an expected one, or a seen one within the cap);
    /// pods only when the table lists them (the reconciler syncs pods
    /// before the monitor attaches). Returns how many members were
    /// restored.
    pub fn restore(&mut self, record: &TableRecord, now: Timestamp) -> usize {
        let mut restored = 0;
        for r in &record.members {
            if !valid(r, now) {
                continue;
            }
            let key = match &r.pod {
                Some((uid, _)) => MemberKey::Pod(uid.clone()),
                None => MemberKey::Program(r.program_id.clone()),
            };
            if !self.members.contains_key(&key) {
                // Pods come from the pod list (synced before a monitor
                // attaches), never from a checkpoint: one that left since
                // stays gone, and a record cannot add members.
                if r.pod.is_some()
                    || !self.settings.track_unexpected
                    || self.seen >= self.settings.max_seen
                {
                    continue;
                }
                self.seen += 1;
                let mut m = Member::new(MemberKind::Seen, r.program_id.clone(), None, now);
                m.facts.clock_start = r.last_beat;
                self.members.insert(key.clone(), Box::new(m));
            }
            let Some(m) = self.members.get_mut(&key) else {
                continue;
            };
            if m.facts.last_beat >= r.last_beat {
                continue;
            }
            m.facts.last_beat = r.last_beat;
            m.facts.stopping = r.stopping;
            m.facts.beat_interval = r
                .beat_interval_secs
                .map(|s| SignedDuration::from_secs(i64::from(s)));
            m.facts.app_failing = r.app_failing.clone();
            m.sidecar_version = r.sidecar_version.clone();
            m.last_seq = r.last_seq;
            m.last_position = r.last_position;
            m.availability = Availability::from_record(&r.availability, now);
            self.last_beat = self.last_beat.max(r.last_beat);
            restored += 1;
        }
        restored
    }
}

/// A record within the bounds a beat has: nothing from the future, no
/// interval a monitor could not set, no oversized text.
fn valid(r: &MemberRecord, now: Timestamp) -> bool {
    let short = |s: &str, max: usize| s.chars().count() <= max;
    r.last_beat.is_some_and(|t| t <= now)
        && short(&r.program_id, MAX_ID_CHARS)
        && r.pod
            .as_ref()
            .is_none_or(|(uid, name)| short(uid, MAX_ID_CHARS) && short(name, MAX_ID_CHARS))
        && r.beat_interval_secs
            .is_none_or(|s| (1..=MAX_INTERVAL_SECS).contains(&s))
        && r.app_failing
            .as_deref()
            .is_none_or(|s| short(s, MAX_REASON_CHARS))
        && r.sidecar_version
            .as_deref()
            .is_none_or(|s| short(s, MAX_VERSION_CHARS))
        && r.last_seq.is_none_or(|(started, _)| started <= now)
}
