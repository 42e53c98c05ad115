//! heartbeat-operator: the admission webhook that injects the heartbeat
//! sidecar, and the leader-elected controller that consumes the beats and
//! writes each monitor's status. `run` joins the webhook, its certificate
//! upkeep, the caches it decides from, the admin server, the leader
//! election and the controller.
#![forbid(unsafe_code)]

pub mod admin;
pub mod args;
pub mod consumer;
pub mod controller;
pub mod error;
pub mod keys;
pub mod leader;
pub mod membership;
pub mod metrics;
pub mod pod_contract;
pub mod webhook;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::post;
use axum_server::tls_rustls::RustlsConfig;
use futures::StreamExt;
use heartbeat_crds::monitor::HeartbeatMonitor;
use kube::api::Api;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::{WatchStreamExt, reflector, watcher};

pub use error::{Error, Result};

use args::Args;
use metrics::Metrics;
use webhook::certs::{self, CertBundle};
use webhook::config::{WebhookSettings, WebhookTarget, apply, webhook_configuration};
use webhook::inject::InjectDefaults;
use webhook::server::{MAX_BODY_BYTES, WebhookState, mutate};

async fn client(args: &Args) -> Result<kube::Client> {
    let config = match &args.kubeconfig {
        Some(path) => {
            let bad = |why: String| Error::Kubeconfig {
                path: path.clone(),
                why,
            };
            let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| bad(e.to_string()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(|e| bad(e.to_string()))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| Error::InferConfig(e.to_string()))?,
    };
    kube::Client::try_from(config).map_err(Error::Client)
}

/// The DNS names (and IP) the serving certificate covers.
fn dns_names(args: &Args) -> Vec<String> {
    let (svc, ns) = (&args.webhook_service, &args.namespace);
    let mut names = vec![
        format!("{svc}.{ns}.svc"),
        format!("{svc}.{ns}.svc.cluster.local"),
    ];
    if let Some(host) = args
        .webhook_url
        .as_deref()
        .and_then(|u| u.strip_prefix("https://"))
        .and_then(|rest| rest.split(['/', ':']).next())
    {
        names.push(host.to_string());
    }
    names
}

fn webhook_settings(args: &Args) -> WebhookSettings {
    WebhookSettings {
        name: args.webhook_config_name.clone(),
        target: match &args.webhook_url {
            Some(url) => WebhookTarget::Url(url.clone()),
            None => WebhookTarget::Service {
                namespace: args.namespace.clone(),
                name: args.webhook_service.clone(),
                port: args.webhook_service_port,
            },
        },
        namespace_label: args.injection_label.clone(),
        operator_namespace: args.namespace.clone(),
        timeout_seconds: args.webhook_timeout_seconds,
    }
}

/// The serving certificate: made and renewed by the operator, or (with
/// `--external-cert`) read from the Secret someone else keeps; `None`
/// while that Secret is not filled yet.
async fn certificate(
    client: &kube::Client,
    args: &Args,
    names: &[String],
) -> Result<Option<CertBundle>> {
    if args.external_cert {
        certs::load_external(client, &args.namespace, &args.cert_secret).await
    } else {
        certs::ensure(client, &args.namespace, &args.cert_secret, names)
            .await
            .map(Some)
    }
}

/// Keeps the serving certificate current: a renewed one (by this replica
/// or another) is loaded without a restart, and the CA bundle re-applied.
/// A changed bundle reaches the webhook configuration before the leaf read
/// with it is served (during a CA rotation that leaf may be signed by the
/// CA the bundle just added): until the bundle sticks, the current leaf
/// stays. Each load sets the expiry metrics.
async fn keep_certificate(
    client: kube::Client,
    args: Args,
    tls: RustlsConfig,
    mut current: CertBundle,
    metrics: Arc<Metrics>,
) {
    let names = dns_names(&args);
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
    let mut applied_ca = args.manage_webhook_config.then(|| current.ca_pem.clone());
    loop {
        tokio::time::sleep(Duration::from_secs(args.cert_check_seconds)).await;
        let bundle = match certificate(&client, &args, &names).await {
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
        if args.manage_webhook_config
            && (new_leaf || applied_ca.as_deref() != Some(bundle.ca_pem.as_str()))
        {
            let config = webhook_configuration(&webhook_settings(&args), &bundle.ca_pem);
            match apply(&client, &config).await {
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

/// The monitors this operator handles (`--monitor-selector`).
fn monitor_watch(args: &Args) -> watcher::Config {
    let wc = watcher::Config::default();
    if args.monitor_selector.is_empty() {
        wc
    } else {
        wc.labels(&args.monitor_selector)
    }
}

/// The controller's settings from the flags.
fn controller_settings(args: &Args, master: keys::Master) -> controller::ControllerSettings {
    controller::ControllerSettings {
        master,
        master_secret: format!("{}/{}", args.namespace, args.signing_secret),
        monitor_selector: args.monitor_selector.clone(),
        consumer_group: args.consumer_group.clone(),
        checkpoint_topic: Some(args.checkpoint_topic.clone()).filter(|t| !t.is_empty()),
        identity: args.identity(),
        limits: membership::table::Limits {
            history: jiff::SignedDuration::from_secs(args.history_seconds as i64),
            seen_retention: jiff::SignedDuration::from_secs(args.seen_retention_seconds as i64),
            max_seen: args.max_seen_programs,
            sidecar_version: env!("CARGO_PKG_VERSION").into(),
        },
        member_metrics_cap: args.member_metrics_cap,
        allowed_brokers: consumer::BrokerAllowlist(args.allowed_brokers.clone()),
        consumer_secret: args
            .consumer_secret
            .clone()
            .map(|name| (args.namespace.clone(), name)),
        grant: controller::secrets::Grant {
            cluster_role: args.secrets_cluster_role.clone(),
            service_account: format!("{}:{}", args.namespace, args.service_account),
        },
    }
}

/// Runs the operator until SIGTERM or SIGINT.
pub async fn run(args: Args) -> Result<()> {
    let client = client(&args).await?;
    let metrics = Arc::new(Metrics::new());
    let ready = Arc::new(AtomicBool::new(false));
    let admin = tokio::spawn(admin::serve(
        args.admin_addr,
        admin::AdminState {
            metrics: metrics.clone(),
            ready: ready.clone(),
        },
    ));

    // What the webhook decides from: the monitors, cached. Secrets are
    // never listed or watched (the monitor's status says whether its
    // broker Secret exists).
    let (monitors, monitor_writer) = reflector::store();
    let monitor_stream = reflector(
        monitor_writer,
        watcher(
            Api::<HeartbeatMonitor>::all(client.clone()),
            monitor_watch(&args),
        ),
    )
    .default_backoff()
    .applied_objects();
    tokio::spawn(monitor_stream.for_each(|r| async move {
        if let Err(e) = r {
            tracing::warn!(error = %e, "HeartbeatMonitor watch");
        }
    }));

    let bundle = loop {
        if let Some(b) = certificate(&client, &args, &dns_names(&args)).await? {
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
    tokio::spawn(keep_certificate(
        client.clone(),
        args.clone(),
        tls.clone(),
        bundle,
        metrics.clone(),
    ));

    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "heartbeat-operator".into(),
            instance: std::env::var("POD_NAME").ok(),
        },
    );
    let state = Arc::new(WebhookState {
        monitors: monitors.clone(),
        defaults: InjectDefaults {
            image: args.sidecar_image.clone(),
            sidecar_version: env!("CARGO_PKG_VERSION").into(),
            resources: InjectDefaults::default_resources(),
            native_sidecar: !args.plain_container_sidecar,
            operator_namespace: args.namespace.clone(),
            policy: args.sidecar_policy(),
            signing_key_url: args.signing_key_url(),
            // A direct URL is served with the webhook's certificate.
            signing_key_ca: args.signing_key_url.as_ref().map(|_| ca_pem.clone()),
        },
        metrics: metrics.clone(),
        recorder: Some(recorder),
        ready: ready.clone(),
        budgets: Default::default(),
    });
    let app = Router::new()
        .route("/mutate", post(mutate))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state);
    let handle = axum_server::Handle::new();
    let tls_for_keys = tls.clone();
    let server = webhook::listener::bind(args.webhook_addr, tls)
        .handle(handle.clone())
        .serve(webhook::listener::bounded(app, args.webhook_timeout_seconds).into_make_service());
    let webhook_addr = args.webhook_addr;
    let serving = tokio::spawn(async move {
        server.await.map_err(|source| Error::Serve {
            what: "webhook",
            addr: webhook_addr,
            source,
        })
    });

    // Pod signing keys: every replica reads the masters and answers.
    let master = keys::Master::default();
    tokio::spawn(keys::master::upkeep(
        client.clone(),
        args.namespace.clone(),
        args.signing_secret.clone(),
        master.clone(),
        metrics.clone(),
    ));
    let key_app = Router::new()
        .route(
            heartbeat_crds::signing::KEY_PATH,
            post(keys::endpoint::pod_key_handler),
        )
        .layer(DefaultBodyLimit::max(keys::endpoint::MAX_BODY_BYTES))
        .with_state(Arc::new(keys::endpoint::KeyState {
            client: client.clone(),
            master: master.clone(),
            metrics: metrics.clone(),
            refresh_seconds: args.signing_key_refresh_seconds,
        }));
    let key_server = webhook::listener::bind(args.keys_addr, tls_for_keys)
        .handle(handle.clone())
        .serve(
            heartbeat_listener_limits::timeout::bounded(key_app, keys::endpoint::REQUEST_TIMEOUT)
                .into_make_service(),
        );
    let keys_addr = args.keys_addr;
    let key_serving = tokio::spawn(async move {
        key_server.await.map_err(|source| Error::Serve {
            what: "pod keys",
            addr: keys_addr,
            source,
        })
    });
    // Ready once the caches are filled: before that every pod would look
    // unmatched. Only then does the API server learn of the webhook.
    let m = monitors.clone();
    let (ready_flag, client2, args2) = (ready.clone(), client.clone(), args.clone());
    tokio::spawn(async move {
        if m.wait_until_ready().await.is_err() {
            return;
        }
        if args2.manage_webhook_config {
            let config = webhook_configuration(&webhook_settings(&args2), &ca_pem);
            while let Err(e) = apply(&client2, &config).await {
                tracing::error!(error = %e, "cannot write the webhook configuration; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
        ready_flag.store(true, Ordering::Relaxed);
        tracing::info!("caches synced; ready");
    });
    tracing::info!(addr = %args.webhook_addr, keys = %args.keys_addr, admin = %args.admin_addr, "webhook serving");
    let election = leader::join(client.clone(), &args).await?;
    let (shutdown, shutting_down) = tokio::sync::watch::channel(false);
    let controller = tokio::spawn(controller::lead(
        client.clone(),
        controller_settings(&args, master),
        metrics.clone(),
        election.leading.clone(),
        shutting_down,
    ));

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|source| Error::Serve {
            what: "signals",
            addr: args.admin_addr,
            source,
        })?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
        r = serving => return r.unwrap_or_else(|e| Err(Error::Task(e.to_string()))),
        r = key_serving => return r.unwrap_or_else(|e| Err(Error::Task(e.to_string()))),
        r = admin => return r.unwrap_or_else(|e| Err(Error::Task(e.to_string()))),
    }
    // Out of the Service's endpoints first, then finish what is in flight:
    // a request cut off would admit a pod without its sidecar.
    tracing::info!("stopping: not ready, draining requests");
    ready.store(false, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    handle.graceful_shutdown(Some(Duration::from_secs(5)));
    let _ = tokio::time::timeout(Duration::from_secs(6), serving_wait(handle)).await;
    // Stop writing first, then hand the Lease over rather than let it expire.
    let _ = shutdown.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), controller).await;
    election.resign().await;
    Ok(())
}

/// Waits until the server has no connection left.
async fn serving_wait(handle: axum_server::Handle<std::net::SocketAddr>) {
    while handle.connection_count() > 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
