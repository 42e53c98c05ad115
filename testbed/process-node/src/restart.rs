//! restartPolicy, read once from the pod spec (and from init containers,
//! where `Always` makes a native sidecar), and the pure decision it drives:
//! whether a container that exited is started again.

use k8s_openapi::api::core::v1::{Container, PodSpec};

use crate::container::Kind;

/// A pod's (or a native sidecar's) restartPolicy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    /// Start every container again whenever it exits (the default).
    Always,
    /// Start a container again only when it exits non-zero.
    OnFailure,
    /// Never start a container again; the pod ends when its apps have exited.
    Never,
}

impl RestartPolicy {
    /// The API's spelling; None for anything else.
    pub fn parse(s: &str) -> Option<RestartPolicy> {
        match s {
            "Always" => Some(RestartPolicy::Always),
            "OnFailure" => Some(RestartPolicy::OnFailure),
            "Never" => Some(RestartPolicy::Never),
            _ => None,
        }
    }

    /// The pod's policy: Always when the spec names none (or none this node knows).
    pub fn of_pod(spec: Option<&PodSpec>) -> RestartPolicy {
        spec.and_then(|s| s.restart_policy.as_deref())
            .and_then(RestartPolicy::parse)
            .unwrap_or(RestartPolicy::Always)
    }

    /// A container's own policy; only init containers have one (`Always`,
    /// which makes them native sidecars).
    pub fn of_container(ctr: &Container) -> Option<RestartPolicy> {
        ctr.restart_policy.as_deref().and_then(RestartPolicy::parse)
    }
}

/// Whether a container of `kind` that exited with `exit_code` is started
/// again in a pod with restartPolicy `pod`: native sidecars always are; init
/// containers are after a failure unless the policy is Never; app containers
/// follow the policy.
pub fn should_restart(kind: Kind, pod: RestartPolicy, exit_code: i32) -> bool {
    match kind {
        Kind::Sidecar => true,
        Kind::Init => exit_code != 0 && pod != RestartPolicy::Never,
        Kind::App => match pod {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => exit_code != 0,
            RestartPolicy::Never => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RestartPolicy::{Always, Never, OnFailure};

    #[test]
    fn parse_knows_the_three_api_spellings_and_nothing_else() {
        assert_eq!(RestartPolicy::parse("Always"), Some(Always));
        assert_eq!(RestartPolicy::parse("OnFailure"), Some(OnFailure));
        assert_eq!(RestartPolicy::parse("Never"), Some(Never));
        assert_eq!(RestartPolicy::parse("never"), None);
        assert_eq!(RestartPolicy::parse(""), None);
    }

    #[test]
    fn a_pod_without_a_restart_policy_restarts_always() {
        assert_eq!(RestartPolicy::of_pod(None), Always);
        assert_eq!(RestartPolicy::of_pod(Some(&PodSpec::default())), Always);
        let never = PodSpec {
            restart_policy: Some("Never".into()),
            ..Default::default()
        };
        assert_eq!(RestartPolicy::of_pod(Some(&never)), Never);
    }

    #[test]
    fn only_containers_that_say_so_have_a_policy_of_their_own() {
        assert_eq!(RestartPolicy::of_container(&Container::default()), None);
        let sidecar = Container {
            restart_policy: Some("Always".into()),
            ..Default::default()
        };
        assert_eq!(RestartPolicy::of_container(&sidecar), Some(Always));
    }

    #[test]
    fn native_sidecars_restart_whatever_the_policy_or_exit_code() {
        for policy in [Always, OnFailure, Never] {
            for code in [0, 1, 137] {
                assert!(
                    should_restart(Kind::Sidecar, policy, code),
                    "{policy:?} {code}"
                );
            }
        }
    }

    #[test]
    fn init_containers_restart_after_a_failure_unless_the_pod_says_never() {
        for policy in [Always, OnFailure, Never] {
            assert!(!should_restart(Kind::Init, policy, 0), "{policy:?}");
        }
        assert!(should_restart(Kind::Init, Always, 1));
        assert!(should_restart(Kind::Init, OnFailure, 1));
        assert!(!should_restart(Kind::Init, Never, 1));
    }

    #[test]
    fn app_containers_follow_the_pod_policy() {
        assert!(should_restart(Kind::App, Always, 0));
        assert!(should_restart(Kind::App, Always, 1));
        assert!(!should_restart(Kind::App, OnFailure, 0));
        assert!(should_restart(Kind::App, OnFailure, 1));
        assert!(!should_restart(Kind::App, Never, 0));
        assert!(!should_restart(Kind::App, Never, 1));
    }
}
