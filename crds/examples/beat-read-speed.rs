//! How long the operator's read of one beat takes, next to two floors on
//! the same value: serde_json reading it into a struct that keeps only
//! the timestamp (the least any serde read of a beat does), and scanning
//! it without keeping anything (the least any read that checks the value
//! is JSON does). On a beat like the ingest bench's
//! (e2e/bench/lib/beat-history.py), in one run:
//!
//!     cargo run --release -p heartbeat-crds --example beat-read-speed
//!
//! Issue 20's ingest figures (e2e/README.md) cite it: the time per beat
//! the operator can save by parsing less is the gap between the two.

use std::hint::black_box;
use std::time::Instant;

use heartbeat_crds::Beat;
use serde::Deserialize;

/// A beat read for its timestamp alone, every other field skipped.
#[derive(Deserialize)]
struct TimestampOnly<'a> {
    #[serde(borrow)]
    #[allow(dead_code)]
    timestamp: &'a str,
}

const KEY: &[u8] = b"program-0002_heartbeat";
const VALUE: &[u8] = br#"{"timestamp": "2026-12-07T05:22:06.554552+00:00", "schema": "heartbeat.dev/v1", "program_id": "program-0002", "seq": 0, "interval_secs": 10, "phase": "running", "app": {"status": "ok"}, "n_messages_read": 2, "n_messages_processed": 2, "n_bytes_read": 2048, "n_bytes_processed": 2048, "n_messages_produced": 2, "n_bytes_produced": 1024, "recent_files": ["/data/incoming/2.dat"], "host": "host-002", "sidecar": {"version": "0.1.0", "started_at": "2026-12-07T03:22:06.554552+00:00", "undelivered": 0}}"#;
const ROUNDS: u32 = 2_000_000;

/// Nanoseconds per call of `f`, over [`ROUNDS`] calls.
fn per_call(mut f: impl FnMut()) -> f64 {
    let t = Instant::now();
    for _ in 0..ROUNDS {
        f();
    }
    t.elapsed().as_nanos() as f64 / f64::from(ROUNDS)
}

fn main() {
    let read = per_call(|| {
        let read = Beat::read_message(Some(black_box(KEY)), Some(black_box(VALUE)));
        black_box(read.is_ok());
    });
    let least = per_call(|| {
        let read: Result<TimestampOnly<'_>, _> = serde_json::from_slice(black_box(VALUE));
        black_box(read.is_ok());
    });
    let scan = per_call(|| {
        let scanned: Result<serde::de::IgnoredAny, _> = serde_json::from_slice(black_box(VALUE));
        black_box(scanned.is_ok());
    });
    let stamp = per_call(|| {
        black_box(heartbeat_crds::beat::parse_timestamp(black_box(
            "2026-12-07T05:22:06.554552+00:00",
        )))
        .ok();
    });
    println!("value bytes                   {}", VALUE.len());
    println!("Beat::read_message            {read:6.0} ns/beat");
    println!("serde_json, timestamp only    {least:6.0} ns/beat");
    println!("serde_json scan, nothing kept {scan:6.0} ns/beat");
    println!("one ISO timestamp (of 3)      {stamp:6.0} ns");
    println!(
        "read / timestamp only: {:.2}x, read / scan: {:.2}x",
        read / least,
        read / scan
    );
}
