//! The webhook's serving certificate: a CA and a leaf made with rcgen and
//! kept in one Secret that every replica shares. The first replica creates
//! it (create-if-absent: a replica that loses the race reads the winner's);
//! a leaf near its end is renewed with the same CA by one replica (an
//! update with the resourceVersion read, so replicas never fight) and the
//! others pick it up on their next read.
//!
//! The CA is rotated in phases (`advance`, pure but for fresh keys) so no
//! replica ever serves a leaf the API server does not trust: a year before
//! the CA ends a new one is added to the trust bundle (`ca.crt`) while the
//! old one still signs the leaf; a day later the leaf is re-signed by the
//! new CA; a day after that the old CA leaves the bundle. Each step is one
//! write of the Secret, and each replica writes a changed bundle into the
//! webhook configuration before it serves a leaf that may need it.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Span, Timestamp, civil::DateTime, tz::TimeZone};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::{Error, Result};

mod upkeep;
pub use upkeep::{Serving, upkeep};

/// Keys of the certificate Secret.
/// The trust bundle: every CA the API server is to trust (PEM, one or two).
pub const CA_CRT: &str = "ca.crt";
/// The key of the CA that signs the leaf.
const CA_KEY: &str = "ca.key";
/// The CA that signs the leaf (a Secret written before CA rotation has
/// only `ca.crt`, which then is that CA).
const CA_CURRENT_CRT: &str = "ca-current.crt";
/// The next CA and its key, while it is added but does not sign yet.
const CA_NEXT_CRT: &str = "ca-next.crt";
const CA_NEXT_KEY: &str = "ca-next.key";
/// The previous CA, while it stays trusted after the switch.
const CA_PREVIOUS_CRT: &str = "ca-previous.crt";
/// The serving certificate (the kubernetes.io/tls keys).
pub const TLS_CRT: &str = "tls.crt";
/// Its private key.
pub const TLS_KEY: &str = "tls.key";
/// When the leaf expires (RFC 3339), so renewal needs no X.509 parsing.
const ANNOTATION_NOT_AFTER: &str = "heartbeat.dev/not-after";
/// The DNS names the leaf was made for, comma-separated.
const ANNOTATION_DNS_NAMES: &str = "heartbeat.dev/dns-names";
/// When the signing CA expires (RFC 3339); a Secret written before CA
/// rotation lacks it and the CA's own notAfter is read instead.
const ANNOTATION_CA_NOT_AFTER: &str = "heartbeat.dev/ca-not-after";
/// The signing CA's generation (0, 1, ...: its name's suffix).
const ANNOTATION_CA_GENERATION: &str = "heartbeat.dev/ca-generation";
/// Where a CA rotation stands: `added` or `switched` (absent: none).
const ANNOTATION_CA_ROTATION: &str = "heartbeat.dev/ca-rotation";
/// When that phase began (RFC 3339).
const ANNOTATION_CA_ROTATION_SINCE: &str = "heartbeat.dev/ca-rotation-since";
/// When the other CA of the bundle (next or previous) expires.
const ANNOTATION_CA_OTHER_NOT_AFTER: &str = "heartbeat.dev/ca-other-not-after";
/// Every annotation this module writes: a write replaces all of them, so
/// none of an earlier phase is left behind.
const OWN_ANNOTATIONS: [&str; 7] = [
    ANNOTATION_NOT_AFTER,
    ANNOTATION_DNS_NAMES,
    ANNOTATION_CA_NOT_AFTER,
    ANNOTATION_CA_GENERATION,
    ANNOTATION_CA_ROTATION,
    ANNOTATION_CA_ROTATION_SINCE,
    ANNOTATION_CA_OTHER_NOT_AFTER,
];
const CA_COMMON_NAME: &str = "heartbeat-operator-webhook-ca";

/// How long the operator's certificates live and when they are replaced
/// (`--cert-*` flags; the defaults are for production, a test shortens
/// them to see renewals and rotations happen).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    /// A serving certificate's validity.
    pub leaf: SignedDuration,
    /// It is renewed this long before it expires.
    pub renew_before: SignedDuration,
    /// A CA's validity.
    pub ca: SignedDuration,
    /// A CA rotation starts this long before the CA expires.
    pub ca_renew_before: SignedDuration,
    /// How long each rotation phase lasts before the next: every replica
    /// has read the Secret and written the bundle many times over by then.
    pub ca_overlap: SignedDuration,
}

const fn days(d: i64) -> SignedDuration {
    SignedDuration::from_hours(24 * d)
}

impl Default for Lifetimes {
    fn default() -> Lifetimes {
        Lifetimes {
            leaf: days(365),
            renew_before: days(30),
            ca: days(3650),
            ca_renew_before: days(365),
            ca_overlap: days(1),
        }
    }
}

impl Lifetimes {
    /// Why these lifetimes cannot work with replicas that read the Secret
    /// every `check_every`, if they cannot: each certificate must outlive
    /// its renewal margin; a rotation's two phases must fit in the CA's
    /// margin and leave its successor a steady stretch before its own
    /// rotation; and every replica must read the Secret several times in
    /// each margin and phase (the rotation is safe only once all have).
    pub fn check(&self, check_every: SignedDuration) -> std::result::Result<(), String> {
        let positive = [
            ("leaf lifetime", self.leaf),
            ("leaf renew-before", self.renew_before),
            ("CA lifetime", self.ca),
            ("CA renew-before", self.ca_renew_before),
            ("CA overlap", self.ca_overlap),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, d)| !d.is_positive()) {
            return Err(format!("the certificate {name} must be positive"));
        }
        let times = |d: SignedDuration, n: i32| d.checked_mul(n).unwrap_or(SignedDuration::MAX);
        if self.renew_before >= self.leaf {
            return Err("the leaf's renew-before must be shorter than its lifetime".into());
        }
        if self.ca_renew_before >= self.ca {
            return Err("the CA's renew-before must be shorter than its lifetime".into());
        }
        if times(self.ca_overlap, 2) >= self.ca_renew_before {
            return Err(
                "two CA overlaps (added, then switched) must fit in the CA's renew-before".into(),
            );
        }
        if self.ca - self.ca_renew_before <= times(self.ca_overlap, 2) {
            return Err("a new CA must outlast its predecessor's rotation (two overlaps) before its own starts: lengthen the CA lifetime or shorten its renew-before".into());
        }
        let reads = times(check_every, 3);
        if self.renew_before < reads || self.ca_overlap < reads {
            return Err(format!(
                "the leaf's renew-before and the CA overlap must each last three certificate checks ({}s) at least",
                reads.as_secs()
            ));
        }
        Ok(())
    }
}

/// One certificate authority the operator made.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Authority {
    cert_pem: String,
    /// Empty for a previous CA: it is trusted still but signs no more.
    key_pem: String,
    not_after: Timestamp,
    /// Its name's suffix, so successive CAs have distinct names.
    generation: u32,
}

/// Where a CA rotation stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Rotation {
    /// The current CA alone is trusted, and signs the leaf.
    Steady,
    /// Since `since` the next CA is trusted too; the current one still signs.
    Added { next: Authority, since: Timestamp },
    /// Since `since` the current (new) CA signs; the previous one is still trusted.
    Switched {
        previous: Authority,
        since: Timestamp,
    },
}

/// The operator's CAs: the one that signs the leaf, and a rotation's other.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Authorities {
    current: Authority,
    rotation: Rotation,
}

impl Authorities {
    /// Every CA to trust, the older first.
    fn trusted(&self) -> Vec<&Authority> {
        match &self.rotation {
            Rotation::Steady => vec![&self.current],
            Rotation::Added { next, .. } => vec![&self.current, next],
            Rotation::Switched { previous, .. } => vec![previous, &self.current],
        }
    }
}

/// The trust bundle and the serving certificate, as PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertBundle {
    /// Every CA the API server is to trust (the webhook's caBundle).
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    /// When the leaf expires (`Timestamp::MAX`: unknown).
    pub not_after: Timestamp,
    pub dns_names: Vec<String>,
    /// When the first CA of `ca_pem` to expire does, when known.
    pub ca_not_after: Option<Timestamp>,
    /// The operator's own CAs (`None` for cert-manager's certificate).
    authorities: Option<Authorities>,
}

impl CertBundle {
    fn assemble(
        authorities: Authorities,
        (cert_pem, key_pem, not_after): (String, String, Timestamp),
        dns_names: &[String],
    ) -> CertBundle {
        let trusted = authorities.trusted();
        CertBundle {
            ca_pem: trusted
                .iter()
                .map(|a| format!("{}\n", a.cert_pem.trim_end()))
                .collect(),
            ca_not_after: trusted.iter().map(|a| a.not_after).min(),
            cert_pem,
            key_pem,
            not_after,
            dns_names: dns_names.to_vec(),
            authorities: Some(authorities),
        }
    }
}

/// Sets `p`'s validity: from the start of the day before `now` (UTC: a
/// peer's clock may be behind) to `lifetime` after `now`, to the second;
/// returns its end.
fn set_validity(
    p: &mut CertificateParams,
    now: Timestamp,
    lifetime: SignedDuration,
) -> Result<Timestamp> {
    let out_of_range = |source| Error::CertValidity {
        now,
        lifetime,
        source,
    };
    // X.509 dates have whole seconds.
    let end = now
        .checked_add(lifetime)
        .and_then(|t| Timestamp::from_second(t.as_second()))
        .map_err(out_of_range)?;
    let start = now
        .to_zoned(TimeZone::UTC)
        .date()
        .checked_sub(Span::new().days(1))
        .map_err(out_of_range)?;
    // Midnight UTC of `date` plus `seconds` (jiff's month, 1..=12, and
    // day, 1..=31, are never negative).
    let x509 = |date: jiff::civil::Date, seconds: u64| {
        rcgen::date_time_ymd(
            i32::from(date.year()),
            date.month().unsigned_abs(),
            date.day().unsigned_abs(),
        ) + std::time::Duration::from_secs(seconds)
    };
    p.not_before = x509(start, 0);
    let end_utc = end.to_zoned(TimeZone::UTC);
    let since_midnight = end_utc.time().duration_since(jiff::civil::Time::midnight());
    p.not_after = x509(end_utc.date(), since_midnight.as_secs().unsigned_abs());
    Ok(end)
}

/// The name of the CA of `generation`: the first keeps the name CAs had
/// before rotation, later ones carry their generation.
fn ca_common_name(generation: u32) -> String {
    if generation == 0 {
        CA_COMMON_NAME.to_string()
    } else {
        format!("{CA_COMMON_NAME}-{generation}")
    }
}

/// The CA's parameters: the same for a generation every time, so a
/// renewal signs with the stored CA key under the CA's name.
fn ca_params(
    generation: u32,
    now: Timestamp,
    lifetime: SignedDuration,
) -> Result<(CertificateParams, Timestamp)> {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, ca_common_name(generation));
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let not_after = set_validity(&mut p, now, lifetime)?;
    Ok((p, not_after))
}

/// A new CA of `generation`.
fn new_authority(generation: u32, now: Timestamp, lt: &Lifetimes) -> Result<Authority> {
    let key = KeyPair::generate().map_err(Error::MakeCert)?;
    let (params, not_after) = ca_params(generation, now, lt.ca)?;
    let cert = params.self_signed(&key).map_err(Error::MakeCert)?;
    Ok(Authority {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        not_after,
        generation,
    })
}

/// A serving certificate for `dns_names` signed by `ca`: (cert, key, end).
fn sign_leaf(
    dns_names: &[String],
    now: Timestamp,
    ca: &Authority,
    lt: &Lifetimes,
) -> Result<(String, String, Timestamp)> {
    let ca_key = KeyPair::from_pem(&ca.key_pem).map_err(Error::MakeCert)?;
    let (params, _) = ca_params(ca.generation, now, lt.ca)?;
    let issuer = Issuer::new(params, ca_key);
    let mut leaf = CertificateParams::new(dns_names.to_vec()).map_err(Error::MakeCert)?;
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        dns_names.first().cloned().unwrap_or_default(),
    );
    leaf.distinguished_name = dn;
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    // Never past the CA that signs it (as cert-manager's CA issuer does).
    let until_ca_end = ca.not_after.duration_since(now).max(SignedDuration::ZERO);
    let not_after = set_validity(&mut leaf, now, lt.leaf.min(until_ca_end))?;
    let leaf_key = KeyPair::generate().map_err(Error::MakeCert)?;
    let cert = leaf
        .signed_by(&leaf_key, &issuer)
        .map_err(Error::MakeCert)?;
    Ok((cert.pem(), leaf_key.serialize_pem(), not_after))
}

/// Makes a new CA (the first generation) and a serving certificate for
/// `dns_names` signed by it.
pub fn generate(dns_names: &[String], now: Timestamp, lt: &Lifetimes) -> Result<CertBundle> {
    let authorities = Authorities {
        current: new_authority(0, now, lt)?,
        rotation: Rotation::Steady,
    };
    let leaf = sign_leaf(dns_names, now, &authorities.current, lt)?;
    Ok(CertBundle::assemble(authorities, leaf, dns_names))
}

/// Whether the leaf of `bundle` must be renewed at `now` for `dns_names`.
pub fn needs_renewal(
    bundle: &CertBundle,
    dns_names: &[String],
    now: Timestamp,
    lt: &Lifetimes,
) -> bool {
    let renew_at = bundle
        .not_after
        .checked_sub(lt.renew_before)
        .unwrap_or(bundle.not_after);
    now >= renew_at || bundle.dns_names != dns_names
}

/// `t + d`, or the end of time when that overflows.
fn plus(t: Timestamp, d: SignedDuration) -> Timestamp {
    t.checked_add(d).unwrap_or(Timestamp::MAX)
}

/// What the Secret is to hold after `bundle` at `now`, `None` when it is
/// to stay: at most one rotation step (each step is written, and so
/// applied by the replicas, before the next), and a leaf renewed when due
/// or when the CA that signs it changes. A bundle without the operator's
/// CAs (unreadable) is started over.
pub fn advance(
    bundle: &CertBundle,
    dns_names: &[String],
    now: Timestamp,
    lt: &Lifetimes,
) -> Result<Option<CertBundle>> {
    let Some(authorities) = &bundle.authorities else {
        return generate(dns_names, now, lt).map(Some);
    };
    let mut next = authorities.clone();
    let mut resign = needs_renewal(bundle, dns_names, now, lt);
    let current = &authorities.current;
    let stepped = match &authorities.rotation {
        // (1) Near the CA's end a new one is trusted alongside; the old one
        // still signs the leaf, which every replica keeps serving.
        Rotation::Steady
            if now
                >= current
                    .not_after
                    .checked_sub(lt.ca_renew_before)
                    .unwrap_or(Timestamp::MIN) =>
        {
            next.rotation = Rotation::Added {
                next: new_authority(current.generation.saturating_add(1), now, lt)?,
                since: now,
            };
            true
        }
        // (2) Once the bundle with both has been out a while, the new CA
        // signs the leaf (at once if the old one has ended: nothing is lost).
        Rotation::Added { next: new, since }
            if now >= plus(*since, lt.ca_overlap) || now >= current.not_after =>
        {
            next.current = new.clone();
            next.rotation = Rotation::Switched {
                previous: Authority {
                    key_pem: String::new(),
                    ..current.clone()
                },
                since: now,
            };
            resign = true;
            true
        }
        // (3) Once every replica serves the new leaf, the old CA goes.
        Rotation::Switched { previous, since }
            if now >= plus(*since, lt.ca_overlap) || now >= previous.not_after =>
        {
            next.rotation = Rotation::Steady;
            true
        }
        _ => false,
    };
    if !stepped && !resign {
        return Ok(None);
    }
    let leaf = if resign {
        sign_leaf(dns_names, now, &next.current, lt)?
    } else {
        (
            bundle.cert_pem.clone(),
            bundle.key_pem.clone(),
            bundle.not_after,
        )
    };
    Ok(Some(CertBundle::assemble(next, leaf, dns_names)))
}

/// One DER element at the start of `der`: (tag, contents, the rest).
fn der_element(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let len = rest
            .get(..n)?
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, rest.get(n..)?)
    };
    Some((tag, rest.get(..len)?, rest.get(len..)?))
}

/// A certificate's notAfter, read from its DER (Certificate ->
/// tbsCertificate -> [version] serial signature issuer validity); `None`
/// when it is not that shape. Enough for a CA written before its expiry
/// was recorded, and for cert-manager's certificates, without an X.509
/// crate.
fn der_not_after(der: &[u8]) -> Option<Timestamp> {
    let (_, certificate, _) = der_element(der)?;
    let (_, mut tbs, _) = der_element(certificate)?;
    if tbs.first() == Some(&0xa0) {
        tbs = der_element(tbs)?.2;
    }
    for _ in 0..3 {
        tbs = der_element(tbs)?.2;
    }
    let (_, validity, _) = der_element(tbs)?;
    let (_, _, after) = der_element(validity)?;
    let (tag, time, _) = der_element(after)?;
    let text = std::str::from_utf8(time).ok()?;
    let digits = match tag {
        // UTCTime: YYMMDDHHMMSSZ, 50..99 are 19xx.
        0x17 => {
            let yy: u8 = text.get(..2)?.parse().ok()?;
            format!("{}{text}", if yy >= 50 { "19" } else { "20" })
        }
        // GeneralizedTime: YYYYMMDDHHMMSSZ.
        0x18 => text.to_string(),
        _ => return None,
    };
    let digits = digits.strip_suffix('Z')?;
    let num = |r: std::ops::Range<usize>| digits.get(r)?.parse::<i16>().ok();
    if digits.len() != 14 {
        return None;
    }
    let at = DateTime::new(
        num(0..4)?,
        i8::try_from(num(4..6)?).ok()?,
        i8::try_from(num(6..8)?).ok()?,
        i8::try_from(num(8..10)?).ok()?,
        i8::try_from(num(10..12)?).ok()?,
        i8::try_from(num(12..14)?).ok()?,
        0,
    )
    .ok()?;
    at.to_zoned(TimeZone::UTC).ok().map(|z| z.timestamp())
}

/// The notAfter of every certificate in `pem`; `None` if any is unreadable.
fn pem_not_afters(pem: &str) -> Option<Vec<Timestamp>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|der| der.ok().and_then(|d| der_not_after(&d)))
        .collect()
}

fn to_secret(
    bundle: &CertBundle,
    namespace: &str,
    name: &str,
    resource_version: Option<String>,
) -> Secret {
    let mut data = vec![
        (CA_CRT, bundle.ca_pem.clone()),
        (TLS_CRT, bundle.cert_pem.clone()),
        (TLS_KEY, bundle.key_pem.clone()),
    ];
    let mut annotations = vec![
        (ANNOTATION_NOT_AFTER, bundle.not_after.to_string()),
        (ANNOTATION_DNS_NAMES, bundle.dns_names.join(",")),
    ];
    if let Some(a) = &bundle.authorities {
        data.push((CA_CURRENT_CRT, a.current.cert_pem.clone()));
        data.push((CA_KEY, a.current.key_pem.clone()));
        annotations.push((ANNOTATION_CA_NOT_AFTER, a.current.not_after.to_string()));
        annotations.push((ANNOTATION_CA_GENERATION, a.current.generation.to_string()));
        let (phase, other, since) = match &a.rotation {
            Rotation::Steady => (None, None, None),
            Rotation::Added { next, since } => {
                data.push((CA_NEXT_CRT, next.cert_pem.clone()));
                data.push((CA_NEXT_KEY, next.key_pem.clone()));
                (Some("added"), Some(next), Some(since))
            }
            Rotation::Switched { previous, since } => {
                data.push((CA_PREVIOUS_CRT, previous.cert_pem.clone()));
                (Some("switched"), Some(previous), Some(since))
            }
        };
        if let (Some(phase), Some(other), Some(since)) = (phase, other, since) {
            annotations.push((ANNOTATION_CA_ROTATION, phase.to_string()));
            annotations.push((ANNOTATION_CA_ROTATION_SINCE, since.to_string()));
            annotations.push((ANNOTATION_CA_OTHER_NOT_AFTER, other.not_after.to_string()));
        }
    }
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            resource_version,
            annotations: Some(
                annotations
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
            ),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(
            data.into_iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.into_bytes())))
                .collect(),
        ),
        ..Default::default()
    }
}

/// Why a Secret is not a bundle this module wrote. It names keys and
/// annotations, never a value read from the Secret.
#[derive(Debug, thiserror::Error)]
pub enum SecretProblem {
    #[error("no data key {0}")]
    MissingKey(&'static str),
    #[error("no annotation {0}")]
    MissingAnnotation(&'static str),
    #[error("annotation {annotation} is not an RFC 3339 time: {source}")]
    BadTime {
        annotation: &'static str,
        source: jiff::Error,
    },
    #[error("annotation {ANNOTATION_CA_GENERATION} is not a generation number: {0}")]
    BadGeneration(#[source] std::num::ParseIntError),
    #[error("{CA_CRT} has no readable notAfter")]
    NoCaNotAfter,
    #[error("annotation {ANNOTATION_CA_ROTATION} names no known phase")]
    UnknownPhase,
}

fn from_secret(s: &Secret) -> Result<CertBundle, SecretProblem> {
    let get = |k: &'static str| {
        s.data
            .as_ref()
            .and_then(|d| d.get(k))
            .map(|v| String::from_utf8_lossy(&v.0).into_owned())
            .ok_or(SecretProblem::MissingKey(k))
    };
    let ann = |k: &'static str| {
        s.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(k))
            .cloned()
            .ok_or(SecretProblem::MissingAnnotation(k))
    };
    let time = |k: &'static str| -> Result<Timestamp, SecretProblem> {
        ann(k)?.parse().map_err(|source| SecretProblem::BadTime {
            annotation: k,
            source,
        })
    };
    // A Secret written before CA rotation: `ca.crt` is the one CA, of the
    // first generation, and its end is read off the certificate.
    let current_pem = get(CA_CURRENT_CRT).or_else(|_| get(CA_CRT))?;
    let current = Authority {
        not_after: match time(ANNOTATION_CA_NOT_AFTER) {
            Ok(t) => t,
            Err(_) => pem_not_afters(&current_pem)
                .and_then(|t| t.into_iter().min())
                .ok_or(SecretProblem::NoCaNotAfter)?,
        },
        generation: match ann(ANNOTATION_CA_GENERATION) {
            Ok(g) => g.parse().map_err(SecretProblem::BadGeneration)?,
            Err(_) => 0,
        },
        key_pem: get(CA_KEY)?,
        cert_pem: current_pem,
    };
    let other = |cert: &'static str,
                 key: Option<&'static str>,
                 generation: u32|
     -> Result<Authority, SecretProblem> {
        Ok(Authority {
            cert_pem: get(cert)?,
            key_pem: key.map(get).transpose()?.unwrap_or_default(),
            not_after: time(ANNOTATION_CA_OTHER_NOT_AFTER)?,
            generation,
        })
    };
    let rotation = match ann(ANNOTATION_CA_ROTATION).ok().as_deref() {
        None => Rotation::Steady,
        Some("added") => Rotation::Added {
            next: other(
                CA_NEXT_CRT,
                Some(CA_NEXT_KEY),
                current.generation.saturating_add(1),
            )?,
            since: time(ANNOTATION_CA_ROTATION_SINCE)?,
        },
        Some("switched") => Rotation::Switched {
            previous: other(CA_PREVIOUS_CRT, None, current.generation.saturating_sub(1))?,
            since: time(ANNOTATION_CA_ROTATION_SINCE)?,
        },
        Some(_) => return Err(SecretProblem::UnknownPhase),
    };
    let dns_names: Vec<String> = ann(ANNOTATION_DNS_NAMES)?
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    Ok(CertBundle::assemble(
        Authorities { current, rotation },
        (get(TLS_CRT)?, get(TLS_KEY)?, time(ANNOTATION_NOT_AFTER)?),
        &dns_names,
    ))
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
/// Its expiries are read off the certificates (unknown if unreadable).
fn external_bundle(s: &Secret) -> Option<CertBundle> {
    let get = |k: &str| {
        s.data
            .as_ref()
            .and_then(|d| d.get(k))
            .filter(|v| !v.0.is_empty())
            .map(|v| String::from_utf8_lossy(&v.0).into_owned())
    };
    let cert_pem = get(TLS_CRT)?;
    let ca_pem = get(CA_CRT).unwrap_or_default();
    Some(CertBundle {
        not_after: pem_not_afters(&cert_pem)
            .and_then(|t| t.first().copied())
            .unwrap_or(Timestamp::MAX),
        ca_not_after: pem_not_afters(&ca_pem).and_then(|t| t.into_iter().min()),
        ca_pem,
        cert_pem,
        key_pem: get(TLS_KEY)?,
        dns_names: Vec::new(),
        authorities: None,
    })
}

/// The annotations of a write over `existing`: everyone else's kept,
/// this module's replaced by `ours`.
fn merged_annotations(
    existing: Option<&BTreeMap<String, String>>,
    ours: BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut merged: BTreeMap<String, String> = existing
        .into_iter()
        .flatten()
        .filter(|(k, _)| !OWN_ANNOTATIONS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    merged.extend(ours);
    merged
}

/// The current bundle from Secret `namespace/name`, creating, renewing or
/// rotating it as `advance` says; safe to run in every replica at once.
pub async fn ensure(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    dns_names: &[String],
    lt: &Lifetimes,
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
                let bundle = generate(dns_names, now, lt)?;
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
                // Unreadable (the chart creates it empty): start over.
                let bundle = match from_secret(&secret) {
                    Ok(existing) => match advance(&existing, dns_names, now, lt)? {
                        None => return Ok(existing),
                        Some(b) => b,
                    },
                    Err(why) => {
                        tracing::info!(%namespace, %name, %why, "certificate Secret unreadable; making a new one");
                        generate(dns_names, now, lt)?
                    }
                };
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
                update.metadata.annotations = Some(merged_annotations(
                    secret.metadata.annotations.as_ref(),
                    update.metadata.annotations.take().unwrap_or_default(),
                ));
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
    use std::sync::Arc;
    use std::time::Duration;

    use rustls_pki_types::{ServerName, UnixTime};
    use tokio_rustls::rustls::RootCertStore;
    use tokio_rustls::rustls::client::WebPkiServerVerifier;
    use tokio_rustls::rustls::client::danger::ServerCertVerifier;
    use tokio_rustls::rustls::crypto::ring;

    use super::*;

    // The production lifetimes, in the units the rules below are written in.
    const LEAF_DAYS: i64 = 365;
    const CA_DAYS: i64 = 3650;
    const CA_RENEW_BEFORE_DAYS: i64 = 365;
    const CA_OVERLAP: SignedDuration = SignedDuration::from_hours(24);

    fn lt() -> Lifetimes {
        Lifetimes::default()
    }

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
        // Not certificates: expiries unknown, never made up.
        assert_eq!((b.not_after, b.ca_not_after), (Timestamp::MAX, None));
    }

    /// Rule: lifetimes in seconds (a test's) date certificates to the
    /// second, in the certificates themselves too, the leaf's renewal and
    /// each rotation step come exactly when they say, a leaf never outlives
    /// its CA, and lifetimes that cannot work are refused.
    #[test]
    fn short_lifetimes_date_to_the_second_and_step_on_time() {
        let secs = SignedDuration::from_secs;
        let lt = Lifetimes {
            leaf: secs(40),
            renew_before: secs(25),
            ca: secs(120),
            ca_renew_before: secs(70),
            ca_overlap: secs(15),
        };
        let check = secs(1);
        assert_eq!(lt.check(check), Ok(()));
        assert_eq!(Lifetimes::default().check(secs(60)), Ok(()));
        let t0 = at("2030-06-01T12:00:00.5Z");
        let t = |s: i64| plus(at("2030-06-01T12:00:00Z"), secs(s));
        let b = generate(&names(), t0, &lt).expect("generate");
        assert_eq!((b.not_after, b.ca_not_after), (t(40), Some(t(120))));
        let secret = Secret {
            data: Some(BTreeMap::from([
                (TLS_CRT.into(), ByteString(b.cert_pem.clone().into_bytes())),
                (TLS_KEY.into(), ByteString(b.key_pem.clone().into_bytes())),
                (CA_CRT.into(), ByteString(b.ca_pem.clone().into_bytes())),
            ])),
            ..Secret::default()
        };
        let read = external_bundle(&secret).expect("filled");
        assert_eq!((read.not_after, read.ca_not_after), (t(40), Some(t(120))));

        assert_eq!(advance(&b, &names(), t(14), &lt).expect("advance"), None);
        let renewed = advance(&b, &names(), t(15), &lt)
            .expect("advance")
            .expect("renewed at 15 s");
        assert_eq!(renewed.not_after, t(55));
        let rotation = |b: &CertBundle| {
            b.authorities.as_ref().map(|a| match a.rotation {
                Rotation::Steady => "steady",
                Rotation::Added { .. } => "added",
                Rotation::Switched { .. } => "switched",
            })
        };
        let added = advance(&renewed, &names(), t(50), &lt)
            .expect("advance")
            .expect("rotation starts 70 s before the CA ends");
        assert_eq!(rotation(&added), Some("added"));
        assert_eq!(added.ca_pem.matches("BEGIN CERTIFICATE").count(), 2);
        assert_eq!(
            advance(&added, &names(), t(64), &lt).expect("advance"),
            None
        );
        let switched = advance(&added, &names(), t(65), &lt)
            .expect("advance")
            .expect("the new CA signs after one overlap");
        assert_eq!(rotation(&switched), Some("switched"));
        assert_ne!(switched.cert_pem, added.cert_pem);
        assert_eq!(switched.ca_pem.matches("BEGIN CERTIFICATE").count(), 2);
        let steady = advance(&switched, &names(), t(80), &lt)
            .expect("advance")
            .expect("the old CA leaves after another");
        assert_eq!(rotation(&steady), Some("steady"));
        assert_eq!(steady.ca_pem.matches("BEGIN CERTIFICATE").count(), 1);

        for bad in [
            Lifetimes {
                renew_before: secs(40),
                ..lt
            },
            Lifetimes {
                ca_renew_before: secs(130),
                ..lt
            },
            Lifetimes {
                ca_overlap: secs(36),
                ..lt
            },
            Lifetimes {
                ca: secs(100),
                ..lt
            },
            Lifetimes {
                ca_overlap: secs(2),
                ..lt
            },
            Lifetimes {
                leaf: secs(0),
                ..lt
            },
        ] {
            assert!(bad.check(check).is_err(), "{bad:?}");
        }
        // Too few reads of the Secret in a phase for replicas checking every 10 s.
        assert!(lt.check(secs(10)).is_err());

        // A leaf never outlives the CA that signs it.
        let near_end = advance(&b, &names(), t(95), &lt)
            .expect("advance")
            .expect("renewed and rotating");
        assert!(near_end.not_after <= t(120), "{:?}", near_end.not_after);
    }

    /// Rule: the expiries of cert-manager's certificates are read off them
    /// (for the expiry metrics), the CA's as the first of its bundle to end.
    #[test]
    fn a_cert_manager_secrets_expiries_are_read_off_its_certificates() {
        let now = at("2030-06-01T00:00:00Z");
        let b = generate(&names(), now, &lt()).expect("generate");
        let later = generate(&names(), at("2031-06-01T00:00:00Z"), &lt()).expect("generate");
        let secret = Secret {
            data: Some(BTreeMap::from([
                (TLS_CRT.into(), ByteString(b.cert_pem.clone().into_bytes())),
                (TLS_KEY.into(), ByteString(b.key_pem.clone().into_bytes())),
                (
                    CA_CRT.into(),
                    ByteString(format!("{}{}", later.ca_pem, b.ca_pem).into_bytes()),
                ),
            ])),
            ..Secret::default()
        };
        let ext = external_bundle(&secret).expect("filled");
        assert_eq!(ext.not_after, b.not_after);
        assert_eq!(ext.ca_not_after, b.ca_not_after);
    }

    fn names() -> Vec<String> {
        vec!["heartbeat-operator.heartbeat-system.svc".into()]
    }

    fn at(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn days(t: Timestamp, d: i64) -> Timestamp {
        t.checked_add(SignedDuration::from_hours(24 * d))
            .expect("in range")
    }

    /// What a replica reads after `b` was written.
    fn round_trip(b: &CertBundle) -> CertBundle {
        from_secret(&to_secret(b, "ns", "tls", None)).expect("parse")
    }

    /// One check at `now`: what the Secret holds afterwards.
    fn check(b: &CertBundle, now: Timestamp) -> CertBundle {
        match advance(b, &names(), now, &lt()).expect("advance") {
            Some(next) => round_trip(&next),
            None => b.clone(),
        }
    }

    /// Whether a client trusting the CAs of `ca_pem` accepts `cert_pem`
    /// for the webhook's name at `now` (as the API server would).
    fn trusts(ca_pem: &str, cert_pem: &str, now: Timestamp) -> bool {
        let mut roots = RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(ca.expect("CA PEM")).expect("CA");
        }
        let verifier = WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(ring::default_provider()),
        )
        .build()
        .expect("verifier");
        let leaf = CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("leaf PEM");
        let name = ServerName::try_from(names()[0].clone()).expect("name");
        let secs = u64::try_from(now.as_second()).expect("after 1970");
        let time = UnixTime::since_unix_epoch(Duration::from_secs(secs));
        verifier
            .verify_server_cert(&leaf, &[], &name, &[], time)
            .is_ok()
    }

    fn generation(b: &CertBundle) -> u32 {
        b.authorities.as_ref().expect("own CAs").current.generation
    }

    fn ca_count(b: &CertBundle) -> usize {
        CertificateDer::pem_slice_iter(b.ca_pem.as_bytes()).count()
    }

    /// A bundle made at `t0` with its leaf renewed just before the CA's
    /// rotation window, and when that window opens.
    fn before_the_window() -> (CertBundle, Timestamp) {
        let t0 = at("2030-01-01T12:00:00Z");
        let b = generate(&names(), t0, &lt()).expect("generate");
        let window = days(b.ca_not_after.expect("ca end"), -CA_RENEW_BEFORE_DAYS);
        // The yearly leaf renewals up to there, the last one just before.
        let b = check(&b, days(window, -2));
        assert_eq!(
            advance(&b, &names(), days(window, -1), &lt()).expect("advance"),
            None
        );
        (b, window)
    }

    #[test]
    fn a_bundle_round_trips_through_its_secret() {
        let now = Timestamp::now();
        let b = generate(&names(), now, &lt()).expect("generate");
        assert!(b.ca_pem.contains("BEGIN CERTIFICATE") && b.key_pem.contains("PRIVATE KEY"));
        assert_eq!(round_trip(&b), b);
    }

    #[test]
    fn renewal_is_due_near_the_end_or_for_other_names_and_keeps_the_ca() {
        let now = Timestamp::now();
        let b = generate(&names(), now, &lt()).expect("generate");
        assert!(!needs_renewal(&b, &names(), now, &lt()));
        assert_eq!(advance(&b, &names(), now, &lt()).expect("advance"), None);
        let late = days(now, LEAF_DAYS - 10);
        assert!(needs_renewal(&b, &names(), late, &lt()));
        assert!(needs_renewal(&b, &["other.svc".to_string()], now, &lt()));
        let renewed = advance(&b, &names(), late, &lt())
            .expect("advance")
            .expect("renewed");
        assert_eq!(renewed.ca_pem, b.ca_pem);
        assert_ne!(renewed.cert_pem, b.cert_pem);
        assert!(trusts(&b.ca_pem, &renewed.cert_pem, late));
    }

    /// Rule: a validity past the calendar's end is an error naming the
    /// call and its lifetime, never a panic or a wrapped-around date.
    #[test]
    fn a_validity_past_the_calendars_end_is_a_cert_validity_error() {
        let mut p = CertificateParams::default();
        let day = SignedDuration::from_hours(24);
        let err = set_validity(&mut p, Timestamp::MAX, day).expect_err("past 9999");
        assert!(
            matches!(err, Error::CertValidity { lifetime, .. } if lifetime == day),
            "{err}"
        );
    }

    #[test]
    fn a_secret_missing_a_key_is_refused_with_its_name() {
        let b = generate(&names(), Timestamp::now(), &lt()).expect("generate");
        let mut s = to_secret(&b, "ns", "tls", None);
        s.data.as_mut().expect("data").remove(TLS_KEY);
        let err = from_secret(&s).expect_err("no tls.key");
        assert!(matches!(err, SecretProblem::MissingKey(TLS_KEY)), "{err}");
        assert_eq!(err.to_string(), format!("no data key {TLS_KEY}"));
    }

    /// Rule (rotation step 1): from a year before the CA ends, a new CA is
    /// added to the trust bundle while the old one still signs the leaf
    /// (the leaf served is not touched), and the CA's expiry is unchanged.
    #[test]
    fn a_year_before_the_ca_ends_a_new_ca_is_added_but_the_old_one_still_signs() {
        let (b, window) = before_the_window();
        let added = check(&b, window);
        assert_eq!(ca_count(&added), 2);
        assert!(added.ca_pem.starts_with(b.ca_pem.trim_end()));
        assert_eq!(added.cert_pem, b.cert_pem, "the leaf is not re-signed yet");
        assert_eq!(generation(&added), 0, "the old CA still signs");
        assert_eq!(added.ca_not_after, b.ca_not_after, "the earliest CA end");
        assert!(matches!(
            added.authorities.as_ref().map(|a| &a.rotation),
            Some(Rotation::Added { since, .. }) if *since == window
        ));
        // A leaf renewed during the overlap is still the old CA's.
        let renewed = advance(&added, &["other.svc".into()], days(window, 0), &lt())
            .expect("advance")
            .expect("renewed");
        assert_eq!(generation(&renewed), 0);
    }

    /// Rule (rotation step 2): the leaf is re-signed by the new CA only once
    /// the bundle with both has been out for the overlap, and not before.
    #[test]
    fn the_leaf_moves_to_the_new_ca_only_after_the_overlap() {
        let (b, window) = before_the_window();
        let added = check(&b, window);
        let almost = plus(window, CA_OVERLAP - SignedDuration::from_secs(1));
        assert_eq!(
            advance(&added, &names(), almost, &lt()).expect("advance"),
            None
        );
        let switched_at = plus(window, CA_OVERLAP);
        let switched = check(&added, switched_at);
        assert_ne!(switched.cert_pem, added.cert_pem);
        assert_eq!(generation(&switched), 1);
        assert_eq!(switched.ca_pem, added.ca_pem, "both still trusted");
        // Signed by the new CA: the old one alone does not accept it.
        assert!(!trusts(&b.ca_pem, &switched.cert_pem, switched_at));
        assert!(trusts(&switched.ca_pem, &switched.cert_pem, switched_at));
    }

    /// Rule (rotation step 3): the old CA leaves the bundle only after a
    /// further overlap, and then the bundle trusts no old-CA leaf.
    #[test]
    fn the_old_ca_is_dropped_after_a_second_overlap() {
        let (b, window) = before_the_window();
        let switched_at = plus(window, CA_OVERLAP);
        let switched = check(&check(&b, window), switched_at);
        let almost = plus(switched_at, CA_OVERLAP - SignedDuration::from_secs(1));
        assert_eq!(
            advance(&switched, &names(), almost, &lt()).expect("advance"),
            None
        );
        let dropped_at = plus(switched_at, CA_OVERLAP);
        let dropped = check(&switched, dropped_at);
        assert_eq!(ca_count(&dropped), 1);
        assert_eq!(dropped.cert_pem, switched.cert_pem, "the leaf is kept");
        assert!(!trusts(&dropped.ca_pem, &b.cert_pem, dropped_at));
        assert!(trusts(&dropped.ca_pem, &dropped.cert_pem, dropped_at));
        // The new CA's end is now the one reported, a decade on.
        assert!(dropped.ca_not_after > Some(days(dropped_at, CA_DAYS - 3)));
        // And nothing more happens until the next leaf renewal.
        assert_eq!(
            advance(&dropped, &names(), days(dropped_at, 30), &lt()).expect("advance"),
            None
        );
    }

    /// Rule: at every check through two rotations the trust bundle written
    /// accepts both the leaf written with it and the leaf written before
    /// (which replicas still serve until their next read: the bundle is
    /// applied first), and every step is written separately.
    #[test]
    fn every_step_of_a_rotation_keeps_the_served_leaf_trusted() {
        let (mut b, window) = before_the_window();
        let mut now = days(window, -1);
        let mut writes = 0;
        let mut generations = Vec::new();
        while now < days(window, 2 * (CA_DAYS - CA_RENEW_BEFORE_DAYS) - 10) {
            now = plus(now, SignedDuration::from_hours(6));
            let Some(next) = advance(&b, &names(), now, &lt()).expect("advance") else {
                continue;
            };
            let next = round_trip(&next);
            writes += 1;
            assert!(
                trusts(&next.ca_pem, &next.cert_pem, now),
                "the new leaf at {now}"
            );
            assert!(
                trusts(&next.ca_pem, &b.cert_pem, now),
                "the previous leaf at {now}"
            );
            generations.push(generation(&next));
            b = next;
        }
        assert_eq!(generation(&b), 2, "{generations:?}");
        // Per rotation 3 steps, and the yearly leaf renewals (some of them
        // the re-signing of step 2).
        assert!(writes >= 6, "{writes} writes");
    }

    /// Rule: successive CAs have distinct names (the first keeps the name
    /// CAs had before rotation), so a leaf's issuer names one CA.
    #[test]
    fn successive_cas_have_distinct_names() {
        let (b, window) = before_the_window();
        let added = check(&b, window);
        let Some(Authorities {
            current,
            rotation: Rotation::Added { next, .. },
        }) = &added.authorities
        else {
            panic!("not added: {added:?}");
        };
        let der = |pem: &str| CertificateDer::from_pem_slice(pem.as_bytes()).expect("PEM");
        let contains =
            |pem: &str, name: &str| der(pem).windows(name.len()).any(|w| w == name.as_bytes());
        assert!(contains(&current.cert_pem, CA_COMMON_NAME));
        assert!(!contains(&current.cert_pem, &ca_common_name(1)));
        assert!(contains(&next.cert_pem, &ca_common_name(1)));
    }

    /// Rule: a Secret written before CA rotation (no `ca-current.crt`, no CA
    /// annotations) is read as generation 0 with the CA's end read off the
    /// certificate, and its rotation starts on time.
    #[test]
    fn a_secret_from_before_rotation_is_read_with_the_cas_end_from_the_certificate() {
        let (b, window) = before_the_window();
        let mut s = to_secret(&b, "ns", "tls", None);
        s.data.as_mut().expect("data").remove(CA_CURRENT_CRT);
        let ann = s.metadata.annotations.as_mut().expect("annotations");
        ann.remove(ANNOTATION_CA_NOT_AFTER);
        ann.remove(ANNOTATION_CA_GENERATION);
        let old = from_secret(&s).expect("parse");
        assert_eq!(old, b);
        assert_eq!(ca_count(&check(&old, window)), 2);
    }

    /// Rule: a write replaces every annotation of this module (none of an
    /// earlier phase is left) and keeps everyone else's.
    #[test]
    fn a_write_replaces_this_modules_annotations_and_keeps_others() {
        let (b, window) = before_the_window();
        let added = to_secret(&check(&b, window), "ns", "tls", None);
        let mut existing = added.metadata.annotations.clone().expect("annotations");
        existing.insert("meta.helm.sh/release-name".into(), "rel".into());
        let steady = to_secret(&b, "ns", "tls", None);
        let merged = merged_annotations(
            Some(&existing),
            steady.metadata.annotations.clone().unwrap_or_default(),
        );
        assert!(!merged.contains_key(ANNOTATION_CA_ROTATION), "{merged:?}");
        assert_eq!(
            merged.get("meta.helm.sh/release-name").map(String::as_str),
            Some("rel")
        );
        let s = Secret {
            metadata: ObjectMeta {
                annotations: Some(merged),
                ..steady.metadata
            },
            ..steady
        };
        assert_eq!(from_secret(&s).expect("parse"), b);
    }
}
