//! The injection decision, pure: from a pod being created, the monitors of
//! its namespace, which Secrets exist and the operator's defaults, either a
//! JSON patch that adds the heartbeat sidecar or a reason not to. The HTTP
//! layer only decodes, calls [`decide`] and encodes.
//!
//! Everything the sidecar reads comes from the one contract in
//! `heartbeat_crds::sidecar_contract` (env names, the appHealth syntax), so
//! the webhook and the sidecar cannot drift.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::fmt;

use heartbeat_crds::monitor::{AppHealthMode, HEALTH_FILE_DIR, HeartbeatMonitor};
use heartbeat_crds::program_id::render_with_env_refs;
use heartbeat_crds::sidecar_contract::{
    DEFAULT_HTTP_PORT, IDENTITY_API_TOKEN, IDENTITY_CA, IDENTITY_DIR, IDENTITY_TOKEN,
    SidecarAppHealth, env, http_addr_on_pod_ip, path,
};
use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapProjection, Container, EmptyDirVolumeSource, EnvFromSource, EnvVar,
    EnvVarSource, HTTPGetAction, KeyToPath, ObjectFieldSelector, Pod, Probe, ProjectedVolumeSource,
    ResourceRequirements, SeccompProfile, SecretEnvSource, SecurityContext,
    ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use serde_json::Value;

pub use crate::pod_contract::{
    ANNOTATION_ALSO_MATCHED, ANNOTATION_INJECT, ANNOTATION_INJECTED, ANNOTATION_MONITOR,
    SIDECAR_NAME,
};
use crate::pod_contract::{Uncovered, already_injected, choose};

mod policy;
pub use policy::{SidecarPolicy, default_maxima, image_in_repository, is_quantity};

/// The shared volume of File mode.
pub const HEALTH_VOLUME: &str = "heartbeat-health";
/// The sidecar's identity (signing on): projected ServiceAccount tokens and
/// the API server's CA, mounted in the sidecar only.
pub const IDENTITY_VOLUME: &str = "heartbeat-identity";
/// Life of the audience-bound token (the shortest the API server allows);
/// the kubelet renews it at 80%.
const IDENTITY_TOKEN_SECONDS: i64 = 600;
/// The ConfigMap every namespace has with the API server's CA.
const ROOT_CA_CONFIG_MAP: &str = "kube-root-ca.crt";

/// The identity volume (see [`IDENTITY_VOLUME`]).
fn identity_volume() -> Volume {
    let token = |audience: Option<&str>, path: &str, seconds: i64| VolumeProjection {
        service_account_token: Some(ServiceAccountTokenProjection {
            audience: audience.map(str::to_string),
            expiration_seconds: Some(seconds),
            path: path.to_string(),
            ..Default::default()
        }),
        ..Default::default()
    };
    Volume {
        name: IDENTITY_VOLUME.into(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![
                token(
                    Some(heartbeat_crds::signing::AUDIENCE),
                    IDENTITY_TOKEN,
                    IDENTITY_TOKEN_SECONDS,
                ),
                token(None, IDENTITY_API_TOKEN, IDENTITY_TOKEN_SECONDS),
                VolumeProjection {
                    config_map: Some(ConfigMapProjection {
                        name: ROOT_CA_CONFIG_MAP.into(),
                        items: Some(vec![KeyToPath {
                            key: "ca.crt".into(),
                            path: IDENTITY_CA.into(),
                            ..Default::default()
                        }]),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The operator's side of an injection.
#[derive(Debug, Clone, PartialEq)]
pub struct InjectDefaults {
    /// Sidecar image unless the monitor overrides it.
    pub image: String,
    /// The sidecar version the image carries (recorded on the pod).
    pub sidecar_version: String,
    /// Requests and limits unless the monitor overrides them.
    pub resources: ResourceRequirements,
    /// A native sidecar (init container with restartPolicy Always), else a
    /// plain container (clusters older than 1.29).
    pub native_sidecar: bool,
    /// The operator's own namespace: never injected.
    pub operator_namespace: String,
    /// What a monitor may ask of the sidecar (image repositories, resource maxima).
    pub policy: SidecarPolicy,
    /// Where sidecars of signing monitors ask for their pod's key (a path
    /// on the API server, or a URL: see `Args::signing_key_url`).
    pub signing_key_url: String,
    /// The CA of a URL's certificate (the webhook's), given to the sidecar.
    pub signing_key_ca: Option<String>,
}

impl InjectDefaults {
    /// SPEC's defaults: 5m CPU and 16Mi requested, 32Mi memory limit.
    pub fn default_resources() -> ResourceRequirements {
        let q = |s: &str| Quantity(s.to_string());
        ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_string(), q("5m")),
                ("memory".to_string(), q("16Mi")),
            ])),
            limits: Some(BTreeMap::from([("memory".to_string(), q("32Mi"))])),
            ..Default::default()
        }
    }
}

/// Why the sidecar cannot go into a pod: the pod's spec would clash with
/// it, or the monitor's spec cannot be rendered into it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InjectProblem {
    #[error("the pod has no containers")]
    NoContainers,
    #[error("container {container:?} already uses port {port}, the sidecar's")]
    PortTaken { container: String, port: i32 },
    #[error("the pod already has a volume named {0:?}")]
    VolumeTaken(&'static str),
    #[error(
        "container {container:?} already mounts {mount} where the health file's directory {HEALTH_FILE_DIR} goes"
    )]
    MountOverlaps { container: String, mount: String },
    #[error("{0}")]
    Monitor(#[source] heartbeat_crds::Error),
    #[error("serialising the sidecar's {what}: {why}")]
    Serialize { what: &'static str, why: String },
}

/// Why a pod was admitted without the sidecar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// The pod is in the operator's own namespace.
    OperatorNamespace,
    /// The pod already carries the sidecar (a reinvocation, or injected by hand).
    AlreadyInjected,
    /// `heartbeat.dev/inject: "false"`.
    OptedOut,
    /// No monitor of the namespace selects the pod.
    NoMatchingMonitor,
    /// `heartbeat.dev/monitor` names a monitor that does not exist.
    NamedMonitorMissing { monitor: String },
    /// The monitor's broker Secret does not exist.
    SecretMissing { secret: String },
    /// The sidecar cannot be built for this monitor and pod (an invalid
    /// template, a pod without containers, ...).
    CannotInject { why: InjectProblem },
    /// The monitor asks for more than the operator's sidecar policy allows
    /// (an image off the allowlist, resources above the maxima, a touch
    /// file outside the fixed directory); `field` names it (`spec.sidecar.image`).
    PolicyRefused { field: String, why: String },
}

impl SkipReason {
    /// Whether a monitor expected this pod, so the skip deserves an Event
    /// on it (`InjectionSkipped`): nothing may fail silently.
    pub fn concerns_a_monitor(&self) -> bool {
        matches!(
            self,
            SkipReason::OptedOut
                | SkipReason::NamedMonitorMissing { .. }
                | SkipReason::SecretMissing { .. }
                | SkipReason::CannotInject { .. }
                | SkipReason::PolicyRefused { .. }
        )
    }

    /// A fixed label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            SkipReason::OperatorNamespace => "operator_namespace",
            SkipReason::AlreadyInjected => "already_injected",
            SkipReason::OptedOut => "opted_out",
            SkipReason::NoMatchingMonitor => "no_matching_monitor",
            SkipReason::NamedMonitorMissing { .. } => "named_monitor_missing",
            SkipReason::SecretMissing { .. } => "secret_missing",
            SkipReason::CannotInject { .. } => "cannot_inject",
            SkipReason::PolicyRefused { .. } => "policy_refused",
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::OperatorNamespace => write!(f, "the pod is in the operator's namespace"),
            SkipReason::AlreadyInjected => write!(f, "the pod already has the heartbeat sidecar"),
            SkipReason::OptedOut => write!(f, "the pod opts out ({ANNOTATION_INJECT}: \"false\")"),
            SkipReason::NoMatchingMonitor => write!(f, "no HeartbeatMonitor selects the pod"),
            SkipReason::NamedMonitorMissing { monitor } => write!(
                f,
                "{ANNOTATION_MONITOR} names HeartbeatMonitor {monitor:?}, which does not exist"
            ),
            SkipReason::SecretMissing { secret } => write!(
                f,
                "the broker Secret {secret:?} does not exist; create it, then recreate the pod"
            ),
            SkipReason::CannotInject { why } => write!(f, "the sidecar cannot be injected: {why}"),
            SkipReason::PolicyRefused { field, why } => write!(
                f,
                "the monitor's {field} is refused by the operator's sidecar policy: {why}"
            ),
        }
    }
}

/// What the webhook does with a pod.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Admit with this patch, which adds the sidecar for `monitor`.
    Inject { monitor: String, patch: Patch },
    /// Admit unchanged; `monitor` is the one that expected the pod, if any.
    Skip {
        monitor: Option<String>,
        reason: SkipReason,
    },
}

fn skip(monitor: Option<&str>, reason: SkipReason) -> Outcome {
    Outcome::Skip {
        monitor: monitor.map(str::to_string),
        reason,
    }
}

/// Decides for `pod` (being created in its namespace) given the monitors
/// of that namespace and whether a Secret of that namespace exists.
pub fn decide<M: Borrow<HeartbeatMonitor>>(
    pod: &Pod,
    monitors: &[M],
    secret_exists: impl Fn(&str) -> bool,
    defaults: &InjectDefaults,
) -> Outcome {
    if pod.metadata.namespace.as_deref() == Some(defaults.operator_namespace.as_str()) {
        return skip(None, SkipReason::OperatorNamespace);
    }
    if already_injected(pod) {
        return skip(None, SkipReason::AlreadyInjected);
    }
    let (monitor, others) = match choose(pod, monitors) {
        Ok(chosen) => chosen,
        Err(Uncovered::NamedMonitorMissing { monitor }) => {
            return skip(
                Some(&monitor),
                SkipReason::NamedMonitorMissing {
                    monitor: monitor.clone(),
                },
            );
        }
        Err(Uncovered::NoMatchingMonitor) => return skip(None, SkipReason::NoMatchingMonitor),
    };
    let name = monitor.name_any();
    if pod.annotations().get(ANNOTATION_INJECT).map(String::as_str) == Some("false") {
        return skip(Some(&name), SkipReason::OptedOut);
    }
    if let Err(refusal) = policy::check(&monitor.spec, &defaults.policy, &defaults.image) {
        return skip(
            Some(&name),
            SkipReason::PolicyRefused {
                field: refusal.field,
                why: refusal.why,
            },
        );
    }
    let secret = &monitor.spec.broker_secret_ref.name;
    if !secret_exists(secret) {
        return skip(
            Some(&name),
            SkipReason::SecretMissing {
                secret: secret.clone(),
            },
        );
    }
    match patch_for(pod, monitor, &others, defaults) {
        Ok(patch) => Outcome::Inject {
            monitor: name,
            patch,
        },
        Err(why) => skip(Some(&name), SkipReason::CannotInject { why }),
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.to_string(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn value_env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: Some(value.into()),
        ..Default::default()
    }
}

/// How long the sidecar has to serve its port (1 s probes).
const SIDECAR_STARTUP_SECONDS: i32 = 30;

fn http_probe(path: &str) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::Int(i32::from(DEFAULT_HTTP_PORT)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The sidecar container for `monitor` in a pod whose first app container
/// is `app_container` (for the `{container}` placeholder).
pub fn sidecar_container(
    monitor: &HeartbeatMonitor,
    app_container: &str,
    defaults: &InjectDefaults,
) -> Result<Container, InjectProblem> {
    let spec = &monitor.spec;
    let name = monitor.name_any();
    let program_id = render_with_env_refs(&spec.program_id, app_container, &name)
        .map_err(InjectProblem::Monitor)?;
    let app_health =
        SidecarAppHealth::from_spec(&spec.app_health).map_err(InjectProblem::Monitor)?;
    let overrides = spec.sidecar.as_ref();
    let mut env = vec![
        // Downward API first: the values below refer to them.
        field_env(env::POD_NAME, "metadata.name"),
        field_env(env::POD_NAMESPACE, "metadata.namespace"),
        field_env(env::POD_UID, "metadata.uid"),
        field_env(env::NODE_NAME, "spec.nodeName"),
        field_env(env::POD_IP, "status.podIP"),
        value_env(env::TOPIC, spec.topic.clone()),
        value_env(env::PROGRAM_ID, program_id),
        value_env(env::INTERVAL_SECS, spec.interval_seconds.to_string()),
        value_env(
            env::MONITOR,
            format!("{}/{name}", monitor.namespace().unwrap_or_default()),
        ),
        value_env(env::HTTP_ADDR, http_addr_on_pod_ip()),
        // `$` doubled as for the producer values below: a monitor's probe
        // path may hold `$(...)`, which the kubelet would expand (found by
        // fuzzing: `/$(KAFKA_sasl.password)` put the password in the URL).
        value_env(env::APP_HEALTH, app_health.render().replace('$', "$$")),
    ];
    // Extra producer properties (allowlisted by the CRD) as KAFKA_* env.
    // `$` doubled: the kubelet would otherwise expand `$(KAFKA_...)` in a
    // monitor's value from the broker Secret and leak it into another setting.
    env.extend(spec.producer.iter().map(|(k, v)| {
        value_env(
            &heartbeat_crds::sidecar_contract::kafka_env_for_property(k),
            v.replace('$', "$$"),
        )
    }));
    // Signing: no key in the pod spec or in any Secret of the pod's
    // namespace; the sidecar asks the operator for its pod's key, proving
    // the pod with the identity volume's tokens.
    let signed = signing_on(monitor);
    if signed {
        // `$` doubled: the kubelet would expand `$(...)` in them.
        env.push(value_env(
            env::SIGNING_KEY_URL,
            defaults.signing_key_url.replace('$', "$$"),
        ));
        if let Some(ca) = &defaults.signing_key_ca {
            env.push(value_env(env::SIGNING_KEY_CA, ca.replace('$', "$$")));
        }
        env.push(value_env(env::IDENTITY_DIR, IDENTITY_DIR));
    }
    let mut volume_mounts = Vec::new();
    if spec.app_health.mode == AppHealthMode::File {
        volume_mounts.push(VolumeMount {
            name: HEALTH_VOLUME.into(),
            mount_path: HEALTH_FILE_DIR.into(),
            ..Default::default()
        });
    }
    if signed {
        volume_mounts.push(VolumeMount {
            name: IDENTITY_VOLUME.into(),
            mount_path: IDENTITY_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
    }
    let volume_mounts = (!volume_mounts.is_empty()).then_some(volume_mounts);
    Ok(Container {
        name: SIDECAR_NAME.into(),
        image: Some(
            overrides
                .and_then(|o| o.image.clone())
                .unwrap_or_else(|| defaults.image.clone()),
        ),
        // Broker settings by reference: the webhook never reads or copies
        // the Secret's values; keys added later reach new pods as they are.
        env_from: Some(vec![EnvFromSource {
            prefix: Some(env::KAFKA_PREFIX.into()),
            secret_ref: Some(SecretEnvSource {
                name: spec.broker_secret_ref.name.clone(),
                optional: Some(false),
            }),
            ..Default::default()
        }]),
        env: Some(env),
        resources: Some(
            overrides
                .and_then(|o| o.resources.clone())
                .unwrap_or_else(|| defaults.resources.clone()),
        ),
        restart_policy: defaults.native_sidecar.then(|| "Always".to_string()),
        // No readinessProbe: a Kafka outage must never take the app out of its Service.
        // A startup probe (as Istio's proxy has) so the first liveness
        // probe finds the port open, and, the sidecar being native, the
        // app starts once it serves.
        startup_probe: Some(Probe {
            period_seconds: Some(1),
            failure_threshold: Some(SIDECAR_STARTUP_SECONDS),
            ..http_probe(path::LIVEZ)
        }),
        liveness_probe: Some(Probe {
            period_seconds: Some(10),
            failure_threshold: Some(3),
            ..http_probe(path::LIVEZ)
        }),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(65532),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        volume_mounts,
        ..Default::default()
    })
}

fn signing_on(monitor: &HeartbeatMonitor) -> bool {
    monitor.spec.signing.as_ref().is_some_and(|s| s.enabled)
}

/// An `add` at the JSON pointer made of `tokens` (escaped as needed).
fn add(tokens: &[&str], value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: PointerBuf::from_tokens(tokens.iter().copied()),
        value,
    })
}

fn to_value<T: serde::Serialize>(what: &'static str, v: &T) -> Result<Value, InjectProblem> {
    serde_json::to_value(v).map_err(|e| InjectProblem::Serialize {
        what,
        why: e.to_string(),
    })
}

/// Refuses what the patch would make invalid or break: the pod already
/// uses the sidecar's port, or (File mode) its volume name, or a mount at,
/// above or below the shared directory.
fn conflicts(
    spec: &k8s_openapi::api::core::v1::PodSpec,
    monitor: &HeartbeatMonitor,
) -> Result<(), InjectProblem> {
    let all = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers);
    let port = i32::from(DEFAULT_HTTP_PORT);
    if let Some(c) = all
        .clone()
        .find(|c| c.ports.iter().flatten().any(|p| p.container_port == port))
    {
        return Err(InjectProblem::PortTaken {
            container: c.name.clone(),
            port,
        });
    }
    if signing_on(monitor)
        && spec
            .volumes
            .iter()
            .flatten()
            .any(|v| v.name == IDENTITY_VOLUME)
    {
        return Err(InjectProblem::VolumeTaken(IDENTITY_VOLUME));
    }
    if monitor.spec.app_health.mode != AppHealthMode::File {
        return Ok(());
    }
    let dir = HEALTH_FILE_DIR;
    if spec
        .volumes
        .iter()
        .flatten()
        .any(|v| v.name == HEALTH_VOLUME)
    {
        return Err(InjectProblem::VolumeTaken(HEALTH_VOLUME));
    }
    let overlaps = |a: &str, b: &str| {
        let (a, b) = (a.trim_end_matches('/'), b.trim_end_matches('/'));
        a == b || a.starts_with(&format!("{b}/")) || b.starts_with(&format!("{a}/"))
    };
    for c in all {
        if let Some(m) = c
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| overlaps(&m.mount_path, dir))
        {
            return Err(InjectProblem::MountOverlaps {
                container: c.name.clone(),
                mount: m.mount_path.clone(),
            });
        }
    }
    Ok(())
}

/// The patch that adds the sidecar (and File mode's volume, the app's
/// liveness probe, the annotations) to `pod`.
pub fn patch_for(
    pod: &Pod,
    monitor: &HeartbeatMonitor,
    also_matched: &[&str],
    defaults: &InjectDefaults,
) -> Result<Patch, InjectProblem> {
    let spec = pod.spec.clone().unwrap_or_default();
    let app = spec
        .containers
        .first()
        .map(|c| c.name.clone())
        .ok_or(InjectProblem::NoContainers)?;
    conflicts(&spec, monitor)?;
    let sidecar = to_value("container", &sidecar_container(monitor, &app, defaults)?)?;
    let mut ops = Vec::new();
    let has_init = spec.init_containers.as_ref().is_some_and(|c| !c.is_empty());
    // A native sidecar goes first, so it runs before the app and any init container.
    match (defaults.native_sidecar, has_init) {
        (true, true) => ops.push(add(&["spec", "initContainers", "0"], sidecar)),
        (true, false) => ops.push(add(
            &["spec", "initContainers"],
            Value::Array(vec![sidecar]),
        )),
        (false, _) => ops.push(add(&["spec", "containers", "-"], sidecar)),
    }
    let health = &monitor.spec.app_health;
    let mut volumes = Vec::new();
    if health.mode == AppHealthMode::File {
        volumes.push(to_value(
            "volume",
            &Volume {
                name: HEALTH_VOLUME.into(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Default::default()
            },
        )?);
    }
    if signing_on(monitor) {
        volumes.push(to_value("volume", &identity_volume())?);
    }
    if spec.volumes.as_ref().is_some_and(|v| !v.is_empty()) {
        for volume in volumes {
            ops.push(add(&["spec", "volumes", "-"], volume));
        }
    } else if !volumes.is_empty() {
        ops.push(add(&["spec", "volumes"], Value::Array(volumes)));
    }
    if health.mode == AppHealthMode::File {
        let mount = to_value(
            "volume mount",
            &VolumeMount {
                name: HEALTH_VOLUME.into(),
                mount_path: HEALTH_FILE_DIR.into(),
                ..Default::default()
            },
        )?;
        for (i, c) in spec.containers.iter().enumerate() {
            let i = i.to_string();
            if c.volume_mounts.as_ref().is_some_and(|m| !m.is_empty()) {
                ops.push(add(
                    &["spec", "containers", &i, "volumeMounts", "-"],
                    mount.clone(),
                ));
            } else {
                ops.push(add(
                    &["spec", "containers", &i, "volumeMounts"],
                    Value::Array(vec![mount.clone()]),
                ));
            }
        }
    }
    if health.inject_liveness_probe && health.mode != AppHealthMode::None {
        let probe = to_value(
            "liveness probe",
            &Probe {
                period_seconds: Some(10),
                failure_threshold: Some(3),
                ..http_probe(path::APP_HEALTH)
            },
        )?;
        for (i, c) in spec.containers.iter().enumerate() {
            // The app's own probe is kept: `add` would replace it.
            if c.liveness_probe.is_some() {
                continue;
            }
            let i = i.to_string();
            ops.push(add(
                &["spec", "containers", &i, "livenessProbe"],
                probe.clone(),
            ));
        }
    }
    let mut annotations = vec![
        (
            ANNOTATION_INJECTED,
            format!(
                "monitor={},sidecar={}",
                monitor.name_any(),
                defaults.sidecar_version
            ),
        ),
        (ANNOTATION_MONITOR, monitor.name_any()),
    ];
    if !also_matched.is_empty() {
        annotations.push((ANNOTATION_ALSO_MATCHED, also_matched.join(",")));
    }
    if pod.metadata.annotations.is_none() {
        let map: serde_json::Map<String, Value> = annotations
            .into_iter()
            .map(|(k, v)| (k.to_string(), Value::String(v)))
            .collect();
        ops.push(add(&["metadata", "annotations"], Value::Object(map)));
    } else {
        for (k, v) in annotations {
            ops.push(add(&["metadata", "annotations", k], Value::String(v)));
        }
    }
    Ok(Patch(ops))
}

#[cfg(test)]
mod tests {
    use super::*;
    use heartbeat_crds::monitor::{FileHealth, HeartbeatMonitorSpec, SidecarOverrides};
    use serde_json::json;

    fn defaults() -> InjectDefaults {
        InjectDefaults {
            image: "heartbeat-sidecar:0.1.0".into(),
            sidecar_version: "0.1.0".into(),
            resources: InjectDefaults::default_resources(),
            native_sidecar: true,
            operator_namespace: "heartbeat-system".into(),
            policy: SidecarPolicy {
                allowed_image_repositories: vec!["registry.local/heartbeat-sidecar".into()],
                max_requests: default_maxima(),
                max_limits: default_maxima(),
            },
            signing_key_url: heartbeat_crds::signing::key_url_on_api_server(
                "heartbeat-system",
                "heartbeat-operator",
            ),
            signing_key_ca: None,
        }
    }

    fn monitor(name: &str, app: &str) -> HeartbeatMonitor {
        let spec: HeartbeatMonitorSpec = serde_json::from_value(json!({
            "topic": "heartbeats",
            "intervalSeconds": 10,
            "brokerSecretRef": {"name": "kafka"},
            "selector": {"matchLabels": {"app": app}},
        }))
        .expect("spec");
        let mut m = HeartbeatMonitor::new(name, spec);
        m.metadata.namespace = Some("data".into());
        m
    }

    fn pod(value: Value) -> Pod {
        let mut base = json!({
            "metadata": {"namespace": "data", "name": "ingest-0", "labels": {"app": "ingest"}},
            "spec": {"containers": [{"name": "app", "image": "demo/worker"}]},
        });
        json_patch::merge(&mut base, &value);
        serde_json::from_value(base).expect("pod")
    }

    fn all_secrets(_: &str) -> bool {
        true
    }

    /// Applies the outcome's patch; panics unless it is an injection.
    fn injected(p: &Pod, monitors: &[HeartbeatMonitor], d: &InjectDefaults) -> Pod {
        match decide(p, monitors, all_secrets, d) {
            Outcome::Inject { patch, .. } => {
                let mut doc = serde_json::to_value(p).expect("pod json");
                json_patch::patch(&mut doc, &patch).expect("the patch applies");
                serde_json::from_value(doc).expect("still a pod")
            }
            other => panic!("expected an injection, got {other:?}"),
        }
    }

    fn env_of(c: &Container) -> Vec<(String, String)> {
        c.env
            .iter()
            .flatten()
            .map(|e| {
                let v = e.value.clone().unwrap_or_else(|| {
                    let f = e.value_from.as_ref().and_then(|f| f.field_ref.as_ref());
                    format!(
                        "fieldRef:{}",
                        f.map(|f| f.field_path.as_str()).unwrap_or("?")
                    )
                });
                (e.name.clone(), v)
            })
            .collect()
    }

    fn skipped(outcome: Outcome) -> (Option<String>, SkipReason) {
        match outcome {
            Outcome::Skip { monitor, reason } => (monitor, reason),
            other => panic!("expected a skip, got {other:?}"),
        }
    }

    #[test]
    fn the_app_health_value_cannot_reference_env_either() {
        let mut m = monitor("ingest", "ingest");
        m.spec.app_health.mode = AppHealthMode::Http;
        m.spec.app_health.http = Some(heartbeat_crds::monitor::HttpHealth {
            port: 8080,
            path: "/$(KAFKA_sasl.password)".into(),
        });
        let c = sidecar_container(&m, "app", &defaults()).expect("sidecar");
        let env = env_of(&c);
        let app = env
            .iter()
            .find(|(k, _)| k == env::APP_HEALTH)
            .map(|(_, v)| v.as_str());
        assert_eq!(app, Some("http://127.0.0.1:8080/$$(KAFKA_sasl.password)"));
    }

    /// Rule: with signing on, no key reaches the pod spec or a Secret of
    /// its namespace: the sidecar gets the key URL and an identity volume
    /// (a token for audience heartbeat.dev bound to the pod, one for the
    /// API server, its CA), mounted read-only in the sidecar alone.
    #[test]
    fn with_signing_on_the_sidecar_gets_an_identity_and_no_key() {
        let mut m = monitor("ingest", "ingest");
        m.spec.signing = Some(heartbeat_crds::monitor::Signing { enabled: true });
        let out = injected(
            &pod(json!({"spec": {"volumes": [{"name": "cache", "emptyDir": {}}]}})),
            &[m],
            &defaults(),
        );
        let spec = out.spec.expect("spec");
        let init = spec.init_containers.as_ref().expect("init");
        let env = env_of(&init[0]);
        assert!(
            env.iter().all(|(k, _)| k != env::SIGNING_KEY),
            "never a key"
        );
        assert!(init[0].env.iter().flatten().all(|e| {
            e.value_from
                .as_ref()
                .is_none_or(|f| f.secret_key_ref.is_none())
        }));
        let url = env
            .iter()
            .find(|(k, _)| k == env::SIGNING_KEY_URL)
            .map(|(_, v)| v.as_str());
        assert_eq!(
            url,
            Some(
                "/api/v1/namespaces/heartbeat-system/services/https:heartbeat-operator:keys/proxy/keys/pod"
            )
        );
        let mounts: Vec<_> = init[0]
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| (m.name.as_str(), m.mount_path.as_str(), m.read_only))
            .collect();
        assert_eq!(mounts, [(IDENTITY_VOLUME, IDENTITY_DIR, Some(true))]);
        assert!(spec.containers.iter().all(|c| {
            c.volume_mounts
                .iter()
                .flatten()
                .all(|m| m.name != IDENTITY_VOLUME)
        }));
        let volumes: Vec<&str> = spec
            .volumes
            .iter()
            .flatten()
            .map(|v| v.name.as_str())
            .collect();
        assert_eq!(volumes, ["cache", IDENTITY_VOLUME]);
        let projected = spec
            .volumes
            .iter()
            .flatten()
            .find_map(|v| v.projected.clone())
            .expect("projected");
        let tokens: Vec<_> = projected
            .sources
            .iter()
            .flatten()
            .filter_map(|s| s.service_account_token.as_ref())
            .map(|t| (t.audience.as_deref(), t.path.as_str()))
            .collect();
        assert_eq!(
            tokens,
            [(Some("heartbeat.dev"), "token"), (None, "api-token")]
        );
        // An operator outside the cluster network: its URL and its CA.
        let mut m = monitor("ingest", "ingest");
        m.spec.signing = Some(heartbeat_crds::monitor::Signing { enabled: true });
        let direct = InjectDefaults {
            signing_key_url: "https://10.0.0.1:8444/keys/pod".into(),
            signing_key_ca: Some("-----BEGIN CERTIFICATE-----".into()),
            ..defaults()
        };
        let out = injected(&pod(json!({})), &[m], &direct);
        let env = env_of(&out.spec.and_then(|s| s.init_containers).expect("init")[0]);
        assert!(env.contains(&(
            env::SIGNING_KEY_CA.to_string(),
            "-----BEGIN CERTIFICATE-----".to_string()
        )));
        // Off: none of it.
        let plain = injected(&pod(json!({})), &[monitor("ingest", "ingest")], &defaults());

        let spec = plain.spec.expect("spec");
        assert!(spec.volumes.is_none());
        let env = env_of(&spec.init_containers.expect("init")[0]);
        assert!(
            env.iter()
                .all(|(k, _)| k != env::SIGNING_KEY_URL && k != env::SIGNING_KEY)
        );
    }

    #[test]
    fn a_pod_without_init_containers_gets_the_native_sidecar_as_specified() {
        let out = injected(&pod(json!({})), &[monitor("ingest", "ingest")], &defaults());
        let spec = out.spec.expect("spec");
        let init = spec.init_containers.expect("init containers");
        assert_eq!(init.len(), 1);
        let s = &init[0];
        assert_eq!(s.name, SIDECAR_NAME);
        assert_eq!(s.image.as_deref(), Some("heartbeat-sidecar:0.1.0"));
        assert_eq!(s.restart_policy.as_deref(), Some("Always"));
        assert!(
            s.readiness_probe.is_none(),
            "no readinessProbe tied to the broker"
        );
        let live = s
            .liveness_probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .expect("livez");
        assert_eq!(live.path.as_deref(), Some(path::LIVEZ));
        assert_eq!(live.port, IntOrString::Int(9190));
        // Liveness starts once the port serves: no restart of a slow start.
        let startup = s.startup_probe.as_ref().expect("a startupProbe");
        assert_eq!(
            startup.http_get.as_ref().and_then(|h| h.path.as_deref()),
            Some(path::LIVEZ)
        );
        assert_eq!(startup.period_seconds, Some(1));
        assert_eq!(startup.failure_threshold, Some(SIDECAR_STARTUP_SECONDS));
        let env = env_of(s);
        let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "POD_NAME",
                "POD_NAMESPACE",
                "POD_UID",
                "NODE_NAME",
                "POD_IP",
                "HEARTBEAT_TOPIC",
                "HEARTBEAT_PROGRAM_ID",
                "HEARTBEAT_INTERVAL_SECS",
                "HEARTBEAT_MONITOR",
                "HEARTBEAT_HTTP_ADDR",
                "HEARTBEAT_APP_HEALTH",
            ]
        );
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("POD_IP"), Some("fieldRef:status.podIP"));
        assert_eq!(
            get("HEARTBEAT_PROGRAM_ID"),
            Some("$(POD_NAMESPACE).$(POD_NAME)")
        );
        assert_eq!(get("HEARTBEAT_HTTP_ADDR"), Some("$(POD_IP):9190"));
        assert_eq!(get("HEARTBEAT_MONITOR"), Some("data/ingest"));
        assert_eq!(get("HEARTBEAT_APP_HEALTH"), Some("none"));
        // The broker Secret by reference only.
        let from = s.env_from.as_ref().expect("envFrom");
        assert_eq!(from[0].prefix.as_deref(), Some("KAFKA_"));
        assert_eq!(
            from[0].secret_ref.as_ref().map(|r| r.name.as_str()),
            Some("kafka")
        );
        let sc = s.security_context.as_ref().expect("hardening");
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(
            sc.capabilities.as_ref().and_then(|c| c.drop.clone()),
            Some(vec!["ALL".to_string()])
        );
        assert_eq!(
            sc.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
            Some("RuntimeDefault")
        );
        let res = s.resources.as_ref().expect("resources");
        assert_eq!(
            res.limits.as_ref().and_then(|l| l.get("memory")),
            Some(&Quantity("32Mi".into()))
        );
        let ann = out.metadata.annotations.expect("annotations");
        assert_eq!(
            ann.get(ANNOTATION_INJECTED).map(String::as_str),
            Some("monitor=ingest,sidecar=0.1.0")
        );
        assert_eq!(
            ann.get(ANNOTATION_MONITOR).map(String::as_str),
            Some("ingest")
        );
    }

    #[test]
    fn existing_init_containers_volumes_env_and_annotations_are_kept_and_the_sidecar_goes_first() {
        let p = pod(json!({
            "metadata": {"annotations": {"team": "data", "a/b~c": "x"}},
            "spec": {
                "initContainers": [{"name": "migrate", "image": "demo/job"}],
                "volumes": [{"name": "cache", "emptyDir": {}}],
                "containers": [
                    {"name": "app", "image": "demo/worker", "env": [{"name": "A", "value": "1"}],
                     "volumeMounts": [{"name": "cache", "mountPath": "/cache"}]},
                    {"name": "helper", "image": "demo/worker"}
                ]
            }
        }));
        let mut m = monitor("ingest", "ingest");
        m.spec.app_health.mode = AppHealthMode::File;
        m.spec.app_health.file = Some(FileHealth {
            path: "/var/run/heartbeat/health".into(),
            max_age_seconds: 30,
        });
        let out = injected(&p, &[m], &defaults());
        let spec = out.spec.expect("spec");
        let init: Vec<&str> = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(init, [SIDECAR_NAME, "migrate"]);
        let volumes: Vec<&str> = spec
            .volumes
            .iter()
            .flatten()
            .map(|v| v.name.as_str())
            .collect();
        assert_eq!(volumes, ["cache", HEALTH_VOLUME]);
        for c in &spec.containers {
            let mounts: Vec<(&str, &str)> = c
                .volume_mounts
                .iter()
                .flatten()
                .map(|m| (m.name.as_str(), m.mount_path.as_str()))
                .collect();
            assert!(
                mounts.contains(&(HEALTH_VOLUME, "/var/run/heartbeat")),
                "{}: {mounts:?}",
                c.name
            );
        }
        assert!(
            spec.containers[0]
                .volume_mounts
                .iter()
                .flatten()
                .any(|m| m.name == "cache")
        );
        assert_eq!(
            env_of(&spec.containers[0]),
            [("A".to_string(), "1".to_string())]
        );
        let sidecar = &spec.init_containers.as_ref().expect("init")[0];
        let health = env_of(sidecar)
            .into_iter()
            .find(|(k, _)| k == env::APP_HEALTH)
            .map(|(_, v)| v);
        assert_eq!(health.as_deref(), Some("file:/var/run/heartbeat/health:30"));
        let ann = out.metadata.annotations.expect("annotations");
        assert_eq!(ann.get("team").map(String::as_str), Some("data"));
        assert_eq!(ann.get("a/b~c").map(String::as_str), Some("x"));
        assert!(ann.contains_key(ANNOTATION_INJECTED));
    }

    #[test]
    fn an_injected_pod_is_left_alone() {
        let monitors = [monitor("ingest", "ingest")];
        let annotated = pod(
            json!({"metadata": {"annotations": {ANNOTATION_INJECTED: "monitor=ingest,sidecar=0.1.0"}}}),
        );
        assert_eq!(
            skipped(decide(&annotated, &monitors, all_secrets, &defaults())).1,
            SkipReason::AlreadyInjected
        );
        // Injecting the result again (a reinvocation) changes nothing.
        let once = injected(&pod(json!({})), &monitors, &defaults());
        assert_eq!(
            skipped(decide(&once, &monitors, all_secrets, &defaults())).1,
            SkipReason::AlreadyInjected
        );
        let by_hand =
            pod(json!({"spec": {"initContainers": [{"name": SIDECAR_NAME, "image": "x"}]}}));
        assert_eq!(
            skipped(decide(&by_hand, &monitors, all_secrets, &defaults())).1,
            SkipReason::AlreadyInjected
        );
    }

    #[test]
    fn an_opted_out_pod_is_skipped_and_the_monitor_hears_of_it() {
        let p = pod(json!({"metadata": {"annotations": {ANNOTATION_INJECT: "false"}}}));
        let (m, reason) = skipped(decide(
            &p,
            &[monitor("ingest", "ingest")],
            all_secrets,
            &defaults(),
        ));
        assert_eq!(
            (m.as_deref(), &reason),
            (Some("ingest"), &SkipReason::OptedOut)
        );
        assert!(reason.concerns_a_monitor());
    }

    #[test]
    fn the_monitor_annotation_chooses_even_without_a_selector_match() {
        let p = pod(
            json!({"metadata": {"labels": {"app": "other"}, "annotations": {ANNOTATION_MONITOR: "named"}}}),
        );
        let monitors = [
            monitor("ingest", "ingest"),
            monitor("named", "nothing-matches"),
        ];
        match decide(&p, &monitors, all_secrets, &defaults()) {
            Outcome::Inject { monitor, .. } => assert_eq!(monitor, "named"),
            other => panic!("{other:?}"),
        }
        let q = pod(json!({"metadata": {"annotations": {ANNOTATION_MONITOR: "gone"}}}));
        let (m, reason) = skipped(decide(&q, &monitors, all_secrets, &defaults()));
        assert_eq!(m.as_deref(), Some("gone"));
        assert_eq!(
            reason,
            SkipReason::NamedMonitorMissing {
                monitor: "gone".into()
            }
        );
    }

    #[test]
    fn a_pod_no_monitor_selects_is_not_touched_and_no_monitor_is_told() {
        let p = pod(json!({"metadata": {"labels": {"app": "web"}}}));
        let (m, reason) = skipped(decide(
            &p,
            &[monitor("ingest", "ingest")],
            all_secrets,
            &defaults(),
        ));
        assert_eq!((m, &reason), (None, &SkipReason::NoMatchingMonitor));
        assert!(!reason.concerns_a_monitor());
        let none: [HeartbeatMonitor; 0] = [];
        assert_eq!(
            skipped(decide(&p, &none, all_secrets, &defaults())).1,
            SkipReason::NoMatchingMonitor
        );
        // A monitor without a selector covers only external programs.
        let mut external = monitor("ext", "web");
        external.spec.selector = None;
        assert_eq!(
            skipped(decide(&p, &[external], all_secrets, &defaults())).1,
            SkipReason::NoMatchingMonitor
        );
    }

    #[test]
    fn of_several_matching_monitors_the_first_by_name_wins_and_the_rest_are_recorded() {
        let monitors = [
            monitor("zeta", "ingest"),
            monitor("alpha", "ingest"),
            monitor("mid", "ingest"),
        ];
        let out = injected(&pod(json!({})), &monitors, &defaults());
        let ann = out.metadata.annotations.expect("annotations");
        assert_eq!(
            ann.get(ANNOTATION_MONITOR).map(String::as_str),
            Some("alpha")
        );
        assert_eq!(
            ann.get(ANNOTATION_ALSO_MATCHED).map(String::as_str),
            Some("mid,zeta")
        );
    }

    #[test]
    fn a_pod_with_only_generate_name_gets_env_references_for_its_name() {
        let p = pod(json!({"metadata": {"name": null, "generateName": "ingest-7d9f-"}}));
        let mut m = monitor("ingest", "ingest");
        m.spec.program_id = "{monitor}.{pod}.{container}".into();
        let out = injected(&p, &[m], &defaults());
        let sidecar = &out.spec.and_then(|s| s.init_containers).expect("init")[0];
        let id = env_of(sidecar)
            .into_iter()
            .find(|(k, _)| k == env::PROGRAM_ID)
            .map(|(_, v)| v);
        assert_eq!(id.as_deref(), Some("ingest.$(POD_NAME).app"));
    }

    #[test]
    fn the_operators_own_namespace_is_never_injected() {
        let p = pod(json!({"metadata": {"namespace": "heartbeat-system"}}));
        assert_eq!(
            skipped(decide(
                &p,
                &[monitor("ingest", "ingest")],
                all_secrets,
                &defaults()
            ))
            .1,
            SkipReason::OperatorNamespace
        );
    }

    #[test]
    fn a_missing_broker_secret_admits_the_pod_unchanged_and_names_the_secret() {
        let (m, reason) = skipped(decide(
            &pod(json!({})),
            &[monitor("ingest", "ingest")],
            |_| false,
            &defaults(),
        ));
        assert_eq!(m.as_deref(), Some("ingest"));
        assert_eq!(
            reason,
            SkipReason::SecretMissing {
                secret: "kafka".into()
            }
        );
        assert!(reason.to_string().contains("\"kafka\""), "{reason}");
    }

    #[test]
    fn an_invalid_template_or_a_pod_without_containers_is_a_reasoned_skip() {
        let mut m = monitor("ingest", "ingest");
        m.spec.program_id = "{pod}@{bad}".into();
        let (_, reason) = skipped(decide(&pod(json!({})), &[m], all_secrets, &defaults()));
        assert!(
            matches!(reason, SkipReason::CannotInject { .. }),
            "{reason:?}"
        );
        let empty = pod(json!({"spec": {"containers": []}}));
        let (_, reason) = skipped(decide(
            &empty,
            &[monitor("ingest", "ingest")],
            all_secrets,
            &defaults(),
        ));
        assert!(reason.to_string().contains("no containers"), "{reason}");
    }

    #[test]
    fn the_plain_container_fallback_appends_without_restart_policy() {
        let d = InjectDefaults {
            native_sidecar: false,
            ..defaults()
        };
        let out = injected(&pod(json!({})), &[monitor("ingest", "ingest")], &d);
        let spec = out.spec.expect("spec");
        assert!(spec.init_containers.is_none());
        let names: Vec<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["app", SIDECAR_NAME]);
        assert_eq!(spec.containers[1].restart_policy, None);
    }

    /// Rule: with injectLivenessProbe, an app container without a
    /// livenessProbe gets ours (the sidecar's /healthz/app); one with its
    /// own keeps it: a monitor never replaces someone else's probe.
    #[test]
    fn inject_liveness_probe_adds_ours_only_where_the_app_has_none() {
        let p = pod(json!({"spec": {"containers": [
            {"name": "app", "image": "demo/worker", "livenessProbe": {"tcpSocket": {"port": 80}}},
            {"name": "helper", "image": "demo/worker"}
        ]}}));
        let mut m = monitor("ingest", "ingest");
        m.spec.app_health.mode = AppHealthMode::Ping;
        m.spec.app_health.inject_liveness_probe = true;
        let out = injected(&p, &[m], &defaults());
        let containers = out.spec.expect("spec").containers;
        let own = containers[0]
            .liveness_probe
            .clone()
            .expect("the app's probe");
        assert_eq!(
            own,
            Probe {
                tcp_socket: Some(k8s_openapi::api::core::v1::TCPSocketAction {
                    port: IntOrString::Int(80),
                    ..Default::default()
                }),
                ..Default::default()
            },
            "the app's own probe is kept as it was"
        );
        let ours = containers[1]
            .liveness_probe
            .clone()
            .and_then(|p| p.http_get)
            .expect("ours where there was none");
        assert_eq!(
            (ours.path.as_deref(), ours.port),
            (Some(path::APP_HEALTH), IntOrString::Int(9190))
        );
    }

    fn refused(outcome: Outcome) -> (String, String) {
        match skipped(outcome) {
            (Some(_), SkipReason::PolicyRefused { field, why }) => (field, why),
            other => panic!("expected a policy refusal, got {other:?}"),
        }
    }

    fn with_sidecar(image: Option<&str>, resources: Option<Value>) -> HeartbeatMonitor {
        let mut m = monitor("ingest", "ingest");
        m.spec.sidecar = Some(SidecarOverrides {
            image: image.map(str::to_string),
            resources: resources.map(|r| serde_json::from_value(r).expect("resources")),
        });
        m
    }

    /// Rule: a monitor's spec.sidecar.image from a repository off the
    /// allowlist is not injected, and the skip (an InjectionSkipped Event)
    /// names the field; the default image's repository and the allowlisted
    /// ones are injected.
    #[test]
    fn an_image_off_the_allowlist_is_not_injected_and_the_skip_names_the_field() {
        let (field, why) = refused(decide(
            &pod(json!({})),
            &[with_sidecar(Some("evil.example/miner:1"), None)],
            all_secrets,
            &defaults(),
        ));
        assert_eq!(field, "spec.sidecar.image");
        assert!(why.contains("evil.example/miner:1"), "{why}");
        let reason = SkipReason::PolicyRefused { field, why };
        assert!(reason.concerns_a_monitor());
        assert!(
            reason.to_string().contains("spec.sidecar.image"),
            "{reason}"
        );
        for ok in [
            "heartbeat-sidecar:0.2.0",
            "registry.local/heartbeat-sidecar:9",
            "heartbeat-sidecar:0.1.0",
        ] {
            let out = injected(
                &pod(json!({})),
                &[with_sidecar(Some(ok), None)],
                &defaults(),
            );
            let init = out.spec.and_then(|s| s.init_containers).expect("init");
            assert_eq!(init[0].image.as_deref(), Some(ok));
        }
    }

    /// Rule: a repository matches only exactly (`repo`, `repo:tag`,
    /// `repo@sha256:...`): a lookalike that merely starts with an
    /// allowlisted repository is refused.
    #[test]
    fn a_lookalike_repository_is_refused() {
        for image in [
            "registry.local/heartbeat-sidecar-evil:1",
            "registry.local/heartbeat-sidecar/evil:1",
            "heartbeat-sidecarx:0.1.0",
            "registry.local/heartbeat-sidecar@sha256:abc",
        ] {
            let (field, _) = refused(decide(
                &pod(json!({})),
                &[with_sidecar(Some(image), None)],
                all_secrets,
                &defaults(),
            ));
            assert_eq!(field, "spec.sidecar.image", "{image}");
        }
    }

    /// Rule: a monitor's sidecar resources above the maxima (or a resource
    /// the policy does not list, or a request above its limit, which would
    /// make every selected pod invalid) are not injected, and the skip
    /// names the field; at the maxima they are.
    #[test]
    fn resources_above_the_maxima_are_not_injected_and_the_skip_names_the_field() {
        for (resources, field) in [
            (
                json!({"limits": {"memory": "257Mi"}}),
                "spec.sidecar.resources.limits.memory",
            ),
            (
                json!({"limits": {"memory": "1Gi"}}),
                "spec.sidecar.resources.limits.memory",
            ),
            (
                json!({"requests": {"cpu": "201m"}}),
                "spec.sidecar.resources.requests.cpu",
            ),
            (
                json!({"requests": {"cpu": "64"}}),
                "spec.sidecar.resources.requests.cpu",
            ),
            (
                json!({"limits": {"cpu": "0.3"}}),
                "spec.sidecar.resources.limits.cpu",
            ),
            (
                json!({"requests": {"memory": "1e12"}}),
                "spec.sidecar.resources.requests.memory",
            ),
            (
                json!({"requests": {"nvidia.com/gpu": "1"}}),
                "spec.sidecar.resources.requests.nvidia.com/gpu",
            ),
            (
                json!({"requests": {"memory": "-1"}}),
                "spec.sidecar.resources.requests.memory",
            ),
            (
                json!({"requests": {"memory": "64Mi"}, "limits": {"memory": "32Mi"}}),
                "spec.sidecar.resources.requests.memory",
            ),
            (
                json!({"claims": [{"name": "gpu"}]}),
                "spec.sidecar.resources.claims",
            ),
        ] {
            let (got, why) = refused(decide(
                &pod(json!({})),
                &[with_sidecar(None, Some(resources.clone()))],
                all_secrets,
                &defaults(),
            ));
            assert_eq!(got, field, "{resources}: {why}");
        }
        let at_max = json!({"requests": {"cpu": "0.2", "memory": "256Mi"},
                            "limits": {"cpu": "200m", "memory": "268435456"}});
        let out = injected(
            &pod(json!({})),
            &[with_sidecar(None, Some(at_max.clone()))],
            &defaults(),
        );
        let init = out.spec.and_then(|s| s.init_containers).expect("init");
        assert_eq!(
            init[0].resources,
            Some(serde_json::from_value(at_max).expect("resources"))
        );
    }

    /// Rule: File mode's emptyDir is mounted at the fixed directory
    /// /var/run/heartbeat only, whatever the touch file's path under it; a
    /// path outside it (a monitor stored before the CRD's rule) is not
    /// injected, and the skip names spec.appHealth.file.path.
    #[test]
    fn the_health_volume_goes_only_at_the_fixed_directory() {
        let mut m = monitor("ingest", "ingest");
        m.spec.app_health.mode = AppHealthMode::File;
        m.spec.app_health.file = Some(FileHealth {
            path: "/var/run/heartbeat/app/touch".into(),
            max_age_seconds: 30,
        });
        let out = injected(&pod(json!({})), std::slice::from_ref(&m), &defaults());
        let spec = out.spec.expect("spec");
        let sidecar = &spec.init_containers.as_ref().expect("init")[0];
        for c in spec.containers.iter().chain([sidecar]) {
            let mounts: Vec<&str> = c
                .volume_mounts
                .iter()
                .flatten()
                .map(|v| v.mount_path.as_str())
                .collect();
            assert_eq!(mounts, ["/var/run/heartbeat"], "{}", c.name);
        }
        for bad in ["/etc/passwd", "/var/run/heartbeat/../../etc/x", "/health"] {
            m.spec.app_health.file = Some(FileHealth {
                path: bad.into(),
                max_age_seconds: 30,
            });
            let (field, _) = refused(decide(
                &pod(json!({})),
                std::slice::from_ref(&m),
                all_secrets,
                &defaults(),
            ));
            assert_eq!(field, "spec.appHealth.file.path", "{bad}");
        }
    }

    #[test]
    fn the_monitor_overrides_image_and_resources_and_adds_producer_properties() {
        let mut m = monitor("ingest", "ingest");
        m.spec.sidecar = Some(SidecarOverrides {
            image: Some("registry.local/heartbeat-sidecar:9".into()),
            resources: Some(ResourceRequirements::default()),
        });
        m.spec.producer = BTreeMap::from([("linger.ms".to_string(), "5".to_string())]);
        let out = injected(&pod(json!({})), &[m], &defaults());
        let s = out
            .spec
            .and_then(|s| s.init_containers)
            .expect("init")
            .remove(0);
        assert_eq!(
            s.image.as_deref(),
            Some("registry.local/heartbeat-sidecar:9")
        );
        assert_eq!(s.resources, Some(ResourceRequirements::default()));
        assert!(env_of(&s).contains(&("KAFKA_LINGER_MS".to_string(), "5".to_string())));
    }

    #[test]
    fn the_rendered_app_health_is_what_the_sidecar_parses() {
        for (mode, file) in [
            (AppHealthMode::None, None),
            (AppHealthMode::Ping, None),
            (AppHealthMode::File, Some("/hb/touch")),
        ] {
            let mut m = monitor("ingest", "ingest");
            m.spec.app_health.mode = mode;
            m.spec.app_health.file = file.map(|p| FileHealth {
                path: p.into(),
                max_age_seconds: 7,
            });
            let c = sidecar_container(&m, "app", &defaults()).expect("sidecar");
            let value = env_of(&c)
                .into_iter()
                .find(|(k, _)| k == env::APP_HEALTH)
                .map(|(_, v)| v)
                .expect("env");
            let parsed = SidecarAppHealth::parse(&value).expect("the sidecar accepts it");
            assert_eq!(
                parsed,
                SidecarAppHealth::from_spec(&m.spec.app_health).expect("spec")
            );
        }
    }

    #[test]
    fn a_pod_the_patch_would_break_is_skipped_with_the_reason() {
        let mut m = monitor("ingest", "ingest");
        m.spec.app_health.mode = AppHealthMode::File;
        m.spec.app_health.file = Some(FileHealth {
            path: "/var/run/heartbeat/health".into(),
            max_age_seconds: 30,
        });
        let cases = [
            (
                json!({"spec": {"containers": [{"name": "app", "image": "x", "ports": [{"containerPort": 9190}]}]}}),
                "port 9190",
            ),
            (
                json!({"spec": {"volumes": [{"name": HEALTH_VOLUME, "emptyDir": {}}]}}),
                HEALTH_VOLUME,
            ),
            (
                json!({"spec": {"containers": [{"name": "app", "image": "x",
                "volumeMounts": [{"name": "v", "mountPath": "/var/run/heartbeat"}]}]}}),
                "already mounts",
            ),
            (
                json!({"spec": {"containers": [{"name": "app", "image": "x",
                "volumeMounts": [{"name": "v", "mountPath": "/var/run"}]}]}}),
                "already mounts",
            ),
        ];
        for (shape, why) in cases {
            let (_, reason) = skipped(decide(
                &pod(shape),
                std::slice::from_ref(&m),
                all_secrets,
                &defaults(),
            ));
            assert!(
                matches!(reason, SkipReason::CannotInject { .. })
                    && reason.to_string().contains(why),
                "{reason}"
            );
        }
    }

    #[test]
    fn a_monitors_values_cannot_reference_the_broker_secret() {
        let mut m = monitor("ingest", "ingest");
        m.spec.producer = BTreeMap::from([(
            "client.id".to_string(),
            "$(KAFKA_sasl.password)".to_string(),
        )]);
        let c = sidecar_container(&m, "app", &defaults()).expect("sidecar");
        assert!(env_of(&c).contains(&(
            "KAFKA_CLIENT_ID".to_string(),
            "$$(KAFKA_sasl.password)".to_string()
        )));
    }

    #[test]
    fn the_secret_reference_carries_no_value() {
        let m = monitor("ingest", "ingest");
        let c = sidecar_container(&m, "app", &defaults()).expect("sidecar");
        let text = serde_json::to_string(&c).expect("json");
        assert!(!text.contains("secretKeyRef"), "{text}");
        let from = c.env_from.expect("envFrom");
        assert_eq!(from.len(), 1);
        assert!(from[0].config_map_ref.is_none());
    }
}
