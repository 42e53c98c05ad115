//! The `/mutate` endpoint: decodes an AdmissionReview, asks [`decide`]
//! with the monitors of the pod's namespace from the cache (and what their
//! status says of their broker Secrets: the webhook reads no Secret),
//! and encodes the answer. It never stops a pod from being created: what
//! it cannot handle is admitted unchanged, logged and counted; what is not
//! an AdmissionReview at all gets a 400 with a JSON reason.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use heartbeat_crds::conditions::{FALSE, READY, reason};
use heartbeat_crds::monitor::HeartbeatMonitor;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::consumer::lock;
use crate::controller::events::Budget;
use crate::metrics::{EventLabels, Metrics, OutcomeLabels};
use crate::webhook::inject::{InjectDefaults, Outcome, SkipReason, decide};

/// The largest body read: the API server sends at most a few MiB.
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// What `/mutate` works from.
pub struct WebhookState {
    /// Every HeartbeatMonitor (a reflector's cache).
    pub monitors: Store<HeartbeatMonitor>,
    pub defaults: InjectDefaults,
    pub metrics: Arc<Metrics>,
    /// Publishes `InjectionSkipped` on monitors.
    pub recorder: Option<Recorder>,
    /// Set once the caches are synced: before that every pod would look
    /// unmatched, so pods are admitted unchanged without any Event.
    pub ready: Arc<AtomicBool>,
    /// `InjectionSkipped` Event budgets, per monitor (the controller's
    /// rule): a flood of pods cannot flood the API server with Events.
    pub budgets: Mutex<HashMap<(String, String), Budget>>,
}

/// Most monitors with an Event budget kept; beyond it the budgets start
/// over (a full map means many monitors, each with a fresh burst).
const MAX_BUDGETS: usize = 10_000;

/// Whether the controller last found broker Secret `name` missing (a
/// monitor naming it is `Ready=False`, reason `SecretMissing`): the
/// webhook reads no Secret, and a pod whose sidecar would wait for a
/// Secret that is not there is better admitted without it, with an Event.
fn reported_missing(monitors: &[Arc<HeartbeatMonitor>], name: &str) -> bool {
    monitors
        .iter()
        .filter(|m| m.spec.broker_secret_ref.name == name)
        .filter_map(|m| m.status.as_ref())
        .flat_map(|s| s.conditions.iter())
        .any(|c| c.type_ == READY && c.status == FALSE && c.reason == reason::SECRET_MISSING)
}

fn count(metrics: &Metrics, outcome: &str, reason: &str) {
    metrics
        .admissions
        .get_or_create(&OutcomeLabels {
            outcome: outcome.into(),
            reason: reason.into(),
        })
        .inc();
}

/// `POST /mutate`.
pub async fn mutate(State(state): State<Arc<WebhookState>>, body: Bytes) -> Response {
    let started = Instant::now();
    // The common case in one pass: a review of a Pod. Anything else (another
    // kind, a pod the webhook cannot read, garbage) takes the general path.
    let response = match serde_json::from_slice::<AdmissionReview<Pod>>(&body)
        .ok()
        .and_then(|r| TryInto::<AdmissionRequest<Pod>>::try_into(r).ok())
        .filter(|r| r.kind.kind == "Pod")
    {
        Some(request) => respond_pod(&state, &request),
        None => {
            let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(&body) {
                Ok(r) => r,
                Err(e) => {
                    return bad_request(&state.metrics, format!("not an AdmissionReview: {e}"));
                }
            };
            let request: AdmissionRequest<DynamicObject> = match review.try_into() {
                Ok(r) => r,
                Err(e) => {
                    return bad_request(
                        &state.metrics,
                        format!("an AdmissionReview without a request: {e}"),
                    );
                }
            };
            respond(&state, &request)
        }
    };
    state
        .metrics
        .admission_duration
        .observe(started.elapsed().as_secs_f64());
    Json(response.into_review()).into_response()
}

fn bad_request(metrics: &Metrics, why: String) -> Response {
    metrics.bad_requests.inc();
    tracing::warn!(%why, "bad admission request");
    (StatusCode::BAD_REQUEST, Json(json!({ "error": why }))).into_response()
}

/// The answer to a review of a Pod that decoded as one.
fn respond_pod(state: &WebhookState, req: &AdmissionRequest<Pod>) -> AdmissionResponse {
    let admit = AdmissionResponse::from(req);
    if req.operation != Operation::Create {
        count(&state.metrics, "ignored", "not_a_pod_create");
        return admit;
    }
    match req.object.clone() {
        Some(pod) => decide_for(state, admit, pod, req.namespace.clone(), req.dry_run),
        None => {
            count(&state.metrics, "error", "unreadable_pod");
            admit
        }
    }
}

/// The answer to any other request: admitted unchanged, or (a Pod CREATE
/// whose pod did not decode in one pass) decided after a second look.
fn respond(state: &WebhookState, req: &AdmissionRequest<DynamicObject>) -> AdmissionResponse {
    let admit = AdmissionResponse::from(req);
    if req.kind.kind != "Pod" || req.operation != Operation::Create {
        count(&state.metrics, "ignored", "not_a_pod_create");
        return admit;
    }
    let pod = req
        .object
        .as_ref()
        .ok_or_else(|| "no object".to_string())
        .and_then(|o| serde_json::to_value(o).map_err(|e| e.to_string()))
        .and_then(|v| serde_json::from_value::<Pod>(v).map_err(|e| e.to_string()));
    match pod {
        Ok(p) => decide_for(state, admit, p, req.namespace.clone(), req.dry_run),
        Err(why) => {
            tracing::warn!(%why, uid = %req.uid, "unreadable pod; admitted unchanged");
            count(&state.metrics, "error", "unreadable_pod");
            admit
        }
    }
}

/// Decides for `pod` and turns the outcome into the response.
fn decide_for(
    state: &WebhookState,
    admit: AdmissionResponse,
    mut pod: Pod,
    request_namespace: Option<String>,
    dry_run: bool,
) -> AdmissionResponse {
    if !state.ready.load(Ordering::Relaxed) {
        count(&state.metrics, "skipped", "not_ready");
        return admit;
    }
    // A pod being created may not carry its namespace yet; the request does.
    let namespace = request_namespace
        .or_else(|| pod.metadata.namespace.clone())
        .unwrap_or_default();
    pod.metadata.namespace = Some(namespace.clone());
    // Shared, not cloned (a monitor may list a thousand programs).
    let monitors: Vec<Arc<HeartbeatMonitor>> = state
        .monitors
        .state()
        .into_iter()
        .filter(|m| m.namespace().as_deref() == Some(namespace.as_str()))
        .collect();
    let secret_exists = |name: &str| !reported_missing(&monitors, name);
    match decide(&pod, &monitors, secret_exists, &state.defaults) {
        Outcome::Inject { monitor, patch } => match admit.clone().with_patch(patch) {
            Ok(patched) => {
                count(&state.metrics, "injected", "");
                tracing::info!(pod = %describe(&pod), %namespace, %monitor, "injected the heartbeat sidecar");
                patched
            }
            Err(e) => {
                tracing::error!(error = %e, pod = %describe(&pod), "cannot encode the patch; admitted unchanged");
                count(&state.metrics, "error", "encode_patch");
                admit
            }
        },
        Outcome::Skip { monitor, reason } => {
            count(&state.metrics, "skipped", reason.label());
            // A dry run has no side effects (the configuration says so): no Event.
            if reason.concerns_a_monitor() && !dry_run {
                tracing::info!(pod = %describe(&pod), %namespace, %reason, "injection skipped");
                if let Some(m) =
                    monitor.and_then(|m| monitors.into_iter().find(|x| x.name_any() == m))
                {
                    publish_skip(state, &m, &pod, &reason);
                }
            }
            admit
        }
    }
}

/// The pod's name, or its generateName and owner (pods of a Deployment
/// have no name at admission).
fn describe(pod: &Pod) -> String {
    let m = &pod.metadata;
    if let Some(name) = &m.name {
        return name.clone();
    }
    let owner = m
        .owner_references
        .iter()
        .flatten()
        .next()
        .map(|o| format!(" (owner {} {})", o.kind, o.name))
        .unwrap_or_default();
    format!("{}*{owner}", m.generate_name.clone().unwrap_or_default())
}

/// An `InjectionSkipped` Event on the monitor, sent without holding up the
/// admission.
fn publish_skip(state: &WebhookState, monitor: &HeartbeatMonitor, pod: &Pod, reason: &SkipReason) {
    let Some(recorder) = state.recorder.clone() else {
        return;
    };
    let key = (monitor.namespace().unwrap_or_default(), monitor.name_any());
    let allowed = {
        let mut budgets = lock(&state.budgets);
        if budgets.len() >= MAX_BUDGETS && !budgets.contains_key(&key) {
            budgets.clear();
        }
        budgets.entry(key).or_default().take(jiff::Timestamp::now())
    };
    let labels = EventLabels {
        reason: "InjectionSkipped".into(),
    };
    if !allowed {
        state.metrics.events_suppressed.get_or_create(&labels).inc();
        return;
    }
    state.metrics.events.get_or_create(&labels).inc();
    let reference: ObjectReference = monitor.object_ref(&());
    let event = Event {
        type_: EventType::Warning,
        reason: "InjectionSkipped".into(),
        note: Some(format!("pod {}: {reason}", describe(pod))),
        action: "Inject".into(),
        secondary: None,
    };
    tokio::spawn(async move {
        if let Err(e) = recorder.publish(&event, &reference).await {
            tracing::warn!(error = %e, "cannot publish the InjectionSkipped Event");
        }
    });
}
