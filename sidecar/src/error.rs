//! The sidecar's one error type.

/// What can stop the sidecar from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("creating the Kafka producer: {}", redacted(.0))]
    CreateProducer(#[source] rdkafka::error::KafkaError),
    #[error("starting the producer's delivery-report thread: {0}")]
    DeliveryThread(#[source] std::io::Error),
    #[error("HTTP server on {addr}: {source}")]
    Http {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("HTTP client for the app probe: {0}")]
    ProbeClient(String),
    #[error("signing key: {0}")]
    SigningKey(String),
    #[error("signal handler: {0}")]
    Signal(std::io::Error),
}

/// `e` without the value of a refused property: librdkafka's `ClientConfig`
/// error carries it, and it may be a password from the Secret.
fn redacted(e: &rdkafka::error::KafkaError) -> String {
    match e {
        rdkafka::error::KafkaError::ClientConfig(_, desc, key, value) => {
            // librdkafka's own text may quote the value too.
            let desc = match value.as_str() {
                "" => desc.clone(),
                v => desc.replace(v, "<redacted>"),
            };
            format!("property {key}: {desc}")
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::error::KafkaError;
    use rdkafka::types::RDKafkaConfRes;

    use super::*;

    /// Rule: a refused property is named, its value (maybe a Secret's) never shown.
    #[test]
    fn a_refused_property_is_named_without_its_value() {
        let e = Error::CreateProducer(KafkaError::ClientConfig(
            RDKafkaConfRes::RD_KAFKA_CONF_INVALID,
            "Invalid value \"hunter2\" for configuration property \"sasl.password\"".into(),
            "sasl.password".into(),
            "hunter2".into(),
        ));
        let shown = e.to_string();
        assert!(shown.contains("sasl.password"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
