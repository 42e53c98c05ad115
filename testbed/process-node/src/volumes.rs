//! A pod's volumes as the kubelet materialises them: emptyDir as a
//! directory of the pod's own, Secret, ConfigMap, downwardAPI and projected
//! volumes (the service-account token requested through the TokenRequest
//! API, with `ca.crt` and `namespace`) as files in it, hostPath as the
//! path itself. The containers see them at their mount paths through
//! `pod-enter`. Tokens are requested again before they expire.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use heartbeat_testbed::layout::PodDir;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, DownwardAPIVolumeFile, KeyToPath, Pod, Secret, ServiceAccount, Volume, VolumeMount,
};
use kube::api::{Api, PostParams};

use crate::enter::MountSpec;

/// The kubelet's default file mode in a volume.
const DEFAULT_MODE: u32 = 0o644;
/// The token lifetime when a projection does not say (the kubelet's default).
const DEFAULT_TOKEN_SECONDS: i64 = 3600;

/// One file a volume holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeFile {
    /// Path inside the volume (relative, no `..`).
    pub path: String,
    pub data: Vec<u8>,
    pub mode: u32,
}

fn mode_of(item: Option<i32>, default: Option<i32>) -> u32 {
    item.or(default)
        .and_then(|m| u32::try_from(m).ok())
        .unwrap_or(DEFAULT_MODE)
}

/// The files of a Secret or ConfigMap volume: every key, or only `items`
/// (each to its path); an item naming a missing key is an error.
pub fn key_files(
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    default_mode: Option<i32>,
    what: &str,
) -> Result<Vec<VolumeFile>, String> {
    match items {
        None => Ok(data
            .iter()
            .map(|(k, v)| VolumeFile {
                path: k.clone(),
                data: v.clone(),
                mode: mode_of(None, default_mode),
            })
            .collect()),
        Some(items) => items
            .iter()
            .map(|i| {
                let data = data
                    .get(&i.key)
                    .ok_or_else(|| format!("{what} has no key {:?}", i.key))?;
                Ok(VolumeFile {
                    path: i.path.clone(),
                    data: data.clone(),
                    mode: mode_of(i.mode, default_mode),
                })
            })
            .collect(),
    }
}

/// A downward-API field of the pod as a volume file shows it.
pub fn pod_field(pod: &Pod, field_path: &str) -> Result<String, String> {
    let m = &pod.metadata;
    let map_lines = |map: Option<&BTreeMap<String, String>>| {
        map.into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}={v:?}\n"))
            .collect::<String>()
    };
    let one = |map: Option<&BTreeMap<String, String>>, key: &str| {
        map.and_then(|m| m.get(key)).cloned().unwrap_or_default()
    };
    let key_in = |prefix: &str| {
        field_path
            .strip_prefix(prefix)?
            .strip_prefix("['")?
            .strip_suffix("']")
            .map(str::to_string)
    };
    Ok(match field_path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "metadata.labels" => map_lines(m.labels.as_ref()),
        "metadata.annotations" => map_lines(m.annotations.as_ref()),
        _ => {
            if let Some(k) = key_in("metadata.labels") {
                one(m.labels.as_ref(), &k)
            } else if let Some(k) = key_in("metadata.annotations") {
                one(m.annotations.as_ref(), &k)
            } else {
                return Err(format!(
                    "downward API field {field_path:?} is not supported in volumes"
                ));
            }
        }
    })
}

fn downward_files(
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    default_mode: Option<i32>,
) -> Result<Vec<VolumeFile>, String> {
    items
        .iter()
        .map(|i| {
            let field = i.field_ref.as_ref().ok_or_else(|| {
                format!("downward API item {:?}: only fieldRef is supported", i.path)
            })?;
            Ok(VolumeFile {
                path: i.path.clone(),
                data: pod_field(pod, &field.field_path)?.into_bytes(),
                mode: mode_of(i.mode, default_mode),
            })
        })
        .collect()
}

/// Rejects paths that would leave the volume.
fn safe_relative(path: &str) -> Result<&Path, String> {
    let p = Path::new(path);
    let bad = p.is_absolute()
        || p.components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)));
    if bad || path.is_empty() {
        return Err(format!(
            "volume file path {path:?} must be relative, without '..'"
        ));
    }
    Ok(p)
}

/// Writes `files` into `dir`, each whole (temp file, rename) so a reader
/// never sees half of one.
pub fn write_files(dir: &Path, files: &[VolumeFile]) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for f in files {
        let target = dir.join(safe_relative(&f.path)?);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        let tmp = target.with_extension("hb-tmp");
        std::fs::write(&tmp, &f.data).map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(f.mode))
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &target).map_err(|e| format!("{}: {e}", target.display()))?;
    }
    Ok(())
}

/// The volumes of one pod on the node.
pub struct PodVolumes {
    client: kube::Client,
    dir: PodDir,
    /// When the projected volumes with a token must be written again.
    refresh_at: Option<Instant>,
}

impl PodVolumes {
    pub fn new(client: kube::Client, dir: PodDir) -> PodVolumes {
        PodVolumes {
            client,
            dir,
            refresh_at: None,
        }
    }

    /// Writes every volume of `pod`; an error names the volume and what is
    /// missing (the pod waits, as with the kubelet's `ContainerCreating`).
    pub async fn prepare(&mut self, pod: &Pod) -> Result<(), String> {
        let mut soonest: Option<Duration> = None;
        for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
            let lifetime = self
                .prepare_one(pod, v)
                .await
                .map_err(|e| format!("MountVolume.SetUp failed for volume {:?}: {e}", v.name))?;
            soonest = match (soonest, lifetime) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        // Written again at 80% of the token's life, as the kubelet does.
        self.refresh_at = soonest.map(|life| Instant::now() + life.mul_f64(0.8));
        Ok(())
    }

    /// Whether a token is due for renewal.
    pub fn refresh_due(&self) -> bool {
        self.refresh_at.is_some_and(|t| Instant::now() >= t)
    }

    /// Materialises one volume; returns the shortest token lifetime in it.
    async fn prepare_one(&self, pod: &Pod, v: &Volume) -> Result<Option<Duration>, String> {
        let dir = self.dir.volume(&v.name);
        if let Some(h) = &v.host_path {
            // The host's own path, used as it is: nothing is made there.
            return if Path::new(&h.path).exists() {
                Ok(None)
            } else {
                Err(format!(
                    "hostPath {:?} does not exist on the process node",
                    h.path
                ))
            };
        }
        if v.empty_dir.is_some() {
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            return Ok(None);
        }
        let mut files = Vec::new();
        let mut lifetime = None;
        if let Some(s) = &v.secret {
            let name = s.secret_name.clone().unwrap_or_default();
            if let Some(data) = self.secret(pod, &name, s.optional).await? {
                files = key_files(
                    &data,
                    s.items.as_deref(),
                    s.default_mode,
                    &format!("Secret {name:?}"),
                )?;
            }
        } else if let Some(c) = &v.config_map {
            if let Some(data) = self.config_map(pod, &c.name, c.optional).await? {
                files = key_files(
                    &data,
                    c.items.as_deref(),
                    c.default_mode,
                    &format!("ConfigMap {:?}", c.name),
                )?;
            }
        } else if let Some(d) = &v.downward_api {
            files = downward_files(pod, d.items.as_deref().unwrap_or_default(), d.default_mode)?;
        } else if let Some(p) = &v.projected {
            for src in p.sources.iter().flatten() {
                if let Some(c) = &src.config_map {
                    if let Some(data) = self.config_map(pod, &c.name, c.optional).await? {
                        files.extend(key_files(
                            &data,
                            c.items.as_deref(),
                            p.default_mode,
                            &format!("ConfigMap {:?}", c.name),
                        )?);
                    }
                } else if let Some(s) = &src.secret {
                    if let Some(data) = self.secret(pod, &s.name, s.optional).await? {
                        files.extend(key_files(
                            &data,
                            s.items.as_deref(),
                            p.default_mode,
                            &format!("Secret {:?}", s.name),
                        )?);
                    }
                } else if let Some(d) = &src.downward_api {
                    files.extend(downward_files(
                        pod,
                        d.items.as_deref().unwrap_or_default(),
                        p.default_mode,
                    )?);
                } else if let Some(t) = &src.service_account_token {
                    let seconds = t.expiration_seconds.unwrap_or(DEFAULT_TOKEN_SECONDS);
                    let token = self.token(pod, t.audience.clone(), seconds).await?;
                    files.push(VolumeFile {
                        path: t.path.clone(),
                        data: token.into_bytes(),
                        mode: mode_of(None, p.default_mode),
                    });
                    let life = Duration::from_secs(u64::try_from(seconds).unwrap_or(600));
                    lifetime = Some(lifetime.map_or(life, |l: Duration| l.min(life)));
                }
            }
        } else {
            return Err("this volume type is not supported by the process node".into());
        }
        write_files(&dir, &files)?;
        Ok(lifetime)
    }

    fn namespace(pod: &Pod) -> &str {
        pod.metadata.namespace.as_deref().unwrap_or("default")
    }

    /// The data of `kind` object `name` in the pod's namespace: `None` when
    /// it is missing and `optional`, an error naming it otherwise.
    async fn fetch<K>(
        &self,
        pod: &Pod,
        kind: &str,
        name: &str,
        optional: Option<bool>,
        data: fn(K) -> BTreeMap<String, Vec<u8>>,
    ) -> Result<Option<BTreeMap<String, Vec<u8>>>, String>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), Self::namespace(pod));
        match api
            .get_opt(name)
            .await
            .map_err(|e| format!("reading {kind} {name:?}: {e}"))?
        {
            Some(o) => Ok(Some(data(o))),
            None if optional == Some(true) => Ok(None),
            None => Err(format!("{kind} {name:?} not found")),
        }
    }

    async fn secret(
        &self,
        pod: &Pod,
        name: &str,
        optional: Option<bool>,
    ) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
        self.fetch(pod, "Secret", name, optional, |s: Secret| {
            let text = s.string_data.unwrap_or_default().into_iter();
            s.data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .chain(text.map(|(k, v)| (k, v.into_bytes())))
                .collect()
        })
        .await
    }

    async fn config_map(
        &self,
        pod: &Pod,
        name: &str,
        optional: Option<bool>,
    ) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
        self.fetch(pod, "ConfigMap", name, optional, |c: ConfigMap| {
            let binary = c.binary_data.unwrap_or_default().into_iter();
            c.data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()))
                .chain(binary.map(|(k, v)| (k, v.0)))
                .collect()
        })
        .await
    }

    /// A token for the pod's ServiceAccount, bound to the pod.
    async fn token(
        &self,
        pod: &Pod,
        audience: Option<String>,
        seconds: i64,
    ) -> Result<String, String> {
        let sa = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into());
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), Self::namespace(pod));
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: audience.map(|a| vec![a]),
                expiration_seconds: Some(seconds),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: pod.metadata.name.clone(),
                    uid: pod.metadata.uid.clone(),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let got = api
            .create_token_request(&sa, &PostParams::default(), &request)
            .await
            .map_err(|e| format!("requesting a token for ServiceAccount {sa:?}: {e}"))?;
        got.status
            .and_then(|s| s.token)
            .ok_or_else(|| format!("the token request for ServiceAccount {sa:?} returned no token"))
    }
}

/// The `pod-enter` mounts of a container: each volumeMount's source on the
/// node (a subPath inside it) at its real path.
pub fn mounts(
    pod: &Pod,
    dir: &PodDir,
    volume_mounts: &[VolumeMount],
) -> Result<Vec<MountSpec>, String> {
    let volumes = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_deref())
        .unwrap_or_default();
    volume_mounts
        .iter()
        .map(|m| {
            let v = volumes
                .iter()
                .find(|v| v.name == m.name)
                .ok_or_else(|| format!("volumeMount {:?} names no volume of the pod", m.name))?;
            let mut source = match &v.host_path {
                Some(h) => PathBuf::from(&h.path),
                None => dir.volume(&v.name),
            };
            if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                source = source.join(safe_relative(sub)?);
                if !source.exists() {
                    // Made only inside the pod's own volumes, never on a hostPath.
                    if v.host_path.is_some() {
                        return Err(format!(
                            "subPath {sub:?} does not exist in hostPath {:?}",
                            source.display()
                        ));
                    }
                    std::fs::create_dir_all(&source)
                        .map_err(|e| format!("{}: {e}", source.display()))?;
                }
            }
            let read_only = m.read_only == Some(true)
                // Secret, ConfigMap, downwardAPI and projected volumes are read-only.
                || v.secret.is_some()
                || v.config_map.is_some()
                || v.downward_api.is_some()
                || v.projected.is_some();
            Ok(MountSpec {
                source,
                target: PathBuf::from(&m.mount_path),
                read_only,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn data() -> BTreeMap<String, Vec<u8>> {
        [
            ("a".to_string(), b"1".to_vec()),
            ("b".to_string(), b"2".to_vec()),
        ]
        .into_iter()
        .collect()
    }

    #[test]
    fn every_key_becomes_a_file_unless_items_choose() {
        let all = key_files(&data(), None, Some(0o600), "Secret s").expect("all");
        assert_eq!(all.len(), 2);
        assert!(all.iter().all(|f| f.mode == 0o600));
        let items = [KeyToPath {
            key: "b".into(),
            path: "sub/b.txt".into(),
            mode: Some(0o400),
            ..Default::default()
        }];
        let some = key_files(&data(), Some(&items), None, "Secret s").expect("items");
        assert_eq!(
            some,
            vec![VolumeFile {
                path: "sub/b.txt".into(),
                data: b"2".to_vec(),
                mode: 0o400
            }]
        );
        let missing = [KeyToPath {
            key: "zz".into(),
            path: "z".into(),
            ..Default::default()
        }];
        let err = key_files(&data(), Some(&missing), None, "Secret s").expect_err("missing");
        assert!(err.contains("Secret s") && err.contains("zz"), "{err}");
    }

    #[test]
    fn downward_fields_render_like_the_kubelet() {
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                namespace: Some("ns".into()),
                labels: Some(
                    [("app".to_string(), "web".to_string())]
                        .into_iter()
                        .collect(),
                ),
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(pod_field(&pod, "metadata.namespace"), Ok("ns".into()));
        assert_eq!(
            pod_field(&pod, "metadata.labels"),
            Ok("app=\"web\"\n".into())
        );
        assert_eq!(pod_field(&pod, "metadata.labels['app']"), Ok("web".into()));
        assert!(pod_field(&pod, "spec.nodeName").is_err());
    }

    #[test]
    fn files_are_written_whole_and_may_not_escape_the_volume() {
        let dir = std::env::temp_dir().join(format!("hb-vol-{}", std::process::id()));
        let f = |path: &str| VolumeFile {
            path: path.into(),
            data: b"x".to_vec(),
            mode: 0o640,
        };
        write_files(&dir, &[f("token"), f("nested/ca.crt")]).expect("write");
        assert_eq!(
            std::fs::read(dir.join("nested/ca.crt")).expect("read"),
            b"x"
        );
        let mode = std::fs::metadata(dir.join("token"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o640);
        for bad in ["../x", "/etc/x", "a/../../x", ""] {
            assert!(write_files(&dir, &[f(bad)]).is_err(), "{bad}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
