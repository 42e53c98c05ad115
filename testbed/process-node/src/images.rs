//! The image map: which local program runs for a container image. There is
//! no registry and no container runtime, so an image name is only a key.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

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

/// The static build's directory under the target directory: what
/// `e2e/build-static` makes and the Dockerfiles ship.
pub const STATIC_BUILD_DIR: &str = "x86_64-unknown-linux-musl/release";

/// Where the workspace's binaries are built under the target directory, the
/// preferred first: of builds of equal age the earlier wins, so the static
/// build runs whenever it is at least as new as the others.
pub const BUILD_DIRS: &[&str] = &[STATIC_BUILD_DIR, "release", "debug"];

/// The paths the binary `name` may have been built at, in [`BUILD_DIRS`] order.
pub fn build_candidates(target_dir: &Path, name: &str) -> Vec<PathBuf> {
    BUILD_DIRS
        .iter()
        .map(|dir| target_dir.join(dir).join(name))
        .collect()
}

/// Which build to run: the newest of those that exist (a modification
/// time), the earliest in preference order among equally new ones.
pub fn choose_build(builds: Vec<(PathBuf, Option<SystemTime>)>) -> Option<PathBuf> {
    let mut chosen: Option<(SystemTime, PathBuf)> = None;
    for (path, modified) in builds {
        let Some(modified) = modified else { continue };
        if chosen.as_ref().is_none_or(|(newest, _)| modified > *newest) {
            chosen = Some((modified, path));
        }
    }
    chosen.map(|(_, path)| path)
}

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

    /// The workspace binary `name`: the pinned sidecar, else the newest of
    /// the static, release and debug builds (the static one when it is at
    /// least as new: [`choose_build`]), looked up now so a build made after
    /// the node started is used.
    fn workspace_binary(&self, name: &str) -> Option<PathBuf> {
        if name == "heartbeat-sidecar"
            && let Some(pinned) = &self.sidecar_bin
        {
            return pinned.is_file().then(|| pinned.clone());
        }
        let builds = build_candidates(&self.target_dir, name)
            .into_iter()
            .map(|path| {
                let modified = path.metadata().and_then(|m| m.modified()).ok();
                (path, modified)
            })
            .collect();
        choose_build(builds)
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
                         run e2e/build-static (what the images ship) or cargo build -p {name}"
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

    #[test]
    fn builds_are_looked_for_static_first() {
        assert_eq!(
            build_candidates(Path::new("/t"), "heartbeat-operator"),
            [
                "/t/x86_64-unknown-linux-musl/release/heartbeat-operator",
                "/t/release/heartbeat-operator",
                "/t/debug/heartbeat-operator",
            ]
            .map(PathBuf::from)
        );
    }

    /// `choose_build` over the candidates of `heartbeat-sidecar` under `/t`,
    /// with the static, release and debug builds made at these seconds
    /// (`None`: not built).
    fn choose(static_: Option<u64>, release: Option<u64>, debug: Option<u64>) -> Option<String> {
        let at =
            |s: Option<u64>| s.map(|s| SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(s));
        let builds = build_candidates(Path::new("/t"), "heartbeat-sidecar")
            .into_iter()
            .zip([at(static_), at(release), at(debug)])
            .collect();
        choose_build(builds).map(|p| {
            p.strip_prefix("/t")
                .expect("under the target dir")
                .parent()
                .expect("a directory")
                .display()
                .to_string()
        })
    }

    #[test]
    fn the_static_build_runs_when_at_least_as_new_as_the_others() {
        let dir = |d: &str| Some(d.to_string());
        let musl = dir(STATIC_BUILD_DIR);
        // Alone, newest, or as new as the newest other build: the static one.
        assert_eq!(choose(Some(5), None, None), musl);
        assert_eq!(choose(Some(5), Some(4), Some(3)), musl);
        assert_eq!(choose(Some(5), Some(5), Some(5)), musl);
        assert_eq!(choose(Some(5), None, Some(5)), musl);
        // Older than a build made after it (an edit, then cargo build): that one.
        assert_eq!(choose(Some(5), Some(6), Some(4)), dir("release"));
        assert_eq!(choose(Some(5), Some(4), Some(6)), dir("debug"));
        // Without a static build, the newer of release and debug, release on a tie.
        assert_eq!(choose(None, Some(4), Some(6)), dir("debug"));
        assert_eq!(choose(None, Some(6), Some(4)), dir("release"));
        assert_eq!(choose(None, Some(6), Some(6)), dir("release"));
        assert_eq!(choose(None, None, None), None);
    }
}
