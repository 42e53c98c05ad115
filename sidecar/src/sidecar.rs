//! The running sidecar: the parts the beat loop and the HTTP server share
//! (configuration, producer, metrics, the app's signals, the app judge and
//! the beat loop's liveness), behind one `Arc`.

use std::sync::Arc;
use std::time::Instant;

use heartbeat_crds::beat::AppStatus;
use jiff::Timestamp;

use crate::beat_loop::LoopLiveness;
use crate::config::Config;
use crate::health::{AppJudge, Verdict};
use crate::metrics::Metrics;
use crate::producer::BeatProducer;
use crate::signals::AppSignals;

/// Everything the beat loop and the HTTP handlers share.
pub struct Sidecar {
    /// The validated configuration.
    pub config: Config,
    /// What the application reported through /ping.
    pub signals: AppSignals,
    /// The exported metrics.
    pub metrics: Arc<Metrics>,
    /// The Kafka producer of beats.
    pub producer: BeatProducer,
    /// Wall-clock start time, reported in every beat.
    pub started_at: Timestamp,
    /// When the beat loop last ticked (for /livez).
    pub liveness: LoopLiveness,
    /// Judges the application per its appHealth mode.
    app_judge: AppJudge,
}

impl Sidecar {
    /// Puts the parts together; the start time is now.
    pub fn new(
        config: Config,
        metrics: Arc<Metrics>,
        producer: BeatProducer,
        probe_client: reqwest::Client,
    ) -> Sidecar {
        let started = Instant::now();
        let app_judge = AppJudge::new(config.args.app_health.clone(), started, probe_client);
        Sidecar {
            config,
            signals: AppSignals::default(),
            metrics,
            producer,
            started_at: Timestamp::now(),
            liveness: LoopLiveness::new(started),
            app_judge,
        }
    }

    /// Judges the application now and records the verdict in metrics.
    pub async fn app_verdict(&self) -> Verdict {
        let v = self.app_judge.judge(&self.signals).await;
        self.metrics.app_healthy.set(i64::from(v.healthy()));
        v
    }

    /// The most recent verdict, without probing (judged now only if there is
    /// none yet and the judgement needs no network: File, Ping, None).
    pub async fn last_app_verdict(&self) -> Verdict {
        match self.app_judge.last_verdict().await {
            Some(v) => v,
            None if self.app_judge.probes_over_http() => Verdict {
                status: AppStatus::Unknown,
                reason: "not probed before shutdown".into(),
            },
            None => self.app_verdict().await,
        }
    }
}
