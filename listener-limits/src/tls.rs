//! The same caps for an `axum_server` listener (the operator's TLS
//! webhook): an inner acceptor, run before the TLS handshake, that admits
//! the peer into the listener's [`Connections`] or drops the connection.

use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum_server::accept::Accept;
use tokio::net::TcpStream;

use crate::held::{Connections, Held};
use crate::table::{Caps, Refusal};

/// Admits connections within the caps; see [`crate::table`].
#[derive(Clone)]
pub struct LimitedAcceptor {
    connections: Connections,
    idle: Option<Duration>,
    refused: Arc<dyn Fn(IpAddr, Refusal) + Send + Sync>,
}

impl LimitedAcceptor {
    /// Connections within `caps`, each closed after `idle` without a byte
    /// from the client; `refused` is told of each one turned away.
    pub fn new(
        caps: Caps,
        idle: Option<Duration>,
        refused: impl Fn(IpAddr, Refusal) + Send + Sync + 'static,
    ) -> LimitedAcceptor {
        LimitedAcceptor {
            connections: Connections::new(caps),
            idle,
            refused: Arc::new(refused),
        }
    }

    /// How many connections are held.
    pub fn held(&self) -> usize {
        self.connections.held()
    }
}

impl<S> Accept<TcpStream, S> for LimitedAcceptor {
    type Stream = Held<TcpStream>;
    type Service = S;
    type Future = std::future::Ready<io::Result<(Held<TcpStream>, S)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let admitted = stream.peer_addr().and_then(|peer| {
            self.connections.try_acquire(peer.ip()).map_err(|why| {
                (self.refused)(peer.ip(), why);
                io::Error::new(io::ErrorKind::ConnectionRefused, why.as_str())
            })
        });
        std::future::ready(admitted.map(|slot| (slot.hold(stream, self.idle), service)))
    }
}

/// The bounds of a TLS listener served by `axum_server`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsLimits {
    pub caps: Caps,
    /// The TLS handshake must be done within it.
    pub handshake_timeout: Duration,
    /// An HTTP/1 request's headers must arrive within it.
    pub header_timeout: Duration,
    /// A connection on which no byte arrives for this long is closed
    /// (an HTTP/2 connection, or one that never sends its first request).
    pub idle_timeout: Duration,
}

/// `server` (from `axum_server::bind_rustls`) within `limits`: the caps
/// are checked before the handshake, which must finish in time; idle
/// connections and slow headers are dropped. `refused` is told of each
/// connection turned away. The request timeout is the router's:
/// [`crate::timeout::bounded`].
pub fn limit<A: axum_server::Address>(
    server: axum_server::Server<A, axum_server::tls_rustls::RustlsAcceptor>,
    limits: TlsLimits,
    refused: impl Fn(IpAddr, Refusal) + Send + Sync + 'static,
) -> axum_server::Server<A, axum_server::tls_rustls::RustlsAcceptor<LimitedAcceptor>> {
    let acceptor = LimitedAcceptor::new(limits.caps, Some(limits.idle_timeout), refused);
    let mut server = server.map(|tls| {
        tls.handshake_timeout(limits.handshake_timeout)
            .acceptor(acceptor)
    });
    server
        .http_builder()
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    server
}
