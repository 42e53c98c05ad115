//! The sidecar's one error type.

/// What can stop the sidecar from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kafka producer: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
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
