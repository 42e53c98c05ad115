//! The caches the parts of the operator share: one reflector of the
//! HeartbeatMonitors this operator handles (`--monitor-selector`), which
//! the webhook decides from and the leader's controller is triggered by,
//! so a replica lists and watches them once. Secrets are never cached
//! (each part reads the ones it needs by name); pods are the controller's
//! own, watched only while it leads.

use std::sync::Arc;

use futures::{Stream, StreamExt};
use heartbeat_crds::monitor::HeartbeatMonitor;
use kube::api::Api;
use kube::runtime::reflector::{self, Store, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::broadcast::{self, error::RecvError};

use crate::args::CacheArgs;
use crate::synced::Synced;

/// Changes kept for a subscriber that falls behind; beyond them it is
/// handed the whole cache again (the reflector never waits for it, so a
/// slow controller cannot stall the webhook's cache).
const CHANGES_KEPT: usize = 1024;

/// The shared caches; cheap to clone.
#[derive(Clone)]
pub struct Caches {
    /// Every HeartbeatMonitor this operator handles.
    pub monitors: Store<HeartbeatMonitor>,
    /// Whether `monitors` is filled: wait on this, never on the store
    /// itself (see [`Synced`]).
    pub synced: Synced,
    /// Each monitor as it is listed or changes (not deletions, as a
    /// Controller's own watch would trigger).
    changed: broadcast::Sender<Arc<HeartbeatMonitor>>,
}

impl Caches {
    /// Starts watching; the stores fill in the background.
    pub fn start(client: kube::Client, args: &CacheArgs) -> Caches {
        let monitors = watcher(Api::<HeartbeatMonitor>::all(client), args.monitor_watch());
        Caches::from_events(monitors, CHANGES_KEPT)
    }

    /// Caches fed by `events` (a watch, or a test's).
    fn from_events<S>(events: S, kept: usize) -> Caches
    where
        S: Stream<Item = watcher::Result<watcher::Event<HeartbeatMonitor>>> + Send + 'static,
    {
        let (monitors, writer) = reflector::store();
        let (changed, _) = broadcast::channel(kept);
        let tell = changed.clone();
        let applied = reflector(writer, events)
            .default_backoff()
            .applied_objects();
        tokio::spawn(applied.for_each(move |r| {
            match r {
                // No subscriber (no controller running) is nothing to tell.
                Ok(m) => drop(tell.send(Arc::new(m))),
                Err(e) => tracing::warn!(error = %e, "HeartbeatMonitor watch"),
            }
            futures::future::ready(())
        }));
        let synced = Synced::of(monitors.clone());
        Caches {
            monitors,
            synced,
            changed,
        }
    }

    /// What triggers a controller started now: every monitor in the cache
    /// (once it is synced), then each change from here on. A subscriber
    /// that fell behind gets the whole cache again rather than miss one.
    pub fn monitor_changes(&self) -> impl Stream<Item = Arc<HeartbeatMonitor>> + Send + 'static {
        // Subscribed before the cache is read: nothing falls in between.
        let changes = Changes {
            rx: self.changed.subscribe(),
            store: self.monitors.clone(),
            synced: self.synced.clone(),
            pending: Vec::new(),
            replay: true,
        };
        futures::stream::unfold(changes, |mut c| async move {
            let next = c.next().await?;
            Some((next, c))
        })
    }
}

/// A subscriber's position.
struct Changes {
    rx: broadcast::Receiver<Arc<HeartbeatMonitor>>,
    store: Store<HeartbeatMonitor>,
    synced: Synced,
    /// Monitors of a replay not yet handed out.
    pending: Vec<Arc<HeartbeatMonitor>>,
    /// The whole cache is to be handed out (at the start, or after lagging).
    replay: bool,
}

impl Changes {
    async fn next(&mut self) -> Option<Arc<HeartbeatMonitor>> {
        loop {
            if let Some(m) = self.pending.pop() {
                return Some(m);
            }
            if self.replay {
                if !self.synced.wait().await {
                    return None;
                }
                self.pending = self.store.state();
                self.replay = false;
                continue;
            }
            match self.rx.recv().await {
                Ok(m) => return Some(m),
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(
                        missed,
                        "the controller fell behind the monitor cache; replaying it"
                    );
                    self.replay = true;
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use heartbeat_crds::monitor::HeartbeatMonitorSpec;
    use kube::runtime::watcher::Event;
    use tokio::sync::mpsc;

    use super::*;

    fn monitor(name: &str) -> HeartbeatMonitor {
        let spec: HeartbeatMonitorSpec = serde_json::from_value(serde_json::json!({
            "topic": "heartbeats",
            "intervalSeconds": 10,
            "brokerSecretRef": {"name": "kafka"},
            "selector": {"matchLabels": {"app": name}},
        }))
        .expect("spec");
        let mut m = HeartbeatMonitor::new(name, spec);
        m.metadata.namespace = Some("ns".into());
        m
    }

    /// Caches fed by hand, and the sender that feeds them.
    fn fed(kept: usize) -> (Caches, mpsc::UnboundedSender<Event<HeartbeatMonitor>>) {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let events = futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).map(Ok);
        (Caches::from_events(events, kept), tx)
    }

    fn list(tx: &mpsc::UnboundedSender<Event<HeartbeatMonitor>>, names: &[&str]) {
        tx.send(Event::Init).expect("send");
        for n in names {
            tx.send(Event::InitApply(monitor(n))).expect("send");
        }
        tx.send(Event::InitDone).expect("send");
    }

    async fn take<S: Stream<Item = Arc<HeartbeatMonitor>> + Unpin>(
        s: &mut S,
        n: usize,
    ) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        for _ in 0..n {
            let m = tokio::time::timeout(Duration::from_secs(5), s.next())
                .await
                .expect("a monitor in time")
                .expect("the stream goes on");
            names.insert(m.metadata.name.clone().unwrap_or_default());
        }
        names
    }

    fn names(n: &[&str]) -> BTreeSet<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    /// Rule: a controller started after the monitors were listed (a new
    /// leader) is triggered for every one of them, then for each change.
    #[tokio::test]
    async fn a_late_controller_is_triggered_for_every_cached_monitor_then_changes() {
        let (caches, tx) = fed(16);
        list(&tx, &["a", "b"]);
        assert!(caches.synced.wait().await, "filled");
        let mut changes = Box::pin(caches.monitor_changes());
        assert_eq!(take(&mut changes, 2).await, names(&["a", "b"]));
        tx.send(Event::Apply(monitor("c"))).expect("send");
        assert_eq!(take(&mut changes, 1).await, names(&["c"]));
        // The webhook reads the same cache.
        assert_eq!(caches.monitors.state().len(), 3);
    }

    /// Rule: a controller that fell behind the cache's changes is handed the
    /// whole cache again instead of missing a monitor.
    #[tokio::test]
    async fn a_controller_that_fell_behind_gets_the_whole_cache_again() {
        let (caches, tx) = fed(2);
        list(&tx, &["z"]);
        assert!(caches.synced.wait().await, "filled");
        let mut changes = Box::pin(caches.monitor_changes());
        assert_eq!(take(&mut changes, 1).await, names(&["z"]));
        let all = ["a", "b", "c", "d", "e"];
        for n in all {
            tx.send(Event::Apply(monitor(n))).expect("send");
        }
        // Until the cache holds them all (the subscriber reads nothing meanwhile).
        while caches.monitors.state().len() < all.len() + 1 {
            tokio::task::yield_now().await;
        }
        // Only the last two changes are kept: the replay brings the rest.
        let seen = take(&mut changes, all.len() + 1).await;
        assert_eq!(seen, names(&["a", "b", "c", "d", "e", "z"]));
    }
}
