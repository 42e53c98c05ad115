//! Every metric the operator exposes, registered in one place
//! (prometheus-client; rendered by the admin server's `/metrics`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
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

/// Labels of a topic-level metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabels {
    pub topic: String,
}

/// Labels of a per-consumer metric (the same topic on two clusters is two consumers).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConsumerLabels {
    pub topic: String,
    pub bootstrap: String,
}

/// Labels of a rejected beat.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    pub topic: String,
    /// A fixed label: `not_json`, `bad_key`, `unknown_pod`, ...
    pub reason: String,
}

/// Labels of a dropped beat field.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FieldLabels {
    pub topic: String,
    /// A known beat field (unknown fields are ignored, never dropped).
    pub field: String,
}

/// Labels of a per-monitor metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MonitorLabels {
    pub namespace: String,
    pub monitor: String,
}

/// Labels of members by state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub namespace: String,
    pub monitor: String,
    pub state: String,
}

/// Labels of a per-member metric (bounded: see `--member-metrics-cap`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MemberLabels {
    pub namespace: String,
    pub monitor: String,
    pub member: String,
}

/// Labels of a published or suppressed Event.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub reason: String,
}

/// Labels of a reconcile failure.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub error: String,
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
    /// When the serving certificate loaded expires, in Unix seconds (unset: unknown).
    pub cert_expiry: Gauge,
    /// When the first CA of the trust bundle to expire does, in Unix seconds (unset: unknown).
    pub ca_expiry: Gauge,
    /// Beats recorded for a member.
    pub beats_consumed: Family<TopicLabels, Counter>,
    /// Messages that were no usable beat, or matched no member, by reason.
    pub beats_rejected: Family<RejectLabels, Counter>,
    /// Malformed fields dropped from beats that still counted.
    pub beat_fields_dropped: Family<FieldLabels, Counter>,
    /// Beats whose own time is further than maxSkewSeconds from the broker's.
    pub beats_skewed: Family<TopicLabels, Counter>,
    /// Messages behind the end of the topic, per consumer.
    pub consumer_lag: Family<ConsumerLabels, Gauge>,
    /// Member-table checkpoints written (one per monitor per round).
    pub checkpoints_written: Counter,
    /// Tables restored from a checkpoint by a new consumer.
    pub checkpoints_restored: Counter,
    /// Kafka consumer clients open: one per distinct broker connection,
    /// however many topics read through it.
    pub consumers: Gauge,
    /// Background tasks running (one per topic read, and their upkeep).
    pub tasks: Gauge,
    /// Members by state, per monitor.
    pub members: Family<StateLabels, Gauge>,
    /// 1 while a member is Up, per member (worst members first, capped).
    pub member_up: Family<MemberLabels, Gauge>,
    /// 1 while a member is Stale, per member (the same capped members):
    /// what names the member in `HeartbeatMemberStale`.
    pub member_stale: Family<MemberLabels, Gauge>,
    /// 1 while a monitor's alarms are silenced (suspend or maintenance).
    pub alarms_silenced: Family<MonitorLabels, Gauge>,
    /// 1 while the operator reads a monitor's topic (its Ready condition).
    pub monitor_ready: Family<MonitorLabels, Gauge>,
    /// Status writes, per monitor.
    pub status_writes: Family<MonitorLabels, Counter>,
    /// Events published, by reason.
    pub events: Family<EventLabels, Counter>,
    /// Events not published because a monitor's budget was spent.
    pub events_suppressed: Family<EventLabels, Counter>,
    /// Reconcile failures, by error.
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    /// 1 while this replica holds the leader Lease.
    pub leader: Gauge,
    /// Pod key requests, by outcome (issued, refused) and reason.
    pub pod_keys: Family<OutcomeLabels, Counter>,
    /// Generation of the signing master this replica holds (0: none yet).
    pub signing_generation: Gauge,
}

fn registered<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

impl Metrics {
    /// Registers every metric under the `heartbeat_operator` prefix.
    pub fn new() -> Metrics {
        // No registry prefix: the operator's own metrics are
        // `heartbeat_operator_*`, what it says about members `heartbeat_*`.
        let mut registry = Registry::default();
        let admissions = registered(
            &mut registry,
            "heartbeat_operator_webhook_admissions",
            "Admission reviews answered, by outcome and reason",
            Family::default(),
        );
        // 50 us .. ~0.8 s: the webhook answers in well under a millisecond.
        let buckets = prometheus_client::metrics::histogram::exponential_buckets(0.00005, 2.0, 15);
        let admission_duration = registered(
            &mut registry,
            "heartbeat_operator_webhook_admission_duration_seconds",
            "Time to answer one admission review",
            Histogram::new(buckets),
        );
        let bad_requests = registered(
            &mut registry,
            "heartbeat_operator_webhook_bad_requests",
            "Requests that were not a readable AdmissionReview",
            Counter::default(),
        );
        let cert_loads = registered(
            &mut registry,
            "heartbeat_operator_webhook_certificate_loads",
            "Serving certificates loaded, at start and on each renewal",
            Counter::default(),
        );
        let cert_expiry = registered(
            &mut registry,
            "heartbeat_operator_webhook_certificate_expiry_timestamp_seconds",
            "When the serving certificate loaded expires (Unix time; 0 while unknown)",
            Gauge::default(),
        );
        let ca_expiry = registered(
            &mut registry,
            "heartbeat_operator_webhook_ca_expiry_timestamp_seconds",
            "When the first CA of the webhook's trust bundle to expire does (Unix time; 0 while unknown)",
            Gauge::default(),
        );
        let r = &mut registry;
        Metrics {
            checkpoints_written: registered(
                r,
                "heartbeat_operator_checkpoints_written",
                "Member-table checkpoints written, one per monitor per round",
                Counter::default(),
            ),
            checkpoints_restored: registered(
                r,
                "heartbeat_operator_checkpoints_restored",
                "Member tables a new consumer restored from a checkpoint",
                Counter::default(),
            ),
            beats_consumed: registered(
                r,
                "heartbeat_operator_beats_consumed",
                "Beats recorded for a member",
                Family::default(),
            ),
            beats_rejected: registered(
                r,
                "heartbeat_operator_beats_rejected",
                "Messages that were no usable beat or matched no member, by reason",
                Family::default(),
            ),
            beat_fields_dropped: registered(
                r,
                "heartbeat_operator_beat_fields_dropped",
                "Malformed fields dropped from beats that still counted",
                Family::default(),
            ),
            beats_skewed: registered(
                r,
                "heartbeat_operator_beats_skewed",
                "Beats whose own time is further than maxSkewSeconds from the broker's",
                Family::default(),
            ),
            consumer_lag: registered(
                r,
                "heartbeat_operator_consumer_lag_messages",
                "Messages behind the end of the topic, per consumer",
                Family::default(),
            ),
            consumers: registered(
                r,
                "heartbeat_operator_consumers",
                "Kafka consumer clients open (one per broker connection, shared by its topics)",
                Gauge::default(),
            ),
            tasks: registered(
                r,
                "heartbeat_operator_tasks",
                "Background tasks running",
                Gauge::default(),
            ),
            members: registered(
                r,
                "heartbeat_members",
                "Members by state, per monitor",
                Family::default(),
            ),
            member_up: registered(
                r,
                "heartbeat_member_up",
                "1 while a member is Up (per member, worst first, capped)",
                Family::default(),
            ),
            member_stale: registered(
                r,
                "heartbeat_member_stale",
                "1 while a member is Stale (per member, worst first, capped)",
                Family::default(),
            ),
            alarms_silenced: registered(
                r,
                "heartbeat_monitor_alarms_silenced",
                "1 while a monitor's alarms are silenced by suspend or a maintenance window",
                Family::default(),
            ),
            monitor_ready: registered(
                r,
                "heartbeat_monitor_ready",
                "1 while the operator reads the monitor's topic (its Ready condition is True)",
                Family::default(),
            ),
            status_writes: registered(
                r,
                "heartbeat_operator_status_writes",
                "Status writes, per monitor",
                Family::default(),
            ),
            events: registered(
                r,
                "heartbeat_operator_events",
                "Events published, by reason",
                Family::default(),
            ),
            events_suppressed: registered(
                r,
                "heartbeat_operator_events_suppressed",
                "Events not published because a monitor's event budget was spent",
                Family::default(),
            ),
            reconcile_errors: registered(
                r,
                "heartbeat_operator_reconcile_errors",
                "Reconcile failures, by error",
                Family::default(),
            ),
            leader: registered(
                r,
                "heartbeat_operator_leader",
                "1 while this replica holds the leader Lease",
                Gauge::default(),
            ),
            pod_keys: registered(
                r,
                "heartbeat_operator_pod_keys",
                "Pod signing key requests, by outcome (issued, refused) and reason",
                Family::default(),
            ),
            signing_generation: registered(
                r,
                "heartbeat_operator_signing_master_generation",
                "Generation of the signing master this replica holds (0: none yet)",
                Gauge::default(),
            ),
            registry,
            admissions,
            admission_duration,
            bad_requests,
            cert_loads,
            cert_expiry,
            ca_expiry,
        }
    }

    /// Removes a member's own series (it left, or fell out of the cap).
    pub fn forget_member(&self, labels: &MemberLabels) {
        let _ = self.member_up.remove(labels);
        let _ = self.member_stale.remove(labels);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The metric names `text` uses (`heartbeat_...`), sample suffixes
    /// (`_total`, `_bucket`, ...) taken off.
    fn names_used(text: &str) -> Vec<String> {
        let mut names: Vec<String> = text
            .match_indices("heartbeat_")
            .map(|(i, _)| {
                text[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect::<String>()
            })
            .map(|n| {
                ["_total", "_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| n.strip_suffix(s))
                    .map(str::to_string)
                    .unwrap_or(n)
            })
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Rule: every metric the chart's alert rules and dashboard query is
    /// one the operator exposes (a rename on either side fails here).
    #[test]
    fn the_charts_alerts_and_dashboard_query_only_metrics_the_operator_exposes() {
        // A family with no member yet renders nothing, so the names are
        // read from the registry's descriptors (its Debug form) instead.
        let registered = format!("{:?}", Metrics::new().registry);
        for (file, text) in [
            (
                "prometheusrule.yaml",
                include_str!("../../charts/heartbeat-operator/templates/prometheusrule.yaml"),
            ),
            (
                "heartbeat-operator.json",
                include_str!("../../charts/heartbeat-operator/dashboards/heartbeat-operator.json"),
            ),
        ] {
            let used = names_used(text);
            assert!(!used.is_empty(), "{file} uses no metric");
            for name in used {
                assert!(
                    registered.contains(&format!("name: {name:?}")),
                    "{file} uses {name}, which the operator does not expose"
                );
            }
        }
    }

    /// Rule: every operator metric the READMEs and the benchmarks' scrapers
    /// name is one the operator exposes (names read from those files).
    #[test]
    fn the_docs_and_benchmarks_name_only_metrics_the_operator_exposes() {
        let registered = format!("{:?}", Metrics::new().registry);
        let ours = |n: &str| {
            n.strip_prefix("heartbeat_operator_")
                .is_some_and(|rest| !rest.is_empty())
                || n.starts_with("heartbeat_member")
                || n.starts_with("heartbeat_monitor_")
        };
        let mut checked = 0;
        for (file, text) in [
            ("README.md", include_str!("../../README.md")),
            ("e2e/README.md", include_str!("../../e2e/README.md")),
            (
                "e2e/bench/failover",
                include_str!("../../e2e/bench/failover"),
            ),
            ("e2e/bench/ingest", include_str!("../../e2e/bench/ingest")),
            (
                "e2e/bench/webhook-latency",
                include_str!("../../e2e/bench/webhook-latency"),
            ),
            (
                "e2e/src/bin/beat-load/sampler.rs",
                include_str!("../../e2e/src/bin/beat-load/sampler.rs"),
            ),
            (
                "e2e/src/bin/beat-load/summary.rs",
                include_str!("../../e2e/src/bin/beat-load/summary.rs"),
            ),
        ] {
            let used: Vec<String> = names_used(text).into_iter().filter(|n| ours(n)).collect();
            assert!(!used.is_empty(), "{file} names no operator metric");
            for name in used {
                assert!(
                    registered.contains(&format!("name: {name:?}")),
                    "{file} names {name}, which the operator does not expose"
                );
                checked += 1;
            }
        }
        assert!(checked > 10, "only {checked} names checked");
    }
}
