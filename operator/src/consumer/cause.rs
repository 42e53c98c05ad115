//! The last error librdkafka reported for a client, with its reason. A
//! failed SASL handshake or certificate check reaches the calls that
//! follow only as a transport failure; Ready should name the cause.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;

use super::{ConsumerKey, lock};

/// How long a reported error explains a failing call: librdkafka reports
/// an error repeated on every reconnect only now and then.
const FRESH: Duration = Duration::from_secs(300);

/// A client's context: keeps the last error's reason, redacted.
pub(super) struct Causes {
    key: ConsumerKey,
    last: Mutex<Option<(Instant, String)>>,
}

impl Causes {
    pub fn new(key: ConsumerKey) -> Causes {
        Causes {
            key,
            last: Mutex::new(None),
        }
    }

    /// The reason of the last error reported in the last five minutes.
    pub fn recent(&self) -> Option<String> {
        lock(&self.last)
            .as_ref()
            .filter(|(at, _)| at.elapsed() < FRESH)
            .map(|(_, why)| why.clone())
    }
}

impl ClientContext for Causes {
    /// librdkafka may quote a setting in an error, so the reason is
    /// redacted before it is logged or kept.
    fn error(&self, error: KafkaError, reason: &str) {
        let why = self.key.redact(reason);
        tracing::warn!(brokers = %self.key.bootstrap(), error = %self.key.redact(&error.to_string()), reason = %why, "Kafka client error");
        *lock(&self.last) = Some((Instant::now(), why));
    }
}

impl ConsumerContext for Causes {}
