//! The Kafka side: one consumer per distinct (broker settings, topic),
//! shared by the monitors that read through it, started when the first
//! attaches and stopped when the last leaves. Each consumer seeks back by
//! time when a monitor attaches, so a restart rebuilds state from the
//! topic; it commits no offsets.

pub mod health;
pub mod settings;
mod task;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use heartbeat_crds::monitor::HeartbeatMonitor;
use jiff::{SignedDuration, Timestamp};
use kube::runtime::reflector::ObjectRef;
use tokio::sync::{Notify, mpsc, watch};

use crate::membership::Table;
use crate::membership::table::MonitorId;
use crate::metrics::Metrics;
pub use health::{BlindKind, Health, view_for};
pub use settings::{ConsumerKey, SettingsError};

/// Wakes the reconciler of a monitor (a member came back to life).
pub type Waker = mpsc::UnboundedSender<ObjectRef<HeartbeatMonitor>>;

/// A monitor reading through a consumer.
pub struct Subscriber {
    pub id: MonitorId,
    pub table: Arc<Mutex<Table>>,
}

/// What a consumer task shares with the manager.
struct Shared {
    key: ConsumerKey,
    subscribers: RwLock<Vec<Subscriber>>,
    health: watch::Sender<Health>,
    /// Seeks asked for (one per attach) and the window to seek back.
    seek_requested: AtomicU64,
    seek_window_secs: AtomicU64,
    seek: Notify,
    /// The topic's retention.ms as the broker describes it; -1: unknown.
    retention_ms: Arc<AtomicI64>,
    stop: watch::Sender<bool>,
    metrics: Arc<Metrics>,
    waker: Waker,
    group: String,
    client_id: String,
}

struct Running {
    shared: Arc<Shared>,
}

/// Where a monitor is attached and what it waits for.
#[derive(Debug, Clone)]
pub struct Attachment {
    pub key: ConsumerKey,
    /// The seek this monitor's view waits for.
    pub epoch: u64,
    /// From when that seek replays the topic.
    pub replayed_from: Timestamp,
    pub health: watch::Receiver<Health>,
    /// The topic's retention.ms; -1 while unknown (not described yet, or
    /// the operator may not describe it).
    pub retention_ms: Arc<AtomicI64>,
}

/// Every consumer of this replica.
pub struct Consumers {
    running: Mutex<HashMap<ConsumerKey, Running>>,
    attached: Mutex<HashMap<MonitorId, Attachment>>,
    metrics: Arc<Metrics>,
    waker: Waker,
    group: String,
    client_id: String,
}

impl Consumers {
    /// No consumers yet; `group` and `client_id` go into each one's config.
    pub fn new(metrics: Arc<Metrics>, waker: Waker, group: String, client_id: String) -> Consumers {
        Consumers {
            running: Mutex::new(HashMap::new()),
            attached: Mutex::new(HashMap::new()),
            metrics,
            waker,
            group,
            client_id,
        }
    }

    /// Attaches monitor `id` to the consumer for `key` (starting it if
    /// needed, leaving any other first). A new attachment asks for a seek
    /// back by `window`, and the monitor sees once that seek caught up.
    pub fn attach(
        &self,
        key: &ConsumerKey,
        id: &MonitorId,
        table: &Arc<Mutex<Table>>,
        window: SignedDuration,
        now: Timestamp,
    ) -> Attachment {
        if let Some(a) = lock(&self.attached).get(id)
            && a.key == *key
        {
            return a.clone();
        }
        self.detach(id);
        let mut running = lock(&self.running);
        let shared = running
            .entry(key.clone())
            .or_insert_with(|| self.start(key))
            .shared
            .clone();
        drop(running);
        if let Ok(mut subs) = shared.subscribers.write() {
            subs.push(Subscriber {
                id: id.clone(),
                table: table.clone(),
            });
        }
        shared
            .seek_window_secs
            .fetch_max(window.as_secs().max(0) as u64, Ordering::Relaxed);
        let epoch = shared.seek_requested.fetch_add(1, Ordering::Relaxed) + 1;
        shared.seek.notify_one();
        let a = Attachment {
            key: key.clone(),
            epoch,
            replayed_from: now - window,
            health: shared.health.subscribe(),
            retention_ms: shared.retention_ms.clone(),
        };
        lock(&self.attached).insert(id.clone(), a.clone());
        a
    }

    /// Detaches monitor `id`; a consumer left without monitors stops.
    pub fn detach(&self, id: &MonitorId) {
        let Some(a) = lock(&self.attached).remove(id) else {
            return;
        };
        let mut running = lock(&self.running);
        let empty = match running.get(&a.key) {
            Some(r) => match r.shared.subscribers.write() {
                Ok(mut subs) => {
                    subs.retain(|s| s.id != *id);
                    subs.is_empty()
                }
                Err(_) => true,
            },
            None => false,
        };
        if empty && let Some(r) = running.remove(&a.key) {
            tracing::info!(consumer = %a.key, "last monitor left; stopping the consumer");
            let _ = r.shared.stop.send(true);
            r.shared.seek.notify_one();
        }
    }

    /// Stops every consumer (leadership lost, or shutting down).
    pub fn stop_all(&self) {
        let ids: Vec<MonitorId> = lock(&self.attached).keys().cloned().collect();
        for id in ids {
            self.detach(&id);
        }
    }

    /// Monitors attached now.
    pub fn attached(&self) -> Vec<MonitorId> {
        lock(&self.attached).keys().cloned().collect()
    }

    fn start(&self, key: &ConsumerKey) -> Running {
        let (health, _) = watch::channel(Health::Starting);
        let (stop, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            key: key.clone(),
            subscribers: RwLock::new(Vec::new()),
            health,
            seek_requested: AtomicU64::new(0),
            seek_window_secs: AtomicU64::new(0),
            seek: Notify::new(),
            retention_ms: Arc::new(AtomicI64::new(-1)),
            stop,
            metrics: self.metrics.clone(),
            waker: self.waker.clone(),
            group: self.group.clone(),
            client_id: self.client_id.clone(),
        });
        tracing::info!(consumer = %key, "starting a consumer");
        tokio::spawn(task::run(shared.clone()));
        Running { shared }
    }
}

/// Locks a mutex, recovering from a poisoned one (a panicked holder left
/// plain data behind; the tables stay usable).
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
