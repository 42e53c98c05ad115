//! A plain HTTP/1 server within [`Limits`]: connections capped per source
//! and overall ([`crate::table`]), a request's headers must arrive within
//! `header_timeout` (an idle or slow client is dropped), a handler must
//! answer within `request_timeout`, and no connection lives longer than
//! `max_lifetime`. The sidecar's port and the operator's admin port.

use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use crate::held::Connections;
use crate::table::{Caps, Refusal};
use crate::timeout;

/// The bounds of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub caps: Caps,
    pub header_timeout: Duration,
    pub request_timeout: Duration,
    pub max_lifetime: Duration,
}

impl Limits {
    /// A port the kubelet probes: probes, pings and a scrape need a
    /// handful of connections; one source holds at most 32 and the total
    /// of 256 is reached only by 8 busy sources, beyond which a lighter
    /// source (the kubelet's, one connection at a time) displaces the
    /// busiest. 256 idle connections stay well inside a 32Mi container.
    pub const PROBED: Limits = Limits {
        caps: Caps {
            per_source: 32,
            total: 256,
        },
        header_timeout: Duration::from_secs(3),
        request_timeout: Duration::from_secs(10),
        max_lifetime: Duration::from_secs(60),
    };
}

/// Serves `app` on `listener` within `limits` until the task is dropped;
/// each request carries its peer as `ConnectInfo<SocketAddr>`. `refused`
/// is told of every connection closed at accept.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    refused: impl Fn(Refusal) + Send + 'static,
) {
    let connections = Connections::new(limits.caps);
    let app = timeout::bounded(app, limits.request_timeout);
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
        let slot = match connections.try_acquire(peer.ip()) {
            Ok(slot) => slot,
            Err(why) => {
                refused(why);
                drop(stream);
                continue;
            }
        };
        let service =
            TowerToHyperService::new(app.clone().layer(axum::Extension(ConnectInfo(peer))));
        tokio::spawn(async move {
            // The header timeout already closes idle connections.
            let stream = slot.hold(stream, None);
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(limits.max_lifetime, connection).await;
        });
    }
}
