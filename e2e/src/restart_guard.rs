//! The guard every cluster test runs when its namespace is dropped: no
//! product container (the operator or the sidecar) restarted and none of
//! its liveness probes failed, unless the test said it causes that
//! ([`TestNamespace::expect_restarts`](crate::TestNamespace::expect_restarts)).
//! Read from the pods' statuses and the namespace's Events (the process
//! node writes `Unhealthy` and `Killing` as the kubelet does, so a restart
//! of a pod the test deleted is still seen).

use serde_json::Value;

use crate::stack::{Stack, run};

/// The chart's operator container (charts/heartbeat-operator/templates/deployment.yaml).
pub const OPERATOR_CONTAINER: &str = "operator";

/// The containers the guard watches.
pub const PRODUCT_CONTAINERS: [&str; 2] = [
    heartbeat_crds::sidecar_contract::CONTAINER_NAME,
    OPERATOR_CONTAINER,
];

/// The container an Event's `fieldPath` (`spec.containers{name}`) names.
fn container_of(field_path: &str) -> Option<&str> {
    let (_, rest) = field_path.split_once('{')?;
    rest.strip_suffix('}')
}

/// What, in the pods and Events of `namespace` (as JSON lists), a product
/// container not in `allowed` went through: restarts, liveness probe
/// failures and probe kills (liveness or startup). A readiness or startup
/// probe failing is not counted: not ready, or not started yet, is how a
/// container says it is starting or cut off (a startup probe that runs out
/// is a kill, counted), and tests check readiness where it matters.
pub fn unexplained(pods: &Value, events: &Value, allowed: &[String]) -> Vec<String> {
    let watched =
        |name: &str| PRODUCT_CONTAINERS.contains(&name) && !allowed.iter().any(|a| a == name);
    let mut found = Vec::new();
    for pod in pods["items"].as_array().into_iter().flatten() {
        let pod_name = pod["metadata"]["name"].as_str().unwrap_or("?");
        for list in ["containerStatuses", "initContainerStatuses"] {
            for c in pod["status"][list].as_array().into_iter().flatten() {
                let name = c["name"].as_str().unwrap_or_default();
                let restarts = c["restartCount"].as_i64().unwrap_or(0);
                if restarts > 0 && watched(name) {
                    found.push(format!(
                        "{pod_name}/{name} restarted {restarts} time(s); last state: {}",
                        c["lastState"]
                    ));
                }
            }
        }
    }
    for e in events["items"].as_array().into_iter().flatten() {
        let reason = e["reason"].as_str().unwrap_or_default();
        let message = e["message"].as_str().unwrap_or_default();
        let probe_failure = reason == "Unhealthy" && message.starts_with("Liveness");
        if !(probe_failure || reason == "Killing") {
            continue;
        }
        let object = &e["involvedObject"];
        let Some(container) = object["fieldPath"].as_str().and_then(container_of) else {
            continue;
        };
        if watched(container) {
            found.push(format!(
                "{}/{container}: {reason} x{}: {message}",
                object["name"].as_str().unwrap_or("?"),
                e["count"].as_i64().unwrap_or(1)
            ));
        }
    }
    found
}

/// [`unexplained`] for a namespace of the stack; an unreadable namespace
/// is reported too (a guard that cannot look must not pass).
pub fn check(stack: &Stack, namespace: &str, allowed: &[String]) -> Vec<String> {
    let list = |kind: &str| -> Result<Value, String> {
        let (ok, out, err) = run(stack
            .kubectl()
            .args(["get", kind, "-n", namespace, "-o", "json"]));
        if !ok {
            return Err(format!("kubectl get {kind} -n {namespace}: {err}"));
        }
        serde_json::from_str(&out).map_err(|e| format!("kubectl get {kind}: {e}"))
    };
    match (list("pods"), list("events")) {
        (Ok(pods), Ok(events)) => unexplained(&pods, &events, allowed),
        (Err(e), _) | (_, Err(e)) => vec![e],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pods(name: &str, restarts: i64) -> Value {
        json!({"items": [{"metadata": {"name": "p"}, "status": {
            "containerStatuses": [{"name": name, "restartCount": restarts}],
            "initContainerStatuses": [{"name": "heartbeat", "restartCount": 0}]}}]})
    }

    fn events(reason: &str, message: &str, container: &str) -> Value {
        json!({"items": [{"reason": reason, "message": message, "count": 1,
            "involvedObject": {"name": "p", "fieldPath": format!("spec.containers{{{container}}}")}}]})
    }

    const NONE: &Value = &Value::Null;

    #[test]
    fn a_product_restart_is_found_unless_allowed() {
        assert_eq!(unexplained(&pods("operator", 1), NONE, &[]).len(), 1);
        assert!(unexplained(&pods("operator", 0), NONE, &[]).is_empty());
        assert!(unexplained(&pods("app", 3), NONE, &[]).is_empty());
        assert!(unexplained(&pods("operator", 1), NONE, &["operator".into()]).is_empty());
    }

    #[test]
    fn liveness_failures_and_kills_of_product_containers_are_found() {
        let failed = events("Unhealthy", "Liveness probe failed: Get ...", "heartbeat");
        assert_eq!(unexplained(NONE, &failed, &[]).len(), 1);
        let killed = events("Killing", "Container operator failed", "operator");
        assert_eq!(unexplained(NONE, &killed, &[]).len(), 1);
        let not_ready = events("Unhealthy", "Readiness probe failed: 503", "operator");
        assert!(unexplained(NONE, &not_ready, &[]).is_empty());
        let starting = events("Unhealthy", "Startup probe failed: Get ...", "operator");
        assert!(unexplained(NONE, &starting, &[]).is_empty());
        let app = events("Unhealthy", "Liveness probe failed: Get ...", "app");
        assert!(unexplained(NONE, &app, &[]).is_empty());
    }
}
