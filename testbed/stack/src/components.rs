//! The component table: each part of the stack with how it is started and
//! how it is known to be healthy, one function each.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Error;
use crate::layout::StackLayout;
use crate::network::StackNet;
use crate::process::run_checked;

/// One process of the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    Etcd,
    KubeApiserver,
    KubeControllerManager,
    KubeScheduler,
    ProcessNode,
    Kafka,
    Alertmanager,
    Prometheus,
}

impl Component {
    /// In the order they start (each needs the ones before it).
    pub const START_ORDER: [Component; 8] = [
        Component::Etcd,
        Component::KubeApiserver,
        Component::KubeControllerManager,
        Component::KubeScheduler,
        Component::ProcessNode,
        Component::Kafka,
        Component::Alertmanager,
        Component::Prometheus,
    ];
    /// In the order they stop: the node first, so it stops its containers
    /// while the API server still answers.
    pub const STOP_ORDER: [Component; 8] = [
        Component::Prometheus,
        Component::Alertmanager,
        Component::ProcessNode,
        Component::KubeScheduler,
        Component::KubeControllerManager,
        Component::Kafka,
        Component::KubeApiserver,
        Component::Etcd,
    ];

    /// The name used in `HB_COMPONENTS`, pid files, logs and messages.
    pub fn name(self) -> &'static str {
        match self {
            Component::Etcd => "etcd",
            Component::KubeApiserver => "kube-apiserver",
            Component::KubeControllerManager => "kube-controller-manager",
            Component::KubeScheduler => "kube-scheduler",
            Component::ProcessNode => "process-node",
            Component::Kafka => "kafka",
            Component::Alertmanager => "alertmanager",
            Component::Prometheus => "prometheus",
        }
    }

    /// The tools of `e2e/stack install` it runs or is checked with.
    fn go_tools(self) -> &'static [&'static str] {
        match self {
            Component::Etcd => &["etcd"],
            Component::KubeApiserver => &["kube-apiserver", "kubectl"],
            Component::KubeControllerManager => &["kube-controller-manager"],
            Component::KubeScheduler => &["kube-scheduler"],
            Component::ProcessNode => &["kubectl"],
            Component::Kafka => &[],
            // helm renders the chart's alert rules (and the labels they route by).
            Component::Alertmanager => &["helm"],
            Component::Prometheus => &["helm", "prometheus"],
        }
    }

    /// The component with this name.
    pub fn from_name(name: &str) -> Option<Component> {
        Component::START_ORDER
            .into_iter()
            .find(|c| c.name() == name)
    }

    /// Parses `HB_COMPONENTS` (space-separated names); empty means all.
    pub fn parse_list(list: &str) -> Result<Vec<Component>, Error> {
        let names: Vec<&str> = list.split_whitespace().collect();
        if names.is_empty() {
            return Ok(Component::START_ORDER.to_vec());
        }
        let mut wanted = Vec::new();
        for name in names {
            let c = Component::from_name(name).ok_or_else(|| {
                Error::Usage(format!(
                    "HB_COMPONENTS: unknown component {name:?} (known: {})",
                    Component::START_ORDER.map(Component::name).join(" ")
                ))
            })?;
            wanted.push(c);
        }
        // Always started in dependency order, whatever order was asked.
        Ok(Component::START_ORDER
            .into_iter()
            .filter(|c| wanted.contains(c))
            .collect())
    }
}

/// Where the installed tools and the repository are.
#[derive(Debug, Clone)]
pub struct Tools {
    /// `HB_TOOLS_DIR`.
    pub dir: PathBuf,
    /// The Kafka distribution (`<tools>/kafka-<version>`).
    pub kafka_home: PathBuf,
    /// The repository (the image map of the process node, its build).
    pub repo: PathBuf,
    /// A prebuilt process node, if given (`HB_PROCESS_NODE_BIN`).
    pub process_node_bin: Option<PathBuf>,
}

impl Tools {
    /// `<tools>/bin`, where the built Go tools live.
    pub fn bin(&self) -> PathBuf {
        self.dir.join("bin")
    }
    /// A Go tool's path.
    pub fn tool(&self, name: &str) -> PathBuf {
        self.bin().join(name)
    }

    /// What `components` need that is not installed.
    pub fn missing(&self, components: &[Component]) -> Vec<String> {
        let mut missing: Vec<String> = Vec::new();
        for tool in components.iter().flat_map(|c| c.go_tools()) {
            if !self.tool(tool).is_file() && !missing.iter().any(|m| m == tool) {
                missing.push(tool.to_string());
            }
        }
        if components.contains(&Component::Kafka) {
            if !self.kafka_home.join("libs").is_dir() {
                missing.push(path(&self.kafka_home));
            }
            missing.extend(
                ["java", "kcat"]
                    .into_iter()
                    .filter(|cmd| !on_path(cmd))
                    .map(String::from),
            );
        }
        // Debian's packages (e2e/stack install).
        let debs = [
            (Component::Prometheus, "promtool"),
            (Component::Alertmanager, ALERTMANAGER),
            (Component::Alertmanager, "amtool"),
        ];
        for (c, cmd) in debs {
            if components.contains(&c) && !on_path(cmd) {
                missing.push(cmd.to_string());
            }
        }
        missing
    }

    /// The Java command line for Kafka's classes.
    pub fn java(&self, layout: &StackLayout) -> Vec<String> {
        vec![
            "-Xms128m".into(),
            "-Xmx512m".into(),
            "-XX:+UseSerialGC".into(),
            format!(
                "-Dlog4j2.configurationFile={}",
                layout.kafka_dir().join("log4j2.properties").display()
            ),
            "-cp".into(),
            // Java expands the trailing `*` itself.
            format!("{}/libs/*", self.kafka_home.display()),
        ]
    }
}

/// Debian's name of Alertmanager's program.
const ALERTMANAGER: &str = "prometheus-alertmanager";

fn on_path(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(cmd).is_file()))
}

/// The ports of the stack's listeners. Each stack has a network namespace
/// and an address of its own, so the well-known ports never collide.
pub mod port {
    pub const ETCD: u16 = 2379;
    pub const ETCD_PEER: u16 = 2380;
    pub const APISERVER: u16 = 6443;
    pub const KUBELET: u16 = 10250;
    pub const CONTROLLER_MANAGER: u16 = 10257;
    pub const SCHEDULER: u16 = 10259;
    pub const KAFKA: u16 = 9092;
    pub const KAFKA_CONTROLLER: u16 = 9093;
    /// The broker's SASL_SSL listener (SCRAM-SHA-512, the stack's CA).
    pub const KAFKA_SASL_SSL: u16 = 9094;
    pub const PROMETHEUS: u16 = 9090;
    /// Not Alertmanager's usual 9093, which the Kafka controller holds
    /// (on loopback); its cluster port is off (one instance).
    pub const ALERTMANAGER: u16 = 9095;
    /// Where the tests' webhook receiver listens, on the host address.
    pub const ALERT_RECEIVER: u16 = 9096;
}

/// Everything a component's start and health check need.
#[derive(Debug, Clone)]
pub struct Plan {
    pub layout: StackLayout,
    pub tools: Tools,
    pub net: StackNet,
}

/// A program with its arguments.
#[derive(Debug, Clone)]
pub struct Launch {
    pub program: PathBuf,
    pub args: Vec<String>,
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

impl Plan {
    /// How `component` is started (preparing its files first).
    pub fn launch(&self, component: Component) -> Result<Launch, Error> {
        match component {
            Component::Etcd => Ok(self.etcd()),
            Component::KubeApiserver => Ok(self.apiserver()),
            Component::KubeControllerManager => Ok(self.controller_manager()),
            Component::KubeScheduler => Ok(self.scheduler()),
            Component::ProcessNode => self.process_node(),
            Component::Kafka => self.kafka(),
            Component::Alertmanager => self.alertmanager(),
            Component::Prometheus => self.prometheus(),
        }
    }

    /// Whether `component` answers as it should once up.
    pub fn healthy(&self, component: Component) -> bool {
        match component {
            Component::Etcd => self.etcd_healthy(),
            Component::KubeApiserver => self.apiserver_healthy(),
            Component::KubeControllerManager => self.https_healthz_ok(port::CONTROLLER_MANAGER),
            Component::KubeScheduler => self.https_healthz_ok(port::SCHEDULER),
            Component::ProcessNode => self.node_ready(),
            Component::Kafka => self.kafka_answers(),
            Component::Alertmanager => self.http_ready(&self.alertmanager_url()),
            Component::Prometheus => self.http_ready(&self.prometheus_url()),
        }
    }

    fn pki(&self, file: &str) -> String {
        path(&self.layout.pki_dir().join(file))
    }

    fn etcd(&self) -> Launch {
        // Only the API server, in the same namespace, talks to etcd.
        let client = format!("http://127.0.0.1:{}", port::ETCD);
        let peer = format!("http://127.0.0.1:{}", port::ETCD_PEER);
        Launch {
            program: self.tools.tool("etcd"),
            args: vec![
                "--name".into(),
                "hb-local".into(),
                "--data-dir".into(),
                path(&self.layout.etcd_dir()),
                "--listen-client-urls".into(),
                client.clone(),
                "--advertise-client-urls".into(),
                client,
                "--listen-peer-urls".into(),
                peer.clone(),
                "--initial-advertise-peer-urls".into(),
                peer.clone(),
                "--initial-cluster".into(),
                format!("hb-local={peer}"),
                "--log-level".into(),
                "warn".into(),
                "--quota-backend-bytes".into(),
                "2147483648".into(),
                // A throwaway test cluster: speed over durability.
                "--unsafe-no-fsync".into(),
            ],
        }
    }

    fn etcd_healthy(&self) -> bool {
        let url = format!("http://127.0.0.1:{}/health", port::ETCD);
        command_output(self.net.enter("curl").args(["-sf", &url]))
            .is_some_and(|o| o.contains("true"))
    }

    fn apiserver(&self) -> Launch {
        let root = self.layout.root();
        let addr = self.net.stack_addr().to_string();
        Launch {
            program: self.tools.tool("kube-apiserver"),
            args: [
                "--etcd-servers",
                &format!("http://127.0.0.1:{}", port::ETCD),
                "--bind-address",
                &addr,
                "--advertise-address",
                &addr,
                "--secure-port",
                &port::APISERVER.to_string(),
                "--cert-dir",
                &path(&root.join("apiserver-certs")),
                "--tls-cert-file",
                &self.pki("apiserver.crt"),
                "--tls-private-key-file",
                &self.pki("apiserver.key"),
                "--client-ca-file",
                &self.pki("ca.crt"),
                "--service-account-issuer",
                "https://kubernetes.default.svc.cluster.local",
                "--service-account-key-file",
                &self.pki("sa.pub"),
                "--service-account-signing-key-file",
                &self.pki("sa.key"),
                "--service-cluster-ip-range",
                "10.0.0.0/24",
                "--authorization-mode",
                "Node,RBAC",
                "--enable-admission-plugins",
                "NamespaceLifecycle,ServiceAccount,MutatingAdmissionWebhook,\
                 ValidatingAdmissionWebhook,ValidatingAdmissionPolicy",
                // Webhooks and aggregated APIs are called through their
                // Service's endpoints: there is no kube-proxy.
                "--enable-aggregator-routing=true",
                "--kubelet-preferred-address-types",
                "InternalIP",
                "--kubelet-certificate-authority",
                &self.pki("ca.crt"),
                "--allow-privileged=true",
                "--profiling=false",
                "--v=1",
            ]
            .map(String::from)
            .to_vec(),
        }
    }

    fn kubectl(&self) -> Command {
        let mut cmd = Command::new(self.tools.tool("kubectl"));
        cmd.arg("--kubeconfig").arg(self.layout.kubeconfig());
        cmd
    }

    fn apiserver_healthy(&self) -> bool {
        command_output(self.kubectl().args(["get", "--raw", "/readyz"])).is_some()
    }

    /// Flags kube-controller-manager and kube-scheduler share.
    fn control_plane_flags(&self, port: u16, cert_dir: &str) -> Vec<String> {
        let kc = path(&self.layout.kubeconfig());
        let addr = self.net.stack_addr().to_string();
        [
            "--kubeconfig",
            &kc,
            "--authentication-kubeconfig",
            &kc,
            "--authorization-kubeconfig",
            &kc,
            "--bind-address",
            &addr,
            "--secure-port",
            &port.to_string(),
            "--cert-dir",
            &path(&self.layout.root().join(cert_dir)),
            "--leader-elect=false",
            "--v=1",
        ]
        .map(String::from)
        .to_vec()
    }

    fn controller_manager(&self) -> Launch {
        let mut args = self.control_plane_flags(port::CONTROLLER_MANAGER, "kcm-certs");
        args.extend(
            [
                "--service-account-private-key-file",
                &self.pki("sa.key"),
                "--root-ca-file",
                &self.pki("ca.crt"),
                "--use-service-account-credentials=false",
                "--controllers",
                "*",
                "--concurrent-gc-syncs",
                "5",
            ]
            .map(String::from),
        );
        Launch {
            program: self.tools.tool("kube-controller-manager"),
            args,
        }
    }

    fn scheduler(&self) -> Launch {
        Launch {
            program: self.tools.tool("kube-scheduler"),
            args: self.control_plane_flags(port::SCHEDULER, "scheduler-certs"),
        }
    }

    fn process_node(&self) -> Result<Launch, Error> {
        let node_dir = self.layout.node_dir();
        std::fs::create_dir_all(&node_dir).map_err(|e| Error::io(&node_dir, e))?;
        Ok(Launch {
            program: self.process_node_bin()?,
            args: [
                "--kubeconfig",
                &path(&self.layout.kubeconfig()),
                "--node-name",
                crate::supervisor::NODE_NAME,
                "--state-dir",
                &path(&node_dir),
                "--repo-dir",
                &path(&self.tools.repo),
                "--kubelet-port",
                &port::KUBELET.to_string(),
                "--node-ip",
                &self.net.stack_addr().to_string(),
                "--api-server",
                &format!("{}:{}", self.net.stack_addr(), port::APISERVER),
                "--pod-cidr",
                &self.net.pod_cidr(),
                "--pod-gateway",
                &self.net.pod_gateway().to_string(),
                "--bridge",
                crate::network::BRIDGE,
                "--netns-prefix",
                &self.net.pod_netns_prefix(),
                "--tls-cert",
                &self.pki("kubelet.crt"),
                "--tls-key",
                &self.pki("kubelet.key"),
            ]
            .map(String::from)
            .to_vec(),
        })
    }

    /// The process node's binary: the one given, a built one, or built now.
    fn process_node_bin(&self) -> Result<PathBuf, Error> {
        if let Some(bin) = self.tools.process_node_bin.as_ref().filter(|b| b.is_file()) {
            return Ok(bin.clone());
        }
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| self.tools.repo.join("target"));
        // It starts containers through pod-enter, built beside it.
        for profile in ["debug", "release"] {
            let bin = target.join(profile).join("process-node");
            if bin.is_file() && target.join(profile).join("pod-enter").is_file() {
                return Ok(bin);
            }
        }
        crate::say("building the process node (cargo build -p heartbeat-process-node)");
        run_checked(
            Command::new("cargo")
                .args([
                    "build",
                    "-q",
                    "-p",
                    "heartbeat-process-node",
                    "--bin",
                    "process-node",
                ])
                .current_dir(&self.tools.repo),
            "building the process node",
        )?;
        Ok(target.join("debug").join("process-node"))
    }

    fn node_ready(&self) -> bool {
        let jsonpath = "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}";
        command_output(self.kubectl().args([
            "get",
            "node",
            crate::supervisor::NODE_NAME,
            "-o",
            jsonpath,
        ]))
        .is_some_and(|o| o.trim() == "True")
    }

    /// `host:port` clients use for Kafka.
    pub fn kafka_bootstrap(&self) -> String {
        format!("{}:{}", self.net.stack_addr(), port::KAFKA)
    }

    fn kafka(&self) -> Result<Launch, Error> {
        let dir = self.layout.kafka_dir();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let props = dir.join("server.properties");
        let write =
            |file: &Path, text: String| std::fs::write(file, text).map_err(|e| Error::io(file, e));
        write(&props, self.kafka_properties())?;
        write(&dir.join("log4j2.properties"), KAFKA_LOG4J.to_string())?;
        if !dir.join("data/meta.properties").is_file() {
            self.format_kafka_storage(&props)?;
        }
        let mut args = self.tools.java(&self.layout);
        args.extend(["kafka.Kafka".to_string(), path(&props)]);
        Ok(Launch {
            program: PathBuf::from("java"),
            args,
        })
    }

    /// `host:port` of the SASL_SSL listener.
    pub fn kafka_sasl_ssl_bootstrap(&self) -> String {
        format!("{}:{}", self.net.stack_addr(), port::KAFKA_SASL_SSL)
    }

    /// Two listeners besides the controller's. SASL_SSL is what a
    /// production install runs: SCRAM-SHA-512 over TLS with the stack's CA,
    /// and the StandardAuthorizer decides each principal's rights from its
    /// ACLs (none: denied). PLAINTEXT stays for the stack's own tools and
    /// the tests that predate it: its clients (and the controller's) are
    /// `User:ANONYMOUS`, a super user, which is acceptable only because it
    /// listens inside the stack's network namespace.
    fn kafka_properties(&self) -> String {
        let (bootstrap, ctrl) = (self.kafka_bootstrap(), port::KAFKA_CONTROLLER);
        let secured = self.kafka_sasl_ssl_bootstrap();
        let key_store = self.layout.pki_dir().join(crate::pki::KAFKA_KEY_STORE);
        let data = self.layout.kafka_dir().join("data");
        format!(
            "process.roles=broker,controller\n\
             node.id=1\n\
             controller.quorum.voters=1@127.0.0.1:{ctrl}\n\
             listeners=PLAINTEXT://{bootstrap},SASL_SSL://{secured},CONTROLLER://127.0.0.1:{ctrl}\n\
             advertised.listeners=PLAINTEXT://{bootstrap},SASL_SSL://{secured}\n\
             controller.listener.names=CONTROLLER\n\
             inter.broker.listener.name=PLAINTEXT\n\
             listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL\n\
             sasl.enabled.mechanisms=SCRAM-SHA-512\n\
             listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=\
             org.apache.kafka.common.security.scram.ScramLoginModule required;\n\
             listener.name.sasl_ssl.ssl.keystore.type=PEM\n\
             listener.name.sasl_ssl.ssl.keystore.location={}\n\
             authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer\n\
             super.users=User:ANONYMOUS\n\
             log.dirs={}\n\
             num.partitions=1\n\
             auto.create.topics.enable=false\n\
             offsets.topic.replication.factor=1\n\
             offsets.topic.num.partitions=4\n\
             transaction.state.log.replication.factor=1\n\
             transaction.state.log.min.isr=1\n\
             share.coordinator.state.topic.replication.factor=1\n\
             share.coordinator.state.topic.min.isr=1\n\
             group.initial.rebalance.delay.ms=0\n",
            key_store.display(),
            data.display()
        )
    }

    fn format_kafka_storage(&self, props: &Path) -> Result<(), Error> {
        let java = self.tools.java(&self.layout);
        let id = run_checked(
            Command::new("java")
                .args(&java)
                .args(["kafka.tools.StorageTool", "random-uuid"]),
            "kafka: StorageTool random-uuid",
        )?;
        run_checked(
            Command::new("java")
                .args(&java)
                .args(["kafka.tools.StorageTool", "format", "-t", id.trim(), "-c"])
                .arg(props),
            "kafka: formatting storage",
        )
        .map(drop)
    }

    fn kafka_answers(&self) -> bool {
        command_output(Command::new("kcat").args([
            "-L",
            "-b",
            &self.kafka_bootstrap(),
            "-m",
            "3",
            "-J",
        ]))
        .is_some_and(|o| o.contains("\"brokers\":[{"))
    }

    /// `http://host:port` of Prometheus (its HTTP API).
    pub fn prometheus_url(&self) -> String {
        format!("http://{}:{}", self.net.stack_addr(), port::PROMETHEUS)
    }

    /// `http://host:port` of Alertmanager.
    pub fn alertmanager_url(&self) -> String {
        format!("http://{}:{}", self.net.stack_addr(), port::ALERTMANAGER)
    }

    /// Prometheus with the admin kubeconfig for discovery (it reads only
    /// EndpointSlices, Services and Pods; the stack's own, like the
    /// controller manager's), every rule file `e2e/stack alert-rules`
    /// wrote, and the stack's Alertmanager; `/-/reload` is on for that.
    fn prometheus(&self) -> Result<Launch, Error> {
        let dir = self.layout.prometheus_dir();
        let rules = self.layout.prometheus_rules_dir();
        std::fs::create_dir_all(&rules).map_err(|e| Error::io(&rules, e))?;
        let config = dir.join("prometheus.yml");
        let alertmanager = format!("{}:{}", self.net.stack_addr(), port::ALERTMANAGER);
        let text =
            crate::alerting::prometheus_config(&self.layout.kubeconfig(), &rules, &alertmanager);
        std::fs::write(&config, text).map_err(|e| Error::io(&config, e))?;
        Ok(Launch {
            program: self.tools.tool("prometheus"),
            args: vec![
                format!("--config.file={}", path(&config)),
                format!("--storage.tsdb.path={}", path(&dir.join("data"))),
                "--storage.tsdb.retention.time=1d".into(),
                format!(
                    "--web.listen-address={}:{}",
                    self.net.stack_addr(),
                    port::PROMETHEUS
                ),
                // Alerts' links name this address, not the machine's hostname
                // (its API answers; the web UI's assets are not built in).
                format!("--web.external-url={}", self.prometheus_url()),
                "--web.enable-lifecycle".into(),
            ],
        })
    }

    /// Alertmanager routing the chart's alert labels to the tests' receiver.
    fn alertmanager(&self) -> Result<Launch, Error> {
        let dir = self.layout.alertmanager_dir();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        // The labels come from the chart's rules as rendered by default.
        let rules = crate::alerting::render_rules(&self.tools, "stack", "default", &[])?;
        let labels = crate::alerting::alert_labels(&rules).map_err(|why| Error::Command {
            what: "reading the chart's alert labels".into(),
            output: why,
        })?;
        let config = dir.join("alertmanager.yml");
        let receiver = crate::alerting::receiver_url(self.net.host_addr());
        let text = crate::alerting::alertmanager_config(&labels, &receiver);
        std::fs::write(&config, text).map_err(|e| Error::io(&config, e))?;
        Ok(Launch {
            program: PathBuf::from(ALERTMANAGER),
            args: vec![
                format!("--config.file={}", path(&config)),
                format!("--storage.path={}", path(&dir.join("data"))),
                format!(
                    "--web.listen-address={}:{}",
                    self.net.stack_addr(),
                    port::ALERTMANAGER
                ),
                format!("--web.external-url={}", self.alertmanager_url()),
                // One instance: no gossip port (its default, 9094, is Kafka's).
                "--cluster.listen-address=".into(),
            ],
        })
    }

    /// `GET <url>/-/ready` answers 2xx.
    fn http_ready(&self, url: &str) -> bool {
        command_output(Command::new("curl").args(["-sf", &format!("{url}/-/ready")])).is_some()
    }

    /// `GET https://<stack address>:<port>/healthz` answers 2xx (the
    /// components' self-signed serving certificates are not verified).
    fn https_healthz_ok(&self, port: u16) -> bool {
        let url = format!("https://{}:{port}/healthz", self.net.stack_addr());
        command_output(Command::new("curl").args(["-skf", &url])).is_some()
    }

    /// The admin kubeconfig's text.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\n\
             kind: Config\n\
             clusters:\n\
             - name: heartbeat-local\n  \
               cluster:\n    \
                 server: https://{}:{}\n    \
                 certificate-authority: {}\n\
             users:\n\
             - name: admin\n  \
               user:\n    \
                 client-certificate: {}\n    \
                 client-key: {}\n\
             contexts:\n\
             - name: heartbeat-local\n  \
               context: {{cluster: heartbeat-local, user: admin, namespace: default}}\n\
             current-context: heartbeat-local\n",
            self.net.stack_addr(),
            port::APISERVER,
            self.pki("ca.crt"),
            self.pki("admin.crt"),
            self.pki("admin.key"),
        )
    }
}

const KAFKA_LOG4J: &str = "rootLogger.level = WARN
rootLogger.appenderRef.stdout.ref = STDOUT
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
logger.kafka.name = kafka.server.KafkaServer
logger.kafka.level = INFO
";

/// A command's stdout when it succeeds.
fn command_output(cmd: &mut Command) -> Option<String> {
    let out = crate::process::without_proxies(cmd)
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_are_named_and_listed_in_dependency_order() {
        let all = Component::parse_list("").expect("all");
        assert_eq!(all, Component::START_ORDER.to_vec());
        assert_eq!(
            Component::parse_list("kafka etcd").expect("two"),
            vec![Component::Etcd, Component::Kafka]
        );
        let err = Component::parse_list("kafka zookeeper").expect_err("unknown");
        assert!(err.to_string().contains("zookeeper"), "{err}");
        for c in Component::START_ORDER {
            assert_eq!(Component::from_name(c.name()), Some(c));
            assert!(Component::STOP_ORDER.contains(&c));
        }
    }
}
