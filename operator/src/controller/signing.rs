//! A monitor's signing keys: the Secret the operator keeps in the monitor's
//! namespace (made with a fresh key when signing is turned on, rotated when
//! the monitor's rotate annotation changes), and the key ring the consumer
//! checks every beat against. The decision is pure (`plan`); `load` does
//! the I/O. Key material never reaches a log, an Event or a status message.

use std::collections::BTreeMap;

use heartbeat_crds::monitor::HeartbeatMonitor;
use heartbeat_crds::signing::{
    KeyRing, ROTATE_ANNOTATION, ROTATED_FOR_ANNOTATION, SECRET_KEY, SECRET_PREVIOUS_KEY,
    secret_name,
};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::{Resource, ResourceExt};

use super::secrets::Read;
use super::status::Readiness;
use super::{Context, Tracked};

/// Bytes of randomness in a key (256 bits, HMAC-SHA256's block strength).
const KEY_BYTES: usize = 32;

/// What to do with a monitor's key Secret.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// It is as it should be.
    Keep,
    /// It does not exist: create it with a fresh key.
    Create,
    /// A rotation was asked for (or the key is gone): a fresh key, the
    /// current one kept as `previous` so running sidecars stay believed.
    Rotate,
}

/// What `plan` needs to know of an existing key Secret.
#[derive(Debug, Clone, Copy)]
pub struct Existing<'a> {
    /// It holds a non-empty `key`.
    pub has_key: bool,
    /// The rotation request it has served (its annotation).
    pub served: Option<&'a str>,
}

impl<'a> Existing<'a> {
    fn of(secret: &'a Secret) -> Existing<'a> {
        Existing {
            has_key: secret
                .data
                .as_ref()
                .and_then(|d| d.get(SECRET_KEY))
                .is_some_and(|k| !k.0.is_empty()),
            served: served(secret.metadata.annotations.as_ref()),
        }
    }
}

fn served(annotations: Option<&BTreeMap<String, String>>) -> Option<&str> {
    annotations
        .and_then(|a| a.get(ROTATED_FOR_ANNOTATION))
        .map(String::as_str)
}

/// Decides from the Secret (if it exists) and the monitor's rotation request.
pub fn plan(secret: Option<Existing<'_>>, request: Option<&str>) -> Plan {
    let Some(existing) = secret else {
        return Plan::Create;
    };
    match request {
        _ if !existing.has_key => Plan::Rotate,
        Some(r) if existing.served != Some(r) => Plan::Rotate,
        _ => Plan::Keep,
    }
}

/// The Secret's data after a rotation: `fresh` signs from now on, the
/// current key (if any) is still accepted.
pub fn rotated(data: &BTreeMap<String, ByteString>, fresh: String) -> BTreeMap<String, ByteString> {
    let mut out = data.clone();
    match data.get(SECRET_KEY).filter(|k| !k.0.is_empty()) {
        Some(current) => out.insert(SECRET_PREVIOUS_KEY.into(), current.clone()),
        None => out.remove(SECRET_PREVIOUS_KEY),
    };
    out.insert(SECRET_KEY.into(), ByteString(fresh.into_bytes()));
    out
}

/// A fresh key: hex, so it travels as an env value unchanged.
fn fresh_key() -> Result<String, String> {
    let mut bytes = [0u8; KEY_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness for a key: {e}"))?;
    Ok(hex::encode(bytes))
}

/// Loads (creating or rotating as needed) the keys the monitor's beats must
/// be signed with into `tracked.signing`; clears them when signing is off.
/// A key that cannot be had is a reason not to read: without it no beat can
/// be believed, and judging without beats would make everyone Stale.
pub async fn load(
    ctx: &Context,
    monitor: &HeartbeatMonitor,
    tracked: &Tracked,
) -> Result<(), Readiness> {
    let enabled = monitor.spec.signing.as_ref().is_some_and(|s| s.enabled);
    if !enabled {
        set(tracked, None);
        return Ok(());
    }
    let ns = monitor.namespace().unwrap_or_default();
    let name = secret_name(&monitor.name_any());
    let request = monitor.annotations().get(ROTATE_ANNOTATION).cloned();
    let unavailable = |why: String| Readiness::NotReading {
        reason: "SigningKeyUnavailable",
        message: format!(
            "signing is on but the key Secret {ns}/{name} cannot be used: {why}; beats are not judged until it can"
        ),
    };
    let existing = match ctx.secrets.get(&ns, &name).await {
        Ok(Read::Found(s)) => Some(s),
        Ok(Read::Missing) => None,
        Ok(Read::Forbidden) => {
            return Err(unavailable(format!(
                "the operator may not read Secrets in this namespace; grant it with: {}",
                ctx.grant.command(&ns)
            )));
        }
        Err(e) => return Err(unavailable(e.to_string())),
    };
    if let Some(s) = &existing
        && !made_for(s, monitor)
    {
        // Never adopted: someone else's Secret of that name could hold a
        // key they know, and rotating it would overwrite their data.
        return Err(unavailable(
            "it was not made by the operator for this monitor (no ownerReference to it): delete or rename it and the operator makes a new one".into(),
        ));
    }
    let api = Api::<Secret>::namespaced(ctx.client.clone(), &ns);
    let secret = match existing {
        None => {
            let key = fresh_key().map_err(unavailable)?;
            let mut annotations = BTreeMap::new();
            if let Some(r) = &request {
                annotations.insert(ROTATED_FOR_ANNOTATION.to_string(), r.clone());
            }
            let secret = Secret {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(ns.clone()),
                    // Deleted with its monitor.
                    owner_references: monitor.controller_owner_ref(&()).map(|o| vec![o]),
                    labels: Some(BTreeMap::from([(
                        "app.kubernetes.io/managed-by".to_string(),
                        "heartbeat-operator".to_string(),
                    )])),
                    annotations: Some(annotations),
                    ..ObjectMeta::default()
                },
                data: Some(BTreeMap::from([(
                    SECRET_KEY.to_string(),
                    ByteString(key.into_bytes()),
                )])),
                ..Secret::default()
            };
            let made = api
                .create(&PostParams::default(), &secret)
                .await
                .map_err(|e| unavailable(format!("creating it: {e}")))?;
            ctx.secrets.forget(&ns, &name);
            tracing::info!(namespace = %ns, secret = %name, "created the signing key Secret");
            std::sync::Arc::new(made)
        }
        Some(secret) => {
            if plan(Some(Existing::of(&secret)), request.as_deref()) == Plan::Rotate {
                let mut secret = (*secret).clone();
                let data = secret.data.clone().unwrap_or_default();
                let key = fresh_key().map_err(unavailable)?;
                secret.data = Some(rotated(&data, key));
                if let Some(r) = &request {
                    secret
                        .annotations_mut()
                        .insert(ROTATED_FOR_ANNOTATION.to_string(), r.clone());
                }
                // Replaced at the version read: a concurrent change fails
                // this write, and the next reconcile decides again.
                let replaced = api
                    .replace(&name, &PostParams::default(), &secret)
                    .await
                    .map_err(|e| {
                        ctx.secrets.forget(&ns, &name);
                        unavailable(format!("rotating it: {e}"))
                    })?;
                ctx.secrets.forget(&ns, &name);
                tracing::info!(namespace = %ns, secret = %name, "rotated the signing key");
                std::sync::Arc::new(replaced)
            } else {
                secret
            }
        }
    };
    let empty = BTreeMap::new();
    let data = secret.data.as_ref().unwrap_or(&empty);
    let ring = KeyRing::from_secret_data(|k| data.get(k).map(|v| v.0.as_slice()));
    if ring.is_empty() {
        return Err(unavailable(format!("it has no {SECRET_KEY:?} value")));
    }
    set(tracked, Some(ring));
    Ok(())
}

/// The Secret was made by the operator for `monitor`: it is owned by it.
fn made_for(secret: &Secret, monitor: &HeartbeatMonitor) -> bool {
    let uid = monitor.metadata.uid.as_deref();
    uid.is_some()
        && secret
            .owner_references()
            .iter()
            .any(|o| Some(o.uid.as_str()) == uid && o.kind == HeartbeatMonitor::kind(&()))
}

fn set(tracked: &Tracked, ring: Option<KeyRing>) {
    match tracked.signing.write() {
        Ok(mut g) => *g = ring,
        Err(p) => *p.into_inner() = ring,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, ByteString> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
            .collect()
    }

    fn with_key(served: Option<&str>) -> Option<Existing<'_>> {
        Some(Existing {
            has_key: true,
            served,
        })
    }

    #[test]
    fn a_missing_secret_is_created() {
        assert_eq!(plan(None, None), Plan::Create);
        assert_eq!(plan(None, Some("1")), Plan::Create);
    }

    #[test]
    fn a_secret_with_a_key_is_kept_until_a_new_rotation_request() {
        assert_eq!(plan(with_key(None), None), Plan::Keep);
        assert_eq!(plan(with_key(Some("1")), Some("1")), Plan::Keep);
        assert_eq!(plan(with_key(Some("1")), Some("2")), Plan::Rotate);
        assert_eq!(plan(with_key(None), Some("1")), Plan::Rotate);
        // Removing the request does not rotate back.
        assert_eq!(plan(with_key(Some("1")), None), Plan::Keep);
    }

    #[test]
    fn a_secret_without_a_usable_key_gets_one() {
        let mut secret = Secret {
            data: Some(data(&[(SECRET_KEY, "")])),
            ..Secret::default()
        };
        assert_eq!(plan(Some(Existing::of(&secret)), None), Plan::Rotate);
        secret.data = None;
        assert_eq!(plan(Some(Existing::of(&secret)), None), Plan::Rotate);
        secret.data = Some(data(&[(SECRET_KEY, "k")]));
        assert_eq!(plan(Some(Existing::of(&secret)), None), Plan::Keep);
    }

    #[test]
    fn a_rotation_keeps_exactly_the_key_before_it() {
        let d = data(&[(SECRET_KEY, "b"), (SECRET_PREVIOUS_KEY, "a")]);
        let r = rotated(&d, "c".into());
        assert_eq!(r, data(&[(SECRET_KEY, "c"), (SECRET_PREVIOUS_KEY, "b")]));
        let ring = KeyRing::from_secret_data(|k| r.get(k).map(|v| v.0.as_slice()));
        let sig = |k: &[u8]| heartbeat_crds::signing::sign(k, b"x_heartbeat", b"{}");
        let check = |k: &[u8]| ring.check(b"x_heartbeat", b"{}", Some(sig(k).as_bytes()));
        assert_eq!(check(b"c"), heartbeat_crds::signing::Verdict::Genuine);
        assert_eq!(check(b"b"), heartbeat_crds::signing::Verdict::Genuine);
        assert_eq!(check(b"a"), heartbeat_crds::signing::Verdict::Forged);
        // Without a current key there is nothing to keep.
        let r = rotated(&data(&[(SECRET_PREVIOUS_KEY, "a")]), "c".into());
        assert_eq!(r, data(&[(SECRET_KEY, "c")]));
    }

    #[test]
    fn fresh_keys_are_long_hex_and_differ() {
        let (a, b) = (fresh_key().expect("key"), fresh_key().expect("key"));
        assert_eq!(a.len(), KEY_BYTES * 2);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    /// Rule: a key Secret is used only when it is owned by this monitor (by
    /// uid): one somebody else made under that name is never adopted.
    #[test]
    fn only_a_secret_owned_by_this_monitor_is_its_key_secret() {
        let monitor: HeartbeatMonitor = serde_json::from_value(serde_json::json!({
            "apiVersion": "heartbeat.dev/v1alpha1", "kind": "HeartbeatMonitor",
            "metadata": {"name": "m", "namespace": "ns", "uid": "u-1"},
            "spec": {"topic": "t", "intervalSeconds": 10, "brokerSecretRef": {"name": "k"},
                     "selector": {"matchLabels": {"app": "x"}}}
        }))
        .expect("monitor");
        let owned_by = |uid: Option<&str>, kind: &str| Secret {
            metadata: ObjectMeta {
                owner_references: uid.map(|uid| {
                    vec![
                        k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                            api_version: "heartbeat.dev/v1alpha1".into(),
                            kind: kind.into(),
                            name: "m".into(),
                            uid: uid.into(),
                            ..Default::default()
                        },
                    ]
                }),
                ..ObjectMeta::default()
            },
            ..Secret::default()
        };
        assert!(made_for(
            &owned_by(Some("u-1"), "HeartbeatMonitor"),
            &monitor
        ));
        assert!(!made_for(&owned_by(None, "HeartbeatMonitor"), &monitor));
        assert!(!made_for(
            &owned_by(Some("u-2"), "HeartbeatMonitor"),
            &monitor
        ));
        assert!(!made_for(&owned_by(Some("u-1"), "Deployment"), &monitor));
    }
}
