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
    /// The node's list of mount points it made on the host.
    pub mountpoints_log: PathBuf,
    /// The container's volume mounts.
    pub mounts: Vec<MountSpec>,
}

impl Entry {
    /// `pod-enter ... -- program args`, in `cwd`, ready for env and stdio.
    pub fn command(&self, cwd: &Path, program: &Path, args: &[String]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.pod_enter);
        cmd.arg("--netns").arg(&self.netns);
        for m in &self.mounts {
            cmd.arg("--mount").arg(m.render());
        }
        cmd.arg("--mountpoints-log")
            .arg(&self.mountpoints_log)
            .arg("--hostname")
            .arg(&self.hostname)
            .arg("--cwd")
            .arg(cwd)
            .arg("--")
            .arg(program)
            .args(args);
        cmd
    }
}

/// Makes `target` (a directory, or a file when `file` holds) with what is
/// missing above it, noting each directory made in `log`.
fn make_mountpoint(target: &Path, file: bool, log: Option<&Path>) -> std::io::Result<()> {
    if target.exists() {
        return Ok(());
    }
    let dir = if file {
        target.parent().unwrap_or(Path::new("/"))
    } else {
        target
    };
    let missing: Vec<&Path> = dir.ancestors().take_while(|a| !a.exists()).collect();
    std::fs::create_dir_all(dir)?;
    if let Some(log) = log {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        for made in missing.iter().rev() {
            writeln!(f, "{}", made.display())?;
        }
    }
    if file {
        std::fs::File::create(target)?;
        if let Some(log) = log {
            let mut f = std::fs::OpenOptions::new().append(true).open(log)?;
            writeln!(f, "{}", target.display())?;
        }
    }
    Ok(())
}

fn bind(m: &MountSpec, log: Option<&Path>) -> Result<(), EnterError> {
    let err = |why: String| EnterError::Mount {
        from: m.source.clone(),
        target: m.target.clone(),
        why,
    };
    make_mountpoint(&m.target, m.source.is_file(), log).map_err(|e| err(e.to_string()))?;
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
    for m in mounts {
        bind(m, mountpoints_log)?;
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
