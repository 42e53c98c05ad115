//! The image map: which local program runs for a container image. There is
//! no registry and no container runtime, so an image name is only a key.

use std::path::{Path, PathBuf};

/// What to run for an image: a program and its default arguments (the
/// image's ENTRYPOINT and CMD).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entrypoint {
    /// The program (ENTRYPOINT).
    pub program: PathBuf,
    /// Its arguments when the container gives neither command nor args (CMD).
    pub default_args: Vec<String>,
}

/// The demo workload images and the scripts under e2e/workloads/ they run.
pub const DEMO_IMAGES: &[(&str, &str)] = &[
    ("demo/worker", "worker"),
    ("demo/job", "job"),
    ("demo/http", "http-app"),
    ("demo/printenv", "printenv"),
];

/// `registry/path/name:tag@digest` -> `path/name` without registry, tag or digest.
pub fn repository(image: &str) -> &str {
    let no_digest = image.split('@').next().unwrap_or(image);
    // A ':' after the last '/' is a tag; one before it belongs to a registry port.
    let no_tag = match (no_digest.rfind(':'), no_digest.rfind('/')) {
        (Some(c), Some(s)) if c > s => &no_digest[..c],
        (Some(c), None) => &no_digest[..c],
        _ => no_digest,
    };
    // Drop a registry host (first component with a '.' or ':' or "localhost").
    match no_tag.split_once('/') {
        Some((host, rest)) if host.contains('.') || host.contains(':') || host == "localhost" => {
            rest
        }
        _ => no_tag,
    }
}

/// Resolves images to local programs.
#[derive(Debug, Clone)]
pub struct Images {
    /// The workspace checkout: its sidecar builds and `e2e/workloads/` scripts.
    pub repo_dir: PathBuf,
    /// Pins the heartbeat sidecar binary (tests); `None`: look it up at each start.
    pub sidecar_bin: Option<PathBuf>,
}

impl Images {
    /// Uses `$HB_SIDECAR_BIN` when set.
    pub fn new(repo_dir: &Path) -> Images {
        Images {
            repo_dir: repo_dir.to_path_buf(),
            sidecar_bin: std::env::var_os("HB_SIDECAR_BIN").map(PathBuf::from),
        }
    }

    /// The pinned sidecar binary, else the newer of the workspace's release
    /// and debug builds, looked up now so a build made after the node
    /// started is used.
    fn sidecar(&self) -> Option<PathBuf> {
        if let Some(pinned) = &self.sidecar_bin {
            return pinned.is_file().then(|| pinned.clone());
        }
        ["release", "debug"]
            .iter()
            .map(|profile| {
                self.repo_dir
                    .join("target")
                    .join(profile)
                    .join("heartbeat-sidecar")
            })
            .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
            .max()
            .map(|(_, p)| p)
    }

    /// The entrypoint for `image`, or the reason it cannot be "pulled".
    pub fn resolve(&self, image: &str) -> Result<Entrypoint, String> {
        let repo = repository(image);
        if repo == "heartbeat-sidecar" || repo.ends_with("/heartbeat-sidecar") {
            return self
                .sidecar()
                .map(|program| Entrypoint {
                    program,
                    default_args: Vec::new(),
                })
                .ok_or_else(|| {
                    "image heartbeat-sidecar maps to the workspace's sidecar binary, which is not built: \
                     run cargo build --release -p heartbeat-sidecar"
                        .to_string()
                });
        }
        if let Some((_, script)) = DEMO_IMAGES.iter().find(|(name, _)| *name == repo) {
            return Ok(Entrypoint {
                program: self.repo_dir.join("e2e/workloads").join(script),
                default_args: Vec::new(),
            });
        }
        let known: Vec<&str> = std::iter::once("heartbeat-sidecar")
            .chain(DEMO_IMAGES.iter().map(|(n, _)| *n))
            .collect();
        Err(format!(
            "image {image:?} is not in the process node's image map (known: {})",
            known.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_strips_registry_tag_and_digest() {
        assert_eq!(repository("heartbeat-sidecar:0.1.0"), "heartbeat-sidecar");
        assert_eq!(
            repository("ghcr.io/acme/heartbeat-sidecar:0.1.0"),
            "acme/heartbeat-sidecar"
        );
        assert_eq!(repository("localhost:5000/demo/worker"), "demo/worker");
        assert_eq!(repository("demo/worker@sha256:abc"), "demo/worker");
        assert_eq!(repository("demo/job"), "demo/job");
    }

    #[test]
    fn unknown_images_are_refused_with_the_known_list() {
        let images = Images {
            repo_dir: "/nonexistent".into(),
            sidecar_bin: None,
        };
        let err = images.resolve("nginx:1.27").expect_err("unknown");
        assert!(
            err.contains("nginx") && err.contains("demo/worker"),
            "{err}"
        );
        let err = images
            .resolve("heartbeat-sidecar:0.1.0")
            .expect_err("not built");
        assert!(err.contains("cargo build"), "{err}");
        assert_eq!(
            images.resolve("demo/worker:latest").map(|e| e.program),
            Ok(PathBuf::from("/nonexistent/e2e/workloads/worker"))
        );
    }
}
