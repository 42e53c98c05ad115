//! The sidecar's HTTP port: liveness of the sidecar and of the app, progress
//! pings from the app, and Prometheus metrics.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State as Extract;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use crate::signals::PingKind;
use crate::state::State;

type Shared = Arc<State>;

pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/healthz/app", get(app))
        .route("/ping", get(ping).post(ping))
        .route("/ping/start", get(ping_start).post(ping_start))
        .route("/ping/fail", get(ping_fail).post(ping_fail))
        .route("/metrics", get(metrics))
        .with_state(state)
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
async fn livez(Extract(s): Extract<Shared>) -> Response {
    let since = s.since_tick();
    let limit = s.config.interval() * 2 + crate::health::PROBE_TIMEOUT;
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
async fn readyz(Extract(s): Extract<Shared>) -> Response {
    let limit = s.config.interval() * 2;
    match s.producer.delivery().since_last_delivery() {
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
                s.producer.delivery().undelivered()
            ),
        ),
        None => answer(false, "no beat delivered yet".into()),
    }
}

/// The application is alive per the configured appHealth mode.
async fn app(Extract(s): Extract<Shared>) -> Response {
    let v = s.app_verdict().await;
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

fn record(s: &State, kind: PingKind, body: &Bytes) -> Response {
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
            s.signals.record(kind, p.messages, p.bytes);
            match kind {
                PingKind::Ping => s.metrics.pings.inc(),
                PingKind::Start => s.metrics.ping_starts.inc(),
                PingKind::Fail => s.metrics.ping_failures.inc(),
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

async fn ping(Extract(s): Extract<Shared>, body: Bytes) -> Response {
    record(&s, PingKind::Ping, &body)
}

async fn ping_start(Extract(s): Extract<Shared>, body: Bytes) -> Response {
    record(&s, PingKind::Start, &body)
}

async fn ping_fail(Extract(s): Extract<Shared>, body: Bytes) -> Response {
    record(&s, PingKind::Fail, &body)
}

async fn metrics(Extract(s): Extract<Shared>) -> Response {
    s.metrics
        .queue_depth
        .set(i64::from(s.producer.queue_depth()));
    match s.metrics.encode() {
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
