//! The master Secret (`--signing-secret`, in the operator's namespace):
//! made with a fresh key when missing, rotated when its rotate annotation
//! changes (the key before kept as `previous`, so pod keys derived from it
//! stay good until sidecars ask again), and re-read every few seconds by
//! every replica. The decisions are pure (`plan`, `rotated`); `upkeep`
//! does the I/O. Key material never reaches a log, an Event or a status.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use heartbeat_crds::signing::{
    GENERATION_ANNOTATION, KeyRing, ROTATE_ANNOTATION, ROTATED_FOR_ANNOTATION, SECRET_KEY,
    SECRET_PREVIOUS_KEY,
};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};

use super::{Loaded, Master};
use crate::metrics::Metrics;

/// Bytes of randomness in a master (256 bits, HMAC-SHA256's strength).
const KEY_BYTES: usize = 32;
/// How often every replica reads the master Secret again.
pub const RECHECK: Duration = Duration::from_secs(5);

/// What to do with the master Secret.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// It is as it should be.
    Keep,
    /// It does not exist: create it with a fresh key.
    Create,
    /// A rotation was asked for (or the key is gone): a fresh key, the
    /// current one kept as `previous`.
    Rotate,
}

/// What `plan` needs to know of an existing master Secret.
#[derive(Debug, Clone, Copy)]
pub struct Existing<'a> {
    /// It holds a non-empty `key`.
    pub has_key: bool,
    /// The rotation request it has served (its annotation).
    pub served: Option<&'a str>,
}

impl<'a> Existing<'a> {
    pub fn of(secret: &'a Secret) -> Existing<'a> {
        Existing {
            has_key: secret
                .data
                .as_ref()
                .and_then(|d| d.get(SECRET_KEY))
                .is_some_and(|k| !k.0.is_empty()),
            served: annotation(secret, ROTATED_FOR_ANNOTATION),
        }
    }
}

fn annotation<'a>(secret: &'a Secret, name: &str) -> Option<&'a str> {
    secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(name))
        .map(String::as_str)
}

/// Decides from the Secret (if it exists) and its rotation request.
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

/// The Secret's data after a rotation: `fresh` is the master from now on,
/// the current one (if any) is still accepted.
pub fn rotated(data: &BTreeMap<String, ByteString>, fresh: String) -> BTreeMap<String, ByteString> {
    let mut out = data.clone();
    match data.get(SECRET_KEY).filter(|k| !k.0.is_empty()) {
        Some(current) => out.insert(SECRET_PREVIOUS_KEY.into(), current.clone()),
        None => out.remove(SECRET_PREVIOUS_KEY),
    };
    out.insert(SECRET_KEY.into(), ByteString(fresh.into_bytes()));
    out
}

/// The generation a Secret records (1 when it records none).
pub fn generation(secret: &Secret) -> u64 {
    annotation(secret, GENERATION_ANNOTATION)
        .and_then(|g| g.parse().ok())
        .unwrap_or(1)
}

/// The generation a rotation of `secret` makes: one up from the recorded
/// one; 1 for a Secret made empty (the chart's), 2 for a keyed one that
/// records none.
pub fn next_generation(secret: &Secret) -> u64 {
    match annotation(secret, GENERATION_ANNOTATION).and_then(|g| g.parse::<u64>().ok()) {
        Some(g) => g.saturating_add(1),
        None if Existing::of(secret).has_key => 2,
        None => 1,
    }
}

/// A fresh master: hex, like the keys derived from it.
fn fresh_key() -> Result<String, String> {
    let mut bytes = [0u8; KEY_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness for a key: {e}"))?;
    Ok(hex::encode(bytes))
}

/// What was read of the master Secret (or why nothing could be).
fn loaded(secret: &Secret) -> Option<Loaded> {
    let empty = BTreeMap::new();
    let data = secret.data.as_ref().unwrap_or(&empty);
    let ring = KeyRing::from_secret_data(|k| data.get(k).map(|v| v.0.as_slice()));
    (!ring.is_empty()).then(|| Loaded {
        ring,
        generation: generation(secret),
    })
}

/// One round: read the Secret, create or rotate it as `plan` says, and
/// publish what it holds into `master`.
async fn round(api: &Api<Secret>, name: &str, master: &Master) -> Result<(), String> {
    let existing = api
        .get_opt(name)
        .await
        .map_err(|e| format!("reading it: {e}"))?;
    let request = existing
        .as_ref()
        .and_then(|s| annotation(s, ROTATE_ANNOTATION))
        .map(str::to_string);
    let secret = match plan(existing.as_ref().map(Existing::of), request.as_deref()) {
        Plan::Keep => existing.ok_or("it vanished")?,
        Plan::Create => {
            let key = fresh_key()?;
            let secret = Secret {
                metadata: ObjectMeta {
                    name: Some(name.to_string()),
                    labels: Some(BTreeMap::from([(
                        "app.kubernetes.io/managed-by".to_string(),
                        "heartbeat-operator".to_string(),
                    )])),
                    annotations: Some(BTreeMap::from([(
                        GENERATION_ANNOTATION.to_string(),
                        "1".to_string(),
                    )])),
                    ..ObjectMeta::default()
                },
                data: Some(BTreeMap::from([(
                    SECRET_KEY.to_string(),
                    ByteString(key.into_bytes()),
                )])),
                ..Secret::default()
            };
            // Another replica may create it first: the next round reads it.
            let made = api
                .create(&PostParams::default(), &secret)
                .await
                .map_err(|e| format!("creating it: {e}"))?;
            tracing::info!(secret = %name, "created the signing master Secret");
            made
        }
        Plan::Rotate => {
            let mut secret = existing.ok_or("it vanished")?;
            let data = secret.data.clone().unwrap_or_default();
            let next = next_generation(&secret);
            secret.data = Some(rotated(&data, fresh_key()?));
            let annotations = secret.metadata.annotations.get_or_insert_default();
            annotations.insert(GENERATION_ANNOTATION.to_string(), next.to_string());
            if let Some(r) = &request {
                annotations.insert(ROTATED_FOR_ANNOTATION.to_string(), r.clone());
            }
            // Replaced at the version read: a concurrent rotation by another
            // replica fails this one, and the next round reads theirs.
            let replaced = api
                .replace(name, &PostParams::default(), &secret)
                .await
                .map_err(|e| format!("rotating it: {e}"))?;
            tracing::info!(secret = %name, generation = next, "rotated the signing master");
            replaced
        }
    };
    let l = loaded(&secret).ok_or("it holds no usable key")?;
    master.set(l);
    Ok(())
}

/// Keeps `master` current until the process ends.
pub async fn upkeep(
    client: kube::Client,
    namespace: String,
    name: String,
    master: Master,
    metrics: Arc<Metrics>,
) {
    let api = Api::<Secret>::namespaced(client, &namespace);
    loop {
        match round(&api, &name, &master).await {
            Ok(()) => {
                if let Some(l) = master.get() {
                    metrics
                        .signing_generation
                        .set(i64::try_from(l.generation).unwrap_or(i64::MAX));
                }
            }
            Err(why) => {
                tracing::warn!(secret = %format!("{namespace}/{name}"), %why, "the signing master Secret cannot be used; retrying")
            }
        }
        tokio::time::sleep(RECHECK).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use heartbeat_crds::signing::{Verdict, pod_key, sign};

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
        assert!(loaded(&secret).is_some_and(|l| l.generation == 1));
    }

    /// Rule: after a rotation, pod keys of the new and of the one master
    /// before it are accepted, none older.
    #[test]
    fn a_rotation_keeps_exactly_the_master_before_it() {
        let d = data(&[(SECRET_KEY, "b"), (SECRET_PREVIOUS_KEY, "a")]);
        let r = rotated(&d, "c".into());
        assert_eq!(r, data(&[(SECRET_KEY, "c"), (SECRET_PREVIOUS_KEY, "b")]));
        let ring = KeyRing::from_secret_data(|k| r.get(k).map(|v| v.0.as_slice()));
        let check = |master: &[u8]| {
            let sig = sign(&pod_key(master, "u"), b"x_heartbeat", b"{}");
            ring.check(Some("u"), b"x_heartbeat", b"{}", Some(sig.as_bytes()))
        };
        assert_eq!(check(b"c"), Verdict::Genuine);
        assert_eq!(check(b"b"), Verdict::Genuine);
        assert_eq!(check(b"a"), Verdict::Forged);
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

    #[test]
    fn an_empty_secret_gets_generation_one_and_each_rotation_one_more() {
        let mut s = Secret::default();
        assert_eq!(next_generation(&s), 1);
        s.data = Some(data(&[(SECRET_KEY, "k")]));
        assert_eq!(next_generation(&s), 2);
        s.metadata.annotations = Some(BTreeMap::from([(
            GENERATION_ANNOTATION.to_string(),
            "4".to_string(),
        )]));
        assert_eq!(next_generation(&s), 5);
    }

    #[test]
    fn the_generation_is_read_off_its_annotation() {
        let mut s = Secret::default();
        assert_eq!(generation(&s), 1);
        s.metadata.annotations = Some(BTreeMap::from([(
            GENERATION_ANNOTATION.to_string(),
            "7".to_string(),
        )]));
        assert_eq!(generation(&s), 7);
    }
}
