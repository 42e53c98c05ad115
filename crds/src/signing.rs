//! Beat signatures: HMAC-SHA256 over the message key and value, carried in a
//! Kafka header so plain OpenMSIStream consumers can ignore it; and where a
//! monitor's keys live (the Secret the operator keeps, read by the webhook's
//! `secretKeyRef` and by the operator's verifier).

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Kafka header that carries the signature.
pub const HEADER: &str = "heartbeat-signature";
/// Prefix naming the scheme, so it can change without ambiguity.
const SCHEME: &str = "v1=";

/// The Secret key holding the key new sidecars sign with.
pub const SECRET_KEY: &str = "key";
/// The Secret key holding the key before the last rotation: still
/// accepted, so running sidecars keep being believed until they restart.
pub const SECRET_PREVIOUS_KEY: &str = "previous";
/// Annotation on a monitor asking for a new key: any new value rotates once.
pub const ROTATE_ANNOTATION: &str = "heartbeat.dev/rotate-signing-key";
/// Annotation on the key Secret: the rotation request it has served.
pub const ROTATED_FOR_ANNOTATION: &str = "heartbeat.dev/rotated-for";

/// The Secret, in the monitor's namespace, that holds a monitor's keys.
pub fn secret_name(monitor: &str) -> String {
    format!("{monitor}-signing-key")
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

/// The keys a monitor accepts: the current one and the one before it.
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
    /// The accepted keys of a key Secret's data (empty values ignored: an
    /// empty key would let anyone sign).
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

    /// Judges a message by its `heartbeat-signature` header, if any.
    pub fn check(&self, msg_key: &[u8], value: &[u8], header: Option<&[u8]>) -> Verdict {
        let Some(header) = header else {
            return Verdict::Unsigned;
        };
        if self.keys.iter().any(|k| verify(k, msg_key, value, header)) {
            Verdict::Genuine
        } else {
            Verdict::Forged
        }
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

    #[test]
    fn a_ring_accepts_the_current_and_previous_keys_only() {
        let data = BTreeMap::from([
            (SECRET_KEY.to_string(), b"new".to_vec()),
            (SECRET_PREVIOUS_KEY.to_string(), b"old".to_vec()),
            ("other".to_string(), b"unrelated".to_vec()),
        ]);
        let ring = KeyRing::from_secret_data(|k| data.get(k).map(Vec::as_slice));
        let signed = |k: &[u8]| sign(k, b"a_heartbeat", b"{}");
        let check = |h: &str| ring.check(b"a_heartbeat", b"{}", Some(h.as_bytes()));
        assert_eq!(check(&signed(b"new")), Verdict::Genuine);
        assert_eq!(check(&signed(b"old")), Verdict::Genuine);
        assert_eq!(check(&signed(b"unrelated")), Verdict::Forged);
        assert_eq!(check("v1=00"), Verdict::Forged);
        assert_eq!(ring.check(b"a_heartbeat", b"{}", None), Verdict::Unsigned);
        assert_eq!(Verdict::Forged.rejection(), Some("forged"));
        assert_eq!(format!("{ring:?}"), "KeyRing(2 keys)");
    }

    #[test]
    fn an_empty_key_is_never_accepted() {
        let data = BTreeMap::from([(SECRET_KEY.to_string(), Vec::<u8>::new())]);
        let ring = KeyRing::from_secret_data(|k| data.get(k).map(Vec::as_slice));
        assert!(ring.is_empty());
        let sig = sign(b"", b"a_heartbeat", b"{}");
        assert_eq!(
            ring.check(b"a_heartbeat", b"{}", Some(sig.as_bytes())),
            Verdict::Forged
        );
    }

    #[test]
    fn key_and_value_boundary_is_part_of_the_signature() {
        assert_ne!(sign(b"k", b"ab", b"c"), sign(b"k", b"a", b"bc"));
    }
}
