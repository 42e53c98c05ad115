//! Sampling what is measured, every few seconds while the generator runs:
//! CPU and RSS from /proc (operator, this generator, the kubectl watches,
//! the API server, etcd, Kafka, the machine) and the operator's /metrics.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use heartbeat_e2e::metrics;
use heartbeat_e2e::procfs::{cpu_ticks, machine_ticks, rss_kib, status_field};
use jiff::Timestamp;

use crate::generator::Deliveries;
use crate::plan::Plan;
use crate::watch::{StatusSeen, steady_since};

/// One sample of what is measured.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub at_ms: i64,
    pub op_ticks: u64,
    pub op_rss_kib: u64,
    pub op_threads: u64,
    pub self_ticks: u64,
    pub self_rss_kib: u64,
    pub watchers_ticks: u64,
    /// kube-apiserver, etcd, kafka.
    pub stack_ticks: [u64; 3],
    pub machine: (u64, u64),
    pub lag: f64,
    pub status_writes: BTreeMap<String, f64>,
    pub events_suppressed: f64,
    pub reconcile_errors: f64,
}

/// The processes sampled and where the operator's metrics are.
pub struct Targets {
    pub op_pid: u32,
    /// kube-apiserver, etcd, kafka (when found).
    pub stack_pids: [Option<u32>; 3],
    pub watcher_pids: Arc<Mutex<Vec<u32>>>,
    pub metrics_url: String,
}

/// Clock ticks per second (the unit of /proc's CPU times).
pub fn clk_tck() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100)
}

impl Targets {
    /// One sample, now.
    pub fn sample(&self) -> Sample {
        let (_, text, _) = heartbeat_e2e::stack::run(Command::new("curl").args([
            "-sf",
            "--noproxy",
            "*",
            "--max-time",
            "5",
            &self.metrics_url,
        ]));
        let m = metrics::parse(&text);
        let watchers: Vec<u32> = self
            .watcher_pids
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default();
        let op_pid = self.op_pid;
        Sample {
            at_ms: Timestamp::now().as_millisecond(),
            op_ticks: cpu_ticks(op_pid).unwrap_or_default(),
            op_rss_kib: rss_kib(op_pid).unwrap_or_default(),
            op_threads: status_field(op_pid, "Threads").unwrap_or_default(),
            self_ticks: cpu_ticks(std::process::id()).unwrap_or_default(),
            self_rss_kib: rss_kib(std::process::id()).unwrap_or_default(),
            watchers_ticks: watchers.iter().filter_map(|p| cpu_ticks(*p)).sum(),
            stack_ticks: self
                .stack_pids
                .map(|p| p.and_then(cpu_ticks).unwrap_or_default()),
            machine: machine_ticks().unwrap_or_default(),
            lag: metrics::sum(&m, "heartbeat_operator_consumer_lag_messages", &[]),
            status_writes: m
                .iter()
                .filter(|s| s.name == "heartbeat_operator_status_writes_total")
                .filter_map(|s| Some((s.labels.get("monitor")?.clone(), s.value)))
                .collect(),
            events_suppressed: metrics::sum(&m, "heartbeat_operator_events_suppressed_total", &[]),
            reconcile_errors: metrics::sum(&m, "heartbeat_operator_reconcile_errors_total", &[]),
        }
    }
}

/// What the sampling loop watches besides the processes.
pub struct Run<'a> {
    pub plan: &'a Plan,
    pub statuses: &'a Mutex<Vec<StatusSeen>>,
    pub deliveries: &'a Mutex<Deliveries>,
    pub generating: &'a AtomicBool,
    pub t0: Instant,
    pub duration: Duration,
    pub applied_ms: i64,
    pub every: Duration,
}

/// Samples until the generator is done, and a few seconds more; notes
/// when every member is first Up (steady) and reports progress every
/// 30 s. Returns the samples and the steady moment.
pub fn sample_until_done(targets: &Targets, run: &Run<'_>) -> (Vec<Sample>, Option<i64>) {
    let mut samples: Vec<Sample> = Vec::new();
    let mut steady_ms: Option<i64> = None;
    let mut next_report = Instant::now();
    let tail = Duration::from_secs(3);
    loop {
        let done = !run.generating.load(Ordering::Relaxed);
        let sample = targets.sample();
        if steady_ms.is_none() {
            // Steady: every monitor Ready with all its members Up.
            let s = run.statuses.lock().map(|s| s.clone()).unwrap_or_default();
            steady_ms = steady_since(&s, run.plan);
            if steady_ms.is_some() {
                eprintln!(
                    "[scale] all {} members Up {:.1} s after the monitors were applied",
                    run.plan.members.len(),
                    (steady_ms.unwrap_or(run.applied_ms) - run.applied_ms) as f64 / 1000.0
                );
            }
        }
        if Instant::now() >= next_report {
            let d = run
                .deliveries
                .lock()
                .map(|d| (d.delivered, d.failed))
                .unwrap_or_default();
            eprintln!(
                "[scale] t={:>4}s delivered {} failed {} | operator rss {} MiB | lag {} | status writes seen {}",
                run.t0.elapsed().as_secs(),
                d.0,
                d.1,
                sample.op_rss_kib / 1024,
                sample.lag + 0.0,
                run.statuses.lock().map(|s| s.len()).unwrap_or_default()
            );
            next_report = Instant::now() + Duration::from_secs(30);
        }
        samples.push(sample);
        if done && run.t0.elapsed() >= run.duration + tail {
            break;
        }
        std::thread::sleep(run.every);
    }
    (samples, steady_ms)
}
