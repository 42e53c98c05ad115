//! Finding or starting the local stack, and what it exposes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// A running local stack.
#[derive(Debug, Clone)]
pub struct Stack {
    /// State directory (`HB_STACK_DIR`).
    pub dir: PathBuf,
    /// Admin kubeconfig for the API server.
    pub kubeconfig: PathBuf,
    /// `host:port` of the Kafka broker.
    pub kafka_bootstrap: String,
    /// Directory of the installed tools (kubectl, helm, ...).
    pub tools_bin: PathBuf,
}

/// The repository root (where `e2e/stack` lives).
pub fn repo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn default_dir(var: &str, xdg: &str, fallback: &str, leaf: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os(var) {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os(xdg).map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(fallback)
    });
    base.join("heartbeat-operator").join(leaf)
}

/// `HB_STACK_DIR`, defaulting as `e2e/stack` does.
pub fn stack_dir() -> PathBuf {
    default_dir("HB_STACK_DIR", "XDG_STATE_HOME", ".local/state", "stack")
}

/// `HB_TOOLS_DIR`, defaulting as `e2e/stack` does.
pub fn tools_dir() -> PathBuf {
    default_dir("HB_TOOLS_DIR", "XDG_CACHE_HOME", ".cache", "tools")
}

impl Stack {
    /// The stack for this test binary: the one already up at `HB_STACK_DIR`
    /// (kept up while this process runs, if a fixture started it), or a new,
    /// empty one started now and stopped when this process exits.
    /// Panics with `e2e/stack`'s own message (which names any missing tool).
    pub fn get() -> &'static Stack {
        static STACK: OnceLock<Stack> = OnceLock::new();
        STACK.get_or_init(|| {
            let dir = stack_dir();
            let script = repo_dir().join("e2e/stack");
            let out = Command::new(&script)
                .arg("up")
                .arg("--fresh")
                .arg("--stop-when-exits")
                .arg(std::process::id().to_string())
                .env("HB_STACK_DIR", &dir)
                .output()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
            assert!(
                out.status.success(),
                "e2e/stack up failed (HB_STACK_DIR={}):\n{}",
                dir.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            Stack::read(&dir).unwrap_or_else(|e| panic!("{e}"))
        })
    }

    /// Reads a running stack's `stack.env`.
    pub fn read(dir: &Path) -> Result<Stack, String> {
        let env_file = dir.join("stack.env");
        let text = std::fs::read_to_string(&env_file)
            .map_err(|e| format!("stack is not up: {}: {e}", env_file.display()))?;
        let get = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .map(str::to_string)
                .ok_or_else(|| format!("{} has no {key}", env_file.display()))
        };
        Ok(Stack {
            dir: dir.to_path_buf(),
            kubeconfig: PathBuf::from(get("KUBECONFIG")?),
            kafka_bootstrap: get("KAFKA_BOOTSTRAP")?,
            tools_bin: tools_dir().join("bin"),
        })
    }

    /// A command for an installed tool (`kubectl`, `helm`, ...) pointed at this stack.
    pub fn tool(&self, name: &str) -> Command {
        let mut cmd = Command::new(self.tools_bin.join(name));
        cmd.env("KUBECONFIG", &self.kubeconfig);
        cmd
    }

    /// `kubectl` against this stack.
    pub fn kubectl(&self) -> Command {
        self.tool("kubectl")
    }
}

/// Runs a command, returning (success, stdout, stderr).
pub fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs a command and panics with its output unless it succeeds.
pub fn run_ok(cmd: &mut Command) -> String {
    let (ok, stdout, stderr) = run(cmd);
    assert!(ok, "{cmd:?} failed:\n{stdout}\n{stderr}");
    stdout
}

/// The current log of `container` in pod `namespace/pod` on the process node.
pub fn container_log(stack: &Stack, namespace: &str, pod: &str, container: &str) -> String {
    let pods = stack.dir.join("node/pods");
    crate::node::kubelet_api::log_file(&pods, namespace, pod, container, false)
        .and_then(|log| std::fs::read_to_string(log).ok())
        .unwrap_or_default()
}
