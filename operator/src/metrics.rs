//! Every metric the operator exposes, registered in one place
//! (prometheus-client; rendered by the admin server's `/metrics`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry};

/// Labels of an admission decision.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `injected`, `skipped`, `ignored` (not a pod CREATE) or `error`.
    pub outcome: String,
    /// Why it was skipped or failed (empty when injected).
    pub reason: String,
}

/// The operator's metrics.
pub struct Metrics {
    pub registry: Registry,
    /// Admission reviews answered, by outcome and reason.
    pub admissions: Family<OutcomeLabels, Counter>,
    /// Time to answer one admission review, in seconds.
    pub admission_duration: Histogram,
    /// Requests that were not a readable AdmissionReview.
    pub bad_requests: Counter,
    /// Serving certificates loaded (at start and on each renewal).
    pub cert_loads: Counter,
}

fn registered<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

impl Metrics {
    /// Registers every metric under the `heartbeat_operator` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("heartbeat_operator");
        let admissions = registered(
            &mut registry,
            "webhook_admissions",
            "Admission reviews answered, by outcome and reason",
            Family::default(),
        );
        // 50 us .. ~0.8 s: the webhook answers in well under a millisecond.
        let buckets = prometheus_client::metrics::histogram::exponential_buckets(0.00005, 2.0, 15);
        let admission_duration = registered(
            &mut registry,
            "webhook_admission_duration_seconds",
            "Time to answer one admission review",
            Histogram::new(buckets),
        );
        let bad_requests = registered(
            &mut registry,
            "webhook_bad_requests",
            "Requests that were not a readable AdmissionReview",
            Counter::default(),
        );
        let cert_loads = registered(
            &mut registry,
            "webhook_certificate_loads",
            "Serving certificates loaded, at start and on each renewal",
            Counter::default(),
        );
        Metrics {
            registry,
            admissions,
            admission_duration,
            bad_requests,
            cert_loads,
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
