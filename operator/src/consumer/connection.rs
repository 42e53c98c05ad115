//! One librdkafka client per distinct broker connection (a Secret's
//! settings, whatever the topic), shared by every topic read through it,
//! so threads and memory grow with brokers, not with topics. Each topic's
//! task takes its partitions' queues off the client and assigns, seeks and
//! releases only those, so topics are read and judged independently.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::StreamConsumer;
use rdkafka::consumer::stream_consumer::StreamPartitionQueue;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use tokio::sync::{OwnedMutexGuard, watch};

use super::cause::Causes;
use super::checkpoint;
use super::{ConsumerKey, lock};
use crate::metrics::Metrics;

/// One partition's messages, taken off the shared client.
pub(super) type PartitionQueue = StreamPartitionQueue<Causes>;

/// A shared client and what goes with it.
pub(super) struct Connection {
    pub consumer: Arc<StreamConsumer<Causes>>,
    /// The checkpoints of every topic on this connection go through one
    /// producer, made when the first is due.
    pub writer: Arc<tokio::sync::Mutex<Option<checkpoint::Writer>>>,
    /// The checkpoint topic as last read: a new leader's topics (and each
    /// monitor attaching before its topic caught up) share one read.
    checkpoints: tokio::sync::Mutex<Option<(Instant, Loaded)>>,
    /// Blocking librdkafka calls of this connection's topics in flight at
    /// most: a dead broker (each call waiting out its timeout) holds this
    /// many of the runtime's bounded blocking threads, not all of them.
    pub blocking: tokio::sync::Semaphore,
    /// For describing topics, made on first use (one per connection, not
    /// one per topic: each client is threads and buffers).
    admin: Mutex<Option<Arc<AdminClient<DefaultClientContext>>>>,
    config: ClientConfig,
    /// One task per topic at a time: a task stopping releases its
    /// partitions before the next one for the topic assigns them.
    topics: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    stop: watch::Sender<bool>,
    metrics: Arc<Metrics>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.metrics.consumers.dec();
    }
}

impl Connection {
    /// Waits until no other task reads `topic` through this client.
    pub async fn claim(&self, topic: &str) -> OwnedMutexGuard<()> {
        let slot = lock(&self.topics)
            .entry(topic.to_string())
            .or_default()
            .clone();
        slot.lock_owned().await
    }

    /// Takes `partition` of `topic` off the client's main queue: done
    /// before it is assigned, so none of its messages go there.
    pub fn split(&self, topic: &str, partition: i32) -> Option<PartitionQueue> {
        self.consumer.split_partition_queue(topic, partition)
    }
}

/// How long one read of the checkpoint topic serves the topics asking: a
/// new leader's monitors attach within seconds of each other.
const CHECKPOINTS_REUSED: Duration = Duration::from_secs(60);
/// How long a failed read stands for the topics asking: each would wait
/// out the same failure in turn (they read one at a time).
const CHECKPOINT_FAILURE_REUSED: Duration = Duration::from_secs(15);
/// See [`Connection::blocking`].
const BLOCKING_PER_CONNECTION: usize = 4;

/// A read of the checkpoint topic, or why it failed.
type Loaded = Result<Arc<checkpoint::Newest>, String>;

impl Connection {
    /// The checkpoint topic's newest records, read by `load` (off the
    /// runtime) unless a read of the last [`CHECKPOINTS_REUSED`] serves;
    /// topics asking meanwhile wait for the same read.
    pub async fn checkpoints(
        &self,
        load: impl FnOnce() -> Result<checkpoint::Newest, String> + Send + 'static,
    ) -> Loaded {
        let mut held = self.checkpoints.lock().await;
        if let Some((at, loaded)) = held.as_ref() {
            let reused = match loaded {
                Ok(_) => CHECKPOINTS_REUSED,
                Err(_) => CHECKPOINT_FAILURE_REUSED,
            };
            if at.elapsed() < reused {
                return loaded.clone();
            }
        }
        let loaded = match tokio::task::spawn_blocking(load).await {
            Ok(r) => r.map(Arc::new),
            Err(e) => Err(e.to_string()),
        };
        *held = Some((Instant::now(), loaded.clone()));
        loaded
    }

    /// The connection's admin client, made when first asked for.
    pub fn admin(&self) -> Result<Arc<AdminClient<DefaultClientContext>>, KafkaError> {
        let mut admin = lock(&self.admin);
        if let Some(a) = admin.as_ref() {
            return Ok(a.clone());
        }
        let a: Arc<AdminClient<DefaultClientContext>> = Arc::new(self.config.create()?);
        *admin = Some(a.clone());
        Ok(a)
    }

    /// Lets go of a read no longer reused (its memory).
    pub fn forget_old_checkpoints(&self) {
        if let Ok(mut held) = self.checkpoints.try_lock()
            && held
                .as_ref()
                .is_some_and(|(at, _)| at.elapsed() >= CHECKPOINTS_REUSED)
        {
            *held = None;
        }
    }
}

/// The clients of this replica, by connection.
#[derive(Default)]
pub(super) struct Connections {
    open: Mutex<HashMap<ConsumerKey, Weak<Connection>>>,
}

impl Connections {
    /// The client for `key`'s connection, made when none is open.
    pub fn get(
        &self,
        key: &ConsumerKey,
        group: &str,
        client_id: &str,
        metrics: &Arc<Metrics>,
    ) -> Result<Arc<Connection>, KafkaError> {
        let ck = key.connection();
        let mut open = lock(&self.open);
        if let Some(c) = open.get(&ck).and_then(Weak::upgrade) {
            return Ok(c);
        }
        let config = ck.client_config(group, client_id);
        let consumer: StreamConsumer<Causes> =
            config.create_with_context(Causes::new(ck.clone()))?;
        let consumer = Arc::new(consumer);
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(serve_events(consumer.clone(), stopped, ck.clone()));
        metrics.consumers.inc();
        tracing::info!(brokers = %ck.bootstrap(), "opened a Kafka client");
        let c = Arc::new(Connection {
            consumer,
            writer: Arc::default(),
            checkpoints: tokio::sync::Mutex::default(),
            blocking: tokio::sync::Semaphore::new(BLOCKING_PER_CONNECTION),
            admin: Mutex::default(),
            config,
            topics: Mutex::default(),
            stop,
            metrics: metrics.clone(),
        });
        open.retain(|_, w| w.strong_count() > 0);
        open.insert(ck, Arc::downgrade(&c));
        Ok(c)
    }
}

/// Lets go of a connection off the runtime: the last holder closes the
/// client, which may wait on a dead broker.
pub(super) fn release(c: Arc<Connection>) {
    tokio::task::spawn_blocking(move || drop(c));
}

/// Serves the client's main queue (librdkafka delivers its events and
/// errors there) until the connection is dropped. Every partition read is
/// split off first, so a message here is a bug, counted in the log.
async fn serve_events(
    consumer: Arc<StreamConsumer<Causes>>,
    mut stop: watch::Receiver<bool>,
    key: ConsumerKey,
) {
    let mut errors = 0u64;
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            m = consumer.recv() => match m {
                Ok(m) => tracing::error!(
                    brokers = %key.bootstrap(),
                    partition = m.partition(),
                    offset = m.offset(),
                    "a message reached the client's main queue; dropped"
                ),
                // Transport errors: librdkafka retries by itself, and each
                // topic's periodic check reports a topic it cannot read.
                Err(e) => {
                    errors += 1;
                    if errors.is_power_of_two() {
                        tracing::warn!(brokers = %key.bootstrap(), errors, error = %key.redact(&e.to_string()), "Kafka client error");
                    }
                }
            },
        }
    }
    tokio::task::spawn_blocking(move || drop(consumer));
}
