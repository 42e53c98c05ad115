//! The sidecar's HTTP port: liveness of the sidecar and of the app, progress
//! pings from the app, and Prometheus metrics. Pings change what the
//! sidecar says about the app (and so whether Kubernetes restarts it), so
//! they are taken only from the pod itself: see [`Pingers`].

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use heartbeat_crds::sidecar_contract::path;
use serde::Deserialize;

use crate::sidecar::Sidecar;
use crate::signals::PingKind;

/// Who may ping: the pod's own loopback, and the address the sidecar
/// listens on (in a pod that is the pod IP, so a connection from that
/// address comes from a container of the same pod; another pod's comes
/// from its own IP). Pure.
#[derive(Debug, Clone, Copy)]
pub struct Pingers {
    /// The listening address's IP; `None` when bound to all interfaces
    /// (then only loopback may ping).
    own: Option<IpAddr>,
}

impl Pingers {
    /// The rule for a server listening on `bound`.
    pub fn for_listener(bound: SocketAddr) -> Pingers {
        let ip = bound.ip();
        Pingers {
            own: (!ip.is_unspecified()).then_some(ip),
        }
    }

    /// Whether a connection from `peer` may ping.
    pub fn allows(&self, peer: IpAddr) -> bool {
        peer.is_loopback() || Some(peer) == self.own
    }
}

async fn only_from_the_pod(
    State(pingers): State<Pingers>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    if pingers.allows(peer.ip()) {
        return next.run(request).await;
    }
    tracing::warn!(%peer, path = %request.uri().path(), "refused a ping from outside the pod");
    (
        StatusCode::FORBIDDEN,
        "pings are taken only from the pod itself (its loopback or its pod IP)\n",
    )
        .into_response()
}

/// The routes, each handler given the shared [`Sidecar`] as axum state;
/// the ping routes only for [`Pingers`]. Serve it with connect info
/// (`into_make_service_with_connect_info::<SocketAddr>`).
pub fn router(sidecar: Arc<Sidecar>, pingers: Pingers) -> Router {
    let pings = Router::new()
        .route(path::PING, get(ping).post(ping))
        .route(path::PING_START, get(ping_start).post(ping_start))
        .route(path::PING_FAIL, get(ping_fail).post(ping_fail))
        .route_layer(middleware::from_fn_with_state(pingers, only_from_the_pod));
    Router::new()
        .route(path::LIVEZ, get(livez))
        .route(path::READYZ, get(readyz))
        .route(path::APP_HEALTH, get(app))
        .route(path::METRICS, get(metrics))
        .merge(pings)
        .with_state(sidecar)
}

fn answer(ok: bool, text: String) -> Response {
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, text + "\n").into_response()
}

/// The beat loop is ticking: its last tick is at most two intervals old
/// (plus one app-probe timeout, since a beat may wait on that probe).
async fn livez(State(sidecar): State<Arc<Sidecar>>) -> Response {
    let since = sidecar.liveness.since_tick();
    let limit = sidecar.config.interval() * 2 + crate::health::PROBE_TIMEOUT;
    answer(
        since <= limit,
        format!(
            "beat loop last ticked {}ms ago (limit {}s)",
            since.as_millis(),
            limit.as_secs()
        ),
    )
}

/// A beat was delivered within the last two intervals.
async fn readyz(State(sidecar): State<Arc<Sidecar>>) -> Response {
    let limit = sidecar.config.interval() * 2;
    match sidecar.producer.delivery().since_last_delivery() {
        Some(since) if since <= limit => answer(
            true,
            format!("last beat delivered {}ms ago", since.as_millis()),
        ),
        Some(since) => answer(
            false,
            format!(
                "no beat delivered for {}s (limit {}s); undelivered: {}",
                since.as_secs(),
                limit.as_secs(),
                sidecar.producer.delivery().undelivered()
            ),
        ),
        None => answer(false, "no beat delivered yet".into()),
    }
}

/// The application is alive per the configured appHealth mode.
async fn app(State(sidecar): State<Arc<Sidecar>>) -> Response {
    let v = sidecar.app_verdict().await;
    answer(v.healthy(), v.reason)
}

/// Optional ping body: work done since the last ping.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PingBody {
    #[serde(default)]
    messages: u64,
    #[serde(default)]
    bytes: u64,
}

fn record(sidecar: &Sidecar, kind: PingKind, body: &Bytes) -> Response {
    let trimmed = body.trim_ascii();
    // healthchecks.io clients often POST log text; that is still a ping.
    // A JSON object is a count report and must be well-formed.
    let parsed = if !trimmed.starts_with(b"{") {
        Ok(PingBody::default())
    } else {
        serde_json::from_slice::<PingBody>(trimmed)
    };
    match parsed {
        Ok(p) => {
            sidecar.signals.record(kind, p.messages, p.bytes);
            match kind {
                PingKind::Ping => sidecar.metrics.pings.inc(),
                PingKind::Start => sidecar.metrics.ping_starts.inc(),
                PingKind::Fail => sidecar.metrics.ping_failures.inc(),
            };
            (StatusCode::OK, "ok\n").into_response()
        }
        Err(e) => (
            StatusCode::BAD_REQUEST,
            format!(
                "ping body must be empty or JSON {{\"messages\": n, \"bytes\": n}} with non-negative integers: {e}\n"
            ),
        )
            .into_response(),
    }
}

async fn ping(State(sidecar): State<Arc<Sidecar>>, body: Bytes) -> Response {
    record(&sidecar, PingKind::Ping, &body)
}

async fn ping_start(State(sidecar): State<Arc<Sidecar>>, body: Bytes) -> Response {
    record(&sidecar, PingKind::Start, &body)
}

async fn ping_fail(State(sidecar): State<Arc<Sidecar>>, body: Bytes) -> Response {
    record(&sidecar, PingKind::Fail, &body)
}

async fn metrics(State(sidecar): State<Arc<Sidecar>>) -> Response {
    sidecar
        .metrics
        .queue_depth
        .set(i64::from(sidecar.producer.queue_depth()));
    match sidecar.metrics.encode() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_pod_itself_may_ping() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let in_pod = Pingers::for_listener("10.192.0.7:9190".parse().expect("addr"));
        assert!(
            in_pod.allows(ip("10.192.0.7")),
            "a container of the same pod"
        );
        assert!(in_pod.allows(ip("127.0.0.1")));
        assert!(!in_pod.allows(ip("10.192.0.8")), "another pod");
        assert!(!in_pod.allows(ip("10.191.0.1")), "the host");
        let anywhere = Pingers::for_listener("0.0.0.0:9190".parse().expect("addr"));
        assert!(anywhere.allows(ip("::1")));
        assert!(!anywhere.allows(ip("192.168.1.2")));
    }
}
