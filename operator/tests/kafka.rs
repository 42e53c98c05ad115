//! The operator's consumer settings on a real broker (kafka tier).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use heartbeat_e2e::kafka::produce_history;
use heartbeat_e2e::{KafkaStack, TestTopic};
use heartbeat_operator::consumer::ConsumerKey;
use k8s_openapi::ByteString;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::{Offset, TopicPartitionList};

/// librdkafka's own log lines, kept.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<String>>>);

impl Logs {
    fn matching(&self, what: &str) -> Vec<String> {
        let lines = self.0.lock().unwrap_or_else(|p| p.into_inner());
        lines.iter().filter(|l| l.contains(what)).cloned().collect()
    }
}

impl ClientContext for Logs {
    fn log(&self, _level: RDKafkaLogLevel, fac: &str, line: &str) {
        let mut lines = self.0.lock().unwrap_or_else(|p| p.into_inner());
        lines.push(format!("{fac} {line}"));
    }
}

impl ConsumerContext for Logs {}

/// Rule (issue 20, the idle replay): a new leader replaying history is
/// never held back by librdkafka waiting a second each time its fetch
/// queue fills. The operator bounds that queue (4 MiB a partition) and librdkafka's
/// default `fetch.queue.backoff.ms` is 1000, so a replay read 16 MiB and
/// then idled a second, again and again: about 30,000 beats/s with the
/// CPU mostly idle. Here the operator's own consumer settings read a
/// history of over twice the queue: the queue is let fill (the backoff
/// happens), and every such backoff must be short.
#[test]
fn a_replay_is_never_held_back_a_second_when_the_fetch_queue_fills() {
    let stack = KafkaStack::get();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let topic = rt.block_on(TestTopic::create(&stack.bootstrap, "replay"));
    let n = 80_000;
    produce_history(&stack.bootstrap, &topic.name, n);

    let data: BTreeMap<String, ByteString> = [(
        "bootstrap.servers".to_string(),
        ByteString(stack.bootstrap.clone().into_bytes()),
    )]
    .into();
    let key = ConsumerKey::from_secret(&topic.name, &data).expect("consumer key");
    let logs = Logs::default();
    let consumer: Arc<BaseConsumer<Logs>> = Arc::new(
        key.client_config("kafka-tier", "replay-test")
            .set("debug", "fetch")
            .set_log_level(RDKafkaLogLevel::Debug)
            .create_with_context(logs.clone())
            .expect("the operator's consumer settings make a consumer"),
    );
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic.name, 0, Offset::Beginning)
        .expect("partition");
    consumer.assign(&tpl).expect("assign");
    // The messages on a queue of their own, so polling the consumer serves
    // librdkafka's log lines without taking a message.
    let messages = consumer
        .split_partition_queue(&topic.name, 0)
        .expect("a partition queue");

    // Nothing is read until the queue is full: the state a replay is in
    // whenever the broker delivers faster than the table takes beats.
    let full = "Local: Queue full";
    let deadline = Instant::now() + Duration::from_secs(60);
    while logs.matching(full).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the fetch queue never filled with {n} beats on the topic"
        );
        assert!(consumer.poll(Duration::from_millis(50)).is_none());
    }
    let mut read = 0;
    let mut quiet_since = Instant::now();
    while read < n {
        assert!(consumer.poll(Duration::ZERO).is_none());
        match messages.poll(Duration::from_millis(100)) {
            Some(Ok(_)) => {
                read += 1;
                quiet_since = Instant::now();
            }
            Some(Err(e)) => panic!("reading the history: {e}"),
            None => assert!(
                quiet_since.elapsed() < Duration::from_secs(30),
                "stuck at {read} of {n} beats"
            ),
        }
    }
    let backoffs = logs.matching(full);
    assert!(
        backoffs
            .iter()
            .all(|l| l.contains("Fetch backoff for 10ms")),
        "a full fetch queue held the replay back longer: {:#?}",
        backoffs.iter().take(5).collect::<Vec<_>>()
    );
}
