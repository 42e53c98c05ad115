//! Leader election on a `coordination.k8s.io` Lease (kube-lease-manager):
//! every replica serves the webhook, only the leader consumes and writes
//! status. On top of the crate's own loop, a guard reads the Lease back
//! every sixth of its duration: a replica that sees another holder stops at
//! once, and one that cannot confirm its live Lease for half a duration
//! (the API server unreachable) stops before another can take over.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::args::LeaderArgs;
use crate::{Error, Result};

/// This replica's place in the election.
pub struct Election {
    /// True while this replica leads (as far as it can confirm).
    pub leading: watch::Receiver<bool>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Election {
    /// Leaves the election and releases the Lease, so another replica
    /// takes over at once rather than after a whole lease duration.
    pub async fn resign(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(6), self.task).await;
    }
}

/// Whether `lease` is held by `identity` and was renewed less than its
/// duration ago, at `now`. Pure.
pub fn holds(lease: &Lease, identity: &str, now: Timestamp) -> bool {
    let Some(spec) = &lease.spec else {
        return false;
    };
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)));
    spec.holder_identity.as_deref() == Some(identity)
        && spec
            .renew_time
            .as_ref()
            .is_some_and(|t| now < t.0 + duration)
}

/// Joins the election on the Lease in `namespace`.
pub async fn join(client: Client, namespace: &str, args: &LeaderArgs) -> Result<Election> {
    let duration = args.lease_duration_seconds;
    let identity = args.identity();
    let manager = LeaseManagerBuilder::new(client.clone(), &args.lease_name)
        .with_namespace(namespace)
        .with_identity(&identity)
        .with_duration(duration)
        // Renewed a third of the duration before it expires.
        .with_grace((duration / 3).max(1))
        .build()
        .await
        .map_err(|source| Error::Lease {
            namespace: namespace.into(),
            name: args.lease_name.clone(),
            source,
        })?;
    let (mut managed, manager_task) = manager.watch().await;
    let (leading_tx, leading) = watch::channel(false);
    let (stop, mut stopping) = watch::channel(false);
    let leases: Api<Lease> = Api::namespaced(client, namespace);
    let name = args.lease_name.clone();
    // Read every sixth of the duration; a confirmation holds for half of it:
    // a replica that cannot confirm stops within two thirds of a lease
    // duration, before its Lease can expire and another take over, and two
    // failed reads in a row are tolerated.
    let every = Duration::from_secs((duration / 6).max(1));
    let valid_for = Duration::from_secs((duration / 2).max(1));
    let task = tokio::spawn(async move {
        let mut check = tokio::time::interval(every);
        let mut confirmed_at: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                _ = stopping.changed() => break,
                r = managed.changed() => if r.is_err() { break },
                _ = check.tick() => {
                    match leases.get_opt(&name).await {
                        Ok(Some(lease)) if holds(&lease, &identity, Timestamp::now()) => {
                            confirmed_at = Some(tokio::time::Instant::now());
                        }
                        // Someone else holds it, or nobody: not leading, at once.
                        Ok(_) => confirmed_at = None,
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot read the leader Lease to confirm it");
                        }
                    }
                }
            }
            let confirmed = confirmed_at.is_some_and(|at| at.elapsed() < valid_for);
            let lead = *managed.borrow() && confirmed;
            leading_tx.send_if_modified(|l| {
                let changed = *l != lead;
                *l = lead;
                changed
            });
            // A fresh win is confirmed at the next tick, a third of a lease
            // duration later at most; check at once instead.
            if *managed.borrow() && !confirmed {
                check.reset_immediately();
            }
        }
        let _ = leading_tx.send(false);
        // Dropping the receiver makes the manager release the Lease.
        drop(managed);
        match tokio::time::timeout(Duration::from_secs(5), manager_task).await {
            Ok(Ok(Ok(_))) => tracing::info!("released the leader Lease"),
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "releasing the leader Lease"),
            Ok(Err(e)) => tracing::warn!(error = %e, "leader election task failed"),
            Err(_) => tracing::warn!("releasing the leader Lease timed out"),
        }
    });
    Ok(Election {
        leading,
        stop,
        task,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    fn lease(holder: &str, renewed: Timestamp) -> Lease {
        Lease {
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                lease_duration_seconds: Some(15),
                renew_time: Some(MicroTime(renewed)),
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        }
    }

    #[test]
    fn only_a_live_lease_of_ones_own_is_held() {
        let t0: Timestamp = "2026-11-27T08:00:00Z".parse().expect("ts");
        let s = SignedDuration::from_secs;
        assert!(holds(&lease("me", t0), "me", t0 + s(14)));
        assert!(!holds(&lease("me", t0), "me", t0 + s(15)), "expired");
        assert!(!holds(&lease("other", t0), "me", t0 + s(1)));
        assert!(!holds(&Lease::default(), "me", t0));
    }
}
