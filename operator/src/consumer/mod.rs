//! The Kafka side: one consumer task per distinct (broker settings,
//! topic), shared by the monitors that read through it, started when the
//! first attaches and stopped when the last leaves; the tasks on the same
//! broker settings share one librdkafka client ([`connection`]). Each task
//! seeks back by time (or from a checkpoint) when a monitor attaches, so a
//! restart rebuilds state from the topic; it commits no offsets.

mod catch_up;
mod cause;
pub mod checkpoint;
mod connection;
pub mod health;
mod intake;
pub mod settings;
mod task;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use heartbeat_crds::monitor::HeartbeatMonitor;
use jiff::{SignedDuration, Timestamp};
use kube::runtime::reflector::ObjectRef;
use tokio::sync::{Notify, mpsc, watch};

use crate::membership::Table;
use crate::membership::table::MonitorId;
use crate::metrics::Metrics;
pub use health::{BlindKind, Health, catching_up, view_for};
pub use settings::{BrokerAllowlist, ConsumerKey, SettingsError};

/// Wakes the reconciler of a monitor (a member came back to life).
pub type Waker = mpsc::UnboundedSender<ObjectRef<HeartbeatMonitor>>;

/// The masters a monitor's beats must be signed under (each with its pod's
/// key); `None`: signing is off. Set by the reconciler, read by the
/// consumer for every message before it reaches the monitor's table.
pub type SigningKeys = Arc<RwLock<Option<crate::keys::Master>>>;

/// A monitor reading through a consumer.
pub struct Subscriber {
    pub id: MonitorId,
    pub table: Arc<Mutex<Table>>,
    /// The seek this monitor waits for before its beats mean anything.
    pub epoch: u64,
    /// A wake-up is on its way (cleared by the reconciler): one per
    /// reconcile, however many members come back at once.
    pub wake_pending: Arc<AtomicBool>,
    pub signing: SigningKeys,
}

/// What a consumer task shares with the manager.
struct Shared {
    key: ConsumerKey,
    subscribers: RwLock<Vec<Subscriber>>,
    health: watch::Sender<Health>,
    /// Seeks asked for (one per attach) and the longest window asked for
    /// since the last seek (0: none).
    seek_requested: AtomicU64,
    seek_window_secs: AtomicU64,
    /// Caught up at least once: later attachments replay the short window.
    caught_up_once: AtomicBool,
    /// The topic's message.timestamp.type is CreateTime (the producer's
    /// clock), as described; false while unknown.
    create_time: AtomicBool,
    seek: Notify,
    /// The topic's retention.ms as the broker describes it; -1: unknown.
    retention_ms: Arc<AtomicI64>,
    stop: watch::Sender<bool>,
    metrics: Arc<Metrics>,
    waker: Waker,
    group: String,
    client_id: String,
    /// The compacted topic checkpoints go to (`None`: none are kept).
    checkpoint_topic: Option<String>,
    /// What the current replay starts from, for `Ready` while catching up.
    replay: Mutex<String>,
    connections: Arc<connection::Connections>,
}

struct Running {
    shared: Arc<Shared>,
}

/// What [`Consumers::attach`] needs.
pub struct AttachRequest<'a> {
    pub key: &'a ConsumerKey,
    pub id: &'a MonitorId,
    pub table: &'a Arc<Mutex<Table>>,
    pub wake_pending: &'a Arc<AtomicBool>,
    pub signing: &'a SigningKeys,
    /// Seek-back when the consumer starts (history to rebuild).
    pub full: SignedDuration,
    /// Seek-back for a monitor joining a running consumer.
    pub short: SignedDuration,
    pub now: Timestamp,
}

/// Where a monitor is attached and what it waits for.
#[derive(Clone)]
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
    shared: Arc<Shared>,
}

impl Attachment {
    /// The topic's timestamps are the producers' (message.timestamp.type
    /// CreateTime), so the "Broker" clock is theirs.
    pub fn create_time(&self) -> bool {
        self.shared.create_time.load(Ordering::Relaxed)
    }

    /// What the consumer's replay starts from (a checkpoint, or why none).
    pub fn replay(&self) -> String {
        lock(&self.shared.replay).clone()
    }
}

/// Every consumer of this replica.
pub struct Consumers {
    running: Mutex<HashMap<ConsumerKey, Running>>,
    attached: Mutex<HashMap<MonitorId, Attachment>>,
    metrics: Arc<Metrics>,
    waker: Waker,
    group: String,
    client_id: String,
    checkpoint_topic: Option<String>,
    connections: Arc<connection::Connections>,
}

impl Consumers {
    /// No consumers yet; `group` and `client_id` go into each one's config;
    /// checkpoints go to `checkpoint_topic` on each consumer's brokers.
    pub fn new(
        metrics: Arc<Metrics>,
        waker: Waker,
        group: String,
        client_id: String,
        checkpoint_topic: Option<String>,
    ) -> Consumers {
        Consumers {
            running: Mutex::new(HashMap::new()),
            attached: Mutex::new(HashMap::new()),
            metrics,
            waker,
            group,
            client_id,
            checkpoint_topic,
            connections: Arc::default(),
        }
    }

    /// Attaches monitor `id` to the consumer for `key` (starting it if
    /// needed, leaving any other first). A new attachment asks for a seek
    /// back by `full` (the history to rebuild) while the consumer has not
    /// caught up yet, by `short` (what judging needs) once it runs, so a
    /// monitor added later does not make everyone wait for a long replay;
    /// the monitor sees once that seek caught up.
    pub fn attach(&self, a: AttachRequest<'_>) -> Attachment {
        if let Some(existing) = lock(&self.attached).get(a.id)
            && existing.key == *a.key
        {
            return existing.clone();
        }
        self.detach(a.id);
        // Held while subscribing, so a concurrent detach cannot stop the
        // consumer between its lookup and the subscription.
        let mut running = lock(&self.running);
        let shared = running
            .entry(a.key.clone())
            .or_insert_with(|| self.start(a.key))
            .shared
            .clone();
        let window = if shared.caught_up_once.load(Ordering::Relaxed) {
            a.short
        } else {
            a.full
        };
        shared
            .seek_window_secs
            .fetch_max(window.as_secs().max(1) as u64, Ordering::Relaxed);
        // The epoch is taken and the subscriber pushed under the write lock:
        // a consumer that sees the new epoch and then reads its subscribers
        // (to load their checkpoints) finds this one among them.
        let mut subs = match shared.subscribers.write() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        let epoch = shared.seek_requested.fetch_add(1, Ordering::SeqCst) + 1;
        subs.push(Subscriber {
            id: a.id.clone(),
            table: a.table.clone(),
            epoch,
            wake_pending: a.wake_pending.clone(),
            signing: a.signing.clone(),
        });
        drop(subs);
        shared.seek.notify_one();
        drop(running);
        let attachment = Attachment {
            key: a.key.clone(),
            epoch,
            replayed_from: a.now - window,
            health: shared.health.subscribe(),
            retention_ms: shared.retention_ms.clone(),
            shared: shared.clone(),
        };
        lock(&self.attached).insert(a.id.clone(), attachment.clone());
        attachment
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

    fn start(&self, key: &ConsumerKey) -> Running {
        let (health, _) = watch::channel(Health::Starting);
        let (stop, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            key: key.clone(),
            subscribers: RwLock::new(Vec::new()),
            health,
            seek_requested: AtomicU64::new(0),
            seek_window_secs: AtomicU64::new(0),
            caught_up_once: AtomicBool::new(false),
            create_time: AtomicBool::new(false),
            seek: Notify::new(),
            retention_ms: Arc::new(AtomicI64::new(-1)),
            stop,
            metrics: self.metrics.clone(),
            waker: self.waker.clone(),
            group: self.group.clone(),
            client_id: self.client_id.clone(),
            checkpoint_topic: self.checkpoint_topic.clone(),
            replay: Mutex::new(String::new()),
            connections: self.connections.clone(),
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
