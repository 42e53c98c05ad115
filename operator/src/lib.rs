//! heartbeat-operator: the admission webhook that injects the heartbeat
//! sidecar, and the leader-elected controller that consumes the beats and
//! writes each monitor's status. `run` starts the parts (the admin server,
//! the caches they share, the certificate's upkeep, the webhook, the pod
//! key endpoint, the leader election and the controller) and `shutdown`
//! stops them.
#![forbid(unsafe_code)]

pub mod admin;
pub mod args;
pub mod caches;
pub mod consumer;
pub mod controller;
pub mod error;
pub mod keys;
pub mod leader;
pub mod membership;
pub mod metrics;
pub mod pod_contract;
pub mod shutdown;
pub mod synced;
pub mod webhook;

pub use error::{Error, Result};

use args::Args;
use caches::Caches;
use webhook::certs;

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
