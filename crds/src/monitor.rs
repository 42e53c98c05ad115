//! The `HeartbeatMonitor` custom resource (heartbeat.dev/v1alpha1): spec,
//! status, printer columns and the validation the API server enforces.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiext;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::core::Rule;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::sidecar_contract::{MAX_INTERVAL_SECS, MAX_NAME_LEN, MaxAge, TOPIC_PATTERN};

/// librdkafka producer properties a monitor may set for its sidecars. Anything
/// touching where or as whom the sidecar connects comes from the broker
/// Secret instead, so a monitor cannot redirect or weaken it; the queue
/// length is the sidecar's own bound (HEARTBEAT_QUEUE_CAPACITY).
pub const PRODUCER_ALLOWLIST: &[&str] = &[
    "acks",
    "batch.num.messages",
    "batch.size",
    "client.id",
    "compression.type",
    "enable.idempotence",
    "linger.ms",
    "message.max.bytes",
    "message.timeout.ms",
    "queue.buffering.max.kbytes",
    "request.timeout.ms",
    "retries",
    "retry.backoff.ms",
    "socket.keepalive.enable",
    "socket.timeout.ms",
];

/// Regex for a `programId` template: allowed characters and known placeholders only.
pub const PROGRAM_ID_TEMPLATE_PATTERN: &str =
    r"^([A-Za-z0-9._-]|\{(namespace|pod|container|monitor|node)\})+$";

/// Watches the heartbeats of a set of pods (and external programs) on one Kafka topic.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "heartbeat.dev",
    version = "v1alpha1",
    kind = "HeartbeatMonitor",
    plural = "heartbeatmonitors",
    shortname = "hbm",
    namespaced,
    status = "HeartbeatMonitorStatus",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Topic","type":"string","jsonPath":".spec.topic"}"#,
    printcolumn = r#"{"name":"Interval","type":"integer","jsonPath":".spec.intervalSeconds"}"#,
    printcolumn = r#"{"name":"Expected","type":"integer","jsonPath":".status.expected"}"#,
    printcolumn = r#"{"name":"Up","type":"integer","jsonPath":".status.up"}"#,
    printcolumn = r#"{"name":"Stale","type":"integer","jsonPath":".status.stale"}"#,
    printcolumn = r#"{"name":"Last Beat","type":"date","jsonPath":".status.lastBeatTime"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Healthy","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Healthy\")].status"}"#
)]
#[x_kube(validation = Rule::new("has(self.selector) || has(self.external)").message("set spec.selector (pods to cover) or spec.external (programs outside the cluster), or both"))]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatMonitorSpec {
    /// Kafka topic the beats are produced to and consumed from.
    #[schemars(pattern(TOPIC_PATTERN))]
    pub topic: String,

    /// Seconds between two beats of a member (1..86400).
    #[schemars(range(min = 1, max = MAX_INTERVAL_SECS))]
    pub interval_seconds: u32,

    /// Beats a member may miss before it is Stale: it is Stale once
    /// intervalSeconds * missedBeatsTolerated + graceSeconds passed with no beat.
    #[serde(default = "default_missed_beats")]
    #[schemars(range(min = 1, max = 1000))]
    pub missed_beats_tolerated: u32,

    /// Extra seconds of slack on top of the missed beats before Stale.
    #[serde(default = "default_grace_seconds")]
    #[schemars(range(min = 0, max = 86400))]
    pub grace_seconds: u32,

    /// Secret in the monitor's namespace whose keys are librdkafka properties
    /// (bootstrap.servers, security.protocol, sasl.*, ssl.*). Injected into the
    /// sidecar through envFrom, never copied.
    pub broker_secret_ref: SecretRef,

    /// Pods this monitor covers; the webhook injects the sidecar into them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,

    /// Template of a pod's program id (the beat key is `<programId>_heartbeat`).
    /// Placeholders: {namespace} {pod} {container} {monitor} {node}.
    #[serde(default = "default_program_id")]
    #[schemars(pattern(PROGRAM_ID_TEMPLATE_PATTERN), length(max = MAX_NAME_LEN))]
    pub program_id: String,

    /// How the sidecar judges that the application itself is alive.
    #[serde(default)]
    pub app_health: AppHealth,

    /// Programs outside the cluster that beat on the same topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<External>,

    /// Extra librdkafka producer properties for the sidecar (allowlisted keys only).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "producer_schema")]
    pub producer: BTreeMap<String, String>,

    /// Overrides of the operator's sidecar defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sidecar: Option<SidecarOverrides>,

    /// HMAC-SHA256 signing of beats, each pod with a key of its own from the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing: Option<Signing>,

    /// Stop alarming, like a CronJob's suspend: members are still tracked
    /// and counted (Stale included), but no HeartbeatStale Event is raised
    /// and the Healthy condition is Unknown (reason Suspended) instead of False.
    #[serde(default)]
    pub suspend: bool,

    /// Recurring quiet periods in which a missed beat raises no alarm.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub maintenance_windows: Vec<MaintenanceWindow>,

    /// Which clock judges lateness.
    #[serde(default)]
    pub clock: Clock,
}

fn default_missed_beats() -> u32 {
    3
}
fn default_grace_seconds() -> u32 {
    5
}
fn default_program_id() -> String {
    crate::program_id::DEFAULT_TEMPLATE.to_string()
}

fn producer_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let allowed = PRODUCER_ALLOWLIST
        .iter()
        .map(|k| format!("'{k}'"))
        .collect::<Vec<_>>()
        .join(", ");
    schemars::json_schema!({
        "type": "object",
        "description": "Extra librdkafka producer properties for the sidecar (allowlisted keys only).",
        "additionalProperties": {"type": "string"},
        "maxProperties": PRODUCER_ALLOWLIST.len(),
        "x-kubernetes-validations": [{
            "rule": format!("self.all(k, k in [{allowed}])"),
            "message": format!("producer may only set these librdkafka properties: {}", PRODUCER_ALLOWLIST.join(", ")),
        }],
    })
}

/// A reference to a Secret in the monitor's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct SecretRef {
    /// Name of the Secret.
    #[schemars(
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"),
        length(min = 1, max = 253)
    )]
    pub name: String,
}

/// How the sidecar knows the application is alive.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.mode != 'File' || has(self.file)").message("appHealth.mode File needs appHealth.file.path"))]
#[x_kube(validation = Rule::new("self.mode != 'Http' || has(self.http)").message("appHealth.mode Http needs appHealth.http.port"))]
#[x_kube(validation = Rule::new("!self.injectLivenessProbe || self.mode != 'None'").message("appHealth.injectLivenessProbe needs a mode other than None"))]
pub struct AppHealth {
    /// None: no application check. File: the app touches a file. Ping: the
    /// app calls the sidecar's /ping. Http: the sidecar probes the app.
    #[serde(default)]
    pub mode: AppHealthMode,
    /// File mode settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileHealth>,
    /// Ping mode settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ping: Option<PingHealth>,
    /// Http mode settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpHealth>,
    /// Point the app container's livenessProbe at the sidecar's /healthz/app.
    #[serde(default)]
    pub inject_liveness_probe: bool,
}

/// The appHealth modes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum AppHealthMode {
    #[default]
    None,
    File,
    Ping,
    Http,
}

/// The directory File mode's shared emptyDir is mounted at, in every app
/// container and the sidecar: the touch file must lie under it. Fixed, so
/// a monitor cannot mount a writable volume over another directory of
/// someone else's container (`/etc`, `/app/bin`).
pub const HEALTH_FILE_DIR: &str = "/var/run/heartbeat";

/// The CEL rule on `appHealth.file.path`: under [`HEALTH_FILE_DIR`], with no
/// empty, `.` or `..` segment ([`health_file_path_is_allowed`] in Rust).
fn health_file_path_rule() -> Rule {
    Rule::new(format!(
        "self.matches('^{HEALTH_FILE_DIR}(/[^/]+)+$') && !self.matches('/[.][.]?(/|$)')"
    ))
    .message(kube::core::Message::Message(format!(
        "appHealth.file.path must lie under {HEALTH_FILE_DIR}/ (the directory the webhook mounts), with no empty, '.' or '..' segment"
    )))
}

/// Whether `path` is a touch file the webhook may serve: under
/// [`HEALTH_FILE_DIR`] with no empty, `.` or `..` segment (the CRD's CEL
/// rule, for monitors stored before it).
pub fn health_file_path_is_allowed(path: &str) -> bool {
    path.strip_prefix(HEALTH_FILE_DIR)
        .and_then(|rest| rest.strip_prefix('/'))
        .is_some_and(|rest| {
            rest.split('/')
                .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
        })
}

/// File mode: the application touches `path` (on a shared emptyDir) while it makes progress.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileHealth {
    /// Absolute path of the touch file, as the application sees it: under
    /// /var/run/heartbeat/, where the webhook mounts the shared emptyDir.
    #[schemars(regex(pattern = r"^/[^:]*$"), length(max = 1024))]
    #[x_kube(validation = health_file_path_rule())]
    pub path: String,
    /// The app is failing once the file is older than this.
    #[serde(default = "default_max_age")]
    #[schemars(range(min = MaxAge::MIN_SECS, max = MaxAge::MAX_SECS))]
    pub max_age_seconds: u32,
}

/// Ping mode: the application calls the sidecar's /ping while it makes progress.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PingHealth {
    /// The app is failing once the last ping is older than this.
    #[serde(default = "default_max_age")]
    #[schemars(range(min = MaxAge::MIN_SECS, max = MaxAge::MAX_SECS))]
    pub max_age_seconds: u32,
}

fn default_max_age() -> u32 {
    30
}

impl Default for PingHealth {
    fn default() -> Self {
        PingHealth {
            max_age_seconds: default_max_age(),
        }
    }
}

/// Http mode: the sidecar GETs `http://127.0.0.1:<port><path>`; 2xx is alive.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct HttpHealth {
    /// Port of the application's health endpoint.
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// Path of the application's health endpoint.
    #[serde(default = "default_http_path")]
    #[schemars(regex(pattern = r"^/\S*$"), length(max = 1024))]
    pub path: String,
}

fn default_http_path() -> String {
    "/healthz".to_string()
}

/// Programs outside the cluster that beat on the monitor's topic.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct External {
    /// Program ids that must beat; any other program seen on the topic is tracked too.
    #[serde(default)]
    #[schemars(length(max = 1000))]
    pub expected_programs: Vec<String>,
}

/// Overrides of the operator's sidecar defaults.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct SidecarOverrides {
    /// Sidecar image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub image: Option<String>,
    /// Sidecar resource requests and limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

/// Beat signing.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
pub struct Signing {
    /// Sign beats with HMAC-SHA256, each pod with its own key, which its sidecar gets from the operator.
    #[serde(default)]
    pub enabled: bool,
}

/// A recurring quiet period: no Stale alarm inside it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MaintenanceWindow {
    /// Five-field cron expression (minute hour day-of-month month day-of-week) of each window's start.
    #[schemars(regex(pattern = r"^\S+( \S+){4}$"), length(max = 128))]
    pub schedule: String,
    /// Length of each window in minutes.
    #[schemars(range(min = 1, max = 10080))]
    pub duration_minutes: u32,
    /// IANA time zone the schedule is read in.
    #[serde(default = "default_time_zone")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9_+/-]+$"), length(max = 64))]
    pub time_zone: String,
}

fn default_time_zone() -> String {
    "UTC".to_string()
}

/// Which clock judges lateness.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Clock {
    /// Broker: the broker's log-append time. Beat: the beat's own timestamp.
    #[serde(default)]
    pub source: ClockSource,
    /// Beats further than this from the broker time are counted as skewed.
    #[serde(default = "default_max_skew")]
    #[schemars(range(min = 0, max = 86400))]
    pub max_skew_seconds: u32,
}

impl Default for Clock {
    fn default() -> Self {
        Clock {
            source: ClockSource::default(),
            max_skew_seconds: default_max_skew(),
        }
    }
}

fn default_max_skew() -> u32 {
    120
}

/// Clock sources.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum ClockSource {
    #[default]
    Broker,
    Beat,
}

/// What the operator observed, written through the status subresource.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatMonitorStatus {
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready: the operator consumes the topic. Healthy: no member is Stale.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Members that must beat: covered pods plus expected external programs.
    #[serde(default)]
    pub expected: u32,
    /// Members beating on time.
    #[serde(default)]
    pub up: u32,
    /// Members past one interval without a beat, not yet Stale.
    #[serde(default)]
    pub late: u32,
    /// Members silent for longer than the tolerated missed beats plus grace.
    #[serde(default)]
    pub stale: u32,
    /// Members that stopped on purpose (stopping beat, deleted or completed pod).
    #[serde(default)]
    pub stopped: u32,
    /// Members that have not beaten yet.
    #[serde(default)]
    pub pending: u32,
    /// Members whose beats say the application is failing.
    #[serde(default)]
    pub failing: u32,
    /// Members whose state is unknown because the operator cannot read the topic.
    #[serde(default)]
    pub unknown: u32,
    /// Pods matching the selector that lack the sidecar.
    #[serde(default)]
    pub uninjected: u32,
    /// Members whose sidecar is older than the one the operator injects now
    /// (a sidecar changes only when its pod is recreated).
    #[serde(default)]
    pub outdated: u32,
    /// Time of the newest beat seen on the topic for this monitor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_beat_time: Option<Time>,
    /// Up to 50 members, those needing attention first.
    #[serde(default)]
    #[schemars(length(max = MAX_STATUS_MEMBERS))]
    pub members: Vec<MemberStatus>,
}

/// Most members listed in status.
pub const MAX_STATUS_MEMBERS: usize = 50;

/// One member in status.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    /// The member's program id.
    pub program_id: String,
    /// The pod, for members inside the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// Current state.
    pub state: MemberState,
    /// Time of the member's last beat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_beat_time: Option<Time>,
    /// When the member entered its current state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
    /// Why the member is in this state, for a person to act on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Share of the last 24 h (or of the time since tracking began) the
    /// member was beating on time, e.g. "99.95%".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability: Option<String>,
}

/// Member states.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum MemberState {
    Pending,
    Up,
    Late,
    Stale,
    Stopped,
    Failing,
    Unknown,
}

impl MemberState {
    /// Every state, in the order status and metrics list them.
    pub const ALL: [MemberState; 7] = [
        MemberState::Pending,
        MemberState::Up,
        MemberState::Late,
        MemberState::Stale,
        MemberState::Stopped,
        MemberState::Failing,
        MemberState::Unknown,
    ];

    /// The state's name as status writes it and metric labels carry it.
    pub const fn as_str(self) -> &'static str {
        match self {
            MemberState::Pending => "Pending",
            MemberState::Up => "Up",
            MemberState::Late => "Late",
            MemberState::Stale => "Stale",
            MemberState::Stopped => "Stopped",
            MemberState::Failing => "Failing",
            MemberState::Unknown => "Unknown",
        }
    }
}

/// The CRD as YAML, exactly what `crds/heartbeatmonitors.yaml` must contain.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    let body = serde_yaml::to_string(&crd())?;
    Ok(format!(
        "# Generated by `cargo run -p heartbeat-crds --bin crdgen`; do not edit.\n{body}"
    ))
}

/// The CRD to install. schemars tags unsigned integers with formats such as
/// `uint32` that Kubernetes does not know (and warns about on every apply);
/// the bounds already live in `minimum`/`maximum`, so those formats are dropped.
pub fn crd() -> apiext::CustomResourceDefinition {
    use kube::CustomResourceExt;
    let mut crd = HeartbeatMonitor::crd();
    for version in &mut crd.spec.versions {
        if let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        {
            drop_unsigned_formats(schema);
        }
    }
    crd
}

fn drop_unsigned_formats(schema: &mut apiext::JSONSchemaProps) {
    if schema
        .format
        .as_deref()
        .is_some_and(|f| f.starts_with("uint"))
    {
        schema.format = None;
    }
    for child in schema.properties.iter_mut().flat_map(|p| p.values_mut()) {
        drop_unsigned_formats(child);
    }
    if let Some(apiext::JSONSchemaPropsOrArray::Schema(items)) = schema.items.as_mut() {
        drop_unsigned_formats(items);
    }
    if let Some(apiext::JSONSchemaPropsOrBool::Schema(extra)) =
        schema.additional_properties.as_mut()
    {
        drop_unsigned_formats(extra);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rule: `MemberState::ALL` lists every state the CRD's schema allows,
    /// once, and `as_str` is the name status carries on the wire.
    #[test]
    fn every_member_state_is_listed_once_by_its_wire_name() {
        let schema = serde_json::to_value(schemars::schema_for!(MemberState)).expect("schema");
        let mut allowed: Vec<String> = schema["enum"]
            .as_array()
            .expect("an enum schema")
            .iter()
            .map(|v| v.as_str().expect("a name").to_string())
            .collect();
        let mut listed: Vec<String> = MemberState::ALL.iter().map(|s| s.as_str().into()).collect();
        for state in MemberState::ALL {
            assert_eq!(
                serde_json::to_value(state).expect("serialize"),
                state.as_str()
            );
        }
        allowed.sort();
        listed.sort();
        assert_eq!(listed, allowed);
    }

    /// Rule: a touch file lies under HEALTH_FILE_DIR, with no empty, `.` or
    /// `..` segment, so the shared emptyDir never lands anywhere else.
    #[test]
    fn a_touch_file_outside_the_fixed_directory_is_not_allowed() {
        for ok in [
            "/var/run/heartbeat/health",
            "/var/run/heartbeat/app/health",
            "/var/run/heartbeat/.health",
            "/var/run/heartbeat/a..b",
        ] {
            assert!(health_file_path_is_allowed(ok), "{ok}");
        }
        for bad in [
            "/etc/passwd",
            "/var/run/heartbeat",
            "/var/run/heartbeat/",
            "/var/run/heartbeatx/health",
            "/var/run/heartbeat/../../etc/passwd",
            "/var/run/heartbeat/./health",
            "/var/run/heartbeat//health",
            "/var/run/heartbeat/health/",
            "var/run/heartbeat/health",
        ] {
            assert!(!health_file_path_is_allowed(bad), "{bad}");
        }
    }

    /// Rule: the CRD carries the same rule as CEL on appHealth.file.path,
    /// with a message naming the field.
    #[test]
    fn the_crd_refuses_a_touch_file_outside_the_fixed_directory() {
        let crd = serde_json::to_value(crd()).expect("crd json");
        let path = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
            ["appHealth"]["properties"]["file"]["properties"]["path"];
        let rule = &path["x-kubernetes-validations"][0];
        assert!(
            rule["rule"]
                .as_str()
                .is_some_and(|r| r.contains("^/var/run/heartbeat(/[^/]+)+$")),
            "{path}"
        );
        assert!(
            rule["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("appHealth.file.path must lie under")),
            "{path}"
        );
    }
}
