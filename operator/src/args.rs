//! The operator's flags, each with an env twin (`--help` lists them).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// The heartbeat.dev operator: injects the heartbeat sidecar into the pods
/// HeartbeatMonitors select (a mutating admission webhook).
#[derive(Parser, Debug, Clone)]
#[command(name = "heartbeat-operator", version, about)]
pub struct Args {
    /// Kubeconfig to use; unset: in-cluster config or $KUBECONFIG.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// The operator's own namespace (its certificate Secret lives here; it is never injected).
    #[arg(
        long,
        env = "HEARTBEAT_OPERATOR_NAMESPACE",
        default_value = "heartbeat-system"
    )]
    pub namespace: String,
    /// HTTPS address of the webhook (`/mutate`).
    #[arg(long, env = "HEARTBEAT_WEBHOOK_ADDR", default_value = "0.0.0.0:9443")]
    pub webhook_addr: SocketAddr,
    /// HTTPS address of the pod key endpoint (`/keys/pod`, the webhook's
    /// certificate): sidecars of monitors with signing on ask it for their
    /// pod's key, through the API server's proxy to the Service's `keys` port.
    #[arg(long, env = "HEARTBEAT_KEYS_ADDR", default_value = "0.0.0.0:8444")]
    pub keys_addr: SocketAddr,
    /// Sidecars ask for their pod's key at this https:// URL (an operator
    /// run outside the cluster network, like --webhook-url; they trust the
    /// webhook's CA) instead of through the API server's proxy to the
    /// `keys` port of --webhook-service.
    #[arg(long, env = "HEARTBEAT_SIGNING_KEY_URL", value_parser = parse_https_url)]
    pub signing_key_url: Option<String>,
    /// The Secret, in --namespace, holding the signing master keys pod keys
    /// derive from (made when missing; annotate it
    /// heartbeat.dev/rotate-signing-key=<new value> to rotate).
    #[arg(
        long,
        env = "HEARTBEAT_SIGNING_SECRET",
        default_value = "heartbeat-operator-signing"
    )]
    pub signing_secret: String,
    /// How often sidecars ask for their pod's key again (a rotation reaches
    /// every sidecar within it; the master before is accepted until the next one).
    #[arg(long, env = "HEARTBEAT_SIGNING_KEY_REFRESH_SECONDS", default_value_t = 300,
          value_parser = clap::value_parser!(u32).range(5..=3600))]
    pub signing_key_refresh_seconds: u32,
    /// Plain-HTTP address of `/livez`, `/readyz` and `/metrics`.
    #[arg(long, env = "HEARTBEAT_ADMIN_ADDR", default_value = "0.0.0.0:8080")]
    pub admin_addr: SocketAddr,
    /// The Secret that keeps the webhook's CA and serving certificate.
    #[arg(
        long,
        env = "HEARTBEAT_CERT_SECRET",
        default_value = "heartbeat-operator-webhook-tls"
    )]
    pub cert_secret: String,
    /// The webhook's Service (its DNS names go into the certificate).
    #[arg(
        long,
        env = "HEARTBEAT_WEBHOOK_SERVICE",
        default_value = "heartbeat-operator"
    )]
    pub webhook_service: String,
    /// The Service's port the API server calls.
    #[arg(long, env = "HEARTBEAT_WEBHOOK_SERVICE_PORT", default_value_t = 443)]
    pub webhook_service_port: i32,
    /// Call the webhook at this URL instead of through the Service (an
    /// operator run outside the cluster network); its host goes into the certificate.
    #[arg(long, env = "HEARTBEAT_WEBHOOK_URL")]
    pub webhook_url: Option<String>,
    /// The certificate Secret is kept by someone else (cert-manager: keys
    /// `tls.crt`, `tls.key`): read it, follow its renewals, never write it.
    #[arg(
        long,
        env = "HEARTBEAT_EXTERNAL_CERT",
        conflicts_with = "manage_webhook_config"
    )]
    pub external_cert: bool,
    /// Write the MutatingWebhookConfiguration (with the CA) ourselves.
    #[arg(long, env = "HEARTBEAT_MANAGE_WEBHOOK_CONFIG")]
    pub manage_webhook_config: bool,
    /// How long the API server waits for the webhook (the configuration's
    /// `timeoutSeconds`; on timeout the pod is admitted without the sidecar).
    #[arg(long, env = "HEARTBEAT_WEBHOOK_TIMEOUT_SECONDS", default_value_t = 5, value_parser = clap::value_parser!(i32).range(1..=30))]
    pub webhook_timeout_seconds: i32,
    /// The MutatingWebhookConfiguration's name.
    #[arg(
        long,
        env = "HEARTBEAT_WEBHOOK_CONFIG_NAME",
        default_value = "heartbeat-operator"
    )]
    pub webhook_config_name: String,
    /// Namespaces with this label are injected (`key=value`).
    #[arg(long, env = "HEARTBEAT_INJECTION_LABEL", default_value = "heartbeat.dev/injection=enabled", value_parser = parse_label)]
    pub injection_label: (String, String),
    /// The sidecar image injected unless a monitor overrides it.
    #[arg(long, env = "HEARTBEAT_SIDECAR_IMAGE", default_value = concat!("heartbeat-sidecar:", env!("CARGO_PKG_VERSION")))]
    pub sidecar_image: String,
    /// Inject a plain container instead of a native sidecar (clusters older than 1.29).
    #[arg(long, env = "HEARTBEAT_PLAIN_CONTAINER_SIDECAR")]
    pub plain_container_sidecar: bool,
    /// Repositories a monitor's `spec.sidecar.image` may name (`repo`,
    /// `repo:tag`, `repo@sha256:...`), comma-separated or repeated, besides
    /// the repository of `--sidecar-image`; a monitor naming another image
    /// is not injected (an InjectionSkipped Event names the field).
    #[arg(long, env = "HEARTBEAT_SIDECAR_IMAGE_ALLOWLIST", value_delimiter = ',')]
    pub sidecar_image_allowlist: Vec<String>,
    /// The most CPU a monitor may request for its sidecar.
    #[arg(long, env = "HEARTBEAT_SIDECAR_MAX_CPU_REQUEST", default_value = "200m", value_parser = parse_quantity)]
    pub sidecar_max_cpu_request: String,
    /// The most memory a monitor may request for its sidecar.
    #[arg(long, env = "HEARTBEAT_SIDECAR_MAX_MEMORY_REQUEST", default_value = "256Mi", value_parser = parse_quantity)]
    pub sidecar_max_memory_request: String,
    /// The highest CPU limit a monitor may set on its sidecar.
    #[arg(long, env = "HEARTBEAT_SIDECAR_MAX_CPU_LIMIT", default_value = "200m", value_parser = parse_quantity)]
    pub sidecar_max_cpu_limit: String,
    /// The highest memory limit a monitor may set on its sidecar.
    #[arg(long, env = "HEARTBEAT_SIDECAR_MAX_MEMORY_LIMIT", default_value = "256Mi", value_parser = parse_quantity)]
    pub sidecar_max_memory_limit: String,
    /// Seconds between checks of the certificate Secret (renewals are picked up then).
    #[arg(long, env = "HEARTBEAT_CERT_CHECK_SECONDS", default_value_t = 60)]
    pub cert_check_seconds: u64,
    /// Handle only the HeartbeatMonitors with these labels (a label
    /// selector, e.g. `team=data`); empty: all of them. Several operator
    /// installations can so share a cluster.
    #[arg(long, env = "HEARTBEAT_MONITOR_SELECTOR", default_value = "")]
    pub monitor_selector: String,
    /// The leader-election Lease, in the operator's namespace.
    #[arg(
        long,
        env = "HEARTBEAT_LEASE_NAME",
        default_value = "heartbeat-operator"
    )]
    pub lease_name: String,
    /// How long a leader's Lease lasts without renewal: a new leader takes
    /// over within this long after the old one died.
    #[arg(long, env = "HEARTBEAT_LEASE_DURATION_SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(3..=300))]
    pub lease_duration_seconds: u64,
    /// This replica's identity in the Lease (unset: the pod name, else host and pid).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// The Kafka consumer group the operator names (no offsets are committed;
    /// ACLs grant Read on it).
    #[arg(
        long,
        env = "HEARTBEAT_CONSUMER_GROUP",
        default_value = "heartbeat-operator"
    )]
    pub consumer_group: String,
    /// The compacted topic, on each monitor's brokers, where member tables
    /// are checkpointed with the offsets they cover, so a new leader
    /// replays only from there. Empty: no checkpoints (a new leader
    /// replays `--history-seconds` of every topic).
    #[arg(
        long,
        env = "HEARTBEAT_CHECKPOINT_TOPIC",
        default_value = "heartbeat-operator.checkpoints"
    )]
    pub checkpoint_topic: String,
    /// Availability window, and how far back a restart reads the topic to
    /// rebuild it (where retention allows).
    #[arg(long, env = "HEARTBEAT_HISTORY_SECONDS", default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(0..=30 * 86_400))]
    pub history_seconds: u64,
    /// A program seen on a topic but not expected is forgotten after this
    /// long without a beat.
    #[arg(
        long,
        env = "HEARTBEAT_SEEN_RETENTION_SECONDS",
        default_value_t = 3_600
    )]
    pub seen_retention_seconds: u64,
    /// Most unexpected programs tracked per monitor (beyond it their beats
    /// are rejected as `too_many_programs`).
    #[arg(long, env = "HEARTBEAT_MAX_SEEN_PROGRAMS", default_value_t = 1_000)]
    pub max_seen_programs: usize,
    /// Log format: `json` (one object per line, for a log pipeline) or `text`.
    #[arg(long, env = "HEARTBEAT_OPERATOR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
    /// Most members per monitor exported as `heartbeat_member_up` series
    /// (worst first); per-monitor metrics are not capped.
    #[arg(long, env = "HEARTBEAT_MEMBER_METRICS_CAP", default_value_t = 200)]
    pub member_metrics_cap: usize,
    /// The ClusterRole that holds the operator's Secret rights; in the
    /// chart's `rbac.namespaced` mode it is bound per namespace, and a
    /// monitor in a namespace without that binding is `Ready=False`
    /// naming the command that grants it.
    #[arg(
        long,
        env = "HEARTBEAT_SECRETS_CLUSTER_ROLE",
        default_value = "heartbeat-operator-secrets"
    )]
    pub secrets_cluster_role: String,
    /// The brokers the operator may connect to, comma-separated `host:port`
    /// or `*.domain:port`; a monitor whose Secret names another is
    /// `Ready=False` (`BrokerNotAllowed`) and never connected to. Empty:
    /// any (whoever writes a broker Secret then chooses where it connects).
    #[arg(long, env = "HEARTBEAT_ALLOWED_BROKERS", value_delimiter = ',')]
    pub allowed_brokers: Vec<String>,
    /// A Secret in `--namespace` with the operator's own consumer
    /// credentials (`security.protocol`, `sasl.*`, `ssl.*`): the brokers
    /// still come from each monitor's Secret, the credentials from this one,
    /// so tenants' producer principals need only Write on their topics.
    #[arg(long, env = "HEARTBEAT_CONSUMER_SECRET")]
    pub consumer_secret: Option<String>,
    /// The operator's ServiceAccount (in `--namespace`), for that command.
    #[arg(
        long,
        env = "HEARTBEAT_SERVICE_ACCOUNT",
        default_value = "heartbeat-operator"
    )]
    pub service_account: String,
}

/// Log formats.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

impl Args {
    /// What a monitor may ask of the sidecar, from the `--sidecar-*` flags.
    pub fn sidecar_policy(&self) -> crate::webhook::inject::SidecarPolicy {
        let q = |s: &String| k8s_openapi::apimachinery::pkg::api::resource::Quantity(s.clone());
        let maxima = |cpu: &String, memory: &String| {
            std::collections::BTreeMap::from([
                ("cpu".to_string(), q(cpu)),
                ("memory".to_string(), q(memory)),
            ])
        };
        crate::webhook::inject::SidecarPolicy {
            allowed_image_repositories: self
                .sidecar_image_allowlist
                .iter()
                .map(|r| r.trim().to_string())
                .filter(|r| !r.is_empty())
                .collect(),
            max_requests: maxima(
                &self.sidecar_max_cpu_request,
                &self.sidecar_max_memory_request,
            ),
            max_limits: maxima(&self.sidecar_max_cpu_limit, &self.sidecar_max_memory_limit),
        }
    }

    /// Where injected sidecars ask for their pod's key: --signing-key-url,
    /// else the API server's proxy to the `keys` port of the webhook's Service.
    pub fn signing_key_url(&self) -> String {
        self.signing_key_url.clone().unwrap_or_else(|| {
            heartbeat_crds::signing::key_url_on_api_server(&self.namespace, &self.webhook_service)
        })
    }

    /// This replica's identity in the Lease.
    pub fn identity(&self) -> String {
        self.identity.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            format!("{}-{}", host.trim(), std::process::id())
        })
    }
}

fn parse_quantity(s: &str) -> Result<String, String> {
    if crate::webhook::inject::is_quantity(s) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} is not a non-negative quantity (e.g. 200m, 256Mi)"
        ))
    }
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not key=value"))?;
    if k.is_empty() {
        return Err(format!("{s:?} has an empty key"));
    }
    Ok((k.to_string(), v.to_string()))
}

fn parse_https_url(s: &str) -> Result<String, String> {
    if s.starts_with("https://") && !s.chars().any(char::is_whitespace) {
        Ok(s.to_string())
    } else {
        Err(format!("{s:?}: expected an https:// URL"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent_and_labels_parse() {
        use clap::CommandFactory;
        Args::command().debug_assert();
        assert_eq!(parse_label("a/b=c"), Ok(("a/b".into(), "c".into())));
        assert!(parse_label("novalue").is_err());
        assert!(parse_label("=x").is_err());
    }

    /// Rule: the sidecar maxima default to 200m CPU / 256Mi memory, a bad
    /// quantity is refused at start-up, and the allowlist splits on commas.
    #[test]
    fn the_sidecar_policy_flags_parse_into_the_policy() {
        let args = Args::try_parse_from([
            "heartbeat-operator",
            "--sidecar-image-allowlist=a.io/x,b.io/y",
            "--sidecar-max-memory-limit=1Gi",
        ])
        .expect("flags");
        let policy = args.sidecar_policy();
        assert_eq!(policy.allowed_image_repositories, ["a.io/x", "b.io/y"]);
        assert_eq!(
            policy.max_requests,
            crate::webhook::inject::default_maxima()
        );
        assert_eq!(
            policy.max_limits.get("memory").map(|q| q.0.as_str()),
            Some("1Gi")
        );
        assert!(
            Args::try_parse_from(["heartbeat-operator", "--sidecar-max-cpu-limit=lots"]).is_err()
        );
    }
}
