//! appHealth: is the application next to the sidecar still making progress?
//! The decisions are pure functions of ages and answers; `check` gathers
//! those (file mtime, last ping, an HTTP probe) and applies them, and
//! [`AppJudge`] keeps the last verdict.

use std::time::{Duration, Instant, SystemTime};

use heartbeat_crds::SidecarAppHealth;
use heartbeat_crds::beat::AppStatus;

use crate::signals::AppSignals;

/// Timeout of one HTTP probe of the application.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The client of the Http mode's probe (plain HTTP to the pod's loopback).
pub fn probe_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .timeout(PROBE_TIMEOUT)
        .no_proxy()
        .build()
}

/// The verdict on the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub status: AppStatus,
    pub reason: String,
}

impl Verdict {
    fn ok(reason: impl Into<String>) -> Verdict {
        Verdict {
            status: AppStatus::Ok,
            reason: reason.into(),
        }
    }
    fn failing(reason: impl Into<String>) -> Verdict {
        Verdict {
            status: AppStatus::Failing,
            reason: reason.into(),
        }
    }
    /// Whether /healthz/app answers 200.
    pub fn healthy(&self) -> bool {
        self.status != AppStatus::Failing
    }
}

/// File mode: `age` is the touch file's age, `None` when it does not exist.
pub fn decide_file(path: &str, age: Option<Duration>, max_age: Duration) -> Verdict {
    match age {
        None => Verdict::failing(format!("touch file {path} does not exist")),
        Some(age) if age > max_age => Verdict::failing(format!(
            "touch file {path} is {}s old (max {}s)",
            age.as_secs(),
            max_age.as_secs()
        )),
        Some(age) => Verdict::ok(format!("touch file {path} is {}s old", age.as_secs())),
    }
}

/// Ping mode: `since_signal` is the time since the last ping, or since the
/// sidecar started when there was none (the app gets max_age to start up).
pub fn decide_ping(since_signal: Duration, pinged: bool, max_age: Duration) -> Verdict {
    if since_signal <= max_age {
        if pinged {
            Verdict::ok(format!("last ping {}s ago", since_signal.as_secs()))
        } else {
            Verdict::ok("no ping yet; within the start-up allowance")
        }
    } else if pinged {
        Verdict::failing(format!(
            "last ping {}s ago (max {}s)",
            since_signal.as_secs(),
            max_age.as_secs()
        ))
    } else {
        Verdict::failing(format!(
            "no ping in the {}s since the sidecar started",
            since_signal.as_secs()
        ))
    }
}

/// Http mode: the probe's outcome, a status code or an error text.
pub fn decide_http(url: &str, outcome: Result<u16, String>) -> Verdict {
    match outcome {
        Ok(code) if (200..300).contains(&code) => Verdict::ok(format!("GET {url} returned {code}")),
        Ok(code) => Verdict::failing(format!("GET {url} returned {code}")),
        Err(e) => Verdict::failing(format!("GET {url} failed: {e}")),
    }
}

/// Judges the application now.
pub async fn check(
    mode: &SidecarAppHealth,
    signals: &AppSignals,
    started: Instant,
    http: &reqwest::Client,
) -> Verdict {
    if let Some(failure) = signals.failure() {
        return Verdict::failing(failure);
    }
    match mode {
        SidecarAppHealth::None => Verdict {
            status: AppStatus::Unknown,
            reason: "no application health check configured".into(),
        },
        SidecarAppHealth::File { path, max_age } => {
            let age = tokio::fs::metadata(path)
                .await
                .and_then(|m| m.modified())
                .ok()
                // A file from the future (clock step) counts as fresh.
                .map(|mtime| SystemTime::now().duration_since(mtime).unwrap_or_default());
            decide_file(path, age, max_age.as_duration())
        }
        SidecarAppHealth::Ping { max_age } => {
            let last = signals.last_signal().map(|(at, _)| at);
            let since = last.unwrap_or(started).elapsed();
            decide_ping(since, last.is_some(), max_age.as_duration())
        }
        SidecarAppHealth::Http { url } => {
            let outcome = http
                .get(url)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .map_err(|e| error_chain(&e));
            decide_http(url, outcome)
        }
    }
}

/// Judges the application per its appHealth mode and remembers the last
/// verdict (the stopping beat reports it instead of waiting on a probe).
pub struct AppJudge {
    mode: SidecarAppHealth,
    started: Instant,
    probe_client: reqwest::Client,
    last: tokio::sync::Mutex<Option<Verdict>>,
}

impl AppJudge {
    /// A judge for `mode`; in Ping mode the app has until `started` plus the
    /// max age to send its first ping.
    pub fn new(
        mode: SidecarAppHealth,
        started: Instant,
        probe_client: reqwest::Client,
    ) -> AppJudge {
        AppJudge {
            mode,
            started,
            probe_client,
            last: tokio::sync::Mutex::new(None),
        }
    }

    /// Judges the application now and remembers the verdict.
    pub async fn judge(&self, signals: &AppSignals) -> Verdict {
        let v = check(&self.mode, signals, self.started, &self.probe_client).await;
        *self.last.lock().await = Some(v.clone());
        v
    }

    /// The most recent verdict, if any.
    pub async fn last_verdict(&self) -> Option<Verdict> {
        self.last.lock().await.clone()
    }

    /// Whether judging means an HTTP request to the application.
    pub fn probes_over_http(&self) -> bool {
        matches!(self.mode, SidecarAppHealth::Http { .. })
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_secs(30);

    #[test]
    fn fresh_touch_file_is_ok_and_stale_or_missing_is_failing() {
        assert!(decide_file("/h", Some(Duration::from_secs(5)), MAX).healthy());
        assert!(decide_file("/h", Some(MAX), MAX).healthy());
        let old = decide_file("/h", Some(Duration::from_secs(31)), MAX);
        assert_eq!(old.status, AppStatus::Failing);
        assert_eq!(old.reason, "touch file /h is 31s old (max 30s)");
        assert_eq!(
            decide_file("/h", None, MAX).reason,
            "touch file /h does not exist"
        );
    }

    #[test]
    fn ping_mode_allows_start_up_then_needs_recent_pings() {
        assert!(decide_ping(Duration::from_secs(10), false, MAX).healthy());
        assert!(!decide_ping(Duration::from_secs(31), false, MAX).healthy());
        assert!(decide_ping(Duration::from_secs(29), true, MAX).healthy());
        let late = decide_ping(Duration::from_secs(45), true, MAX);
        assert_eq!(late.reason, "last ping 45s ago (max 30s)");
    }

    #[tokio::test]
    async fn judge_remembers_its_last_verdict() {
        let judge = AppJudge::new(
            SidecarAppHealth::None,
            Instant::now(),
            probe_client().expect("client"),
        );
        assert_eq!(judge.last_verdict().await, None);
        let v = judge.judge(&AppSignals::default()).await;
        assert_eq!(v.status, AppStatus::Unknown);
        assert_eq!(judge.last_verdict().await, Some(v));
        assert!(!judge.probes_over_http());
    }

    #[test]
    fn http_mode_needs_a_2xx() {
        assert!(decide_http("u", Ok(204)).healthy());
        assert!(!decide_http("u", Ok(500)).healthy());
        assert!(!decide_http("u", Ok(301)).healthy());
        let down = decide_http("u", Err("connection refused".into()));
        assert_eq!(down.reason, "GET u failed: connection refused");
    }
}
