//! A Kafka topic owned by one test, and small rdkafka helpers.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;

use crate::stack::Stack;

/// A test's own topic; dropped means deleted.
pub struct TestTopic {
    pub name: String,
    bootstrap: String,
}

fn admin(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("kafka admin client")
}

impl TestTopic {
    /// Creates `<prefix>-<random>` with one partition.
    pub async fn create(stack: &Stack, prefix: &str) -> TestTopic {
        let name = format!("{prefix}-{}", crate::unique_suffix());
        create_topic(&stack.kafka_bootstrap, &name).await;
        TestTopic {
            name,
            bootstrap: stack.kafka_bootstrap.clone(),
        }
    }
}

impl Drop for TestTopic {
    fn drop(&mut self) {
        let admin = admin(&self.bootstrap);
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        // The admin client polls on its own thread, so blocking here is fine.
        let _ = futures::executor::block_on(admin.delete_topics(&[&self.name], &opts));
    }
}

/// A consumer config reading from the beginning, in a group of its own, without commits.
pub fn consumer_config(bootstrap: &str) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", bootstrap)
        .set("group.id", format!("e2e-{}", crate::unique_suffix()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false");
    cfg
}

/// One consumed message.
#[derive(Debug, Clone)]
pub struct Received {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// The message timestamp (producer create time), in Unix milliseconds.
    pub timestamp_ms: Option<i64>,
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Reads `topic` from the beginning until `done` holds for what was read, or
/// panics after `timeout` showing what arrived.
pub async fn read_until(
    bootstrap: &str,
    topic: &str,
    timeout: Duration,
    done: impl Fn(&[Received]) -> bool,
) -> Vec<Received> {
    use rdkafka::Message;
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::message::Headers;

    let consumer: StreamConsumer = consumer_config(bootstrap).create().expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while !done(&got) {
        let next = tokio::time::timeout_at(deadline, consumer.recv()).await;
        let Ok(msg) = next else {
            let keys: Vec<String> = got
                .iter()
                .map(|r: &Received| {
                    String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned()
                })
                .collect();
            panic!(
                "condition not met within {timeout:?} on {topic}; read {} messages:\n{}",
                got.len(),
                keys.join("\n")
            );
        };
        let msg = msg.expect("consume");
        let headers = msg
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                    .collect()
            })
            .unwrap_or_default();
        got.push(Received {
            key: msg.key().map(<[u8]>::to_vec),
            value: msg.payload().map(<[u8]>::to_vec),
            timestamp_ms: msg.timestamp().to_millis(),
            headers,
        });
    }
    got
}

/// A broker of its own, for tests that stop and restart it. Stopped on drop
/// (and by `e2e/stack` if this process dies first).
pub struct PrivateKafka {
    dir: std::path::PathBuf,
    pub bootstrap: String,
}

impl PrivateKafka {
    pub fn start() -> PrivateKafka {
        let dir = std::env::temp_dir().join(format!("hb-private-kafka-{}", crate::unique_suffix()));
        let out = Self::stack(&dir)
            .arg("up")
            .arg("--stop-when-exits")
            .arg(std::process::id().to_string())
            .output()
            .expect("run e2e/stack");
        assert!(
            out.status.success(),
            "e2e/stack up (kafka only) failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let env = std::fs::read_to_string(dir.join("stack.env")).expect("stack.env");
        let bootstrap = env
            .lines()
            .find_map(|l| l.strip_prefix("KAFKA_BOOTSTRAP="))
            .expect("KAFKA_BOOTSTRAP")
            .to_string();
        PrivateKafka { dir, bootstrap }
    }

    fn stack(dir: &std::path::Path) -> std::process::Command {
        let mut cmd = std::process::Command::new(crate::stack::repo_dir().join("e2e/stack"));
        cmd.env("HB_STACK_DIR", dir).env("HB_COMPONENTS", "kafka");
        cmd
    }

    /// Stops the broker (the port stays reserved in the stack's state).
    pub fn stop_broker(&self) {
        crate::stack::run_ok(Self::stack(&self.dir).args(["stop", "kafka"]));
    }

    /// Starts the broker again on the same port and waits until it answers.
    pub fn start_broker(&self) {
        crate::stack::run_ok(Self::stack(&self.dir).args(["start", "kafka"]));
    }

    /// Creates a topic on this broker.
    pub async fn create_topic(&self, name: &str) {
        create_topic(&self.bootstrap, name).await;
    }
}

impl Drop for PrivateKafka {
    fn drop(&mut self) {
        let _ = Self::stack(&self.dir).arg("down").output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Creates a one-partition topic.
pub async fn create_topic(bootstrap: &str, name: &str) {
    let admin = admin(bootstrap);
    let topic = NewTopic::new(name, 1, TopicReplication::Fixed(1));
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics([&topic], &opts)
        .await
        .expect("create_topics request");
    for r in results {
        r.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
    }
}
