//! The sidecar binary against the real Kafka broker of the local stack.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use heartbeat_crds::beat::AppStatus;
use heartbeat_crds::sidecar_contract::{env, path};
use heartbeat_crds::{Beat, Phase};
use heartbeat_e2e::kafka::{PrivateKafka, Received, read_until};
use heartbeat_e2e::process::SidecarProcess;
use heartbeat_e2e::{KafkaStack, TestTopic};

const BIN: &str = env!("CARGO_BIN_EXE_heartbeat-sidecar");

/// The env the webhook gives an injected sidecar, named by the one contract
/// the webhook renders from (tests/cli.rs pins the names themselves).
fn injected_env(
    bootstrap: &str,
    topic: &str,
    program_id: &str,
    interval: u32,
) -> Vec<(&'static str, String)> {
    vec![
        (env::TOPIC, topic.to_string()),
        (env::PROGRAM_ID, program_id.to_string()),
        (env::INTERVAL_SECS, interval.to_string()),
        (env::MONITOR, "e2e/sidecar".to_string()),
        (env::POD_NAME, "ingest-7d9f-abc".to_string()),
        (env::POD_NAMESPACE, "e2e".to_string()),
        (env::POD_UID, "0b6c-11".to_string()),
        (env::NODE_NAME, "node-1".to_string()),
        ("KAFKA_BOOTSTRAP_SERVERS", bootstrap.to_string()),
    ]
}

fn beats(received: &[Received]) -> Vec<Beat> {
    received
        .iter()
        .map(|r| Beat::parse(r.value.as_deref().unwrap_or_default()).expect("sidecar beats parse"))
        .collect()
}

fn has_stopping(received: &[Received]) -> bool {
    received.iter().any(|r| {
        Beat::parse(r.value.as_deref().unwrap_or_default())
            .is_ok_and(|b| b.phase == Some(Phase::Stopping))
    })
}

#[tokio::test]
async fn beats_arrive_with_key_fields_increasing_seq_and_the_interval_cadence() {
    let stack = KafkaStack::get();
    let topic = TestTopic::create(&stack.bootstrap, "sidecar-cadence").await;
    let mut env = injected_env(&stack.bootstrap, &topic.name, "e2e.ingest-7d9f-abc", 1);
    env.push((env::SIGNING_KEY, "s3cret".to_string()));
    let mut sidecar = SidecarProcess::spawn(BIN.as_ref(), &env, &[]);
    // Let at least 6 beats arrive, then stop it.
    read_until(
        &stack.bootstrap,
        &topic.name,
        Duration::from_secs(30),
        |r| r.len() >= 6,
    )
    .await;
    let status = sidecar.terminate();
    assert!(status.success(), "exit {status:?}\n{}", sidecar.log());
    let received = read_until(
        &stack.bootstrap,
        &topic.name,
        Duration::from_secs(30),
        has_stopping,
    )
    .await;

    for r in &received {
        assert_eq!(
            r.key.as_deref(),
            Some(&b"e2e.ingest-7d9f-abc_heartbeat"[..])
        );
        let (name, sig) = r.headers.first().expect("signature header");
        assert_eq!(name, heartbeat_crds::signing::HEADER);
        assert!(heartbeat_crds::signing::verify(
            b"s3cret",
            r.key.as_deref().unwrap_or_default(),
            r.value.as_deref().unwrap_or_default(),
            sig
        ));
    }
    let beats = beats(&received);
    let first = &beats[0];
    assert_eq!(first.phase, Some(Phase::Starting));
    assert_eq!(first.schema.as_deref(), Some(heartbeat_crds::beat::SCHEMA));
    assert_eq!(first.program_id.as_deref(), Some("e2e.ingest-7d9f-abc"));
    assert_eq!(first.interval_secs, Some(1));
    assert_eq!(first.monitor.as_deref(), Some("e2e/sidecar"));
    let pod = first.pod.as_ref().expect("pod identity");
    assert_eq!(
        (pod.namespace.as_str(), pod.name.as_str()),
        ("e2e", "ingest-7d9f-abc")
    );
    assert_eq!(
        (pod.uid.as_deref(), pod.node.as_deref()),
        (Some("0b6c-11"), Some("node-1"))
    );
    assert_eq!(beats.last().and_then(|b| b.phase), Some(Phase::Stopping));
    assert!(
        beats[1..beats.len() - 1]
            .iter()
            .all(|b| b.phase == Some(Phase::Running))
    );
    let seqs: Vec<u64> = beats.iter().filter_map(|b| b.seq).collect();
    assert_eq!(seqs, (1..=beats.len() as u64).collect::<Vec<_>>());

    // Cadence from the message timestamps of the scheduled beats (not the stopping one).
    let ts: Vec<i64> = received[..received.len() - 1]
        .iter()
        .map(|r| r.timestamp_ms.expect("message timestamp"))
        .collect();
    // The schedule is start + k*interval, so the span over n beats is (n-1)
    // intervals whatever one late tick did; single gaps only need to be sane.
    let gaps: Vec<i64> = ts.windows(2).map(|w| w[1] - w[0]).collect();
    for gap in &gaps {
        assert!((200..=1800).contains(gap), "gap {gap}ms in {gaps:?}");
    }
    let mean = (ts[ts.len() - 1] - ts[0]) as f64 / (ts.len() - 1) as f64;
    assert!(
        (900.0..=1100.0).contains(&mean),
        "mean gap {mean}ms in {gaps:?}"
    );
}

#[tokio::test]
async fn app_health_file_mode_follows_the_touch_file_age() {
    let stack = KafkaStack::get();
    let topic = TestTopic::create(&stack.bootstrap, "sidecar-file").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("health");
    let mut env = injected_env(&stack.bootstrap, &topic.name, "e2e.file", 1);
    env.push((env::APP_HEALTH, format!("file:{}:2", file.display())));
    let sidecar = SidecarProcess::spawn(BIN.as_ref(), &env, &[]);

    let body = sidecar
        .wait_for(path::APP_HEALTH, 503, Duration::from_secs(20))
        .await;
    assert!(body.contains("does not exist"), "{body}");
    std::fs::write(&file, b"").expect("touch");
    sidecar
        .wait_for(path::APP_HEALTH, 200, Duration::from_secs(10))
        .await;
    // Not touched any more: it ages past 2 s.
    let body = sidecar
        .wait_for(path::APP_HEALTH, 503, Duration::from_secs(10))
        .await;
    assert!(body.contains("old (max 2s)"), "{body}");
    std::fs::write(&file, b"").expect("touch again");
    sidecar
        .wait_for(path::APP_HEALTH, 200, Duration::from_secs(10))
        .await;

    // The beats carry the verdict too, judged by the sidecar itself: only
    // beats sent from now on count, with no HTTP request to the sidecar
    // meanwhile (the start-up beat already says Failing, and the polls
    // above judged too). They go Ok while the file is fresh, then Failing
    // for its age (it is not touched any more), then Ok again once touched.
    let quiet_from = jiff::Timestamp::now();
    let aged = |b: &Beat| {
        b.app.as_ref().is_some_and(|a| {
            a.status == AppStatus::Failing
                && a.reason
                    .as_deref()
                    .is_some_and(|r| r.contains("old (max 2s)"))
        })
    };
    let ok = |b: &Beat| b.app.as_ref().is_some_and(|a| a.status == AppStatus::Ok);
    // Whether a beat matching `first` comes before one matching `then`.
    let in_order =
        |received: &[Received], first: &dyn Fn(&Beat) -> bool, then: &dyn Fn(&Beat) -> bool| {
            let mut by_seq = beats(received);
            by_seq.retain(|b| b.timestamp > quiet_from);
            by_seq.sort_by_key(|b| b.seq);
            by_seq
                .iter()
                .position(first)
                .is_some_and(|i| by_seq[i..].iter().any(then))
        };
    let received = read_until(
        &stack.bootstrap,
        &topic.name,
        Duration::from_secs(30),
        |r| in_order(r, &ok, &aged),
    )
    .await;
    assert!(in_order(&received, &ok, &aged), "{:#?}", beats(&received));
    std::fs::write(&file, b"").expect("touch after aging");
    let received = read_until(
        &stack.bootstrap,
        &topic.name,
        Duration::from_secs(30),
        |r| in_order(r, &aged, &ok),
    )
    .await;
    assert!(in_order(&received, &aged, &ok), "{:#?}", beats(&received));
}

#[tokio::test]
async fn app_health_ping_mode_follows_pings_and_counts_work() {
    let stack = KafkaStack::get();
    let topic = TestTopic::create(&stack.bootstrap, "sidecar-ping").await;
    let mut env = injected_env(&stack.bootstrap, &topic.name, "e2e.ping", 1);
    env.push((env::APP_HEALTH, "ping:2".to_string()));
    let mut sidecar = SidecarProcess::spawn(BIN.as_ref(), &env, &[]);

    // No ping since start: failing once the 2 s allowance is over.
    let body = sidecar
        .wait_for(path::APP_HEALTH, 503, Duration::from_secs(20))
        .await;
    assert!(body.contains("no ping"), "{body}");
    let (code, _) = sidecar
        .call("POST", path::PING, Some(r#"{"messages": 5, "bytes": 100}"#))
        .await;
    assert_eq!(code, 200);
    sidecar
        .wait_for(path::APP_HEALTH, 200, Duration::from_secs(5))
        .await;
    let (code, _) = sidecar
        .call("POST", path::PING_START, Some(r#"{"messages": 2}"#))
        .await;
    assert_eq!(code, 200);
    let (code, _) = sidecar.get(path::PING).await;
    assert_eq!(code, 200);
    // Pings stop: failing again.
    let body = sidecar
        .wait_for(path::APP_HEALTH, 503, Duration::from_secs(10))
        .await;
    assert!(body.contains("last ping"), "{body}");
    sidecar.call("POST", path::PING, Some("")).await;
    sidecar
        .wait_for(path::APP_HEALTH, 200, Duration::from_secs(5))
        .await;
    // An explicit failure holds until the next ping.
    let (code, _) = sidecar.call("POST", path::PING_FAIL, None).await;
    assert_eq!(code, 200);
    let body = sidecar
        .wait_for(path::APP_HEALTH, 503, Duration::from_secs(5))
        .await;
    assert!(body.contains(path::PING_FAIL), "{body}");
    sidecar.get(path::PING).await;
    sidecar
        .wait_for(path::APP_HEALTH, 200, Duration::from_secs(5))
        .await;

    // Malformed count reports are refused and count nothing; a plain-text
    // body (log output, healthchecks.io style) is a ping without counts.
    for bad in [r#"{"msgs": 1}"#, r#"{"messages": -1}"#, r#"{"messages": "#] {
        let (code, body) = sidecar.call("POST", path::PING, Some(bad)).await;
        assert_eq!(code, 400, "{bad}: {body}");
    }
    let (code, _) = sidecar
        .call("POST", path::PING, Some("processed batch 17\n"))
        .await;
    assert_eq!(code, 200);

    assert!(sidecar.terminate().success());
    let received = read_until(
        &stack.bootstrap,
        &topic.name,
        Duration::from_secs(30),
        has_stopping,
    )
    .await;
    let beats = beats(&received);
    let messages: u64 = beats.iter().filter_map(|b| b.n_messages_processed).sum();
    let bytes: u64 = beats.iter().filter_map(|b| b.n_bytes_processed).sum();
    assert_eq!(
        (messages, bytes),
        (7, 100),
        "counters are reported once each, then reset"
    );
}

#[tokio::test]
async fn app_health_http_mode_follows_the_apps_probe() {
    let stack = KafkaStack::get();
    let topic = TestTopic::create(&stack.bootstrap, "sidecar-http").await;
    let healthy = Arc::new(AtomicBool::new(true));
    let flag = healthy.clone();
    let app = axum::Router::new().route(
        "/healthz",
        axum::routing::get(move || {
            let ok = flag.load(Ordering::Relaxed);
            async move {
                if ok {
                    (axum::http::StatusCode::OK, "fine")
                } else {
                    (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "broken")
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let mut env = injected_env(&stack.bootstrap, &topic.name, "e2e.http", 1);
    env.push((env::APP_HEALTH, format!("http://127.0.0.1:{port}/healthz")));
    let sidecar = SidecarProcess::spawn(BIN.as_ref(), &env, &[]);
    sidecar
        .wait_for(path::APP_HEALTH, 200, Duration::from_secs(20))
        .await;
    healthy.store(false, Ordering::Relaxed);
    let body = sidecar
        .wait_for(path::APP_HEALTH, 503, Duration::from_secs(10))
        .await;
    assert!(body.contains("returned 500"), "{body}");
    healthy.store(true, Ordering::Relaxed);
    sidecar
        .wait_for(path::APP_HEALTH, 200, Duration::from_secs(10))
        .await;
    server.abort();
    let _ = server.await;
    let body = sidecar
        .wait_for(path::APP_HEALTH, 503, Duration::from_secs(10))
        .await;
    assert!(body.contains("failed"), "{body}");
}

/// Runs a sidecar (beat every second, queue capacity `cap`, delivery
/// timeout `timeout_ms`) through a broker outage of `outage`: `/livez`
/// holds and the queue never passes `cap` nor a timeout's worth of beats, `/readyz` fails, the
/// undelivered count grows; with the broker back it is ready again and
/// fresh beats arrive reporting at least `lost` undelivered.
async fn outage_run(cap: u32, timeout_ms: u32, outage: Duration, lost: f64) {
    let kafka = PrivateKafka::start();
    let topic = format!("outage-{}", heartbeat_e2e::unique_suffix());
    kafka.create_topic(&topic).await;
    let mut env = injected_env(&kafka.bootstrap, &topic, "e2e.outage", 1);
    env.push((env::QUEUE_CAPACITY, cap.to_string()));
    env.push(("KAFKA_MESSAGE_TIMEOUT_MS", timeout_ms.to_string()));
    let sidecar = SidecarProcess::spawn(BIN.as_ref(), &env, &[]);
    sidecar
        .wait_for(path::READYZ, 200, Duration::from_secs(30))
        .await;
    let delivered_before = sidecar
        .metric("heartbeat_sidecar_beats_delivered_total")
        .await
        .unwrap_or(0.0);
    assert!(delivered_before >= 1.0);

    kafka.stop_broker();
    let down = std::time::Instant::now();
    // Never more than the cap, nor more than the beats of one delivery
    // timeout (one a second) and the one being made.
    let bound = f64::from(cap.min(timeout_ms / 1000 + 2));
    let body = sidecar
        .wait_for(path::READYZ, 503, Duration::from_secs(30))
        .await;
    assert!(body.contains("no beat delivered"), "{body}");
    // Keep watching: liveness holds, the queue never exceeds its cap, and
    // the undelivered count grows.
    let mut undelivered = Vec::new();
    while down.elapsed() < outage || undelivered.len() < 8 {
        let (code, body) = sidecar.get(path::LIVEZ).await;
        assert_eq!(code, 200, "{body}");
        let depth = sidecar
            .metric("heartbeat_sidecar_queue_depth")
            .await
            .expect("queue depth");
        assert!(depth <= bound, "queue depth {depth} over {bound}");
        undelivered.push(
            sidecar
                .metric("heartbeat_sidecar_beats_undelivered_total")
                .await
                .expect("undelivered"),
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(
        undelivered.windows(2).all(|w| w[1] >= w[0]),
        "{undelivered:?}"
    );
    assert!(
        undelivered.last().copied().unwrap_or(0.0) > undelivered[0],
        "undelivered did not grow: {undelivered:?}"
    );
    assert!(
        undelivered.last().copied().unwrap_or(0.0) >= lost,
        "{undelivered:?}"
    );

    kafka.start_broker();
    sidecar
        .wait_for(path::READYZ, 200, Duration::from_secs(60))
        .await;
    let seq_before_restart = delivered_before as u64;
    // Fresh beats arrive after the outage, reporting what was lost.
    let received = read_until(&kafka.bootstrap, &topic, Duration::from_secs(60), |r| {
        beats(r).iter().any(|b| {
            b.sidecar
                .as_ref()
                .is_some_and(|s| s.undelivered as f64 >= lost)
        })
    })
    .await;
    let newest = beats(&received)
        .iter()
        .filter_map(|b| b.seq)
        .max()
        .unwrap_or(0);
    assert!(newest > seq_before_restart + 3, "newest seq {newest}");
}

/// Rule: with a long delivery timeout, beats pile up against the queue cap
/// (3): the queue stays at it, the overflow is counted undelivered, and the
/// sidecar recovers when the broker returns.
#[tokio::test]
async fn broker_outage_keeps_livez_fails_readyz_bounds_the_queue_and_recovers() {
    outage_run(3, 120_000, Duration::from_secs(8), 3.0).await;
}

/// Rule: a broker gone longer than `message.timeout.ms` (3 s; an outage of
/// 15 s) expires the queued beats: each is counted undelivered, the queue
/// (cap 100) holds no more than the timeout's worth, and beats resume on
/// return.
#[tokio::test]
async fn a_broker_gone_past_the_delivery_timeout_expires_beats_counted_and_resumes() {
    outage_run(100, 3_000, Duration::from_secs(15), 8.0).await;
}

#[tokio::test]
async fn sigterm_with_a_hung_app_probe_still_leaves_a_stopping_beat_within_two_seconds() {
    let stack = KafkaStack::get();
    let topic = TestTopic::create(&stack.bootstrap, "sidecar-stop").await;
    // An "app" that accepts connections and never answers.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = hung.local_addr().expect("addr").port();
    let mut env = injected_env(&stack.bootstrap, &topic.name, "e2e.stop", 1);
    env.push((env::APP_HEALTH, format!("http://127.0.0.1:{port}/healthz")));
    let mut sidecar = SidecarProcess::spawn(BIN.as_ref(), &env, &[]);
    read_until(
        &stack.bootstrap,
        &topic.name,
        Duration::from_secs(30),
        |r| r.len() >= 2,
    )
    .await;
    let sent = std::time::Instant::now();
    let status = sidecar.terminate();
    let took = sent.elapsed();
    assert!(status.success(), "exit {status:?}\n{}", sidecar.log());
    // The brief's shutdown deadline, not a speed measurement: the stopping
    // beat and flush are bounded by design (1.5 s flush budget).
    assert!(
        took < Duration::from_secs(2),
        "exited {took:?} after SIGTERM\n{}",
        sidecar.log()
    );
    read_until(
        &stack.bootstrap,
        &topic.name,
        Duration::from_secs(30),
        has_stopping,
    )
    .await;
    drop(hung);
}

#[tokio::test]
async fn kafka_service_links_and_foreign_kafka_env_do_not_break_the_producer() {
    let stack = KafkaStack::get();
    let topic = TestTopic::create(&stack.bootstrap, "sidecar-links").await;
    let mut env = injected_env(&stack.bootstrap, &topic.name, "e2e.links", 1);
    // What a pod gets when a Service named kafka exists, and what shells export.
    for (k, v) in [
        ("KAFKA_SERVICE_HOST", "10.0.0.7"),
        ("KAFKA_SERVICE_PORT", "9092"),
        ("KAFKA_PORT", "tcp://10.0.0.7:9092"),
        ("KAFKA_PORT_9092_TCP_ADDR", "10.0.0.7"),
        ("KAFKA_HOME", "/opt/kafka"),
        ("KAFKA_BOOTSTRAP", "127.0.0.1:1"),
    ] {
        env.push((k, v.to_string()));
    }
    let sidecar = SidecarProcess::spawn(BIN.as_ref(), &env, &[]);
    sidecar
        .wait_for(path::READYZ, 200, Duration::from_secs(30))
        .await;
    let log = sidecar.log();
    assert!(
        log.contains("KAFKA_HOME") && log.contains("ignoring"),
        "{log}"
    );
}

/// Rule: on the SASL_SSL listener (SCRAM-SHA-512, the broker's certificate
/// verified against the stack's CA) a producer principal beats on the topic
/// its ACL names, and on nothing else: it cannot read that topic, cannot
/// write another tenant's, and the wrong password gets it nowhere.
#[tokio::test]
async fn beats_over_sasl_ssl_and_a_producer_principal_may_only_write_its_topic() {
    use heartbeat_crds::sidecar_contract::kafka_env_for_property;
    use heartbeat_e2e::kafka::Grants;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    use rdkafka::{Offset, TopicPartitionList};

    let stack = KafkaStack::get();
    let topic = TestTopic::create(&stack.bootstrap, "sidecar-secured").await;
    let other = TestTopic::create(&stack.bootstrap, "sidecar-secured-other").await;
    let grants = Grants {
        write: vec![topic.name.clone()],
        ..Grants::default()
    };
    let producer = stack.principal("producer", &grants);
    assert_eq!(producer.get("bootstrap.servers"), stack.sasl_ssl_bootstrap);

    // The sidecar, given the principal's properties as the webhook gives a
    // broker Secret's (KAFKA_* env), beats over SASL_SSL.
    let names: Vec<(String, &str)> = producer
        .0
        .iter()
        .filter(|(k, _)| k.as_str() != "bootstrap.servers")
        .map(|(k, v)| (kafka_env_for_property(k), v.as_str()))
        .collect();
    let mut env = injected_env(&stack.sasl_ssl_bootstrap, &topic.name, "e2e.secured", 1);
    env.extend(names.iter().map(|(k, v)| (k.as_str(), v.to_string())));
    let mut sidecar = SidecarProcess::spawn(BIN.as_ref(), &env, &[]);
    let received = read_until(
        &stack.bootstrap,
        &topic.name,
        Duration::from_secs(30),
        |r| r.len() >= 2,
    )
    .await;
    assert!(
        beats(&received)
            .iter()
            .all(|b| b.program_id.as_deref() == Some("e2e.secured"))
    );
    let status = sidecar.terminate();
    assert!(status.success(), "exit {status:?}\n{}", sidecar.log());

    let send = |config: rdkafka::ClientConfig, to: String| async move {
        let p: FutureProducer = config
            .clone()
            .set("message.timeout.ms", "10000")
            .create()
            .expect("producer");
        p.send(
            FutureRecord::to(&to).key("k").payload("{}"),
            Duration::from_secs(10),
        )
        .await
        .map(drop)
        .map_err(|(e, _)| e.to_string())
    };
    // The positive control: the same client writes its own topic.
    send(producer.client_config(), topic.name.clone())
        .await
        .expect("the producer principal writes its own topic");
    let refused = send(producer.client_config(), other.name.clone())
        .await
        .expect_err("another tenant's topic is refused");
    assert!(refused.contains("Authorization"), "{refused}");

    let mut wrong = producer.client_config();
    wrong.set("sasl.password", "not-the-password");
    let refused = send(wrong, topic.name.clone()).await;
    assert!(refused.is_err(), "a wrong password is refused");

    // Reading its own topic is refused too (Write and Describe only).
    let consumer: BaseConsumer = producer
        .client_config()
        .set("group.id", "no-group")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic.name, 0, Offset::Beginning)
        .expect("partition");
    consumer.assign(&tpl).expect("assign");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let read = loop {
        match consumer.poll(Duration::from_millis(500)) {
            Some(result) => break result.map(|m| format!("{m:?}")).map_err(|e| e.to_string()),
            None if std::time::Instant::now() > deadline => break Ok("nothing".into()),
            None => continue,
        }
    };
    let refused = read.expect_err("the producer principal may not read");
    assert!(refused.contains("Authorization"), "{refused}");
}
