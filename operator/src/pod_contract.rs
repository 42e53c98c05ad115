//! The contract between the webhook and the controller about pods: the
//! annotations the webhook reads and writes, the sidecar container's name,
//! and which monitor covers a pod. The webhook decides injection with it,
//! the controller decides membership with it, so the two cannot disagree.

use std::borrow::Borrow;

use heartbeat_crds::monitor::HeartbeatMonitor;
use k8s_openapi::api::core::v1::{Container, Pod};
use kube::core::{Selector, SelectorExt};
use kube::{Resource, ResourceExt};

/// Pod annotation: `"false"` keeps the sidecar out of this pod.
pub const ANNOTATION_INJECT: &str = "heartbeat.dev/inject";
/// Pod annotation: the monitor that covers the pod (set by the user to
/// choose one, or by the webhook to record its choice).
pub const ANNOTATION_MONITOR: &str = "heartbeat.dev/monitor";
/// Pod annotation the webhook sets: `monitor=<name>,sidecar=<version>`.
pub const ANNOTATION_INJECTED: &str = "heartbeat.dev/injected";
/// Pod annotation the webhook sets when several monitors matched: the others.
pub const ANNOTATION_ALSO_MATCHED: &str = "heartbeat.dev/also-matched";
/// The injected container's name.
pub const SIDECAR_NAME: &str = heartbeat_crds::sidecar_contract::CONTAINER_NAME;
/// Why no monitor covers a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uncovered {
    /// `heartbeat.dev/monitor` names a monitor that does not exist.
    NamedMonitorMissing { monitor: String },
    /// No monitor of the namespace selects the pod.
    NoMatchingMonitor,
}

/// The monitor that covers `pod`: the one its annotation names, else the
/// first by name of those whose selector matches (the others are returned).
pub fn choose<'a, M: Borrow<HeartbeatMonitor>>(
    pod: &Pod,
    monitors: &'a [M],
) -> Result<(&'a HeartbeatMonitor, Vec<&'a str>), Uncovered> {
    let mut monitors = monitors.iter().map(Borrow::borrow);
    if let Some(name) = pod.annotations().get(ANNOTATION_MONITOR) {
        return monitors
            .find(|m| m.name_any() == *name)
            .map(|m| (m, Vec::new()))
            .ok_or_else(|| Uncovered::NamedMonitorMissing {
                monitor: name.clone(),
            });
    }
    let labels = pod.labels();
    let mut matching: Vec<&HeartbeatMonitor> = monitors
        .filter(|m| {
            m.spec
                .selector
                .clone()
                .and_then(|s| Selector::try_from(s).ok())
                .is_some_and(|s| s.matches(labels))
        })
        .collect();
    // Deterministic whatever order the cache lists them in.
    matching.sort_by_key(|m| m.name_any());
    let (first, rest) = matching.split_first().ok_or(Uncovered::NoMatchingMonitor)?;
    Ok((
        first,
        rest.iter()
            .map(|m| m.meta().name.as_deref().unwrap_or_default())
            .collect(),
    ))
}

/// Whether `pod` already has the sidecar: the webhook's annotation, or a
/// container of the sidecar's name (injected by hand, or a reinvocation).
pub fn already_injected(pod: &Pod) -> bool {
    let spec = pod.spec.as_ref();
    let named =
        |cs: Option<&Vec<Container>>| cs.into_iter().flatten().any(|c| c.name == SIDECAR_NAME);
    pod.annotations().contains_key(ANNOTATION_INJECTED)
        || spec.is_some_and(|s| named(s.init_containers.as_ref()) || named(Some(&s.containers)))
}
