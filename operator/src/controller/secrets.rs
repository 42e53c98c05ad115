//! The Secrets the controller reads (a monitor's broker Secret), always by
//! name: the operator's ServiceAccount may not list
//! or watch Secrets, so a changed Secret is found by reading it again. A
//! read is kept for [`RECHECK`], so monitors sharing a Secret share one
//! read and a rotated password is picked up within it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;

use crate::consumer::lock;
use crate::{Error, Result};

/// How long a read Secret is believed before it is read again.
pub const RECHECK: Duration = Duration::from_secs(15);

/// What reading a Secret by name gave.
#[derive(Debug, Clone)]
pub enum Read {
    Found(Arc<Secret>),
    Missing,
    /// The ServiceAccount may not read Secrets in that namespace (the
    /// chart's `rbac.namespaced` mode without a grant for it).
    Forbidden,
}

/// Where the operator's Secret rights come from, to tell a person the
/// exact command that grants a namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The ClusterRole holding the Secret rights (bound per namespace in
    /// the namespaced mode).
    pub cluster_role: String,
    /// The operator's ServiceAccount, `namespace:name`.
    pub service_account: String,
}

impl Grant {
    /// The command that lets the operator read Secrets in `namespace`.
    pub fn command(&self, namespace: &str) -> String {
        format!(
            "kubectl -n {namespace} create rolebinding {role} --clusterrole={role} --serviceaccount={sa}",
            role = self.cluster_role,
            sa = self.service_account,
        )
    }
}

/// Reads Secrets by name, each at most once per [`RECHECK`].
pub struct SecretReader {
    client: kube::Client,
    cache: Mutex<HashMap<(String, String), (Instant, Read)>>,
}

impl SecretReader {
    pub fn new(client: kube::Client) -> SecretReader {
        SecretReader {
            client,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Secret `namespace/name`, from a read younger than [`RECHECK`] or a
    /// new one. A refused read is [`Read::Forbidden`]; other API errors
    /// are errors (retried with back-off).
    pub async fn get(&self, namespace: &str, name: &str) -> Result<Read> {
        let key = (namespace.to_string(), name.to_string());
        if let Some((at, read)) = lock(&self.cache).get(&key)
            && at.elapsed() < RECHECK
        {
            return Ok(read.clone());
        }
        let read = match Api::<Secret>::namespaced(self.client.clone(), namespace)
            .get_opt(name)
            .await
        {
            Ok(Some(mut s)) => {
                // Only data and what identifies the Secret are kept.
                s.metadata.managed_fields = None;
                Read::Found(Arc::new(s))
            }
            Ok(None) => Read::Missing,
            Err(kube::Error::Api(status)) if status.is_forbidden() => Read::Forbidden,
            Err(source) => {
                return Err(Error::GetSecret {
                    namespace: namespace.to_string(),
                    name: name.to_string(),
                    source,
                });
            }
        };
        lock(&self.cache).insert(key, (Instant::now(), read.clone()));
        Ok(read)
    }

    /// Forgets what was read of `namespace/name` (after the operator wrote
    /// it itself).
    pub fn forget(&self, namespace: &str, name: &str) {
        lock(&self.cache).remove(&(namespace.to_string(), name.to_string()));
    }

    /// Drops reads older than [`RECHECK`] (Secrets no monitor names any more).
    pub fn sweep(&self) {
        lock(&self.cache).retain(|_, (at, _)| at.elapsed() < RECHECK);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grant_command_names_the_namespace_role_and_service_account() {
        let g = Grant {
            cluster_role: "hb-secrets".into(),
            service_account: "heartbeat-system:hb".into(),
        };
        assert_eq!(
            g.command("data"),
            "kubectl -n data create rolebinding hb-secrets --clusterrole=hb-secrets --serviceaccount=heartbeat-system:hb"
        );
    }
}
