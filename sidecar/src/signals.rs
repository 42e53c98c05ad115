//! What the application told the sidecar through /ping: when it last showed
//! progress, whether it reported a failure, and the work it did since the
//! previous beat (OpenMSIStream's "processed" counters).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use heartbeat_crds::sidecar_contract::path;
use jiff::Timestamp;

/// Kinds of ping, healthchecks.io style.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PingKind {
    /// Progress.
    Ping,
    /// A unit of work started (counts as progress).
    Start,
    /// The application reports that it is failing.
    Fail,
}

#[derive(Debug, Default)]
struct Last {
    at: Option<(Instant, Timestamp)>,
    failure: Option<String>,
}

/// Shared between the HTTP handlers (writers) and the beat loop (reader).
#[derive(Debug, Default)]
pub struct AppSignals {
    last: Mutex<Last>,
    messages: AtomicU64,
    bytes: AtomicU64,
}

impl AppSignals {
    /// Records a ping and adds its counts.
    pub fn record(&self, kind: PingKind, messages: u64, bytes: u64) {
        self.messages.fetch_add(messages, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        match kind {
            PingKind::Ping | PingKind::Start => {
                last.at = Some((Instant::now(), Timestamp::now()));
                last.failure = None;
            }
            PingKind::Fail => {
                last.failure = Some(format!(
                    "the application reported a failure via {}",
                    path::PING_FAIL
                ));
            }
        }
    }

    /// When the application last showed progress (monotonic and wall clock).
    pub fn last_signal(&self) -> Option<(Instant, Timestamp)> {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).at
    }

    /// The failure the application reported, until its next ping.
    pub fn failure(&self) -> Option<String> {
        self.last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .failure
            .clone()
    }

    /// Takes (messages, bytes) processed since the previous call: each beat
    /// reports and resets them, as OpenMSIStream does with its counters.
    pub fn take_counts(&self) -> (u64, u64) {
        (
            self.messages.swap(0, Ordering::Relaxed),
            self.bytes.swap(0, Ordering::Relaxed),
        )
    }
}
