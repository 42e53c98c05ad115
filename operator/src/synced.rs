//! Waiting for a reflector's store to be filled, from any number of tasks.
//!
//! kube-runtime's `Store::wait_until_ready` keeps one waker: of several
//! tasks waiting at once, only the one that polled last is woken when the
//! store fills, and the others wait forever. (The operator's readiness
//! never came when its controller started waiting on the shared monitor
//! cache first.) So exactly one task waits on the store and tells the rest
//! through a watch channel.

use std::fmt::Debug;
use std::hash::Hash;

use kube::runtime::reflector::{Lookup, Store};
use tokio::sync::watch;

/// Whether a store has been filled; cheap to clone, any number may wait.
#[derive(Clone, Debug)]
pub struct Synced(watch::Receiver<bool>);

impl Synced {
    /// Starts the one task that waits on `store` (needs a Tokio runtime).
    pub fn of<K>(store: Store<K>) -> Synced
    where
        K: Lookup + Clone + Send + Sync + 'static,
        K::DynamicType: Eq + Hash + Clone + Send + Sync,
    {
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            if store.wait_until_ready().await.is_ok() {
                let _ = tx.send(true);
            }
        });
        Synced(rx)
    }

    /// Returns once the store is filled: true, or false if it never will be
    /// (its writer was dropped).
    pub async fn wait(&self) -> bool {
        let mut rx = self.0.clone();
        rx.wait_for(|filled| *filled).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::runtime::reflector::store;
    use kube::runtime::watcher::Event;

    use super::*;

    /// Rule: every task waiting when the store fills is released, however
    /// many there are.
    #[tokio::test]
    async fn every_waiter_is_released_when_the_store_fills() {
        let (reader, mut writer) = store::<ConfigMap>();
        let synced = Synced::of(reader);
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let s = synced.clone();
                tokio::spawn(async move { s.wait().await })
            })
            .collect();
        // Every waiter is parked before the store fills.
        tokio::time::sleep(Duration::from_millis(50)).await;
        writer.apply_watcher_event(&Event::Init);
        writer.apply_watcher_event(&Event::InitDone);
        for w in waiters {
            let released = tokio::time::timeout(Duration::from_secs(5), w).await;
            assert!(
                matches!(released, Ok(Ok(true))),
                "a waiter was not released: {released:?}"
            );
        }
    }

    /// Rule: a store whose writer is gone never fills, and says so.
    #[tokio::test]
    async fn a_store_that_never_fills_answers_false() {
        let (reader, writer) = store::<ConfigMap>();
        let synced = Synced::of(reader);
        drop(writer);
        let answer = tokio::time::timeout(Duration::from_secs(5), synced.wait()).await;
        assert_eq!(answer.ok(), Some(false));
    }
}
