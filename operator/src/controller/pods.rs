//! Which pods a monitor covers, and what the membership table needs to
//! know about each. Pure: the same choice the webhook makes at admission
//! (the annotated monitor, else the first matching one by name).

use std::borrow::Borrow;

use heartbeat_crds::monitor::HeartbeatMonitor;
use heartbeat_crds::program_id::{TemplateVars, render};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use crate::membership::state::PodEnd;
use crate::membership::table::PodFacts;
use crate::pod_contract::{ANNOTATION_INJECT, SIDECAR_NAME, already_injected, choose};

/// The pods of a monitor: members (injected) and those left without a sidecar.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Coverage {
    pub members: Vec<PodFacts>,
    /// Running pods the monitor covers that have no sidecar (created while
    /// the webhook was down, for example), by name. Opted-out pods are not
    /// counted: they asked for it.
    pub uninjected: Vec<String>,
}

fn pod_end(pod: &Pod) -> Option<PodEnd> {
    if pod.metadata.deletion_timestamp.is_some() {
        return Some(PodEnd::Deleting);
    }
    match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Succeeded" | "Failed") => Some(PodEnd::Completed),
        _ => None,
    }
}

/// From when the member's silence counts: when its sidecar started. A
/// sidecar that has not started yet (image pull, init) has no deadline; one
/// that started before and is down now (crash loop) counts from the pod's
/// start.
fn clock_start(pod: &Pod) -> Option<jiff::Timestamp> {
    let status = pod.status.as_ref()?;
    let pod_start = status.start_time.as_ref().map(|t| t.0);
    let sidecar = status
        .init_container_statuses
        .iter()
        .chain(status.container_statuses.iter())
        .flatten()
        .find(|c| c.name == SIDECAR_NAME);
    let Some(cs) = sidecar else {
        // No container statuses reported: the pod's start is all there is.
        return pod_start;
    };
    if let Some(started) = cs
        .state
        .as_ref()
        .and_then(|s| s.running.as_ref())
        .and_then(|r| r.started_at.as_ref())
    {
        return Some(started.0);
    }
    (cs.restart_count > 0
        || cs
            .last_state
            .as_ref()
            .is_some_and(|l| l.terminated.is_some()))
    .then_some(pod_start)
    .flatten()
}

fn program_id(monitor: &HeartbeatMonitor, pod: &Pod) -> String {
    let spec = pod.spec.as_ref();
    let vars = TemplateVars {
        namespace: pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod: pod.metadata.name.as_deref().unwrap_or_default(),
        container: spec
            .and_then(|s| s.containers.first())
            .map(|c| c.name.as_str())
            .unwrap_or_default(),
        monitor: monitor.metadata.name.as_deref().unwrap_or_default(),
        node: spec
            .and_then(|s| s.node_name.as_deref())
            .unwrap_or_default(),
    };
    render(&monitor.spec.program_id, &vars).unwrap_or_else(|_| pod.name_any())
}

/// The pods `monitor` covers among `pods`, given every monitor of its
/// namespace (`siblings`, `monitor` included).
pub fn coverage<'a>(
    monitor: &HeartbeatMonitor,
    siblings: &[impl Borrow<HeartbeatMonitor>],
    pods: impl IntoIterator<Item = &'a Pod>,
) -> Coverage {
    let ns = monitor.metadata.namespace.as_deref();
    let name = monitor.name_any();
    let mut out = Coverage::default();
    for pod in pods {
        if pod.metadata.namespace.as_deref() != ns {
            continue;
        }
        let covered = choose(pod, siblings).is_ok_and(|(m, _)| m.name_any() == name);
        if !covered {
            continue;
        }
        let end = pod_end(pod);
        if already_injected(pod) {
            let Some(uid) = pod.metadata.uid.clone() else {
                continue;
            };
            out.members.push(PodFacts {
                uid,
                name: pod.name_any(),
                program_id: program_id(monitor, pod),
                started: clock_start(pod),
                end,
            });
        } else if end.is_none()
            && pod.annotations().get(ANNOTATION_INJECT).map(String::as_str) != Some("false")
        {
            out.uninjected.push(pod.name_any());
        }
    }
    out.uninjected.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn monitor(name: &str, app: &str) -> HeartbeatMonitor {
        serde_json::from_value(json!({
            "apiVersion": "heartbeat.dev/v1alpha1", "kind": "HeartbeatMonitor",
            "metadata": {"name": name, "namespace": "data"},
            "spec": {"topic": "hb", "intervalSeconds": 10, "brokerSecretRef": {"name": "k"},
                     "selector": {"matchLabels": {"app": app}}}
        }))
        .expect("monitor")
    }

    fn pod(name: &str, app: &str, extra: serde_json::Value) -> Pod {
        let mut v = json!({
            "metadata": {"name": name, "namespace": "data", "uid": format!("uid-{name}"),
                         "labels": {"app": app}, "annotations": {}},
            "spec": {"containers": [{"name": "main"}], "nodeName": "node-1"},
            "status": {"phase": "Running", "startTime": "2026-11-27T07:00:00Z"}
        });
        json_patch::merge(&mut v, &extra);
        serde_json::from_value(v).expect("pod")
    }

    fn injected() -> serde_json::Value {
        json!({"metadata": {"annotations": {"heartbeat.dev/injected": "monitor=ingest,sidecar=0.1.0"}}})
    }

    #[test]
    fn injected_pods_are_members_and_the_others_uninjected_unless_opted_out() {
        let m = monitor("ingest", "x");
        let pods = [
            pod("a", "x", injected()),
            pod("b", "x", json!({})),
            pod(
                "c",
                "x",
                json!({"metadata": {"annotations": {"heartbeat.dev/inject": "false"}}}),
            ),
            pod("d", "y", injected()),
            pod("e", "x", json!({"metadata": {"namespace": "other"}})),
        ];
        let c = coverage(&m, std::slice::from_ref(&m), &pods);
        assert_eq!(c.members.len(), 1);
        assert_eq!(c.members[0].uid, "uid-a");
        assert_eq!(c.members[0].program_id, "data.a");
        assert_eq!(
            c.members[0].started,
            Some("2026-11-27T07:00:00Z".parse().expect("ts"))
        );
        assert_eq!(c.uninjected, ["b"]);
    }

    #[test]
    fn silence_counts_from_the_sidecars_start_and_not_before_it_started() {
        let m = monitor("ingest", "x");
        let with = |statuses: serde_json::Value| {
            let mut v = injected();
            json_patch::merge(
                &mut v,
                &json!({"status": {"initContainerStatuses": statuses}}),
            );
            let p = pod("a", "x", v);
            coverage(&m, std::slice::from_ref(&m), [&p]).members[0].started
        };
        let ts = |s: &str| Some(s.parse::<jiff::Timestamp>().expect("ts"));
        let running = json!([{"name": "heartbeat", "ready": true, "restartCount": 0, "image": "i", "imageID": "",
            "state": {"running": {"startedAt": "2026-11-27T07:00:40Z"}}}]);
        assert_eq!(with(running), ts("2026-11-27T07:00:40Z"));
        let pulling = json!([{"name": "heartbeat", "ready": false, "restartCount": 0, "image": "i", "imageID": "",
            "state": {"waiting": {"reason": "ContainerCreating"}}}]);
        assert_eq!(with(pulling), None);
        let crashing = json!([{"name": "heartbeat", "ready": false, "restartCount": 3, "image": "i", "imageID": "",
            "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]);
        assert_eq!(with(crashing), ts("2026-11-27T07:00:00Z"));
    }

    #[test]
    fn a_pod_covered_by_another_monitor_is_not_this_ones() {
        let a = monitor("a-first", "x");
        let b = monitor("b-second", "x");
        let siblings = [a.clone(), b.clone()];
        let annotated = pod(
            "p",
            "x",
            json!({"metadata": {"annotations": {"heartbeat.dev/monitor": "b-second", "heartbeat.dev/injected": "monitor=b-second"}}}),
        );
        let plain = pod("q", "x", injected());
        assert_eq!(
            coverage(&a, &siblings, [&annotated, &plain]).members.len(),
            1
        );
        let cb = coverage(&b, &siblings, [&annotated, &plain]);
        assert_eq!(
            cb.members
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>(),
            ["p"]
        );
    }

    #[test]
    fn deleted_and_completed_pods_are_ended_and_never_uninjected() {
        let m = monitor("ingest", "x");
        let deleting = pod(
            "a",
            "x",
            json!({"metadata": {"deletionTimestamp": "2026-11-27T07:01:00Z", "annotations": {"heartbeat.dev/injected": "m"}}}),
        );
        let done = pod(
            "b",
            "x",
            json!({"status": {"phase": "Succeeded"}, "metadata": {"annotations": {"heartbeat.dev/injected": "m"}}}),
        );
        let done_plain = pod("c", "x", json!({"status": {"phase": "Failed"}}));
        let c = coverage(
            &m,
            std::slice::from_ref(&m),
            [&deleting, &done, &done_plain],
        );
        let ends: Vec<_> = c.members.iter().map(|p| p.end).collect();
        assert_eq!(ends, [Some(PodEnd::Deleting), Some(PodEnd::Completed)]);
        assert!(c.uninjected.is_empty());
    }
}
