//! The webhook's serving certificate: a CA and a leaf made with rcgen and
//! kept in one Secret that every replica shares. The first replica creates
//! it (create-if-absent: a replica that loses the race reads the winner's);
//! a leaf near its end is renewed with the same CA by one replica (an
//! update with the resourceVersion read, so replicas never fight) and the
//! others pick it up on their next read.

use std::collections::BTreeMap;

use jiff::{Span, Timestamp, tz::TimeZone};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

use crate::{Error, Result};

/// Keys of the certificate Secret.
pub const CA_CRT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";
/// The serving certificate (the kubernetes.io/tls keys).
pub const TLS_CRT: &str = "tls.crt";
/// Its private key.
pub const TLS_KEY: &str = "tls.key";
/// When the leaf expires (RFC 3339), so renewal needs no X.509 parsing.
const ANNOTATION_NOT_AFTER: &str = "heartbeat.dev/not-after";
/// The DNS names the leaf was made for, comma-separated.
const ANNOTATION_DNS_NAMES: &str = "heartbeat.dev/dns-names";
const CA_COMMON_NAME: &str = "heartbeat-operator-webhook-ca";
const LEAF_DAYS: i64 = 365;
const CA_DAYS: i64 = 3650;
/// A leaf is renewed this long before it expires.
const RENEW_BEFORE_DAYS: i64 = 30;

/// The CA and the serving certificate, as PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertBundle {
    pub ca_pem: String,
    ca_key_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub not_after: Timestamp,
    pub dns_names: Vec<String>,
}

/// Sets `p`'s validity: from a day before `now` to `days` after it.
fn set_validity(p: &mut CertificateParams, now: Timestamp, days: i64) -> Result<(), String> {
    let ymd = |days: i64| -> Result<(i32, u8, u8), String> {
        let d = now
            .to_zoned(TimeZone::UTC)
            .date()
            .checked_add(Span::new().days(days))
            .map_err(|e| e.to_string())?;
        let month = u8::try_from(d.month()).map_err(|e| e.to_string())?;
        let day = u8::try_from(d.day()).map_err(|e| e.to_string())?;
        Ok((i32::from(d.year()), month, day))
    };
    let (y, m, d) = ymd(-1)?;
    p.not_before = rcgen::date_time_ymd(y, m, d);
    let (y, m, d) = ymd(days)?;
    p.not_after = rcgen::date_time_ymd(y, m, d);
    Ok(())
}

/// The CA's parameters: the same every time, so a renewal signs with the
/// stored CA key under the same name.
fn ca_params(now: Timestamp) -> Result<CertificateParams, String> {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    set_validity(&mut p, now, CA_DAYS)?;
    Ok(p)
}

/// Makes a serving certificate for `dns_names`, signed by the given CA
/// (`(cert PEM, key PEM)`) or by a new one.
pub fn generate(
    dns_names: &[String],
    now: Timestamp,
    ca: Option<(&str, &str)>,
) -> Result<CertBundle> {
    let bad = |why: String| Error::BadCertSecret {
        namespace: String::new(),
        name: String::new(),
        why,
    };
    let (ca_pem, ca_key) = match ca {
        Some((pem, key)) => (
            pem.to_string(),
            KeyPair::from_pem(key).map_err(Error::MakeCert)?,
        ),
        None => {
            let key = KeyPair::generate().map_err(Error::MakeCert)?;
            let cert = ca_params(now)
                .map_err(bad)?
                .self_signed(&key)
                .map_err(Error::MakeCert)?;
            (cert.pem(), key)
        }
    };
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = Issuer::new(ca_params(now).map_err(bad)?, ca_key);
    let mut leaf = CertificateParams::new(dns_names.to_vec()).map_err(Error::MakeCert)?;
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        dns_names.first().cloned().unwrap_or_default(),
    );
    leaf.distinguished_name = dn;
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    set_validity(&mut leaf, now, LEAF_DAYS).map_err(bad)?;
    let leaf_key = KeyPair::generate().map_err(Error::MakeCert)?;
    let cert = leaf
        .signed_by(&leaf_key, &issuer)
        .map_err(Error::MakeCert)?;
    Ok(CertBundle {
        ca_pem,
        ca_key_pem,
        cert_pem: cert.pem(),
        key_pem: leaf_key.serialize_pem(),
        not_after: now
            .checked_add(Span::new().hours(24 * LEAF_DAYS))
            .unwrap_or(now),
        dns_names: dns_names.to_vec(),
    })
}

/// Whether `bundle` must be renewed at `now` for `dns_names`.
pub fn needs_renewal(bundle: &CertBundle, dns_names: &[String], now: Timestamp) -> bool {
    let renew_at = bundle
        .not_after
        .checked_sub(Span::new().hours(24 * RENEW_BEFORE_DAYS))
        .unwrap_or(bundle.not_after);
    now >= renew_at || bundle.dns_names != dns_names
}

fn to_secret(
    bundle: &CertBundle,
    namespace: &str,
    name: &str,
    resource_version: Option<String>,
) -> Secret {
    let data = [
        (CA_CRT, &bundle.ca_pem),
        (CA_KEY, &bundle.ca_key_pem),
        (TLS_CRT, &bundle.cert_pem),
        (TLS_KEY, &bundle.key_pem),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), ByteString(v.clone().into_bytes())))
    .collect();
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            resource_version,
            annotations: Some(BTreeMap::from([
                (
                    ANNOTATION_NOT_AFTER.to_string(),
                    bundle.not_after.to_string(),
                ),
                (ANNOTATION_DNS_NAMES.to_string(), bundle.dns_names.join(",")),
            ])),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(data),
        ..Default::default()
    }
}

fn from_secret(s: &Secret) -> Result<CertBundle, String> {
    let get = |k: &str| {
        s.data
            .as_ref()
            .and_then(|d| d.get(k))
            .map(|v| String::from_utf8_lossy(&v.0).into_owned())
            .ok_or_else(|| format!("no {k}"))
    };
    let ann = |k: &str| {
        s.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(k))
            .cloned()
            .ok_or_else(|| format!("no annotation {k}"))
    };
    Ok(CertBundle {
        ca_pem: get(CA_CRT)?,
        ca_key_pem: get(CA_KEY)?,
        cert_pem: get(TLS_CRT)?,
        key_pem: get(TLS_KEY)?,
        not_after: ann(ANNOTATION_NOT_AFTER)?
            .parse()
            .map_err(|e| format!("{ANNOTATION_NOT_AFTER}: {e}"))?,
        dns_names: ann(ANNOTATION_DNS_NAMES)?
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
    })
}

/// The serving certificate someone else keeps in Secret `namespace/name`
/// (cert-manager: `tls.crt`, `tls.key`, `ca.crt`), read only; `None` while
/// it is not there yet.
pub async fn load_external(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<Option<CertBundle>> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let Some(secret) = api.get_opt(name).await.map_err(|source| Error::GetSecret {
        namespace: namespace.into(),
        name: name.into(),
        source,
    })?
    else {
        return Ok(None);
    };
    Ok(external_bundle(&secret))
}

/// A bundle from a cert-manager style Secret; `None` while incomplete.
fn external_bundle(s: &Secret) -> Option<CertBundle> {
    let get = |k: &str| {
        s.data
            .as_ref()
            .and_then(|d| d.get(k))
            .filter(|v| !v.0.is_empty())
            .map(|v| String::from_utf8_lossy(&v.0).into_owned())
    };
    Some(CertBundle {
        ca_pem: get(CA_CRT).unwrap_or_default(),
        ca_key_pem: String::new(),
        cert_pem: get(TLS_CRT)?,
        key_pem: get(TLS_KEY)?,
        not_after: Timestamp::MAX,
        dns_names: Vec::new(),
    })
}

/// The current bundle from Secret `namespace/name`, creating or renewing
/// it as needed; safe to run in every replica at once.
pub async fn ensure(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    dns_names: &[String],
) -> Result<CertBundle> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let get_err = |source| Error::GetSecret {
        namespace: namespace.into(),
        name: name.into(),
        source,
    };
    let write_err = |source| Error::WriteSecret {
        namespace: namespace.into(),
        name: name.into(),
        source,
    };
    const TRIES: u32 = 5;
    for _ in 0..TRIES {
        let now = Timestamp::now();
        match api.get_opt(name).await.map_err(get_err)? {
            None => {
                let bundle = generate(dns_names, now, None)?;
                match api
                    .create(
                        &PostParams::default(),
                        &to_secret(&bundle, namespace, name, None),
                    )
                    .await
                {
                    Ok(_) => return Ok(bundle),
                    // Another replica made it first: use theirs.
                    Err(kube::Error::Api(e)) if e.code == 409 => continue,
                    Err(e) => return Err(write_err(e)),
                }
            }
            Some(secret) => {
                let existing = from_secret(&secret).ok();
                if let Some(b) = &existing
                    && !needs_renewal(b, dns_names, now)
                {
                    return Ok(b.clone());
                }
                // Renew with the same CA (so caBundle stays valid), or start over.
                let ca = existing
                    .as_ref()
                    .map(|b| (b.ca_pem.as_str(), b.ca_key_pem.as_str()));
                let bundle = generate(dns_names, now, ca)?;
                let mut update = to_secret(
                    &bundle,
                    namespace,
                    name,
                    secret.metadata.resource_version.clone(),
                );
                // Keep what others put on it (a Helm release's labels and
                // annotations: the chart creates the Secret empty).
                update.metadata.labels = secret.metadata.labels.clone();
                // A Secret's type cannot change (the chart makes it Opaque).
                if secret.type_.is_some() {
                    update.type_ = secret.type_.clone();
                }
                let mut annotations = secret.metadata.annotations.clone().unwrap_or_default();
                annotations.extend(update.metadata.annotations.take().unwrap_or_default());
                update.metadata.annotations = Some(annotations);
                match api.replace(name, &PostParams::default(), &update).await {
                    Ok(_) => return Ok(bundle),
                    // Another replica renewed it first: read theirs.
                    Err(kube::Error::Api(e)) if e.code == 409 => continue,
                    Err(e) => return Err(write_err(e)),
                }
            }
        }
    }
    Err(Error::CertContention(TRIES))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cert_manager_secret_is_read_once_it_has_a_certificate_and_key() {
        let secret = |pairs: &[(&str, &str)]| Secret {
            data: Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        };
        // As the chart creates it, before cert-manager fills it.
        assert!(external_bundle(&secret(&[(TLS_CRT, ""), (TLS_KEY, "")])).is_none());
        let b = external_bundle(&secret(&[
            (TLS_CRT, "CERT"),
            (TLS_KEY, "KEY"),
            (CA_CRT, "CA"),
        ]))
        .expect("filled");
        assert_eq!(
            (b.cert_pem.as_str(), b.key_pem.as_str(), b.ca_pem.as_str()),
            ("CERT", "KEY", "CA")
        );
    }

    fn names() -> Vec<String> {
        vec!["heartbeat-operator.heartbeat-system.svc".into()]
    }

    #[test]
    fn a_bundle_round_trips_through_its_secret() {
        let now = Timestamp::now();
        let b = generate(&names(), now, None).expect("generate");
        assert!(b.ca_pem.contains("BEGIN CERTIFICATE") && b.key_pem.contains("PRIVATE KEY"));
        let back = from_secret(&to_secret(&b, "ns", "tls", None)).expect("parse");
        assert_eq!(back, b);
    }

    #[test]
    fn renewal_is_due_near_the_end_or_for_other_names_and_keeps_the_ca() {
        let now = Timestamp::now();
        let b = generate(&names(), now, None).expect("generate");
        assert!(!needs_renewal(&b, &names(), now));
        let late = now
            .checked_add(Span::new().hours(24 * (LEAF_DAYS - 10)))
            .expect("late");
        assert!(needs_renewal(&b, &names(), late));
        assert!(needs_renewal(&b, &["other.svc".to_string()], now));
        let renewed = generate(&names(), late, Some((&b.ca_pem, &b.ca_key_pem))).expect("renew");
        assert_eq!(renewed.ca_pem, b.ca_pem);
        assert_ne!(renewed.cert_pem, b.cert_pem);
    }

    #[test]
    fn a_secret_missing_a_key_is_refused_with_its_name() {
        let b = generate(&names(), Timestamp::now(), None).expect("generate");
        let mut s = to_secret(&b, "ns", "tls", None);
        s.data.as_mut().expect("data").remove(TLS_KEY);
        assert_eq!(from_secret(&s), Err(format!("no {TLS_KEY}")));
    }
}
