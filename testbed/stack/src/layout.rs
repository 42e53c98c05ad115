//! The one definition of the stack's files on disk: the state directory's
//! parts, `stack.env`, pid files (`<pid> <start time>`), and the process
//! node's pod directories and container logs. Everything that reads or
//! writes these (the supervisor, the process node, the fixtures, the shell
//! through `hb-stack layout`) goes through here.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::Error;

/// `HB_STACK_DIR`, or the default state directory of the stack.
pub fn default_stack_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("HB_STACK_DIR") {
        return PathBuf::from(dir);
    }
    xdg_dir("XDG_STATE_HOME", ".local/state").join("stack")
}

fn xdg_dir(var: &str, fallback: &str) -> PathBuf {
    let base = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(fallback)
    });
    base.join("heartbeat-operator")
}

/// The state directory of one stack and every path inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackLayout {
    root: PathBuf,
}

impl StackLayout {
    /// The layout rooted at `root` (`HB_STACK_DIR`).
    pub fn new(root: impl Into<PathBuf>) -> StackLayout {
        StackLayout { root: root.into() }
    }

    /// The state directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// Pid files of the stack's components, the watcher and the owner.
    pub fn pids_dir(&self) -> PathBuf {
        self.root.join("pids")
    }
    /// The pid file of one component (`<pid> <start time>`).
    pub fn pid_file(&self, component: &str) -> PathBuf {
        self.pids_dir().join(format!("{component}.pid"))
    }
    /// Held (flock) by `up`, `down`, `stop`, `start` and the watcher's
    /// `down`, so they never interleave on one stack.
    pub fn lock_file(&self) -> PathBuf {
        self.root.join("lock")
    }
    /// The process whose exit stops the stack (`--stop-when-exits`), as a
    /// [`PidRecord`].
    pub fn owner_file(&self) -> PathBuf {
        self.pids_dir().join("owner")
    }
    /// Logs of the stack's components.
    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }
    /// The log of one component.
    pub fn log_file(&self, component: &str) -> PathBuf {
        self.logs_dir().join(format!("{component}.log"))
    }
    /// The stack's CA, serving and client certificates.
    pub fn pki_dir(&self) -> PathBuf {
        self.root.join("pki")
    }
    /// The admin kubeconfig.
    pub fn kubeconfig(&self) -> PathBuf {
        self.root.join("kubeconfig")
    }
    /// The stack's network number (see `network::StackNet`), written before
    /// the network is made so `down` finds it even after a crash.
    pub fn net_file(&self) -> PathBuf {
        self.root.join("net")
    }
    /// What a running stack exposes (see [`StackEnv`]).
    pub fn stack_env(&self) -> PathBuf {
        self.root.join("stack.env")
    }
    /// etcd's data.
    pub fn etcd_dir(&self) -> PathBuf {
        self.root.join("etcd")
    }
    /// Kafka's configuration and data.
    pub fn kafka_dir(&self) -> PathBuf {
        self.root.join("kafka")
    }
    /// Prometheus's configuration, rule files and data.
    pub fn prometheus_dir(&self) -> PathBuf {
        self.root.join("prometheus")
    }
    /// The rule files Prometheus loads (`e2e/stack alert-rules`).
    pub fn prometheus_rules_dir(&self) -> PathBuf {
        self.prometheus_dir().join("rules")
    }
    /// Alertmanager's configuration and data.
    pub fn alertmanager_dir(&self) -> PathBuf {
        self.root.join("alertmanager")
    }
    /// The process node's state directory.
    pub fn node_dir(&self) -> PathBuf {
        self.root.join("node")
    }
    /// The process node's files.
    pub fn node(&self) -> NodeDir {
        NodeDir::new(self.node_dir())
    }
    /// Where the process node keeps its pods.
    pub fn pods(&self) -> PodsDir {
        self.node().pods()
    }
}

/// The process node's state directory (its `--state-dir`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeDir {
    root: PathBuf,
}

impl NodeDir {
    /// The node's files under `root`.
    pub fn new(root: impl Into<PathBuf>) -> NodeDir {
        NodeDir { root: root.into() }
    }
    /// Its pods.
    pub fn pods(&self) -> PodsDir {
        PodsDir::new(self.root.join("pods"))
    }
    /// Directories made on the host filesystem as volume mount points (one
    /// path a line, in the order made): a container sees its volumes at
    /// their real paths, and a path that did not exist needs a directory to
    /// mount on. Removed (deepest first, only if empty) once no container
    /// runs, by `e2e/stack down`.
    pub fn created_mountpoints(&self) -> PathBuf {
        self.root.join("created-mountpoints")
    }
}

/// The process node's pod directories: `<pods>/<namespace>_<pod>_<uid>/`,
/// each holding `volumes/<volume>/` and `containers/<container>/` with
/// `<run>.log` per run (0, 1, ... as it restarts) and a `pid` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodsDir {
    root: PathBuf,
}

impl PodsDir {
    /// Pods under `root` (the node's `--state-dir` joined with `pods`).
    pub fn new(root: impl Into<PathBuf>) -> PodsDir {
        PodsDir { root: root.into() }
    }

    /// The directory holding every pod.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of one pod.
    pub fn pod(&self, namespace: &str, name: &str, uid: &str) -> PodDir {
        PodDir {
            path: self.root.join(format!("{namespace}_{name}_{uid}")),
        }
    }

    /// Every pod directory present.
    pub fn all(&self) -> Vec<PodDir> {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| PodDir { path: e.path() })
            .collect()
    }

    /// The newest directory of pod `namespace/name` (whatever its uid).
    pub fn newest(&self, namespace: &str, name: &str) -> Option<PodDir> {
        let prefix = format!("{namespace}_{name}_");
        std::fs::read_dir(&self.root)
            .ok()?
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
            .map(|e| PodDir { path: e.path() })
    }
}

/// One pod's directory on the process node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodDir {
    path: PathBuf,
}

impl PodDir {
    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// Where the pod's emptyDir volumes live.
    pub fn volumes_dir(&self) -> PathBuf {
        self.path.join("volumes")
    }
    /// One volume's directory.
    pub fn volume(&self, name: &str) -> PathBuf {
        self.volumes_dir().join(name)
    }
    /// One container's files.
    pub fn container(&self, name: &str) -> ContainerDir {
        ContainerDir {
            path: self.path.join("containers").join(name),
        }
    }
    /// Every container directory present.
    pub fn containers(&self) -> Vec<ContainerDir> {
        let Ok(entries) = std::fs::read_dir(self.path.join("containers")) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| ContainerDir { path: e.path() })
            .collect()
    }
}

/// One container's directory: its logs per run and its pid file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerDir {
    path: PathBuf,
}

impl ContainerDir {
    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// The log of run `run` (0 for the first start, +1 per restart).
    pub fn log(&self, run: u32) -> PathBuf {
        self.path.join(format!("{run}.log"))
    }
    /// The pid file of the running process (a [`PidRecord`]).
    pub fn pid_file(&self) -> PathBuf {
        self.path.join("pid")
    }
    /// The runs that have a log, oldest first.
    pub fn runs(&self) -> Vec<u32> {
        let Ok(entries) = std::fs::read_dir(&self.path) else {
            return Vec::new();
        };
        let mut runs: Vec<u32> = entries
            .flatten()
            .filter_map(|e| run_of(&e.path()))
            .collect();
        runs.sort_unstable();
        runs
    }
    /// The log of the current run, or of the one before it.
    pub fn current_log(&self, previous: bool) -> Option<PathBuf> {
        let runs = self.runs();
        let run = if previous {
            runs.iter().rev().nth(1)?
        } else {
            runs.last()?
        };
        Some(self.log(*run))
    }
}

/// The run number of a container log file (`<run>.log`).
pub fn run_of(log: &Path) -> Option<u32> {
    log.file_name()?
        .to_str()?
        .strip_suffix(".log")?
        .parse()
        .ok()
}

/// A pid file's content, `<pid> <start time>`: the start time (field 22 of
/// `/proc/<pid>/stat`) tells a reused pid from the process that was started,
/// so a stale file never gets another process signalled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PidRecord {
    /// The process id (also its process group for node containers).
    pub pid: i32,
    /// When the process started, in clock ticks after boot.
    pub start: u64,
}

impl PidRecord {
    /// The record of a running process, read from `/proc`.
    pub fn of(pid: i32) -> Option<PidRecord> {
        Some(PidRecord {
            pid,
            start: proc_start_time(pid)?,
        })
    }

    /// Parses `<pid> <start>`.
    pub fn parse(text: &str) -> Option<PidRecord> {
        let mut parts = text.split_whitespace();
        let pid: i32 = parts.next()?.parse().ok().filter(|p| *p > 1)?;
        let start: u64 = parts.next()?.parse().ok()?;
        parts.next().is_none().then_some(PidRecord { pid, start })
    }

    /// Reads a pid file.
    pub fn read(path: &Path) -> Option<PidRecord> {
        PidRecord::parse(&std::fs::read_to_string(path).ok()?)
    }

    /// Writes a pid file whole (temp file, then rename), so a reader never
    /// sees half of it.
    pub fn write(&self, path: &Path) -> Result<(), Error> {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, self.to_string()).map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
    }

    /// Whether the recorded process still runs (same pid, same start time).
    pub fn is_alive(&self) -> bool {
        proc_start_time(self.pid) == Some(self.start)
    }

    /// The pid in a pid file, if that very process still runs.
    pub fn live_pid(path: &Path) -> Option<i32> {
        PidRecord::read(path)
            .filter(PidRecord::is_alive)
            .map(|r| r.pid)
    }
}

impl fmt::Display for PidRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.pid, self.start)
    }
}

/// Field 22 of /proc/<pid>/stat: when the process started (clock ticks
/// after boot); `None` when there is no such process or it has exited and
/// only its zombie is left.
pub fn proc_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields resume after its ')'.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?;
    if matches!(state, "Z" | "X") {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// What a running stack exposes, kept in `stack.env` as `KEY=VALUE` lines
/// (and printed by `e2e/stack env` as `export` lines).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StackEnv {
    /// Admin kubeconfig (full stack only).
    pub kubeconfig: Option<PathBuf>,
    /// `https://host:port` of the API server.
    pub kube_apiserver: Option<String>,
    /// The stack's network namespace (`e2e/stack exec` runs in it).
    pub netns: Option<String>,
    /// The stack side of the host-stack /30: the control plane and Kafka.
    pub stack_addr: Option<String>,
    /// The host side of the host-stack /30.
    pub host_addr: Option<String>,
    /// The pod network (CIDR), routed from the host through the stack address.
    pub pod_cidr: Option<String>,
    /// `host:port` of the Kafka broker.
    pub kafka_bootstrap: Option<String>,
    /// `host:port` of the broker's SASL_SSL listener.
    pub kafka_sasl_ssl_bootstrap: Option<String>,
    /// The CA that signed the broker's certificate (PEM).
    pub kafka_ca: Option<PathBuf>,
    /// Directory of the installed tools (kubectl, helm, kcat is on PATH).
    pub tools_bin: Option<PathBuf>,
    /// `http://host:port` of Prometheus.
    pub prometheus_url: Option<String>,
    /// `http://host:port` of Alertmanager.
    pub alertmanager_url: Option<String>,
    /// The URL Alertmanager sends alerts to: a test's webhook receiver
    /// listens on its address (the host's).
    pub alert_receiver: Option<String>,
}

const KUBECONFIG: &str = "KUBECONFIG";
const KUBE_APISERVER: &str = "KUBE_APISERVER";
const NETNS: &str = "HB_STACK_NETNS";
const STACK_ADDR: &str = "HB_STACK_ADDR";
const HOST_ADDR: &str = "HB_HOST_ADDR";
const POD_CIDR: &str = "HB_POD_CIDR";
const KAFKA_BOOTSTRAP: &str = "KAFKA_BOOTSTRAP";
const KAFKA_SASL_SSL_BOOTSTRAP: &str = "KAFKA_SASL_SSL_BOOTSTRAP";
const KAFKA_CA: &str = "HB_KAFKA_CA";
const TOOLS_BIN: &str = "HB_TOOLS_BIN";
const PROMETHEUS_URL: &str = "PROMETHEUS_URL";
const ALERTMANAGER_URL: &str = "ALERTMANAGER_URL";
const ALERT_RECEIVER: &str = "HB_ALERT_RECEIVER";

impl StackEnv {
    /// The `KEY=VALUE` pairs, in a fixed order, only those that are set.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        [
            (KUBECONFIG, path(&self.kubeconfig)),
            (KUBE_APISERVER, self.kube_apiserver.clone()),
            (NETNS, self.netns.clone()),
            (STACK_ADDR, self.stack_addr.clone()),
            (HOST_ADDR, self.host_addr.clone()),
            (POD_CIDR, self.pod_cidr.clone()),
            (KAFKA_BOOTSTRAP, self.kafka_bootstrap.clone()),
            (
                KAFKA_SASL_SSL_BOOTSTRAP,
                self.kafka_sasl_ssl_bootstrap.clone(),
            ),
            (KAFKA_CA, path(&self.kafka_ca)),
            (TOOLS_BIN, path(&self.tools_bin)),
            (PROMETHEUS_URL, self.prometheus_url.clone()),
            (ALERTMANAGER_URL, self.alertmanager_url.clone()),
            (ALERT_RECEIVER, self.alert_receiver.clone()),
        ]
        .into_iter()
        .filter_map(|(k, v)| Some((k, v?)))
        .collect()
    }

    /// The file's text.
    pub fn render(&self) -> String {
        self.pairs()
            .into_iter()
            .map(|(k, v)| format!("{k}={v}\n"))
            .collect()
    }

    /// Parses the file's text; unknown keys are an error (they mean a
    /// writer and a reader that disagree).
    pub fn parse(text: &str) -> Result<StackEnv, String> {
        let mut env = StackEnv::default();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let (key, value) = line
                .split_once('=')
                .ok_or_else(|| format!("not KEY=VALUE: {line:?}"))?;
            let value = value.to_string();
            match key {
                KUBECONFIG => env.kubeconfig = Some(value.into()),
                KUBE_APISERVER => env.kube_apiserver = Some(value),
                NETNS => env.netns = Some(value),
                STACK_ADDR => env.stack_addr = Some(value),
                HOST_ADDR => env.host_addr = Some(value),
                POD_CIDR => env.pod_cidr = Some(value),
                KAFKA_BOOTSTRAP => env.kafka_bootstrap = Some(value),
                KAFKA_SASL_SSL_BOOTSTRAP => env.kafka_sasl_ssl_bootstrap = Some(value),
                KAFKA_CA => env.kafka_ca = Some(value.into()),
                TOOLS_BIN => env.tools_bin = Some(value.into()),
                PROMETHEUS_URL => env.prometheus_url = Some(value),
                ALERTMANAGER_URL => env.alertmanager_url = Some(value),
                ALERT_RECEIVER => env.alert_receiver = Some(value),
                other => return Err(format!("unknown key {other}")),
            }
        }
        Ok(env)
    }

    /// Reads a running stack's `stack.env`.
    pub fn read(layout: &StackLayout) -> Result<StackEnv, Error> {
        let path = layout.stack_env();
        let text = std::fs::read_to_string(&path).map_err(|e| Error::NotUp {
            dir: layout.root().to_path_buf(),
            why: format!("{}: {e}", path.display()),
        })?;
        StackEnv::parse(&text).map_err(|why| Error::Corrupt { path, why })
    }

    /// Writes `stack.env` whole.
    pub fn write(&self, layout: &StackLayout) -> Result<(), Error> {
        let path = layout.stack_env();
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, self.render()).map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_env_round_trips_and_refuses_unknown_keys() {
        let env = StackEnv {
            kubeconfig: Some("/s/kubeconfig".into()),
            kube_apiserver: Some("https://127.0.0.1:6443".into()),
            netns: Some("hbs0".into()),
            stack_addr: Some("10.191.0.2".into()),
            host_addr: None,
            pod_cidr: Some("10.192.0.0/16".into()),
            kafka_bootstrap: Some("127.0.0.1:9092".into()),
            kafka_sasl_ssl_bootstrap: Some("127.0.0.1:9094".into()),
            kafka_ca: Some("/s/pki/ca.crt".into()),
            tools_bin: Some("/t/bin".into()),
            prometheus_url: Some("http://10.191.0.2:9090".into()),
            alertmanager_url: Some("http://10.191.0.2:9095".into()),
            alert_receiver: Some("http://10.191.0.1:9096/alerts".into()),
        };
        assert_eq!(StackEnv::parse(&env.render()), Ok(env));
        assert!(StackEnv::parse("SURPRISE=1").is_err());
        assert!(StackEnv::parse("no equals sign").is_err());
    }

    #[test]
    fn pid_record_round_trips_and_refuses_garbage() {
        let r = PidRecord {
            pid: 4242,
            start: 987654,
        };
        assert_eq!(PidRecord::parse(&r.to_string()), Some(r));
        for bad in ["", "1 2", "12", "x 1", "12 y", "12 3 4"] {
            assert_eq!(PidRecord::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn this_process_is_alive_by_its_record_and_a_changed_start_is_not() {
        let me = i32::try_from(std::process::id()).expect("pid");
        let r = PidRecord::of(me).expect("own stat");
        assert!(r.is_alive());
        assert!(
            !PidRecord {
                start: r.start + 1,
                ..r
            }
            .is_alive()
        );
    }

    #[test]
    fn pod_and_container_paths_follow_the_kubelet_like_naming() {
        let pods = StackLayout::new("/s").pods();
        let pod = pods.pod("ns", "web-1", "u-1");
        assert_eq!(pod.path(), Path::new("/s/node/pods/ns_web-1_u-1"));
        assert_eq!(
            pod.volume("data"),
            Path::new("/s/node/pods/ns_web-1_u-1/volumes/data")
        );
        let c = pod.container("app");
        assert_eq!(
            c.log(2),
            Path::new("/s/node/pods/ns_web-1_u-1/containers/app/2.log")
        );
        assert_eq!(
            c.pid_file(),
            Path::new("/s/node/pods/ns_web-1_u-1/containers/app/pid")
        );
        assert_eq!(run_of(&c.log(7)), Some(7));
    }

    #[test]
    fn current_and_previous_logs_follow_the_runs() {
        let tmp = std::env::temp_dir().join(format!("hb-layout-{}", std::process::id()));
        let c = PodsDir::new(&tmp).pod("n", "p", "u").container("c");
        std::fs::create_dir_all(c.path()).expect("mkdir");
        assert_eq!(c.current_log(false), None);
        for run in [0, 1, 10] {
            std::fs::write(c.log(run), "x").expect("write");
        }
        assert_eq!(c.current_log(false), Some(c.log(10)));
        assert_eq!(c.current_log(true), Some(c.log(1)));
        let _ = std::fs::remove_dir_all(&tmp);
    }
}
