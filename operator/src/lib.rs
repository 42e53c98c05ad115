//! heartbeat-operator: the admission webhook that injects the heartbeat
//! sidecar, and the leader-elected controller that consumes the beats and
//! writes each monitor's status. `run` starts the parts (the admin server,
//! the caches they share, the certificate's upkeep, the webhook, the pod
//! key endpoint, the leader election and the controller) and `shutdown`
//! stops them.
//!
//! Without the `runtime` feature the crate is its pure modules alone, the
//! ones the fuzz targets drive (see Cargo.toml).
#![forbid(unsafe_code)]

pub mod membership;
pub mod pod_contract;

#[cfg(feature = "runtime")]
pub mod admin;
#[cfg(feature = "runtime")]
pub mod args;
#[cfg(feature = "runtime")]
pub mod caches;
#[cfg(feature = "runtime")]
pub mod consumer;
#[cfg(feature = "runtime")]
pub mod controller;
#[cfg(feature = "runtime")]
pub mod error;
#[cfg(feature = "runtime")]
pub mod keys;
#[cfg(feature = "runtime")]
pub mod leader;
#[cfg(feature = "runtime")]
pub mod metrics;
#[cfg(feature = "runtime")]
pub mod shutdown;
#[cfg(feature = "runtime")]
pub mod synced;
#[cfg(feature = "runtime")]
pub mod webhook;

/// The pure parts of `controller` and `webhook`, at the same paths.
#[cfg(not(feature = "runtime"))]
pub mod controller {
    pub mod status;
}
#[cfg(not(feature = "runtime"))]
pub mod webhook {
    pub mod inject;
}

#[cfg(feature = "runtime")]
pub use error::{Error, Result};

#[cfg(feature = "runtime")]
use args::Args;
#[cfg(feature = "runtime")]
use caches::Caches;
#[cfg(feature = "runtime")]
use webhook::certs;

#[cfg(feature = "runtime")]
async fn client(kubeconfig: Option<&std::path::Path>) -> Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let bad = |why: String| Error::Kubeconfig {
                path: path.into(),
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

/// Runs the operator until SIGTERM or SIGINT: the client, the shared
/// caches, then each part with its own flags, then waits to stop them.
#[cfg(feature = "runtime")]
pub async fn run(args: Args) -> Result<()> {
    let client = client(args.kubeconfig.as_deref()).await?;
    let admin = admin::AdminState::default();
    let admin_server = tokio::spawn(admin::serve(args.admin_addr, admin.clone()));
    let caches = Caches::start(client.clone(), &args.caches);
    let ns = &args.namespace;
    let serving = certs::upkeep(
        &client,
        ns,
        &args.certificates,
        &args.webhook,
        admin.metrics.clone(),
    )
    .await?;
    let defaults = args.inject_defaults(&serving.ca_pem);
    let webhook = webhook::serve(
        &client,
        ns,
        &args.webhook,
        defaults,
        &caches,
        &serving,
        &admin,
    );
    let master = keys::Master::default();
    let keys = keys::serve(
        &client,
        ns,
        &args.keys,
        &serving,
        &master,
        admin.metrics.clone(),
    );
    tracing::info!(addr = %args.webhook.webhook_addr, keys = %args.keys.keys_addr, admin = %args.admin_addr, "webhook serving");
    let election = leader::join(client.clone(), ns, &args.leader).await?;
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let controller = tokio::spawn(controller::lead(
        client,
        args.controller_settings(master),
        admin.metrics,
        caches,
        election.leading.clone(),
        stopping,
    ));
    shutdown::Parts {
        ready: admin.ready,
        admin: admin_server,
        webhook,
        keys,
        controller: (controller, stop),
        election,
    }
    .until_stopped()
    .await
}
