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
    ("demo/kubeapi", "kubeapi"),
    ("demo/webhook", "webhook"),
];

/// Images that run a binary of the workspace: any image whose last path
/// segment is one of these (so a chart's `ghcr.io/x/heartbeat-operator:1.2`
/// runs the local build).
pub const WORKSPACE_IMAGES: &[&str] = &["heartbeat-sidecar", "heartbeat-operator"];

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
    /// Where the workspace's binaries are built.
    pub target_dir: PathBuf,
    /// Pins the heartbeat sidecar binary (tests); `None`: look it up at each start.
    pub sidecar_bin: Option<PathBuf>,
}

impl Images {
    /// Uses `$HB_SIDECAR_BIN` and `$CARGO_TARGET_DIR` when set.
    pub fn new(repo_dir: &Path) -> Images {
        Images {
            repo_dir: repo_dir.to_path_buf(),
            target_dir: std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| repo_dir.join("target")),
            sidecar_bin: std::env::var_os("HB_SIDECAR_BIN").map(PathBuf::from),
        }
    }

    /// The workspace binary `name`: the pinned sidecar, else the newer of
    /// the release and debug builds, looked up now so a build made after
    /// the node started is used.
    fn workspace_binary(&self, name: &str) -> Option<PathBuf> {
        if name == "heartbeat-sidecar"
            && let Some(pinned) = &self.sidecar_bin
        {
            return pinned.is_file().then(|| pinned.clone());
        }
        let target = &self.target_dir;
        ["release", "debug"]
            .iter()
            .map(|profile| target.join(profile).join(name))
            .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
            .max()
            .map(|(_, p)| p)
    }

    /// The entrypoint for `image`, or the reason it cannot be "pulled".
    pub fn resolve(&self, image: &str) -> Result<Entrypoint, String> {
        let repo = repository(image);
        let last = repo.rsplit('/').next().unwrap_or(repo);
        if let Some(name) = WORKSPACE_IMAGES.iter().find(|n| **n == last) {
            return self
                .workspace_binary(name)
                .map(|program| Entrypoint {
                    program,
                    default_args: Vec::new(),
                })
                .ok_or_else(|| {
                    format!(
                        "image {image} maps to the workspace's {name} binary, which is not built: \
                         run cargo build -p {name}"
                    )
                });
        }
        if let Some((_, script)) = DEMO_IMAGES.iter().find(|(name, _)| *name == repo) {
            return Ok(Entrypoint {
                program: self.repo_dir.join("e2e/workloads").join(script),
                default_args: Vec::new(),
            });
        }
        let known: Vec<&str> = WORKSPACE_IMAGES
            .iter()
            .copied()
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
            target_dir: "/nonexistent/target".into(),
            sidecar_bin: None,
        };
        let err = images.resolve("nginx:1.27").expect_err("unknown");
        assert!(
            err.contains("nginx") && err.contains("demo/worker"),
            "{err}"
        );
        for image in [
            "heartbeat-sidecar:0.1.0",
            "ghcr.io/acme/heartbeat-operator:1.2",
        ] {
            let err = images.resolve(image).expect_err("not built");
            assert!(err.contains("cargo build"), "{err}");
        }
        assert_eq!(
            images.resolve("demo/worker:latest").map(|e| e.program),
            Ok(PathBuf::from("/nonexistent/e2e/workloads/worker"))
        );
    }
}
