//! Container probes as the kubelet runs them: httpGet (2xx/3xx passes),
//! tcpSocket (a connect passes) and exec (exit 0 passes); and the
//! bookkeeping shared by startup, liveness and readiness (when a probe is due, and
//! its consecutive passes and failures against its thresholds).

use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Probe};

use crate::enter::Entry;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Timing of a probe, with the kubelet's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// initialDelaySeconds (default 0): no probe before the process has run this long.
    pub initial_delay: Duration,
    /// periodSeconds (default 10, at least 1).
    pub period: Duration,
    /// timeoutSeconds (default 1, at least 1).
    pub timeout: Duration,
    /// failureThreshold (default 3, at least 1): failures in a row that fail the probe.
    pub failure_threshold: u32,
    /// successThreshold (default 1, at least 1): passes in a row that pass the probe.
    pub success_threshold: u32,
}

fn secs(v: Option<i32>, default: u64) -> Duration {
    Duration::from_secs(v.and_then(|v| u64::try_from(v).ok()).unwrap_or(default))
}

impl Timing {
    /// The probe's timing, with the kubelet's defaults and minimums.
    pub fn of(p: &Probe) -> Timing {
        Timing {
            initial_delay: secs(p.initial_delay_seconds, 0),
            period: secs(p.period_seconds, 10).max(Duration::from_secs(1)),
            timeout: secs(p.timeout_seconds, 1).max(Duration::from_secs(1)),
            failure_threshold: p
                .failure_threshold
                .and_then(|v| u32::try_from(v).ok())
                .unwrap_or(3)
                .max(1),
            success_threshold: p
                .success_threshold
                .and_then(|v| u32::try_from(v).ok())
                .unwrap_or(1)
                .max(1),
        }
    }
}

fn port(ctr: &Container, p: &IntOrString) -> Result<u16, String> {
    match p {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("bad port {n}")),
        IntOrString::String(name) => ctr
            .ports
            .iter()
            .flatten()
            .find(|cp| cp.name.as_deref() == Some(name))
            .and_then(|cp| u16::try_from(cp.container_port).ok())
            .ok_or_else(|| format!("no container port named {name:?}")),
    }
}

/// Which probe of a container, as the kubelet names it in Events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    Startup,
    Liveness,
    Readiness,
}

impl ProbeKind {
    /// The kubelet's spelling (`Liveness probe failed: ...`).
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Startup => "Startup",
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
        }
    }
}

/// An error with every cause after it (`a: b: c`), so a probe's failure
/// says what failed underneath, not only "error sending request".
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        // Some errors repeat their cause in their own text.
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

/// Runs one probe against a container at `pod_ip`; Err carries the failure
/// reason with its whole error chain.
pub async fn run(probe: &Probe, ctr: &Container, entry: &Entry) -> Result<(), String> {
    let pod_ip = entry.pod_ip.as_str();
    let timeout = Timing::of(probe).timeout;
    if let Some(h) = &probe.http_get {
        if h.scheme
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("https"))
        {
            return Err("HTTPS probes are not supported by the process node".into());
        }
        let host = h.host.clone().unwrap_or_else(|| pod_ip.to_string());
        let url = format!(
            "http://{host}:{}{}",
            port(ctr, &h.port)?,
            h.path.as_deref().unwrap_or("/")
        );
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string())?;
        let code = match client.get(&url).send().await {
            Ok(response) => response.status().as_u16(),
            Err(e) if e.is_timeout() => {
                return Err(format!(
                    "Get {url:?}: timed out after {} ms",
                    timeout.as_millis()
                ));
            }
            Err(e) => return Err(format!("Get {url:?}: {}", chain(&e))),
        };
        return if (200..400).contains(&code) {
            Ok(())
        } else {
            Err(format!("HTTP probe failed with statuscode: {code}"))
        };
    }
    if let Some(t) = &probe.tcp_socket {
        let host = t.host.clone().unwrap_or_else(|| pod_ip.to_string());
        let addr = format!("{host}:{}", port(ctr, &t.port)?);
        return match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&addr)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("dial tcp {addr}: {}", chain(&e))),
            Err(_) => Err(format!(
                "dial tcp {addr}: timed out after {} ms",
                timeout.as_millis()
            )),
        };
    }
    if let Some(cmd) = probe.exec.as_ref().and_then(|e| e.command.as_ref()) {
        let Some((prog, args)) = cmd.split_first() else {
            return Err("exec probe without a command".into());
        };
        // In the container's own namespaces, as a runtime's exec.
        let child = entry
            .command(Path::new("/"), Path::new(prog), args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .status();
        return match tokio::time::timeout(timeout, child).await {
            Ok(Ok(s)) if s.success() => Ok(()),
            Ok(Ok(s)) => Err(format!("exec probe exited with {s}")),
            Ok(Err(e)) => Err(format!("exec probe: {e}")),
            Err(_) => Err(format!(
                "exec probe timed out after {} ms",
                timeout.as_millis()
            )),
        };
    }
    Err("probe has no handler".into())
}

/// What a probe's results in a row add up to, once they reach a threshold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// successThreshold passes in a row.
    Passing,
    /// failureThreshold failures in a row, with the last failure's reason.
    Failing(String),
}

/// One run of a probe that was due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// Why it failed (with how long it took), if it did.
    pub failure: Option<String>,
    /// The verdict its results in a row have reached, if any.
    pub verdict: Option<Verdict>,
}

/// One probe (startup, liveness or readiness) of one container, with the kubelet's
/// bookkeeping: when it is next due, and how many passes or failures in a
/// row it has seen.
#[derive(Debug, Clone)]
pub struct ProbeTracker {
    probe: Probe,
    timing: Timing,
    next_at: Option<Instant>,
    successes: u32,
    failures: u32,
}

impl ProbeTracker {
    /// A tracker for `probe` that has seen no result yet.
    pub fn new(probe: Probe) -> ProbeTracker {
        ProbeTracker {
            timing: Timing::of(&probe),
            probe,
            next_at: None,
            successes: 0,
            failures: 0,
        }
    }

    /// Forgets the schedule and the counts, for a new run of the container.
    pub fn reset(&mut self) {
        self.next_at = None;
        self.successes = 0;
        self.failures = 0;
    }

    /// Whether the probe is due at `now` for a process running since
    /// `since`: first after the initial delay, then once per period. When it
    /// is, the next run is scheduled one period from `now`.
    pub fn take_due(&mut self, since: Instant, now: Instant) -> bool {
        let due = now >= since + self.timing.initial_delay && self.next_at.is_none_or(|n| now >= n);
        if due {
            self.next_at = Some(now + self.timing.period);
        }
        due
    }

    /// Counts one result. A pass breaks a run of failures and a failure a
    /// run of passes; the verdict comes once a run reaches its threshold,
    /// and again with every result that extends it.
    pub fn record(&mut self, result: Result<(), String>) -> Option<Verdict> {
        match result {
            Ok(()) => {
                self.failures = 0;
                self.successes = self.successes.saturating_add(1);
                (self.successes >= self.timing.success_threshold).then_some(Verdict::Passing)
            }
            Err(why) => {
                self.successes = 0;
                self.failures = self.failures.saturating_add(1);
                (self.failures >= self.timing.failure_threshold).then_some(Verdict::Failing(why))
            }
        }
    }

    /// Runs the probe against `ctr` (at its pod's IP, exec probes inside
    /// it) if it is due: whether it failed, and the verdict its results
    /// have reached.
    pub async fn check(
        &mut self,
        ctr: &Container,
        entry: &Entry,
        since: Instant,
        now: Instant,
    ) -> Option<Run> {
        if !self.take_due(since, now) {
            return None;
        }
        let started = Instant::now();
        let result = run(&self.probe, ctr, entry).await.map_err(|why| {
            format!(
                "{why} (the probe took {} ms)",
                started.elapsed().as_millis()
            )
        });
        let failure = result.as_ref().err().cloned();
        Some(Run {
            failure,
            verdict: self.record(result),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker() -> ProbeTracker {
        ProbeTracker::new(Probe {
            initial_delay_seconds: Some(10),
            period_seconds: Some(5),
            failure_threshold: Some(3),
            success_threshold: Some(2),
            ..Default::default()
        })
    }

    fn fail(why: &str) -> Result<(), String> {
        Err(why.to_string())
    }

    #[test]
    fn a_failure_names_every_cause_once() {
        #[derive(Debug)]
        struct E(&'static str, Option<Box<E>>);
        impl std::fmt::Display for E {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.0)
            }
        }
        impl std::error::Error for E {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                self.1.as_deref().map(|e| e as _)
            }
        }
        let e = E(
            "error sending request",
            Some(Box::new(E(
                "client error (Connect)",
                Some(Box::new(E("client error (Connect)", None))),
            ))),
        );
        assert_eq!(chain(&e), "error sending request: client error (Connect)");
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(chain(&refused), refused.to_string());
    }

    #[test]
    fn timing_defaults_are_the_kubelets() {
        assert_eq!(
            Timing::of(&Probe::default()),
            Timing {
                initial_delay: Duration::ZERO,
                period: Duration::from_secs(10),
                timeout: Duration::from_secs(1),
                failure_threshold: 3,
                success_threshold: 1,
            }
        );
    }

    #[test]
    fn a_probe_is_first_due_after_the_initial_delay_then_once_per_period() {
        let mut t = tracker();
        let since = Instant::now();
        let at = |secs| since + Duration::from_secs(secs);
        assert!(!t.take_due(since, at(9)));
        assert!(t.take_due(since, at(10)));
        assert!(!t.take_due(since, at(10)), "one run per slot");
        assert!(!t.take_due(since, at(14)));
        assert!(t.take_due(since, at(15)));
        assert!(t.take_due(since, at(30)), "a late tick runs at once");
        assert!(
            !t.take_due(since, at(34)),
            "and the period counts from then"
        );
    }

    #[test]
    fn failures_fail_the_probe_only_at_the_threshold_with_the_last_reason() {
        let mut t = tracker();
        assert_eq!(t.record(fail("a")), None);
        assert_eq!(t.record(fail("b")), None);
        assert_eq!(t.record(fail("c")), Some(Verdict::Failing("c".into())));
        assert_eq!(t.record(fail("d")), Some(Verdict::Failing("d".into())));
    }

    #[test]
    fn passes_pass_the_probe_only_at_the_success_threshold() {
        let mut t = tracker();
        assert_eq!(t.record(Ok(())), None);
        assert_eq!(t.record(Ok(())), Some(Verdict::Passing));
        assert_eq!(t.record(Ok(())), Some(Verdict::Passing));
    }

    #[test]
    fn a_pass_breaks_a_run_of_failures_and_a_failure_a_run_of_passes() {
        let mut t = tracker();
        assert_eq!(t.record(fail("a")), None);
        assert_eq!(t.record(fail("b")), None);
        assert_eq!(t.record(Ok(())), None);
        assert_eq!(t.record(fail("c")), None, "counting starts over");
        assert_eq!(t.record(Ok(())), None, "counting starts over");
    }

    #[test]
    fn reset_forgets_the_schedule_and_the_counts() {
        let mut t = tracker();
        let since = Instant::now();
        let at = |secs| since + Duration::from_secs(secs);
        assert!(t.take_due(since, at(10)));
        t.record(fail("a"));
        t.record(fail("b"));
        t.reset();
        assert!(t.take_due(since, at(11)), "due again at once");
        assert_eq!(t.record(fail("c")), None);
        assert_eq!(t.record(fail("d")), None);
        assert_eq!(t.record(fail("e")), Some(Verdict::Failing("e".into())));
    }
}
