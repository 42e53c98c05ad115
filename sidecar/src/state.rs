//! State shared by the beat loop and the HTTP server.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use jiff::Timestamp;

use crate::config::Config;
use crate::health::{self, Verdict};
use crate::metrics::Metrics;
use crate::producer::BeatProducer;
use crate::signals::AppSignals;

pub struct State {
    pub config: Config,
    pub signals: AppSignals,
    pub metrics: Arc<Metrics>,
    pub producer: BeatProducer,
    pub started: Instant,
    pub started_at: Timestamp,
    /// Milliseconds after `started` of the beat loop's last tick.
    last_tick_ms: AtomicU64,
    probe_client: reqwest::Client,
    last_verdict: tokio::sync::Mutex<Option<Verdict>>,
}

impl State {
    pub fn new(
        config: Config,
        metrics: Arc<Metrics>,
        producer: BeatProducer,
        probe_client: reqwest::Client,
    ) -> State {
        State {
            config,
            signals: AppSignals::default(),
            metrics,
            producer,
            started: Instant::now(),
            started_at: Timestamp::now(),
            last_tick_ms: AtomicU64::new(0),
            probe_client,
            last_verdict: tokio::sync::Mutex::new(None),
        }
    }

    pub fn mark_tick(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_tick_ms.store(ms, Ordering::Relaxed);
    }

    /// Time since the beat loop last ticked (the first beat counts as a tick at start).
    pub fn since_tick(&self) -> Duration {
        let at = Duration::from_millis(self.last_tick_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(at)
    }

    /// Judges the application now and records the verdict in metrics.
    pub async fn app_verdict(&self) -> Verdict {
        let v = health::check(
            &self.config.args.app_health,
            &self.signals,
            self.started,
            &self.probe_client,
        )
        .await;
        self.metrics.app_healthy.set(i64::from(v.healthy()));
        *self.last_verdict.lock().await = Some(v.clone());
        v
    }

    /// The most recent verdict, without probing (judged now only if there is
    /// none yet and the judgement needs no network: File, Ping, None).
    pub async fn last_verdict(&self) -> Verdict {
        if let Some(v) = self.last_verdict.lock().await.clone() {
            return v;
        }
        match self.config.args.app_health {
            heartbeat_crds::SidecarAppHealth::Http { .. } => Verdict {
                status: heartbeat_crds::beat::AppStatus::Unknown,
                reason: "not probed before shutdown".into(),
            },
            _ => self.app_verdict().await,
        }
    }
}
