//! Keeping the serving certificate current in a running replica: the first
//! one is waited for, then a renewed one (by this replica or another) is
//! loaded without a restart and its CA bundle written into the webhook
//! configuration.

use std::sync::Arc;
use std::time::Duration;

use axum_server::tls_rustls::RustlsConfig;

use super::{CertBundle, Lifetimes};
use crate::args::{CertArgs, WebhookArgs};
use crate::metrics::Metrics;
use crate::webhook::config::{WebhookSettings, apply, webhook_configuration};
use crate::{Error, Result};

/// What the webhook serves with.
pub struct Serving {
    /// The TLS configuration, reloaded in place on renewal.
    pub tls: RustlsConfig,
    /// The CA bundle at start (the API server's and sidecars' trust).
    pub ca_pem: String,
}

/// Where this replica reads its certificate from.
#[derive(Clone)]
struct Source {
    client: kube::Client,
    namespace: String,
    args: CertArgs,
    dns_names: Vec<String>,
    lifetimes: Lifetimes,
}

impl Source {
    /// The serving certificate: made and renewed by the operator, or (with
    /// `--external-cert`) read from the Secret someone else keeps; `None`
    /// while that Secret is not filled yet.
    async fn read(&self) -> Result<Option<CertBundle>> {
        let (ns, secret) = (&self.namespace, &self.args.cert_secret);
        if self.args.external_cert {
            super::load_external(&self.client, ns, secret).await
        } else {
            super::ensure(&self.client, ns, secret, &self.dns_names, &self.lifetimes)
                .await
                .map(Some)
        }
    }
}

/// Waits for the first serving certificate (its Secret in `namespace`),
/// then keeps it current in a task of its own (see [`keep`]).
pub async fn upkeep(
    client: &kube::Client,
    namespace: &str,
    args: &CertArgs,
    webhook: &WebhookArgs,
    metrics: Arc<Metrics>,
) -> Result<Serving> {
    let lifetimes = lifetimes(args)?;
    let source = Source {
        client: client.clone(),
        namespace: namespace.into(),
        args: args.clone(),
        dns_names: webhook.dns_names(namespace),
        lifetimes,
    };
    let bundle = loop {
        if let Some(b) = source.read().await? {
            break b;
        }
        tracing::info!(secret = %args.cert_secret, "waiting for the certificate Secret to be filled (cert-manager)");
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    let tls = RustlsConfig::from_pem(
        bundle.cert_pem.clone().into_bytes(),
        bundle.key_pem.clone().into_bytes(),
    )
    .await
    .map_err(Error::LoadCert)?;
    metrics.cert_loads.inc();
    let ca_pem = bundle.ca_pem.clone();
    let config = webhook
        .manage_webhook_config
        .then(|| webhook.settings(namespace));
    tokio::spawn(keep(source, config, tls.clone(), bundle, metrics));
    Ok(Serving { tls, ca_pem })
}

/// The lifetimes the flags give, refused when they cannot work.
fn lifetimes(args: &CertArgs) -> Result<Lifetimes> {
    let secs = |s: u64| {
        i64::try_from(s)
            .map(jiff::SignedDuration::from_secs)
            .map_err(|_| Error::CertLifetimes(format!("{s} seconds is out of range")))
    };
    let lt = Lifetimes {
        leaf: secs(args.cert_lifetime_seconds)?,
        renew_before: secs(args.cert_renew_before_seconds)?,
        ca: secs(args.ca_lifetime_seconds)?,
        ca_renew_before: secs(args.ca_renew_before_seconds)?,
        ca_overlap: secs(args.ca_overlap_seconds)?,
    };
    let check_every = secs(args.cert_check_seconds)?;
    lt.check(check_every).map_err(Error::CertLifetimes)?;
    Ok(lt)
}

/// Keeps the serving certificate current: a renewed one is loaded, and
/// (with `config`, `--manage-webhook-config`) the CA bundle re-applied. A
/// changed bundle reaches the webhook configuration before the leaf read
/// with it is served (during a CA rotation that leaf may be signed by the
/// CA the bundle just added): until the bundle sticks, the current leaf
/// stays. Each load sets the expiry metrics.
async fn keep(
    source: Source,
    config: Option<WebhookSettings>,
    tls: RustlsConfig,
    mut current: CertBundle,
    metrics: Arc<Metrics>,
) {
    let record = |b: &CertBundle| {
        if b.not_after != jiff::Timestamp::MAX {
            metrics.cert_expiry.set(b.not_after.as_second());
        }
        if let Some(t) = b.ca_not_after {
            metrics.ca_expiry.set(t.as_second());
        }
    };
    record(&current);
    // The CA bundle last written into the configuration: retried until it sticks.
    let mut applied_ca = config.as_ref().map(|_| current.ca_pem.clone());
    loop {
        tokio::time::sleep(Duration::from_secs(source.args.cert_check_seconds)).await;
        let bundle = match source.read().await {
            Ok(Some(b)) => b,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(error = %e, label = e.metric_label(), "certificate check failed; keeping the current one");
                continue;
            }
        };
        // Before any new leaf too: the bundle another write left there
        // (a replica's start) may be older than this one.
        let new_leaf = bundle.cert_pem != current.cert_pem;
        if let Some(settings) = &config
            && (new_leaf || applied_ca.as_deref() != Some(bundle.ca_pem.as_str()))
        {
            let config = webhook_configuration(settings, &bundle.ca_pem);
            match apply(&source.client, &config).await {
                Ok(()) => {
                    tracing::info!(ca_not_after = ?bundle.ca_not_after, "wrote the CA bundle into the webhook configuration");
                    applied_ca = Some(bundle.ca_pem.clone());
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot write the CA bundle into the webhook configuration; keeping the current certificate, retrying");
                    continue;
                }
            }
        }
        if new_leaf {
            if let Err(e) = tls
                .reload_from_pem(
                    bundle.cert_pem.clone().into_bytes(),
                    bundle.key_pem.clone().into_bytes(),
                )
                .await
            {
                tracing::error!(error = %e, "cannot load the renewed certificate");
                continue;
            }
            metrics.cert_loads.inc();
            tracing::info!(not_after = %bundle.not_after, "loaded a renewed serving certificate");
        }
        record(&bundle);
        current = bundle;
    }
}
