//! Serde round trips of the HeartbeatMonitor spec and status, and the defaults a sparse YAML gets.

use heartbeat_crds::monitor::{
    AppHealthMode, ClockSource, HeartbeatMonitorSpec, HeartbeatMonitorStatus, MemberState,
    MemberStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

const FULL: &str = r#"
topic: heartbeats
intervalSeconds: 10
missedBeatsTolerated: 3
graceSeconds: 5
brokerSecretRef: {name: kafka}
selector: {matchLabels: {app: ingest}}
programId: "{namespace}.{pod}"
appHealth:
  mode: File
  file: {path: /var/run/heartbeat/health, maxAgeSeconds: 30}
  injectLivenessProbe: true
external: {expectedPrograms: [lab-uploader-1]}
producer: {linger.ms: "5"}
sidecar: {image: "heartbeat-sidecar:0.1.0"}
signing: {enabled: true}
suspend: false
maintenanceWindows:
  - {schedule: "0 2 * * SUN", durationMinutes: 60, timeZone: Europe/Berlin}
clock: {source: Beat, maxSkewSeconds: 60}
"#;

#[test]
fn full_spec_round_trips_through_yaml_and_json() {
    let spec: HeartbeatMonitorSpec = serde_yaml::from_str(FULL).expect("full spec");
    assert_eq!(spec.app_health.mode, AppHealthMode::File);
    assert_eq!(spec.clock.source, ClockSource::Beat);
    assert_eq!(spec.maintenance_windows[0].time_zone, "Europe/Berlin");
    let json = serde_json::to_string(&spec).expect("to json");
    let back: HeartbeatMonitorSpec = serde_json::from_str(&json).expect("from json");
    assert_eq!(back, spec);
    let yaml = serde_yaml::to_string(&spec).expect("to yaml");
    assert_eq!(
        serde_yaml::from_str::<HeartbeatMonitorSpec>(&yaml).expect("back"),
        spec
    );
}

#[test]
fn sparse_spec_gets_the_documented_defaults() {
    let spec: HeartbeatMonitorSpec = serde_yaml::from_str(
        "{topic: hb, intervalSeconds: 10, brokerSecretRef: {name: kafka}, selector: {}}",
    )
    .expect("sparse spec");
    assert_eq!(spec.missed_beats_tolerated, 3);
    assert_eq!(spec.grace_seconds, 5);
    assert_eq!(spec.program_id, "{namespace}.{pod}");
    assert_eq!(spec.app_health.mode, AppHealthMode::None);
    assert_eq!(spec.clock.source, ClockSource::Broker);
    assert_eq!(spec.clock.max_skew_seconds, 120);
    assert!(!spec.suspend);
}

#[test]
fn status_round_trips() {
    let t = Time("2026-11-22T23:14:51Z".parse().expect("ts"));
    let status = HeartbeatMonitorStatus {
        observed_generation: Some(3),
        conditions: vec![Condition {
            type_: "Ready".into(),
            status: "True".into(),
            reason: "Consuming".into(),
            message: "consuming heartbeats from 127.0.0.1:9092".into(),
            last_transition_time: t.clone(),
            observed_generation: Some(3),
        }],
        expected: 3,
        up: 2,
        stale: 1,
        last_beat_time: Some(t.clone()),
        members: vec![MemberStatus {
            program_id: "data.ingest-1".into(),
            pod: Some("ingest-1".into()),
            state: MemberState::Stale,
            last_beat_time: Some(t.clone()),
            since: Some(t),
            reason: Some("no beat for 35s".into()),
            availability: Some("99.50%".into()),
        }],
        ..Default::default()
    };
    let json = serde_json::to_value(&status).expect("to json");
    assert_eq!(json["members"][0]["state"], "Stale");
    assert_eq!(json["members"][0]["availability"], "99.50%");
    assert_eq!(json["lastBeatTime"], "2026-11-22T23:14:51Z");
    let back: HeartbeatMonitorStatus = serde_json::from_value(json).expect("back");
    assert_eq!(back, status);
}
