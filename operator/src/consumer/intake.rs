//! Attributing what the consumer read to the monitors reading through it,
//! a batch of messages at a time: each message is parsed once, each
//! monitor's table locked once per batch, and the topic's metric handles
//! resolved once per session, so replaying a long history costs little
//! more than reading it.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

use heartbeat_crds::Beat;
use heartbeat_crds::ReadBeat;
use heartbeat_crds::signing::{self, Verdict};
use jiff::Timestamp;
use kube::runtime::reflector::ObjectRef;
use prometheus_client::metrics::counter::Counter;
use rdkafka::message::{BorrowedMessage, Headers, Message};

use super::{ConsumerKey, Shared, lock};
use crate::membership::table::{Incoming, Recorded};
use crate::metrics::{FieldLabels, RejectLabels, TopicLabels};

/// Rejections of one reason are logged at most this often.
const LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// The topic's per-message counters, resolved once: a lookup in a labelled
/// family (a `String` clone and a map lookup under a lock) per message
/// would cost more than the parse.
pub(super) struct TopicCounters {
    consumed: Counter,
    skewed: Counter,
}

impl TopicCounters {
    pub(super) fn new(shared: &Shared) -> TopicCounters {
        let labels = TopicLabels {
            topic: shared.key.topic.clone(),
        };
        TopicCounters {
            consumed: shared.metrics.beats_consumed.get_or_create(&labels).clone(),
            skewed: shared.metrics.beats_skewed.get_or_create(&labels).clone(),
        }
    }
}

/// A message that parsed as a beat.
struct Parsed<'m> {
    program_id: &'m str,
    beat: ReadBeat<'m>,
    key: &'m [u8],
    payload: &'m [u8],
    signature: Option<&'m [u8]>,
    broker_time: Option<Timestamp>,
    position: (i32, i64),
}

/// What became of one parsed message across the monitors.
#[derive(Default, Clone, Copy)]
struct Outcome {
    recorded: bool,
    refused: Option<&'static str>,
    unattributed: Option<&'static str>,
}

/// Attributes a batch of messages, in order, to the monitors reading
/// through this consumer. `caught_up`: the seek epoch the consumer has
/// caught up with; a monitor waiting for a later one is not woken (its
/// replay is not news).
pub(super) fn batch(
    shared: &Shared,
    msgs: &[BorrowedMessage<'_>],
    caught_up: Option<u64>,
    counters: &TopicCounters,
    log: &mut RejectLog,
) {
    let parsed: Vec<Parsed<'_>> = msgs
        .iter()
        .filter_map(|msg| parse(shared, msg, log))
        .collect();
    if parsed.is_empty() {
        return;
    }
    // Borrowed once per batch, for every monitor.
    let views: Vec<Beat<&str>> = parsed.iter().map(|p| p.beat.view()).collect();
    let mut outcomes = vec![Outcome::default(); parsed.len()];
    let now = Timestamp::now();
    let subs = match shared.subscribers.read() {
        Ok(s) => s,
        Err(p) => p.into_inner(),
    };
    for s in subs.iter() {
        // Once per batch. None: signing is off; Some(None): on, with keys
        // not read yet (or a poisoned lock): nothing is trusted.
        let keys = match s.signing.read() {
            Ok(g) => g.as_ref().map(|master| master.get()),
            Err(p) => p.get_ref().as_ref().map(|_| None),
        };
        let mut revived_any = false;
        let mut table = lock(&s.table);
        for ((p, view), outcome) in parsed.iter().zip(&views).zip(outcomes.iter_mut()) {
            // A monitor with signing on sees only what its pods' keys
            // signed (each pod's key derived from the uid its beat names);
            // the same message may still count for a monitor without.
            let verdict = keys.as_ref().map(|k| match k {
                Some(loaded) => loaded.ring.check(
                    view.pod.as_ref().and_then(|pod| pod.uid),
                    p.key,
                    p.payload,
                    p.signature,
                ),
                None => Verdict::Forged,
            });
            if let Some(reason) = verdict.and_then(Verdict::rejection) {
                outcome.refused = outcome.refused.or(Some(reason));
                continue;
            }
            let incoming = Incoming {
                program_id: p.program_id,
                beat: view,
                broker_time: p.broker_time,
                position: Some(p.position),
            };
            match table.record(&incoming, now) {
                Recorded::Member { revived, skewed } => {
                    outcome.recorded = true;
                    if skewed {
                        counters.skewed.inc();
                    }
                    revived_any |= revived;
                }
                Recorded::Departed => outcome.recorded = true,
                Recorded::Unattributed(reason) => {
                    outcome.unattributed = outcome.unattributed.or(Some(reason));
                }
                Recorded::NotMine => {}
            }
        }
        drop(table);
        if revived_any
            && caught_up.is_some_and(|e| e >= s.epoch)
            && !s.wake_pending.swap(true, Ordering::Relaxed)
        {
            let _ = shared
                .waker
                .send(ObjectRef::new(&s.id.name).within(&s.id.namespace));
        }
    }
    drop(subs);
    let mut consumed = 0;
    for (p, o) in parsed.iter().zip(&outcomes) {
        if o.recorded {
            consumed += 1;
            continue;
        }
        let reason = o.refused.or(o.unattributed).unwrap_or("no_monitor");
        reject(shared, reason);
        log.reject(&shared.key, reason, || {
            format!("beat of {:?} matches no member", p.program_id)
        });
    }
    counters.consumed.inc_by(consumed);
}

/// Parses one message, counting and logging what is refused or dropped.
fn parse<'m>(
    shared: &Shared,
    msg: &'m BorrowedMessage<'_>,
    log: &mut RejectLog,
) -> Option<Parsed<'m>> {
    let (program_id, beat) = match Beat::read_message(msg.key(), msg.payload()) {
        Ok(p) => p,
        Err(e) => {
            reject(shared, e.metric_label());
            log.reject(&shared.key, e.metric_label(), || e.to_string());
            return None;
        }
    };
    for d in beat.dropped() {
        shared
            .metrics
            .beat_fields_dropped
            .get_or_create(&FieldLabels {
                topic: shared.key.topic.clone(),
                field: d.field.clone(),
            })
            .inc();
    }
    let broker_time = msg
        .timestamp()
        .to_millis()
        .and_then(|ms| Timestamp::from_millisecond(ms).ok());
    let signature = msg.headers().and_then(|h| {
        h.iter()
            .find(|h| h.key == signing::HEADER)
            .and_then(|h| h.value)
    });
    Some(Parsed {
        program_id,
        beat,
        key: msg.key().unwrap_or_default(),
        payload: msg.payload().unwrap_or_default(),
        signature,
        broker_time,
        position: (msg.partition(), msg.offset()),
    })
}

/// Counts a refused message by reason (rare: resolved per message).
fn reject(shared: &Shared, reason: &str) {
    shared
        .metrics
        .beats_rejected
        .get_or_create(&RejectLabels {
            topic: shared.key.topic.clone(),
            reason: reason.to_string(),
        })
        .inc();
}

/// Logs rejections and consumer errors at a bounded rate.
#[derive(Default)]
pub(super) struct RejectLog {
    last: HashMap<&'static str, (Instant, u64)>,
}

impl RejectLog {
    pub(super) fn reject(
        &mut self,
        key: &ConsumerKey,
        reason: &'static str,
        why: impl FnOnce() -> String,
    ) {
        let now = Instant::now();
        let e = self.last.entry(reason).or_insert((now - LOG_EVERY * 2, 0));
        e.1 += 1;
        if now.duration_since(e.0) >= LOG_EVERY {
            tracing::warn!(consumer = %key, reason, count = e.1, example = %why(), "rejected beats");
            *e = (now, 0);
        }
    }

    pub(super) fn error(&mut self, key: &ConsumerKey, err: &rdkafka::error::KafkaError) {
        self.reject(key, "consumer_error", || err.to_string());
    }
}
