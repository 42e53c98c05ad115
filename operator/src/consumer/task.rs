//! One topic's life on its connection's client: find the topic's
//! partitions, take their queues and assign them, seek back by time, read
//! and attribute beats, and check its own health and lag every few
//! seconds. librdkafka reconnects by itself; a session that cannot go on
//! releases its partitions, is reported Blind and starts again after a
//! pause.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use jiff::{SignedDuration, Timestamp};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::catch_up::{CatchUp, Confirmed, Sight};
use super::cause::Causes;
use super::checkpoint::{self, Checkpoint, Unusable};
use super::connection::{self, Connection, PartitionQueue};
use super::intake::{self, RejectLog, TopicCounters};
use super::{BlindKind, Health, Shared, lock};
use crate::metrics::ConsumerLabels;

/// How often health and lag are checked: also how far behind the present
/// the confirmed end of the topic lags, so how late a Stale is declared
/// (the goal is within a second of the deadline). One watermark request
/// per partition each time.
const CHECK_EVERY: Duration = Duration::from_millis(500);
/// Timeout of one metadata, offsets or watermark request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// At most this many messages are attributed at once (one lock of each
/// monitor's table): what librdkafka has already fetched, never waited for.
const BATCH: usize = 1024;

type Blind = (BlindKind, String);

/// Counts a running consumer task for as long as it lives.
struct Counted(Arc<crate::metrics::Metrics>);

impl Counted {
    fn new(m: &Arc<crate::metrics::Metrics>) -> Counted {
        m.tasks.inc();
        Counted(m.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.tasks.dec();
    }
}

/// Runs until the manager stops this consumer.
pub(super) async fn run(shared: Arc<Shared>) {
    let _counted = Counted::new(&shared.metrics);
    let mut stop = shared.stop.subscribe();
    let mut sight = Sight::default();
    // The replay window of the last seek, kept across sessions: a session
    // that failed before catching up (the broker down as a new leader
    // starts) must not leave the next one replaying nothing.
    let mut window_secs = 0;
    let mut pause = Duration::from_secs(1);
    loop {
        if *stop.borrow() {
            break;
        }
        match session(&shared, &mut stop, &mut sight, &mut window_secs).await {
            Ok(()) => break,
            Err((kind, why)) => {
                let why = shared.key.redact(&why);
                tracing::warn!(consumer = %shared.key, ?kind, %why, "cannot read the topic; retrying");
                sight.lose();
                shared.health.send_replace(Health::Blind { kind, why });
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stop.changed() => {}
                }
                pause = (pause * 2).min(Duration::from_secs(10));
            }
        }
    }
    let _ = shared.metrics.consumer_lag.remove(&lag_labels(&shared));
    tracing::info!(consumer = %shared.key, "consumer stopped");
}

/// One session on the connection's client: the topic claimed (a task of
/// the same topic still stopping releases it first), its partitions
/// assigned while it reads and unassigned after, and the connection let
/// go off the runtime.
async fn session(
    shared: &Arc<Shared>,
    stop: &mut tokio::sync::watch::Receiver<bool>,
    sight: &mut Sight,
    window_secs: &mut u64,
) -> Result<(), Blind> {
    let conn = shared
        .connections
        .get(
            &shared.key,
            &shared.group,
            &shared.client_id,
            &shared.metrics,
        )
        .map_err(|e| (BlindKind::BadSettings, e.to_string()))?;
    let claim = tokio::select! {
        c = conn.claim(&shared.key.topic) => c,
        _ = stop.changed() => {
            connection::release(conn);
            return Ok(());
        }
    };
    let mut queues = BTreeMap::new();
    let result = read(shared, &conn, &mut queues, stop, sight, window_secs).await;
    let mut tpl = TopicPartitionList::new();
    for p in queues.keys() {
        let _ = tpl.add_partition(&shared.key.topic, *p);
    }
    if tpl.count() > 0
        && let Err(e) = blocking(&conn, move |c| c.incremental_unassign(&tpl)).await
    {
        tracing::warn!(consumer = %shared.key, error = %shared.key.redact(&e.to_string()), "cannot release the topic's partitions");
    }
    drop(queues);
    drop(claim);
    connection::release(conn);
    result
}

/// Runs a blocking librdkafka call off the runtime, at most
/// [`Connection::blocking`] of the connection's at once.
async fn blocking<T: Send + 'static>(
    conn: &Connection,
    f: impl FnOnce(&StreamConsumer<Causes>) -> Result<T, KafkaError> + Send + 'static,
) -> Result<T, KafkaError> {
    let Ok(_permit) = conn.blocking.acquire().await else {
        return Err(KafkaError::Canceled);
    };
    let c = conn.consumer.clone();
    tokio::task::spawn_blocking(move || f(&c))
        .await
        .unwrap_or_else(|e| {
            Err(KafkaError::Canceled)
                .inspect_err(|_| tracing::error!(error = %e, "blocking Kafka call panicked"))
        })
}

fn classify(topic: &str, e: &KafkaError) -> Blind {
    match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic) => (
            BlindKind::TopicMissing,
            format!("topic {topic} does not exist"),
        ),
        _ => (BlindKind::Broker, e.to_string()),
    }
}

/// [`classify`], with the client's last reported error for a broker that
/// does not answer: a refused password or certificate shows only as a
/// transport failure on the calls that follow.
fn classify_with_cause(c: &Connection, topic: &str, e: &KafkaError) -> Blind {
    let (kind, why) = classify(topic, e);
    match (&kind, c.consumer.context().recent()) {
        (BlindKind::Broker, Some(cause)) => {
            (kind, format!("{why}; the client's last error: {cause}"))
        }
        _ => (kind, why),
    }
}

/// The topic's partitions.
async fn partitions(c: &Connection, topic: &str) -> Result<Vec<i32>, Blind> {
    let t = topic.to_string();
    let md = blocking(c, move |c| c.fetch_metadata(Some(&t), REQUEST_TIMEOUT))
        .await
        .map_err(|e| classify_with_cause(c, topic, &e))?;
    let Some(mt) = md.topics().iter().find(|mt| mt.name() == topic) else {
        return Err((
            BlindKind::TopicMissing,
            format!("topic {topic} does not exist"),
        ));
    };
    if let Some(err) = mt.error() {
        let code = RDKafkaErrorCode::from(err);
        return Err(classify(topic, &KafkaError::MetadataFetch(code)));
    }
    let mut ps: Vec<i32> = mt.partitions().iter().map(|p| p.id()).collect();
    // Sorted: metadata lists them in no fixed order, and a change is news.
    ps.sort_unstable();
    if ps.is_empty() {
        return Err((
            BlindKind::TopicMissing,
            format!("topic {topic} has no partitions"),
        ));
    }
    Ok(ps)
}

/// Learns the topic's retention.ms (for the condition that warns when it
/// is shorter than the seek-back window) and its message.timestamp.type
/// (CreateTime makes the "Broker" clock the producers'). Describing needs
/// its own ACL; without it both stay unknown and nothing is claimed.
async fn describe_retention(shared: &Shared, conn: &Connection) {
    use rdkafka::admin::{AdminOptions, ResourceSpecifier};
    let admin = match conn.admin() {
        Ok(a) => a,
        Err(e) => {
            tracing::debug!(error = %e, "no admin client for the retention check");
            return;
        }
    };
    let opts = AdminOptions::new().request_timeout(Some(REQUEST_TIMEOUT));
    let found = admin
        .describe_configs(&[ResourceSpecifier::Topic(&shared.key.topic)], &opts)
        .await;
    let configs: Vec<_> = found.ok().into_iter().flatten().flatten().collect();
    let value = |name: &str| {
        configs
            .iter()
            .find_map(|r| r.get(name).and_then(|e| e.value.clone()))
    };
    match value("retention.ms").and_then(|v| v.parse::<i64>().ok()) {
        Some(ms) => shared.retention_ms.store(ms, Ordering::Relaxed),
        None => tracing::debug!(consumer = %shared.key, "topic retention unknown"),
    }
    shared.create_time.store(
        value("message.timestamp.type").as_deref() == Some("CreateTime"),
        Ordering::Relaxed,
    );
}

/// Puts every partition at the first offset at or after `target` (or
/// `from` a checkpoint): a partition not read yet has its queue taken off
/// the client and is assigned there, one already read is sought; returns
/// the next offset to read per partition. `queues` holds exactly the
/// partitions assigned, whatever fails on the way (the session unassigns
/// them when it ends).
async fn seek(
    conn: &Connection,
    queues: &mut BTreeMap<i32, PartitionQueue>,
    topic: &str,
    parts: &[i32],
    target: Timestamp,
    from: Option<&HashMap<i32, i64>>,
) -> Result<HashMap<i32, i64>, Blind> {
    // The ends first: a message appended meanwhile is read, not skipped.
    let highs = watermarks(conn, topic, parts).await?;
    let mut tpl = TopicPartitionList::new();
    for p in parts {
        tpl.add_partition_offset(topic, *p, Offset::Offset(target.as_millisecond()))
            .map_err(|e| classify(topic, &e))?;
    }
    let resolved = blocking(conn, move |c| c.offsets_for_times(tpl, REQUEST_TIMEOUT))
        .await
        .map_err(|e| classify(topic, &e))?;
    // Every partition looked up before any is touched: one that could not
    // be would skip its history (and make its members look silent), so the
    // session starts over.
    for e in resolved.elements() {
        e.error().map_err(|err| classify(topic, &err))?;
    }
    let mut assign = TopicPartitionList::new();
    let mut sought = TopicPartitionList::new();
    let mut split = BTreeMap::new();
    let mut next = HashMap::new();
    for e in resolved.elements() {
        // No message at or after the target: start at the end.
        let high = highs.get(&e.partition()).copied().unwrap_or(0);
        let by_time = match e.offset() {
            Offset::Offset(o) if o >= 0 => o,
            _ => high,
        };
        let offset = start_offset(
            from.and_then(|f| f.get(&e.partition()).copied()),
            by_time,
            high,
        );
        let to = if queues.contains_key(&e.partition()) {
            &mut sought
        } else {
            // Split before it is assigned: none of its messages reach the
            // client's main queue.
            let q = conn.split(topic, e.partition()).ok_or_else(|| {
                (
                    BlindKind::Broker,
                    format!("no queue for partition {} of {topic}", e.partition()),
                )
            })?;
            split.insert(e.partition(), q);
            &mut assign
        };
        to.add_partition_offset(topic, e.partition(), Offset::Offset(offset))
            .map_err(|e| classify(topic, &e))?;
        next.insert(e.partition(), offset);
    }
    if assign.count() > 0 {
        conn.consumer
            .incremental_assign(&assign)
            .map_err(|e| classify(topic, &e))?;
        queues.append(&mut split);
    }
    if sought.count() > 0 {
        blocking(conn, move |c| {
            c.seek_partitions(sought, REQUEST_TIMEOUT)?
                .elements()
                .iter()
                .try_for_each(|e| e.error())
        })
        .await
        .map_err(|e| classify(topic, &e))?;
    }
    Ok(next)
}

/// Unassigns whatever of `topic` the client still has assigned (a session
/// that could not release it), so this session's assignment is accepted.
async fn release_leftovers(conn: &Connection, topic: &str) {
    let Ok(assigned) = conn.consumer.assignment() else {
        return;
    };
    let mut tpl = TopicPartitionList::new();
    for e in assigned.elements_for_topic(topic) {
        let _ = tpl.add_partition(topic, e.partition());
    }
    if tpl.count() > 0 {
        tracing::warn!(
            topic,
            partitions = tpl.count(),
            "releasing partitions an earlier session left assigned"
        );
        let _ = blocking(conn, move |c| c.incremental_unassign(&tpl)).await;
    }
}

/// Where a partition's replay starts: a checkpoint's offset, where it is
/// one the partition has (past the end `high`, the topic was made again:
/// by time then), and never before the target time's offset `by_time`: a
/// checkpoint older than the window, or than what retention kept, must not
/// send the seek below the log's start (librdkafka would reset it to the
/// end and skip the history).
fn start_offset(checkpoint: Option<i64>, by_time: i64, high: i64) -> i64 {
    match checkpoint {
        Some(o) if (0..=high).contains(&o) => o.max(by_time),
        _ => by_time,
    }
}

/// The high watermark of each partition.
async fn watermarks(
    c: &Connection,
    topic: &str,
    parts: &[i32],
) -> Result<HashMap<i32, i64>, Blind> {
    let (t, ps) = (topic.to_string(), parts.to_vec());
    blocking(c, move |c| {
        ps.iter()
            .map(|p| {
                c.fetch_watermarks(&t, *p, REQUEST_TIMEOUT)
                    .map(|(_, high)| (*p, high))
            })
            .collect()
    })
    .await
    .map_err(|e| classify(topic, &e))
}

/// How often (in checks) the partition list is read again: partitions
/// added to the topic are assigned from their start.
const PARTITIONS_EVERY: u32 = 30;

async fn read(
    shared: &Arc<Shared>,
    conn: &Connection,
    queues: &mut BTreeMap<i32, PartitionQueue>,
    stop: &mut tokio::sync::watch::Receiver<bool>,
    sight: &mut Sight,
    window_secs: &mut u64,
) -> Result<(), Blind> {
    let c = &conn.consumer;
    let topic = shared.key.topic.clone();
    release_leftovers(conn, &topic).await;
    let mut parts = partitions(conn, &topic).await?;
    describe_retention(shared, conn).await;
    let mut log = RejectLog::default();
    let counters = TopicCounters::new(shared);
    let mut check = tokio::time::interval(CHECK_EVERY);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut checks = 0u32;
    let mut catch_up = CatchUp::new(Instant::now());
    'seek: loop {
        let epoch = shared.seek_requested.load(Ordering::SeqCst);
        // The longest window asked for since the last seek; a new session
        // or a partition change replays what the last seek did.
        *window_secs = match shared.seek_window_secs.swap(0, Ordering::Relaxed) {
            0 => *window_secs,
            w => w,
        };
        let window = SignedDuration::from_secs(i64::try_from(*window_secs).unwrap_or(i64::MAX));
        let mut target = Timestamp::now() - window;
        // Until it first caught up (a new leader, its monitors attaching
        // one after another), each seek starts from the checkpoints if
        // every monitor has one; after that, a monitor added replays the
        // short window by time.
        let restored = if shared.caught_up_once.load(Ordering::Relaxed) {
            None
        } else {
            load_checkpoints(shared, conn, target).await
        };
        let next = seek(
            conn,
            queues,
            &topic,
            &parts,
            target,
            restored.as_ref().map(|r| &r.0),
        )
        .await?;
        catch_up.seek(epoch, next);
        // This topic's partitions, read together.
        let mut stream = futures::stream::select_all(queues.values().map(|q| q.stream()));
        let mut batch = Vec::with_capacity(BATCH);
        if let Some((_, since)) = restored {
            // Sight is continuous from the checkpoints' `since`: what came
            // after them is replayed now.
            target = target.max(since);
        }
        tracing::info!(consumer = %shared.key, %target, epoch, "reading back from the target time");
        loop {
            tokio::select! {
                _ = stop.changed() => {
                    if *stop.borrow() { return Ok(()); }
                }
                _ = shared.seek.notified() => {
                    if *stop.borrow() { return Ok(()); }
                    if shared.seek_requested.load(Ordering::Relaxed) > epoch {
                        continue 'seek;
                    }
                }
                m = stream.next() => match m {
                    Some(Ok(first)) => {
                        // And whatever else is already fetched, up to a batch.
                        batch.push(first);
                        while batch.len() < BATCH {
                            match stream.next().now_or_never() {
                                Some(Some(Ok(msg))) => batch.push(msg),
                                Some(Some(Err(e))) => {
                                    log.error(&shared.key, &e);
                                    break;
                                }
                                _ => break,
                            }
                        }
                        for msg in &batch {
                            catch_up.message(msg.partition(), msg.offset());
                        }
                        intake::batch(shared, &batch, catch_up.caught_up(), &counters, &mut log);
                        batch.clear();
                        if let Some(confirmed) = catch_up.after_messages(sight) {
                            confirm(shared, sight, target, epoch, confirmed);
                        }
                    }
                    // Transport errors come here too; the periodic check
                    // decides whether the topic can still be read.
                    Some(Err(e)) => log.error(&shared.key, &e),
                    // The streams of a live consumer do not end.
                    None => return Err((BlindKind::Broker, "the consumer's stream ended".into())),
                },
                _ = check.tick() => {
                    checks += 1;
                    conn.forget_old_checkpoints();
                    if checks.is_multiple_of(PARTITIONS_EVERY)
                        && let Ok(now_parts) = partitions(conn, &topic).await
                        && now_parts != parts
                    {
                        tracing::info!(consumer = %shared.key, from = parts.len(), to = now_parts.len(), "partitions changed; seeking again");
                        parts = now_parts;
                        continue 'seek;
                    }
                    if let Ok(positions) = c.position() {
                        catch_up.positions(
                            positions
                                .elements_for_topic(&topic)
                                .iter()
                                .filter_map(|e| match e.offset() {
                                    Offset::Offset(o) => Some((e.partition(), o)),
                                    _ => None,
                                }),
                        );
                    }
                    match watermarks(conn, &topic, &parts).await {
                        Err((kind, why)) => {
                            let why = shared.key.redact(&why);
                            if sight.lose() {
                                tracing::warn!(consumer = %shared.key, %why, "lost sight of the topic");
                            }
                            shared.health.send_replace(Health::Blind { kind, why });
                        }
                        Ok(highs) => {
                            shared.metrics.consumer_lag
                                .get_or_create(&lag_labels(shared))
                                .set(catch_up.lag(&highs));
                            if let Some(confirmed) = catch_up.watermarks(highs, Timestamp::now()) {
                                confirm(shared, sight, target, epoch, confirmed);
                            }
                        }
                    }
                    if catch_up.checkpoint_due(sight, Instant::now())
                        && write_checkpoints(shared, &conn.writer, catch_up.next(), epoch)
                    {
                        catch_up.checkpointed(Instant::now());
                    }
                }
            }
        }
    }
}

/// Reports the topic read as `confirmed` by the seek of `epoch`, which
/// replayed from `target`: sight is back if it was lost.
fn confirm(
    shared: &Shared,
    sight: &mut Sight,
    target: Timestamp,
    epoch: u64,
    Confirmed { until, checked }: Confirmed,
) {
    let (since, regained) = sight.confirm(target, checked);
    if regained {
        tracing::info!(consumer = %shared.key, "reading the topic again");
    }
    if !shared.caught_up_once.swap(true, Ordering::Relaxed) {
        // What the first replay started from says nothing about a later
        // monitor's (the short window, by time).
        lock(&shared.replay).clear();
    }
    shared.health.send_replace(Health::Reading {
        since,
        caught_up_epoch: epoch,
        until,
    });
}

fn lag_labels(shared: &Shared) -> ConsumerLabels {
    ConsumerLabels {
        topic: shared.key.topic.clone(),
        bootstrap: shared.key.bootstrap().to_string(),
    }
}

/// Loads the checkpoints of every monitor reading through this consumer
/// and restores their tables; returns where to seek each partition and
/// since when sight is continuous, when every monitor had a usable one
/// (written after `window_start`). Says in `replay` what the replay
/// starts from either way.
async fn load_checkpoints(
    shared: &Arc<Shared>,
    conn: &Connection,
    window_start: Timestamp,
) -> Option<(HashMap<i32, i64>, Timestamp)> {
    // Shown in status while catching up, and logged: why a new leader
    // replays the whole window is worth a line.
    let say = |what: String| {
        tracing::info!(consumer = %shared.key, replay = %what, "replay decided");
        *lock(&shared.replay) = what;
    };
    let Some(cp_topic) = shared.checkpoint_topic.clone() else {
        say("no checkpoints kept (--checkpoint-topic is empty)".into());
        return None;
    };
    let ids: Vec<_> = match shared.subscribers.read() {
        Ok(s) => s.iter().map(|s| s.id.clone()).collect(),
        Err(p) => p.get_ref().iter().map(|s| s.id.clone()).collect(),
    };
    let (key, group, client_id) = (
        shared.key.connection(),
        shared.group.clone(),
        shared.client_id.clone(),
    );
    let loaded = conn
        .checkpoints(move || checkpoint::load(&key, &group, &client_id, &cp_topic))
        .await;
    let found = match loaded {
        Ok(newest) => checkpoint::pick(&newest, &shared.key.topic, &ids),
        Err(why) => {
            let why = shared.key.redact(&why);
            tracing::warn!(consumer = %shared.key, %why, "checkpoints unreadable; replaying the whole window");
            say(format!("no checkpoint ({why}): replaying the whole window"));
            return None;
        }
    };
    if ids.is_empty() {
        say("no monitor attached yet: replaying the whole window".into());
        return None;
    }
    let now = Timestamp::now();
    let subs = match shared.subscribers.read() {
        Ok(s) => s,
        Err(p) => p.into_inner(),
    };
    // None: no checkpoint at all.
    let usable = |s: &super::Subscriber| -> Option<Result<(&Checkpoint, Timestamp), Unusable>> {
        let cp = found.get(&s.id)?;
        let signing = match s.signing.read() {
            Ok(g) => g.is_some(),
            Err(_) => true,
        };
        Some(
            cp.usable(signing, window_start, now)
                .map(|since| (cp, since)),
        )
    };
    let mut without: BTreeMap<&str, usize> = BTreeMap::new();
    for s in subs.iter() {
        match usable(s) {
            Some(Ok(_)) => continue,
            Some(Err(why)) => *without.entry(why.as_str()).or_default() += 1,
            None => *without.entry("without one").or_default() += 1,
        }
    }
    if !without.is_empty() {
        // Counts, not names: this message reaches every monitor on the
        // topic, whichever namespace it is in.
        let n: usize = without.values().sum();
        let why: Vec<String> = without.iter().map(|(w, n)| format!("{n} {w}")).collect();
        say(format!(
            "no usable checkpoint for {n} of {} monitors on the topic ({}): replaying the whole window",
            subs.len(),
            why.join(", "),
        ));
        return None;
    }
    let mut offsets: HashMap<i32, i64> = HashMap::new();
    let mut since: Option<Timestamp> = None;
    let mut oldest = now;
    for s in subs.iter() {
        let Some(Ok((cp, cp_since))) = usable(s) else {
            continue;
        };
        let restored = {
            let mut table = lock(&s.table);
            // Each table trusts sight only from its own checkpoint's since.
            table.sighted_from(cp_since);
            table.restore(&cp.table, now)
        };
        shared.metrics.checkpoints_restored.inc();
        tracing::info!(monitor = %s.id, restored, written_at = %cp.written_at, "restored from checkpoint");
        for (p, o) in &cp.offsets {
            let e = offsets.entry(*p).or_insert(*o);
            *e = (*e).min(*o);
        }
        // The earliest: the consumer's sight is continuous from there.
        since = Some(since.map_or(cp_since, |s| s.min(cp_since)));
        oldest = oldest.min(cp.written_at);
    }
    drop(subs);
    say(format!("from the checkpoint written at {oldest}"));
    Some((offsets, since.unwrap_or(oldest)))
}

/// Writes a checkpoint of every monitor that has caught up with `epoch`:
/// its table as of `next` (nothing is read meanwhile, so the two agree),
/// snapshotted here and written by a task of its own, off the read loop (a
/// dead broker may hold a flush for seconds). The connection's writer is
/// made on first use and dropped on failure, so the next round makes a
/// new one. Returns false when the writer is busy (another round, maybe
/// another topic's, still writes) or no table has taken the topic's sight
/// yet: try again at the next check. A table without sight gets no
/// checkpoint (see [`Checkpoint::new`]); once some are written, the rest
/// wait for the next round.
fn write_checkpoints(
    shared: &Arc<Shared>,
    writer: &Arc<tokio::sync::Mutex<Option<checkpoint::Writer>>>,
    next: &HashMap<i32, i64>,
    epoch: u64,
) -> bool {
    let Some(cp_topic) = shared.checkpoint_topic.clone() else {
        return true;
    };
    let Ok(mut held) = writer.clone().try_lock_owned() else {
        return false;
    };
    let offsets: std::collections::BTreeMap<i32, i64> =
        next.iter().map(|(p, o)| (*p, *o)).collect();
    let mut unsighted = 0;
    let batch: Vec<_> = {
        let subs = match shared.subscribers.read() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        subs.iter()
            .filter(|s| s.epoch <= epoch)
            .filter_map(|s| {
                let table = lock(&s.table).checkpoint();
                let cp = Checkpoint::new(&shared.key.topic, offsets.clone(), table);
                unsighted += usize::from(cp.is_none());
                cp.map(|cp| (s.id.clone(), cp))
            })
            .collect()
    };
    if batch.is_empty() {
        return unsighted == 0;
    }
    if unsighted > 0 {
        tracing::debug!(consumer = %shared.key, unsighted, "tables without sight yet get no checkpoint this round");
    }
    let shared = shared.clone();
    tokio::task::spawn_blocking(move || {
        let done = (|| {
            if held.is_none() {
                *held = Some(checkpoint::Writer::new(
                    &shared.key,
                    &shared.group,
                    &shared.client_id,
                    &cp_topic,
                )?);
            }
            let w = held.as_ref().ok_or("no writer")?;
            for (id, cp) in &batch {
                w.write(id, cp)?;
            }
            w.flush()?;
            Ok::<_, String>(batch.len())
        })();
        match done {
            Ok(n) => {
                shared.metrics.checkpoints_written.inc_by(n as u64);
            }
            Err(why) => {
                *held = None;
                let why = shared.key.redact(&why);
                tracing::warn!(consumer = %shared.key, %why, "cannot write checkpoints");
            }
        }
    });
    true
}

#[cfg(test)]
mod tests {
    use super::start_offset;

    /// Rule: a replay starts at the checkpoint's offset when it lies
    /// between the target time's offset and the end, else by time.
    #[test]
    fn a_replay_starts_at_the_checkpoint_but_never_before_the_window_or_past_the_end() {
        assert_eq!(start_offset(Some(700), 100, 1000), 700);
        // Older than the window (or than retention): by time.
        assert_eq!(start_offset(Some(50), 100, 1000), 100);
        // Past the end: the topic was made again.
        assert_eq!(start_offset(Some(5000), 100, 1000), 100);
        assert_eq!(start_offset(Some(-1), 100, 1000), 100);
        assert_eq!(start_offset(None, 100, 1000), 100);
        assert_eq!(start_offset(Some(1000), 100, 1000), 1000);
    }
}
