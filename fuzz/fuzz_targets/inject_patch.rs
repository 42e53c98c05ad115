//! The webhook's injection decision on arbitrary pods and monitors. A
//! mutating webhook sees pods before the API server validates them, so any
//! pod that deserializes may arrive. `decide` must not panic, and a patch it
//! returns must apply to the pod, yield a pod, add exactly one sidecar, keep
//! the app's containers, be recognised as injected by the next call, and
//! give the sidecar env that the kubelet expands to what the sidecar parses
//! without pulling in another variable (the broker Secret arrives as
//! `KAFKA_*` env in the same container).
//!
//! Input: a JSON document `{"pod": .., "monitors": [..], "nativeSidecar":
//! bool, "secretExists": bool}` when it starts with `{` (the seeds), else
//! bytes read by `arbitrary` into a pod and monitors built from names that
//! meet each other (labels that match selectors, annotations that name
//! monitors, mount paths around the health directory).
#![no_main]

use std::collections::BTreeMap;

use arbitrary::{Arbitrary, Unstructured};
use clap::Parser;
use heartbeat_crds::monitor::{AppHealthMode, HeartbeatMonitor, PRODUCER_ALLOWLIST};
use heartbeat_crds::sidecar_contract::{SidecarAppHealth, env};
use heartbeat_operator::webhook::inject::{
    ANNOTATION_ALSO_MATCHED, ANNOTATION_INJECT, ANNOTATION_INJECTED, ANNOTATION_MONITOR,
    HEALTH_VOLUME, IDENTITY_VOLUME, InjectDefaults, Outcome, SIDECAR_NAME, SidecarPolicy,
    SkipReason, decide, default_maxima,
};
use heartbeat_sidecar::config::Args;
use k8s_openapi::api::core::v1::{Container, Pod};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

const OPERATOR_NAMESPACE: &str = "heartbeat-system";

fuzz_target!(|data: &[u8]| {
    let case = if data.first() == Some(&b'{') {
        match from_json(data) {
            Some(c) => c,
            None => return,
        }
    } else {
        match Structured::arbitrary_take_rest(Unstructured::new(data)) {
            Ok(s) => s.into_case(),
            Err(_) => return,
        }
    };
    check(case);
});

/// One call of the webhook.
struct Case {
    pod: Value,
    monitors: Vec<Value>,
    native_sidecar: bool,
    secret_exists: bool,
}

fn from_json(data: &[u8]) -> Option<Case> {
    let v: Value = serde_json::from_slice(data).ok()?;
    Some(Case {
        pod: v.get("pod")?.clone(),
        monitors: v.get("monitors")?.as_array()?.clone(),
        native_sidecar: v
            .get("nativeSidecar")
            .and_then(Value::as_bool)
            .unwrap_or(true),
        secret_exists: v
            .get("secretExists")
            .and_then(Value::as_bool)
            .unwrap_or(true),
    })
}

fn check(case: Case) {
    let Ok(pod) = serde_json::from_value::<Pod>(case.pod.clone()) else {
        return;
    };
    let Ok(mut monitors) = case
        .monitors
        .iter()
        .map(|m| serde_json::from_value::<HeartbeatMonitor>(m.clone()))
        .collect::<Result<Vec<_>, _>>()
    else {
        return;
    };
    // As in the webhook's cache: every monitor has a namespace and a name,
    // unique in it.
    let mut seen = std::collections::BTreeSet::new();
    monitors.retain(|m| {
        m.metadata
            .namespace
            .as_ref()
            .is_some_and(|ns| !ns.is_empty())
            && m.metadata
                .name
                .as_ref()
                .is_some_and(|n| !n.is_empty() && seen.insert(n.clone()))
    });
    let defaults = InjectDefaults {
        image: "heartbeat-sidecar:fuzz".into(),
        sidecar_version: "0.0.0-fuzz".into(),
        resources: InjectDefaults::default_resources(),
        native_sidecar: case.native_sidecar,
        operator_namespace: OPERATOR_NAMESPACE.into(),
        // The image the inputs override with is allowlisted, so an override
        // still reaches the patch.
        policy: SidecarPolicy {
            allowed_image_repositories: vec!["registry.local/hb".into()],
            max_requests: default_maxima(),
            max_limits: default_maxima(),
        },
        signing_key_url: heartbeat_crds::signing::key_url_on_api_server(
            OPERATOR_NAMESPACE,
            "heartbeat-operator",
        ),
        signing_key_ca: None,
    };
    let secret_exists = |_: &str| case.secret_exists;
    let (name, patch) = match decide(&pod, &monitors, secret_exists, &defaults) {
        Outcome::Inject { monitor, patch } => (monitor, patch),
        Outcome::Skip { .. } => return,
    };

    // The API server applies the patch to the pod as it sent it: always an
    // object with metadata, which the re-serialized pod stands in for when
    // the input lacked it.
    let mut doc = serde_json::to_value(&pod).expect("a pod serializes");
    json_patch::patch(&mut doc, &patch)
        .unwrap_or_else(|e| panic!("the patch does not apply: {e}\npatch: {patch:?}\npod: {doc}"));
    if case.pod.get("metadata").is_some_and(Value::is_object) {
        let mut raw = case.pod.clone();
        json_patch::patch(&mut raw, &patch).unwrap_or_else(|e| {
            panic!("the patch does not apply to the pod as received: {e}\npatch: {patch:?}")
        });
        serde_json::from_value::<Pod>(raw).expect("the patched pod as received is a pod");
    }
    let patched: Pod = serde_json::from_value(doc).expect("the patched pod is a pod");

    let monitor = monitors
        .iter()
        .find(|m| m.metadata.name.as_deref() == Some(name.as_str()))
        .expect("the injecting monitor is one of those given");
    let before = pod.spec.clone().unwrap_or_default();
    let after = patched.spec.clone().expect("the patched pod has a spec");
    let names = |cs: &[Container]| cs.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
    let (mut sidecars, kept_init, kept_app) = if defaults.native_sidecar {
        let init = after.init_containers.clone().unwrap_or_default();
        (init.clone(), init, after.containers.clone())
    } else {
        let app = after.containers.clone();
        (
            app.clone(),
            after.init_containers.clone().unwrap_or_default(),
            app,
        )
    };
    sidecars.retain(|c| c.name == SIDECAR_NAME);
    assert_eq!(sidecars.len(), 1, "one sidecar where the defaults put it");
    let sidecar = sidecars.remove(0);
    let without = |cs: Vec<Container>| {
        names(&cs)
            .into_iter()
            .filter(|n| n != SIDECAR_NAME)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        without(kept_app),
        names(&before.containers),
        "app containers kept, in order"
    );
    assert_eq!(
        without(kept_init),
        names(before.init_containers.as_deref().unwrap_or_default()),
        "init containers kept, in order"
    );
    if defaults.native_sidecar {
        assert_eq!(
            after.init_containers.as_ref().map(|c| c[0].name.as_str()),
            Some(SIDECAR_NAME)
        );
    }

    // The webhook may be called again on its own output (reinvocation).
    assert!(
        matches!(
            decide(&patched, &monitors, secret_exists, &defaults),
            Outcome::Skip {
                reason: SkipReason::AlreadyInjected,
                ..
            }
        ),
        "the patched pod is not recognised as injected"
    );
    let annotations = patched.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(annotations.get(ANNOTATION_MONITOR), Some(&name));

    if monitor.spec.app_health.mode == AppHealthMode::File {
        let volumes = after.volumes.clone().unwrap_or_default();
        assert_eq!(
            volumes.iter().filter(|v| v.name == HEALTH_VOLUME).count(),
            1
        );
        for c in &after.containers {
            let n = c
                .volume_mounts
                .iter()
                .flatten()
                .filter(|m| m.name == HEALTH_VOLUME)
                .count();
            assert_eq!(n, 1, "container {:?} mounts the health volume once", c.name);
        }
    }

    // Signing: one identity volume (the pod's tokens), mounted read-only
    // in the sidecar alone; never a key Secret reference.
    let signing = monitor.spec.signing.as_ref().is_some_and(|s| s.enabled);
    let identity = after
        .volumes
        .iter()
        .flatten()
        .filter(|v| v.name == IDENTITY_VOLUME)
        .count();
    assert_eq!(identity, usize::from(signing), "identity volumes");
    let app_mounts = after
        .containers
        .iter()
        .chain(after.init_containers.iter().flatten())
        .filter(|c| c.name != SIDECAR_NAME)
        .flat_map(|c| c.volume_mounts.iter().flatten())
        .filter(|m| m.name == IDENTITY_VOLUME)
        .count();
    assert_eq!(app_mounts, 0, "an app container mounts the pod's identity");
    assert!(
        sidecar.env.iter().flatten().all(|e| e
            .value_from
            .as_ref()
            .is_none_or(|f| f.secret_key_ref.is_none())),
        "a Secret key reference in the sidecar's env"
    );

    check_env(&sidecar, monitor);
}

/// Downward-API values the kubelet would give the variables the webhook
/// means to reference; as long as the placeholders the webhook checks the
/// program id with, so a valid check means a valid id here.
const DOWNWARD: &[(&str, &str)] = &[
    (env::POD_NAME, "pod"),
    (env::POD_NAMESPACE, "namespace"),
    (env::POD_UID, "uid"),
    (env::NODE_NAME, "node"),
    (env::POD_IP, "10.0.0.7"),
];

/// The sidecar's env as the kubelet expands it: no value may reference
/// a variable other than the downward-API ones (above all not a `KAFKA_*`
/// one from the broker Secret), and the values parse as the sidecar
/// parses them.
fn check_env(sidecar: &Container, monitor: &HeartbeatMonitor) {
    let mut expanded = BTreeMap::new();
    for e in sidecar.env.iter().flatten() {
        let Some(value) = &e.value else {
            continue;
        };
        let (out, stray) = kubelet_expand(value);
        assert!(
            stray.is_empty(),
            "env {}={value:?} makes the kubelet expand $({}) (the broker Secret's \
             variables are KAFKA_* in the same container)",
            e.name,
            stray.join("), $(")
        );
        expanded.insert(e.name.clone(), out);
    }
    for (property, value) in &monitor.spec.producer {
        let name = heartbeat_crds::sidecar_contract::kafka_env_for_property(property);
        assert_eq!(
            expanded.get(&name),
            Some(value),
            "producer property {property} reaches the sidecar changed"
        );
    }
    let health = SidecarAppHealth::from_spec(&monitor.spec.app_health)
        .expect("an injected monitor's appHealth is valid");
    let got = expanded
        .get(env::APP_HEALTH)
        .expect("HEARTBEAT_APP_HEALTH is set");
    assert_eq!(
        SidecarAppHealth::parse(got).ok().as_ref(),
        Some(&health),
        "the sidecar reads another appHealth from {got:?}"
    );

    // What the CRD's schema guarantees, the sidecar must accept whole.
    let spec = &monitor.spec;
    let schema_valid = heartbeat_crds::sidecar_contract::validate_topic(&spec.topic).is_ok()
        && (1..=heartbeat_crds::sidecar_contract::MAX_INTERVAL_SECS)
            .contains(&spec.interval_seconds);
    if !schema_valid {
        return;
    }
    const FLAGS: &[(&str, &str)] = &[
        (env::TOPIC, "--topic"),
        (env::PROGRAM_ID, "--program-id"),
        (env::INTERVAL_SECS, "--interval-secs"),
        (env::MONITOR, "--monitor"),
        (env::HTTP_ADDR, "--http-addr"),
        (env::APP_HEALTH, "--app-health"),
        (env::POD_NAME, "--pod-name"),
    ];
    let mut argv = vec!["heartbeat-sidecar".to_string()];
    for (var, flag) in FLAGS {
        if let Some(v) = expanded.get(*var) {
            argv.push(format!("{flag}={v}"));
        }
    }
    if let Err(e) = Args::try_parse_from(&argv) {
        panic!("the sidecar refuses the env the webhook wrote: {e}\nargv: {argv:?}");
    }
}

/// The kubelet's expansion of an env value: the downward-API references
/// filled in, and the other names referenced (each of which could be
/// defined: env from the Secret, or an earlier entry).
fn kubelet_expand(input: &str) -> (String, Vec<String>) {
    heartbeat_crds::sidecar_contract::expand_env_refs(input, |name| {
        DOWNWARD.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    })
}

// ---- The structured input: names drawn from lists that meet each other. ----

/// A string from a list of interesting ones, or any string.
#[derive(Arbitrary, Debug)]
enum S {
    Pick(u8),
    Free(String),
}

impl S {
    fn get(&self, list: &[&str]) -> String {
        match self {
            S::Pick(i) => list[usize::from(*i) % list.len()].to_string(),
            S::Free(s) => s.clone(),
        }
    }
}

const NAMESPACES: &[&str] = &["data", OPERATOR_NAMESPACE, "other"];
const LABEL_KEYS: &[&str] = &["app", "tier", "heartbeat.dev/x"];
const LABEL_VALUES: &[&str] = &["ingest", "web", ""];
const ANNOTATION_KEYS: &[&str] = &[
    ANNOTATION_INJECT,
    ANNOTATION_MONITOR,
    ANNOTATION_INJECTED,
    ANNOTATION_ALSO_MATCHED,
    "example.com/other",
];
const ANNOTATION_VALUES: &[&str] = &["false", "true", "ingest", "web", ""];
const CONTAINER_NAMES: &[&str] = &["app", SIDECAR_NAME, "worker", "init"];
const MOUNT_PATHS: &[&str] = &[
    "/",
    "/var",
    "/var/run",
    "/var/run/heartbeat",
    "/var/run/heartbeat/",
    "/var/run/heartbeat/health",
    "/hb",
    "/data",
    "//",
];
const VOLUME_NAMES: &[&str] = &[HEALTH_VOLUME, "data", "cache"];
const MONITOR_NAMES: &[&str] = &["ingest", "web", "a"];
const TEMPLATES: &[&str] = &[
    "{namespace}.{pod}",
    "{monitor}-{container}",
    "{node}",
    "{",
    "{nope}",
    "fixed",
    "{pod}_{pod}",
];
const TOPICS: &[&str] = &["heartbeats", "a", "bad topic", ""];
const FILE_PATHS: &[&str] = &[
    "/var/run/heartbeat/health",
    "/health",
    "/hb/touch",
    "relative",
    "/a:b/c",
    "/run/$(KAFKA_sasl.password)/touch",
    "/x/",
    // Under the fixed directory, so these reach the patch (the rest are refused).
    "/var/run/heartbeat/$(KAFKA_sasl.password)/touch",
    "/var/run/heartbeat/a:b",
];
const HTTP_PATHS: &[&str] = &["/healthz", "/", "relative", "/$(POD_NAME)", "/$$"];
const SECRET_NAMES: &[&str] = &["kafka", "other"];
const PRODUCER_VALUES: &[&str] = &["5", "all", "$(KAFKA_sasl.password)", "$$", "$"];

#[derive(Arbitrary, Debug)]
struct Structured {
    native_sidecar: bool,
    secret_exists: bool,
    namespace: S,
    labels: Vec<(S, S)>,
    /// None: no annotations member at all (the patch must create it).
    annotations: Option<Vec<(S, S)>>,
    init_containers: Option<Vec<C>>,
    containers: Vec<C>,
    volumes: Option<Vec<S>>,
    monitors: Vec<M>,
}

#[derive(Arbitrary, Debug)]
struct C {
    name: S,
    port: Option<u16>,
    mounts: Option<Vec<S>>,
    probe: bool,
}

#[derive(Arbitrary, Debug)]
struct M {
    name: u8,
    selector: Option<Vec<(S, S)>>,
    program_id: Option<S>,
    topic: S,
    interval_seconds: u32,
    secret: S,
    health: Health,
    inject_liveness_probe: bool,
    producer: Vec<(u8, S)>,
    image: Option<S>,
    signing: bool,
}

#[derive(Arbitrary, Debug)]
enum Health {
    None,
    File {
        path: Option<S>,
        max_age: Option<u32>,
    },
    Ping {
        max_age: Option<u32>,
    },
    Http {
        port: u16,
        path: Option<S>,
    },
}

impl Structured {
    fn into_case(self) -> Case {
        let map =
            |pairs: &[(S, S)], keys: &[&str], values: &[&str]| -> serde_json::Map<String, Value> {
                pairs
                    .iter()
                    .map(|(k, v)| (k.get(keys), Value::String(v.get(values))))
                    .collect()
            };
        let container = |c: &C| {
            let mut v = json!({"name": c.name.get(CONTAINER_NAMES), "image": "demo/worker"});
            if let Some(port) = c.port {
                // Half the time the sidecar's own port.
                let port = if port % 2 == 0 { 9190 } else { i32::from(port) };
                v["ports"] = json!([{"containerPort": port}]);
            }
            if let Some(mounts) = &c.mounts {
                v["volumeMounts"] = mounts
                    .iter()
                    .map(|p| json!({"name": "data", "mountPath": p.get(MOUNT_PATHS)}))
                    .collect();
            }
            if c.probe {
                v["livenessProbe"] = json!({"tcpSocket": {"port": 80}});
            }
            v
        };
        let mut metadata = json!({
            "name": "ingest-0",
            "namespace": self.namespace.get(NAMESPACES),
            "labels": map(&self.labels, LABEL_KEYS, LABEL_VALUES),
        });
        if let Some(a) = &self.annotations {
            metadata["annotations"] = Value::Object(map(a, ANNOTATION_KEYS, ANNOTATION_VALUES));
        }
        let mut spec =
            json!({"containers": self.containers.iter().map(container).collect::<Vec<_>>()});
        if let Some(init) = &self.init_containers {
            spec["initContainers"] = init.iter().map(container).collect();
        }
        if let Some(volumes) = &self.volumes {
            spec["volumes"] = volumes
                .iter()
                .map(|n| json!({"name": n.get(VOLUME_NAMES), "emptyDir": {}}))
                .collect();
        }
        Case {
            pod: json!({"metadata": metadata, "spec": spec}),
            monitors: self.monitors.iter().map(M::to_json).collect(),
            native_sidecar: self.native_sidecar,
            secret_exists: self.secret_exists,
        }
    }
}

impl M {
    fn to_json(&self) -> Value {
        let mut spec = json!({
            "topic": self.topic.get(TOPICS),
            "intervalSeconds": self.interval_seconds,
            "brokerSecretRef": {"name": self.secret.get(SECRET_NAMES)},
            "appHealth": {"injectLivenessProbe": self.inject_liveness_probe},
        });
        if let Some(sel) = &self.selector {
            let labels: serde_json::Map<String, Value> = sel
                .iter()
                .map(|(k, v)| (k.get(LABEL_KEYS), Value::String(v.get(LABEL_VALUES))))
                .collect();
            spec["selector"] = json!({"matchLabels": labels});
        }
        if let Some(t) = &self.program_id {
            spec["programId"] = Value::String(t.get(TEMPLATES));
        }
        if self.signing {
            spec["signing"] = json!({"enabled": true});
        }
        let health = &mut spec["appHealth"];
        match &self.health {
            Health::None => health["mode"] = json!("None"),
            Health::File { path, max_age } => {
                health["mode"] = json!("File");
                if let Some(p) = path {
                    health["file"] = json!({"path": p.get(FILE_PATHS)});
                    if let Some(a) = max_age {
                        health["file"]["maxAgeSeconds"] = json!(a);
                    }
                }
            }
            Health::Ping { max_age } => {
                health["mode"] = json!("Ping");
                if let Some(a) = max_age {
                    health["ping"] = json!({"maxAgeSeconds": a});
                }
            }
            Health::Http { port, path } => {
                health["mode"] = json!("Http");
                health["http"] = json!({"port": port});
                if let Some(p) = path {
                    health["http"]["path"] = json!(p.get(HTTP_PATHS));
                }
            }
        }
        if !self.producer.is_empty() {
            spec["producer"] = self
                .producer
                .iter()
                .map(|(k, v)| {
                    let key = PRODUCER_ALLOWLIST[usize::from(*k) % PRODUCER_ALLOWLIST.len()];
                    (key.to_string(), Value::String(v.get(PRODUCER_VALUES)))
                })
                .collect::<serde_json::Map<_, _>>()
                .into();
        }
        if let Some(image) = &self.image {
            spec["sidecar"] = json!({"image": image.get(&["registry.local/hb:1"])});
        }
        json!({
            "apiVersion": "heartbeat.dev/v1alpha1",
            "kind": "HeartbeatMonitor",
            "metadata": {
                "name": MONITOR_NAMES[usize::from(self.name) % MONITOR_NAMES.len()],
                "namespace": "data",
            },
            "spec": spec,
        })
    }
}
