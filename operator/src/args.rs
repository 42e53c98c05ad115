//! The operator's flags, each with an env twin (`--help` lists them),
//! in one group per part of the operator (each part takes its own), and
//! what each part's settings are made of them.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

use crate::controller::ControllerSettings;
use crate::webhook::config::{WebhookSettings, WebhookTarget};
use crate::webhook::inject::InjectDefaults;

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
    /// Plain-HTTP address of `/livez`, `/readyz` and `/metrics`.
    #[arg(long, env = "HEARTBEAT_ADMIN_ADDR", default_value = "0.0.0.0:8080")]
    pub admin_addr: SocketAddr,
    /// Log format: `json` (one object per line, for a log pipeline) or `text`.
    #[arg(long, env = "HEARTBEAT_OPERATOR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
    #[command(flatten)]
    pub webhook: WebhookArgs,
    #[command(flatten)]
    pub sidecar: SidecarArgs,
    #[command(flatten)]
    pub certificates: CertArgs,
    #[command(flatten)]
    pub keys: KeyArgs,
    #[command(flatten)]
    pub caches: CacheArgs,
    #[command(flatten)]
    pub leader: LeaderArgs,
    #[command(flatten)]
    pub controller: ControllerArgs,
}

/// The admission webhook: where it listens and how the API server reaches it.
#[derive(clap::Args, Debug, Clone)]
pub struct WebhookArgs {
    /// HTTPS address of the webhook (`/mutate`).
    #[arg(long, env = "HEARTBEAT_WEBHOOK_ADDR", default_value = "0.0.0.0:9443")]
    pub webhook_addr: SocketAddr,
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
}

/// The sidecar the webhook injects, and what a monitor may ask of it.
#[derive(clap::Args, Debug, Clone)]
pub struct SidecarArgs {
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
}

/// The webhook's serving certificate.
#[derive(clap::Args, Debug, Clone)]
pub struct CertArgs {
    /// The Secret that keeps the webhook's CA and serving certificate.
    #[arg(
        long,
        env = "HEARTBEAT_CERT_SECRET",
        default_value = "heartbeat-operator-webhook-tls"
    )]
    pub cert_secret: String,
    /// The certificate Secret is kept by someone else (cert-manager: keys
    /// `tls.crt`, `tls.key`): read it, follow its renewals, never write it.
    #[arg(
        long,
        env = "HEARTBEAT_EXTERNAL_CERT",
        conflicts_with = "manage_webhook_config"
    )]
    pub external_cert: bool,
    /// Seconds between checks of the certificate Secret (renewals are picked up then).
    #[arg(long, env = "HEARTBEAT_CERT_CHECK_SECONDS", default_value_t = 60)]
    pub cert_check_seconds: u64,
    /// Validity of the serving certificate the operator makes, in seconds (a year).
    #[arg(long, env = "HEARTBEAT_CERT_LIFETIME_SECONDS", default_value_t = 365 * DAY)]
    pub cert_lifetime_seconds: u64,
    /// It is renewed this many seconds before it ends (30 days).
    #[arg(long, env = "HEARTBEAT_CERT_RENEW_BEFORE_SECONDS", default_value_t = 30 * DAY)]
    pub cert_renew_before_seconds: u64,
    /// Validity of the CA the operator makes, in seconds (ten years).
    #[arg(long, env = "HEARTBEAT_CA_LIFETIME_SECONDS", default_value_t = 3650 * DAY)]
    pub ca_lifetime_seconds: u64,
    /// A CA rotation starts this many seconds before the CA ends (a year).
    #[arg(long, env = "HEARTBEAT_CA_RENEW_BEFORE_SECONDS", default_value_t = 365 * DAY)]
    pub ca_renew_before_seconds: u64,
    /// Seconds each rotation phase lasts (the new CA trusted before it
    /// signs, the old one trusted after it stops): a day.
    #[arg(long, env = "HEARTBEAT_CA_OVERLAP_SECONDS", default_value_t = DAY)]
    pub ca_overlap_seconds: u64,
}

const DAY: u64 = 24 * 3600;

/// Per-pod signing keys: the masters and the endpoint sidecars ask.
#[derive(clap::Args, Debug, Clone)]
pub struct KeyArgs {
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
}

/// The caches every part reads from.
#[derive(clap::Args, Debug, Clone)]
pub struct CacheArgs {
    /// Handle only the HeartbeatMonitors with these labels (a label
    /// selector, e.g. `team=data`); empty: all of them. Several operator
    /// installations can so share a cluster.
    #[arg(long, env = "HEARTBEAT_MONITOR_SELECTOR", default_value = "")]
    pub monitor_selector: String,
}

/// Leader election.
#[derive(clap::Args, Debug, Clone)]
pub struct LeaderArgs {
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
}

/// The leader's controller: consuming beats and writing status.
#[derive(clap::Args, Debug, Clone)]
pub struct ControllerArgs {
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
    /// Most members per monitor exported as `heartbeat_member_up` and
    /// `heartbeat_member_stale` series (worst first); per-monitor metrics
    /// are not capped.
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
    /// What the webhook injects; `ca_pem` is the webhook's CA bundle
    /// (a sidecar asking `--signing-key-url` trusts it).
    pub fn inject_defaults(&self, ca_pem: &str) -> InjectDefaults {
        InjectDefaults {
            image: self.sidecar.sidecar_image.clone(),
            sidecar_version: env!("CARGO_PKG_VERSION").into(),
            resources: InjectDefaults::default_resources(),
            native_sidecar: !self.sidecar.plain_container_sidecar,
            operator_namespace: self.namespace.clone(),
            policy: self.sidecar.policy(),
            signing_key_url: self
                .keys
                .url(&self.namespace, &self.webhook.webhook_service),
            // A direct URL is served with the webhook's certificate.
            signing_key_ca: self.keys.signing_key_url.as_ref().map(|_| ca_pem.into()),
        }
    }

    /// The controller's settings; `master` is shared with the key endpoint.
    pub fn controller_settings(&self, master: crate::keys::Master) -> ControllerSettings {
        let (ns, c) = (&self.namespace, &self.controller);
        ControllerSettings {
            master,
            master_secret: format!("{ns}/{}", self.keys.signing_secret),
            consumer_group: c.consumer_group.clone(),
            checkpoint_topic: Some(c.checkpoint_topic.clone()).filter(|t| !t.is_empty()),
            identity: self.leader.identity(),
            limits: crate::membership::table::Limits {
                history: jiff::SignedDuration::from_secs(c.history_seconds as i64),
                seen_retention: jiff::SignedDuration::from_secs(c.seen_retention_seconds as i64),
                max_seen: c.max_seen_programs,
                sidecar_version: env!("CARGO_PKG_VERSION").into(),
            },
            member_metrics_cap: c.member_metrics_cap,
            allowed_brokers: crate::consumer::BrokerAllowlist(c.allowed_brokers.clone()),
            consumer_secret: c.consumer_secret.clone().map(|name| (ns.clone(), name)),
            grant: crate::controller::secrets::Grant {
                cluster_role: c.secrets_cluster_role.clone(),
                service_account: format!("{ns}:{}", c.service_account),
            },
        }
    }
}

impl WebhookArgs {
    /// The DNS names (and IP) the serving certificate covers, for the
    /// Service in `namespace` (and the host of `--webhook-url`).
    pub fn dns_names(&self, namespace: &str) -> Vec<String> {
        let svc = &self.webhook_service;
        let mut names = vec![
            format!("{svc}.{namespace}.svc"),
            format!("{svc}.{namespace}.svc.cluster.local"),
        ];
        if let Some(host) = self
            .webhook_url
            .as_deref()
            .and_then(|u| u.strip_prefix("https://"))
            .and_then(|rest| rest.split(['/', ':']).next())
        {
            names.push(host.to_string());
        }
        names
    }

    /// The MutatingWebhookConfiguration's settings, for an operator in `namespace`.
    pub fn settings(&self, namespace: &str) -> WebhookSettings {
        WebhookSettings {
            name: self.webhook_config_name.clone(),
            target: match &self.webhook_url {
                Some(url) => WebhookTarget::Url(url.clone()),
                None => WebhookTarget::Service {
                    namespace: namespace.into(),
                    name: self.webhook_service.clone(),
                    port: self.webhook_service_port,
                },
            },
            namespace_label: self.injection_label.clone(),
            operator_namespace: namespace.into(),
            timeout_seconds: self.webhook_timeout_seconds,
        }
    }
}

impl SidecarArgs {
    /// What a monitor may ask of the sidecar, from the `--sidecar-*` flags.
    pub fn policy(&self) -> crate::webhook::inject::SidecarPolicy {
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
}

impl KeyArgs {
    /// Where injected sidecars ask for their pod's key: --signing-key-url,
    /// else the API server's proxy to the `keys` port of `webhook_service`
    /// in `namespace`.
    pub fn url(&self, namespace: &str, webhook_service: &str) -> String {
        self.signing_key_url.clone().unwrap_or_else(|| {
            heartbeat_crds::signing::key_url_on_api_server(namespace, webhook_service)
        })
    }
}

impl CacheArgs {
    /// The monitors this operator handles (`--monitor-selector`).
    pub fn monitor_watch(&self) -> kube::runtime::watcher::Config {
        let wc = kube::runtime::watcher::Config::default();
        if self.monitor_selector.is_empty() {
            wc
        } else {
            wc.labels(&self.monitor_selector)
        }
    }
}

impl LeaderArgs {
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

    /// Rule: the flags keep working across their groups: an operator that
    /// reads someone else's certificate never writes the configuration.
    #[test]
    fn flags_of_different_groups_still_conflict_and_parse_together() {
        let args = Args::try_parse_from([
            "heartbeat-operator",
            "--namespace=ops",
            "--webhook-service=hook",
            "--signing-secret=sig",
            "--consumer-secret=creds",
        ])
        .expect("flags");
        // Each group's settings still see the flags of the others they need.
        assert_eq!(
            args.inject_defaults("CA").signing_key_url,
            heartbeat_crds::signing::key_url_on_api_server("ops", "hook")
        );
        let settings = args.controller_settings(crate::keys::Master::default());
        assert_eq!(settings.master_secret, "ops/sig");
        assert_eq!(
            settings.consumer_secret,
            Some(("ops".to_string(), "creds".to_string()))
        );
        assert!(
            Args::try_parse_from([
                "heartbeat-operator",
                "--external-cert",
                "--manage-webhook-config"
            ])
            .is_err()
        );
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
        let policy = args.sidecar.policy();
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
