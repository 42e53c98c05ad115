//! Entering a pod: the `pod-enter` contract, both sides. The node builds
//! the command ([`Entry::command`]); `pod-enter` ([`enter`]) joins the pod's
//! network namespace, makes a mount namespace of the container's own with
//! its volumes at their real paths, sets the pod's hostname, and execs. The
//! entering runs in the short-lived pod-enter process just before exec, so
//! its failures are reported in the container's log and it exits 127.

use std::convert::Infallible;
use std::ffi::CString;
use std::io::Write;
use std::path::{Path, PathBuf};

use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, setns, unshare};

/// What went wrong entering the pod.
#[derive(Debug, thiserror::Error)]
pub enum EnterError {
    #[error("joining network namespace {}: {why}", path.display())]
    Netns { path: PathBuf, why: String },
    #[error("making a mount namespace: {0}")]
    MountNs(String),
    #[error("mounting {} at {}: {why}", from.display(), target.display())]
    Mount {
        from: PathBuf,
        target: PathBuf,
        why: String,
    },
    #[error("setting the hostname: {0}")]
    Hostname(String),
    #[error("working directory {}: {why}", path.display())]
    Cwd { path: PathBuf, why: String },
    #[error("exec: {0}")]
    Exec(String),
}

/// One volume mount: a directory (or file) of the pod at `target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    pub source: PathBuf,
    pub target: PathBuf,
    pub read_only: bool,
}

impl MountSpec {
    /// Parses `SOURCE:TARGET[:ro]` (paths hold no `:`; both are absolute).
    pub fn parse(s: &str) -> Result<MountSpec, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let (source, target, read_only) = match parts.as_slice() {
            [source, target] => (source, target, false),
            [source, target, "ro"] => (source, target, true),
            _ => return Err(format!("{s:?} is not SOURCE:TARGET[:ro]")),
        };
        if !source.starts_with('/') || !target.starts_with('/') {
            return Err(format!("{s:?}: both paths must be absolute"));
        }
        Ok(MountSpec {
            source: PathBuf::from(source),
            target: PathBuf::from(target),
            read_only,
        })
    }

    /// The `--mount` argument for this mount.
    pub fn render(&self) -> String {
        let ro = if self.read_only { ":ro" } else { "" };
        format!("{}:{}{ro}", self.source.display(), self.target.display())
    }
}

/// Everything needed to run a program inside one container of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The `pod-enter` binary.
    pub pod_enter: PathBuf,
    /// The pod's network namespace.
    pub netns: PathBuf,
    /// The pod's IP (where probes reach it).
    pub pod_ip: String,
    /// The pod's hostname.
    pub hostname: String,
    /// A directory of the container's own for its private tmpfs.
    pub scratch: PathBuf,
    /// The node's list of mount points it had to make on the host.
    pub mountpoints_log: PathBuf,
    /// The container's volume mounts.
    pub mounts: Vec<MountSpec>,
    /// The container's environment (the node adds only its own PATH).
    pub env: Vec<(String, String)>,
}

impl Entry {
    /// `pod-enter ... -- program args` in `cwd` with the container's
    /// environment, ready for stdio.
    pub fn command(&self, cwd: &Path, program: &Path, args: &[String]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.pod_enter);
        cmd.arg("--netns").arg(&self.netns);
        for m in &self.mounts {
            cmd.arg("--mount").arg(m.render());
        }
        cmd.arg("--scratch")
            .arg(&self.scratch)
            .arg("--mountpoints-log")
            .arg(&self.mountpoints_log)
            .arg("--hostname")
            .arg(&self.hostname)
            .arg("--cwd")
            .arg(cwd)
            .arg("--")
            .arg(program)
            .args(args)
            .env_clear()
            .env(
                "PATH",
                std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()),
            )
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }
}

/// Where missing mount points are made without touching the host: each
/// existing directory above a missing target is overlaid (in this
/// container's mount namespace only) with an overlayfs whose upper layer
/// lives on a private tmpfs, so the directories made exist for this
/// container alone and vanish with it.
struct MountPoints {
    /// A private tmpfs for the overlays' upper and work directories.
    scratch: PathBuf,
    scratch_mounted: bool,
    /// Directories overlaid so far.
    overlaid: Vec<PathBuf>,
    /// Where mount points made on the host itself are listed (only when the
    /// nearest existing directory is `/`, which cannot be overlaid).
    host_log: Option<PathBuf>,
}

impl MountPoints {
    /// The nearest existing directory above `path` (symlinks resolved).
    fn existing_ancestor(path: &Path) -> PathBuf {
        path.ancestors()
            .skip(1)
            .find_map(|a| std::fs::canonicalize(a).ok().filter(|c| c.is_dir()))
            .unwrap_or_else(|| PathBuf::from("/"))
    }

    fn overlay(&mut self, dir: &Path) -> Result<(), String> {
        if !self.scratch_mounted {
            std::fs::create_dir_all(&self.scratch).map_err(|e| e.to_string())?;
            mount(
                Some("tmpfs"),
                &self.scratch,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                Some("mode=0755"),
            )
            .map_err(|e| format!("tmpfs at {}: {e}", self.scratch.display()))?;
            self.scratch_mounted = true;
        }
        let n = self.overlaid.len();
        let (upper, work) = (
            self.scratch.join(format!("upper{n}")),
            self.scratch.join(format!("work{n}")),
        );
        for d in [&upper, &work] {
            std::fs::create_dir_all(d).map_err(|e| e.to_string())?;
        }
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            dir.display(),
            upper.display(),
            work.display()
        );
        mount(
            Some("overlay"),
            dir,
            Some("overlay"),
            MsFlags::empty(),
            Some(options.as_str()),
        )
        .map_err(|e| format!("overlay on {}: {e}", dir.display()))?;
        self.overlaid.push(dir.to_path_buf());
        Ok(())
    }

    /// Makes `target` (a directory, or an empty file when `file` holds).
    fn make(&mut self, target: &Path, file: bool) -> Result<(), String> {
        if target.exists() {
            return Ok(());
        }
        let ancestor = Self::existing_ancestor(target);
        let covered = self.overlaid.iter().any(|o| ancestor.starts_with(o));
        let on_host = ancestor == Path::new("/");
        if !covered && !on_host {
            self.overlay(&ancestor)?;
        }
        let dir = if file {
            target.parent().unwrap_or(Path::new("/"))
        } else {
            target
        };
        let missing: Vec<PathBuf> = dir
            .ancestors()
            .take_while(|a| !a.exists())
            .map(Path::to_path_buf)
            .collect();
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        if file {
            std::fs::File::create(target).map_err(|e| e.to_string())?;
        }
        if on_host && let Some(log) = &self.host_log {
            let mut made: Vec<PathBuf> = missing.into_iter().rev().collect();
            if file {
                made.push(target.to_path_buf());
            }
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .map_err(|e| e.to_string())?;
            for p in made {
                writeln!(f, "{}", p.display()).map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }
}

fn bind(m: &MountSpec, points: &mut MountPoints) -> Result<(), EnterError> {
    let err = |why: String| EnterError::Mount {
        from: m.source.clone(),
        target: m.target.clone(),
        why,
    };
    points.make(&m.target, m.source.is_file()).map_err(err)?;
    mount(
        Some(&m.source),
        &m.target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| err(e.to_string()))?;
    if m.read_only {
        mount(
            None::<&str>,
            &m.target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| err(format!("read-only: {e}")))?;
    }
    Ok(())
}

/// Enters the pod and execs `command`; returns only on failure.
pub fn enter(
    netns: &Path,
    mounts: &[MountSpec],
    scratch: &Path,
    mountpoints_log: Option<&Path>,
    hostname: Option<&str>,
    cwd: &Path,
    command: &[CString],
) -> Result<Infallible, EnterError> {
    let ns = std::fs::File::open(netns).map_err(|e| EnterError::Netns {
        path: netns.to_path_buf(),
        why: e.to_string(),
    })?;
    setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|e| EnterError::Netns {
        path: netns.to_path_buf(),
        why: e.to_string(),
    })?;
    drop(ns);
    unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS)
        .map_err(|e| EnterError::MountNs(e.to_string()))?;
    // Nothing mounted here may reach the host or other containers.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| EnterError::MountNs(e.to_string()))?;
    let mut points = MountPoints {
        scratch: scratch.to_path_buf(),
        scratch_mounted: false,
        overlaid: Vec::new(),
        host_log: mountpoints_log.map(Path::to_path_buf),
    };
    for m in mounts {
        bind(m, &mut points)?;
    }
    if let Some(name) = hostname {
        nix::unistd::sethostname(name).map_err(|e| EnterError::Hostname(e.to_string()))?;
    }
    std::env::set_current_dir(cwd).map_err(|e| EnterError::Cwd {
        path: cwd.to_path_buf(),
        why: e.to_string(),
    })?;
    let program = command
        .first()
        .ok_or_else(|| EnterError::Exec("no program".into()))?;
    nix::unistd::execvp(program, command)
        .map_err(|e| EnterError::Exec(format!("{}: {e}", program.to_string_lossy())))
}

#[cfg(test)]
mod tests {
    use super::MountSpec;

    #[test]
    fn mount_specs_round_trip_and_refuse_relative_or_malformed() {
        for text in ["/a/b:/data", "/v/token:/var/run/secrets/x:ro"] {
            let m = MountSpec::parse(text).expect(text);
            assert_eq!(m.render(), text);
        }
        assert!(MountSpec::parse("/a:/b:ro").expect("ro").read_only);
        for bad in ["a:/b", "/a:b", "/a", "/a:/b:rw", "/a:/b:ro:x"] {
            assert!(MountSpec::parse(bad).is_err(), "{bad}");
        }
    }
}
