//! The HTTP server's bounds: at most `max_connections` at once (beyond it a
//! connection is closed at accept), a request's headers must arrive within
//! `header_timeout` (a slow or idle client is dropped), and no connection
//! lives longer than `max_lifetime`. So idle or slow clients can neither
//! exhaust the sidecar nor push its memory past its limit, and the
//! kubelet's `/livez` keeps being answered.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// The bounds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub max_lifetime: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // Probes, the app's pings and a scrape need a handful.
            max_connections: 128,
            header_timeout: Duration::from_secs(3),
            max_lifetime: Duration::from_secs(60),
        }
    }
}

/// Serves `app` on `listener` within `limits` until the task is dropped;
/// each request carries its peer as `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    refused: impl Fn() + Send + 'static,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors, say: wait instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            refused();
            drop(stream);
            continue;
        };
        let service =
            TowerToHyperService::new(app.clone().layer(axum::Extension(ConnectInfo(peer))));
        tokio::spawn(async move {
            let _permit = permit;
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(limits.max_lifetime, connection).await;
        });
    }
}
