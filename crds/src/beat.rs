//! The beat wire format (schema `heartbeat.dev/beat/v1`): one JSON object per
//! Kafka message, a superset of OpenMSIStream's heartbeat value. Parsing is
//! lenient about what OpenMSIStream writes and strict about everything else.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::program_id::program_id_from_key;
use crate::sidecar_contract::MAX_INTERVAL_SECS;

/// Schema tag our sidecar writes into every beat.
pub const SCHEMA: &str = "heartbeat.dev/beat/v1";
/// Largest beat value accepted (a beat is a few hundred bytes; anything near
/// this is not a heartbeat).
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Longest `app.reason` kept, in characters: it reaches a member's status
/// and Events, so a longer one is cut there (with a trailing `…`).
pub const MAX_REASON_CHARS: usize = 256;
/// Longest `sidecar.version` kept, in characters (cut like a reason).
pub const MAX_VERSION_CHARS: usize = 64;

/// Lifecycle phase a sidecar reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// The first beat after start-up.
    Starting,
    /// Every periodic beat.
    Running,
    /// The last beat, sent on SIGTERM: a deliberate stop, never an alarm.
    Stopping,
}

/// What the sidecar knows about the application next to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AppStatus {
    Ok,
    Failing,
    /// appHealth mode None: the sidecar does not judge the application.
    Unknown,
}

/// The `app` object of a beat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BeatApp {
    pub status: AppStatus,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "iso_utc_opt")]
    pub last_signal: Option<Timestamp>,
    /// Why the application is failing, at most [`MAX_REASON_CHARS`].
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "bounded::reason"
    )]
    pub reason: Option<String>,
}

/// The `pod` object of a beat (downward-API identity of the sidecar's pod).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BeatPod {
    pub namespace: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// The `sidecar` object of a beat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BeatSidecar {
    /// At most [`MAX_VERSION_CHARS`].
    #[serde(deserialize_with = "bounded::version")]
    pub version: String,
    #[serde(with = "iso_utc")]
    pub started_at: Timestamp,
    /// Beats this sidecar could not deliver since it started.
    pub undelivered: u64,
}

/// One heartbeat. Only `timestamp` is required, so plain OpenMSIStream
/// heartbeats parse; our sidecar fills every field. Unknown fields are
/// ignored, so newer producers stay readable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Beat {
    #[serde(with = "iso_utc")]
    pub timestamp: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The sidecar's interval, 1..=[`MAX_INTERVAL_SECS`] (the CRD's bound):
    /// anything else is refused here, so no beat can stretch a member's
    /// deadlines beyond what a monitor could set.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "bounded::interval"
    )]
    pub interval_secs: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<BeatApp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_messages_produced: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_bytes_produced: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_messages_read: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_bytes_read: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_messages_processed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_bytes_processed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<BeatPod>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sidecar: Option<BeatSidecar>,
}

impl Beat {
    /// A beat with only a timestamp, the minimum OpenMSIStream writes.
    pub fn at(timestamp: Timestamp) -> Beat {
        Beat {
            timestamp,
            schema: None,
            program_id: None,
            seq: None,
            interval_secs: None,
            phase: None,
            app: None,
            n_messages_produced: None,
            n_bytes_produced: None,
            n_messages_read: None,
            n_bytes_read: None,
            n_messages_processed: None,
            n_bytes_processed: None,
            pod: None,
            monitor: None,
            sidecar: None,
        }
    }

    /// Parses a beat value strictly: a known field of the wrong type rejects
    /// it. The sidecar's own round trips use this; the operator reads with
    /// [`Beat::parse_lenient`].
    pub fn parse(value: &[u8]) -> Result<Beat, Error> {
        let object = Beat::parse_object(value)?;
        serde_path_to_error::deserialize(serde_json::Value::Object(object)).map_err(|e| {
            Error::WrongFieldType {
                field: e.path().to_string(),
                detail: e.into_inner().to_string(),
            }
        })
    }

    /// Parses a beat value as a sign of life: only a value that is not a
    /// JSON object, or has no readable `timestamp`, is rejected. A known
    /// field of the wrong type (a foreign producer writing a float counter)
    /// is dropped and reported, and the rest of the beat kept.
    pub fn parse_lenient(value: &[u8]) -> Result<LenientBeat, Error> {
        // The fast path, straight into the struct (no JSON tree, unknown
        // fields skipped): what every well-formed beat takes. Anything it
        // refuses (a wrong type, a duplicate field, no timestamp, not JSON)
        // is judged field by field below, so the verdict is the same.
        // Objects only: serde also reads a struct from a JSON array, which
        // the field-by-field path refuses as not an object.
        if value.len() <= MAX_VALUE_BYTES
            && let Ok(text) = std::str::from_utf8(value)
            && text.trim_start().starts_with('{')
            && let Ok(beat) = serde_json::from_str::<Beat>(text)
        {
            return Ok(LenientBeat {
                beat,
                dropped: Vec::new(),
            });
        }
        Beat::parse_lenient_by_field(value)
    }

    /// The lenient parse one field at a time, for values the fast path
    /// refused. Public for the tests and the fuzz target that hold the two
    /// paths to the same verdict.
    #[doc(hidden)]
    pub fn parse_lenient_by_field(value: &[u8]) -> Result<LenientBeat, Error> {
        let mut object = Beat::parse_object(value)?;
        let mut dropped = Vec::new();
        // Each round drops the top-level field serde stopped at; there are
        // at most as many rounds as known fields.
        loop {
            match serde_path_to_error::deserialize::<_, Beat>(serde_json::Value::Object(
                object.clone(),
            )) {
                Ok(beat) => return Ok(LenientBeat { beat, dropped }),
                Err(e) => {
                    let field = e
                        .path()
                        .iter()
                        .find_map(|seg| match seg {
                            serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                            _ => None,
                        })
                        .filter(|f| f != "timestamp" && object.contains_key(f));
                    let Some(field) = field else {
                        return Err(Error::WrongFieldType {
                            field: e.path().to_string(),
                            detail: e.into_inner().to_string(),
                        });
                    };
                    object.remove(&field);
                    dropped.push(DroppedField {
                        field,
                        detail: e.into_inner().to_string(),
                    });
                }
            }
        }
    }

    /// The checks both parsers share: size, UTF-8, a JSON object with a
    /// readable `timestamp`.
    fn parse_object(value: &[u8]) -> Result<serde_json::Map<String, serde_json::Value>, Error> {
        if value.len() > MAX_VALUE_BYTES {
            return Err(Error::TooLarge {
                size: value.len(),
                limit: MAX_VALUE_BYTES,
            });
        }
        let text = std::str::from_utf8(value).map_err(|_| Error::NotUtf8 { part: "value" })?;
        let json: serde_json::Value =
            serde_json::from_str(text).map_err(|e| Error::NotJson(e.to_string()))?;
        let serde_json::Value::Object(object) = json else {
            return Err(Error::NotObject);
        };
        match object.get("timestamp") {
            None => return Err(Error::MissingTimestamp),
            Some(serde_json::Value::String(s)) => {
                parse_timestamp(s)?;
            }
            Some(_) => {
                return Err(Error::WrongFieldType {
                    field: "timestamp".into(),
                    detail: "expected an ISO-8601 string".into(),
                });
            }
        }
        Ok(object)
    }

    /// Parses a whole Kafka message as a consumer does: the key names the
    /// program, the value is read leniently (see [`Beat::parse_lenient`]).
    pub fn parse_message(
        key: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> Result<(String, LenientBeat), Error> {
        let program_id = program_id_from_key(key.unwrap_or_default())?;
        let beat = Beat::parse_lenient(value.unwrap_or_default())?;
        Ok((program_id.to_string(), beat))
    }

    /// Renders the beat as the JSON value to produce.
    pub fn render(&self) -> Result<Vec<u8>, Error> {
        serde_json::to_vec(self).map_err(|e| Error::NotJson(e.to_string()))
    }
}

/// A beat read leniently, with the fields that were dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LenientBeat {
    pub beat: Beat,
    pub dropped: Vec<DroppedField>,
}

/// A known field a lenient parse dropped because its value had the wrong type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedField {
    /// The top-level field name (`n_messages_read`, `app`, ...).
    pub field: String,
    /// What was wrong with it.
    pub detail: String,
}

/// Parses an ISO-8601 date-time. A value with an offset is converted to UTC;
/// a naive value (what OpenMSIStream before 1.8 wrote with
/// `datetime.utcnow().isoformat()`) is read as UTC.
pub fn parse_timestamp(s: &str) -> Result<Timestamp, Error> {
    if let Ok(ts) = s.parse::<Timestamp>() {
        return Ok(ts);
    }
    s.parse::<jiff::civil::DateTime>()
        .ok()
        .and_then(|dt| dt.to_zoned(jiff::tz::TimeZone::UTC).ok())
        .map(|z| z.timestamp())
        .ok_or_else(|| Error::BadTimestamp(s.chars().take(64).collect()))
}

/// Formats like Python's `datetime.now(timezone.utc).isoformat()`:
/// microseconds and a `+00:00` offset, what OpenMSIStream's consumers expect.
/// A year before 1 BCE (which a foreign beat may carry) is written in
/// ISO 8601's expanded form, `-YYYYYY`: `%Y` would write `-001`, which
/// [`parse_timestamp`] refuses, so the beat would not read back.
pub fn format_timestamp(ts: Timestamp) -> String {
    let rest = ts.strftime("-%m-%dT%H:%M:%S%.6f+00:00");
    match ts.to_zoned(jiff::tz::TimeZone::UTC).year() {
        year @ 0.. => format!("{year:04}{rest}"),
        year => format!("{year:07}{rest}"),
    }
}

/// Bounds on what a beat's fields may hold, applied while parsing: every
/// value off a topic is untrusted.
mod bounded {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer};

    use super::{MAX_INTERVAL_SECS, MAX_REASON_CHARS, MAX_VERSION_CHARS};

    /// `interval_secs` outside 1..=MAX_INTERVAL_SECS is an error (the
    /// lenient parser drops the field and counts it).
    pub fn interval<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        match Option::<u32>::deserialize(d)? {
            Some(s) if s == 0 || s > MAX_INTERVAL_SECS => Err(D::Error::custom(format!(
                "{s} is outside 1..={MAX_INTERVAL_SECS}"
            ))),
            v => Ok(v),
        }
    }

    pub fn reason<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        Ok(Option::<String>::deserialize(d)?.map(|s| cut(s, MAX_REASON_CHARS)))
    }

    pub fn version<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        Ok(cut(String::deserialize(d)?, MAX_VERSION_CHARS))
    }

    /// `s` cut to `max` characters, the last one replaced by `…` when cut.
    pub fn cut(s: String, max: usize) -> String {
        match s.char_indices().nth(max.saturating_sub(1)) {
            Some((i, _)) if s.chars().count() > max => format!("{}…", &s[..i]),
            _ => s,
        }
    }
}

mod iso_utc {
    use jiff::Timestamp;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ts: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_timestamp(*ts))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_timestamp(&s).map_err(serde::de::Error::custom)
    }
}

mod iso_utc_opt {
    use jiff::Timestamp;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ts: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
        match ts {
            Some(ts) => super::iso_utc::serialize(ts, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(s) => super::parse_timestamp(&s)
                .map(Some)
                .map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
}
