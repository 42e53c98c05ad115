//! Every Prometheus metric the sidecar exports, registered in one place.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Metric, Registry};

/// The sidecar's metrics, exposed with the prefix `heartbeat_sidecar_`. Each
/// one is named and described once, where [`Metrics::new`] registers it.
/// Counters and gauges are cheap clones of shared atomics.
pub struct Metrics {
    registry: Registry,
    pub beats_enqueued: Counter,
    pub beats_delivered: Counter,
    pub beats_undelivered: Counter,
    pub queue_depth: Gauge,
    pub queue_capacity: Gauge,
    pub pings: Counter,
    pub ping_starts: Counter,
    pub ping_failures: Counter,
    pub app_healthy: Gauge,
    pub last_delivery_timestamp_seconds: Gauge<f64, AtomicU64>,
    /// Connections closed at accept because the server was at its bound.
    pub http_refused: Counter,
    /// Generation of the master the pod's signing key derives from (0: none).
    pub signing_key_generation: Gauge,
    /// Failed requests for the pod's signing key.
    pub signing_key_failures: Counter,
}

/// A new metric, registered under `name` (counters get `_total`) with `help`.
fn registered<M: Metric + Clone + Default>(registry: &mut Registry, name: &str, help: &str) -> M {
    let metric = M::default();
    registry.register(name, help, metric.clone());
    metric
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("heartbeat_sidecar");
        let r = &mut registry;
        Metrics {
            beats_enqueued: registered(r, "beats_enqueued", "Beats handed to the producer"),
            beats_delivered: registered(r, "beats_delivered", "Beats the broker acknowledged"),
            beats_undelivered: registered(
                r,
                "beats_undelivered",
                "Beats dropped: queue full, delivery timeout or broker error",
            ),
            queue_depth: registered(r, "queue_depth", "Beats waiting for delivery"),
            queue_capacity: registered(r, "queue_capacity", "Most beats held for delivery"),
            pings: registered(r, "pings", "Progress pings from the application"),
            ping_starts: registered(r, "ping_starts", "Start pings from the application"),
            ping_failures: registered(r, "ping_failures", "Failure pings from the application"),
            app_healthy: registered(r, "app_healthy", "1 when the application is judged alive"),
            last_delivery_timestamp_seconds: registered(
                r,
                "last_delivery_timestamp_seconds",
                "Unix time of the last delivered beat",
            ),
            http_refused: registered(
                r,
                "http_connections_refused",
                "Connections closed at accept because the server was at its connection bound",
            ),
            signing_key_generation: registered(
                r,
                "signing_key_generation",
                "Generation of the master the pod's signing key derives from (0: no key fetched)",
            ),
            signing_key_failures: registered(
                r,
                "signing_key_failures",
                "Failed requests for the pod's signing key",
            ),
            registry,
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sample names on /metrics: dashboards, the Kafka tests and the README use them.
    const EXPOSED: [&str; 13] = [
        "heartbeat_sidecar_beats_enqueued_total",
        "heartbeat_sidecar_beats_delivered_total",
        "heartbeat_sidecar_beats_undelivered_total",
        "heartbeat_sidecar_queue_depth",
        "heartbeat_sidecar_queue_capacity",
        "heartbeat_sidecar_pings_total",
        "heartbeat_sidecar_ping_starts_total",
        "heartbeat_sidecar_ping_failures_total",
        "heartbeat_sidecar_app_healthy",
        "heartbeat_sidecar_last_delivery_timestamp_seconds",
        "heartbeat_sidecar_http_connections_refused_total",
        "heartbeat_sidecar_signing_key_generation",
        "heartbeat_sidecar_signing_key_failures_total",
    ];

    #[test]
    fn metrics_page_exposes_exactly_the_documented_names() {
        let text = Metrics::new().encode().expect("encodes");
        let samples: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        assert_eq!(samples, EXPOSED, "{text}");
    }

    #[test]
    fn every_metric_has_help_text() {
        let text = Metrics::new().encode().expect("encodes");
        assert_eq!(text.matches("# HELP ").count(), EXPOSED.len(), "{text}");
    }

    #[test]
    fn updates_show_on_the_metrics_page() {
        let m = Metrics::new();
        m.beats_delivered.inc();
        m.queue_capacity.set(100);
        m.last_delivery_timestamp_seconds.set(1.5);
        let text = m.encode().expect("encodes");
        assert!(
            text.contains("heartbeat_sidecar_beats_delivered_total 1\n"),
            "{text}"
        );
        assert!(
            text.contains("heartbeat_sidecar_queue_capacity 100\n"),
            "{text}"
        );
        assert!(
            text.contains("heartbeat_sidecar_last_delivery_timestamp_seconds 1.5\n"),
            "{text}"
        );
    }
}
