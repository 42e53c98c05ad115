//! Flags and environment -> a validated [`Config`]. Every flag has an env
//! twin (the webhook sets env); OpenMSIStream's flag names are aliases. A bad
//! value is a clap error, so the process exits with code 2 naming the field.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use clap::error::ErrorKind;

/// Prefix of env entries that carry librdkafka properties.
pub const KAFKA_ENV_PREFIX: &str = "KAFKA_";

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
    #[arg(long, env = "HEARTBEAT_TOPIC", visible_alias = "heartbeat_topic_name", value_parser = parse_topic)]
    pub topic: String,

    /// Program id (already rendered); the beat key is `<program-id>_heartbeat`.
    #[arg(long, env = "HEARTBEAT_PROGRAM_ID", visible_alias = "heartbeat_program_id", value_parser = parse_program_id)]
    pub program_id: String,

    /// Seconds between beats (1..86400).
    #[arg(long, env = "HEARTBEAT_INTERVAL_SECS", visible_alias = "heartbeat_interval_secs", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=86400))]
    pub interval_secs: u32,

    /// Benchmarks only: a sub-second beat period in milliseconds, overriding
    /// --interval-secs (which still goes into the beats).
    #[arg(long, env = "HEARTBEAT_BENCH_INTERVAL_MS", hide = true,
          value_parser = clap::value_parser!(u64).range(1..=86_400_000))]
    pub bench_interval_ms: Option<u64>,

    /// The HeartbeatMonitor that covers this pod, as namespace/name.
    #[arg(long, env = "HEARTBEAT_MONITOR", value_parser = parse_monitor)]
    pub monitor: Option<String>,

    /// Address of the HTTP server (/livez /readyz /healthz/app /ping /metrics).
    #[arg(long, env = "HEARTBEAT_HTTP_ADDR", default_value = "0.0.0.0:9190")]
    pub http_addr: SocketAddr,

    /// How to judge the application: none, file:<path>:<maxAgeSecs>,
    /// ping:<maxAgeSecs>, or http://127.0.0.1:<port><path>.
    #[arg(long, env = "HEARTBEAT_APP_HEALTH", default_value = "none", value_parser = AppHealth::parse)]
    pub app_health: AppHealth,

    /// Key for HMAC-SHA256 beat signatures (header `heartbeat-signature`); unset: unsigned.
    #[arg(long, env = "HEARTBEAT_SIGNING_KEY", hide_env_values = true)]
    pub signing_key: Option<String>,

    /// Most beats held in memory for delivery; beyond it a beat is dropped and
    /// counted as undelivered, so a broker outage never grows memory.
    #[arg(long, env = "HEARTBEAT_QUEUE_CAPACITY", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub queue_capacity: u32,

    /// Extra librdkafka property, name=value (repeatable; overrides KAFKA_* env).
    #[arg(long = "kafka", value_name = "NAME=VALUE", value_parser = parse_property)]
    pub kafka: Vec<(String, String)>,

    /// Pod name (downward API).
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
    /// Pod namespace (downward API).
    #[arg(long, env = "POD_NAMESPACE")]
    pub pod_namespace: Option<String>,
    /// Pod UID (downward API).
    #[arg(long, env = "POD_UID")]
    pub pod_uid: Option<String>,
    /// Node name (downward API).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
}

/// How the sidecar judges the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppHealth {
    None,
    File { path: PathBuf, max_age: Duration },
    Ping { max_age: Duration },
    Http { url: String },
}

impl AppHealth {
    /// Parses the `HEARTBEAT_APP_HEALTH` syntax.
    pub fn parse(s: &str) -> Result<AppHealth, String> {
        let age = |v: &str| -> Result<Duration, String> {
            match v.parse::<u64>() {
                Ok(n) if (1..=86_400).contains(&n) => Ok(Duration::from_secs(n)),
                _ => Err(format!("max age {v:?} must be whole seconds in 1..86400")),
            }
        };
        if s == "none" {
            Ok(AppHealth::None)
        } else if let Some(rest) = s.strip_prefix("file:") {
            let (path, max) = rest
                .rsplit_once(':')
                .ok_or_else(|| format!("{s:?}: expected file:<path>:<maxAgeSecs>"))?;
            if !path.starts_with('/') {
                return Err(format!("{s:?}: the touch-file path must be absolute"));
            }
            Ok(AppHealth::File {
                path: PathBuf::from(path),
                max_age: age(max)?,
            })
        } else if let Some(max) = s.strip_prefix("ping:") {
            Ok(AppHealth::Ping { max_age: age(max)? })
        } else if s.starts_with("http://") && s.len() > "http://".len() {
            Ok(AppHealth::Http { url: s.to_string() })
        } else {
            Err(format!(
                "{s:?}: expected none, file:<path>:<maxAgeSecs>, ping:<maxAgeSecs> or http://127.0.0.1:<port><path>"
            ))
        }
    }

    /// The mode name, for logs and metrics.
    pub fn mode(&self) -> &'static str {
        match self {
            AppHealth::None => "none",
            AppHealth::File { .. } => "file",
            AppHealth::Ping { .. } => "ping",
            AppHealth::Http { .. } => "http",
        }
    }
}

fn parse_topic(s: &str) -> Result<String, String> {
    if heartbeat_crds::monitor::is_valid_topic(s) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} is not a Kafka topic name (1-249 of [a-zA-Z0-9._-])"
        ))
    }
}

fn parse_program_id(s: &str) -> Result<String, String> {
    heartbeat_crds::program_id::validate(s)
        .map(|()| s.to_string())
        .map_err(|e| e.to_string())
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

/// Whether a `KAFKA_*` name is one Kubernetes injects for a Service named
/// `kafka...` (service links: `KAFKA_SERVICE_HOST`, `KAFKA_PORT_9092_TCP`,
/// ...) rather than a librdkafka property; no librdkafka property has a
/// `port` component.
fn is_service_link(rest: &str) -> bool {
    rest == "PORT"
        || rest.starts_with("PORT_")
        || rest.ends_with("_PORT")
        || rest.contains("_PORT_")
        || rest.contains("SERVICE_HOST")
        || rest.contains("SERVICE_PORT")
}

/// librdkafka properties from `KAFKA_*` env entries: `KAFKA_SASL_PASSWORD` ->
/// `sasl.password`, each with the env name it came from. Service-link
/// variables and names that are not UTF-8 are left out.
pub fn kafka_properties_from_env<I>(vars: I) -> BTreeMap<String, (String, String)>
where
    I: IntoIterator<Item = (String, String)>,
{
    vars.into_iter()
        .filter_map(|(k, v)| {
            let rest = k.strip_prefix(KAFKA_ENV_PREFIX)?;
            if rest.is_empty() || is_service_link(rest) {
                return None;
            }
            Some((rest.to_ascii_lowercase().replace('_', "."), (k, v)))
        })
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
                Err(PropertyProblem::Unknown) if source.starts_with(KAFKA_ENV_PREFIX) => {
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
        if kafka
            .get("bootstrap.servers")
            .is_none_or(|v: &String| v.trim().is_empty())
        {
            return Err(clap::Error::raw(
                ErrorKind::MissingRequiredArgument,
                "bootstrap.servers is not set: set KAFKA_BOOTSTRAP_SERVERS or --kafka bootstrap.servers=host:port\n",
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
    fn app_health_syntax() {
        assert_eq!(AppHealth::parse("none"), Ok(AppHealth::None));
        assert_eq!(
            AppHealth::parse("file:/var/run/hb/health:30"),
            Ok(AppHealth::File {
                path: "/var/run/hb/health".into(),
                max_age: Duration::from_secs(30)
            })
        );
        assert_eq!(
            AppHealth::parse("ping:60"),
            Ok(AppHealth::Ping {
                max_age: Duration::from_secs(60)
            })
        );
        assert_eq!(
            AppHealth::parse("http://127.0.0.1:8080/healthz"),
            Ok(AppHealth::Http {
                url: "http://127.0.0.1:8080/healthz".into()
            })
        );
        for bad in [
            "file:relative:30",
            "file:/x",
            "file:/x:0",
            "ping:",
            "ping:abc",
            "tcp:1",
            "http://",
        ] {
            assert!(AppHealth::parse(bad).is_err(), "{bad}");
        }
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
