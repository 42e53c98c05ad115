//! The beat schedule: a `starting` beat at once, a `running` beat on every
//! tick of a fixed-period schedule (ticks are start + k*interval, so the
//! cadence does not drift), and a `stopping` beat when shutdown is asked.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use heartbeat_crds::beat::{self, AppStatus};
use heartbeat_crds::program_id::key_for;
use heartbeat_crds::{Beat, BeatApp, BeatPod, BeatSidecar, Phase};
use jiff::Timestamp;
use tokio::time::MissedTickBehavior;

use crate::config::Config;
use crate::health::Verdict;
use crate::sidecar::Sidecar;

/// When the beat loop last ticked, for /livez.
pub struct LoopLiveness {
    started: Instant,
    /// Milliseconds after `started` of the last tick.
    last_tick_ms: AtomicU64,
}

impl LoopLiveness {
    /// Liveness of a loop that starts at `started` (which counts as a tick).
    pub fn new(started: Instant) -> LoopLiveness {
        LoopLiveness {
            started,
            last_tick_ms: AtomicU64::new(0),
        }
    }

    /// Records a tick now.
    pub fn mark_tick(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_tick_ms.store(ms, Ordering::Relaxed);
    }

    /// Time since the last tick.
    pub fn since_tick(&self) -> Duration {
        let at = Duration::from_millis(self.last_tick_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(at)
    }
}

/// Everything one beat reports, gathered by the loop.
pub struct BeatFacts {
    pub seq: u64,
    pub phase: Phase,
    pub now: Timestamp,
    pub verdict: Verdict,
    pub last_signal: Option<Timestamp>,
    pub processed: (u64, u64),
    pub started_at: Timestamp,
    pub undelivered: u64,
}

/// Builds the beat value from the configuration and the facts of this tick.
pub fn build_beat(config: &Config, facts: BeatFacts) -> Beat {
    let a = &config.args;
    let pod = match (&a.pod_namespace, &a.pod_name) {
        (Some(namespace), Some(name)) => Some(BeatPod {
            namespace: namespace.clone(),
            name: name.clone(),
            uid: a.pod_uid.clone(),
            node: a.node_name.clone(),
        }),
        _ => None,
    };
    let reason = (facts.verdict.status == AppStatus::Failing).then_some(facts.verdict.reason);
    Beat {
        schema: Some(beat::SCHEMA.to_string()),
        program_id: Some(a.program_id.clone()),
        seq: Some(facts.seq),
        interval_secs: Some(a.interval_secs),
        phase: Some(facts.phase),
        app: Some(BeatApp {
            status: facts.verdict.status,
            last_signal: facts.last_signal,
            reason,
        }),
        n_messages_processed: Some(facts.processed.0),
        n_bytes_processed: Some(facts.processed.1),
        pod,
        monitor: a.monitor.clone(),
        sidecar: Some(BeatSidecar {
            version: env!("CARGO_PKG_VERSION").to_string(),
            started_at: facts.started_at,
            undelivered: facts.undelivered,
        }),
        ..Beat::at(facts.now)
    }
}

async fn beat(sidecar: &Sidecar, seq: u64, phase: Phase) {
    // The stopping beat must not wait on an app probe (the exit deadline is
    // 2 s); it reports the last verdict.
    let verdict = match phase {
        Phase::Stopping => sidecar.last_app_verdict().await,
        _ => sidecar.app_verdict().await,
    };
    let facts = BeatFacts {
        seq,
        phase,
        now: Timestamp::now(),
        verdict,
        last_signal: sidecar.signals.last_signal().map(|(_, wall)| wall),
        processed: sidecar.signals.take_counts(),
        started_at: sidecar.started_at,
        undelivered: sidecar.producer.delivery().undelivered(),
    };
    let beat = build_beat(&sidecar.config, facts);
    match beat.render() {
        Ok(value) => sidecar
            .producer
            .send(&key_for(&sidecar.config.args.program_id), &value),
        Err(e) => tracing::error!(error = %e, "cannot render beat"),
    }
}

/// Runs until `shutdown` resolves, then sends the stopping beat and flushes
/// for at most `flush_for`.
pub async fn run(sidecar: &Sidecar, shutdown: impl Future<Output = ()>, flush_for: Duration) {
    let mut ticker = tokio::time::interval(sidecar.config.interval());
    // After a stall, skip the missed ticks rather than bursting beats.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    tokio::pin!(shutdown);
    let mut seq = 0u64;
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                seq += 1;
                sidecar.liveness.mark_tick();
                let phase = if seq == 1 { Phase::Starting } else { Phase::Running };
                // A slow app probe must not hold up shutdown: drop this beat then.
                tokio::select! {
                    () = beat(sidecar, seq, phase) => {}
                    () = &mut shutdown => break,
                }
            }
            () = &mut shutdown => break,
        }
    }
    seq += 1;
    beat(sidecar, seq, Phase::Stopping).await;
    sidecar.producer.flush(flush_for);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Args;
    use clap::Parser;

    fn config(extra: &[&str]) -> Config {
        let mut argv = vec![
            "s",
            "--topic",
            "hb",
            "--program-id",
            "ns.pod-1",
            "--interval-secs",
            "5",
        ];
        argv.extend_from_slice(extra);
        let args = Args::try_parse_from(argv).expect("args");
        Config::new(
            args,
            [("KAFKA_BOOTSTRAP_SERVERS".into(), "b:1".into())],
            |_, _| Ok(()),
        )
        .expect("config")
    }

    fn facts(status: AppStatus) -> BeatFacts {
        BeatFacts {
            seq: 3,
            phase: Phase::Running,
            now: "2026-11-22T23:14:51Z".parse().expect("ts"),
            verdict: Verdict {
                status,
                reason: "touch file /h is 40s old (max 30s)".into(),
            },
            last_signal: None,
            processed: (12, 480),
            started_at: "2026-11-22T23:00:00Z".parse().expect("ts"),
            undelivered: 2,
        }
    }

    #[test]
    fn beat_carries_identity_counters_and_delivery_state() {
        let c = config(&[
            "--pod-name",
            "pod-1",
            "--pod-namespace",
            "ns",
            "--pod-uid",
            "u1",
            "--node-name",
            "n1",
            "--monitor",
            "ns/ingest",
        ]);
        let b = build_beat(&c, facts(AppStatus::Ok));
        assert_eq!(b.schema.as_deref(), Some(beat::SCHEMA));
        assert_eq!(b.program_id.as_deref(), Some("ns.pod-1"));
        assert_eq!((b.seq, b.interval_secs), (Some(3), Some(5)));
        assert_eq!(
            (b.n_messages_processed, b.n_bytes_processed),
            (Some(12), Some(480))
        );
        let pod = b.pod.expect("pod");
        assert_eq!((pod.namespace.as_str(), pod.name.as_str()), ("ns", "pod-1"));
        assert_eq!(pod.node.as_deref(), Some("n1"));
        assert_eq!(b.monitor.as_deref(), Some("ns/ingest"));
        assert_eq!(b.sidecar.expect("sidecar").undelivered, 2);
        assert_eq!(b.app.expect("app").reason, None);
    }

    #[test]
    fn liveness_counts_from_start_until_the_first_tick_then_from_the_last_tick() {
        let started = Instant::now()
            .checked_sub(Duration::from_secs(5))
            .expect("5 s after boot");
        let liveness = LoopLiveness::new(started);
        assert!(liveness.since_tick() >= Duration::from_secs(5));
        liveness.mark_tick();
        assert!(liveness.since_tick() < Duration::from_secs(1));
    }

    #[test]
    fn failing_app_reason_is_reported_and_pod_is_omitted_outside_kubernetes() {
        let b = build_beat(&config(&[]), facts(AppStatus::Failing));
        assert!(b.pod.is_none());
        let app = b.app.expect("app");
        assert_eq!(app.status, AppStatus::Failing);
        assert_eq!(
            app.reason.as_deref(),
            Some("touch file /h is 40s old (max 30s)")
        );
    }
}
