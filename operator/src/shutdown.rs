//! How a running replica stops, in order: on SIGTERM or SIGINT (or when a
//! server fails) it leaves the Service's endpoints first, then finishes the
//! requests in flight (one cut off would admit a pod without its sidecar),
//! then stops the controller writing, then hands the Lease over rather
//! than let it expire.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::leader::Election;
use crate::webhook::listener::Running;
use crate::{Error, Result};

/// The parts of a running replica, stopped together.
pub struct Parts {
    /// `/readyz`'s flag.
    pub ready: Arc<AtomicBool>,
    /// The admin server (ends only if it fails).
    pub admin: JoinHandle<Result<()>>,
    pub webhook: Running,
    pub keys: Running,
    /// The controller, and what tells it to stop.
    pub controller: (JoinHandle<()>, watch::Sender<bool>),
    pub election: Election,
}

impl Parts {
    /// Runs until SIGTERM or SIGINT, then stops every part in order; a
    /// server that fails ends it at once with its error.
    pub async fn until_stopped(mut self) -> Result<()> {
        let mut term = signal(SignalKind::terminate()).map_err(Error::Signal)?;
        let ended = |r: Result<Result<()>, tokio::task::JoinError>| {
            r.unwrap_or_else(|e| Err(Error::Task(e.to_string())))
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
            r = &mut self.webhook.task => return ended(r),
            r = &mut self.keys.task => return ended(r),
            r = &mut self.admin => return ended(r),
        }
        tracing::info!("stopping: not ready, draining requests");
        self.ready.store(false, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(2)).await;
        tokio::join!(self.webhook.drain(), self.keys.drain());
        // Stop writing first, then hand the Lease over.
        let (controller, stop) = self.controller;
        let _ = stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), controller).await;
        self.election.resign().await;
        Ok(())
    }
}
