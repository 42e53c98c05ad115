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
