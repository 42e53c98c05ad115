//! The plain-HTTP admin port: `/livez` (the process serves), `/readyz` (the
//! webhook has its certificate and its caches are synced) and `/metrics`,
//! within the listener limits of a port the kubelet probes (connections
//! capped per source and overall, header and request timeouts), so that
//! no client can starve the kubelet's probes and get the operator
//! restarted.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use heartbeat_listener_limits::{Limits, Refusal};

use crate::metrics::Metrics;
use crate::{Error, Result};

/// What the admin endpoints report on.
#[derive(Clone)]
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    /// Set once the webhook can answer correctly.
    pub ready: Arc<AtomicBool>,
}

impl Default for AdminState {
    /// Fresh metrics, not ready.
    fn default() -> AdminState {
        AdminState {
            metrics: Arc::new(Metrics::new()),
            ready: Arc::new(AtomicBool::new(false)),
        }
    }
}

async fn readyz(State(s): State<AdminState>) -> (StatusCode, &'static str) {
    if s.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: certificate or caches not loaded\n",
        )
    }
}

async fn metrics(State(s): State<AdminState>) -> ([(&'static str, &'static str); 1], String) {
    (
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.render(),
    )
}

/// Serves the admin endpoints on `addr` until the process ends.
pub async fn serve(addr: SocketAddr, state: AdminState) -> Result<()> {
    let app = Router::new()
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state);
    let err = |source| Error::Serve {
        what: "admin",
        addr,
        source,
    };
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(err)?;
    heartbeat_listener_limits::serve(listener, app, Limits::PROBED, |why: Refusal| {
        tracing::debug!(
            why = why.as_str(),
            "admin port refused a connection at accept"
        );
    })
    .await;
    Ok(())
}
