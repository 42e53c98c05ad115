//! The stack's alerting from a test: the chart's alert rules loaded into
//! its Prometheus for one release, PromQL queries, Alertmanager's alerts,
//! and the webhook receiver Alertmanager sends to (on the host address).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::Stack;
use crate::stack::{run, run_ok, stack_command};

/// The chart's rules for a release, loaded into the stack's Prometheus
/// until dropped (`e2e/stack alert-rules`).
pub struct AlertRules<'a> {
    stack: &'a Stack,
    release: String,
    namespace: String,
}

impl Drop for AlertRules<'_> {
    fn drop(&mut self) {
        let _ = run(stack_command(self.stack.layout.root()).args([
            "alert-rules",
            &self.release,
            &self.namespace,
            "--remove",
        ]));
    }
}

/// `e2e/stack alert-rules RELEASE NAMESPACE [--set ...] [extra]`.
fn alert_rules_command(
    stack: &Stack,
    release: &str,
    namespace: &str,
    sets: &[&str],
    extra: &[&str],
) -> String {
    let mut cmd = stack_command(stack.layout.root());
    cmd.args(["alert-rules", release, namespace]).args(extra);
    for set in sets {
        cmd.args(["--set", set]);
    }
    run_ok(&mut cmd)
}

impl Stack {
    /// Loads the chart's alert rules for `release` in `namespace` (chart
    /// values `sets`, e.g. a short `prometheusRule.staleFor`).
    pub fn alert_rules(&self, release: &str, namespace: &str, sets: &[&str]) -> AlertRules<'_> {
        alert_rules_command(self, release, namespace, sets, &[]);
        AlertRules {
            stack: self,
            release: release.to_string(),
            namespace: namespace.to_string(),
        }
    }

    /// The rule file the chart renders for `release` in `namespace`, not loaded.
    pub fn render_alert_rules(&self, release: &str, namespace: &str) -> String {
        alert_rules_command(self, release, namespace, &[], &["--print"])
    }

    fn alerting_url(&self, which: Option<&String>, key: &str) -> String {
        which
            .cloned()
            .unwrap_or_else(|| panic!("{} has no {key}", self.layout.stack_env().display()))
    }

    /// The `data.result` of an instant PromQL query, or Prometheus's error.
    pub async fn prometheus_query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let base = self.alerting_url(self.env.prometheus_url.as_ref(), "PROMETHEUS_URL");
        let url =
            reqwest::Url::parse_with_params(&format!("{base}/api/v1/query"), [("query", expr)])
                .map_err(|e| e.to_string())?;
        let body = get_json(url).await?;
        if body["status"] != "success" {
            return Err(format!("{expr}: {body}"));
        }
        Ok(body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// The alerts Alertmanager holds that carry every `(label, value)`.
    pub async fn alertmanager_alerts(&self, labels: &[(&str, &str)]) -> Result<Vec<Value>, String> {
        let base = self.alerting_url(self.env.alertmanager_url.as_ref(), "ALERTMANAGER_URL");
        let filters: Vec<(&str, String)> = labels
            .iter()
            .map(|(k, v)| ("filter", format!("{k}={}", Value::from(*v))))
            .collect();
        let url = reqwest::Url::parse_with_params(&format!("{base}/api/v2/alerts"), filters)
            .map_err(|e| e.to_string())?;
        Ok(get_json(url).await?.as_array().cloned().unwrap_or_default())
    }
}

async fn get_json(url: reqwest::Url) -> Result<Value, String> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    let resp = client
        .get(url.clone())
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    resp.json().await.map_err(|e| format!("{url}: {e}"))
}

/// Whether `alert` (an Alertmanager alert or webhook entry) carries every label.
pub fn has_labels(alert: &Value, labels: &[(&str, &str)]) -> bool {
    labels
        .iter()
        .all(|(k, v)| alert["labels"][*k].as_str() == Some(*v))
}

/// The webhook receiver Alertmanager sends to: each alert of each
/// notification, with its `status` (firing or resolved). One per stack at a
/// time (Alertmanager's configuration names its address).
pub struct AlertReceiver {
    rx: mpsc::UnboundedReceiver<Value>,
    received: Vec<Value>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for AlertReceiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl AlertReceiver {
    /// Listens where the stack's Alertmanager sends (`HB_ALERT_RECEIVER`).
    pub async fn bind(stack: &Stack) -> AlertReceiver {
        let url = stack.alerting_url(stack.env.alert_receiver.as_ref(), "HB_ALERT_RECEIVER");
        let addr: SocketAddr = reqwest::Url::parse(&url)
            .ok()
            .and_then(|u| Some(format!("{}:{}", u.host_str()?, u.port()?)))
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("HB_ALERT_RECEIVER is no http://ip:port/ URL: {url}"));
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("binding the alert receiver on {addr}: {e}"));
        let (tx, rx) = mpsc::unbounded_channel();
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let tx = tx.clone();
                let service = service_fn(move |req: Request<Incoming>| {
                    let tx = tx.clone();
                    async move {
                        let body = req.into_body().collect().await?.to_bytes();
                        let note: Value = serde_json::from_slice(&body).unwrap_or_default();
                        for alert in note["alerts"].as_array().into_iter().flatten() {
                            let _ = tx.send(alert.clone());
                        }
                        Ok::<_, hyper::Error>(Response::new(String::new()))
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        AlertReceiver {
            rx,
            received: Vec::new(),
            server,
        }
    }

    /// Every alert received so far (by the `wait_for`s).
    pub fn received(&self) -> &[Value] {
        &self.received
    }

    /// Waits for an alert with `status` carrying every `(label, value)`,
    /// received since the receiver was bound.
    pub async fn wait_for(
        &mut self,
        status: &str,
        labels: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<Value, String> {
        let wanted = |a: &Value| a["status"] == status && has_labels(a, labels);
        if let Some(a) = self.received.iter().find(|a| wanted(a)) {
            return Ok(a.clone());
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.rx.recv()).await {
                Ok(Some(alert)) => {
                    self.received.push(alert.clone());
                    if wanted(&alert) {
                        return Ok(alert);
                    }
                }
                _ => {
                    return Err(format!(
                        "no {status} alert with {labels:?} within {timeout:?}; received: {:#?}",
                        self.received
                    ));
                }
            }
        }
    }
}
