//! Checkpoints on Kafka (issue 20): a compacted topic beside the monitored
//! ones, one record per monitor (key `namespace/name`) holding its member
//! table and the offsets that table covers. A new leader loads them and
//! replays only from those offsets, so its time to a correct status does
//! not grow with the history kept. Blocking librdkafka calls: run these
//! off the runtime.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use super::ConsumerKey;
use crate::membership::table::{MonitorId, TableRecord};

/// The format's version; a record of another is not loaded.
const VERSION: u32 = 1;
/// Largest checkpoint written or read (a record on the topic is input).
pub const MAX_BYTES: usize = 16 * 1024 * 1024;
/// Most bytes of newest records a load keeps (every monitor's, those of
/// monitors long gone included): past it, the replay goes without.
const MAX_LOADED_BYTES: usize = 256 * 1024 * 1024;
/// How long loading may take before the replay goes without checkpoints.
const LOAD_TIMEOUT: Duration = Duration::from_secs(10);

/// One monitor's checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub version: u32,
    /// The monitored topic the offsets are of.
    pub topic: String,
    pub written_at: Timestamp,
    /// Per partition, the next offset the table has not seen.
    pub offsets: BTreeMap<i32, i64>,
    pub table: TableRecord,
}

impl Checkpoint {
    /// A checkpoint of `table`, unless the table has not seen the topic
    /// yet: the consumer catches up before the monitor's next reconcile
    /// hands its table that sight, and a checkpoint written in between
    /// could never be started from ([`Unusable::NoSight`]), yet would
    /// replace a usable one as its key's newest record.
    pub fn new(topic: &str, offsets: BTreeMap<i32, i64>, table: TableRecord) -> Option<Checkpoint> {
        table.sighted_since?;
        Some(Checkpoint {
            version: VERSION,
            topic: topic.to_string(),
            written_at: Timestamp::now(),
            offsets,
            table,
        })
    }

    /// Since when the checkpointed table saw the topic, if a new leader
    /// may start from it: written within the window (after `window_start`)
    /// and not in the future, with that `since` no later than it was
    /// written, and for a monitor without signing (a checkpoint is not
    /// signed, so a signing monitor trusts only what its pods' keys
    /// signed on the topic).
    pub fn usable(
        &self,
        signing: bool,
        window_start: Timestamp,
        now: Timestamp,
    ) -> Result<Timestamp, Unusable> {
        let since = self.table.sighted_since.ok_or(Unusable::NoSight)?;
        if signing {
            Err(Unusable::Signing)
        } else if self.written_at > now {
            Err(Unusable::FromTheFuture)
        } else if self.written_at < window_start {
            Err(Unusable::BeforeTheWindow)
        } else if since > self.written_at {
            Err(Unusable::SightAfterWriting)
        } else {
            Ok(since)
        }
    }
}

/// Why a new leader cannot start from a monitor's checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Unusable {
    /// The table had never seen the topic when it was written.
    NoSight,
    /// The monitor signs its beats; a checkpoint is not signed.
    Signing,
    /// Written after now (a clock stepped back).
    FromTheFuture,
    /// Written before the window a new leader replays.
    BeforeTheWindow,
    /// It says it saw the topic from after it was written.
    SightAfterWriting,
}

impl Unusable {
    pub fn as_str(self) -> &'static str {
        match self {
            Unusable::NoSight => "written before the topic was seen",
            Unusable::Signing => "of a signing monitor",
            Unusable::FromTheFuture => "from the future",
            Unusable::BeforeTheWindow => "older than the window",
            Unusable::SightAfterWriting => "seeing from after it was written",
        }
    }
}

/// The record key of a monitor's checkpoint.
pub fn record_key(id: &MonitorId) -> String {
    format!("{}/{}", id.namespace, id.name)
}

/// The newest record of every monitor on the checkpoint topic, as read:
/// bytes, by record key. Loaded once per connection and shared by its
/// topics, each of which parses only its own monitors' ([`pick`]).
pub type Newest = HashMap<String, Vec<u8>>;

/// Reads the checkpoint `topic` to its end and keeps the newest record of
/// each key (a tombstone removes it; one over [`MAX_BYTES`] is skipped). A
/// missing checkpoint topic is no checkpoint; any other failure is
/// returned (the caller replays as without).
pub fn load(
    key: &ConsumerKey,
    group: &str,
    client_id: &str,
    topic: &str,
) -> Result<Newest, String> {
    // Fetches as large as a checkpoint may be.
    let consumer: BaseConsumer = key
        .client_config(group, client_id)
        .set("max.partition.fetch.bytes", MAX_BYTES.to_string())
        .set("fetch.max.bytes", MAX_BYTES.to_string())
        .set("receive.message.max.bytes", (MAX_BYTES + 512).to_string())
        .create()
        .map_err(|e| format!("cannot make a client: {e}"))?;
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .map_err(|e| format!("cannot read metadata of {topic}: {e}"))?;
    let Some(mt) = md.topics().iter().find(|t| t.name() == topic) else {
        return Ok(Newest::new());
    };
    if let Some(err) = mt.error() {
        let code = RDKafkaErrorCode::from(err);
        return match code {
            RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic => {
                Ok(Newest::new())
            }
            other => Err(format!("cannot read {topic}: {other}")),
        };
    }
    let mut ends = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in mt.partitions() {
        let (low, high) = consumer
            .fetch_watermarks(topic, p.id(), Duration::from_secs(5))
            .map_err(|e| format!("cannot read the ends of {topic}: {e}"))?;
        if high > low {
            ends.insert(p.id(), high);
            tpl.add_partition_offset(topic, p.id(), Offset::Offset(low))
                .map_err(|e| e.to_string())?;
        }
    }
    consumer.assign(&tpl).map_err(|e| e.to_string())?;
    let mut newest = Newest::new();
    // Bytes held in `newest`.
    let mut kept = 0usize;
    let deadline = Instant::now() + LOAD_TIMEOUT;
    while !ends.is_empty() {
        if Instant::now() > deadline {
            return Err(format!("reading {topic} took over {LOAD_TIMEOUT:?}"));
        }
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m.map_err(|e| format!("cannot read {topic}: {e}"))?;
        if ends
            .get(&m.partition())
            .is_some_and(|end| m.offset() + 1 >= *end)
        {
            ends.remove(&m.partition());
        }
        let Some(k) = m.key().and_then(|k| std::str::from_utf8(k).ok()) else {
            continue;
        };
        // Compaction keeps the newest per key; until it runs, later wins.
        keep_newest(&mut newest, &mut kept, k, m.payload(), MAX_LOADED_BYTES)
            .map_err(|held| format!("{topic} holds over {held} bytes of newest records"))?;
    }
    Ok(newest)
}

/// Records `payload` as the newest of `key` (a tombstone removes it; one
/// over [`MAX_BYTES`] is skipped), `kept` counting the bytes held; the
/// bound `max` is returned as the error when they would pass it.
fn keep_newest(
    newest: &mut Newest,
    kept: &mut usize,
    key: &str,
    payload: Option<&[u8]>,
    max: usize,
) -> Result<(), usize> {
    let old = newest.get(key).map_or(0, Vec::len);
    match payload {
        None => {
            newest.remove(key);
            *kept = kept.saturating_sub(old);
        }
        Some(v) if v.len() <= MAX_BYTES => {
            let held = kept.saturating_sub(old).saturating_add(v.len());
            if held > max {
                return Err(max);
            }
            newest.insert(key.to_string(), v.to_vec());
            *kept = held;
        }
        Some(_) => {}
    }
    Ok(())
}

/// The checkpoints of `wanted` for the monitored `of_topic` among the
/// loaded records: only those are parsed, and one of another format
/// version or topic is none.
pub fn pick(
    newest: &Newest,
    of_topic: &str,
    wanted: &[MonitorId],
) -> HashMap<MonitorId, Checkpoint> {
    wanted
        .iter()
        .filter_map(|id| {
            let bytes = newest.get(&record_key(id))?;
            let cp = serde_json::from_slice::<Checkpoint>(bytes).ok()?;
            (cp.version == VERSION && cp.topic == of_topic).then(|| (id.clone(), cp))
        })
        .collect()
}

/// Counts deliveries the broker refused (a flush succeeds either way).
#[derive(Default)]
pub struct Deliveries {
    failed: AtomicU64,
    last_error: std::sync::Mutex<Option<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut last) = self.last_error.lock() {
                *last = Some(e.to_string());
            }
        }
    }
}

/// Writes checkpoints; made when the first one is due.
pub struct Writer {
    /// Taken on drop, to be closed off the runtime.
    producer: Option<BaseProducer<Deliveries>>,
    topic: String,
}

impl Drop for Writer {
    fn drop(&mut self) {
        // librdkafka's close may wait on the broker: never on the runtime.
        if let Some(p) = self.producer.take()
            && tokio::runtime::Handle::try_current().is_ok()
        {
            tokio::task::spawn_blocking(move || drop(p));
        }
    }
}

impl Writer {
    /// A producer with the consumer's settings, and the checkpoint topic
    /// made (compacted) when it is missing.
    pub fn new(
        key: &ConsumerKey,
        group: &str,
        client_id: &str,
        topic: &str,
    ) -> Result<Writer, String> {
        let mut cfg = key.client_config(group, client_id);
        // What a consumer config carries that a producer refuses or ignores.
        for k in [
            "group.id",
            "enable.auto.commit",
            "enable.auto.offset.store",
            "enable.partition.eof",
            "auto.offset.reset",
            "fetch.max.bytes",
            "max.partition.fetch.bytes",
            "queued.max.messages.kbytes",
            "fetch.queue.backoff.ms",
        ] {
            cfg.remove(k);
        }
        let producer: BaseProducer<Deliveries> = cfg
            .clone()
            .set("compression.type", "lz4")
            .set("message.max.bytes", MAX_BYTES.to_string())
            .create_with_context(Deliveries::default())
            .map_err(|e| format!("cannot make a producer: {e}"))?;
        // Made only when missing: a topic provisioned beforehand needs no
        // Create right.
        let md = producer
            .client()
            .fetch_metadata(Some(topic), Duration::from_secs(5))
            .map_err(|e| format!("cannot read metadata of {topic}: {e}"))?;
        let exists = md
            .topics()
            .iter()
            .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty());
        if !exists {
            let admin: AdminClient<DefaultClientContext> = cfg
                .create()
                .map_err(|e| format!("cannot make an admin client: {e}"))?;
            // Compacted within minutes, not when a 1 GiB segment fills:
            // a new leader reads the whole topic, so what it reads stays
            // about one record per monitor.
            let new = NewTopic::new(topic, 1, TopicReplication::Fixed(-1))
                .set("cleanup.policy", "compact")
                .set("max.message.bytes", "16777216")
                .set("segment.ms", "60000")
                .set("segment.bytes", "67108864")
                .set("min.cleanable.dirty.ratio", "0.1");
            let made = futures::executor::block_on(admin.create_topics(
                [&new],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(5))),
            ))
            .map_err(|e| format!("cannot make {topic}: {e}"))?;
            for r in made {
                if let Err((_, code)) = r
                    && code != RDKafkaErrorCode::TopicAlreadyExists
                {
                    return Err(format!("cannot make {topic}: {code}"));
                }
            }
        }
        Ok(Writer {
            producer: Some(producer),
            topic: topic.to_string(),
        })
    }

    fn producer(&self) -> Result<&BaseProducer<Deliveries>, String> {
        self.producer
            .as_ref()
            .ok_or_else(|| "writer closed".to_string())
    }

    /// Queues `cp` for `id`; delivery is confirmed by [`Writer::flush`].
    pub fn write(&self, id: &MonitorId, cp: &Checkpoint) -> Result<usize, String> {
        let value = serde_json::to_vec(cp).map_err(|e| e.to_string())?;
        if value.len() > MAX_BYTES {
            return Err(format!(
                "checkpoint of {id} is {} bytes, over {MAX_BYTES}",
                value.len()
            ));
        }
        let key = record_key(id);
        self.producer()?
            .send(BaseRecord::to(&self.topic).key(&key).payload(&value))
            .map_err(|(e, _)| format!("cannot queue the checkpoint of {id}: {e}"))?;
        Ok(value.len())
    }

    /// Waits for what was queued; an error when any of it was refused.
    pub fn flush(&self) -> Result<(), String> {
        let p = self.producer()?;
        let before = p.context().failed.load(Ordering::Relaxed);
        p.flush(Duration::from_secs(10))
            .map_err(|e| format!("checkpoints not delivered: {e}"))?;
        let failed = p.context().failed.load(Ordering::Relaxed) - before;
        if failed > 0 {
            let why = p
                .context()
                .last_error
                .lock()
                .ok()
                .and_then(|l| l.clone())
                .unwrap_or_default();
            return Err(format!("{failed} checkpoints refused: {why}"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).expect("valid")
    }

    fn cp(written_at: i64, since: Option<i64>) -> Checkpoint {
        Checkpoint {
            version: VERSION,
            topic: "hb".into(),
            written_at: t(written_at),
            offsets: BTreeMap::new(),
            table: TableRecord {
                sighted_since: since.map(t),
                members: Vec::new(),
            },
        }
    }

    /// Rule: no checkpoint is made of a table that has not seen the topic
    /// (it would hide a usable one and could not be started from).
    #[test]
    fn a_table_that_has_not_seen_the_topic_gets_no_checkpoint() {
        // Written now: a since and a window from long before.
        let epoch = Timestamp::UNIX_EPOCH;
        let record = |sighted_since| TableRecord {
            sighted_since,
            members: Vec::new(),
        };
        assert!(Checkpoint::new("beats", BTreeMap::new(), record(None)).is_none());
        let made = Checkpoint::new("beats", BTreeMap::new(), record(Some(epoch))).expect("sighted");
        assert_eq!(made.usable(false, epoch, Timestamp::now()), Ok(epoch));
    }

    /// Rule: a new leader starts only from a checkpoint written within the
    /// window and not in the future, that says since when it saw the
    /// topic (no later than it was written), and never for a monitor with
    /// signing on.
    #[test]
    fn only_a_checkpoint_within_the_window_from_the_past_with_its_since_is_used() {
        let (window_start, now) = (t(0), t(100));
        assert_eq!(cp(50, Some(10)).usable(false, window_start, now), Ok(t(10)));
        for (cp, signing, why) in [
            (cp(50, Some(10)), true, Unusable::Signing),
            (cp(150, Some(10)), false, Unusable::FromTheFuture),
            (cp(-5, Some(-10)), false, Unusable::BeforeTheWindow),
            (cp(50, None), false, Unusable::NoSight),
            (cp(50, Some(60)), false, Unusable::SightAfterWriting),
        ] {
            assert_eq!(cp.usable(signing, window_start, now), Err(why), "{why:?}");
        }
    }

    /// Rule: of the records loaded, a topic takes only its own monitors'
    /// checkpoints, of this format and of its topic; garbage is none.
    #[test]
    fn a_topic_picks_only_its_monitors_checkpoints_of_its_topic_and_format() {
        let id = |name: &str| MonitorId {
            namespace: "ns".into(),
            name: name.into(),
        };
        let bytes = |cp: &Checkpoint| serde_json::to_vec(cp).expect("json");
        let mine = cp(50, Some(10));
        let mut other_topic = cp(50, Some(10));
        other_topic.topic = "elsewhere".into();
        let mut other_version = cp(50, Some(10));
        other_version.version = VERSION + 1;
        let newest: Newest = [
            (record_key(&id("a")), bytes(&mine)),
            (record_key(&id("b")), bytes(&other_topic)),
            (record_key(&id("c")), bytes(&other_version)),
            (record_key(&id("d")), b"{not json".to_vec()),
            (record_key(&id("e")), bytes(&mine)),
        ]
        .into();
        let wanted = [id("a"), id("b"), id("c"), id("d"), id("z")];
        let picked = pick(&newest, "hb", &wanted);
        assert_eq!(picked.len(), 1, "{picked:?}");
        assert_eq!(picked.get(&id("a")), Some(&mine));
    }

    /// Rule: a load keeps the newest record of each key, a tombstone
    /// removes it, and the bytes held stay within the bound (a replaced
    /// record's bytes are given back): past it, the load fails.
    #[test]
    fn a_load_keeps_the_newest_record_of_each_key_within_its_bound() {
        let (mut newest, mut kept) = (Newest::new(), 0);
        let mut keep = |k: &str, v: Option<&[u8]>| keep_newest(&mut newest, &mut kept, k, v, 10);
        assert_eq!(keep("a", Some(b"1234")), Ok(()));
        assert_eq!(keep("a", Some(b"123456")), Ok(()), "replaced, not added");
        assert_eq!(keep("b", Some(b"1234")), Ok(()));
        assert_eq!(keep("c", Some(b"1")), Err(10), "11 bytes held");
        assert_eq!(keep("b", None), Ok(()));
        assert_eq!(
            keep("c", Some(b"1234")),
            Ok(()),
            "the tombstone gave 4 back"
        );
        assert_eq!(kept, 10);
        assert_eq!(newest.get("a").map(Vec::as_slice), Some(&b"123456"[..]));
        assert!(!newest.contains_key("b"));
    }
}
