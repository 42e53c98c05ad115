//! The stack's alerting, as a production install runs it: Prometheus finds
//! the operator's pods through the API server the way the chart's
//! ServiceMonitor says (its labels, its `admin` port, `honorLabels`), loads
//! the alert rules `helm template` renders from the chart's PrometheusRule,
//! and sends alerts to Alertmanager, which routes the chart's `alertLabels`
//! to a webhook receiver the tests run on the host address.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

use crate::Error;
use crate::components::{Tools, port};
use crate::process::run_checked;

/// The chart, in the repository.
pub const CHART: &str = "charts/heartbeat-operator";
/// The chart's template of alert rules.
const RULE_TEMPLATE: &str = "templates/prometheusrule.yaml";
/// The chart's selector label and value (its `hb.selectorLabels`), which
/// its ServiceMonitor selects the Service by.
const SERVICE_LABEL: (&str, &str) = ("app.kubernetes.io/name", "heartbeat-operator");
/// The Service port the ServiceMonitor scrapes.
const METRICS_PORT_NAME: &str = "admin";
/// How often Prometheus scrapes and evaluates rules: short, so a test sees
/// an alert within seconds of its `for:`.
const INTERVAL: &str = "2s";

/// Renders the chart's PrometheusRule for `release` in `namespace` (with
/// `sets`, e.g. a shorter `prometheusRule.staleFor`) and returns its
/// `spec`, which is a Prometheus rule file.
pub fn render_rules(
    tools: &Tools,
    release: &str,
    namespace: &str,
    sets: &[String],
) -> Result<String, Error> {
    let mut cmd = Command::new(tools.tool("helm"));
    cmd.args(["template", release])
        .arg(tools.repo.join(CHART))
        .args(["--namespace", namespace, "--show-only", RULE_TEMPLATE])
        .args(["--set", "prometheusRule.enabled=true"]);
    for set in sets {
        cmd.args(["--set", set]);
    }
    let rendered = run_checked(&mut cmd, "helm template (the chart's PrometheusRule)")?;
    rule_file(&rendered).map_err(|why| Error::Command {
        what: "reading the chart's PrometheusRule".into(),
        output: why,
    })
}

/// The `spec` of a rendered PrometheusRule, as a rule file's text.
fn rule_file(rendered: &str) -> Result<String, String> {
    let doc: serde_yaml::Value = serde_yaml::from_str(rendered).map_err(|e| e.to_string())?;
    let spec = doc
        .get("spec")
        .filter(|s| s.get("groups").is_some())
        .ok_or("no spec.groups in the rendered PrometheusRule")?;
    serde_yaml::to_string(spec).map_err(|e| e.to_string())
}

/// The labels every alerting rule of `rules` carries (the chart's
/// `alertLabels`): what Alertmanager routes by.
pub fn alert_labels(rules: &str) -> Result<BTreeMap<String, String>, String> {
    let doc: serde_yaml::Value = serde_yaml::from_str(rules).map_err(|e| e.to_string())?;
    let mut common: Option<BTreeMap<String, String>> = None;
    let groups = doc.get("groups").and_then(|g| g.as_sequence());
    for rule in groups.into_iter().flatten().flat_map(|g| {
        g.get("rules")
            .and_then(|r| r.as_sequence())
            .into_iter()
            .flatten()
    }) {
        if rule.get("alert").is_none() {
            continue;
        }
        let labels: BTreeMap<String, String> = rule
            .get("labels")
            .map(|l| serde_yaml::from_value(l.clone()))
            .transpose()
            .map_err(|e| e.to_string())?
            .unwrap_or_default();
        common = Some(match common {
            None => labels,
            Some(c) => c
                .into_iter()
                .filter(|(k, v)| labels.get(k) == Some(v))
                .collect(),
        });
    }
    match common {
        Some(c) if !c.is_empty() => Ok(c),
        _ => {
            Err("the chart's alerts share no label to route by (prometheusRule.alertLabels)".into())
        }
    }
}

/// `prometheus.yml`: the operator's pods from the API server (EndpointSlices
/// of Services labelled as the chart labels them, their `admin` port),
/// every rule file in `rules_dir`, and the stack's Alertmanager.
pub fn prometheus_config(kubeconfig: &Path, rules_dir: &Path, alertmanager: &str) -> String {
    let (label, value) = SERVICE_LABEL;
    let service_label = format!(
        "__meta_kubernetes_service_label_{}",
        label.replace(['.', '/', '-'], "_")
    );
    let config = json!({
        "global": {"scrape_interval": INTERVAL, "evaluation_interval": INTERVAL},
        "rule_files": [rules_dir.join("*.yml").display().to_string()],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
        "scrape_configs": [{
            "job_name": "heartbeat-operator",
            // As the chart's ServiceMonitor: the metrics' own `namespace`
            // (the monitor's) wins over the target's (the operator's).
            "honor_labels": true,
            "kubernetes_sd_configs": [{"role": "endpointslice", "kubeconfig_file": kubeconfig.display().to_string()}],
            "relabel_configs": [
                {"source_labels": [service_label], "regex": value, "action": "keep"},
                {"source_labels": ["__meta_kubernetes_endpointslice_port_name"], "regex": METRICS_PORT_NAME, "action": "keep"},
                {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
                {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
                {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "service"},
            ],
        }],
    });
    yaml(&config)
}

/// `alertmanager.yml`: alerts carrying `labels` go to the webhook at
/// `receiver` (resolutions too), grouped per monitor; the rest are dropped.
pub fn alertmanager_config(labels: &BTreeMap<String, String>, receiver: &str) -> String {
    let matchers: Vec<String> = labels
        .iter()
        // A JSON string is a valid quoted matcher value.
        .map(|(k, v)| format!("{k}={}", serde_json::Value::from(v.as_str())))
        .collect();
    let config = json!({
        "route": {
            "receiver": "discard",
            "group_by": ["alertname", "namespace", "monitor"],
            "group_wait": "1s",
            "group_interval": "2s",
            "repeat_interval": "1h",
            "routes": [{"receiver": "webhook", "matchers": matchers}],
        },
        "receivers": [
            {"name": "discard"},
            {"name": "webhook", "webhook_configs": [{"url": receiver, "send_resolved": true}]},
        ],
    });
    yaml(&config)
}

fn yaml(value: &serde_json::Value) -> String {
    // A JSON value always serialises.
    serde_yaml::to_string(value).unwrap_or_default()
}

/// The webhook receiver's URL: the tests listen on the host address.
pub fn receiver_url(host_addr: std::net::Ipv4Addr) -> String {
    format!("http://{host_addr}:{}/alerts", port::ALERT_RECEIVER)
}

/// Whether `name` is a DNS label (what release and namespace names are),
/// so it is safe in a file name.
pub fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// A release's rule file in `rules_dir`.
pub fn rules_path(rules_dir: &Path, release: &str, namespace: &str) -> PathBuf {
    rules_dir.join(format!("{namespace}.{release}.yml"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RENDERED: &str = "---\n# Source: x\napiVersion: monitoring.coreos.com/v1\nkind: PrometheusRule\n\
        metadata: {name: r}\nspec:\n  groups:\n  - name: heartbeat\n    rules:\n\
        \x20   - alert: A\n      expr: up == 0\n      labels: {severity: page, team: x}\n\
        \x20   - alert: B\n      expr: up == 1\n      labels: {severity: page}\n\
        \x20   - record: r\n      expr: up\n";

    #[test]
    fn the_rule_file_is_the_spec_and_routes_by_the_labels_all_alerts_share() {
        let rules = rule_file(RENDERED).expect("spec");
        assert!(rules.starts_with("groups:"), "{rules}");
        let labels = alert_labels(&rules).expect("labels");
        assert_eq!(
            labels,
            BTreeMap::from([("severity".to_string(), "page".to_string())])
        );
        let am = alertmanager_config(&labels, "http://10.0.0.1:1/alerts");
        assert!(am.contains("severity=\"page\""), "{am}");
        assert!(rule_file("kind: PrometheusRule\n").is_err());
        assert!(is_dns_label("heartbeat-system") && is_dns_label("r1"));
        for bad in ["", "../x", "a/b", "-a", "A", &"a".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad:?}");
        }
        assert!(alert_labels("groups: []\n").is_err());
    }

    #[test]
    fn prometheus_keeps_the_charts_service_and_port_and_honours_metric_labels() {
        let cfg = prometheus_config(Path::new("/k"), Path::new("/r"), "10.0.0.2:9095");
        for want in [
            "__meta_kubernetes_service_label_app_kubernetes_io_name",
            "regex: heartbeat-operator",
            "regex: admin",
            "honor_labels: true",
            "/r/*.yml",
            "10.0.0.2:9095",
        ] {
            assert!(cfg.contains(want), "{want} missing in:\n{cfg}");
        }
    }
}
