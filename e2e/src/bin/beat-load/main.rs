//! beat-load: the scale bench (issue 14). Simulates members outside the
//! cluster (external programs, `spec.external.expectedPrograms`) by
//! producing their beats, against one operator process, and reports what
//! the operator did with them.
//!
//! On a stack already up at `HB_STACK_DIR` (`e2e/bench/scale` starts one) it
//! installs the CRD, makes a namespace, the broker Secret, one topic per
//! monitor (LogAppendTime, so a beat's broker time is the time the operator
//! judges by) and `members / per-monitor` monitors of at most 1,000
//! expected programs each (a shared topic would make every monitor track the
//! others' programs as seen), starts the operator binary as its
//! ServiceAccount (the e2e fixture, on the host end of the stack's link: no
//! pods here, so its webhook is never called), then beats every member once
//! per interval, spread evenly over the interval, for `--duration` seconds.
//! Near the end `--stop` members (spread over the monitors) go silent, to
//! time their `HeartbeatStale` Events against their deadlines.
//!
//! It watches the monitors (`kubectl get -w`, every status write) and the
//! Events, samples CPU and RSS from /proc (operator, this generator, the
//! API server, etcd, Kafka, the whole machine) and the operator's
//! `/metrics`, and prints a summary at the end. Exits non-zero when a
//! member that kept beating was ever Stale or alarmed about.
//!
//!   beat-load --members 10000 --per-monitor 1000 --interval 10 --duration 600 --stop 20
//!
//! This file parses the flags and wires the parts: `plan` (what to send),
//! `topics`, `generator` (producing the beats, rendered by `crds::Beat`),
//! `watch` (status writes and Events), `sampler` (CPU, RSS, metrics),
//! `oplog` (what the operator's log says) and `summary` (the figures and
//! the printed lines).

mod generator;
mod oplog;
mod plan;
mod sampler;
mod summary;
mod topics;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use clap::Parser;
use heartbeat_crds::Beat;
use heartbeat_crds::program_id::key_for;
use heartbeat_e2e::operator::{Network, OperatorOptions, OperatorProcess};
use heartbeat_e2e::procfs::find_pid;
use heartbeat_e2e::stack::{repo_dir, run_with_stdin};
use heartbeat_e2e::{Stack, TestNamespace};
use heartbeat_testbed::layout::{StackEnv, StackLayout, default_stack_dir};
use jiff::Timestamp;

use crate::generator::{BeatWriter, Deliveries};
use crate::plan::{Plan, Timing};
use crate::sampler::Targets;
use crate::summary::Summary;
use crate::watch::Watches;

/// Simulated members beating against one operator.
#[derive(Parser, Debug)]
pub struct Args {
    /// Members (external programs) in all.
    #[arg(long, default_value_t = 10_000)]
    members: usize,
    /// Expected programs per monitor (the CRD allows 1,000); one topic each.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=1000))]
    per_monitor: u64,
    /// Seconds between two beats of a member (the monitors' intervalSeconds).
    #[arg(long, default_value_t = 10)]
    interval: u32,
    /// Seconds of beating, from the first beat.
    #[arg(long, default_value_t = 600)]
    duration: u64,
    /// Members that go silent near the end (their HeartbeatStale Events are timed).
    #[arg(long, default_value_t = 20)]
    stop: usize,
    /// The monitors' missedBeatsTolerated.
    #[arg(long, default_value_t = 3)]
    missed: u32,
    /// The monitors' graceSeconds.
    #[arg(long, default_value_t = 5)]
    grace: u32,
    /// The operator binary (default: the workspace's release build).
    #[arg(long)]
    operator_bin: Option<PathBuf>,
    /// Seconds between two samples of CPU, RSS and metrics.
    #[arg(long, default_value_t = 5)]
    sample_every: u64,
    /// The producer's linger.ms (batching; beats are timed by the broker, so it adds no error).
    #[arg(long, default_value_t = 50)]
    linger_ms: u32,
    /// Copy the operator's log here before it is removed.
    #[arg(long)]
    keep_log: Option<PathBuf>,
}

fn stack_from_env() -> Stack {
    let dir = default_stack_dir();
    let layout = StackLayout::new(&dir);
    let env = StackEnv::read(&layout).unwrap_or_else(|e| {
        panic!(
            "no stack up at {} (start one: HB_STACK_DIR={} e2e/stack up): {e}",
            dir.display(),
            dir.display()
        )
    });
    Stack::from_env(layout, env).unwrap_or_else(|e| panic!("{e}"))
}

fn main() -> ExitCode {
    let args = Args::parse();
    assert!(args.members > 0, "--members must be positive");
    let stack = stack_from_env();
    let suffix = heartbeat_e2e::unique_suffix();
    let plan = Arc::new(Plan::new(&args, &suffix));
    let timing = Timing::new(&args);
    let bin = args
        .operator_bin
        .clone()
        .unwrap_or_else(|| repo_dir().join("target/release/heartbeat-operator"));
    assert!(
        bin.exists(),
        "{} is missing: cargo build --release -p heartbeat-operator",
        bin.display()
    );
    eprintln!(
        "[scale] {} members in {} monitors of <= {} on {} topics, a beat each every {} s for {} s; {} go silent at {} s",
        args.members,
        plan.monitors.len(),
        args.per_monitor,
        plan.topics.len(),
        args.interval,
        args.duration,
        plan.stopped.len(),
        timing.stop_at.as_secs()
    );

    // The beat format, checked against the crate's parser once.
    let probe_at = Timestamp::now();
    let probe = BeatWriter::new(args.interval)
        .value("p", 0, probe_at)
        .expect("the generator's beat renders");
    let (_, parsed) = Beat::parse_message(Some(key_for("p").as_bytes()), Some(&probe))
        .expect("the generator's beat parses");
    assert_eq!(
        parsed.beat.timestamp.as_microsecond(),
        probe_at.as_microsecond(),
        "the generator's timestamp reads back"
    );

    // The cluster side.
    heartbeat_e2e::kube_env::install_crds(&stack);
    let ns = TestNamespace::create(&stack, "hb-scale");
    ns.create_broker_secret(&stack.kafka_bootstrap);
    topics::create_topics(&stack.kafka_bootstrap, &plan.topics);
    let op = OperatorProcess::start_with(
        &stack,
        &bin,
        OperatorOptions {
            network: Network::Host,
            ..OperatorOptions::default()
        },
    );
    let op_pid = find_pid(&[&op.process_identity, "heartbeat-operator"])
        .expect("the operator's pid (its --identity in /proc/*/cmdline)");
    let stack_dir = stack.layout.root().display().to_string();
    let stack_pids = [
        find_pid(&["kube-apiserver", &stack_dir]),
        find_pid(&["etcd", "--data-dir", &stack_dir]),
        find_pid(&["kafka.Kafka", &stack_dir]),
    ];
    eprintln!(
        "[scale] operator pid {op_pid} (admin {}), stack pids {stack_pids:?}",
        op.admin
    );

    // Watches first, so the first status write is seen.
    let mut watches = Watches::start(&stack, &ns.name, &plan);

    // The generator.
    let deliveries = Arc::new(Mutex::new(Deliveries::new(&plan)));
    let producer = generator::producer(&stack.kafka_bootstrap, args.linger_ms, deliveries.clone());
    let t0 = Instant::now();
    let t0_ms = Timestamp::now().as_millisecond();
    let generating = Arc::new(AtomicBool::new(true));
    let generator = generator::spawn(
        plan.clone(),
        producer,
        args.interval,
        timing,
        t0,
        generating.clone(),
    );

    // The monitors, once beats flow (in chunks: 100 monitors are megabytes of YAML).
    let label = op.monitor_label().1;
    let mut start = 0;
    while start < plan.monitors.len() {
        let end = (start + 10).min(plan.monitors.len());
        let yaml = plan.monitors_yaml(&args, &label, start..end);
        let mut cmd = stack.kubectl();
        cmd.args(["apply", "--server-side", "-n", &ns.name, "-f", "-"]);
        let (ok, _, err) = run_with_stdin(&mut cmd, &yaml);
        assert!(ok, "applying the monitors failed: {err}");
        start = end;
    }
    let applied_ms = Timestamp::now().as_millisecond();
    eprintln!(
        "[scale] monitors applied {:.1} s after the first beat",
        (applied_ms - t0_ms) as f64 / 1000.0
    );

    let clk_tck = sampler::clk_tck();
    let targets = Targets {
        op_pid,
        stack_pids,
        watcher_pids: watches.pids.clone(),
        metrics_url: format!("http://{}/metrics", op.admin),
    };
    let (samples, steady_ms) = sampler::sample_until_done(
        &targets,
        &sampler::Run {
            plan: &plan,
            statuses: &watches.statuses,
            deliveries: &deliveries,
            generating: &generating,
            t0,
            duration: timing.duration,
            applied_ms,
            every: std::time::Duration::from_secs(args.sample_every),
        },
    );
    let end_ms = t0_ms + timing.duration.as_millis() as i64;
    let (sent, queue_full) = generator.join().expect("the generator thread");
    watches.stop();
    if let Some(path) = &args.keep_log {
        let _ = std::fs::write(path, op.log());
    }
    let op_log = op.log();
    let (warns, errors) = oplog::warns_and_errors(&op_log);
    let published = oplog::published_events(&op_log);
    let ok = summary::print(&Summary {
        plan: &plan,
        interval_s: args.interval,
        duration_s: args.duration,
        deliveries: &deliveries.lock().expect("deliveries"),
        statuses: &watches.statuses.lock().expect("statuses"),
        events: &watches.events.lock().expect("events"),
        published: &published,
        samples: &samples,
        t0_ms,
        applied_ms,
        steady_ms,
        end_ms,
        stop_at_ms: t0_ms + timing.stop_at.as_millis() as i64,
        interval_ms: timing.interval_ms,
        stale_after_ms: timing.stale_after_ms,
        clk_tck,
        sent,
        queue_full,
        warns,
        errors,
    });
    drop(op);
    topics::delete_topics(&stack.kafka_bootstrap, &plan.topics);
    drop(ns);
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
