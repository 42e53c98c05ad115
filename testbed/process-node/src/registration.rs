//! The Node object and its heartbeats: a Ready status refreshed every 10 s
//! and a Lease in kube-node-lease renewed as often, so the node lifecycle
//! controller keeps the node Ready and untainted.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeCondition, NodeSystemInfo};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::Error;

/// Seconds between status and Lease renewals.
pub const HEARTBEAT_SECS: u64 = 10;
const KUBELET_VERSION: &str = "v1.37.2";

fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> NodeCondition {
    NodeCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(Time(now)),
        last_transition_time: Some(Time(since())),
    }
}

/// Kubernetes (Go) names for the machine architecture.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// When this node process started: the conditions have not changed since.
fn since() -> Timestamp {
    static SINCE: std::sync::OnceLock<Timestamp> = std::sync::OnceLock::new();
    *SINCE.get_or_init(Timestamp::now)
}

fn status_patch(now: Timestamp, ip: &str, kubelet_port: Option<u16>) -> serde_json::Value {
    let q = |s: &str| Quantity(s.to_string());
    let resources: BTreeMap<String, Quantity> = [
        ("cpu", q("8")),
        ("memory", q("16Gi")),
        ("pods", q("110")),
        ("ephemeral-storage", q("100Gi")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    json!({"status": {
        "capacity": resources,
        "allocatable": resources,
        "conditions": [
            condition("Ready", "True", "KubeletReady", "process node is posting ready status", now),
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "no pressure", now),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "no pressure", now),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "no pressure", now),
        ],
        "addresses": [
            NodeAddress { type_: "InternalIP".into(), address: ip.into() },
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet_port.unwrap_or(0)}},
        "nodeInfo": NodeSystemInfo {
            architecture: go_arch().into(),
            boot_id: "process-node".into(),
            container_runtime_version: "process://0.1.0".into(),
            kernel_version: "local".into(),
            kube_proxy_version: String::new(),
            kubelet_version: KUBELET_VERSION.into(),
            machine_id: "process-node".into(),
            operating_system: "linux".into(),
            os_image: "heartbeat-operator process node".into(),
            system_uuid: "process-node".into(),
            ..Default::default()
        },
    }})
}

/// Creates the Node (if missing) and posts a Ready status.
pub async fn register(
    client: &kube::Client,
    name: &str,
    ip: &str,
    kubelet_port: Option<u16>,
) -> Result<Node, Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node_err = |verb: &'static str| {
        move |source| Error::Node {
            verb,
            name: name.to_string(),
            source,
        }
    };
    if nodes
        .get_opt(name)
        .await
        .map_err(node_err("getting"))?
        .is_none()
    {
        let labels: BTreeMap<String, String> = [
            ("kubernetes.io/hostname", name),
            ("kubernetes.io/os", "linux"),
            ("kubernetes.io/arch", go_arch()),
            ("heartbeat.dev/process-node", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let node = Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(labels),
                ..Default::default()
            },
            ..Default::default()
        };
        nodes
            .create(&PostParams::default(), &node)
            .await
            .map_err(node_err("creating"))?;
    }
    heartbeat(client, name, ip, kubelet_port).await?;
    nodes.get(name).await.map_err(node_err("getting"))
}

/// Refreshes the Ready condition and renews the Lease.
pub async fn heartbeat(
    client: &kube::Client,
    name: &str,
    ip: &str,
    kubelet_port: Option<u16>,
) -> Result<(), Error> {
    let now = Timestamp::now();
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(status_patch(now, ip, kubelet_port)),
        )
        .await
        .map_err(|source| Error::Node {
            verb: "patching the status of",
            name: name.into(),
            source,
        })?;
    let node = nodes.get(name).await.map_err(|source| Error::Node {
        verb: "getting",
        name: name.into(),
        source,
    })?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(name.into()),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Node".into(),
                name: name.into(),
                uid: node.metadata.uid.unwrap_or_default(),
                ..Default::default()
            }]),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(name.into()),
            lease_duration_seconds: Some(40),
            renew_time: Some(MicroTime(now)),
            ..Default::default()
        }),
    };
    leases
        .patch(
            name,
            &PatchParams::apply("process-node").force(),
            &Patch::Apply(&lease),
        )
        .await
        .map_err(|source| Error::Lease {
            name: name.into(),
            source,
        })?;
    Ok(())
}
