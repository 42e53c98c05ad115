//! The crate's one error type: every way a beat, a key, a program-id
//! template or a sidecar setting can be rejected, each with a low-cardinality
//! metric label.

use crate::monitor::AppHealthMode;
use crate::sidecar_contract::MAX_NAME_LEN;

/// Why a beat, key, template or sidecar setting was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum Error {
    #[error("beat value is {size} bytes, over the {limit}-byte limit")]
    TooLarge { size: usize, limit: usize },
    #[error("beat {part} is not valid UTF-8")]
    NotUtf8 { part: &'static str },
    #[error("beat value is not JSON: {0}")]
    NotJson(String),
    #[error("beat value is JSON but not an object")]
    NotObject,
    #[error("beat has no \"timestamp\" field")]
    MissingTimestamp,
    #[error("beat timestamp {0:?} is not an ISO-8601 date-time")]
    BadTimestamp(String),
    #[error("beat field {field:?} is invalid: {detail}")]
    WrongFieldType { field: String, detail: String },
    #[error("beat key {0:?} does not end in \"_heartbeat\" after a program id")]
    BadKey(String),
    #[error("program id {0:?} must be 1-{MAX_NAME_LEN} characters of [A-Za-z0-9._-]")]
    InvalidProgramId(String),
    #[error("program-id template has unknown placeholder {{{0}}}")]
    UnknownPlaceholder(String),
    #[error("program-id template has an unclosed '{{'")]
    UnclosedPlaceholder,
    /// A topic name outside the Kafka rule (`HEARTBEAT_TOPIC`, `spec.topic`).
    #[error("topic {0:?} must be 1-{MAX_NAME_LEN} characters of [A-Za-z0-9._-]")]
    InvalidTopic(String),
    /// A `HEARTBEAT_APP_HEALTH` value that is not in the documented syntax.
    #[error("{value:?}: {problem}")]
    InvalidAppHealth { value: String, problem: String },
    /// A monitor's `appHealth` the sidecar cannot be configured from.
    #[error("appHealth mode {mode:?} needs {needs}")]
    InvalidAppHealthSpec { mode: AppHealthMode, needs: String },
}

impl Error {
    /// A short, fixed label for metrics (`heartbeat_beats_rejected_total{reason=...}`).
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::TooLarge { .. } => "too_large",
            Error::NotUtf8 { .. } => "not_utf8",
            Error::NotJson(_) => "not_json",
            Error::NotObject => "not_object",
            Error::MissingTimestamp => "missing_timestamp",
            Error::BadTimestamp(_) => "bad_timestamp",
            Error::WrongFieldType { .. } => "wrong_field_type",
            Error::BadKey(_) => "bad_key",
            Error::InvalidProgramId(_) => "invalid_program_id",
            Error::UnknownPlaceholder(_) | Error::UnclosedPlaceholder => "bad_template",
            Error::InvalidTopic(_) => "invalid_topic",
            Error::InvalidAppHealth { .. } | Error::InvalidAppHealthSpec { .. } => {
                "invalid_app_health"
            }
        }
    }
}
