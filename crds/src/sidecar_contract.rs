//! The sidecar's interface contract, written once for the webhook (which
//! renders it into a pod), the process node and the sidecar (which reads it):
//! the env names, the default HTTP port, the `HEARTBEAT_APP_HEALTH` syntax,
//! the rule for topics and program ids, and how `KAFKA_*` env entries name
//! librdkafka properties.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use crate::Error;
use crate::monitor::{AppHealth, AppHealthMode};

/// Env names the sidecar reads. Every `HEARTBEAT_*` entry has a matching flag.
pub mod env {
    /// Kafka topic the beats go to.
    pub const TOPIC: &str = "HEARTBEAT_TOPIC";
    /// The rendered program id; the beat key is `<program id>_heartbeat`.
    pub const PROGRAM_ID: &str = "HEARTBEAT_PROGRAM_ID";
    /// Seconds between beats (1..=[`MAX_INTERVAL_SECS`](super::MAX_INTERVAL_SECS)).
    pub const INTERVAL_SECS: &str = "HEARTBEAT_INTERVAL_SECS";
    /// The covering HeartbeatMonitor as `namespace/name`.
    pub const MONITOR: &str = "HEARTBEAT_MONITOR";
    /// Address of the sidecar's HTTP server (see [`http_addr_on_pod_ip`](super::http_addr_on_pod_ip)).
    pub const HTTP_ADDR: &str = "HEARTBEAT_HTTP_ADDR";
    /// How the application is judged, in [`SidecarAppHealth`](super::SidecarAppHealth) syntax.
    pub const APP_HEALTH: &str = "HEARTBEAT_APP_HEALTH";
    /// A fixed HMAC-SHA256 key for beat signatures (a sidecar run by hand);
    /// the webhook never sets it: injected sidecars fetch their pod's key.
    pub const SIGNING_KEY: &str = "HEARTBEAT_SIGNING_KEY";
    /// Where the sidecar asks for its pod's signing key: a path on the API
    /// server (its service proxy to the operator's key port), reached at
    /// `KUBERNETES_SERVICE_HOST`/`_PORT`, or an `https://` URL of the
    /// operator itself (one run outside the cluster network).
    pub const SIGNING_KEY_URL: &str = "HEARTBEAT_SIGNING_KEY_URL";
    /// The CA (PEM) of an `https://` [`SIGNING_KEY_URL`]: the webhook's.
    pub const SIGNING_KEY_CA: &str = "HEARTBEAT_SIGNING_KEY_CA";
    /// Directory of the pod's identity files (see [`IDENTITY_DIR`](super::IDENTITY_DIR)).
    pub const IDENTITY_DIR: &str = "HEARTBEAT_IDENTITY_DIR";
    /// The API server's address, as the kubelet sets it for every container.
    pub const KUBERNETES_SERVICE_HOST: &str = "KUBERNETES_SERVICE_HOST";
    pub const KUBERNETES_SERVICE_PORT: &str = "KUBERNETES_SERVICE_PORT";
    /// Most beats held in memory for delivery.
    pub const QUEUE_CAPACITY: &str = "HEARTBEAT_QUEUE_CAPACITY";
    /// Log filter (tracing `EnvFilter` syntax). Not set by the webhook.
    pub const LOG: &str = "HEARTBEAT_LOG";
    /// Benchmarks only: a sub-second beat period in milliseconds. Not set by the webhook.
    pub const BENCH_INTERVAL_MS: &str = "HEARTBEAT_BENCH_INTERVAL_MS";

    /// Pod name, from the downward API (`metadata.name`).
    pub const POD_NAME: &str = "POD_NAME";
    /// Pod namespace, from the downward API (`metadata.namespace`).
    pub const POD_NAMESPACE: &str = "POD_NAMESPACE";
    /// Pod UID, from the downward API (`metadata.uid`).
    pub const POD_UID: &str = "POD_UID";
    /// Node name, from the downward API (`spec.nodeName`).
    pub const NODE_NAME: &str = "NODE_NAME";
    /// Pod IP, from the downward API (`status.podIP`); only referenced by
    /// [`HTTP_ADDR`], the sidecar does not read it.
    pub const POD_IP: &str = "POD_IP";

    /// Prefix of env entries that carry librdkafka properties (see
    /// [`kafka_property_for_env`](super::kafka_property_for_env)).
    pub const KAFKA_PREFIX: &str = "KAFKA_";
}

/// The injected sidecar container's name (the webhook's, and what tests
/// and tools look for in a pod).
pub const CONTAINER_NAME: &str = "heartbeat";

/// The sidecar's HTTP paths: what it serves, what the webhook points
/// probes at, and what an application pings.
pub mod path {
    /// 200 while the beat loop ticks (the sidecar's own liveness).
    pub const LIVEZ: &str = "/livez";
    /// 200 once a beat was delivered.
    pub const READYZ: &str = "/readyz";
    /// 200 while the application makes progress (its appHealth mode).
    pub const APP_HEALTH: &str = "/healthz/app";
    /// Prometheus text.
    pub const METRICS: &str = "/metrics";
    /// The application's ping (mode Ping), from inside the pod only.
    pub const PING: &str = "/ping";
    /// The application says it started (mode Ping).
    pub const PING_START: &str = "/ping/start";
    /// The application says it failed (mode Ping).
    pub const PING_FAIL: &str = "/ping/fail";
}

/// Port of the sidecar's HTTP server unless `HEARTBEAT_HTTP_ADDR` says otherwise.
pub const DEFAULT_HTTP_PORT: u16 = 9190;
/// The sidecar's HTTP address when `HEARTBEAT_HTTP_ADDR` is unset: all interfaces.
pub const DEFAULT_HTTP_ADDR: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, DEFAULT_HTTP_PORT));

/// Where the webhook mounts the sidecar's identity (a projected volume):
/// [`IDENTITY_TOKEN`] (a ServiceAccount token for audience
/// [`AUDIENCE`](crate::signing::AUDIENCE), bound to the pod), [`IDENTITY_API_TOKEN`] (one for
/// the API server, to pass its proxy) and [`IDENTITY_CA`] (the API
/// server's CA, `kube-root-ca.crt`).
pub const IDENTITY_DIR: &str = "/var/run/heartbeat-identity";
pub const IDENTITY_TOKEN: &str = "token";
pub const IDENTITY_API_TOKEN: &str = "api-token";
pub const IDENTITY_CA: &str = "ca.crt";

/// Longest `HEARTBEAT_INTERVAL_SECS` (and CRD `intervalSeconds`): one day.
pub const MAX_INTERVAL_SECS: u32 = 86_400;

/// A Kubernetes dependent env reference, `$(NAME)`, which the kubelet expands
/// from an env entry declared earlier in the same container.
pub fn env_ref(name: &str) -> String {
    format!("$({name})")
}

/// Kubernetes' `$(VAR)` expansion of a container's env value, command or
/// args (k8s.io/kubernetes/third_party/forked/golang/expansion): `$$` is a
/// literal `$`; `$(NAME)`, up to the first `)`, is `lookup(NAME)`, or
/// stays as written when that is `None`; anything else stays. Returns the
/// expansion and the names referenced that `lookup` did not define. The
/// process node expands pods' env with it, and the fuzz target that checks
/// the webhook's env checks it with it.
pub fn expand_env_refs<'v>(
    input: &str,
    lookup: impl Fn(&str) -> Option<&'v str>,
) -> (String, Vec<String>) {
    let mut out = String::with_capacity(input.len());
    let mut undefined = Vec::new();
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match lookup(name) {
                        Some(value) => out.push_str(value),
                        None => {
                            out.push_str(&env_ref(name));
                            undefined.push(name.to_string());
                        }
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = inner;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    (out, undefined)
}

/// The `HEARTBEAT_HTTP_ADDR` value the webhook sets: the default port on the
/// pod's own IP (`$(POD_IP):9190`), so the kubelet can probe it and it never
/// collides with another pod on a shared host network.
pub fn http_addr_on_pod_ip() -> String {
    format!("{}:{DEFAULT_HTTP_PORT}", env_ref(env::POD_IP))
}

/// Longest topic name or program id (Kafka's topic-name limit).
pub const MAX_NAME_LEN: usize = 249;

/// Regex for a legal Kafka topic name: what [`validate_topic`] accepts.
pub const TOPIC_PATTERN: &str = r"^[a-zA-Z0-9._-]{1,249}$";

/// Topics and program ids: 1 to [`MAX_NAME_LEN`] characters of `[A-Za-z0-9._-]`.
fn is_kafka_name(s: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Checks a Kafka topic name (`HEARTBEAT_TOPIC`, CRD `spec.topic`).
pub fn validate_topic(topic: &str) -> Result<(), Error> {
    if is_kafka_name(topic) {
        Ok(())
    } else {
        Err(Error::InvalidTopic(topic.to_string()))
    }
}

/// Checks a program id our sidecar beats with (`HEARTBEAT_PROGRAM_ID`, a
/// rendered `programId` template). Keys from other producers are looser, see
/// [`program_id_from_key`](crate::program_id::program_id_from_key).
pub fn validate_program_id(program_id: &str) -> Result<(), Error> {
    if is_kafka_name(program_id) {
        Ok(())
    } else {
        Err(Error::InvalidProgramId(program_id.to_string()))
    }
}

/// An appHealth max age: whole seconds in `MIN_SECS..=MAX_SECS`, the same
/// bound in the CRD (`maxAgeSeconds`) and in `HEARTBEAT_APP_HEALTH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MaxAge(u32);

impl MaxAge {
    /// Shortest max age.
    pub const MIN_SECS: u32 = 1;
    /// Longest max age: one day.
    pub const MAX_SECS: u32 = 86_400;

    /// The max age of `secs` seconds, if in range.
    pub fn from_secs(secs: u32) -> Option<MaxAge> {
        (Self::MIN_SECS..=Self::MAX_SECS)
            .contains(&secs)
            .then_some(MaxAge(secs))
    }

    /// Whole seconds.
    pub fn secs(self) -> u32 {
        self.0
    }

    /// As a duration.
    pub fn as_duration(self) -> Duration {
        Duration::from_secs(u64::from(self.0))
    }

    fn parse(value: &str, text: &str) -> Result<MaxAge, Error> {
        text.parse::<u32>()
            .ok()
            .and_then(MaxAge::from_secs)
            .ok_or_else(|| {
                app_health_error(
                    value,
                    format!(
                        "max age {text:?} must be whole seconds in {}..{}",
                        Self::MIN_SECS,
                        Self::MAX_SECS
                    ),
                )
            })
    }
}

/// Host the sidecar probes in Http mode: the app shares the pod's network.
const APP_PROBE_HOST: &str = "127.0.0.1";

/// How the sidecar judges the application: the value of
/// `HEARTBEAT_APP_HEALTH`. [`SidecarAppHealth::from_spec`] turns a monitor's
/// `appHealth` into it, [`SidecarAppHealth::render`] writes the env value and
/// [`SidecarAppHealth::parse`] reads it back.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SidecarAppHealth {
    /// `none`: the application is not judged; beats say its status is unknown.
    #[default]
    None,
    /// `file:<path>:<maxAgeSecs>`: the app touches the file at the absolute
    /// `path`; it is failing once the file is older than `max_age`.
    File {
        /// Absolute path of the touch file.
        path: String,
        /// Oldest acceptable modification time.
        max_age: MaxAge,
    },
    /// `ping:<maxAgeSecs>`: the app calls the sidecar's `/ping`; it is failing
    /// once the last ping is older than `max_age`.
    Ping {
        /// Oldest acceptable ping.
        max_age: MaxAge,
    },
    /// `http://...`: the sidecar GETs `url`; a 2xx answer is alive.
    Http {
        /// The whole URL, starting with `http://`.
        url: String,
    },
}

const HTTP_SCHEME: &str = "http://";

fn app_health_error(value: &str, problem: impl Into<String>) -> Error {
    Error::InvalidAppHealth {
        value: value.to_string(),
        problem: problem.into(),
    }
}

impl SidecarAppHealth {
    /// Parses the `HEARTBEAT_APP_HEALTH` syntax: `none`,
    /// `file:<path>:<maxAgeSecs>`, `ping:<maxAgeSecs>` or `http://...`.
    pub fn parse(value: &str) -> Result<SidecarAppHealth, Error> {
        if value == "none" {
            Ok(SidecarAppHealth::None)
        } else if let Some(rest) = value.strip_prefix("file:") {
            let (path, max) = rest
                .rsplit_once(':')
                .ok_or_else(|| app_health_error(value, "expected file:<path>:<maxAgeSecs>"))?;
            if !path.starts_with('/') {
                return Err(app_health_error(
                    value,
                    "the touch-file path must be absolute",
                ));
            }
            Ok(SidecarAppHealth::File {
                path: path.to_string(),
                max_age: MaxAge::parse(value, max)?,
            })
        } else if let Some(max) = value.strip_prefix("ping:") {
            Ok(SidecarAppHealth::Ping {
                max_age: MaxAge::parse(value, max)?,
            })
        } else if value.starts_with(HTTP_SCHEME) && value.len() > HTTP_SCHEME.len() {
            Ok(SidecarAppHealth::Http {
                url: value.to_string(),
            })
        } else {
            Err(app_health_error(
                value,
                format!(
                    "expected none, file:<path>:<maxAgeSecs>, ping:<maxAgeSecs> or {HTTP_SCHEME}{APP_PROBE_HOST}:<port><path>"
                ),
            ))
        }
    }

    /// The `HEARTBEAT_APP_HEALTH` value; [`parse`](Self::parse) reads it back unchanged.
    pub fn render(&self) -> String {
        self.to_string()
    }

    /// What the sidecar must do for a monitor's `appHealth`. Fails, saying
    /// what is missing, on what the API server's schema and CEL rules would
    /// reject (no `file` or `http` settings, a relative path, a bound out of range).
    pub fn from_spec(spec: &AppHealth) -> Result<SidecarAppHealth, Error> {
        let mode = spec.mode;
        let invalid = |needs: String| Error::InvalidAppHealthSpec { mode, needs };
        let max_age = |field: &str, secs: u32| {
            MaxAge::from_secs(secs).ok_or_else(|| {
                invalid(format!(
                    "appHealth.{field}.maxAgeSeconds in {}..{}",
                    MaxAge::MIN_SECS,
                    MaxAge::MAX_SECS
                ))
            })
        };
        match mode {
            AppHealthMode::None => Ok(SidecarAppHealth::None),
            AppHealthMode::File => {
                let file = spec
                    .file
                    .as_ref()
                    .ok_or_else(|| invalid("appHealth.file".into()))?;
                if !file.path.starts_with('/') {
                    return Err(invalid("an absolute appHealth.file.path".into()));
                }
                Ok(SidecarAppHealth::File {
                    path: file.path.clone(),
                    max_age: max_age("file", file.max_age_seconds)?,
                })
            }
            AppHealthMode::Ping => {
                let ping = spec.ping.clone().unwrap_or_default();
                Ok(SidecarAppHealth::Ping {
                    max_age: max_age("ping", ping.max_age_seconds)?,
                })
            }
            AppHealthMode::Http => {
                let http = spec
                    .http
                    .as_ref()
                    .ok_or_else(|| invalid("appHealth.http".into()))?;
                if http.port == 0 {
                    return Err(invalid("appHealth.http.port in 1..65535".into()));
                }
                if !http.path.starts_with('/') {
                    return Err(invalid("an appHealth.http.path starting with /".into()));
                }
                Ok(SidecarAppHealth::Http {
                    url: format!("{HTTP_SCHEME}{APP_PROBE_HOST}:{}{}", http.port, http.path),
                })
            }
        }
    }

    /// The mode name, for logs and metrics.
    pub fn mode(&self) -> &'static str {
        match self {
            SidecarAppHealth::None => "none",
            SidecarAppHealth::File { .. } => "file",
            SidecarAppHealth::Ping { .. } => "ping",
            SidecarAppHealth::Http { .. } => "http",
        }
    }
}

/// Writes the `HEARTBEAT_APP_HEALTH` syntax (what [`SidecarAppHealth::render`] returns).
impl fmt::Display for SidecarAppHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SidecarAppHealth::None => f.write_str("none"),
            SidecarAppHealth::File { path, max_age } => {
                write!(f, "file:{path}:{}", max_age.secs())
            }
            SidecarAppHealth::Ping { max_age } => write!(f, "ping:{}", max_age.secs()),
            SidecarAppHealth::Http { url } => f.write_str(url),
        }
    }
}

/// Whether the part of a `KAFKA_*` name after the prefix is one Kubernetes
/// injects for a Service named `kafka...` (service links:
/// `KAFKA_SERVICE_HOST`, `KAFKA_PORT_9092_TCP`, ...) rather than a librdkafka
/// property; no librdkafka property has a `port` component.
fn is_service_link(rest: &str) -> bool {
    rest == "PORT"
        || rest.starts_with("PORT_")
        || rest.ends_with("_PORT")
        || rest.contains("_PORT_")
        || rest.contains("SERVICE_HOST")
        || rest.contains("SERVICE_PORT")
}

/// The librdkafka property an env entry carries: `KAFKA_` + the name either
/// upper-cased with dots as underscores (`KAFKA_SASL_PASSWORD` ->
/// `sasl.password`) or verbatim (`KAFKA_sasl.password`, what `envFrom` with
/// prefix `KAFKA_` makes of a Secret key). `None` for other names and for
/// Kubernetes service-link variables of a Service named `kafka`.
pub fn kafka_property_for_env(name: &str) -> Option<String> {
    let rest = name.strip_prefix(env::KAFKA_PREFIX)?;
    if rest.is_empty() || is_service_link(rest) {
        return None;
    }
    Some(rest.to_ascii_lowercase().replace('_', "."))
}

/// The env name for a librdkafka property (`linger.ms` -> `KAFKA_LINGER_MS`);
/// [`kafka_property_for_env`] maps it back.
pub fn kafka_env_for_property(property: &str) -> String {
    format!(
        "{}{}",
        env::KAFKA_PREFIX,
        property.to_ascii_uppercase().replace('.', "_")
    )
}

#[cfg(test)]
mod tests {
    /// Rule: `$(VAR)` expands as the kubelet does: `$$` escapes, a
    /// reference ends at the first `)`, an unknown one stays (and is
    /// reported), an unclosed one and a lone `$` stay.
    #[test]
    fn env_references_expand_as_the_kubelet_expands_them() {
        let vars = [("A", "1"), ("POD_NAME", "p1")];
        let lookup = |n: &str| vars.iter().find(|(k, _)| *k == n).map(|(_, v)| *v);
        let expand = |s: &str| expand_env_refs(s, lookup);
        assert_eq!(expand("$(A)-$(POD_NAME)"), ("1-p1".into(), vec![]));
        assert_eq!(expand("$$(A) $$ $"), ("$(A) $ $".into(), vec![]));
        assert_eq!(
            expand("$(NOPE)-$(A)"),
            ("$(NOPE)-1".into(), vec!["NOPE".to_string()])
        );
        // The name runs to the first `)`: `A$(B` is unknown, and what
        // follows is not expanded again.
        assert_eq!(
            expand("$(X$(A))"),
            ("$(X$(A))".into(), vec!["X$(A".to_string()])
        );
        assert_eq!(expand("$(A"), ("$(A".into(), vec![]));
        assert_eq!(expand("a$b$"), ("a$b$".into(), vec![]));
        assert_eq!(expand("é$(A)ü"), ("é1ü".into(), vec![]));
    }

    use super::*;
    use crate::monitor::{FileHealth, HttpHealth, PingHealth};

    fn age(secs: u32) -> MaxAge {
        MaxAge::from_secs(secs).expect("in range")
    }

    #[test]
    fn default_http_addr_is_all_interfaces_on_the_default_port() {
        assert_eq!(DEFAULT_HTTP_ADDR.to_string(), "0.0.0.0:9190");
    }

    #[test]
    fn webhook_http_addr_references_the_pod_ip() {
        assert_eq!(http_addr_on_pod_ip(), "$(POD_IP):9190");
    }

    #[test]
    fn topic_pattern_states_the_same_length_limit_as_the_code() {
        assert_eq!(
            TOPIC_PATTERN,
            format!("^[a-zA-Z0-9._-]{{1,{MAX_NAME_LEN}}}$")
        );
        assert!(validate_topic(&"t".repeat(MAX_NAME_LEN)).is_ok());
        assert!(validate_topic(&"t".repeat(MAX_NAME_LEN + 1)).is_err());
    }

    #[test]
    fn topics_and_program_ids_share_one_character_rule() {
        for good in ["hb", "data.ingest-7d9f_abc", "A-Z.0_9"] {
            assert_eq!(validate_topic(good), Ok(()), "{good}");
            assert_eq!(validate_program_id(good), Ok(()), "{good}");
        }
        for bad in ["", "a b", "ns/pod", "é", "a:b"] {
            assert_eq!(
                validate_topic(bad),
                Err(Error::InvalidTopic(bad.into())),
                "{bad}"
            );
            assert_eq!(
                validate_program_id(bad),
                Err(Error::InvalidProgramId(bad.into())),
                "{bad}"
            );
        }
    }

    #[test]
    fn app_health_syntax_parses_every_mode() {
        assert_eq!(SidecarAppHealth::parse("none"), Ok(SidecarAppHealth::None));
        assert_eq!(
            SidecarAppHealth::parse("file:/var/run/hb/health:30"),
            Ok(SidecarAppHealth::File {
                path: "/var/run/hb/health".into(),
                max_age: age(30)
            })
        );
        assert_eq!(
            SidecarAppHealth::parse("ping:60"),
            Ok(SidecarAppHealth::Ping { max_age: age(60) })
        );
        assert_eq!(
            SidecarAppHealth::parse("http://127.0.0.1:8080/healthz"),
            Ok(SidecarAppHealth::Http {
                url: "http://127.0.0.1:8080/healthz".into()
            })
        );
    }

    #[test]
    fn malformed_app_health_values_are_rejected_saying_why() {
        for bad in [
            "file:relative:30",
            "file:/x",
            "file:/x:0",
            "file:/x:86401",
            "ping:",
            "ping:abc",
            "ping:-1",
            "tcp:1",
            "http://",
            "",
        ] {
            assert!(
                matches!(
                    SidecarAppHealth::parse(bad),
                    Err(Error::InvalidAppHealth { ref value, .. }) if value == bad
                ),
                "{bad}"
            );
        }
        let err = SidecarAppHealth::parse("file:relative:30").expect_err("relative");
        assert!(err.to_string().contains("absolute"), "{err}");
    }

    #[test]
    fn rendered_app_health_parses_back_for_every_mode() {
        for value in [
            SidecarAppHealth::None,
            SidecarAppHealth::File {
                path: "/a:b/health".into(),
                max_age: age(MaxAge::MAX_SECS),
            },
            SidecarAppHealth::Ping {
                max_age: age(MaxAge::MIN_SECS),
            },
            SidecarAppHealth::Http {
                url: "http://127.0.0.1:8080/healthz".into(),
            },
        ] {
            assert_eq!(SidecarAppHealth::parse(&value.render()), Ok(value));
        }
    }

    #[test]
    fn monitor_app_health_becomes_the_env_value() {
        let spec = |mode| AppHealth {
            mode,
            ..AppHealth::default()
        };
        let render = |s: &AppHealth| SidecarAppHealth::from_spec(s).map(|a| a.render());
        assert_eq!(render(&spec(AppHealthMode::None)).as_deref(), Ok("none"));
        let file = AppHealth {
            file: Some(FileHealth {
                path: "/var/run/heartbeat/health".into(),
                max_age_seconds: 30,
            }),
            ..spec(AppHealthMode::File)
        };
        assert_eq!(
            render(&file).as_deref(),
            Ok("file:/var/run/heartbeat/health:30")
        );
        let ping = AppHealth {
            ping: Some(PingHealth {
                max_age_seconds: 45,
            }),
            ..spec(AppHealthMode::Ping)
        };
        assert_eq!(render(&ping).as_deref(), Ok("ping:45"));
        let http = AppHealth {
            http: Some(HttpHealth {
                port: 8080,
                path: "/healthz".into(),
            }),
            ..spec(AppHealthMode::Http)
        };
        assert_eq!(
            render(&http).as_deref(),
            Ok("http://127.0.0.1:8080/healthz")
        );
    }

    #[test]
    fn ping_mode_without_settings_uses_the_crd_default_max_age() {
        let spec = AppHealth {
            mode: AppHealthMode::Ping,
            ..AppHealth::default()
        };
        assert_eq!(
            SidecarAppHealth::from_spec(&spec),
            Ok(SidecarAppHealth::Ping { max_age: age(30) })
        );
    }

    #[test]
    fn incomplete_monitor_app_health_is_an_error_naming_the_field() {
        let missing_file = AppHealth {
            mode: AppHealthMode::File,
            ..AppHealth::default()
        };
        assert_eq!(
            SidecarAppHealth::from_spec(&missing_file),
            Err(Error::InvalidAppHealthSpec {
                mode: AppHealthMode::File,
                needs: "appHealth.file".into()
            })
        );
        let missing_http = AppHealth {
            mode: AppHealthMode::Http,
            ..AppHealth::default()
        };
        assert!(SidecarAppHealth::from_spec(&missing_http).is_err());
        let zero_age = AppHealth {
            mode: AppHealthMode::Ping,
            ping: Some(PingHealth { max_age_seconds: 0 }),
            ..AppHealth::default()
        };
        assert!(SidecarAppHealth::from_spec(&zero_age).is_err());
        let relative = AppHealth {
            mode: AppHealthMode::File,
            file: Some(FileHealth {
                path: "health".into(),
                max_age_seconds: 30,
            }),
            ..AppHealth::default()
        };
        assert!(SidecarAppHealth::from_spec(&relative).is_err());
    }

    #[test]
    fn kafka_env_names_map_to_properties_in_both_spellings() {
        assert_eq!(
            kafka_property_for_env("KAFKA_BOOTSTRAP_SERVERS").as_deref(),
            Some("bootstrap.servers")
        );
        assert_eq!(
            kafka_property_for_env("KAFKA_bootstrap.servers").as_deref(),
            Some("bootstrap.servers")
        );
        assert_eq!(kafka_env_for_property("linger.ms"), "KAFKA_LINGER_MS");
        for not_a_property in [
            "KAFKA_",
            "HOME",
            "KAFKA_SERVICE_HOST",
            "KAFKA_PORT_9092_TCP",
        ] {
            assert_eq!(
                kafka_property_for_env(not_a_property),
                None,
                "{not_a_property}"
            );
        }
    }

    #[test]
    fn every_allowlisted_producer_property_round_trips_through_its_env_name() {
        for property in crate::monitor::PRODUCER_ALLOWLIST {
            let name = kafka_env_for_property(property);
            assert_eq!(
                kafka_property_for_env(&name).as_deref(),
                Some(*property),
                "{name}"
            );
        }
    }

    #[test]
    fn env_names_are_distinct() {
        let names = [
            env::TOPIC,
            env::PROGRAM_ID,
            env::INTERVAL_SECS,
            env::MONITOR,
            env::HTTP_ADDR,
            env::APP_HEALTH,
            env::SIGNING_KEY,
            env::SIGNING_KEY_URL,
            env::SIGNING_KEY_CA,
            env::IDENTITY_DIR,
            env::QUEUE_CAPACITY,
            env::LOG,
            env::BENCH_INTERVAL_MS,
            env::POD_NAME,
            env::POD_NAMESPACE,
            env::POD_UID,
            env::NODE_NAME,
            env::POD_IP,
        ];
        let distinct: std::collections::BTreeSet<_> = names.iter().collect();
        assert_eq!(distinct.len(), names.len());
        assert!(names.iter().all(|n| !n.starts_with(env::KAFKA_PREFIX)));
    }
}
