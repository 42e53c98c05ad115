//! Broker settings: a monitor's Secret (keys are librdkafka properties)
//! turned into the consumer's configuration. Pure, so the rules are tested
//! without a broker. Values never reach a log or a status message.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::ByteString;
use rdkafka::ClientConfig;

/// Properties the operator sets itself on its consumers: a Secret cannot
/// change how offsets are handled (the operator commits none).
const OWN_PROPERTIES: &[&str] = &[
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "auto.offset.reset",
    "enable.partition.eof",
];

/// Why a broker Secret cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error("Secret has no bootstrap.servers key")]
    NoBootstrap,
    #[error("Secret key {0:?} is not UTF-8")]
    NotUtf8(String),
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
            if OWN_PROPERTIES.contains(&k.as_str()) {
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

    /// The brokers, for messages (the one property safe to show).
    pub fn bootstrap(&self) -> &str {
        self.properties
            .get("bootstrap.servers")
            .map(String::as_str)
            .unwrap_or_default()
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
            .set("reconnect.backoff.max.ms", "5000");
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
