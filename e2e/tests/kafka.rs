//! Kafka-tier smoke test: a Beat round trip through the real broker, and
//! kcat reading it.

use std::time::Duration;

use heartbeat_crds::program_id::key_for;
use heartbeat_crds::{Beat, Phase};
use heartbeat_e2e::stack::run_ok;
use heartbeat_e2e::{KafkaStack, TestTopic};
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};

fn sample_beat() -> Beat {
    Beat {
        schema: Some(heartbeat_crds::beat::SCHEMA.into()),
        program_id: Some("smoke.roundtrip".into()),
        seq: Some(7),
        interval_secs: Some(10),
        phase: Some(Phase::Running),
        n_messages_processed: Some(3),
        // The wire format carries microseconds.
        ..Beat::at(
            jiff::Timestamp::from_microsecond(jiff::Timestamp::now().as_microsecond())
                .expect("now is in range"),
        )
    }
}

#[tokio::test]
async fn beat_round_trips_through_kafka_and_kcat_reads_it() {
    let stack = KafkaStack::get();
    let topic = TestTopic::create(&stack.bootstrap, "smoke-beat").await;
    let beat = sample_beat();
    let value = beat.render().expect("render");
    let key = key_for("smoke.roundtrip");

    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &stack.bootstrap)
        .create()
        .expect("producer");
    producer
        .send(
            FutureRecord::to(&topic.name).key(&key).payload(&value),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("delivery");

    let consumer: StreamConsumer = heartbeat_e2e::kafka::consumer_config(&stack.bootstrap)
        .create()
        .expect("consumer");
    consumer.subscribe(&[&topic.name]).expect("subscribe");
    let msg = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
        .await
        .expect("a message within 30s")
        .expect("consume");
    let (program_id, got) = Beat::parse_message(msg.key(), msg.payload()).expect("parse");
    assert_eq!(program_id, "smoke.roundtrip");
    assert_eq!(got.beat, beat);
    assert!(got.dropped.is_empty(), "{:?}", got.dropped);

    let kcat = run_ok(std::process::Command::new("kcat").args([
        "-C",
        "-b",
        &stack.bootstrap,
        "-t",
        &topic.name,
        "-o",
        "beginning",
        "-e",
        "-q",
        "-f",
        "%k\t%s\n",
    ]));
    let line = kcat.lines().next().unwrap_or_default();
    let (k, v) = line.split_once('\t').expect("key<TAB>value");
    assert_eq!(k, key);
    assert_eq!(v.as_bytes(), value.as_slice());
    assert!(
        v.contains(&heartbeat_crds::beat::format_timestamp(beat.timestamp)),
        "{v}"
    );
}
