//! The membership table fed parsed beats: whatever a topic carries, the
//! operator's judgement (record, evaluate, deadlines, status rows) must not
//! panic. A beat once did: `interval_secs: 4294967295` for a monitor
//! tolerating 100 missed beats overflowed the deadline arithmetic and
//! crash-looped every replica (seed `overflow-interval`).
//!
//! The input is text, one step per line, so seeds are readable:
//! - the first line: `interval missed grace flags` (clamped to the CRD's
//!   bounds; flags: `b` judges by the beat's clock, `x` tracks programs
//!   outside the cluster, `e` expects program `lab-1`);
//! - `+N`: the clock moves N seconds on (broker time with it);
//! - `~N`: the next beats' broker time is N seconds off the clock;
//! - `=`: evaluate, ask for the next deadline and render the status rows;
//! - `!`: the operator goes blind; `^`: it sees again;
//! - anything else: a message, `key<TAB>value` (no tab: a value, no key).
#![no_main]

use heartbeat_crds::Beat;
use heartbeat_crds::monitor::HeartbeatMonitorSpec;
use heartbeat_operator::controller::status::rows;
use heartbeat_operator::membership::table::{Incoming, Limits, MonitorId, Settings, Table};
use heartbeat_operator::membership::{Blind, View};
use jiff::{SignedDuration, Timestamp};
use libfuzzer_sys::fuzz_target;

const NS: &str = "data";

fn spec(header: &str) -> HeartbeatMonitorSpec {
    let mut nums = header
        .split_whitespace()
        .map(|w| w.parse::<i64>().unwrap_or(0));
    let flags = header.split_whitespace().nth(3).unwrap_or("");
    let interval = nums.next().unwrap_or(10).clamp(1, 86_400);
    let missed = nums.next().unwrap_or(3).clamp(1, 1000);
    let grace = nums.next().unwrap_or(5).clamp(0, 86_400);
    let mut v = serde_json::json!({
        "topic": "hb", "intervalSeconds": interval, "missedBeatsTolerated": missed,
        "graceSeconds": grace, "brokerSecretRef": {"name": "kafka"},
        "selector": {"matchLabels": {"app": "x"}},
        "clock": {"source": if flags.contains('b') { "Beat" } else { "Broker" }},
    });
    if flags.contains('x') || flags.contains('e') {
        let expected: Vec<&str> = if flags.contains('e') {
            vec!["lab-1"]
        } else {
            vec![]
        };
        v["external"] = serde_json::json!({ "expectedPrograms": expected });
    }
    serde_json::from_value(v).expect("a spec within the CRD's bounds")
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let spec = spec(lines.next().unwrap_or(""));
    let limits = Limits {
        history: SignedDuration::from_hours(24),
        seen_retention: SignedDuration::from_secs(600),
        max_seen: 16,
        sidecar_version: "0.1.0".into(),
    };
    let start = Timestamp::from_second(1_800_000_000).expect("a valid instant");
    let id = MonitorId {
        namespace: NS.into(),
        name: "ingest".into(),
    };
    let mut table = Table::new(id, Settings::from_spec(&spec, &limits), start);
    let sighted = |since| View::Sighted {
        since,
        until: Timestamp::MAX,
    };
    table.set_view(sighted(start));
    let mut now = start;
    let mut skew = SignedDuration::ZERO;
    for line in lines.take(256) {
        if let Some(n) = line.strip_prefix('+') {
            let secs = n
                .trim()
                .parse::<i64>()
                .unwrap_or(0)
                .clamp(0, 10 * 365 * 86_400);
            now = now
                .checked_add(SignedDuration::from_secs(secs))
                .unwrap_or(now);
        } else if let Some(n) = line.strip_prefix('~') {
            skew = SignedDuration::from_secs(n.trim().parse::<i64>().unwrap_or(0));
        } else if line == "=" {
            table.evaluate(now, None);
            let _ = table.next_deadline(now);
            let _ = rows(&mut table, now);
        } else if line == "!" {
            table.set_view(View::Blind(Blind::Unreadable { why: "fuzz".into() }));
        } else if line == "^" {
            table.set_view(sighted(now));
        } else {
            let (key, value) = match line.split_once('\t') {
                Some((k, v)) => (Some(k.as_bytes()), v.as_bytes()),
                None => (None, line.as_bytes()),
            };
            let Ok((program_id, beat)) = Beat::read_message(key, Some(value)) else {
                continue;
            };
            let broker_time = now.checked_add(skew).ok();
            let incoming = Incoming {
                program_id,
                beat: &beat.view(),
                broker_time,
                position: None,
            };
            table.record(&incoming, now);
        }
    }
    table.evaluate(now, None);
    let _ = table.next_deadline(now);
    let _ = rows(&mut table, now);
});
