//! Producing the beats: every member once per interval, spread evenly over
//! it, through one producer whose delivery reports record each beat's
//! broker time. Beats are rendered by the contract type, `crds::Beat`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use heartbeat_crds::Beat;
use jiff::Timestamp;
use rdkafka::client::ClientContext;
use rdkafka::message::{DeliveryResult, Message, Timestamp as KafkaTimestamp};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, error::KafkaError, types::RDKafkaErrorCode};

use crate::plan::{Plan, Timing};

/// What the delivery reports said.
pub struct Deliveries {
    /// Broker time (ms) of every delivered beat, per monitor.
    pub beats: Vec<Vec<i64>>,
    /// Broker time of each member's newest delivered beat.
    pub last: Vec<i64>,
    pub delivered: u64,
    pub failed: u64,
    /// Deliveries stamped with the broker's LogAppendTime (all, when the topics are right).
    pub log_append: u64,
}

impl Deliveries {
    pub fn new(plan: &Plan) -> Deliveries {
        Deliveries {
            beats: vec![Vec::new(); plan.monitors.len()],
            last: vec![0; plan.members.len()],
            delivered: 0,
            failed: 0,
            log_append: 0,
        }
    }
}

pub struct Reports(pub Arc<Mutex<Deliveries>>);

impl ClientContext for Reports {}

impl ProducerContext for Reports {
    type DeliveryOpaque = Box<(usize, usize)>;

    fn delivery(&self, result: &DeliveryResult<'_>, who: Self::DeliveryOpaque) {
        let (member, monitor) = *who;
        let Ok(mut d) = self.0.lock() else { return };
        match result {
            Ok(msg) => {
                let ms = match msg.timestamp() {
                    KafkaTimestamp::LogAppendTime(ms) => {
                        d.log_append += 1;
                        ms
                    }
                    KafkaTimestamp::CreateTime(ms) => ms,
                    KafkaTimestamp::NotAvailable => Timestamp::now().as_millisecond(),
                };
                d.delivered += 1;
                d.beats[monitor].push(ms);
                d.last[member] = d.last[member].max(ms);
            }
            Err(_) => d.failed += 1,
        }
    }
}

/// Renders beat values. One `Beat` is kept and only what changes from beat
/// to beat is patched into it (the program id's text is copied into the
/// same buffer, no allocation), so the hot path costs a serialisation, as
/// the hand-written format it replaced did.
pub struct BeatWriter {
    beat: Beat,
}

impl BeatWriter {
    /// Beats of a sidecar-less program: timestamp, program id, sequence
    /// number and interval (what OpenMSIStream's programs carry, plus the
    /// interval the monitors expect).
    pub fn new(interval_secs: u32) -> BeatWriter {
        BeatWriter {
            beat: Beat {
                program_id: Some(String::new()),
                seq: Some(0),
                interval_secs: Some(interval_secs),
                ..Beat::at(Timestamp::UNIX_EPOCH)
            },
        }
    }

    /// The value of `program`'s beat number `seq`, stamped `now`.
    pub fn value(
        &mut self,
        program: &str,
        seq: u64,
        now: Timestamp,
    ) -> Result<Vec<u8>, heartbeat_crds::Error> {
        let id = self.beat.program_id.get_or_insert_default();
        id.clear();
        id.push_str(program);
        self.beat.seq = Some(seq);
        self.beat.timestamp = now;
        self.beat.render()
    }
}

/// The producer, its delivery reports going to `deliveries`.
pub fn producer(
    bootstrap: &str,
    linger_ms: u32,
    deliveries: Arc<Mutex<Deliveries>>,
) -> ThreadedProducer<Reports> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", linger_ms.to_string())
        .set("acks", "1")
        .set("queue.buffering.max.messages", "1000000")
        .set("message.timeout.ms", "30000")
        .create_with_context(Reports(deliveries))
        .expect("kafka producer")
}

/// Beats from `t0` for `timing.duration`, the silenced members skipped from
/// `timing.stop_at`; clears `generating` when done (after a flush). The
/// thread returns (beats sent, waits on a full producer queue).
pub fn spawn(
    plan: Arc<Plan>,
    producer: ThreadedProducer<Reports>,
    interval: u32,
    timing: Timing,
    t0: Instant,
    generating: Arc<AtomicBool>,
) -> JoinHandle<(u64, u64)> {
    std::thread::spawn(move || {
        let n = plan.order.len() as u64;
        let slot_ns = f64::from(interval) * 1e9 / n as f64;
        let mut writer = BeatWriter::new(interval);
        let mut k: u64 = 0;
        let mut sent = 0u64;
        let mut queue_full = 0u64;
        loop {
            let elapsed = t0.elapsed();
            if elapsed >= timing.duration {
                break;
            }
            // Every beat whose moment has come: beat k is due at k * slot.
            let due = (elapsed.as_nanos() as f64 / slot_ns) as u64 + 1;
            let silent = elapsed >= timing.stop_at;
            while k < due {
                let member = plan.order[(k % n) as usize];
                let seq = k / n;
                k += 1;
                if silent && plan.stopped.contains(&member) {
                    continue;
                }
                let m = &plan.members[member];
                let value = match writer.value(&m.program, seq, Timestamp::now()) {
                    Ok(v) => v,
                    Err(e) => {
                        eprintln!("[scale] rendering a beat failed: {e}");
                        continue;
                    }
                };
                let mut record = BaseRecord::with_opaque_to(
                    &plan.topics[m.monitor],
                    Box::new((member, m.monitor)),
                )
                .key(&m.key)
                .payload(&value);
                loop {
                    match producer.send(record) {
                        Ok(()) => {
                            sent += 1;
                            break;
                        }
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                            queue_full += 1;
                            record = r;
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Err((e, _)) => {
                            eprintln!("[scale] produce failed: {e}");
                            break;
                        }
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        generating.store(false, Ordering::Relaxed);
        let _ = producer.flush(Duration::from_secs(30));
        (sent, queue_full)
    })
}

#[cfg(test)]
mod tests {
    use heartbeat_crds::program_id::key_for;

    use super::*;

    #[test]
    fn a_generated_beat_reads_back_as_the_operator_reads_it() {
        let mut writer = BeatWriter::new(10);
        // A time with nanoseconds: the wire keeps microseconds (truncated).
        let now = Timestamp::from_nanosecond(1_700_000_000_123_456_789).expect("a time");
        // The buffer is reused: an earlier, longer program id must not leak.
        let _ = writer.value("scale-m999-p9999-longer", 7, now);
        let value = writer.value("scale-m001-p0002", 3, now).expect("renders");
        let key = key_for("scale-m001-p0002");
        let (program, read) = Beat::read_message(Some(key.as_bytes()), Some(&value))
            .expect("the operator's reader takes it");
        let beat = read.view();
        assert_eq!(program, "scale-m001-p0002");
        assert_eq!(beat.program_id, Some("scale-m001-p0002"));
        assert_eq!(beat.timestamp.as_microsecond(), 1_700_000_000_123_456);
        assert_eq!(beat.seq, Some(3));
        assert_eq!(beat.interval_secs, Some(10));
        assert!(read.dropped().is_empty(), "{:?}", read.dropped());
    }

    #[test]
    fn the_wire_format_is_the_one_the_hand_format_wrote() {
        let mut writer = BeatWriter::new(10);
        let now = Timestamp::from_microsecond(1_700_000_000_123_456).expect("a time");
        let value = writer.value("p", 0, now).expect("renders");
        assert_eq!(
            String::from_utf8_lossy(&value),
            "{\"timestamp\":\"2023-11-14T22:13:20.123456+00:00\",\"program_id\":\"p\",\"seq\":0,\"interval_secs\":10}"
        );
    }
}
