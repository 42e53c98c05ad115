//! Property tests: the parser never panics, and parse(render(b)) == b.

use heartbeat_crds::beat::AppStatus;
use heartbeat_crds::sidecar_contract::MAX_INTERVAL_SECS;
use heartbeat_crds::{Beat, BeatApp, BeatPod, BeatSidecar, Phase};
use jiff::Timestamp;
use proptest::prelude::*;

fn timestamp() -> impl Strategy<Value = Timestamp> {
    // Years 1970..2200 at microsecond resolution: the precision the wire format carries.
    (0i64..7_258_118_400, 0i32..1_000_000)
        .prop_map(|(secs, micros)| Timestamp::new(secs, micros * 1000).expect("in range"))
}

fn text() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._ /\"\\\\-]{0,40}"
}

fn beat() -> impl Strategy<Value = Beat> {
    let counters = proptest::collection::vec(proptest::option::of(any::<u64>()), 6);
    let app = proptest::option::of(
        (
            prop_oneof![
                Just(AppStatus::Ok),
                Just(AppStatus::Failing),
                Just(AppStatus::Unknown)
            ],
            proptest::option::of(timestamp()),
            proptest::option::of(text()),
        )
            .prop_map(|(status, last_signal, reason)| BeatApp {
                status,
                last_signal,
                reason,
            }),
    );
    let pod = proptest::option::of(
        (
            text(),
            text(),
            proptest::option::of(text()),
            proptest::option::of(text()),
        )
            .prop_map(|(namespace, name, uid, node)| BeatPod {
                namespace,
                name,
                uid,
                node,
            }),
    );
    let sidecar = proptest::option::of((text(), timestamp(), any::<u64>()).prop_map(
        |(version, started_at, undelivered)| BeatSidecar {
            version,
            started_at,
            undelivered,
        },
    ));
    let phase = proptest::option::of(prop_oneof![
        Just(Phase::Starting),
        Just(Phase::Running),
        Just(Phase::Stopping)
    ]);
    (
        timestamp(),
        (proptest::option::of(text()), proptest::option::of(text())),
        (
            proptest::option::of(any::<u64>()),
            // What a beat may carry (1..=MAX_INTERVAL_SECS); the parser
            // drops anything else (tested in beat_parse.rs).
            proptest::option::of(1..=MAX_INTERVAL_SECS),
            phase,
        ),
        counters,
        (app, pod, sidecar, proptest::option::of(text())),
    )
        .prop_map(
            |(
                ts,
                (schema, program_id),
                (seq, interval_secs, phase),
                c,
                (app, pod, sidecar, monitor),
            )| Beat {
                schema,
                program_id,
                seq,
                interval_secs,
                phase,
                app,
                n_messages_produced: c[0],
                n_bytes_produced: c[1],
                n_messages_read: c[2],
                n_bytes_read: c[3],
                n_messages_processed: c[4],
                n_bytes_processed: c[5],
                pod,
                monitor,
                sidecar,
                ..Beat::at(ts)
            },
        )
}

proptest! {
    #[test]
    fn parser_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Beat::parse(&bytes);
        let _ = Beat::parse_message(Some(&bytes), Some(&bytes));
    }

    #[test]
    fn parser_never_panics_on_json_like_text(s in r#"\{("[a-z_]{1,12}":("[^"]{0,20}"|-?[0-9]{1,25}|\{\}|\[\]|null|true),?){0,6}\}"#) {
        let _ = Beat::parse(s.as_bytes());
    }

    /// Rule: the lenient parser's fast path (straight into the struct)
    /// judges every value as the field-by-field path does: the same beat,
    /// the same dropped fields, the same error.
    #[test]
    fn the_fast_path_agrees_with_the_field_by_field_parse(
        s in r#"\{("(timestamp|seq|interval_secs|phase|app|sidecar|pod|monitor|n_bytes_read|[a-z_]{1,12})":("2026-11-22T23:14:51Z"|"[^"]{0,20}"|-?[0-9]{1,25}|[0-9]\.5|\{\}|\{"status":"ok"\}|\[\]|null|true),?){0,8}\}"#
    ) {
        prop_assert_eq!(
            Beat::parse_lenient(s.as_bytes()),
            Beat::parse_lenient_by_field(s.as_bytes())
        );
    }

    #[test]
    fn well_formed_beats_take_the_fast_path_to_the_same_beat(b in beat()) {
        let bytes = b.render().expect("render");
        prop_assert_eq!(
            Beat::parse_lenient(&bytes),
            Beat::parse_lenient_by_field(&bytes)
        );
    }

    /// Rule: the operator's borrowed read of a message gives the owned
    /// parse's verdict: the same error, or the same beat (borrowed when it
    /// can be) with the same dropped fields.
    #[test]
    fn the_borrowed_read_agrees_with_the_owned_parse(
        s in r#"\{"timestamp":"2026-11-22T23:14:51Z"(,"(seq|interval_secs|phase|app|sidecar|pod|monitor|program_id|n_bytes_read|[a-z_]{1,12})":("[^"]{0,20}"|"a\\"b"|"[a-z]{300}"|-?[0-9]{1,25}|[0-9]\.5|\{\}|\{"status":"failing","reason":"([a-z]{250,300}|a\\nb|[a-z]{0,20})"\}|\{"namespace":"n","name":"(p\\u0041|p)","uid":"u"\}|\{"version":"[a-z]{0,80}","started_at":"2026-11-22T23:14:51Z","undelivered":0\}|\[\]|null|true)){0,8}\}"#
    ) {
        assert_reads_agree(s.as_bytes());
    }

    #[test]
    fn well_formed_beats_are_read_borrowed_as_they_parse(b in beat()) {
        let bytes = b.render().expect("render");
        assert_reads_agree(&bytes);
    }

    #[test]
    fn parse_of_render_is_identity(b in beat()) {
        let bytes = b.render().expect("render");
        prop_assert_eq!(Beat::parse(&bytes), Ok(b));
    }
}

/// The borrowed read and the owned parse of one message agree.
fn assert_reads_agree(value: &[u8]) {
    let key = b"lab-1_heartbeat";
    let owned = Beat::parse_message(Some(key), Some(value));
    let read = Beat::read_message(Some(key), Some(value));
    match (&owned, &read) {
        (Ok((id, l)), Ok((rid, r))) => {
            assert_eq!(id, rid);
            assert_eq!(
                l.beat.view(),
                r.view(),
                "{}",
                String::from_utf8_lossy(value)
            );
            assert_eq!(l.dropped.as_slice(), r.dropped());
        }
        (Err(a), Err(b)) => assert_eq!(a, b),
        _ => panic!(
            "{}: owned {owned:?}, borrowed {read:?}",
            String::from_utf8_lossy(value)
        ),
    }
}

/// A beat with an escaped, an over-long and a plain text is read: the
/// first two through the owned parse (unescaped, cut), the last borrowed.
#[test]
fn text_that_needs_unescaping_or_cutting_is_read_owned_and_the_rest_borrowed() {
    let long = "x".repeat(300);
    for (value, borrowed) in [
        (
            r#"{"timestamp":"2026-11-22T23:14:51Z","monitor":"a\"b"}"#.to_string(),
            false,
        ),
        (
            format!(
                r#"{{"timestamp":"2026-11-22T23:14:51Z","app":{{"status":"failing","reason":"{long}"}}}}"#
            ),
            false,
        ),
        (
            r#"{"timestamp":"2026-11-22T23:14:51Z","monitor":"ns/m"}"#.to_string(),
            true,
        ),
    ] {
        assert_reads_agree(value.as_bytes());
        let (_, read) =
            Beat::read_message(Some(b"p_heartbeat"), Some(value.as_bytes())).expect("beat");
        assert_eq!(
            matches!(read, heartbeat_crds::ReadBeat::Borrowed(_)),
            borrowed,
            "{value}"
        );
    }
}

/// Rule: a JSON array is no beat on either path (serde reads a struct from
/// an array of its fields in order, so the fast path must not see one).
#[test]
fn an_array_of_a_beats_fields_is_refused_by_both_paths() {
    for value in [
        &br#"["2026-11-22T23:14:51Z"]"#[..],
        br#" ["2026-11-22T23:14:51Z", null, "p", 3]"#,
    ] {
        assert!(Beat::parse_lenient(value).is_err(), "{value:?}");
        assert_eq!(
            Beat::parse_lenient(value),
            Beat::parse_lenient_by_field(value)
        );
    }
}
