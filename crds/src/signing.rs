//! Beat signatures: HMAC-SHA256 over the message key and value, carried in a
//! Kafka header so plain OpenMSIStream consumers can ignore it.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Kafka header that carries the signature.
pub const HEADER: &str = "heartbeat-signature";
/// Prefix naming the scheme, so it can change without ambiguity.
const SCHEME: &str = "v1=";

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
    fn key_and_value_boundary_is_part_of_the_signature() {
        assert_ne!(sign(b"k", b"ab", b"c"), sign(b"k", b"a", b"bc"));
    }
}
