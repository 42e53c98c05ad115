//! The beat parser on OpenMSIStream's values, our own beats, and every rejection class.

use heartbeat_crds::beat::{self, AppStatus, MAX_VALUE_BYTES};
use heartbeat_crds::{Beat, BeatApp, BeatPod, BeatSidecar, Error, Phase};
use jiff::Timestamp;

fn ts(s: &str) -> Timestamp {
    s.parse().expect("test timestamp")
}

#[test]
fn openmsistream_1_8_beat_with_utc_offset_parses_with_counters() {
    // Exactly what OpenMSIStream 1.8's heartbeat producer writes:
    // json.dumps({"timestamp": datetime.now(timezone.utc).isoformat(), ...counters}).
    let value = br#"{"timestamp": "2026-11-22T23:14:51.123456+00:00", "n_messages_produced": 12, "n_bytes_produced": 4096}"#;
    let b = Beat::parse(value).expect("valid OpenMSIStream beat");
    assert_eq!(b.timestamp, ts("2026-11-22T23:14:51.123456Z"));
    assert_eq!(b.n_messages_produced, Some(12));
    assert_eq!(b.n_bytes_produced, Some(4096));
    assert_eq!(b.schema, None);
    assert_eq!(b.phase, None);
}

#[test]
fn naive_isoformat_timestamp_is_read_as_utc() {
    let b = Beat::parse(br#"{"timestamp": "2026-11-22T23:14:51.123456"}"#).expect("naive beat");
    assert_eq!(b.timestamp, ts("2026-11-22T23:14:51.123456Z"));
}

#[test]
fn naive_str_datetime_with_space_separator_is_read_as_utc() {
    // Older OpenMSIStream HeartbeatProducible used str(datetime.now()).
    let b = Beat::parse(br#"{"timestamp": "2026-11-22 23:14:51.5"}"#).expect("space beat");
    assert_eq!(b.timestamp, ts("2026-11-22T23:14:51.5Z"));
}

#[test]
fn non_utc_offset_is_converted_to_utc() {
    let b = Beat::parse(br#"{"timestamp": "2026-11-23T01:14:51+02:00"}"#).expect("offset beat");
    assert_eq!(b.timestamp, ts("2026-11-22T23:14:51Z"));
}

#[test]
fn all_openmsistream_counters_are_kept() {
    let value = br#"{"timestamp":"2026-11-22T23:14:51+00:00","n_messages_produced":1,"n_bytes_produced":2,"n_messages_read":3,"n_bytes_read":4,"n_messages_processed":5,"n_bytes_processed":6}"#;
    let b = Beat::parse(value).expect("counters");
    assert_eq!(
        [
            b.n_messages_produced,
            b.n_bytes_produced,
            b.n_messages_read,
            b.n_bytes_read,
            b.n_messages_processed,
            b.n_bytes_processed
        ],
        [Some(1), Some(2), Some(3), Some(4), Some(5), Some(6)]
    );
}

#[test]
fn unknown_fields_are_ignored() {
    let b = Beat::parse(br#"{"timestamp":"2026-11-22T23:14:51Z","future_field":{"x":1}}"#);
    assert!(b.is_ok(), "{b:?}");
}

/// Rule (found by the beat_parser fuzz target): an unknown field is only
/// checked to be JSON, on every path: a number no float holds under a key
/// no one reads refuses neither parser, and the field-by-field path (taken
/// when a known field is wrong) keeps the beat as the fast path would. A
/// number out of range in a known field is that field's fault alone.
#[test]
fn a_number_out_of_range_in_an_unknown_field_refuses_nothing() {
    let huge = br#"{"timestamp":"2026-11-22T23:14:51.123Z","phas":100e499009,"x":{"y":[1e999]}}"#;
    let fast = Beat::parse_lenient(huge).expect("a sign of life");
    assert_eq!(Ok(&fast), Beat::parse_lenient_by_field(huge).as_ref());
    assert!(fast.dropped.is_empty());
    assert_eq!(Beat::parse(huge).as_ref(), Ok(&fast.beat));

    let wrong =
        br#"{"timestamp":"2026-11-22T23:14:51Z","seq":"x","phas":1e999,"n_bytes_read":1e999}"#;
    let b = Beat::parse_lenient(wrong).expect("a sign of life");
    let mut fields: Vec<_> = b.dropped.iter().map(|d| d.field.as_str()).collect();
    fields.sort();
    assert_eq!(fields, ["n_bytes_read", "seq"]);
    assert_eq!(b.beat.timestamp, ts("2026-11-22T23:14:51Z"));
}

/// Rule: nesting is no reason to refuse a value, and costs no recursion:
/// an array 5,000 deep is refused as not an object, and the same depth
/// under an unknown key is skipped (the fast path and the field-by-field
/// path alike) as any unknown field is.
#[test]
fn a_value_nested_5000_deep_is_judged_by_its_shape() {
    let deep = |d: usize| format!("{}{}", "[".repeat(d), "]".repeat(d));
    assert!(matches!(
        Beat::parse_lenient(deep(5000).as_bytes()),
        Err(Error::NotObject)
    ));
    let under = format!(
        r#"{{"timestamp":"2026-11-22T23:14:51Z","x":{}}}"#,
        deep(5000)
    );
    let b = Beat::parse_lenient(under.as_bytes()).expect("a sign of life");
    assert_eq!(
        Ok(&b),
        Beat::parse_lenient_by_field(under.as_bytes()).as_ref()
    );
    assert!(b.dropped.is_empty());
}

fn our_beat() -> Beat {
    Beat {
        schema: Some(beat::SCHEMA.into()),
        program_id: Some("data.ingest-7d9f-abc".into()),
        seq: Some(42),
        interval_secs: Some(10),
        phase: Some(Phase::Running),
        app: Some(BeatApp {
            status: AppStatus::Ok,
            last_signal: Some(ts("2026-11-22T23:14:49Z")),
            reason: None,
        }),
        n_messages_processed: Some(1200),
        n_bytes_processed: Some(48000),
        pod: Some(BeatPod {
            namespace: "data".into(),
            name: "ingest-7d9f-abc".into(),
            uid: Some("0b6c".into()),
            node: Some("node-1".into()),
        }),
        monitor: Some("data/ingest".into()),
        sidecar: Some(BeatSidecar {
            version: "0.1.0".into(),
            started_at: ts("2026-11-22T23:00:00Z"),
            undelivered: 0,
        }),
        ..Beat::at(ts("2026-11-22T23:14:51.123Z"))
    }
}

#[test]
fn our_beat_renders_openmsistream_style_timestamp_and_round_trips() {
    let b = our_beat();
    let bytes = b.render().expect("render");
    let text = String::from_utf8(bytes.clone()).expect("utf8");
    assert!(
        text.contains(r#""timestamp":"2026-11-22T23:14:51.123000+00:00""#),
        "{text}"
    );
    assert!(
        text.contains(r#""schema":"heartbeat.dev/beat/v1""#),
        "{text}"
    );
    assert!(text.contains(r#""phase":"running""#), "{text}");
    assert_eq!(Beat::parse(&bytes), Ok(b));
}

/// Found by fuzzing (fuzz/, target beat_parser): a foreign beat dated before
/// year 0 parsed, but rendered as `-001-...`, which does not parse.
#[test]
fn a_beat_of_any_year_renders_to_a_value_that_parses_back() {
    for (value, rendered) in [
        (
            "-000001-01-01T00:00:00Z",
            "-000001-01-01T00:00:00.000000+00:00",
        ),
        (
            "-009999-01-02T01:59:59Z",
            "-009999-01-02T01:59:59.000000+00:00",
        ),
        ("0000-06-01T12:00:00Z", "0000-06-01T12:00:00.000000+00:00"),
        ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00.000000+00:00"),
        (
            "9999-12-30T21:59:59.999999999Z",
            "9999-12-30T21:59:59.999999+00:00",
        ),
    ] {
        let ts = beat::parse_timestamp(value).expect(value);
        assert_eq!(beat::format_timestamp(ts), rendered);
        let b = Beat::at(ts);
        let again = Beat::parse(&b.render().expect("render")).expect(rendered);
        assert_eq!(beat::format_timestamp(again.timestamp), rendered, "{value}");
    }
}

#[test]
fn parse_message_returns_program_id_from_key() {
    let (id, b) = Beat::parse_message(
        Some(b"data.ingest_heartbeat"),
        Some(br#"{"timestamp":"2026-11-22T23:14:51Z"}"#),
    )
    .expect("message");
    assert_eq!(id, "data.ingest");
    assert_eq!(b.beat.timestamp, ts("2026-11-22T23:14:51Z"));
    assert!(b.dropped.is_empty());
}

#[test]
fn lenient_parse_drops_a_float_counter_and_keeps_the_beat() {
    let b = Beat::parse_lenient(
        br#"{"timestamp":"2026-11-22 23:14:51.5","n_messages_read":1.5,"n_bytes_read":10,"phase":"running"}"#,
    )
    .expect("a sign of life");
    assert_eq!(b.beat.timestamp, ts("2026-11-22T23:14:51.5Z"));
    assert_eq!(b.beat.n_messages_read, None);
    assert_eq!(b.beat.n_bytes_read, Some(10));
    assert_eq!(b.beat.phase, Some(Phase::Running));
    assert_eq!(b.dropped.len(), 1);
    assert_eq!(b.dropped[0].field, "n_messages_read");
    // No position: it would count in the parser's own text, not the message's.
    assert!(
        b.dropped[0].detail.contains("invalid type") && !b.dropped[0].detail.contains("line"),
        "{}",
        b.dropped[0].detail
    );
}

#[test]
fn lenient_parse_drops_every_malformed_field_including_nested_ones() {
    let b = Beat::parse_lenient(
        br#"{"timestamp":"2026-11-22T23:14:51Z","seq":"x","app":{"status":"weird"},"pod":[],"monitor":"d/m"}"#,
    )
    .expect("a sign of life");
    let mut fields: Vec<_> = b.dropped.iter().map(|d| d.field.as_str()).collect();
    fields.sort();
    assert_eq!(fields, ["app", "pod", "seq"]);
    assert_eq!(b.beat.monitor.as_deref(), Some("d/m"));
    assert!(Beat::parse(br#"{"timestamp":"2026-11-22T23:14:51Z","seq":"x"}"#).is_err());
}

/// Rule: an `interval_secs` outside the CRD's 1..=86400 is no interval at
/// all: the lenient parser drops the field (counted), the strict one refuses
/// the beat, and the rest of the beat still counts.
#[test]
fn an_interval_beyond_the_crd_bound_is_dropped_and_the_beat_kept() {
    for bad in ["4294967295", "86401", "0", "-1", "1e30"] {
        let value = format!(
            r#"{{"timestamp":"2026-11-22T23:14:51Z","interval_secs":{bad},"phase":"running"}}"#
        );
        let b = Beat::parse_lenient(value.as_bytes()).expect("a sign of life");
        assert_eq!(b.beat.interval_secs, None, "{bad}");
        assert_eq!(b.beat.phase, Some(Phase::Running), "{bad}");
        let fields: Vec<_> = b.dropped.iter().map(|d| d.field.as_str()).collect();
        assert_eq!(fields, ["interval_secs"], "{bad}");
        assert!(Beat::parse(value.as_bytes()).is_err(), "{bad}");
    }
    let at_bound =
        Beat::parse_lenient(br#"{"timestamp":"2026-11-22T23:14:51Z","interval_secs":86400}"#)
            .expect("a beat");
    assert_eq!(at_bound.beat.interval_secs, Some(86_400));
    assert!(at_bound.dropped.is_empty());
}

/// Rule: strings of a beat that reach status and Events are cut to a
/// documented length (`app.reason` to 256 characters, `sidecar.version`
/// to 64), on a character boundary.
#[test]
fn long_reasons_and_versions_are_cut_to_their_documented_length() {
    let long = "é".repeat(10_000);
    let value = format!(
        r#"{{"timestamp":"2026-11-22T23:14:51Z","app":{{"status":"failing","reason":"{long}"}},"sidecar":{{"version":"{long}","started_at":"2026-11-22T23:00:00Z","undelivered":0}}}}"#
    );
    let b = Beat::parse(value.as_bytes()).expect("a beat");
    let reason = b.app.and_then(|a| a.reason).expect("a reason");
    assert_eq!(reason.chars().count(), beat::MAX_REASON_CHARS);
    assert!(reason.ends_with('…'), "{reason}");
    let version = b.sidecar.expect("sidecar").version;
    assert_eq!(version.chars().count(), beat::MAX_VERSION_CHARS);
    let short = Beat::parse(
        br#"{"timestamp":"2026-11-22T23:14:51Z","app":{"status":"failing","reason":"disk full"}}"#,
    )
    .expect("a beat");
    assert_eq!(
        short.app.and_then(|a| a.reason).as_deref(),
        Some("disk full")
    );
}

#[test]
fn lenient_parse_still_rejects_what_is_no_sign_of_life() {
    for bad in [
        &br#"{"n_messages_read":1}"#[..],
        br#"{"timestamp":12}"#,
        br#"{"timestamp":"yesterday"}"#,
        br#"[1,2]"#,
        b"\xff\xfe",
        b"not json",
    ] {
        assert!(
            Beat::parse_lenient(bad).is_err(),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn rejects_value_over_64_kib() {
    let mut v = br#"{"timestamp":"2026-11-22T23:14:51Z","pad":""#.to_vec();
    v.resize(MAX_VALUE_BYTES + 1 - 2, b'x');
    v.extend_from_slice(b"\"}");
    assert_eq!(v.len(), MAX_VALUE_BYTES + 1);
    assert_eq!(
        Beat::parse(&v),
        Err(Error::TooLarge {
            size: MAX_VALUE_BYTES + 1,
            limit: MAX_VALUE_BYTES
        })
    );
}

#[test]
fn rejects_non_utf8() {
    assert_eq!(
        Beat::parse(&[b'{', 0xff, b'}']),
        Err(Error::NotUtf8 { part: "value" })
    );
}

#[test]
fn rejects_non_json() {
    assert!(matches!(Beat::parse(b"alive"), Err(Error::NotJson(_))));
    assert!(matches!(Beat::parse(b""), Err(Error::NotJson(_))));
}

#[test]
fn rejects_json_that_is_not_an_object() {
    assert_eq!(Beat::parse(b"[1,2]"), Err(Error::NotObject));
    assert_eq!(
        Beat::parse(br#""2026-11-22T23:14:51Z""#),
        Err(Error::NotObject)
    );
}

#[test]
fn rejects_missing_timestamp() {
    assert_eq!(
        Beat::parse(br#"{"n_messages_produced":1}"#),
        Err(Error::MissingTimestamp)
    );
}

#[test]
fn rejects_unparseable_timestamp() {
    assert_eq!(
        Beat::parse(br#"{"timestamp":"yesterday"}"#),
        Err(Error::BadTimestamp("yesterday".into()))
    );
    assert!(matches!(
        Beat::parse(br#"{"timestamp":"2026-13-45T99:00:00"}"#),
        Err(Error::BadTimestamp(_))
    ));
}

#[test]
fn rejects_non_string_timestamp() {
    assert!(matches!(
        Beat::parse(br#"{"timestamp":1764000000}"#),
        Err(Error::WrongFieldType { field, .. }) if field == "timestamp"
    ));
}

#[test]
fn rejects_wrong_field_types_naming_the_field() {
    let cases: [(&[u8], &str); 5] = [
        (br#"{"timestamp":"2026-11-22T23:14:51Z","seq":"42"}"#, "seq"),
        (
            br#"{"timestamp":"2026-11-22T23:14:51Z","n_bytes_read":-1}"#,
            "n_bytes_read",
        ),
        (
            br#"{"timestamp":"2026-11-22T23:14:51Z","phase":"dancing"}"#,
            "phase",
        ),
        (
            br#"{"timestamp":"2026-11-22T23:14:51Z","app":{"status":7}}"#,
            "app.status",
        ),
        (br#"{"timestamp":"2026-11-22T23:14:51Z","pod":"x"}"#, "pod"),
    ];
    for (value, want) in cases {
        match Beat::parse(value) {
            Err(Error::WrongFieldType { field, .. }) => assert_eq!(field, want),
            other => panic!("{}: got {other:?}", String::from_utf8_lossy(value)),
        }
    }
}

#[test]
fn rejects_key_without_heartbeat_suffix() {
    assert!(matches!(
        Beat::parse_message(
            Some(b"data.ingest"),
            Some(br#"{"timestamp":"2026-11-22T23:14:51Z"}"#)
        ),
        Err(Error::BadKey(_))
    ));
    assert!(matches!(
        Beat::parse_message(None, Some(br#"{"timestamp":"2026-11-22T23:14:51Z"}"#)),
        Err(Error::BadKey(_))
    ));
}

#[test]
fn every_rejection_has_a_distinct_metric_label() {
    let errors = [
        Error::TooLarge { size: 1, limit: 0 },
        Error::NotUtf8 { part: "value" },
        Error::NotJson(String::new()),
        Error::NotObject,
        Error::MissingTimestamp,
        Error::BadTimestamp(String::new()),
        Error::WrongFieldType {
            field: String::new(),
            detail: String::new(),
        },
        Error::BadKey(String::new()),
        Error::InvalidTopic(String::new()),
        Error::InvalidAppHealth {
            value: String::new(),
            problem: String::new(),
        },
    ];
    let labels: std::collections::BTreeSet<_> = errors.iter().map(Error::metric_label).collect();
    assert_eq!(labels.len(), errors.len());
}
