//! Leader election on a `coordination.k8s.io` Lease (kube-lease-manager):
//! every replica serves the webhook, only the leader consumes and writes
//! status. The receiver says whether this replica leads right now.

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;

use crate::args::Args;
use crate::{Error, Result};

/// Joins the election; the returned receiver flips as leadership comes and
/// goes. Dropping it releases the Lease, so a stopping leader hands over
/// at once instead of after a whole lease duration.
pub async fn join(
    client: Client,
    args: &Args,
) -> Result<(watch::Receiver<bool>, tokio::task::JoinHandle<()>)> {
    let duration = args.lease_duration_seconds;
    let manager = LeaseManagerBuilder::new(client, &args.lease_name)
        .with_namespace(&args.namespace)
        .with_identity(args.identity())
        .with_duration(duration)
        // Renewed a third of the duration before it expires.
        .with_grace((duration / 3).max(1))
        .build()
        .await
        .map_err(|source| Error::Lease {
            namespace: args.namespace.clone(),
            name: args.lease_name.clone(),
            source,
        })?;
    let (rx, task) = manager.watch().await;
    let done = tokio::spawn(async move {
        match task.await {
            Ok(Ok(_)) => tracing::info!("released the leader Lease"),
            Ok(Err(e)) => tracing::warn!(error = %e, "leader election ended"),
            Err(e) => tracing::warn!(error = %e, "leader election task failed"),
        }
    });
    Ok((rx, done))
}
