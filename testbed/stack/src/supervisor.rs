//! `e2e/stack up|down|status|env|stop|start|create-topic`: starting the
//! wanted components in order and waiting for each to be healthy, and
//! stopping exactly what was started (the node's containers included).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::components::{Component, Plan, Tools, port};
use crate::layout::{PidRecord, StackEnv, StackLayout};
use crate::network::{self, StackNet};
use crate::{Error, owner, pki, process, say};

/// The Node the process node registers.
pub const NODE_NAME: &str = "process-node";

/// How long a component gets to exit after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// One stack: where it lives, what it runs, with which tools.
#[derive(Debug, Clone)]
pub struct Stack {
    pub layout: StackLayout,
    pub tools: Tools,
    /// The components this stack runs (`HB_COMPONENTS`).
    pub components: Vec<Component>,
    /// How long each component gets to become healthy.
    pub up_timeout: Duration,
}

/// Options of `up`.
#[derive(Debug, Clone, Default)]
pub struct UpOptions {
    /// Start from an empty cluster and broker.
    pub fresh: bool,
    /// Stop the stack once this process exits.
    pub owner: Option<i32>,
}

impl Stack {
    fn wants(&self, c: Component) -> bool {
        self.components.contains(&c)
    }

    fn running(&self, c: Component) -> Option<PidRecord> {
        process::running(&self.layout.pid_file(c.name()))
    }

    fn mkdirs(&self) -> Result<(), Error> {
        for dir in [self.layout.pids_dir(), self.layout.logs_dir()] {
            std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        }
        Ok(())
    }

    /// Starts the stack, or keeps the one that is up (handing it to `owner`).
    pub fn up(&self, opts: &UpOptions) -> Result<(), Error> {
        let missing = self.tools.missing(&self.components);
        if !missing.is_empty() {
            return Err(Error::MissingTools(missing));
        }
        self.mkdirs()?;
        let all_running = self.components.iter().all(|c| self.running(*c).is_some())
            && StackNet::read(&self.layout).is_some_and(|n| network::netns_exists(&n.netns()));
        if all_running && self.layout.stack_env().is_file() {
            // A stack a fixture started, whose owner (the previous test
            // binary) has exited, stays up for the new one.
            if let Some(pid) = opts.owner
                && owner::watcher_alive(&self.layout)
                && !owner::owner_alive(&self.layout)
            {
                owner::hand_over(&self.layout, pid)?;
            }
            say(format!("already up ({})", self.layout.root().display()));
            return Ok(());
        }
        // Anything half-started or left by a crash goes first.
        self.down_quietly();
        self.mkdirs()?;
        if opts.fresh {
            for dir in [
                self.layout.etcd_dir(),
                self.layout.kafka_dir(),
                self.layout.node_dir(),
                self.layout.prometheus_dir(),
                self.layout.alertmanager_dir(),
            ] {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
        let net = network::create(&self.layout)?;
        let plan = Plan {
            layout: self.layout.clone(),
            tools: self.tools.clone(),
            net,
        };
        // Watched from the start: an `up` killed half-way leaks nothing.
        let started = match opts.owner {
            Some(pid) => owner::watch(&self.layout, pid),
            None => Ok(()),
        }
        .and_then(|()| self.start_all(&plan));
        if let Err(e) = started {
            self.down_quietly();
            return Err(e);
        }
        say("up: eval \"$(e2e/stack env)\" to use it");
        Ok(())
    }

    fn start_all(&self, plan: &Plan) -> Result<(), Error> {
        let net = &plan.net;
        let mut env = StackEnv {
            tools_bin: Some(self.tools.bin()),
            netns: Some(net.netns()),
            stack_addr: Some(net.stack_addr().to_string()),
            host_addr: Some(net.host_addr().to_string()),
            pod_cidr: Some(net.pod_cidr()),
            ..StackEnv::default()
        };
        if self.wants(Component::KubeApiserver) || self.wants(Component::Kafka) {
            pki::ensure(&self.layout.pki_dir(), net.stack_addr())?;
        }
        if self.wants(Component::KubeApiserver) {
            let kc = self.layout.kubeconfig();
            std::fs::write(&kc, plan.kubeconfig()).map_err(|e| Error::io(&kc, e))?;
            env.kubeconfig = Some(kc);
            env.kube_apiserver = Some(format!("https://{}:{}", net.stack_addr(), port::APISERVER));
        }
        if self.wants(Component::Kafka) {
            env.kafka_bootstrap = Some(plan.kafka_bootstrap());
            env.kafka_sasl_ssl_bootstrap = Some(plan.kafka_sasl_ssl_bootstrap());
            env.kafka_ca = Some(self.layout.pki_dir().join("ca.crt"));
        }
        if self.wants(Component::Prometheus) {
            env.prometheus_url = Some(plan.prometheus_url());
        }
        if self.wants(Component::Alertmanager) {
            env.alertmanager_url = Some(plan.alertmanager_url());
            env.alert_receiver = Some(crate::alerting::receiver_url(net.host_addr()));
        }
        for c in &self.components {
            say(format!("starting {}", c.name()));
            self.start_one(plan, *c)?;
        }
        env.write(&self.layout)
    }

    fn start_one(&self, plan: &Plan, c: Component) -> Result<(), Error> {
        let launch = plan.launch(c)?;
        let log = self.layout.log_file(c.name());
        // Each start has a log of its own, so a failure shows only its lines.
        let _ = std::fs::remove_file(&log);
        // Every component runs in the stack's network namespace.
        let mut args = plan.net.nsenter_args().to_vec();
        args.push(launch.program.display().to_string());
        args.extend(launch.args);
        let record = process::start_detached(
            std::path::Path::new("nsenter"),
            &args,
            &[],
            &log,
            &self.layout.pid_file(c.name()),
        )?;
        let unhealthy = |why: String| Error::Unhealthy {
            component: c.name(),
            why,
            log_tail: process::tail(&log, 30),
            log: log.clone(),
        };
        let deadline = Instant::now() + self.up_timeout;
        while !plan.healthy(c) {
            if !record.is_alive() {
                return Err(unhealthy("process exited".into()));
            }
            if Instant::now() >= deadline {
                return Err(unhealthy(format!(
                    "not healthy after {}s",
                    self.up_timeout.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        Ok(())
    }

    /// Stops what `up` started, the node's containers and the watcher.
    pub fn down(&self) {
        self.stop_all(&mut |msg| say(msg));
    }

    fn down_quietly(&self) {
        self.stop_all(&mut |_| ());
    }

    fn stop_all(&self, report: &mut dyn FnMut(String)) {
        for c in Component::STOP_ORDER {
            if let Some(pid) = process::stop(&self.layout.pid_file(c.name()), STOP_GRACE) {
                report(format!("stopped {} ({pid})", c.name()));
            }
        }
        self.kill_orphaned_containers(report);
        self.remove_created_mountpoints();
        match StackNet::read(&self.layout) {
            Some(net) => match network::destroy(&net) {
                Ok(()) => {
                    report(format!(
                        "removed network namespace {} and its links",
                        net.netns()
                    ));
                    let _ = std::fs::remove_file(self.layout.net_file());
                }
                // The record stays, so a later `down` tries again.
                Err(e) => report(format!("error: {e}")),
            },
            // Not ours any more (a reboot, a namespace deleted by hand).
            None => {
                let _ = std::fs::remove_file(self.layout.net_file());
            }
        }
        let _ = std::fs::remove_file(self.layout.stack_env());
        owner::stop_watcher(&self.layout);
    }

    /// Container process groups of a node that died without stopping them.
    fn kill_orphaned_containers(&self, report: &mut dyn FnMut(String)) {
        for pod in self.layout.pods().all() {
            for ctr in pod.containers() {
                let file = ctr.pid_file();
                if let Some(pid) = PidRecord::live_pid(&file)
                    && killpg(Pid::from_raw(pid), Signal::SIGKILL).is_ok()
                {
                    report(format!("killed orphaned container group {pid}"));
                }
                let _ = std::fs::remove_file(file);
            }
        }
    }

    /// The mount points the node made on the host for its pods' volumes,
    /// deepest first and only while empty (no container runs any more).
    fn remove_created_mountpoints(&self) {
        let log = self.layout.node().created_mountpoints();
        let made = std::fs::read_to_string(&log).unwrap_or_default();
        for path in made.lines().rev().map(std::path::Path::new) {
            let empty_file = path.is_file() && path.metadata().is_ok_and(|m| m.len() == 0);
            let _ = if empty_file {
                std::fs::remove_file(path)
            } else {
                std::fs::remove_dir(path)
            };
        }
        let _ = std::fs::remove_file(log);
    }

    /// Prints each component's state and the stack's env; false when one is stopped.
    pub fn status(&self) -> bool {
        let mut all = true;
        for c in &self.components {
            match self.running(*c) {
                Some(r) => println!("{}: running (pid {})", c.name(), r.pid),
                None => {
                    println!("{}: stopped", c.name());
                    all = false;
                }
            }
        }
        if let Ok(env) = StackEnv::read(&self.layout) {
            print!("{}", env.render());
        }
        all
    }

    /// `export` lines for a shell: `eval "$(e2e/stack env)"`.
    pub fn env(&self) -> Result<String, Error> {
        let env = StackEnv::read(&self.layout)?;
        let mut out = String::new();
        for (k, v) in env.pairs() {
            out += &format!("export {k}={}\n", shell_quote(&v));
        }
        out += &format!(
            "export HB_STACK_DIR={}\n",
            shell_quote(&self.layout.root().display().to_string())
        );
        out += &format!(
            "export HB_TOOLS_DIR={}\n",
            shell_quote(&self.tools.dir.display().to_string())
        );
        out += &format!(
            "export PATH={}:\"$PATH\"\n",
            shell_quote(&self.tools.bin().display().to_string())
        );
        Ok(out)
    }

    /// The plan of the running stack (for `start`, `create-topic`, `exec`).
    fn running_plan(&self) -> Result<Plan, Error> {
        let net = StackNet::read(&self.layout).ok_or_else(|| Error::NotUp {
            dir: self.layout.root().to_path_buf(),
            why: "it has no network".into(),
        })?;
        Ok(Plan {
            layout: self.layout.clone(),
            tools: self.tools.clone(),
            net,
        })
    }

    /// `stop kafka|apiserver`: takes a component away (its address and
    /// port stay in stack.env), for tests of outages.
    pub fn stop_component(&self, c: Component) -> Result<(), Error> {
        self.require(c)?;
        if let Some(pid) = process::stop(&self.layout.pid_file(c.name()), STOP_GRACE) {
            say(format!("stopped {} ({pid})", c.name()));
        }
        Ok(())
    }

    /// `start kafka|apiserver`: brings it back as `up` started it (same
    /// port, same certificates and data) and waits until it is healthy.
    pub fn start_component(&self, c: Component) -> Result<(), Error> {
        self.require(c)?;
        if self.running(c).is_some() {
            return Ok(());
        }
        let plan = self.running_plan()?;
        self.start_one(&plan, c)?;
        say(format!("started {}", c.name()));
        Ok(())
    }

    /// Only what this stack runs can be stopped or started.
    fn require(&self, c: Component) -> Result<(), Error> {
        if self.wants(c) {
            Ok(())
        } else {
            Err(Error::Usage(format!(
                "this stack does not run {} (HB_COMPONENTS)",
                c.name()
            )))
        }
    }

    /// `alert-rules RELEASE NAMESPACE [--set K=V]...`: the chart's alert
    /// rules for that release, rendered by helm, into Prometheus (which
    /// reloads; an error names a rule it refused). `remove` takes them out.
    pub fn alert_rules(
        &self,
        release: &str,
        namespace: &str,
        sets: &[String],
        remove: bool,
    ) -> Result<PathBuf, Error> {
        self.require(Component::Prometheus)?;
        for name in [release, namespace] {
            if !crate::alerting::is_dns_label(name) {
                return Err(Error::Usage(format!(
                    "alert-rules: {name:?} is no release or namespace name (a DNS label)"
                )));
            }
        }
        let plan = self.running_plan()?;
        let file =
            crate::alerting::rules_path(&self.layout.prometheus_rules_dir(), release, namespace);
        if remove {
            let _ = std::fs::remove_file(&file);
        } else {
            // Checked by promtool first, then renamed into place: Prometheus
            // (reloaded by other tests too) never reads a broken or half-written file.
            let tmp = file.with_extension("yml.new");
            write_private(&tmp, &self.render_alert_rules(release, namespace, sets)?)?;
            let checked = process::run_checked(
                Command::new("promtool").args(["check", "rules"]).arg(&tmp),
                "promtool check rules (the chart's rules with these values)",
            );
            if let Err(e) = checked {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
            std::fs::rename(&tmp, &file).map_err(|e| Error::io(&file, e))?;
        }
        let reload = || {
            process::run_checked(
                Command::new("curl")
                    .args(["-sS", "--fail-with-body", "-X", "POST"])
                    .arg(format!("{}/-/reload", plan.prometheus_url())),
                format!("Prometheus loading {}", file.display()),
            )
        };
        if let Err(e) = reload() {
            // Refused: taken out again, so later reloads still work.
            if !remove {
                let _ = std::fs::remove_file(&file);
                let _ = reload();
            }
            return Err(e);
        }
        Ok(file)
    }

    /// The chart's alert rules for a release, as a Prometheus rule file
    /// (`alert-rules --print`: for promtool, no stack needed).
    pub fn render_alert_rules(
        &self,
        release: &str,
        namespace: &str,
        sets: &[String],
    ) -> Result<String, Error> {
        crate::alerting::render_rules(&self.tools, release, namespace, sets)
    }

    /// `create-topic NAME [PARTITIONS]` (auto-creation is off on purpose).
    pub fn create_topic(&self, name: &str, partitions: u32) -> Result<(), Error> {
        let bootstrap = self.running_plan()?.kafka_bootstrap();
        let mut cmd = Command::new("java");
        cmd.args(self.tools.java(&self.layout))
            .args(["org.apache.kafka.tools.TopicCommand", "--bootstrap-server"])
            .arg(&bootstrap)
            .args(["--create", "--if-not-exists", "--topic", name])
            .arg("--partitions")
            .arg(partitions.to_string())
            .args(["--replication-factor", "1"]);
        process::run_checked(&mut cmd, format!("creating topic {name}")).map(drop)
    }

    /// `kafka-principal NAME`: SCRAM-SHA-512 credentials for `User:NAME`
    /// with a new random password, the ACLs `grants` names, and the client
    /// properties (librdkafka's names, mode 0600) that kcat (`-F`) or a
    /// Python client reads to reach the SASL_SSL listener; returns that
    /// file's path. The password goes to Kafka's Admin API on stdin, never
    /// on a command line.
    pub fn kafka_principal(&self, name: &str, grants: &Grants) -> Result<PathBuf, Error> {
        let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if name.is_empty() || name.len() > 64 || !name.chars().all(ok_char) {
            return Err(Error::Usage(format!(
                "kafka-principal: {name:?} is not 1-64 of [A-Za-z0-9._-]"
            )));
        }
        let plan = self.running_plan()?;
        let dir = self.layout.kafka_dir().join("principals");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let password = random_hex(24).map_err(|e| Error::io(Path::new("/dev/urandom"), e))?;
        let mut admin = Command::new("java");
        admin
            .args(self.tools.java(&self.layout))
            .arg(
                self.tools
                    .repo
                    .join("testbed/stack/java/KafkaPrincipal.java"),
            )
            .arg(plan.kafka_bootstrap())
            .arg(name)
            .args(grants.args());
        process::run_with_stdin(&mut admin, &password, format!("kafka principal {name}"))?;
        let file = dir.join(format!("{name}.properties"));
        write_private(
            &file,
            &format!(
                "bootstrap.servers={}\n\
                 security.protocol=SASL_SSL\n\
                 sasl.mechanisms=SCRAM-SHA-512\n\
                 sasl.username={name}\n\
                 sasl.password={password}\n\
                 ssl.ca.location={}\n",
                plan.kafka_sasl_ssl_bootstrap(),
                self.layout.pki_dir().join("ca.crt").display()
            ),
        )?;
        Ok(file)
    }

    /// `exec -- CMD`: replaces this process with CMD in the stack's network
    /// namespace (a process the API server must call, such as a webhook,
    /// listens there); the caller's pid becomes CMD's, so it can signal it.
    pub fn exec(&self, cmd: &[String]) -> Error {
        use std::os::unix::process::CommandExt;
        let net = match self.running_plan() {
            Ok(plan) => plan.net,
            Err(e) => return e,
        };
        let Some((program, args)) = cmd.split_first() else {
            return Error::Usage("exec: no command given".into());
        };
        let source = net.enter(program).args(args).exec();
        Error::Spawn {
            program: "nsenter".into(),
            source,
        }
    }

    /// The pid (also the process group) of a pod's running container.
    pub fn container_pid(&self, namespace: &str, pod: &str, container: &str) -> Result<i32, Error> {
        let pod_dir =
            self.layout.pods().newest(namespace, pod).ok_or_else(|| {
                Error::Usage(format!("no pod {namespace}/{pod} on the process node"))
            })?;
        let file = pod_dir.container(container).pid_file();
        PidRecord::live_pid(&file).ok_or_else(|| {
            Error::Usage(format!(
                "container {container} of {namespace}/{pod} is not running"
            ))
        })
    }
}

/// `v` as one shell word.
fn shell_quote(v: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-:,+=@%".contains(c);
    if !v.is_empty() && v.chars().all(plain) {
        v.to_string()
    } else {
        format!("'{}'", v.replace('\'', r"'\''"))
    }
}

/// The repository this binary was built from.
pub fn repo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

#[cfg(test)]
mod tests {
    #[test]
    fn shell_quote_leaves_plain_words_and_quotes_the_rest() {
        assert_eq!(super::shell_quote("127.0.0.1:9092"), "127.0.0.1:9092");
        assert_eq!(super::shell_quote("/a b"), "'/a b'");
        assert_eq!(super::shell_quote("it's"), r"'it'\''s'");
        assert_eq!(super::shell_quote(""), "''");
    }
}

/// The rights `kafka-principal` grants, as the README's ACL lines: a
/// producer writes its topics (Write implies Describe), a consumer reads
/// them and their configs (the operator's retention check) and joins its
/// groups.
#[derive(Debug, Default, Clone)]
pub struct Grants {
    pub write: Vec<String>,
    pub read: Vec<String>,
    pub groups: Vec<String>,
}

impl Grants {
    /// The `KIND:NAME` arguments of `KafkaPrincipal.java`, which says
    /// what each kind grants.
    fn args(&self) -> Vec<String> {
        let kinds = [
            ("write", &self.write),
            ("read", &self.read),
            ("group", &self.groups),
        ];
        kinds
            .into_iter()
            .flat_map(|(kind, names)| names.iter().map(move |n| format!("{kind}:{n}")))
            .collect()
    }
}

/// `bytes` random bytes from the kernel, as lowercase hex.
fn random_hex(bytes: usize) -> std::io::Result<String> {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes `text` to a new file only its owner may read.
fn write_private(path: &Path, text: &str) -> Result<(), Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| Error::io(path, e))
}
