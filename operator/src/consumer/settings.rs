//! Broker settings: a monitor's Secret (keys are librdkafka properties)
//! turned into the consumer's configuration. Pure, so the rules are tested
//! without a broker. Only connection and security settings are taken from
//! the Secret (an allowlist: the rest, such as the sidecars' producer
//! settings, is ignored), the operator sets its own fetch and queue sizes,
//! and no value but the broker address ever reaches a log or a status
//! message (`redact` takes them out of librdkafka's errors).

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::ByteString;
use rdkafka::ClientConfig;

/// The only properties a broker Secret gives the operator's consumer: how
/// to reach and authenticate to the brokers. Everything else (fetch and
/// queue sizes, offset handling, debug output, file paths) is the
/// operator's, or of no concern to a consumer.
const ALLOWED: &[&str] = &[
    "bootstrap.servers",
    "security.protocol",
    "sasl.mechanism",
    "sasl.mechanisms",
    "sasl.username",
    "sasl.password",
    "ssl.ca.pem",
    "ssl.certificate.pem",
    "ssl.key.pem",
    "ssl.key.password",
    "ssl.endpoint.identification.algorithm",
    "enable.ssl.certificate.verification",
];

/// The consumer's memory bounds, whatever the Secret says: at most this
/// much fetched per request, per partition, and queued ahead. Each topic
/// takes its partitions' queues off the shared client, and librdkafka then
/// bounds each partition's queue (not the client's): 4 MiB each, which a
/// replay still drains in tens of milliseconds.
const FETCH_MAX_BYTES: &str = "8388608";
const RECEIVE_MESSAGE_MAX_BYTES: &str = "8389120";
const MAX_PARTITION_FETCH_BYTES: &str = "1048576";
const QUEUED_MAX_KBYTES: &str = "4096";
/// How long librdkafka waits before fetching again once that queue is
/// full. Its default, 1 s, made a replay read 16 MiB and then idle for a
/// second, over and over: about 30,000 beats/s with the CPU nearly idle.
/// The queue drains in milliseconds, so look again soon.
const FETCH_QUEUE_BACKOFF_MS: &str = "10";

/// Longest `bootstrap.servers` shown in messages, logs and metric labels.
const MAX_SHOWN_BOOTSTRAP: usize = 255;

/// Why a broker Secret cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error("Secret has no bootstrap.servers key")]
    NoBootstrap,
    #[error("Secret key {0:?} is not UTF-8")]
    NotUtf8(String),
}

/// The brokers the operator may connect to (`--allowed-brokers`): each
/// pattern is `host:port` or `*.domain:port`; empty allows any. Without
/// it, whoever writes a monitor's Secret chooses where the operator
/// connects, and its status tells them what answered there.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrokerAllowlist(pub Vec<String>);

impl BrokerAllowlist {
    /// Every broker of `bootstrap` (`host:port,...`, each maybe with a
    /// `proto://` prefix) matches a pattern.
    pub fn allows(&self, bootstrap: &str) -> bool {
        self.0.is_empty()
            || bootstrap.split(',').map(str::trim).all(|b| {
                let b = b.rsplit_once("://").map_or(b, |(_, rest)| rest);
                !b.is_empty() && self.0.iter().any(|p| matches(p.trim(), b))
            })
    }
}

fn matches(pattern: &str, broker: &str) -> bool {
    let broker = broker.to_ascii_lowercase();
    let pattern = pattern.to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        // `*.d:9093` matches `a.d:9093` and `a.b.d:9093`, never `d:9093`
        // or `evil-d:9093`.
        Some(suffix) => broker.ends_with(&format!(".{suffix}")) && broker.len() > suffix.len() + 1,
        None => broker == pattern,
    }
}

/// What identifies one consumer: the same broker settings and topic share it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConsumerKey {
    pub topic: String,
    properties: BTreeMap<String, String>,
}

impl fmt::Debug for ConsumerKey {
    // Never print the properties: they may hold passwords.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConsumerKey({self})")
    }
}

impl fmt::Display for ConsumerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "topic {} on {}", self.topic, self.bootstrap())
    }
}

impl ConsumerKey {
    /// The key for `topic` read with the properties of a broker Secret.
    pub fn from_secret(
        topic: &str,
        data: &BTreeMap<String, ByteString>,
    ) -> Result<ConsumerKey, SettingsError> {
        let mut properties = BTreeMap::new();
        for (k, v) in data {
            if !ALLOWED.contains(&k.as_str()) {
                continue;
            }
            let v =
                String::from_utf8(v.0.clone()).map_err(|_| SettingsError::NotUtf8(k.clone()))?;
            properties.insert(k.clone(), v.trim().to_string());
        }
        if properties
            .get("bootstrap.servers")
            .is_none_or(|b| b.is_empty())
        {
            return Err(SettingsError::NoBootstrap);
        }
        Ok(ConsumerKey {
            topic: topic.to_string(),
            properties,
        })
    }

    /// The same brokers, with the operator's own credentials (its
    /// `--consumer-secret`): everything but `bootstrap.servers` comes from
    /// `own`, so tenants' producer principals need no Read on the topic.
    pub fn with_credentials(
        mut self,
        own: &BTreeMap<String, ByteString>,
    ) -> Result<ConsumerKey, SettingsError> {
        self.properties.retain(|k, _| k == "bootstrap.servers");
        for (k, v) in own {
            if k == "bootstrap.servers" || !ALLOWED.contains(&k.as_str()) {
                continue;
            }
            let v =
                String::from_utf8(v.0.clone()).map_err(|_| SettingsError::NotUtf8(k.clone()))?;
            self.properties.insert(k.clone(), v.trim().to_string());
        }
        Ok(self)
    }

    /// The brokers as the Secret gives them (to check against the allowlist).
    /// The key of the broker connection this topic is read through: the
    /// same settings without the topic. Topics on one connection share a
    /// client.
    pub fn connection(&self) -> ConsumerKey {
        ConsumerKey {
            topic: String::new(),
            properties: self.properties.clone(),
        }
    }

    pub fn bootstrap_servers(&self) -> &str {
        self.properties
            .get("bootstrap.servers")
            .map(String::as_str)
            .unwrap_or_default()
    }

    /// The brokers, for messages (the one property shown): only when it
    /// reads as a short list of `host:port`, else a placeholder.
    pub fn bootstrap(&self) -> &str {
        let b = self
            .properties
            .get("bootstrap.servers")
            .map(String::as_str)
            .unwrap_or_default();
        let plain = |c: char| c.is_ascii_alphanumeric() || ".-:,[]_".contains(c);
        if b.len() <= MAX_SHOWN_BOOTSTRAP && b.chars().all(plain) {
            b
        } else {
            "(an unprintable bootstrap.servers)"
        }
    }

    /// `text` (a librdkafka error) with every value of the Secret but the
    /// broker address taken out: librdkafka names a value it refuses.
    pub fn redact(&self, text: &str) -> String {
        let mut values: Vec<&str> = self
            .properties
            .iter()
            .filter(|(k, v)| k.as_str() != "bootstrap.servers" && !v.is_empty())
            .map(|(_, v)| v.as_str())
            .collect();
        // Longest first: a value that contains another goes whole.
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        values
            .into_iter()
            .fold(text.to_string(), |t, v| t.replace(v, "<redacted>"))
    }

    /// The consumer's configuration: the Secret's properties plus the
    /// operator's own (no commits, no auto offset handling).
    pub fn client_config(&self, group: &str, client_id: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c.set("group.id", group)
            .set("client.id", client_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("auto.offset.reset", "latest")
            // Fail fast enough to report a dead broker, retry forever.
            .set("socket.timeout.ms", "10000")
            .set("reconnect.backoff.max.ms", "5000")
            .set("fetch.max.bytes", FETCH_MAX_BYTES)
            .set("receive.message.max.bytes", RECEIVE_MESSAGE_MAX_BYTES)
            .set("max.partition.fetch.bytes", MAX_PARTITION_FETCH_BYTES)
            .set("queued.max.messages.kbytes", QUEUED_MAX_KBYTES)
            .set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS);
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &[u8])]) -> BTreeMap<String, ByteString> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), ByteString(v.to_vec())))
            .collect()
    }

    #[test]
    fn the_same_settings_and_topic_share_a_consumer_and_passwords_are_never_shown() {
        let d = data(&[
            ("bootstrap.servers", b"k:9092"),
            ("sasl.password", b"hunter2"),
        ]);
        let a = ConsumerKey::from_secret("hb", &d).expect("key");
        let b = ConsumerKey::from_secret("hb", &d).expect("key");
        assert_eq!(a, b);
        assert_ne!(a, ConsumerKey::from_secret("other", &d).expect("key"));
        let shown = format!("{a} {a:?}");
        assert!(
            shown.contains("k:9092") && !shown.contains("hunter2"),
            "{shown}"
        );
    }

    #[test]
    fn a_secret_without_brokers_or_with_binary_values_is_refused() {
        assert_eq!(
            ConsumerKey::from_secret("hb", &data(&[("sasl.username", b"u")])),
            Err(SettingsError::NoBootstrap)
        );
        assert_eq!(
            ConsumerKey::from_secret(
                "hb",
                &data(&[("bootstrap.servers", b"k:1"), ("ssl.key.pem", b"\xff")])
            ),
            Err(SettingsError::NotUtf8("ssl.key.pem".into()))
        );
    }

    /// Rule: a broker Secret gives the consumer only connection and
    /// security settings: anything else (a queue size holding a planted
    /// value, debug output, a file path) never reaches librdkafka, and the
    /// operator's own bounds hold.
    #[test]
    fn only_connection_and_security_settings_come_from_the_secret() {
        let key = ConsumerKey::from_secret(
            "hb",
            &data(&[
                ("bootstrap.servers", b"k:1"),
                ("sasl.password", b"pw"),
                ("queued.max.messages.kbytes", b"MARKER"),
                ("debug", b"all"),
                ("ssl.ca.location", b"/etc/shadow"),
                ("linger.ms", b"5"),
            ]),
        )
        .expect("key");
        let c = key.client_config("heartbeat-operator", "op-1");
        assert_eq!(c.get("sasl.password"), Some("pw"));
        assert_eq!(c.get("queued.max.messages.kbytes"), Some(QUEUED_MAX_KBYTES));
        for absent in ["debug", "ssl.ca.location", "linger.ms"] {
            assert_eq!(c.get(absent), None, "{absent}");
        }
    }

    /// Rule: librdkafka's error about a value shows no value of the Secret
    /// (but the broker address).
    #[test]
    fn errors_are_redacted_of_every_secret_value() {
        let key = ConsumerKey::from_secret(
            "hb",
            &data(&[
                ("bootstrap.servers", b"k:1"),
                ("security.protocol", b"MARKER-proto"),
                ("sasl.password", b"MARKER-pw"),
            ]),
        )
        .expect("key");
        let e = key.redact(
            "Invalid value \"MARKER-proto\" for configuration property \"security.protocol\" on k:1 (MARKER-pw)",
        );
        assert!(!e.contains("MARKER") && e.contains("k:1"), "{e}");
        let weird =
            ConsumerKey::from_secret("hb", &data(&[("bootstrap.servers", b"a\nb")])).expect("key");
        assert!(!weird.bootstrap().contains('\n'));
    }

    /// Rule: with the operator's own consumer Secret, only the brokers come
    /// from the tenant's Secret; every credential is the operator's.
    #[test]
    fn the_operators_credentials_replace_the_tenants() {
        let key = ConsumerKey::from_secret(
            "hb",
            &data(&[
                ("bootstrap.servers", b"k:1"),
                ("sasl.username", b"tenant"),
                ("sasl.password", b"tenant-pw"),
                ("ssl.key.pem", b"tenant-key"),
            ]),
        )
        .expect("key")
        .with_credentials(&data(&[
            ("bootstrap.servers", b"elsewhere:1"),
            ("security.protocol", b"SASL_SSL"),
            ("sasl.username", b"operator"),
            ("sasl.password", b"operator-pw"),
            ("debug", b"all"),
        ]))
        .expect("key");
        let c = key.client_config("g", "c");
        assert_eq!(c.get("bootstrap.servers"), Some("k:1"));
        assert_eq!(c.get("sasl.username"), Some("operator"));
        assert_eq!(c.get("sasl.password"), Some("operator-pw"));
        assert_eq!(c.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(c.get("ssl.key.pem"), None);
        assert_eq!(c.get("debug"), None);
    }

    /// Rule: with an allowlist, the operator connects only to brokers that
    /// match it (exactly, or under a `*.` domain), every broker of the list.
    #[test]
    fn only_allowed_brokers_are_connected_to() {
        let any = BrokerAllowlist::default();
        assert!(any.allows("anything:1"));
        let list = BrokerAllowlist(vec!["kafka.data:9093".into(), "*.kafka.svc:9093".into()]);
        for ok in [
            "kafka.data:9093",
            "b-1.kafka.svc:9093",
            "SASL_SSL://KAFKA.DATA:9093",
            "a.kafka.svc:9093, kafka.data:9093",
        ] {
            assert!(list.allows(ok), "{ok}");
        }
        for refused in [
            "kafka.data:9092",
            "kafka.svc:9093",
            "evil-kafka.svc:9093",
            "10.0.0.1:22",
            "kafka.data:9093,10.0.0.1:22",
            "",
        ] {
            assert!(!list.allows(refused), "{refused}");
        }
    }

    #[test]
    fn the_secret_cannot_override_offset_handling() {
        let key = ConsumerKey::from_secret(
            "hb",
            &data(&[
                ("bootstrap.servers", b"k:1"),
                ("enable.auto.commit", b"true"),
                ("group.id", b"x"),
            ]),
        )
        .expect("key");
        let c = key.client_config("heartbeat-operator", "op-1");
        assert_eq!(c.get("enable.auto.commit"), Some("false"));
        assert_eq!(c.get("group.id"), Some("heartbeat-operator"));
    }
}
