//! Starting the webhook: `/mutate` on its bounded HTTPS listener with the
//! serving certificate, deciding from the shared monitor cache. Readiness
//! waits for that cache (before it is synced every pod would look
//! unmatched); only then is the webhook configuration written with the CA
//! (`--manage-webhook-config`), so the API server learns of the webhook
//! when it can answer, and `/readyz` says ready.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::post;
use kube::runtime::events::{Recorder, Reporter};

use super::certs::Serving;
use super::config::{apply, webhook_configuration};
use super::inject::InjectDefaults;
use super::listener::{self, Running};
use super::server::{MAX_BODY_BYTES, WebhookState, mutate};
use crate::admin::AdminState;
use crate::args::WebhookArgs;
use crate::caches::Caches;

/// Starts the webhook of an operator in `namespace`, and its readiness.
pub fn serve(
    client: &kube::Client,
    namespace: &str,
    args: &WebhookArgs,
    defaults: InjectDefaults,
    caches: &Caches,
    serving: &Serving,
    admin: &AdminState,
) -> Running {
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "heartbeat-operator".into(),
            instance: std::env::var("POD_NAME").ok(),
        },
    );
    let state = Arc::new(WebhookState {
        monitors: caches.monitors.clone(),
        defaults,
        metrics: admin.metrics.clone(),
        recorder: Some(recorder),
        ready: admin.ready.clone(),
        budgets: Default::default(),
    });
    let app = Router::new()
        .route("/mutate", post(mutate))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state);
    let running = Running::start(
        "webhook",
        args.webhook_addr,
        serving.tls.clone(),
        listener::bounded(app, args.webhook_timeout_seconds),
    );
    let config = args
        .manage_webhook_config
        .then(|| webhook_configuration(&args.settings(namespace), &serving.ca_pem));
    let (synced, client, ready) = (caches.synced.clone(), client.clone(), admin.ready.clone());
    tokio::spawn(async move {
        if !synced.wait().await {
            return;
        }
        if let Some(config) = config {
            while let Err(e) = apply(&client, &config).await {
                tracing::error!(error = %e, "cannot write the webhook configuration; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
        ready.store(true, Ordering::Relaxed);
        tracing::info!("caches synced; ready");
    });
    running
}
