//! What a monitor's author may ask of the sidecar in other people's pods:
//! its image only from allowlisted repositories, its resources within set
//! maxima, its touch file only under the fixed directory. The chart's
//! ValidatingAdmissionPolicy refuses such a monitor when it is written;
//! this is the same policy at injection, for a monitor that slipped past
//! (the policy not installed, or the monitor older than it).

use std::cmp::Ordering;
use std::collections::BTreeMap;

use heartbeat_crds::monitor::health_file_path_is_allowed;
use heartbeat_crds::monitor::{AppHealthMode, HEALTH_FILE_DIR, HeartbeatMonitorSpec};
use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// The operator's bounds on a monitor's `spec.sidecar` (flags
/// `--sidecar-image-allowlist`, `--sidecar-max-*`; chart `sidecarPolicy`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SidecarPolicy {
    /// Repositories `spec.sidecar.image` may name (`repo`, `repo:tag`,
    /// `repo@sha256:...`, `repo:tag@sha256:...`), besides the default image's.
    pub allowed_image_repositories: Vec<String>,
    /// The most a monitor may request, by resource; a resource not listed
    /// may not be requested at all.
    pub max_requests: BTreeMap<String, Quantity>,
    /// The most a monitor may set as a limit, by resource; likewise.
    pub max_limits: BTreeMap<String, Quantity>,
}

/// The chart's default maxima: 200m CPU and 256Mi memory, requested or limit.
pub fn default_maxima() -> BTreeMap<String, Quantity> {
    BTreeMap::from([
        ("cpu".to_string(), Quantity("200m".into())),
        ("memory".to_string(), Quantity("256Mi".into())),
    ])
}

/// A refusal: the monitor's field and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The field, as a path from the object (`spec.sidecar.image`).
    pub field: String,
    /// Why, for a person.
    pub why: String,
}

fn refuse(field: impl Into<String>, why: impl Into<String>) -> Refusal {
    Refusal {
        field: field.into(),
        why: why.into(),
    }
}

/// Checks what `spec` asks of the sidecar against `policy`; `default_image`
/// (the operator's own) is always allowed.
pub fn check(
    spec: &HeartbeatMonitorSpec,
    policy: &SidecarPolicy,
    default_image: &str,
) -> Result<(), Refusal> {
    if spec.app_health.mode == AppHealthMode::File {
        let path = spec.app_health.file.as_ref().map(|f| f.path.as_str());
        if let Some(path) = path.filter(|p| !health_file_path_is_allowed(p)) {
            return Err(refuse(
                "spec.appHealth.file.path",
                format!(
                    "{path:?} is not under {HEALTH_FILE_DIR}/, the directory the webhook mounts"
                ),
            ));
        }
    }
    let Some(overrides) = spec.sidecar.as_ref() else {
        return Ok(());
    };
    if let Some(image) = overrides.image.as_deref() {
        let default_repo = repository_of(default_image);
        let allowed = image == default_image
            || std::iter::once(default_repo)
                .chain(policy.allowed_image_repositories.iter().map(String::as_str))
                .any(|repo| image_in_repository(image, repo));
        if !allowed {
            let mut repos: Vec<&str> = std::iter::once(default_repo)
                .chain(policy.allowed_image_repositories.iter().map(String::as_str))
                .collect();
            repos.dedup();
            return Err(refuse(
                "spec.sidecar.image",
                format!(
                    "{image:?} is not from an allowed repository ({})",
                    repos.join(", ")
                ),
            ));
        }
    }
    if let Some(resources) = overrides.resources.as_ref() {
        check_resources(resources, policy)?;
    }
    Ok(())
}

fn check_resources(r: &ResourceRequirements, policy: &SidecarPolicy) -> Result<(), Refusal> {
    if r.claims.as_ref().is_some_and(|c| !c.is_empty()) {
        return Err(refuse(
            "spec.sidecar.resources.claims",
            "the sidecar claims no dynamic resources",
        ));
    }
    for (kind, set, maxima) in [
        ("requests", &r.requests, &policy.max_requests),
        ("limits", &r.limits, &policy.max_limits),
    ] {
        for (name, q) in set.iter().flatten() {
            let field = format!("spec.sidecar.resources.{kind}.{name}");
            let Some(max) = maxima.get(name) else {
                let allowed: Vec<&str> = maxima.keys().map(String::as_str).collect();
                return Err(refuse(
                    field,
                    format!("may not be set (only {})", allowed.join(", ")),
                ));
            };
            match compare(&q.0, &max.0) {
                Some(Ordering::Less | Ordering::Equal) => {}
                Some(Ordering::Greater) => {
                    return Err(refuse(
                        field,
                        format!("{} is above the maximum {}", q.0, max.0),
                    ));
                }
                None => {
                    return Err(refuse(
                        field,
                        format!("{:?} is not a non-negative quantity", q.0),
                    ));
                }
            }
        }
    }
    // A request above its limit makes every selected pod invalid.
    for (name, request) in r.requests.iter().flatten() {
        if let Some(limit) = r.limits.as_ref().and_then(|l| l.get(name))
            && compare(&request.0, &limit.0) == Some(Ordering::Greater)
        {
            return Err(refuse(
                format!("spec.sidecar.resources.requests.{name}"),
                format!("{} is above its limit {}", request.0, limit.0),
            ));
        }
    }
    Ok(())
}

/// The repository of an image reference: without its tag and digest
/// (`localhost:5000/x:1@sha256:...` -> `localhost:5000/x`).
pub fn repository_of(image: &str) -> &str {
    let name = image.split_once('@').map_or(image, |(n, _)| n);
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[last_slash..].find(':') {
        Some(colon) => &name[..last_slash + colon],
        None => name,
    }
}

/// Whether `image` is `repo` itself, `repo:tag`, `repo@sha256:<hex>` or
/// `repo:tag@sha256:<hex>`: a lookalike (`repo-evil`, `repo/sub`) is not.
pub fn image_in_repository(image: &str, repo: &str) -> bool {
    if repo.is_empty() {
        return false;
    }
    let Some(rest) = image.strip_prefix(repo) else {
        return false;
    };
    let (tag, digest) = match rest.split_once('@') {
        Some((tag, digest)) => (tag, Some(digest)),
        None => (rest, None),
    };
    let tag_ok = tag.is_empty() || tag.strip_prefix(':').is_some_and(valid_tag);
    tag_ok && digest.is_none_or(valid_digest)
}

fn valid_tag(tag: &str) -> bool {
    let mut chars = tag.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && tag.len() <= 128
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn valid_digest(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// A parsed quantity, or one too large to represent (which is above any maximum).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Amount {
    /// The value in nano-units, rounded up.
    Nanos(u128),
    TooLarge,
}

/// Compares two Kubernetes quantities; `None` when either is not a
/// non-negative quantity.
pub fn compare(a: &str, b: &str) -> Option<Ordering> {
    Some(parse_quantity(a)?.cmp(&parse_quantity(b)?))
}

/// Whether `s` is a non-negative Kubernetes quantity (for flag parsing).
pub fn is_quantity(s: &str) -> bool {
    parse_quantity(s).is_some()
}

/// Parses a non-negative quantity (`<digits>[.<digits>]<suffix>`, suffix
/// one of n u m k M G T P E Ki Mi Gi Ti Pi Ei or e<exponent>) with checked
/// arithmetic: no input panics or wraps.
fn parse_quantity(s: &str) -> Option<Amount> {
    let s = s.strip_prefix('+').unwrap_or(s);
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(end);
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if int.is_empty() && frac.is_empty() || frac.contains('.') {
        return None;
    }
    let (exp10, binary): (i64, u32) = match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        e => {
            let exp = e.strip_prefix(['e', 'E'])?;
            let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            (exp.parse::<i64>().ok()?, 0)
        }
    };
    let digits = format!("{int}{frac}");
    let significant = digits.trim_start_matches('0');
    if significant.is_empty() {
        return Some(Amount::Nanos(0));
    }
    let too_large = Some(Amount::TooLarge);
    // Nano-units: shift by 9, less the fraction's digits.
    let frac_len = i64::try_from(frac.len()).ok()?;
    let scale = exp10.checked_add(9)?.checked_sub(frac_len)?;
    if significant.len() > 38 {
        return too_large;
    }
    let mut value: u128 = significant.parse().ok()?;
    if scale >= 0 {
        let Some(factor) = u32::try_from(scale)
            .ok()
            .and_then(|s| 10u128.checked_pow(s))
        else {
            return too_large;
        };
        let Some(v) = value.checked_mul(factor) else {
            return too_large;
        };
        value = v;
    } else {
        // Rounded up, as Kubernetes does: 0.1n is 1n.
        let divisor = u32::try_from(-scale)
            .ok()
            .and_then(|s| 10u128.checked_pow(s));
        value = match divisor {
            Some(d) => value.div_ceil(d),
            None => 1,
        };
    }
    match value.checked_mul(1u128 << binary) {
        Some(v) => Some(Amount::Nanos(v)),
        None => too_large,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rule: quantities compare by value whatever their suffix; a sign, a
    /// second dot or an unknown suffix is no quantity; a huge one is above
    /// every maximum, never a wrap-around.
    #[test]
    fn quantities_compare_by_value_and_never_wrap() {
        use Ordering::*;
        for (a, b, want) in [
            ("200m", "0.2", Equal),
            ("1", "1000m", Equal),
            ("256Mi", "268435456", Equal),
            ("257Mi", "256Mi", Greater),
            ("1Gi", "256Mi", Greater),
            ("0.5Gi", "512Mi", Equal),
            ("1e3", "1k", Equal),
            ("1E-3", "1m", Equal),
            ("100n", "1u", Less),
            ("1", "1001m", Less),
            ("9999999999999999999999999999999999999999Ei", "1", Greater),
            ("1e400000", "1E", Greater),
            ("1e-400000", "1n", Equal),
            ("25e-10", "3n", Equal),
            ("0.0000000015", "2n", Equal),
            ("0", "1n", Less),
            ("+5m", "5m", Equal),
        ] {
            assert_eq!(compare(a, b), Some(want), "{a} vs {b}");
        }
        for bad in [
            "", "-1", "1.2.3", "1Ki1", "1x", "m", ".", "1e", "1e+", "1 Mi",
        ] {
            assert_eq!(compare(bad, "1"), None, "{bad:?}");
        }
    }

    /// Rule: an image is in a repository only as `repo`, `repo:tag`,
    /// `repo@sha256:<hex>` or both; a lookalike repository is not.
    #[test]
    fn an_image_matches_its_repository_exactly() {
        let repo = "ghcr.io/x/sidecar";
        let digest = format!("@sha256:{}", "a".repeat(64));
        for ok in [
            repo.to_string(),
            format!("{repo}:1.0"),
            format!("{repo}{digest}"),
            format!("{repo}:1.0{digest}"),
        ] {
            assert!(image_in_repository(&ok, repo), "{ok}");
        }
        for bad in [
            "ghcr.io/x/sidecar-evil".to_string(),
            "ghcr.io/x/sidecar-evil:1".to_string(),
            "ghcr.io/x/sidecar/evil:1".to_string(),
            "ghcr.io/x/sidecar:".to_string(),
            "ghcr.io/x/sidecar:1/../evil".to_string(),
            "ghcr.io/x/sidecar@sha256:abc".to_string(),
            format!("{repo}:.bad"),
            "evil.io/ghcr.io/x/sidecar".to_string(),
        ] {
            assert!(!image_in_repository(&bad, repo), "{bad}");
        }
        assert!(!image_in_repository("anything", ""));
        assert_eq!(repository_of("localhost:5000/x:1"), "localhost:5000/x");
        assert_eq!(repository_of(&format!("{repo}:2{digest}")), repo);
        assert_eq!(repository_of("heartbeat-sidecar:dev"), "heartbeat-sidecar");
        assert_eq!(repository_of("localhost:5000/x"), "localhost:5000/x");
    }
}
