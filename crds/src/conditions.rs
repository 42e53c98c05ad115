//! The conditions a HeartbeatMonitor's status carries: their types,
//! statuses and reasons, written once for the operator that sets them and
//! for the printer columns, tools and tests that read them.

/// The topic is being read (or why not).
pub const READY: &str = "Ready";
/// No member is Stale (or which are, or why that cannot be said).
pub const HEALTHY: &str = "Healthy";
/// Every covered pod has the sidecar.
pub const INJECTED: &str = "Injected";
/// Every condition type, in the order status lists them.
pub const TYPES: [&str; 3] = [READY, HEALTHY, INJECTED];

/// A condition's `status`.
pub const TRUE: &str = "True";
pub const FALSE: &str = "False";
pub const UNKNOWN: &str = "Unknown";

/// Reasons, by the condition that carries them.
pub mod reason {
    // Ready, True.
    pub const READING: &str = "Reading";
    pub const READING_WITH_WARNINGS: &str = "ReadingWithWarnings";
    // Ready, False: reading the topic back, or unable to read it.
    pub const CATCHING_UP: &str = "CatchingUp";
    pub const BROKER_UNAVAILABLE: &str = "BrokerUnavailable";
    pub const SECRET_MISSING: &str = "SecretMissing";
    pub const SECRET_FORBIDDEN: &str = "SecretForbidden";
    pub const SECRET_INVALID: &str = "SecretInvalid";
    pub const BROKER_NOT_ALLOWED: &str = "BrokerNotAllowed";
    pub const CONSUMER_SECRET_UNAVAILABLE: &str = "ConsumerSecretUnavailable";
    pub const TOPIC_MISSING: &str = "TopicMissing";
    pub const INVALID_BROKER_SETTINGS: &str = "InvalidBrokerSettings";
    pub const SIGNING_KEY_UNAVAILABLE: &str = "SigningKeyUnavailable";
    // Healthy.
    pub const NO_MEMBER_STALE: &str = "NoMemberStale";
    pub const MEMBERS_STALE: &str = "MembersStale";
    pub const NOT_READING: &str = "NotReading";
    pub const SUSPENDED: &str = "Suspended";
    pub const IN_MAINTENANCE: &str = "InMaintenance";
    // Injected.
    pub const ALL_INJECTED: &str = "AllInjected";
    pub const PODS_WITHOUT_SIDECAR: &str = "PodsWithoutSidecar";
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::crd;

    /// Rule: the printer columns that show conditions name the types the
    /// operator sets, so `kubectl get` shows what status holds.
    #[test]
    fn the_printer_columns_show_the_condition_types_status_carries() {
        let crd = serde_json::to_value(crd()).expect("crd");
        let columns: Vec<String> = crd["spec"]["versions"]
            .as_array()
            .expect("versions")
            .iter()
            .flat_map(|v| {
                v["additionalPrinterColumns"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .filter_map(|c| c["jsonPath"].as_str().map(str::to_string))
            .filter(|p| p.contains(".status.conditions"))
            .collect();
        assert!(!columns.is_empty(), "no condition column");
        for path in &columns {
            assert!(
                TYPES
                    .iter()
                    .any(|t| path.contains(&format!("@.type==\"{t}\""))),
                "column {path} shows no condition type status carries"
            );
        }
        for t in [READY, HEALTHY] {
            assert!(
                columns
                    .iter()
                    .any(|p| p.contains(&format!("@.type==\"{t}\""))),
                "no column shows {t}"
            );
        }
    }
}
