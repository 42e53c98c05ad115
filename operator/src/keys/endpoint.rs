//! `POST /keys/pod`: a sidecar's pod key. The caller shows a ServiceAccount
//! token for audience `heartbeat.dev` (header `x-heartbeat-token`); a
//! TokenReview says whether the API server issued it and, for a token
//! bound to a pod (every projected token is), which pod: its uid is what
//! the key is derived for, so the answer is useless for any other pod.
//! Reached through the API server's service proxy (the chart's Role lets
//! every ServiceAccount post to this port only), or directly.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use heartbeat_crds::signing::{AUDIENCE, MAX_TOKEN_BYTES, PodKey, TOKEN_HEADER, pod_key};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};
use serde_json::json;

use super::Master;
use crate::metrics::{Metrics, OutcomeLabels};

/// The request carries its token in a header; a body is never read.
pub const MAX_BODY_BYTES: usize = 1024;
/// A request (one TokenReview) answered or dropped within this.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The user extra a bound token carries: the pod's uid.
pub const POD_UID_EXTRA: &str = "authentication.kubernetes.io/pod-uid";
/// And its name.
pub const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";

/// What the endpoint works from.
pub struct KeyState {
    pub client: kube::Client,
    pub master: Master,
    pub metrics: Arc<Metrics>,
    /// Told to sidecars: ask again after this long.
    pub refresh_seconds: u32,
}

/// Who a reviewed token is, or why it proves nothing.
#[derive(Debug, PartialEq, Eq)]
pub enum Caller {
    Pod {
        uid: String,
        name: String,
        user: String,
    },
    Refused(&'static str),
}

/// Judges a TokenReview's answer: authenticated, for our audience, bound
/// to a pod.
pub fn caller(review: &TokenReview) -> Caller {
    let Some(status) = &review.status else {
        return Caller::Refused("no_review");
    };
    if status.authenticated != Some(true) {
        return Caller::Refused("not_authenticated");
    }
    if !status
        .audiences
        .as_ref()
        .is_some_and(|a| a.iter().any(|a| a == AUDIENCE))
    {
        return Caller::Refused("wrong_audience");
    }
    let user = status.user.as_ref();
    let extra = |k: &str| {
        user.and_then(|u| u.extra.as_ref())
            .and_then(|e| e.get(k))
            .and_then(|v| match v.as_slice() {
                [one] if !one.is_empty() => Some(one.clone()),
                _ => None,
            })
    };
    match (extra(POD_UID_EXTRA), extra(POD_NAME_EXTRA)) {
        (Some(uid), Some(name)) => Caller::Pod {
            uid,
            name,
            user: user.and_then(|u| u.username.clone()).unwrap_or_default(),
        },
        _ => Caller::Refused("not_bound_to_a_pod"),
    }
}

fn count(metrics: &Metrics, outcome: &str, reason: &str) {
    metrics
        .pod_keys
        .get_or_create(&OutcomeLabels {
            outcome: outcome.into(),
            reason: reason.into(),
        })
        .inc();
}

fn refuse(metrics: &Metrics, status: StatusCode, reason: &'static str, why: &str) -> Response {
    count(metrics, "refused", reason);
    tracing::debug!(reason, "refused a pod key request");
    (status, Json(json!({ "error": why, "reason": reason }))).into_response()
}

/// `POST /keys/pod`.
pub async fn pod_key_handler(State(state): State<Arc<KeyState>>, headers: HeaderMap) -> Response {
    let m = &state.metrics;
    let Some(token) = headers
        .get(TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= MAX_TOKEN_BYTES)
    else {
        return refuse(
            m,
            StatusCode::UNAUTHORIZED,
            "no_token",
            "send the pod's ServiceAccount token for audience heartbeat.dev in x-heartbeat-token",
        );
    };
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: token.to_string(),
            audiences: Some(vec![AUDIENCE.to_string()]),
        },
        ..TokenReview::default()
    };
    let reviewed = match Api::<TokenReview>::all(state.client.clone())
        .create(&PostParams::default(), &review)
        .await
    {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "TokenReview failed");
            return refuse(
                m,
                StatusCode::SERVICE_UNAVAILABLE,
                "review_failed",
                "the token could not be reviewed now; ask again",
            );
        }
    };
    let (uid, name, user) = match caller(&reviewed) {
        Caller::Pod { uid, name, user } => (uid, name, user),
        Caller::Refused(reason) => {
            return refuse(
                m,
                StatusCode::UNAUTHORIZED,
                reason,
                "the token does not prove a pod (a projected ServiceAccount token for audience heartbeat.dev is needed)",
            );
        }
    };
    let Some(loaded) = state.master.get() else {
        return refuse(
            m,
            StatusCode::SERVICE_UNAVAILABLE,
            "no_master",
            "the signing master is not loaded yet; ask again",
        );
    };
    let Some(master) = loaded.ring.current() else {
        return refuse(
            m,
            StatusCode::SERVICE_UNAVAILABLE,
            "no_master",
            "no signing master",
        );
    };
    count(m, "issued", "");
    tracing::debug!(pod = %name, %uid, %user, generation = loaded.generation, "issued a pod key");
    Json(PodKey {
        key: hex::encode(pod_key(master, &uid)),
        generation: loaded.generation,
        pod_uid: uid,
        refresh_seconds: state.refresh_seconds,
    })
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::authentication::v1::{TokenReviewStatus, UserInfo};
    use std::collections::BTreeMap;

    fn reviewed(auth: bool, audiences: &[&str], extra: &[(&str, &[&str])]) -> TokenReview {
        TokenReview {
            status: Some(TokenReviewStatus {
                authenticated: Some(auth),
                audiences: Some(audiences.iter().map(|a| a.to_string()).collect()),
                user: Some(UserInfo {
                    username: Some("system:serviceaccount:ns:sa".into()),
                    extra: Some(
                        extra
                            .iter()
                            .map(|(k, v)| {
                                (k.to_string(), v.iter().map(|s| s.to_string()).collect())
                            })
                            .collect::<BTreeMap<_, _>>(),
                    ),
                    ..UserInfo::default()
                }),
                ..TokenReviewStatus::default()
            }),
            ..TokenReview::default()
        }
    }

    /// Rule: only an authenticated token for our audience that is bound to
    /// one pod gets a key, and the key is for that pod's uid.
    #[test]
    fn only_a_pod_bound_token_for_our_audience_names_a_caller() {
        let bound: &[(&str, &[&str])] = &[(POD_UID_EXTRA, &["u-1"]), (POD_NAME_EXTRA, &["p"])];
        assert_eq!(
            caller(&reviewed(true, &[AUDIENCE], bound)),
            Caller::Pod {
                uid: "u-1".into(),
                name: "p".into(),
                user: "system:serviceaccount:ns:sa".into()
            }
        );
        assert_eq!(
            caller(&reviewed(false, &[AUDIENCE], bound)),
            Caller::Refused("not_authenticated")
        );
        assert_eq!(
            caller(&reviewed(true, &["https://kubernetes.default.svc"], bound)),
            Caller::Refused("wrong_audience")
        );
        assert_eq!(
            caller(&reviewed(true, &[AUDIENCE], &[(POD_NAME_EXTRA, &["p"])])),
            Caller::Refused("not_bound_to_a_pod")
        );
        assert_eq!(
            caller(&reviewed(
                true,
                &[AUDIENCE],
                &[(POD_UID_EXTRA, &["u-1", "u-2"]), (POD_NAME_EXTRA, &["p"])]
            )),
            Caller::Refused("not_bound_to_a_pod")
        );
        assert_eq!(
            caller(&TokenReview::default()),
            Caller::Refused("no_review")
        );
    }
}
