//! The MutatingWebhookConfiguration, as SPEC has it: `failurePolicy:
//! Ignore` (an operator outage never blocks pod creation), a short timeout,
//! `sideEffects: None`, `reinvocationPolicy: IfNeeded`, only namespaces
//! labelled for injection, never the operator's own namespace or
//! kube-system. Built pure; applied with server-side apply when the
//! operator manages it (`--manage-webhook-config`).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, ServiceReference,
    WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use kube::api::{Api, ObjectMeta, Patch, PatchParams};

use crate::{Error, Result};

/// The field manager of everything the operator applies.
pub const FIELD_MANAGER: &str = "heartbeat-operator";
/// The webhook's name inside the configuration.
pub const WEBHOOK_NAME: &str = "inject.heartbeat.dev";

/// Where the API server reaches the webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookTarget {
    /// A URL (an operator run outside the cluster network, by hand or by a test).
    Url(String),
    /// A Service `namespace/name` on `port` (the in-cluster install).
    Service {
        namespace: String,
        name: String,
        port: i32,
    },
}

/// How the configuration is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSettings {
    /// The configuration's name.
    pub name: String,
    pub target: WebhookTarget,
    /// Namespaces with this label (key, value) are injected.
    pub namespace_label: (String, String),
    /// Never injected: the operator's own namespace.
    pub operator_namespace: String,
    pub timeout_seconds: i32,
}

/// The configuration for `settings` with the CA that signed the serving certificate.
pub fn webhook_configuration(
    settings: &WebhookSettings,
    ca_pem: &str,
) -> MutatingWebhookConfiguration {
    let client_config = match &settings.target {
        WebhookTarget::Url(url) => WebhookClientConfig {
            url: Some(url.clone()),
            ca_bundle: Some(ByteString(ca_pem.as_bytes().to_vec())),
            service: None,
        },
        WebhookTarget::Service {
            namespace,
            name,
            port,
        } => WebhookClientConfig {
            url: None,
            ca_bundle: Some(ByteString(ca_pem.as_bytes().to_vec())),
            service: Some(ServiceReference {
                namespace: namespace.clone(),
                name: name.clone(),
                path: Some("/mutate".into()),
                port: Some(*port),
            }),
        },
    };
    let (key, value) = settings.namespace_label.clone();
    MutatingWebhookConfiguration {
        metadata: ObjectMeta {
            name: Some(settings.name.clone()),
            ..Default::default()
        },
        webhooks: Some(vec![MutatingWebhook {
            name: WEBHOOK_NAME.into(),
            admission_review_versions: vec!["v1".into()],
            client_config,
            failure_policy: Some("Ignore".into()),
            // Events (InjectionSkipped) are its only side effect, and none
            // is written for a dry run.
            side_effects: "NoneOnDryRun".into(),
            timeout_seconds: Some(settings.timeout_seconds),
            reinvocation_policy: Some("IfNeeded".into()),
            match_policy: Some("Equivalent".into()),
            namespace_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(key, value)])),
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: "kubernetes.io/metadata.name".into(),
                    operator: "NotIn".into(),
                    values: Some(vec![
                        settings.operator_namespace.clone(),
                        "kube-system".into(),
                    ]),
                }]),
            }),
            rules: Some(vec![RuleWithOperations {
                api_groups: Some(vec![String::new()]),
                api_versions: Some(vec!["v1".into()]),
                operations: Some(vec!["CREATE".into()]),
                resources: Some(vec!["pods".into()]),
                scope: Some("Namespaced".into()),
            }]),
            ..Default::default()
        }]),
    }
}

/// Applies the configuration (server-side apply, this operator's fields).
pub async fn apply(client: &kube::Client, config: &MutatingWebhookConfiguration) -> Result<()> {
    let name = config.metadata.name.clone().unwrap_or_default();
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(config),
    )
    .await
    .map(drop)
    .map_err(|source| Error::ApplyWebhookConfig { name, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_never_blocks_pods_and_skips_the_operators_namespace() {
        let settings = WebhookSettings {
            name: "heartbeat-operator".into(),
            target: WebhookTarget::Service {
                namespace: "heartbeat-system".into(),
                name: "heartbeat-operator".into(),
                port: 443,
            },
            namespace_label: ("heartbeat.dev/injection".into(), "enabled".into()),
            operator_namespace: "heartbeat-system".into(),
            timeout_seconds: 5,
        };
        let c = webhook_configuration(&settings, "PEM");
        let w = &c.webhooks.expect("webhooks")[0];
        assert_eq!(w.failure_policy.as_deref(), Some("Ignore"));
        assert_eq!(w.side_effects, "NoneOnDryRun");
        assert_eq!(w.reinvocation_policy.as_deref(), Some("IfNeeded"));
        assert_eq!(w.timeout_seconds, Some(5));
        assert_eq!(
            w.client_config.ca_bundle.as_ref().map(|b| b.0.as_slice()),
            Some(&b"PEM"[..])
        );
        let sel = w.namespace_selector.as_ref().expect("selector");
        assert_eq!(
            sel.match_labels
                .as_ref()
                .and_then(|l| l.get("heartbeat.dev/injection"))
                .map(String::as_str),
            Some("enabled")
        );
        let excluded = sel.match_expressions.as_ref().expect("expressions")[0]
            .values
            .clone()
            .expect("values");
        assert_eq!(excluded, ["heartbeat-system", "kube-system"]);
        let rule = &w.rules.as_ref().expect("rules")[0];
        assert_eq!(
            rule.operations.as_deref(),
            Some(&["CREATE".to_string()][..])
        );
        assert_eq!(rule.resources.as_deref(), Some(&["pods".to_string()][..]));
    }
}
