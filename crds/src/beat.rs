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
#[serde(bound(deserialize = "S: Text<'de>"))]
pub struct BeatApp<S = String> {
    pub status: AppStatus,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "iso_utc_opt")]
    pub last_signal: Option<Timestamp>,
    /// Why the application is failing, at most [`MAX_REASON_CHARS`].
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "bounded::reason"
    )]
    pub reason: Option<S>,
}

/// The `pod` object of a beat (downward-API identity of the sidecar's pod).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound(deserialize = "S: Text<'de>"))]
pub struct BeatPod<S = String> {
    pub namespace: S,
    pub name: S,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<S>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<S>,
}

/// The `sidecar` object of a beat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound(deserialize = "S: Text<'de>"))]
pub struct BeatSidecar<S = String> {
    /// At most [`MAX_VERSION_CHARS`].
    #[serde(deserialize_with = "bounded::version")]
    pub version: S,
    #[serde(with = "iso_utc")]
    pub started_at: Timestamp,
    /// Beats this sidecar could not deliver since it started.
    pub undelivered: u64,
}

/// One heartbeat. Only `timestamp` is required, so plain OpenMSIStream
/// heartbeats parse; our sidecar fills every field. Unknown fields are
/// ignored, so newer producers stay readable. Its text is owned (`String`,
/// the default) or borrowed from the message (`&str`, [`Beat::parse_view`]:
/// the operator's hot path, no allocation per beat).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound(deserialize = "S: Text<'de>"))]
pub struct Beat<S = String> {
    #[serde(with = "iso_utc")]
    pub timestamp: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<S>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program_id: Option<S>,
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
    pub app: Option<BeatApp<S>>,
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
    pub pod: Option<BeatPod<S>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor: Option<S>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sidecar: Option<BeatSidecar<S>>,
}

/// A beat's text as parsed: owned, or borrowed from the message. Bounded
/// on the way in: an owned text longer than its bound is cut (with a
/// trailing `…`); a borrowed one cannot be, so it is refused, and the
/// owned parse (which cuts) takes that beat.
pub trait Text<'de>: Deserialize<'de> + AsRef<str> {
    /// `self` within `max` characters, or why not.
    fn bounded(self, max: usize) -> Result<Self, String>;
}

impl<'de> Text<'de> for String {
    fn bounded(self, max: usize) -> Result<Self, String> {
        Ok(bounded::cut(self, max))
    }
}

impl<'de: 'a, 'a> Text<'de> for &'a str {
    fn bounded(self, max: usize) -> Result<Self, String> {
        match self.chars().nth(max) {
            None => Ok(self),
            Some(_) => Err(format!("longer than {max} characters")),
        }
    }
}

impl Beat {
    /// This beat's text borrowed: what a borrowed parse of it gives.
    pub fn view(&self) -> Beat<&str> {
        Beat {
            timestamp: self.timestamp,
            schema: self.schema.as_deref(),
            program_id: self.program_id.as_deref(),
            seq: self.seq,
            interval_secs: self.interval_secs,
            phase: self.phase,
            app: self.app.as_ref().map(|a| BeatApp {
                status: a.status,
                last_signal: a.last_signal,
                reason: a.reason.as_deref(),
            }),
            n_messages_produced: self.n_messages_produced,
            n_bytes_produced: self.n_bytes_produced,
            n_messages_read: self.n_messages_read,
            n_bytes_read: self.n_bytes_read,
            n_messages_processed: self.n_messages_processed,
            n_bytes_processed: self.n_bytes_processed,
            pod: self.pod.as_ref().map(|p| BeatPod {
                namespace: p.namespace.as_str(),
                name: p.name.as_str(),
                uid: p.uid.as_deref(),
                node: p.node.as_deref(),
            }),
            monitor: self.monitor.as_deref(),
            sidecar: self.sidecar.as_ref().map(|s| BeatSidecar {
                version: s.version.as_str(),
                started_at: s.started_at,
                undelivered: s.undelivered,
            }),
        }
    }

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
        let fields = Beat::parse_object(value)?;
        read_fields(&fields).map_err(|e| Error::WrongFieldType {
            field: e.path().to_string(),
            detail: without_position(e.into_inner()),
        })
    }

    /// Parses a beat value as a sign of life: only a value that is not a
    /// JSON object, or has no readable `timestamp`, is rejected. A known
    /// field of the wrong type (a foreign producer writing a float counter)
    /// is dropped and reported, and the rest of the beat kept.
    pub fn parse_lenient(value: &[u8]) -> Result<LenientBeat, Error> {
        if let Some(beat) = Beat::parse_straight(value) {
            return Ok(LenientBeat {
                beat,
                dropped: Vec::new(),
            });
        }
        Beat::parse_lenient_by_field(value)
    }

    /// The fast path, straight into the struct (no JSON tree, unknown
    /// fields skipped): what every well-formed beat takes. Anything it
    /// refuses (a wrong type, a duplicate field, no timestamp, not JSON)
    /// is judged field by field by [`Beat::parse_lenient`], so the verdict
    /// is the same. Objects only: serde also reads a struct from a JSON
    /// array, which the field-by-field path refuses as not an object.
    fn parse_straight<'a, S: Text<'a>>(value: &'a [u8]) -> Option<Beat<S>> {
        if value.len() > MAX_VALUE_BYTES {
            return None;
        }
        let text = std::str::from_utf8(value).ok()?;
        if !text.trim_start().starts_with('{') {
            return None;
        }
        serde_json::from_str::<Beat<S>>(text).ok()
    }

    /// A beat borrowed from `value`, when it is well-formed and its text
    /// needs neither unescaping nor cutting: then it is exactly what
    /// [`Beat::parse_lenient`] gives, [`Beat::view`]ed. `None`: take the
    /// lenient parse (which also judges what is wrong).
    pub fn parse_view(value: &[u8]) -> Option<Beat<&str>> {
        Beat::parse_straight(value)
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
            match read_fields(&object) {
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
                            detail: without_position(e.into_inner()),
                        });
                    };
                    object.remove(&field);
                    dropped.push(DroppedField {
                        field,
                        detail: without_position(e.into_inner()),
                    });
                }
            }
        }
    }

    /// The checks both parsers share: size, UTF-8, a JSON object with a
    /// readable `timestamp`. Its fields are kept as their JSON text, only
    /// checked to be JSON, as the fast path skips an unknown field: a
    /// number no float holds (`1e999`) under a key no one reads refuses
    /// neither path (serde_json's tree would refuse the whole value). A
    /// top-level field given twice keeps its last value; inside a known
    /// field, a key given twice makes that field wrong (as on the fast path).
    fn parse_object(value: &[u8]) -> Result<Fields, Error> {
        if value.len() > MAX_VALUE_BYTES {
            return Err(Error::TooLarge {
                size: value.len(),
                limit: MAX_VALUE_BYTES,
            });
        }
        let text = std::str::from_utf8(value).map_err(|_| Error::NotUtf8 { part: "value" })?;
        if !text.trim_start().starts_with('{') {
            // Still told apart: not JSON at all, or JSON of another kind.
            serde_json::from_str::<serde::de::IgnoredAny>(text)
                .map_err(|e| Error::NotJson(e.to_string()))?;
            return Err(Error::NotObject);
        }
        let object: Fields =
            serde_json::from_str(text).map_err(|e| Error::NotJson(e.to_string()))?;
        match object.get("timestamp") {
            None => return Err(Error::MissingTimestamp),
            Some(raw) => match serde_json::from_str::<String>(raw.get()) {
                Ok(s) => {
                    parse_timestamp(&s)?;
                }
                Err(_) => {
                    return Err(Error::WrongFieldType {
                        field: "timestamp".into(),
                        detail: "expected an ISO-8601 string".into(),
                    });
                }
            },
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

    /// Reads a whole Kafka message as the operator does: the verdict of
    /// [`Beat::parse_message`], with the program id and (when it can be)
    /// the beat borrowed from the message.
    pub fn read_message<'a>(
        key: Option<&'a [u8]>,
        value: Option<&'a [u8]>,
    ) -> Result<(&'a str, ReadBeat<'a>), Error> {
        let program_id = program_id_from_key(key.unwrap_or_default())?;
        let value = value.unwrap_or_default();
        let beat = match Beat::parse_view(value) {
            Some(b) => ReadBeat::Borrowed(b),
            None => ReadBeat::Lenient(Beat::parse_lenient(value)?),
        };
        Ok((program_id, beat))
    }

    /// Renders the beat as the JSON value to produce.
    pub fn render(&self) -> Result<Vec<u8>, Error> {
        serde_json::to_vec(self).map_err(|e| Error::NotJson(e.to_string()))
    }
}

/// A message's beat as [`Beat::read_message`] read it: borrowed from the
/// message, or (a beat the lenient parse had to unescape, cut or mend)
/// owned, with the fields it dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadBeat<'a> {
    Borrowed(Beat<&'a str>),
    Lenient(LenientBeat),
}

impl ReadBeat<'_> {
    /// The beat, borrowed either way.
    pub fn view(&self) -> Beat<&str> {
        match self {
            ReadBeat::Borrowed(b) => b.clone(),
            ReadBeat::Lenient(l) => l.beat.view(),
        }
    }

    /// The known fields dropped for a wrong type (none when borrowed).
    pub fn dropped(&self) -> &[DroppedField] {
        match self {
            ReadBeat::Borrowed(_) => &[],
            ReadBeat::Lenient(l) => &l.dropped,
        }
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

    use super::{MAX_INTERVAL_SECS, MAX_REASON_CHARS, MAX_VERSION_CHARS, Text};

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

    pub fn reason<'de, D: Deserializer<'de>, S: Text<'de>>(d: D) -> Result<Option<S>, D::Error> {
        Option::<S>::deserialize(d)?
            .map(|s| s.bounded(MAX_REASON_CHARS).map_err(D::Error::custom))
            .transpose()
    }

    pub fn version<'de, D: Deserializer<'de>, S: Text<'de>>(d: D) -> Result<S, D::Error> {
        S::deserialize(d)?
            .bounded(MAX_VERSION_CHARS)
            .map_err(D::Error::custom)
    }

    /// `s` cut to `max` characters, the last one replaced by `…` when cut.
    pub fn cut(s: String, max: usize) -> String {
        match s.char_indices().nth(max.saturating_sub(1)) {
            Some((i, _)) if s.chars().count() > max => format!("{}…", &s[..i]),
            _ => s,
        }
    }
}

/// An ISO timestamp read in place (no `String` per timestamp).
struct Iso(Timestamp);

impl<'de> Deserialize<'de> for Iso {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Iso, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = Iso;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Iso, E> {
                parse_timestamp(s).map(Iso).map_err(E::custom)
            }
        }
        d.deserialize_str(Visit)
    }
}

mod iso_utc {
    use jiff::Timestamp;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ts: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_timestamp(*ts))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        super::Iso::deserialize(d).map(|i| i.0)
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
        Ok(Option::<super::Iso>::deserialize(d)?.map(|i| i.0))
    }
}

/// A beat value's top-level fields as their JSON text, in key order.
type Fields = std::collections::BTreeMap<String, Box<serde_json::value::RawValue>>;

/// serde_json's message without its "at line 1 column N": the position
/// is in the re-joined text of [`read_fields`], not in what was sent.
fn without_position(e: serde_json::Error) -> String {
    let text = e.to_string();
    match (e.line(), text.rfind(" at line ")) {
        (1.., Some(at)) => text[..at].to_string(),
        _ => text,
    }
}

/// A beat from `fields`, read as the fast path reads a value (unknown
/// fields skipped, known ones typed); an error names the field at fault.
fn read_fields(fields: &Fields) -> Result<Beat, serde_path_to_error::Error<serde_json::Error>> {
    // The fields' own text, joined again: the same bytes a straight read sees.
    let mut text = String::from("{");
    for (i, (key, raw)) in fields.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        // A key re-encoded (escapes included); the value as it came.
        text.push_str(&serde_json::Value::from(key.as_str()).to_string());
        text.push(':');
        text.push_str(raw.get());
    }
    text.push('}');
    serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_str(&text))
}
