//! The Kafka tier: a broker-only stack, a topic owned by one test, a
//! private broker a test may stop, and small rdkafka helpers.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

/// What a principal may do, as `e2e/stack kafka-principal` grants it.
pub use heartbeat_testbed::supervisor::Grants;

use crate::stack::{run_ok, stack_command, up_for_this_binary};

/// A running broker-only stack (`HB_COMPONENTS=kafka`), shared by the
/// Kafka-tier tests of one binary.
#[derive(Debug, Clone)]
pub struct KafkaStack {
    /// `host:port` of the broker's PLAINTEXT listener (a super user's).
    pub bootstrap: String,
    /// `host:port` of its SASL_SSL listener (principals and ACLs).
    pub sasl_ssl_bootstrap: String,
}

/// `HB_KAFKA_STACK_DIR`, or the full stack's directory with `-kafka` added.
pub fn kafka_stack_dir() -> PathBuf {
    crate::stack::sibling_stack_dir("HB_KAFKA_STACK_DIR", "-kafka")
}

impl KafkaStack {
    /// The broker-only stack at `HB_KAFKA_STACK_DIR`: the one already up, or
    /// a new, empty one stopped when this test binary exits.
    pub fn get() -> &'static KafkaStack {
        static STACK: OnceLock<KafkaStack> = OnceLock::new();
        STACK.get_or_init(|| {
            let dir = kafka_stack_dir();
            let env = up_for_this_binary(&dir, "kafka", true);
            let missing = |what: &str| panic!("{} has no {what}", dir.display());
            KafkaStack {
                bootstrap: env
                    .kafka_bootstrap
                    .unwrap_or_else(|| missing("KAFKA_BOOTSTRAP")),
                sasl_ssl_bootstrap: env
                    .kafka_sasl_ssl_bootstrap
                    .unwrap_or_else(|| missing("KAFKA_SASL_SSL_BOOTSTRAP")),
            }
        })
    }

    /// A new SCRAM principal on this broker: see [`kafka_principal`].
    pub fn principal(&self, prefix: &str, grants: &Grants) -> ClientProperties {
        kafka_principal(&kafka_stack_dir(), prefix, grants)
    }
}

/// A new SCRAM principal `<prefix>-<random>` with `grants` on the broker of
/// the stack in `dir`, made by `e2e/stack kafka-principal`: its client
/// properties, as the file the stack wrote says them.
pub fn kafka_principal(dir: &Path, prefix: &str, grants: &Grants) -> ClientProperties {
    let name = format!("{prefix}-{}", crate::unique_suffix());
    kafka_principal_named(dir, &name, grants)
}

/// `e2e/stack kafka-principal NAME`: for a principal that exists, a new
/// password (its rotation) and the grants added to its ACLs.
pub fn kafka_principal_named(dir: &Path, name: &str, grants: &Grants) -> ClientProperties {
    let mut cmd = stack_command(dir);
    cmd.args(["kafka-principal", name]);
    for (flag, values) in [
        ("--write", &grants.write),
        ("--read", &grants.read),
        ("--group", &grants.groups),
    ] {
        for v in values {
            cmd.args([flag, v]);
        }
    }
    let file = run_ok(&mut cmd);
    ClientProperties::read(Path::new(file.trim()))
}

/// A principal's librdkafka client properties (`KEY=VALUE` lines).
#[derive(Debug, Clone)]
pub struct ClientProperties(pub std::collections::BTreeMap<String, String>);

impl ClientProperties {
    /// Reads the file `e2e/stack kafka-principal` wrote.
    pub fn read(file: &Path) -> ClientProperties {
        let text =
            std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        ClientProperties(
            text.lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    /// One property, which must be there.
    pub fn get(&self, key: &str) -> &str {
        self.0
            .get(key)
            .unwrap_or_else(|| panic!("no {key} in the principal's properties"))
    }

    /// A client configuration with every property set.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        for (k, v) in &self.0 {
            config.set(k, v);
        }
        config
    }
}

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
    /// A name `<prefix>-<random>` not created yet (`create_now` does), deleted
    /// on drop all the same: for tests of what happens before a topic exists.
    pub fn reserve(bootstrap: &str, prefix: &str) -> TestTopic {
        TestTopic {
            name: format!("{prefix}-{}", crate::unique_suffix()),
            bootstrap: bootstrap.to_string(),
        }
    }

    /// Creates a reserved topic.
    pub async fn create_now(&self) {
        create_topic(&self.bootstrap, &self.name).await;
    }

    /// Creates `<prefix>-<random>` with one partition on the broker at `bootstrap`.
    pub async fn create(bootstrap: &str, prefix: &str) -> TestTopic {
        let name = format!("{prefix}-{}", crate::unique_suffix());
        create_topic(bootstrap, &name).await;
        TestTopic {
            name,
            bootstrap: bootstrap.to_string(),
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

/// A history of `n` sidecar-like beats (about 560 bytes each) of 1,000
/// programs (`program-NNNN`) on `topic`, produced as fast as the broker
/// takes them.
pub fn produce_history(bootstrap: &str, topic: &str, n: usize) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "50")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer");
    for i in 0..n {
        let key = format!("program-{:04}_heartbeat", i % 1000);
        let value = format!(
            r#"{{"timestamp":"2026-12-06T23:00:00.{:06}+00:00","schema":"heartbeat.dev/v1","program_id":"program-{:04}","seq":{i},"interval_secs":10,"phase":"running","app":{{"status":"ok"}},"n_messages_read":{i},"n_messages_processed":{i},"n_bytes_read":{i},"n_bytes_processed":{i},"n_messages_produced":{i},"n_bytes_produced":{i},"host":"host-{:03}","sidecar":{{"version":"0.1.0","started_at":"2026-12-06T21:00:00+00:00","undelivered":0}},"padding":"{}"}}"#,
            i % 1_000_000,
            i % 1000,
            i % 1000,
            "p".repeat(60)
        );
        let mut record = BaseRecord::to(topic).key(&key).payload(&value);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, r)) => {
                    producer.poll(Duration::from_millis(10));
                    record = r;
                }
            }
        }
    }
    producer
        .flush(Duration::from_secs(60))
        .expect("the history is on the broker");
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

/// Produces one message with `kcat` (as an external program would), keyed
/// `key`; a broker that does not take it within a few seconds is an `Err`
/// (never a hang). A missing `kcat` panics naming it.
pub fn kcat_produce(bootstrap: &str, topic: &str, key: &str, value: &str) -> Result<(), String> {
    kcat_produce_with_headers(bootstrap, topic, key, value, &[])
}

/// [`kcat_produce`] with Kafka headers (`name`, `value`).
pub fn kcat_produce_with_headers(
    bootstrap: &str,
    topic: &str,
    key: &str,
    value: &str,
    headers: &[(&str, &str)],
) -> Result<(), String> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    // `|` never occurs in a key we use; kcat splits a line at its first delimiter.
    assert!(
        !key.contains('|') && !value.contains('\n'),
        "unsendable {key:?}"
    );
    let mut cmd = Command::new("kcat");
    cmd.args(["-P", "-b", bootstrap, "-t", topic, "-K", "|"])
        .args(["-X", "message.timeout.ms=5000"]);
    for (name, v) in headers {
        cmd.arg("-H").arg(format!("{name}={v}"));
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run kcat (e2e/stack install installs it): {e}"));
    let mut stdin = child.stdin.take().expect("kcat stdin");
    let written = writeln!(stdin, "{key}|{value}");
    drop(stdin);
    let out = child.wait_with_output().expect("kcat");
    if written.is_ok() && out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "kcat to {bootstrap} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The last `n` messages of `topic` (partition 0) as (key, value) text,
/// read with `kcat` as any consumer could.
pub fn kcat_last(bootstrap: &str, topic: &str, n: u32) -> Vec<(String, String)> {
    let out = std::process::Command::new("kcat")
        .args(["-C", "-b", bootstrap, "-t", topic, "-p", "0", "-e", "-q"])
        .args(["-o", &format!("-{n}"), "-f", "%k|%s\n"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run kcat (e2e/stack install installs it): {e}"));
    assert!(
        out.status.success(),
        "kcat -C on {topic}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('|'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A broker of its own, for tests that stop and restart it. Stopped on drop
/// (and by `e2e/stack` if this process dies first).
pub struct PrivateKafka {
    dir: PathBuf,
    pub bootstrap: String,
}

impl PrivateKafka {
    pub fn start() -> PrivateKafka {
        let dir = std::env::temp_dir().join(format!("hb-private-kafka-{}", crate::unique_suffix()));
        let env = up_for_this_binary(&dir, "kafka", false);
        let bootstrap = env.kafka_bootstrap.expect("KAFKA_BOOTSTRAP");
        PrivateKafka { dir, bootstrap }
    }

    fn stack(dir: &Path) -> std::process::Command {
        let mut cmd = stack_command(dir);
        cmd.env("HB_COMPONENTS", "kafka");
        cmd
    }

    /// Stops the broker (its address and port stay the stack's).
    pub fn stop_broker(&self) {
        run_ok(Self::stack(&self.dir).args(["stop", "kafka"]));
    }

    /// Starts the broker again on the same port and waits until it answers.
    pub fn start_broker(&self) {
        run_ok(Self::stack(&self.dir).args(["start", "kafka"]));
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

/// A beat exactly as OpenMSIStream writes it: a naive UTC timestamp with
/// microseconds, a float counter.
pub fn openmsistream_beat() -> String {
    let now = jiff::Timestamp::now();
    format!(
        r#"{{"timestamp": "{}.{:06}", "n_messages_read": 1.5}}"#,
        now.strftime("%Y-%m-%dT%H:%M:%S"),
        now.subsec_microsecond()
    )
}

/// A program outside the cluster beating every `interval_secs` with kcat,
/// until dropped. A broker that is down loses beats, as it would in the
/// wild.
pub struct ExternalProgram {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ExternalProgram {
    /// Starts beating as `program_id` on `topic`.
    pub fn start(
        bootstrap: &str,
        topic: &str,
        program_id: &str,
        interval_secs: u64,
    ) -> ExternalProgram {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let (bootstrap, topic) = (bootstrap.to_string(), topic.to_string());
        let key = format!("{program_id}_heartbeat");
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                let _ = kcat_produce(&bootstrap, &topic, &key, &openmsistream_beat());
                std::thread::sleep(Duration::from_secs(interval_secs));
            }
        });
        ExternalProgram {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for ExternalProgram {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
