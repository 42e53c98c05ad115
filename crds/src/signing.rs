//! Beat signatures: HMAC-SHA256 over the message key and value, carried in a
//! Kafka header so plain OpenMSIStream consumers can ignore it, with a key
//! of the pod's own: HMAC-SHA256(master, pod uid). The master keys stay in
//! one Secret in the operator's namespace; a sidecar gets its pod's key
//! from the operator's key endpoint by proving who it is with its projected
//! ServiceAccount token (audience [`AUDIENCE`], bound to the pod), and the
//! operator derives the same key from the uid the beat names, so a pod can
//! sign only for itself.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// Kafka header that carries the signature.
pub const HEADER: &str = "heartbeat-signature";
/// Prefix naming the scheme, so it can change without ambiguity.
const SCHEME: &str = "v1=";
/// Domain of the per-pod key derivation (never used for anything else).
const POD_KEY_CONTEXT: &[u8] = b"heartbeat.dev/pod-key/v1\0";

/// The master Secret's key holding the master new pod keys derive from.
pub const SECRET_KEY: &str = "key";
/// The master before the last rotation: pod keys derived from it are still
/// accepted, so a sidecar signs on until its next key refresh.
pub const SECRET_PREVIOUS_KEY: &str = "previous";
/// Annotation on the master Secret asking for a rotation: any new value
/// rotates once.
pub const ROTATE_ANNOTATION: &str = "heartbeat.dev/rotate-signing-key";
/// Annotation on the master Secret: the rotation request it has served.
pub const ROTATED_FOR_ANNOTATION: &str = "heartbeat.dev/rotated-for";
/// Annotation on the master Secret: how many masters it has had (1 for the
/// first), returned with every pod key so a sidecar can say which it holds.
pub const GENERATION_ANNOTATION: &str = "heartbeat.dev/generation";

/// Audience of the ServiceAccount token a sidecar proves its pod with:
/// such a token is good for nothing else (the API server refuses it).
pub const AUDIENCE: &str = "heartbeat.dev";
/// Path of the operator's key endpoint (`POST`).
pub const KEY_PATH: &str = "/keys/pod";
/// Name of the operator Service's port for [`KEY_PATH`].
pub const KEY_PORT_NAME: &str = "keys";

/// The path, on the API server, of its proxy to the key endpoint of the
/// operator's Service `service` in `namespace`. Its RBAC resource name is
/// `https:<service>:keys` (what the chart lets every ServiceAccount create).
pub fn key_url_on_api_server(namespace: &str, service: &str) -> String {
    format!(
        "/api/v1/namespaces/{namespace}/services/https:{service}:{KEY_PORT_NAME}/proxy{KEY_PATH}"
    )
}

/// Request header carrying the audience-bound token (the API server's
/// proxy consumes `Authorization` itself).
pub const TOKEN_HEADER: &str = "x-heartbeat-token";
/// Longest token the key endpoint reads.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Bounds of the refresh period the endpoint tells sidecars.
pub const MIN_REFRESH_SECONDS: u32 = 5;
pub const MAX_REFRESH_SECONDS: u32 = 3600;

/// The key endpoint's answer: the pod's key, hex.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PodKey {
    pub key: String,
    pub generation: u64,
    pub pod_uid: String,
    /// Ask again after this long: a rotated master reaches every sidecar
    /// within it.
    pub refresh_seconds: u32,
}

impl std::fmt::Debug for PodKey {
    // Never print key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PodKey(generation {}, pod {}, refresh {}s)",
            self.generation, self.pod_uid, self.refresh_seconds
        )
    }
}

/// The key of pod `uid` under `master`.
pub fn pod_key(master: &[u8], uid: &str) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(master).unwrap_or_else(|_| unreachable!());
    mac.update(POD_KEY_CONTEXT);
    mac.update(uid.as_bytes());
    mac.finalize().into_bytes().into()
}

/// Whether a message is signed by one of the accepted keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Genuine,
    /// No `heartbeat-signature` header.
    Unsigned,
    /// A signature no accepted key made (or a malformed one).
    Forged,
}

impl Verdict {
    /// The rejection reason for metrics; `None` when genuine.
    pub fn rejection(self) -> Option<&'static str> {
        match self {
            Verdict::Genuine => None,
            Verdict::Unsigned => Some("unsigned"),
            Verdict::Forged => Some("forged"),
        }
    }
}

/// The masters the operator accepts pod keys of: the current one and the
/// one before it.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct KeyRing {
    keys: Vec<Vec<u8>>,
}

impl std::fmt::Debug for KeyRing {
    // Never print key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyRing({} keys)", self.keys.len())
    }
}

impl KeyRing {
    /// The accepted masters of the master Secret's data (empty values
    /// ignored: an empty key would let anyone sign).
    /// `get` looks a key of the Secret's data up.
    pub fn from_secret_data<'a>(get: impl Fn(&str) -> Option<&'a [u8]>) -> KeyRing {
        let keys = [SECRET_KEY, SECRET_PREVIOUS_KEY]
            .iter()
            .filter_map(|k| get(k))
            .map(<[u8]>::to_vec)
            .filter(|v| !v.is_empty())
            .collect();
        KeyRing { keys }
    }

    /// No usable key: every message is refused.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Judges a message of pod `uid` (as the beat names it) by its
    /// `heartbeat-signature` header, if any: genuine only when signed with
    /// that pod's key, so a pod's key signs for no other pod.
    pub fn check(
        &self,
        uid: Option<&str>,
        msg_key: &[u8],
        value: &[u8],
        header: Option<&[u8]>,
    ) -> Verdict {
        let Some(header) = header else {
            return Verdict::Unsigned;
        };
        // A beat naming no pod has no key to be signed with.
        let Some(uid) = uid.filter(|u| !u.is_empty()) else {
            return Verdict::Forged;
        };
        if self
            .keys
            .iter()
            .any(|m| verify(&pod_key(m, uid), msg_key, value, header))
        {
            Verdict::Genuine
        } else {
            Verdict::Forged
        }
    }

    /// The newest master (the one new pod keys derive from).
    pub fn current(&self) -> Option<&[u8]> {
        self.keys.first().map(Vec::as_slice)
    }
}

fn mac(key: &[u8], msg_key: &[u8], value: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    // Length-prefix the key so (key, value) pairs cannot be re-split.
    mac.update(&(msg_key.len() as u64).to_be_bytes());
    mac.update(msg_key);
    mac.update(value);
    mac
}

/// The header value for a message: `v1=<hex HMAC-SHA256>`.
pub fn sign(key: &[u8], msg_key: &[u8], value: &[u8]) -> String {
    format!(
        "{SCHEME}{}",
        hex::encode(mac(key, msg_key, value).finalize().into_bytes())
    )
}

/// Whether `header` is a valid signature of the message under `key` (constant-time compare).
pub fn verify(key: &[u8], msg_key: &[u8], value: &[u8], header: &[u8]) -> bool {
    let Some(hex_sig) = header.strip_prefix(SCHEME.as_bytes()) else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    mac(key, msg_key, value).verify_slice(&sig).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn signature_verifies_and_detects_tampering() {
        let sig = sign(b"secret", b"a_heartbeat", b"{}");
        assert!(sig.starts_with("v1=") && sig.len() == 3 + 64);
        assert!(verify(b"secret", b"a_heartbeat", b"{}", sig.as_bytes()));
        assert!(!verify(b"other", b"a_heartbeat", b"{}", sig.as_bytes()));
        assert!(!verify(b"secret", b"b_heartbeat", b"{}", sig.as_bytes()));
        assert!(!verify(b"secret", b"a_heartbeat", b"{ }", sig.as_bytes()));
        assert!(!verify(b"secret", b"a_heartbeat", b"{}", b"v1=zz"));
    }

    /// Rule: a ring accepts beats signed with the pod's key under the
    /// current or the previous master, and nothing else: not another pod's
    /// key, not the master itself, not a beat naming no pod.
    #[test]
    fn a_ring_accepts_the_pods_own_key_under_the_current_and_previous_masters_only() {
        let data = BTreeMap::from([
            (SECRET_KEY.to_string(), b"new".to_vec()),
            (SECRET_PREVIOUS_KEY.to_string(), b"old".to_vec()),
            ("other".to_string(), b"unrelated".to_vec()),
        ]);
        let ring = KeyRing::from_secret_data(|k| data.get(k).map(Vec::as_slice));
        let signed = |k: &[u8]| sign(k, b"a_heartbeat", b"{}");
        let check =
            |uid: &str, h: &str| ring.check(Some(uid), b"a_heartbeat", b"{}", Some(h.as_bytes()));
        assert_eq!(
            check("pod-a", &signed(&pod_key(b"new", "pod-a"))),
            Verdict::Genuine
        );
        assert_eq!(
            check("pod-a", &signed(&pod_key(b"old", "pod-a"))),
            Verdict::Genuine
        );
        assert_eq!(
            check("pod-b", &signed(&pod_key(b"new", "pod-a"))),
            Verdict::Forged
        );
        assert_eq!(
            check("pod-a", &signed(&pod_key(b"unrelated", "pod-a"))),
            Verdict::Forged
        );
        assert_eq!(check("pod-a", &signed(b"new")), Verdict::Forged);
        assert_eq!(check("pod-a", "v1=00"), Verdict::Forged);
        let header = signed(&pod_key(b"new", ""));
        assert_eq!(
            ring.check(None, b"a_heartbeat", b"{}", Some(header.as_bytes())),
            Verdict::Forged
        );
        assert_eq!(check("", &header), Verdict::Forged);
        assert_eq!(
            ring.check(Some("pod-a"), b"a_heartbeat", b"{}", None),
            Verdict::Unsigned
        );
        assert_eq!(Verdict::Forged.rejection(), Some("forged"));
        assert_eq!(format!("{ring:?}"), "KeyRing(2 keys)");
        assert_eq!(ring.current(), Some(&b"new"[..]));
    }

    #[test]
    fn pod_keys_differ_per_pod_and_master_and_never_print() {
        assert_ne!(pod_key(b"m", "a"), pod_key(b"m", "b"));
        assert_ne!(pod_key(b"m", "a"), pod_key(b"n", "a"));
        let k = PodKey {
            key: "secret-hex".into(),
            generation: 2,
            pod_uid: "u".into(),
            refresh_seconds: 60,
        };
        assert!(!format!("{k:?}").contains("secret-hex"));
    }

    #[test]
    fn key_and_value_boundary_is_part_of_the_signature() {
        assert_ne!(sign(b"k", b"ab", b"c"), sign(b"k", b"a", b"bc"));
    }
}
