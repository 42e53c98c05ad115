//! Finding or starting a local stack through `e2e/stack`, and what it
//! exposes (read from its `stack.env` through the test bed's layout).

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{
    Mutex, MutexGuard, OnceLock, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard,
};

use heartbeat_testbed::layout::{StackEnv, StackLayout, default_stack_dir};

/// A running full local stack (the cluster tier).
#[derive(Debug, Clone)]
pub struct Stack {
    /// Its state directory (`HB_STACK_DIR`).
    pub layout: StackLayout,
    /// Admin kubeconfig for the API server.
    pub kubeconfig: PathBuf,
    /// `host:port` of the Kafka broker.
    pub kafka_bootstrap: String,
    /// Directory of the installed tools (kubectl, helm, ...).
    pub tools_bin: PathBuf,
    /// Everything its `stack.env` says (addresses, network namespace, ...).
    pub env: StackEnv,
}

/// The repository root (where `e2e/stack` lives).
pub fn repo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// `e2e/stack <args>` on the stack at `dir`.
pub fn stack_command(dir: &Path) -> Command {
    let mut cmd = Command::new(repo_dir().join("e2e/stack"));
    cmd.env("HB_STACK_DIR", dir);
    cmd
}

/// Where [`Stack::alone`] runs its stack: `HB_ALONE_STACK_DIR`, or the
/// shared stack's directory with `-alone` appended.
pub fn alone_stack_dir() -> PathBuf {
    sibling_stack_dir("HB_ALONE_STACK_DIR", "-alone")
}

/// The directory `var` names, or the full stack's with `suffix` appended:
/// where a stack beside the full one lives.
pub fn sibling_stack_dir(var: &str, suffix: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os(var) {
        return PathBuf::from(dir);
    }
    let mut dir = default_stack_dir().into_os_string();
    dir.push(suffix);
    PathBuf::from(dir)
}

/// Brings up (or keeps) the stack at `dir` for this test binary, with
/// `components` (empty: all), and reads what it exposes. Panics with
/// `e2e/stack`'s own message (which names any missing tool).
pub fn up_for_this_binary(dir: &Path, components: &str, fresh: bool) -> StackEnv {
    let mut cmd = stack_command(dir);
    cmd.arg("up")
        .args(fresh.then_some("--fresh"))
        .arg("--stop-when-exits")
        .arg(std::process::id().to_string())
        .env("HB_COMPONENTS", components);
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run e2e/stack: {e}"));
    assert!(
        out.status.success(),
        "e2e/stack up failed (HB_STACK_DIR={}, HB_COMPONENTS={components:?}):\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    StackEnv::read(&StackLayout::new(dir)).unwrap_or_else(|e| panic!("{e}"))
}

/// The tests of one binary share its stack, many at once; a test that
/// must not run beside any other takes it [`exclusive`](Stack::exclusive).
static SHARING: RwLock<()> = RwLock::new(());

thread_local! {
    /// This thread's share of the stack, taken by its first [`Stack::get`]
    /// and held until the thread ends: libtest runs each test on a thread
    /// of its own, so a test holds it for as long as it runs.
    static SHARE: RefCell<Option<RwLockReadGuard<'static, ()>>> = const { RefCell::new(None) };
}

/// The shared stack held by one test, no other running (see [`Stack::exclusive`]).
pub struct Exclusive {
    _held: RwLockWriteGuard<'static, ()>,
}

/// Tests that stop a component take turns on a stack of their own.
static TURNS: Mutex<()> = Mutex::new(());

/// The stack of the tests that stop its components, held by one of them
/// (see [`Stack::alone`]).
pub struct Alone {
    _held: MutexGuard<'static, ()>,
}

impl Stack {
    /// The full stack for this test binary: the one already up at
    /// `HB_STACK_DIR` (kept up while this process runs, if a fixture
    /// started it), or a new, empty one started now and stopped when this
    /// process exits. The calling test shares it with the others running
    /// (waiting while one holds it [`exclusive`](Stack::exclusive)).
    pub fn get() -> &'static Stack {
        SHARE.with(|share| {
            if share.borrow().is_none() {
                let guard = SHARING.read().unwrap_or_else(PoisonError::into_inner);
                *share.borrow_mut() = Some(guard);
            }
        });
        Self::shared()
    }

    /// The shared stack with no other test of this binary running, for a
    /// test that loads the machine: it waits until no other test holds a
    /// share, and holds the stack alone while the guard lives (tests that
    /// start meanwhile wait).
    pub fn exclusive() -> (&'static Stack, Exclusive) {
        // This thread's own share first (a share taken earlier on this
        // thread, say by a helper), or it would wait for itself.
        SHARE.with(|share| share.borrow_mut().take());
        let guard = SHARING.write().unwrap_or_else(PoisonError::into_inner);
        (Self::shared(), Exclusive { _held: guard })
    }

    /// A full stack apart from the shared one, for a test that stops one
    /// of its components (the API server, the broker) or must see no other
    /// test's pods: the tests that call this take turns on it while the
    /// shared stack's tests go on beside them. It is
    /// `$HB_ALONE_STACK_DIR`, or the shared stack's directory with
    /// `-alone` appended, started on first use (or the one already up
    /// there) and stopped when this process exits (one test binary at a
    /// time may use it).
    pub fn alone() -> (&'static Stack, Alone) {
        let guard = TURNS.lock().unwrap_or_else(PoisonError::into_inner);
        static STACK: OnceLock<Stack> = OnceLock::new();
        let stack = STACK.get_or_init(|| {
            let dir = alone_stack_dir();
            let env = up_for_this_binary(&dir, "", true);
            Stack::from_env(StackLayout::new(dir), env).unwrap_or_else(|e| panic!("{e}"))
        });
        (stack, Alone { _held: guard })
    }

    fn shared() -> &'static Stack {
        static STACK: OnceLock<Stack> = OnceLock::new();
        STACK.get_or_init(|| {
            let dir = default_stack_dir();
            let env = up_for_this_binary(&dir, "", true);
            Stack::from_env(StackLayout::new(dir), env).unwrap_or_else(|e| panic!("{e}"))
        })
    }

    /// A stack from what its `stack.env` says.
    pub fn from_env(layout: StackLayout, env: StackEnv) -> Result<Stack, String> {
        let missing = |key: &str| format!("{} has no {key}", layout.stack_env().display());
        Ok(Stack {
            kubeconfig: env
                .kubeconfig
                .clone()
                .ok_or_else(|| missing("KUBECONFIG"))?,
            kafka_bootstrap: env
                .kafka_bootstrap
                .clone()
                .ok_or_else(|| missing("KAFKA_BOOTSTRAP"))?,
            tools_bin: env
                .tools_bin
                .clone()
                .ok_or_else(|| missing("HB_TOOLS_BIN"))?,
            env,
            layout,
        })
    }

    /// A command for an installed tool (`kubectl`, `helm`, ...) pointed at this stack.
    pub fn tool(&self, name: &str) -> Command {
        let mut cmd = Command::new(self.tools_bin.join(name));
        // The stack is on this machine: never through a user's proxy.
        for var in ["http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"] {
            cmd.env_remove(var);
        }
        cmd.env("KUBECONFIG", &self.kubeconfig);
        cmd
    }

    /// `kubectl` against this stack.
    pub fn kubectl(&self) -> Command {
        self.tool("kubectl")
    }

    /// A kubeconfig for ServiceAccount `namespace/name` (a token from the
    /// TokenRequest API, the stack's CA): how tests run the operator with
    /// exactly the rights its RBAC grants.
    pub fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> PathBuf {
        let token = run_ok(self.kubectl().args([
            "create",
            "token",
            name,
            "-n",
            namespace,
            "--duration",
            "2h",
        ]));
        let server = self.env.kube_apiserver.clone().expect("KUBE_APISERVER");
        let ca = self.layout.pki_dir().join("ca.crt");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster: {{server: \"{server}\", certificate-authority: \"{}\"}}\n\
             users:\n- name: sa\n  user: {{token: \"{}\"}}\ncontexts:\n- name: sa\n  context: {{cluster: local, user: sa, namespace: {namespace}}}\n\
             current-context: sa\n",
            ca.display(),
            token.trim()
        );
        let path = std::env::temp_dir().join(format!("kubeconfig-{namespace}-{name}"));
        std::fs::write(&path, text).expect("write kubeconfig");
        path
    }

    /// The pid (also the process group) of a running container, as
    /// `e2e/stack container-pid` reports it; panics when it is not running.
    pub fn container_pid(&self, namespace: &str, pod: &str, container: &str) -> i32 {
        let out = run_ok(stack_command(self.layout.root()).args([
            "container-pid",
            namespace,
            pod,
            container,
        ]));
        out.trim()
            .parse()
            .unwrap_or_else(|e| panic!("container-pid printed {out:?}: {e}"))
    }

    /// `e2e/stack stop|start COMPONENT` on this stack (`start` waits until
    /// the component answers again, on the same address and port).
    fn toggle(&self, action: &str, component: &str) {
        run_ok(
            stack_command(self.layout.root())
                .env("HB_COMPONENTS", "")
                .args([action, component]),
        );
    }

    /// Stops the API server: an outage for everything that talks to it.
    /// Only on a stack a test holds [`alone`](Stack::alone) (or stop the
    /// broker), as the other tests would see the outage too.
    pub fn stop_apiserver(&self) {
        self.toggle("stop", "apiserver");
    }

    /// Starts it again (same certificates) and waits until `/readyz` answers.
    pub fn start_apiserver(&self) {
        self.toggle("start", "apiserver");
    }

    /// Stops the stack's broker (see [`Stack::stop_apiserver`]).
    pub fn stop_kafka(&self) {
        self.toggle("stop", "kafka");
    }

    /// Starts the broker again and waits until it answers.
    pub fn start_kafka(&self) {
        self.toggle("start", "kafka");
    }

    /// The current log of `container` in pod `namespace/pod` on the process node.
    pub fn container_log(&self, namespace: &str, pod: &str, container: &str) -> String {
        self.layout
            .pods()
            .newest(namespace, pod)
            .and_then(|p| p.container(container).current_log(false))
            .and_then(|log| std::fs::read_to_string(log).ok())
            .unwrap_or_default()
    }
}

/// Runs a command with `input` on its stdin, returning (success, stdout, stderr).
pub fn run_with_stdin(cmd: &mut Command, input: &str) -> (bool, String, String) {
    use std::io::Write;
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    if let Some(mut stdin) = child.stdin.take() {
        // A command that exits without reading all of it fails below.
        let _ = stdin.write_all(input.as_bytes());
    }
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("cannot wait for {cmd:?}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
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
