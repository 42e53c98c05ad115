//! The HTTP server's bounds, from the listener limits every port of the
//! project shares (`heartbeat-listener-limits`): one source holds at most
//! 32 connections and the listener 256, beyond which a source holding
//! fewer (the kubelet's probes) displaces the busiest one's oldest; a
//! request's headers must arrive within 3 s (a slow or idle client is
//! dropped), a handler answers within 10 s, and no connection lives longer
//! than 60 s. So neither idle or slow clients nor other pods holding
//! connections can exhaust the sidecar, push its memory past its limit or
//! keep the kubelet's `/livez` from being answered.

use axum::Router;
use heartbeat_listener_limits::{Limits, Refusal};
use tokio::net::TcpListener;

/// The sidecar's bounds: a port the kubelet probes. The request timeout
/// stays above `/healthz/app`'s own probe of the app (2 s).
pub const LIMITS: Limits = Limits::PROBED;
const _: () = assert!(
    LIMITS.request_timeout.as_secs() > crate::health::PROBE_TIMEOUT.as_secs(),
    "a request timeout below the app probe's would cut /healthz/app short"
);

/// Serves `app` on `listener` within [`LIMITS`] until the task is dropped;
/// each request carries its peer as `ConnectInfo<SocketAddr>`; `refused`
/// is called for each connection closed at accept.
pub async fn serve(listener: TcpListener, app: Router, refused: impl Fn() + Send + 'static) {
    heartbeat_listener_limits::serve(listener, app, LIMITS, move |why: Refusal| {
        tracing::debug!(why = why.as_str(), "refused a connection at accept");
        refused();
    })
    .await;
}
