//! Events on member transitions (`HeartbeatStale`, `HeartbeatRecovered`,
//! `HeartbeatStopped`), regarding the monitor with the pod (or the
//! program's entry in the monitor) as the related object. kube's Recorder folds repeats into a series; on top of that a
//! per-monitor budget keeps a flapping or mass-failing monitor from
//! flooding the API server (what is not published is counted).

use heartbeat_crds::conditions::reason;
use heartbeat_crds::monitor::HeartbeatMonitor;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;
use kube::runtime::events::{Event, EventType};

use crate::membership::table::{Alarm, Transition};
use crate::metrics::EventLabels;

use super::Context;

/// Events a monitor may publish in a burst.
const BURST: f64 = 20.0;
/// Then one more every this long.
const REFILL: SignedDuration = SignedDuration::from_secs(3);

/// A token bucket of Events for one monitor. Pure.
#[derive(Debug, Clone)]
pub struct Budget {
    tokens: f64,
    at: Option<Timestamp>,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            tokens: BURST,
            at: None,
        }
    }
}

impl Budget {
    /// Takes one Event's worth at `now`; false when spent.
    pub fn take(&mut self, now: Timestamp) -> bool {
        if let Some(at) = self.at {
            let refill = now.duration_since(at).as_secs_f64() / REFILL.as_secs_f64();
            self.tokens = (self.tokens + refill.max(0.0)).min(BURST);
        }
        self.at = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The Event for a transition that raises one. The note is stable for a
/// member and alarm, so the Recorder can fold repeats into a series.
pub fn event_for(t: &Transition, stale_after: SignedDuration) -> Option<Event> {
    let alarm = t.alarm?;
    let who = match &t.pod {
        Some(pod) => format!("pod {pod} (program {})", t.program_id),
        None => format!("program {}", t.program_id),
    };
    let (type_, note) = match alarm {
        Alarm::Stale => (
            EventType::Warning,
            format!(
                "{who} is Stale: no beat for over {}s",
                stale_after.as_secs()
            ),
        ),
        Alarm::Recovered => (EventType::Normal, format!("{who} beats again")),
        Alarm::Stopped => (EventType::Normal, format!("{who} stopped: {}", t.reason)),
    };
    Some(Event {
        type_,
        reason: alarm.reason().into(),
        note: Some(note),
        action: "Track".into(),
        secondary: None,
    })
}

/// The Event for pods that match a monitor but came without the sidecar
/// (created while the webhook was down or unreachable, e.g. a wrong CA in
/// the webhook configuration): they were admitted, so nothing else says so.
pub fn uninjected_event(new: &[String], namespace: &str) -> Option<Event> {
    if new.is_empty() {
        return None;
    }
    let shown: Vec<&str> = new.iter().take(5).map(String::as_str).collect();
    Some(Event {
        type_: EventType::Warning,
        reason: reason::PODS_WITHOUT_SIDECAR.into(),
        note: Some(format!(
            "{} pod(s) match but were created without the heartbeat sidecar ({}{}): the webhook was not called or failed (it fails open); check the operator and its webhook configuration's caBundle, then recreate them (kubectl -n {namespace} rollout restart ...)",
            new.len(),
            shown.join(", "),
            if new.len() > 5 { ", ..." } else { "" }
        )),
        action: "Inject".into(),
        secondary: None,
    })
}

/// Publishes one Event about the monitor within its budget (what is over
/// it is counted and logged, not published).
pub async fn publish_one(
    ctx: &Context,
    monitor: &HeartbeatMonitor,
    budget: &std::sync::Mutex<Budget>,
    ev: Event,
) {
    let regarding: ObjectReference = monitor.object_ref(&());
    let labels = EventLabels {
        reason: ev.reason.clone(),
    };
    if !crate::consumer::lock(budget).take(Timestamp::now()) {
        ctx.metrics.events_suppressed.get_or_create(&labels).inc();
        tracing::warn!(monitor = ?regarding.name, reason = %ev.reason, note = ?ev.note, "event budget spent; not published");
        return;
    }
    tracing::info!(monitor = ?regarding.name, reason = %ev.reason, note = ?ev.note, "event");
    match ctx.recorder.publish(&ev, &regarding).await {
        Ok(()) => {
            ctx.metrics.events.get_or_create(&labels).inc();
        }
        Err(e) => tracing::warn!(error = %e, reason = %ev.reason, "cannot publish the Event"),
    }
}

/// The related object of a member's Event: its pod, or for a program
/// outside the cluster the monitor's entry for it (`status.members{id}`,
/// as the kubelet names a container). The Recorder folds Events with the
/// same reason, regarding and related object into one series: without a
/// reference of their own, two programs going Stale would be one Event
/// naming only the first.
pub fn related(monitor: &ObjectReference, t: &Transition) -> ObjectReference {
    match &t.pod {
        Some(pod) => ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(pod.clone()),
            namespace: monitor.namespace.clone(),
            ..ObjectReference::default()
        },
        None => ObjectReference {
            field_path: Some(format!("status.members{{{}}}", t.program_id)),
            ..monitor.clone()
        },
    }
}

/// The Events of `transitions` about `monitor`, each with its member as
/// the related object.
pub fn for_transitions(
    monitor: &HeartbeatMonitor,
    transitions: &[Transition],
    stale_after: SignedDuration,
) -> Vec<Event> {
    let regarding = monitor.object_ref(&());
    transitions
        .iter()
        .filter_map(|t| {
            let mut ev = event_for(t, stale_after)?;
            ev.secondary = Some(related(&regarding, t));
            Some(ev)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use heartbeat_crds::monitor::MemberState;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).expect("valid")
    }

    #[test]
    fn pods_without_the_sidecar_are_named_with_how_to_fix_it() {
        assert!(uninjected_event(&[], "d").is_none());
        let ev = uninjected_event(&["p1".into(), "p2".into()], "data").expect("event");
        assert_eq!(ev.reason, "PodsWithoutSidecar");
        let note = ev.note.unwrap_or_default();
        assert!(
            note.contains("p1, p2")
                && note.contains("caBundle")
                && note.contains("kubectl -n data"),
            "{note}"
        );
    }

    #[test]
    fn every_member_has_a_related_object_of_its_own() {
        let monitor = ObjectReference {
            api_version: Some("heartbeat.dev/v1alpha1".into()),
            kind: Some("HeartbeatMonitor".into()),
            name: Some("lab".into()),
            namespace: Some("data".into()),
            uid: Some("u-1".into()),
            ..ObjectReference::default()
        };
        let member = |id: &str, pod: Option<&str>| Transition {
            program_id: id.into(),
            pod: pod.map(str::to_string),
            from: MemberState::Late,
            to: MemberState::Stale,
            reason: String::new(),
            alarm: Some(Alarm::Stale),
        };
        let a = related(&monitor, &member("lab-1", None));
        let b = related(&monitor, &member("lab-2", None));
        assert_ne!(a, b, "two programs would fold into one Event");
        assert_eq!(a.field_path.as_deref(), Some("status.members{lab-1}"));
        assert_eq!(a.name.as_deref(), Some("lab"));
        let p = related(&monitor, &member("data.ingest-1", Some("ingest-1")));
        assert_eq!(
            (p.kind.as_deref(), p.name.as_deref(), p.namespace.as_deref()),
            (Some("Pod"), Some("ingest-1"), Some("data"))
        );
    }

    #[test]
    fn a_burst_is_allowed_then_one_event_per_refill() {
        let mut b = Budget::default();
        assert!((0..20).all(|_| b.take(t(0))));
        assert!(!b.take(t(0)));
        assert!(!b.take(t(2)));
        assert!(b.take(t(3)));
        assert!(!b.take(t(3)));
        assert!(
            (0..20).all(|_| b.take(t(1000))),
            "refilled, never above the burst"
        );
        assert!(!b.take(t(1000)));
    }

    #[test]
    fn stale_is_a_warning_naming_the_pod_and_quiet_transitions_raise_nothing() {
        let mut tr = Transition {
            program_id: "data.ingest-1".into(),
            pod: Some("ingest-1".into()),
            from: MemberState::Late,
            to: MemberState::Stale,
            reason: "no beat for 36s".into(),
            alarm: Some(Alarm::Stale),
        };
        let ev = event_for(&tr, SignedDuration::from_secs(35)).expect("event");
        assert_eq!(ev.type_, EventType::Warning);
        assert_eq!(ev.reason, "HeartbeatStale");
        assert_eq!(
            ev.note.as_deref(),
            Some("pod ingest-1 (program data.ingest-1) is Stale: no beat for over 35s")
        );
        tr.alarm = None;
        assert!(event_for(&tr, SignedDuration::from_secs(35)).is_none());
    }
}
