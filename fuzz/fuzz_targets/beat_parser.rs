//! The beat parser on arbitrary Kafka messages: the operator reads every
//! message on a monitored topic, from any producer, so no value or key may
//! panic it. Where they hold, the parsers' promises are checked too: the
//! lenient parser accepts whatever the strict one does and drops nothing
//! then, its fast path agrees with its field-by-field one, the operator's
//! borrowed read agrees with the owned parse, and a beat
//! either parser returns renders to a value both read back as the same
//! beat (timestamps to the microsecond, the precision rendered).
#![no_main]

use heartbeat_crds::beat::{Beat, MAX_VALUE_BYTES, format_timestamp, parse_timestamp};
use heartbeat_crds::program_id::{key_for, program_id_from_key};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let strict = Beat::parse(data);
    let lenient = Beat::parse_lenient(data);
    if let Ok(beat) = &strict {
        let l = lenient
            .as_ref()
            .expect("the lenient parser refused a beat the strict one accepted");
        assert_eq!(&l.beat, beat, "the parsers disagree on an accepted beat");
        assert!(
            l.dropped.is_empty(),
            "dropped {:?} of a strict beat",
            l.dropped
        );
    }
    if let Ok(l) = &lenient {
        round_trip(&l.beat);
    }
    // The fast path gives the field-by-field path's verdict.
    assert_eq!(
        lenient,
        Beat::parse_lenient_by_field(data),
        "the lenient parser's two paths disagree"
    );

    // A message as the consumer gets it: the first byte says where the key ends.
    if let Some((&split, rest)) = data.split_first() {
        let (key, value) = rest.split_at(usize::from(split).min(rest.len()));
        let owned = Beat::parse_message(Some(key), Some(value));
        if let Ok((id, beat)) = &owned {
            assert_eq!(
                program_id_from_key(key_for(id).as_bytes()).ok(),
                Some(id.as_str())
            );
            round_trip(&beat.beat);
        }
        // The operator's borrowed read gives the owned parse's verdict.
        match (&owned, Beat::read_message(Some(key), Some(value))) {
            (Ok((id, l)), Ok((rid, r))) => {
                assert_eq!(id, rid);
                assert_eq!(l.beat.view(), r.view(), "the borrowed read disagrees");
                assert_eq!(l.dropped.as_slice(), r.dropped());
            }
            (Err(a), Err(b)) => assert_eq!(a, &b),
            (a, b) => panic!("the borrowed read disagrees: {a:?} / {b:?}"),
        }
    }

    // Timestamps alone: what parses formats to what parses to the same instant.
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(ts) = parse_timestamp(text)
    {
        let formatted = format_timestamp(ts);
        let again = parse_timestamp(&formatted)
            .unwrap_or_else(|e| panic!("{formatted:?} (from {text:?}) does not parse: {e}"));
        assert_eq!(format_timestamp(again), formatted);
    }
});

/// A parsed beat renders to a value the strict parser reads back equal,
/// except for timestamps below the microsecond, which rendering drops.
fn round_trip(beat: &Beat) {
    let rendered = beat.render().expect("a parsed beat renders");
    // Rendering writes timestamps out in full, so a value near the limit
    // may render past it; that is not a parser bug.
    if rendered.len() > MAX_VALUE_BYTES {
        return;
    }
    let mut again = Beat::parse(&rendered).unwrap_or_else(|e| {
        panic!(
            "rendered beat {:?} does not parse: {e}",
            String::from_utf8_lossy(&rendered)
        )
    });
    assert_eq!(again.render().ok(), Some(rendered), "render is not stable");
    // Same to the microsecond (the renders above are equal), so put the
    // exact instants back and compare everything else.
    again.timestamp = beat.timestamp;
    if let (Some(a), Some(b)) = (again.app.as_mut(), beat.app.as_ref()) {
        a.last_signal = b.last_signal;
    }
    if let (Some(a), Some(b)) = (again.sidecar.as_mut(), beat.sidecar.as_ref()) {
        a.started_at = b.started_at;
    }
    assert_eq!(&again, beat, "the rendered beat parses to another beat");
}
