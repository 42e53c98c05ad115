//! Flags and environment -> a validated [`Config`]. Every flag has an env
//! twin (the webhook sets env); OpenMSIStream's flag names are aliases. A bad
//! value is a clap error, so the process exits with code 2 naming the field.
//! The env names and value syntaxes are the contract in
//! [`heartbeat_crds::sidecar_contract`]; this module only binds them to flags.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use clap::error::ErrorKind;
use heartbeat_crds::SidecarAppHealth;
use heartbeat_crds::sidecar_contract::{
    self as contract, DEFAULT_HTTP_ADDR, MAX_INTERVAL_SECS, env as env_name,
};

/// heartbeat-sidecar: produces a heartbeat to Kafka every interval and serves
/// liveness endpoints for itself and the application next to it.
///
/// Kafka settings come from the environment: every librdkafka property as
/// KAFKA_ + its name upper-cased with dots as underscores
/// (bootstrap.servers -> KAFKA_BOOTSTRAP_SERVERS), or from --kafka name=value.
#[derive(Parser, Debug, Clone)]
#[command(name = "heartbeat-sidecar", version, about, long_about)]
pub struct Args {
    /// Kafka topic to produce beats to.
    #[arg(long, env = env_name::TOPIC, visible_alias = "heartbeat_topic_name", value_parser = parse_topic)]
    pub topic: String,

    /// Program id (already rendered); the beat key is `<program-id>_heartbeat`.
    #[arg(long, env = env_name::PROGRAM_ID, visible_alias = "heartbeat_program_id", value_parser = parse_program_id)]
    pub program_id: String,

    /// Seconds between beats (1..86400).
    #[arg(long, env = env_name::INTERVAL_SECS, visible_alias = "heartbeat_interval_secs", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_INTERVAL_SECS)))]
    pub interval_secs: u32,

    /// Benchmarks only: a sub-second beat period in milliseconds, overriding
    /// --interval-secs (which still goes into the beats).
    #[arg(long, env = env_name::BENCH_INTERVAL_MS, hide = true,
          value_parser = clap::value_parser!(u64).range(1..=86_400_000))]
    pub bench_interval_ms: Option<u64>,

    /// The HeartbeatMonitor that covers this pod, as namespace/name.
    #[arg(long, env = env_name::MONITOR, value_parser = parse_monitor)]
    pub monitor: Option<String>,

    /// Address of the HTTP server (/livez /readyz /healthz/app /ping /metrics).
    #[arg(long, env = env_name::HTTP_ADDR, default_value_t = DEFAULT_HTTP_ADDR)]
    pub http_addr: SocketAddr,

    /// How to judge the application: none, file:<path>:<maxAgeSecs>,
    /// ping:<maxAgeSecs>, or http://127.0.0.1:<port><path>.
    #[arg(long, env = env_name::APP_HEALTH, default_value_t = SidecarAppHealth::None, value_parser = SidecarAppHealth::parse)]
    pub app_health: SidecarAppHealth,

    /// A fixed key for HMAC-SHA256 beat signatures (header
    /// `heartbeat-signature`); unset, and no --signing-key-url: unsigned.
    #[arg(long, env = env_name::SIGNING_KEY, hide_env_values = true, conflicts_with = "signing_key_url")]
    pub signing_key: Option<String>,

    /// Ask the operator for this pod's signing key at this path on the API
    /// server (its service proxy) or at this https:// URL, proving the pod
    /// with the tokens in --identity-dir; asked again as the answer says,
    /// so a rotated key needs no restart.
    #[arg(long, env = env_name::SIGNING_KEY_URL, value_parser = parse_key_url)]
    pub signing_key_url: Option<String>,

    /// The CA (PEM text) that signed an https:// --signing-key-url's
    /// certificate (a path on the API server uses the identity's ca.crt).
    #[arg(long, env = env_name::SIGNING_KEY_CA, hide_env_values = true)]
    pub signing_key_ca: Option<String>,

    /// The pod's identity files: `token` (audience heartbeat.dev),
    /// `api-token` and `ca.crt` (the API server's).
    #[arg(long, env = env_name::IDENTITY_DIR, default_value = contract::IDENTITY_DIR)]
    pub identity_dir: std::path::PathBuf,

    /// Most beats held in memory for delivery; beyond it a beat is dropped and
    /// counted as undelivered, so a broker outage never grows memory.
    #[arg(long, env = env_name::QUEUE_CAPACITY, default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub queue_capacity: u32,

    /// Extra librdkafka property, name=value (repeatable; overrides KAFKA_* env).
    #[arg(long = "kafka", value_name = "NAME=VALUE", value_parser = parse_property)]
    pub kafka: Vec<(String, String)>,

    /// Pod name (downward API).
    #[arg(long, env = env_name::POD_NAME)]
    pub pod_name: Option<String>,
    /// Pod namespace (downward API).
    #[arg(long, env = env_name::POD_NAMESPACE)]
    pub pod_namespace: Option<String>,
    /// Pod UID (downward API).
    #[arg(long, env = env_name::POD_UID)]
    pub pod_uid: Option<String>,
    /// Node name (downward API).
    #[arg(long, env = env_name::NODE_NAME)]
    pub node_name: Option<String>,
}

fn parse_topic(s: &str) -> Result<String, heartbeat_crds::Error> {
    contract::validate_topic(s).map(|()| s.to_string())
}

fn parse_program_id(s: &str) -> Result<String, heartbeat_crds::Error> {
    contract::validate_program_id(s).map(|()| s.to_string())
}

fn parse_key_url(s: &str) -> Result<String, String> {
    let path = s.starts_with('/') && !s.starts_with("//");
    if (path || s.starts_with("https://")) && !s.chars().any(char::is_whitespace) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?}: expected a path on the API server (/api/v1/...) or an https:// URL"
        ))
    }
}

fn parse_monitor(s: &str) -> Result<String, String> {
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok(s.to_string())
        }
        _ => Err(format!("{s:?}: expected namespace/name")),
    }
}

fn parse_property(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?}: expected name=value")),
    }
}

/// librdkafka properties from `KAFKA_*` env entries (named as
/// [`contract::kafka_property_for_env`] says), each with the env name it came
/// from. Service-link variables and other env entries are left out.
pub fn kafka_properties_from_env<I>(vars: I) -> BTreeMap<String, (String, String)>
where
    I: IntoIterator<Item = (String, String)>,
{
    vars.into_iter()
        .filter_map(|(k, v)| Some((contract::kafka_property_for_env(&k)?, (k, v))))
        .collect()
}

/// Why librdkafka refuses one property.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PropertyProblem {
    /// librdkafka has no property of that name.
    Unknown,
    /// The value is not valid for the property.
    Invalid(String),
}

/// The validated configuration the sidecar runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub args: Args,
    /// librdkafka producer properties (env, then --kafka overrides).
    pub kafka: BTreeMap<String, String>,
    /// `KAFKA_*` env entries ignored because librdkafka does not know them (logged at start).
    pub ignored_env: Vec<String>,
}

impl Config {
    /// Builds the config from parsed args and the environment, or a clap
    /// error (exit code 2). `check` asks librdkafka about one property: an
    /// unknown name from the environment is ignored (other software sets
    /// `KAFKA_*` too), an unknown `--kafka` name or an invalid value is an
    /// error naming where it came from.
    pub fn new<I>(
        args: Args,
        env: I,
        check: impl Fn(&str, &str) -> Result<(), PropertyProblem>,
    ) -> Result<Config, clap::Error>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let mut sources = kafka_properties_from_env(env);
        for (k, v) in &args.kafka {
            sources.insert(k.clone(), (format!("--kafka {k}"), v.clone()));
        }
        let mut kafka = BTreeMap::new();
        let mut ignored_env = Vec::new();
        for (property, (source, value)) in sources {
            match check(&property, &value) {
                Ok(()) => {
                    kafka.insert(property, value);
                }
                Err(PropertyProblem::Unknown) if source.starts_with(env_name::KAFKA_PREFIX) => {
                    ignored_env.push(source);
                }
                Err(PropertyProblem::Unknown) => {
                    return Err(clap::Error::raw(
                        ErrorKind::InvalidValue,
                        format!("{source}: librdkafka has no property {property:?}\n"),
                    ));
                }
                Err(PropertyProblem::Invalid(why)) => {
                    return Err(clap::Error::raw(
                        ErrorKind::InvalidValue,
                        format!(
                            "{source}: invalid value for librdkafka property {property:?}: {why}\n"
                        ),
                    ));
                }
            }
        }
        const BOOTSTRAP: &str = "bootstrap.servers";
        if kafka
            .get(BOOTSTRAP)
            .is_none_or(|v: &String| v.trim().is_empty())
        {
            return Err(clap::Error::raw(
                ErrorKind::MissingRequiredArgument,
                format!(
                    "{BOOTSTRAP} is not set: set {} or --kafka {BOOTSTRAP}=host:port\n",
                    contract::kafka_env_for_property(BOOTSTRAP)
                ),
            ));
        }
        Ok(Config {
            args,
            kafka,
            ignored_env,
        })
    }

    /// The beat interval.
    pub fn interval(&self) -> Duration {
        match self.args.bench_interval_ms {
            Some(ms) => Duration::from_millis(ms),
            None => Duration::from_secs(u64::from(self.args.interval_secs)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Result<Args, clap::Error> {
        let mut argv = vec![
            "heartbeat-sidecar",
            "--topic",
            "hb",
            "--program-id",
            "ns.pod",
        ];
        argv.extend_from_slice(extra);
        Args::try_parse_from(argv)
    }

    /// Stands in for librdkafka's verdict on a property.
    fn check(name: &str, value: &str) -> Result<(), PropertyProblem> {
        match (name, value) {
            ("bootstrap", _) | ("home", _) => Err(PropertyProblem::Unknown),
            ("acks", v) if v.parse::<i32>().is_err() && v != "all" => Err(
                PropertyProblem::Invalid("expected an integer or all".into()),
            ),
            _ => Ok(()),
        }
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn kafka_env_names_map_to_librdkafka_properties() {
        let props = kafka_properties_from_env(env(&[
            ("KAFKA_BOOTSTRAP_SERVERS", "b:9092"),
            ("KAFKA_SASL_PASSWORD", "pw"),
            ("KAFKA_SSL_CA_PEM", "pem"),
            ("KAFKA_", "ignored"),
            ("HOME", "/root"),
        ]));
        assert_eq!(props.len(), 3);
        assert_eq!(props["bootstrap.servers"].1, "b:9092");
        assert_eq!(
            props["sasl.password"],
            ("KAFKA_SASL_PASSWORD".to_string(), "pw".to_string())
        );
        assert_eq!(props["ssl.ca.pem"].1, "pem");
    }

    #[test]
    fn service_link_variables_of_a_kafka_service_are_not_properties() {
        let props = kafka_properties_from_env(env(&[
            ("KAFKA_SERVICE_HOST", "10.0.0.7"),
            ("KAFKA_SERVICE_PORT", "9092"),
            ("KAFKA_SERVICE_PORT_PLAINTEXT", "9092"),
            ("KAFKA_PORT", "tcp://10.0.0.7:9092"),
            ("KAFKA_PORT_9092_TCP", "tcp://10.0.0.7:9092"),
            ("KAFKA_PORT_9092_TCP_ADDR", "10.0.0.7"),
            ("KAFKA_BROKER_SERVICE_HOST", "10.0.0.8"),
            ("KAFKA_CONTROLLER_PORT", "9093"),
            ("KAFKA_BOOTSTRAP_SERVERS", "b:9092"),
        ]));
        assert_eq!(props.keys().collect::<Vec<_>>(), ["bootstrap.servers"]);
    }

    #[test]
    fn unknown_env_properties_are_ignored_but_invalid_values_exit_2_naming_the_env() {
        let a = args(&[]).expect("args");
        let c = Config::new(
            a.clone(),
            env(&[
                ("KAFKA_BOOTSTRAP_SERVERS", "b:1"),
                ("KAFKA_BOOTSTRAP", "b:1"),
                ("KAFKA_HOME", "/opt/kafka"),
            ]),
            check,
        )
        .expect("unknown env names are ignored");
        assert_eq!(c.ignored_env, ["KAFKA_BOOTSTRAP", "KAFKA_HOME"]);
        assert_eq!(c.kafka.len(), 1);
        let err = Config::new(
            a,
            env(&[("KAFKA_BOOTSTRAP_SERVERS", "b:1"), ("KAFKA_ACKS", "most")]),
            check,
        )
        .expect_err("invalid acks");
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("KAFKA_ACKS"), "{err}");
    }

    #[test]
    fn unknown_property_in_a_flag_is_an_error() {
        let a = args(&["--kafka", "bootstrap=b:1"]).expect("args");
        let err = Config::new(a, env(&[("KAFKA_BOOTSTRAP_SERVERS", "b:1")]), check)
            .expect_err("unknown flag property");
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("--kafka bootstrap"), "{err}");
    }

    #[test]
    fn openmsistream_flag_names_are_accepted() {
        let a = Args::try_parse_from([
            "heartbeat-sidecar",
            "--heartbeat_topic_name",
            "hb",
            "--heartbeat_program_id",
            "lab-1",
            "--heartbeat_interval_secs",
            "7",
        ])
        .expect("aliases parse");
        assert_eq!(
            (a.topic.as_str(), a.program_id.as_str(), a.interval_secs),
            ("hb", "lab-1", 7)
        );
    }

    #[test]
    fn interval_out_of_range_is_rejected() {
        for bad in ["0", "86401", "-1", "ten"] {
            let flag = format!("--interval-secs={bad}");
            let err = args(&[&flag]).expect_err(bad);
            assert_eq!(err.exit_code(), 2);
            assert!(err.to_string().contains("--interval-secs"), "{err}");
        }
    }

    #[test]
    fn bad_program_id_and_topic_are_rejected_naming_the_field() {
        let err = args(&["--program-id", "a/b"]).expect_err("slash");
        assert!(err.to_string().contains("--program-id"), "{err}");
        let err =
            Args::try_parse_from(["x", "--topic", "a b", "--program-id", "p"]).expect_err("topic");
        assert!(err.to_string().contains("--topic"), "{err}");
    }

    #[test]
    fn app_health_flag_takes_the_contract_syntax_and_defaults_to_none() {
        assert_eq!(args(&[]).expect("args").app_health, SidecarAppHealth::None);
        let a = args(&["--app-health", "ping:60"]).expect("args");
        assert_eq!(a.app_health.render(), "ping:60");
        let err = args(&["--app-health", "file:relative:30"]).expect_err("relative");
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("--app-health"), "{err}");
    }

    #[test]
    fn http_addr_defaults_to_the_contract_port_on_all_interfaces() {
        assert_eq!(
            args(&[]).expect("args").http_addr.to_string(),
            "0.0.0.0:9190"
        );
    }

    #[test]
    fn missing_bootstrap_servers_is_an_exit_2_error() {
        let a = args(&[]).expect("args");
        let err = Config::new(a, Vec::new(), check).expect_err("no bootstrap");
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("bootstrap.servers"), "{err}");
    }

    #[test]
    fn kafka_flag_overrides_env() {
        let a = args(&["--kafka", "bootstrap.servers=flag:1"]).expect("args");
        let c =
            Config::new(a, env(&[("KAFKA_BOOTSTRAP_SERVERS", "env:1")]), check).expect("config");
        assert_eq!(c.kafka["bootstrap.servers"], "flag:1");
    }
}
