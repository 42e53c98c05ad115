//! The webhook's HTTPS listener and its bounds: connections capped per
//! source and overall (a lighter source displacing the busiest when
//! full, so pods holding connections to the webhook cannot lock the API
//! server out), the TLS handshake and a request's headers bounded in
//! time, idle connections closed, and a request answered or dropped a
//! little after the API server has given up on it (`timeoutSeconds`).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::Router;
use axum_server::Server;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use heartbeat_listener_limits::{Caps, LimitedAcceptor, Refusal, TlsLimits};
use tokio::task::JoinHandle;

use crate::{Error, Result};

/// How much longer than the API server's `timeoutSeconds` a request may
/// take before it is dropped: by then the API server has admitted the pod
/// unchanged (`failurePolicy: Ignore`) and stopped listening.
pub const AFTER_API_SERVER: Duration = Duration::from_secs(2);

/// The request timeout for the API server's `timeoutSeconds` (1..=30).
pub fn request_timeout(api_server_timeout_seconds: i32) -> Duration {
    Duration::from_secs(u64::from(
        api_server_timeout_seconds.clamp(1, 30).unsigned_abs(),
    )) + AFTER_API_SERVER
}

/// The bounds. The API server is one source whose calls may come over
/// many HTTP/1 connections (or one HTTP/2), so its share is larger than a
/// probed port's; idle connections outlive the API server's own idle
/// timeout (90 s) so it, not the webhook, closes them.
pub const LIMITS: TlsLimits = TlsLimits {
    caps: Caps {
        per_source: 64,
        total: 256,
    },
    handshake_timeout: Duration::from_secs(5),
    header_timeout: Duration::from_secs(5),
    idle_timeout: Duration::from_secs(120),
};

fn refused(peer: IpAddr, why: Refusal) {
    tracing::debug!(%peer, why = why.as_str(), "webhook refused a connection at accept");
}

/// The webhook's server on `addr` with `tls`, within [`LIMITS`].
pub fn bind(
    addr: SocketAddr,
    tls: RustlsConfig,
) -> Server<SocketAddr, RustlsAcceptor<LimitedAcceptor>> {
    heartbeat_listener_limits::tls::limit(axum_server::bind_rustls(addr, tls), LIMITS, refused)
}

/// `app` with every request bounded by [`request_timeout`].
pub fn bounded(app: Router, api_server_timeout_seconds: i32) -> Router {
    heartbeat_listener_limits::timeout::bounded(app, request_timeout(api_server_timeout_seconds))
}

/// An HTTPS server on its own task (the webhook's, the pod keys'), and
/// the handle that drains it.
pub struct Running {
    /// Ends only if the server fails.
    pub task: JoinHandle<Result<()>>,
    handle: axum_server::Handle<SocketAddr>,
}

impl Running {
    /// Serves `app` (already bounded in time) on `addr` with `tls`, within
    /// [`LIMITS`]; `what` names it in errors.
    pub fn start(what: &'static str, addr: SocketAddr, tls: RustlsConfig, app: Router) -> Running {
        let handle = axum_server::Handle::new();
        let server = bind(addr, tls)
            .handle(handle.clone())
            .serve(app.into_make_service());
        let task = tokio::spawn(async move {
            server
                .await
                .map_err(|source| Error::Serve { what, addr, source })
        });
        Running { task, handle }
    }

    /// Stops accepting, lets the requests in flight finish (up to 5 s)
    /// and waits (up to 6 s) until no connection is left.
    pub async fn drain(&self) {
        self.handle.graceful_shutdown(Some(Duration::from_secs(5)));
        let _ = tokio::time::timeout(Duration::from_secs(6), async {
            while self.handle.connection_count() > 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rule: the webhook never drops a request the API server still waits
    /// for: the request timeout is above every allowed `timeoutSeconds`.
    #[test]
    fn requests_outlive_the_api_servers_timeout() {
        for secs in 1..=30 {
            assert!(request_timeout(secs) > Duration::from_secs(secs as u64));
        }
        assert_eq!(request_timeout(5), Duration::from_secs(7));
    }
}
