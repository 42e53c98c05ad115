//! From a container spec to a process launch: environment (the API
//! server's service variables, literal, Secret, ConfigMap, downward API),
//! `$(VAR)` expansion, command and args. Pure: Secrets and ConfigMaps are
//! looked up beforehand. The container's own network and mounts come from
//! `pod-enter`, so nothing in env or args is rewritten.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use heartbeat_crds::sidecar_contract::expand_env_refs;
use k8s_openapi::api::core::v1::Container;

use crate::images::Entrypoint;

/// Who the pod is, as far as the downward API (`fieldRef`) can tell.
#[derive(Debug, Clone, Default)]
pub struct PodIdentity {
    /// `metadata.name`
    pub name: String,
    /// `metadata.namespace`
    pub namespace: String,
    /// `metadata.uid`
    pub uid: String,
    /// `spec.nodeName`
    pub node: String,
    /// `status.podIP` (and `status.podIPs`)
    pub pod_ip: String,
    /// `status.hostIP` (and `status.hostIPs`)
    pub host_ip: String,
    /// `spec.serviceAccountName`
    pub service_account: String,
    /// Where in-cluster clients find the API server (`KUBERNETES_SERVICE_HOST`
    /// and `_PORT`); there is no ClusterIP routing, so it is the API server's
    /// own address.
    pub api_server: Option<(String, u16)>,
}

/// Secrets and ConfigMaps of the pod's namespace that the container refers to.
#[derive(Debug, Clone, Default)]
pub struct Lookups {
    /// Secret name -> its data, decoded as text.
    pub secrets: BTreeMap<String, BTreeMap<String, String>>,
    /// ConfigMap name -> its data.
    pub config_maps: BTreeMap<String, BTreeMap<String, String>>,
}

/// Names of the Secrets and ConfigMaps a container's env refers to.
pub fn referenced(ctr: &Container) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut secrets = BTreeSet::new();
    let mut maps = BTreeSet::new();
    for e in ctr.env.iter().flatten() {
        if let Some(from) = &e.value_from {
            if let Some(s) = &from.secret_key_ref {
                secrets.insert(s.name.clone());
            }
            if let Some(c) = &from.config_map_key_ref {
                maps.insert(c.name.clone());
            }
        }
    }
    for f in ctr.env_from.iter().flatten() {
        if let Some(s) = &f.secret_ref {
            secrets.insert(s.name.clone());
        }
        if let Some(c) = &f.config_map_ref {
            maps.insert(c.name.clone());
        }
    }
    (secrets, maps)
}

fn field(pod: &PodIdentity, path: &str) -> Result<String, String> {
    Ok(match path {
        "metadata.name" => pod.name.clone(),
        "metadata.namespace" => pod.namespace.clone(),
        "metadata.uid" => pod.uid.clone(),
        "spec.nodeName" => pod.node.clone(),
        "spec.serviceAccountName" => pod.service_account.clone(),
        "status.podIP" | "status.podIPs" => pod.pod_ip.clone(),
        "status.hostIP" | "status.hostIPs" => pod.host_ip.clone(),
        other => {
            return Err(format!(
                "fieldRef {other} is not supported by the process node"
            ));
        }
    })
}

/// Expands `$(VAR)` from `vars` as the kubelet does; unknown references
/// stay as written.
pub fn expand(s: &str, vars: &BTreeMap<String, String>) -> String {
    expand_env_refs(s, |name| vars.get(name).map(String::as_str)).0
}

/// The container's environment, in Kubernetes order: envFrom, then env.
pub fn resolve_env(
    ctr: &Container,
    pod: &PodIdentity,
    lookups: &Lookups,
) -> Result<Vec<(String, String)>, String> {
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut set = |vars: &mut BTreeMap<String, String>, k: String, v: String| {
        if !vars.contains_key(&k) {
            order.push(k.clone());
        }
        vars.insert(k, v);
    };
    // As the kubelet: the `kubernetes` Service's variables come first.
    if let Some((host, port)) = &pod.api_server {
        set(&mut vars, "KUBERNETES_SERVICE_HOST".into(), host.clone());
        set(
            &mut vars,
            "KUBERNETES_SERVICE_PORT".into(),
            port.to_string(),
        );
        set(
            &mut vars,
            "KUBERNETES_SERVICE_PORT_HTTPS".into(),
            port.to_string(),
        );
    }
    for from in ctr.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let source = if let Some(s) = &from.secret_ref {
            (lookups.secrets.get(&s.name), s.optional, "Secret", &s.name)
        } else if let Some(c) = &from.config_map_ref {
            (
                lookups.config_maps.get(&c.name),
                c.optional,
                "ConfigMap",
                &c.name,
            )
        } else {
            continue;
        };
        match source {
            (Some(data), _, _, _) => {
                for (k, v) in data {
                    set(&mut vars, format!("{prefix}{k}"), v.clone());
                }
            }
            (None, Some(true), _, _) => {}
            (None, _, kind, name) => return Err(format!("{kind} {name:?} not found")),
        }
    }
    for e in ctr.env.iter().flatten() {
        let value = if let Some(v) = &e.value {
            Some(expand(v, &vars))
        } else if let Some(from) = &e.value_from {
            if let Some(s) = &from.secret_key_ref {
                match lookups.secrets.get(&s.name).map(|d| d.get(&s.key)) {
                    Some(Some(v)) => Some(v.clone()),
                    _ if s.optional == Some(true) => None,
                    Some(None) => {
                        return Err(format!("key {:?} not found in Secret {:?}", s.key, s.name));
                    }
                    None => return Err(format!("Secret {:?} not found", s.name)),
                }
            } else if let Some(c) = &from.config_map_key_ref {
                match lookups.config_maps.get(&c.name).map(|d| d.get(&c.key)) {
                    Some(Some(v)) => Some(v.clone()),
                    _ if c.optional == Some(true) => None,
                    Some(None) => {
                        return Err(format!(
                            "key {:?} not found in ConfigMap {:?}",
                            c.key, c.name
                        ));
                    }
                    None => return Err(format!("ConfigMap {:?} not found", c.name)),
                }
            } else if let Some(f) = &from.field_ref {
                Some(field(pod, &f.field_path)?)
            } else {
                return Err(format!(
                    "env {}: resourceFieldRef is not supported by the process node",
                    e.name
                ));
            }
        } else {
            Some(String::new())
        };
        if let Some(v) = value {
            set(&mut vars, e.name.clone(), v);
        }
    }
    Ok(order
        .into_iter()
        .map(|k| {
            let v = vars[&k].clone();
            (k, v)
        })
        .collect())
}

/// A ready-to-spawn process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// The program to run.
    pub program: PathBuf,
    /// Its arguments, expanded.
    pub args: Vec<String>,
    /// Its environment in Kubernetes order (the node adds only its own PATH).
    pub env: Vec<(String, String)>,
    /// The container's workingDir; None: the image's (`/`).
    pub working_dir: Option<PathBuf>,
}

/// Combines the image's entrypoint with the container's command, args and env.
pub fn launch(ctr: &Container, image: &Entrypoint, env: Vec<(String, String)>) -> Launch {
    let vars: BTreeMap<String, String> = env.iter().cloned().collect();
    // As in Kubernetes: a command replaces the image's ENTRYPOINT and CMD.
    let args: Vec<String> = match (&ctr.command, &ctr.args) {
        (_, Some(args)) => args.clone(),
        (Some(_), None) => Vec::new(),
        (None, None) => image.default_args.clone(),
    };
    let (program, args) = match ctr.command.as_deref() {
        Some([cmd, rest @ ..]) => {
            let mut all: Vec<String> = rest.to_vec();
            all.extend(args);
            (PathBuf::from(expand(cmd, &vars)), all)
        }
        _ => (image.program.clone(), args),
    };
    Launch {
        program,
        args: args.iter().map(|a| expand(a, &vars)).collect(),
        env,
        working_dir: ctr.working_dir.as_deref().map(PathBuf::from),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        EnvFromSource, EnvVar, EnvVarSource, ObjectFieldSelector, SecretEnvSource,
        SecretKeySelector,
    };

    fn pod() -> PodIdentity {
        PodIdentity {
            name: "p1".into(),
            namespace: "ns".into(),
            uid: "u-1".into(),
            node: "process-node".into(),
            pod_ip: "10.192.0.7".into(),
            host_ip: "10.191.0.2".into(),
            service_account: "default".into(),
            api_server: None,
        }
    }

    fn lookups() -> Lookups {
        let mut l = Lookups::default();
        l.secrets.insert(
            "kafka".into(),
            [(
                "bootstrap.servers".to_string(),
                "127.0.0.1:9092".to_string(),
            )]
            .into(),
        );
        l
    }

    fn secret_env(name: &str, secret: &str, key: &str, optional: Option<bool>) -> EnvVar {
        EnvVar {
            name: name.into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: secret.into(),
                    key: key.into(),
                    optional,
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn field_env(name: &str, path: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: path.into(),
                    api_version: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn env_from_secret_downward_api_and_literals_in_order() {
        let ctr = Container {
            env: Some(vec![
                EnvVar {
                    name: "A".into(),
                    value: Some("x".into()),
                    ..Default::default()
                },
                secret_env(
                    "KAFKA_BOOTSTRAP_SERVERS",
                    "kafka",
                    "bootstrap.servers",
                    None,
                ),
                field_env("POD_NAME", "metadata.name"),
                field_env("POD_UID", "metadata.uid"),
                field_env("NODE_NAME", "spec.nodeName"),
                EnvVar {
                    name: "B".into(),
                    value: Some("$(A)-$(POD_NAME)-$(NOPE)-$$(A)".into()),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        };
        let env = resolve_env(&ctr, &pod(), &lookups()).expect("env");
        assert_eq!(
            env,
            vec![
                ("A".to_string(), "x".to_string()),
                ("KAFKA_BOOTSTRAP_SERVERS".into(), "127.0.0.1:9092".into()),
                ("POD_NAME".into(), "p1".into()),
                ("POD_UID".into(), "u-1".into()),
                ("NODE_NAME".into(), "process-node".into()),
                ("B".into(), "x-p1-$(NOPE)-$(A)".into()),
            ]
        );
    }

    #[test]
    fn missing_secret_or_key_is_an_error_unless_optional() {
        let ctr = |e| Container {
            env: Some(vec![e]),
            ..Default::default()
        };
        let err = resolve_env(&ctr(secret_env("X", "nope", "k", None)), &pod(), &lookups())
            .expect_err("missing");
        assert_eq!(err, "Secret \"nope\" not found");
        let err = resolve_env(
            &ctr(secret_env("X", "kafka", "k", None)),
            &pod(),
            &lookups(),
        )
        .expect_err("key");
        assert!(err.contains("key \"k\""), "{err}");
        let env = resolve_env(
            &ctr(secret_env("X", "nope", "k", Some(true))),
            &pod(),
            &lookups(),
        )
        .expect("optional");
        assert!(env.is_empty());
    }

    #[test]
    fn env_from_secret_with_prefix() {
        let ctr = Container {
            env_from: Some(vec![EnvFromSource {
                prefix: Some("K_".into()),
                secret_ref: Some(SecretEnvSource {
                    name: "kafka".into(),
                    optional: None,
                }),
                ..Default::default()
            }]),
            ..Default::default()
        };
        let env = resolve_env(&ctr, &pod(), &lookups()).expect("env");
        assert_eq!(
            env,
            vec![(
                "K_bootstrap.servers".to_string(),
                "127.0.0.1:9092".to_string()
            )]
        );
    }

    #[test]
    fn the_api_servers_service_variables_come_first_and_env_may_override() {
        let mut pod = pod();
        pod.api_server = Some(("10.191.0.2".into(), 6443));
        let ctr = Container {
            env: Some(vec![EnvVar {
                name: "KUBERNETES_SERVICE_PORT".into(),
                value: Some("443".into()),
                ..Default::default()
            }]),
            ..Default::default()
        };
        let env = resolve_env(&ctr, &pod, &lookups()).expect("env");
        assert_eq!(
            env,
            vec![
                (
                    "KUBERNETES_SERVICE_HOST".to_string(),
                    "10.191.0.2".to_string()
                ),
                ("KUBERNETES_SERVICE_PORT".to_string(), "443".to_string()),
                (
                    "KUBERNETES_SERVICE_PORT_HTTPS".to_string(),
                    "6443".to_string()
                ),
            ]
        );
    }

    #[test]
    fn command_overrides_entrypoint_and_args_expand() {
        let image = Entrypoint {
            program: "/img/entry".into(),
            default_args: vec!["--default".into()],
        };
        let env = vec![("N".to_string(), "3".to_string())];
        let plain = launch(&Container::default(), &image, env.clone());
        assert_eq!(
            (plain.program.to_str(), plain.args.clone()),
            (Some("/img/entry"), vec!["--default".to_string()])
        );
        let custom = Container {
            command: Some(vec!["/bin/sh".into(), "-c".into()]),
            args: Some(vec!["echo $(N)".into()]),
            ..Default::default()
        };
        let l = launch(&custom, &image, env.clone());
        assert_eq!(l.program, PathBuf::from("/bin/sh"));
        assert_eq!(l.args, vec!["-c".to_string(), "echo 3".to_string()]);
        let no_args = Container {
            command: Some(vec!["/bin/true".into()]),
            ..Default::default()
        };
        assert!(
            launch(&no_args, &image, env).args.is_empty(),
            "command drops the image's CMD"
        );
    }
}
