//! HeartbeatMonitors for tests, typed: a builder over the CRD's own spec
//! types (so a renamed or retyped field fails to compile here instead of
//! being sent as YAML the API server prunes), and the status helpers that
//! read `HeartbeatMonitorStatus` the same way.

use std::collections::BTreeMap;

use heartbeat_crds::monitor::{
    AppHealth, External, HeartbeatMonitor, HeartbeatMonitorSpec, HeartbeatMonitorStatus,
    MaintenanceWindow, MemberState, MemberStatus, SecretRef, Signing,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};

/// Builds a HeartbeatMonitor: `new` sets what every test sets (topic,
/// broker Secret `kafka`, timing, the label of the operator that owns it);
/// the other methods add one spec field each.
#[derive(Clone, Debug)]
pub struct MonitorBuilder {
    monitor: HeartbeatMonitor,
}

impl MonitorBuilder {
    /// Monitor `name` on `topic` with the broker Secret `kafka`, a beat
    /// every `interval_secs`, Stale after 3 missed beats plus `grace_secs`.
    pub fn new(name: &str, topic: &str, (interval_secs, grace_secs): (u64, u64)) -> Self {
        let spec = HeartbeatMonitorSpec {
            topic: topic.to_string(),
            interval_seconds: secs(interval_secs),
            missed_beats_tolerated: 3,
            grace_seconds: secs(grace_secs),
            broker_secret_ref: SecretRef {
                name: "kafka".to_string(),
            },
            selector: None,
            program_id: heartbeat_crds::program_id::DEFAULT_TEMPLATE.to_string(),
            app_health: AppHealth::default(),
            external: None,
            producer: BTreeMap::new(),
            sidecar: None,
            signing: None,
            suspend: false,
            maintenance_windows: Vec::new(),
            clock: Default::default(),
        };
        MonitorBuilder {
            monitor: HeartbeatMonitor::new(name, spec),
        }
    }

    /// Labelled `(key, value)`: the monitor selector of the operator under test.
    pub fn labelled(mut self, (key, value): &(String, String)) -> Self {
        self.monitor
            .metadata
            .labels
            .get_or_insert_default()
            .insert(key.clone(), value.clone());
        self
    }

    /// Covers the pods labelled `app=<app>`.
    pub fn selecting_app(mut self, app: &str) -> Self {
        self.monitor.spec.selector = Some(LabelSelector {
            match_labels: Some(BTreeMap::from([("app".to_string(), app.to_string())])),
            ..LabelSelector::default()
        });
        self
    }

    /// Expects the external programs `ids`.
    pub fn expecting(mut self, ids: &[&str]) -> Self {
        self.monitor.spec.external = Some(External {
            expected_programs: ids.iter().map(|id| id.to_string()).collect(),
        });
        self
    }

    /// Reads its broker settings from Secret `name` instead of `kafka`.
    pub fn broker_secret(mut self, name: &str) -> Self {
        self.monitor.spec.broker_secret_ref.name = name.to_string();
        self
    }

    /// Sidecars sign their beats.
    pub fn signing(mut self) -> Self {
        self.monitor.spec.signing = Some(Signing { enabled: true });
        self
    }

    /// Suspended: members tracked, no alarm.
    pub fn suspended(mut self) -> Self {
        self.monitor.spec.suspend = true;
        self
    }

    /// A maintenance window.
    pub fn maintenance(mut self, window: MaintenanceWindow) -> Self {
        self.monitor.spec.maintenance_windows.push(window);
        self
    }

    /// How the sidecar judges the application.
    pub fn app_health(mut self, health: AppHealth) -> Self {
        self.monitor.spec.app_health = health;
        self
    }

    /// Any other change to the spec.
    pub fn with(mut self, change: impl FnOnce(&mut HeartbeatMonitorSpec)) -> Self {
        change(&mut self.monitor.spec);
        self
    }

    /// The `app` label the monitor selects (set by [`Self::selecting_app`]).
    pub fn selected_app(&self) -> Option<String> {
        let selector = self.monitor.spec.selector.as_ref()?;
        selector.match_labels.as_ref()?.get("app").cloned()
    }

    pub fn build(self) -> HeartbeatMonitor {
        self.monitor
    }
}

/// Test timings are small: a value past u32 is a test bug.
fn secs(value: u64) -> u32 {
    u32::try_from(value).expect("seconds fit in u32")
}

/// The status in a `kubectl get hbm NAME -o json` answer (empty before the
/// first write).
pub fn status_from_json(json: &str) -> Result<HeartbeatMonitorStatus, String> {
    let monitor: HeartbeatMonitor =
        serde_json::from_str(json).map_err(|e| format!("not a HeartbeatMonitor: {e}"))?;
    Ok(monitor.status.unwrap_or_default())
}

/// Condition `kind` (a `heartbeat_crds::conditions` type) of a status.
pub fn condition<'a>(status: &'a HeartbeatMonitorStatus, kind: &str) -> Option<&'a Condition> {
    status.conditions.iter().find(|c| c.type_ == kind)
}

/// Whether condition `kind` has status `value` (`"True"`, `"False"`, `"Unknown"`).
pub fn condition_is(status: &HeartbeatMonitorStatus, kind: &str, value: &str) -> bool {
    condition(status, kind).is_some_and(|c| c.status == value)
}

/// Condition `kind`'s reason, when the condition is there.
pub fn condition_reason<'a>(status: &'a HeartbeatMonitorStatus, kind: &str) -> Option<&'a str> {
    condition(status, kind).map(|c| c.reason.as_str())
}

/// Condition `kind`'s message ("" when the condition is absent).
pub fn condition_message<'a>(status: &'a HeartbeatMonitorStatus, kind: &str) -> &'a str {
    condition(status, kind).map_or("", |c| c.message.as_str())
}

/// The listed member whose programId or pod is `who`.
pub fn member<'a>(status: &'a HeartbeatMonitorStatus, who: &str) -> Option<&'a MemberStatus> {
    status
        .members
        .iter()
        .find(|m| m.program_id == who || m.pod.as_deref() == Some(who))
}

/// Whether the listed member `who` is in `state`.
pub fn member_is(status: &HeartbeatMonitorStatus, who: &str, state: MemberState) -> bool {
    member(status, who).is_some_and(|m| m.state == state)
}

/// Whether `who` is either not listed or listed in `state`.
pub fn member_absent_or(status: &HeartbeatMonitorStatus, who: &str, state: MemberState) -> bool {
    member(status, who).is_none_or(|m| m.state == state)
}

/// `status.lastBeatTime`.
pub fn last_beat(status: &HeartbeatMonitorStatus) -> Option<jiff::Timestamp> {
    status.last_beat_time.as_ref().map(|t| t.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use heartbeat_crds::conditions::{HEALTHY, READY};

    #[test]
    fn the_builder_sets_each_field_it_names_and_serialises_as_the_crd_spells_it() {
        let label = ("heartbeat.dev/operator".to_string(), "t1".to_string());
        let monitor = MonitorBuilder::new("ingest", "topic-a", (2, 3))
            .labelled(&label)
            .selecting_app("ingest")
            .expecting(&["lab-1"])
            .signing()
            .suspended()
            .build();
        let json = serde_json::to_value(&monitor).expect("json");
        assert_eq!(json["metadata"]["labels"]["heartbeat.dev/operator"], "t1");
        let spec = &json["spec"];
        assert_eq!(spec["topic"], "topic-a");
        assert_eq!(
            (
                spec["intervalSeconds"].as_u64(),
                spec["graceSeconds"].as_u64()
            ),
            (Some(2), Some(3))
        );
        assert_eq!(spec["brokerSecretRef"]["name"], "kafka");
        assert_eq!(spec["selector"]["matchLabels"]["app"], "ingest");
        assert_eq!(spec["external"]["expectedPrograms"][0], "lab-1");
        assert_eq!(
            (
                spec["signing"]["enabled"].as_bool(),
                spec["suspend"].as_bool()
            ),
            (Some(true), Some(true))
        );
    }

    #[test]
    fn status_helpers_read_conditions_and_members_from_typed_status() {
        let status: HeartbeatMonitorStatus = serde_json::from_value(serde_json::json!({
            "up": 2,
            "conditions": [{"type": "Ready", "status": "True", "reason": "Reading", "message": "ok",
                            "lastTransitionTime": "2026-12-07T00:00:00Z"}],
            "members": [{"programId": "a", "pod": "p-a", "state": "Up"}],
            "lastBeatTime": "2026-12-07T00:00:01Z",
        }))
        .expect("status");
        assert!(condition_is(&status, READY, "True"));
        assert!(!condition_is(&status, HEALTHY, "True"));
        assert_eq!(
            (
                condition_reason(&status, READY),
                condition_message(&status, HEALTHY)
            ),
            (Some("Reading"), "")
        );
        assert!(
            member_is(&status, "p-a", MemberState::Up) && member_is(&status, "a", MemberState::Up)
        );
        assert!(!member_is(&status, "b", MemberState::Up));
        assert!(member_absent_or(&status, "b", MemberState::Stale));
        assert!(!member_absent_or(&status, "a", MemberState::Stale));
        assert!(last_beat(&status).is_some());
    }
}
