//! Every Prometheus metric the sidecar exports, registered in one place.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The sidecar's metrics. Counters are cheap clones of shared atomics.
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
    pub last_delivery_seconds: Gauge<f64, AtomicU64>,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("heartbeat_sidecar");
        let m = Metrics {
            beats_enqueued: Counter::default(),
            beats_delivered: Counter::default(),
            beats_undelivered: Counter::default(),
            queue_depth: Gauge::default(),
            queue_capacity: Gauge::default(),
            pings: Counter::default(),
            ping_starts: Counter::default(),
            ping_failures: Counter::default(),
            app_healthy: Gauge::default(),
            last_delivery_seconds: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "beats_enqueued",
            "Beats handed to the producer",
            m.beats_enqueued.clone(),
        );
        registry.register(
            "beats_delivered",
            "Beats the broker acknowledged",
            m.beats_delivered.clone(),
        );
        registry.register(
            "beats_undelivered",
            "Beats dropped: queue full, delivery timeout or broker error",
            m.beats_undelivered.clone(),
        );
        registry.register(
            "queue_depth",
            "Beats waiting for delivery",
            m.queue_depth.clone(),
        );
        registry.register(
            "queue_capacity",
            "Most beats held for delivery",
            m.queue_capacity.clone(),
        );
        registry.register(
            "pings",
            "Progress pings from the application",
            m.pings.clone(),
        );
        registry.register(
            "ping_starts",
            "Start pings from the application",
            m.ping_starts.clone(),
        );
        registry.register(
            "ping_failures",
            "Failure pings from the application",
            m.ping_failures.clone(),
        );
        registry.register(
            "app_healthy",
            "1 when the application is judged alive",
            m.app_healthy.clone(),
        );
        registry.register(
            "last_delivery_timestamp_seconds",
            "Unix time of the last delivered beat",
            m.last_delivery_seconds.clone(),
        );
        Metrics { registry, ..m }
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
    const EXPOSED: [&str; 10] = [
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
        m.last_delivery_seconds.set(1.5);
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
