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
