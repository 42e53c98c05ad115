//! A listener's [`Table`] in use: [`Connections`] admits a peer and hands
//! back a [`Slot`] that releases itself when dropped; [`Held`] wraps the
//! connection's stream so that it fails (and the server closes it) when
//! the slot is evicted for a lighter source, or when nothing has arrived
//! on it for the idle bound.

use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};

use crate::table::{Caps, Refusal, Table};

/// The connections of one listener, shared by its accept loop and the
/// connections' tasks.
#[derive(Debug, Clone)]
pub struct Connections {
    table: Arc<Mutex<Table<oneshot::Sender<()>>>>,
}

impl Connections {
    /// An empty listener bounded by `caps`.
    pub fn new(caps: Caps) -> Connections {
        Connections {
            table: Arc::new(Mutex::new(Table::new(caps))),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table<oneshot::Sender<()>>> {
        // The table is consistent after every call: a panic elsewhere
        // while holding the lock leaves nothing half-done.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot for a connection from `peer`, evicting the busiest source's
    /// oldest connection if the table says so; or why not.
    pub fn try_acquire(&self, peer: IpAddr) -> Result<Slot, Refusal> {
        let (evict, evicted) = oneshot::channel();
        let admitted = self.table().admit(peer, evict)?;
        if let Some(victim) = admitted.evicted {
            // Its connection may have just ended: nothing to close then.
            let _ = victim.send(());
        }
        Ok(Slot {
            connections: self.clone(),
            peer,
            id: admitted.id,
            evicted: Some(evicted),
        })
    }

    /// How many connections are held (tests, metrics).
    pub fn held(&self) -> usize {
        self.table().held()
    }
}

/// One admitted connection; dropping it hands the place back.
#[derive(Debug)]
pub struct Slot {
    connections: Connections,
    peer: IpAddr,
    id: u64,
    evicted: Option<oneshot::Receiver<()>>,
}

impl Slot {
    /// `stream`, bound to this slot: it fails once the slot is evicted, or
    /// after `idle` without a byte read (`None`: never).
    pub fn hold<S>(mut self, stream: S, idle: Option<Duration>) -> Held<S> {
        let evicted = self.evicted.take();
        Held {
            inner: stream,
            evicted,
            was_evicted: false,
            idle: idle.map(|d| (d, Box::pin(tokio::time::sleep(d)))),
            _slot: self,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.connections.table().release(self.peer, self.id);
    }
}

/// A stream that holds a [`Slot`]: see [`Slot::hold`].
#[derive(Debug)]
pub struct Held<S> {
    inner: S,
    /// Fires when the slot is evicted; `None` once it has fired or its
    /// sender is gone.
    evicted: Option<oneshot::Receiver<()>>,
    was_evicted: bool,
    idle: Option<(Duration, Pin<Box<Sleep>>)>,
    _slot: Slot,
}

fn evicted_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "evicted: a source holding fewer connections needed the place",
    )
}

impl<S> Held<S> {
    /// Whether the slot has been evicted (registers the waker if not).
    fn poll_evicted(&mut self, cx: &mut Context<'_>) -> bool {
        if let Some(rx) = self.evicted.as_mut()
            && let Poll::Ready(r) = Pin::new(rx).poll(cx)
        {
            // A receiver is never polled again once it has answered.
            self.evicted = None;
            self.was_evicted = r.is_ok();
        }
        self.was_evicted
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Held<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.poll_evicted(cx) {
            return Poll::Ready(Err(evicted_error()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if let Some((bound, sleep)) = this.idle.as_mut()
                    && buf.filled().len() > before
                {
                    sleep.as_mut().reset(Instant::now() + *bound);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let idle_out = this
                    .idle
                    .as_mut()
                    .is_some_and(|(_, sleep)| sleep.as_mut().poll(cx).is_ready());
                if idle_out {
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "idle: nothing arrived in time",
                    )))
                } else {
                    Poll::Pending
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Held<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.poll_evicted(cx) {
            return Poll::Ready(Err(evicted_error()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    /// Rule: an evicted connection is closed: its stream fails at once
    /// (with the client silent), and its place is the newcomer's.
    #[tokio::test]
    async fn an_evicted_connection_fails_and_its_place_is_taken() {
        let connections = Connections::new(Caps {
            per_source: 2,
            total: 2,
        });
        let (ours, _client) = tokio::io::duplex(64);
        let mut oldest = connections
            .try_acquire(ip(1))
            .expect("admitted")
            .hold(ours, None);
        let (ours, _client2) = tokio::io::duplex(64);
        let _second = connections
            .try_acquire(ip(1))
            .expect("admitted")
            .hold(ours, None);
        let _probe = connections.try_acquire(ip(2)).expect("evicts");
        let read = tokio::time::timeout(Duration::from_secs(5), oldest.read(&mut [0u8; 8]))
            .await
            .expect("the evicted stream answered");
        let err = read.expect_err("evicted");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
        assert_eq!(connections.held(), 2);
        drop(oldest);
        assert_eq!(
            connections.held(),
            2,
            "an evicted slot is not released twice"
        );
    }

    /// Rule: a slot is handed back when its connection ends.
    #[tokio::test]
    async fn a_dropped_connection_hands_its_place_back() {
        let connections = Connections::new(Caps {
            per_source: 1,
            total: 4,
        });
        let slot = connections.try_acquire(ip(1)).expect("admitted");
        assert_eq!(
            connections.try_acquire(ip(1)).err(),
            Some(Refusal::SourceFull)
        );
        drop(slot);
        assert!(connections.try_acquire(ip(1)).is_ok());
    }

    /// Rule: a connection on which nothing arrives for the idle bound fails;
    /// one that keeps sending does not.
    #[tokio::test]
    async fn an_idle_connection_fails_after_the_idle_bound() {
        use tokio::io::AsyncWriteExt;
        let connections = Connections::new(Caps {
            per_source: 2,
            total: 2,
        });
        let (ours, mut client) = tokio::io::duplex(64);
        let mut held = connections
            .try_acquire(ip(1))
            .expect("admitted")
            .hold(ours, Some(Duration::from_millis(300)));
        let mut buf = [0u8; 8];
        for _ in 0..4 {
            client.write_all(b"x").await.expect("write");
            let n = held.read(&mut buf).await.expect("a byte, before the bound");
            assert_eq!(n, 1);
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        let started = std::time::Instant::now();
        let err = tokio::time::timeout(Duration::from_secs(5), held.read(&mut buf))
            .await
            .expect("the idle stream answered")
            .expect_err("idle");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
