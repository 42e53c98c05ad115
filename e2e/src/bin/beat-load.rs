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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use heartbeat_crds::conditions;
use heartbeat_e2e::operator::{MONITOR_LABEL, Network, OperatorOptions, OperatorProcess};
use heartbeat_e2e::procfs::{cpu_ticks, find_pid, machine_ticks, rss_kib, status_field};
use heartbeat_e2e::stack::{repo_dir, run_with_stdin};
use heartbeat_e2e::{Stack, TestNamespace};
use heartbeat_testbed::layout::{StackEnv, StackLayout, default_stack_dir};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::message::{DeliveryResult, Message, Timestamp as KafkaTimestamp};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, error::KafkaError, types::RDKafkaErrorCode};

/// Simulated members beating against one operator.
#[derive(Parser, Debug)]
struct Args {
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

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

fn unix_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or_default()
}

/// `YYYY-MM-DDTHH:MM:SS.ffffff+00:00` (what OpenMSIStream writes), from
/// Unix microseconds; checked against the crate's own parser at start-up.
fn iso(us: i64) -> String {
    let secs = us.div_euclid(1_000_000);
    let frac = us.rem_euclid(1_000_000);
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days to a civil date (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:06}+00:00",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// Unix milliseconds of an RFC 3339 time as the API server writes it.
fn parse_ms(s: &str) -> Option<i64> {
    let ts = heartbeat_crds::beat::parse_timestamp(s.trim()).ok()?;
    Some(ts.as_millisecond())
}

/// One simulated member.
struct Member {
    monitor: usize,
    program: String,
    key: String,
}

/// The members, the monitors they belong to and the beat order.
struct Plan {
    monitors: Vec<String>,
    topics: Vec<String>,
    /// Members of each monitor (indices into `members`).
    of_monitor: Vec<Vec<usize>>,
    members: Vec<Member>,
    /// The beat order within an interval: monitors interleaved, so every
    /// monitor's beats are spread over the interval too.
    order: Vec<usize>,
    /// Members that go silent at `stop_at`.
    stopped: HashSet<usize>,
}

impl Plan {
    fn new(args: &Args, suffix: &str) -> Plan {
        let per = args.per_monitor as usize;
        let n_monitors = args.members.div_ceil(per);
        let mut members = Vec::with_capacity(args.members);
        let mut of_monitor = vec![Vec::new(); n_monitors];
        for i in 0..args.members {
            let (m, p) = (i / per, i % per);
            let program = format!("scale-m{m:03}-p{p:04}");
            of_monitor[m].push(members.len());
            members.push(Member {
                monitor: m,
                key: format!("{program}{}", heartbeat_crds::program_id::KEY_SUFFIX),
                program,
            });
        }
        let mut order = Vec::with_capacity(args.members);
        for p in 0..per {
            for of in &of_monitor {
                if let Some(&i) = of.get(p) {
                    order.push(i);
                }
            }
        }
        // K members over the monitors, at evenly spaced places of each
        // monitor's list (so at different moments of the interval).
        let per_stopped = args.stop.div_ceil(n_monitors).max(1);
        let mut stopped = HashSet::new();
        for k in 0..args.stop.min(args.members) {
            let (m, j) = (k % n_monitors, k / n_monitors);
            let size = of_monitor[m].len();
            let at = (j * size / per_stopped + m * 13) % size;
            stopped.insert(of_monitor[m][at]);
        }
        Plan {
            monitors: (0..n_monitors).map(|m| format!("scale-{m:03}")).collect(),
            topics: (0..n_monitors)
                .map(|m| format!("scale-{suffix}-{m:03}"))
                .collect(),
            of_monitor,
            members,
            order,
            stopped,
        }
    }
}

/// What the delivery reports said.
struct Deliveries {
    /// Broker time (ms) of every delivered beat, per monitor.
    beats: Vec<Vec<i64>>,
    /// Broker time of each member's newest delivered beat.
    last: Vec<i64>,
    delivered: u64,
    failed: u64,
    /// Deliveries stamped with the broker's LogAppendTime (all, when the topics are right).
    log_append: u64,
}

struct Reports(Arc<Mutex<Deliveries>>);

impl ClientContext for Reports {}

impl ProducerContext for Reports {
    type DeliveryOpaque = Box<(usize, usize)>;

    fn delivery(&self, result: &DeliveryResult<'_>, who: Self::DeliveryOpaque) {
        let (member, monitor) = *who;
        let Ok(mut d) = self.0.lock() else { return };
        match result {
            Ok(msg) => {
                let ms = match msg.timestamp() {
                    KafkaTimestamp::LogAppendTime(ms) => {
                        d.log_append += 1;
                        ms
                    }
                    KafkaTimestamp::CreateTime(ms) => ms,
                    KafkaTimestamp::NotAvailable => unix_ms(),
                };
                d.delivered += 1;
                d.beats[monitor].push(ms);
                d.last[member] = d.last[member].max(ms);
            }
            Err(_) => d.failed += 1,
        }
    }
}

/// One status write as the watch saw it.
#[derive(Debug, Clone)]
struct StatusSeen {
    arrival_ms: i64,
    monitor: usize,
    up: u32,
    late: u32,
    stale: u32,
    /// status.lastBeatTime, whole seconds (metav1.Time), in ms.
    last_beat_ms: Option<i64>,
    ready: bool,
    stale_members: Vec<String>,
    late_members: Vec<String>,
}

/// One Event as the watch saw it (first sight only).
#[derive(Debug, Clone)]
struct EventSeen {
    arrival_ms: i64,
    reason: String,
    /// eventTime (microsecond precision, set by kube's Recorder), in µs.
    event_time_us: Option<i64>,
    program: Option<String>,
}

/// Runs `kubectl get -w` with a jsonpath template until `stop`; hands each
/// line to `on_line`. Fields are separated by `|`: kubectl's watch output
/// goes through a tabwriter, which turns tabs into spaces.
fn watch(
    stack: &Stack,
    namespace: &str,
    what: &str,
    template: &str,
    stop: Arc<AtomicBool>,
    children: Arc<Mutex<Vec<u32>>>,
    mut on_line: impl FnMut(i64, &str) + Send + 'static,
) -> std::thread::JoinHandle<()> {
    let mut cmd = stack.kubectl();
    cmd.args(["get", what, "-n", namespace, "-w", "--request-timeout=0"])
        .arg(format!("-o=jsonpath={template}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let what = what.to_string();
    std::thread::spawn(move || {
        // A watch the server ends is started again (it lists again too:
        // repeated resourceVersions are ignored by the reader).
        let mut runs = 0u32;
        while !stop.load(Ordering::Relaxed) {
            let Ok(mut child) = cmd.spawn() else {
                std::thread::sleep(Duration::from_secs(1));
                continue;
            };
            if runs > 0 {
                eprintln!("[scale] the watch of {what} ended; watching again");
            }
            runs += 1;
            if let Ok(mut c) = children.lock() {
                c.push(child.id());
            }
            let Some(out) = child.stdout.take() else {
                return;
            };
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                on_line(unix_ms(), &line);
            }
            let _ = child.wait();
            std::thread::sleep(Duration::from_secs(1));
        }
    })
}

/// One sample of what is measured.
#[derive(Debug, Clone, Default)]
struct Sample {
    at_ms: i64,
    op_ticks: u64,
    op_rss_kib: u64,
    op_threads: u64,
    self_ticks: u64,
    self_rss_kib: u64,
    watchers_ticks: u64,
    /// kube-apiserver, etcd, kafka.
    stack_ticks: [u64; 3],
    machine: (u64, u64),
    lag: f64,
    status_writes: BTreeMap<String, f64>,
    events_suppressed: f64,
    reconcile_errors: f64,
}

/// The Events the operator's log says it published: (time µs, reason,
/// program). kube's Recorder folds an Event whose type, reason, action,
/// regarding and related object repeat within its cache TTL into the
/// first one's series, note included, so a second external program of
/// one monitor going Stale shows in the API only as `series.count` of the
/// first program's Event; the log line (written just before the API call)
/// names every one.
fn published_events(log: &str) -> Vec<(i64, String, String)> {
    log.lines()
        .filter(|l| l.contains("heartbeat_operator::controller::events: event "))
        .filter_map(|l| {
            let at = heartbeat_crds::beat::parse_timestamp(l.split(' ').next()?).ok()?;
            let reason = l.split_once(" reason=")?.1.split(' ').next()?.to_string();
            let program = l
                .split_once("note=Some(\"program ")?
                .1
                .split([' ', ')'])
                .next()?
                .to_string();
            Some((at.as_microsecond(), reason, program))
        })
        .collect()
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn secs(ms: i64) -> String {
    format!("{:.2} s", ms as f64 / 1000.0)
}

fn create_topics(bootstrap: &str, topics: &[String]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("kafka admin client");
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|t| {
            NewTopic::new(t, 1, TopicReplication::Fixed(1))
                .set("message.timestamp.type", "LogAppendTime")
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(60)));
    for chunk in new.chunks(50) {
        let results = futures::executor::block_on(admin.create_topics(chunk, &opts))
            .expect("create_topics request");
        for r in results {
            r.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
        }
    }
}

fn delete_topics(bootstrap: &str, topics: &[String]) {
    let Ok(admin) = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create::<AdminClient<DefaultClientContext>>()
    else {
        return;
    };
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let _ = futures::executor::block_on(admin.delete_topics(&names, &opts));
}

/// The monitors as YAML (flow style: a 1,000-program list stays small).
fn monitors_yaml(plan: &Plan, args: &Args, label: &str, range: std::ops::Range<usize>) -> String {
    let mut y = String::new();
    for m in range {
        let programs: Vec<&str> = plan.of_monitor[m]
            .iter()
            .map(|&i| plan.members[i].program.as_str())
            .collect();
        y.push_str(&format!(
            "---\napiVersion: heartbeat.dev/v1alpha1\nkind: HeartbeatMonitor\n\
             metadata: {{name: {}, labels: {{{MONITOR_LABEL}: {label}}}}}\n\
             spec: {{topic: {}, intervalSeconds: {}, missedBeatsTolerated: {}, graceSeconds: {}, \
             brokerSecretRef: {{name: kafka}}, external: {{expectedPrograms: [{}]}}}}\n",
            plan.monitors[m],
            plan.topics[m],
            args.interval,
            args.missed,
            args.grace,
            programs.join(", ")
        ));
    }
    y
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
    let interval_ms = i64::from(args.interval) * 1000;
    let stale_after_ms =
        (i64::from(args.interval) * i64::from(args.missed) + i64::from(args.grace)) * 1000;
    let duration = Duration::from_secs(args.duration);
    // The silent members stop early enough for their deadline (at most
    // stale_after after their last beat) plus some lateness to fall
    // inside the run, while everyone else still beats.
    let stop_at = duration.saturating_sub(Duration::from_millis(stale_after_ms as u64 + 15_000));
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
        stop_at.as_secs()
    );

    // The beat format, checked against the crate's parser once.
    let probe_us = unix_us();
    let probe = format!(
        "{{\"timestamp\":\"{}\",\"program_id\":\"p\",\"seq\":0,\"interval_secs\":{}}}",
        iso(probe_us),
        args.interval
    );
    let (_, parsed) =
        heartbeat_crds::Beat::parse_message(Some(b"p_heartbeat"), Some(probe.as_bytes()))
            .expect("the generator's beat parses");
    assert_eq!(
        parsed.beat.timestamp.as_microsecond(),
        probe_us,
        "the generator's timestamp reads back"
    );

    // The cluster side.
    heartbeat_e2e::kube_env::install_crds(&stack);
    let ns = TestNamespace::create(&stack, "hb-scale");
    ns.create_broker_secret(&stack.kafka_bootstrap);
    create_topics(&stack.kafka_bootstrap, &plan.topics);
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
    let stop_watching = Arc::new(AtomicBool::new(false));
    let watcher_pids = Arc::new(Mutex::new(Vec::new()));
    let statuses: Arc<Mutex<Vec<StatusSeen>>> = Arc::new(Mutex::new(Vec::new()));
    let events: Arc<Mutex<Vec<EventSeen>>> = Arc::new(Mutex::new(Vec::new()));
    let monitor_index: HashMap<String, usize> = plan
        .monitors
        .iter()
        .enumerate()
        .map(|(i, m)| (m.clone(), i))
        .collect();
    let status_template = "{.metadata.name}|{.metadata.resourceVersion}|{.status.up}|{.status.late}|{.status.stale}|{.status.lastBeatTime}|{.status.conditions[?(@.type==\"Ready\")].status}|{.status.members[?(@.state==\"Stale\")].programId}|{.status.members[?(@.state==\"Late\")].programId}{\"\\n\"}";
    let sink = statuses.clone();
    let mut seen_versions: HashSet<String> = HashSet::new();
    let status_watch = watch(
        &stack,
        &ns.name,
        "heartbeatmonitors",
        status_template,
        stop_watching.clone(),
        watcher_pids.clone(),
        move |at, line| {
            let f: Vec<&str> = line.split('|').collect();
            let (Some(name), Some(rv)) = (f.first(), f.get(1)) else {
                return;
            };
            let Some(&monitor) = monitor_index.get(*name) else {
                return;
            };
            // A status field is empty before the first write.
            if f.get(2).is_none_or(|s| s.is_empty()) || !seen_versions.insert(rv.to_string()) {
                return;
            }
            let num = |i: usize| f.get(i).and_then(|s| s.parse().ok()).unwrap_or(0);
            let list = |i: usize| -> Vec<String> {
                f.get(i)
                    .map(|s| {
                        s.split(' ')
                            .filter(|x| !x.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let seen = StatusSeen {
                arrival_ms: at,
                monitor,
                up: num(2),
                late: num(3),
                stale: num(4),
                last_beat_ms: f.get(5).and_then(|s| parse_ms(s)),
                ready: f.get(6).is_some_and(|s| *s == conditions::TRUE),
                stale_members: list(7),
                late_members: list(8),
            };
            if let Ok(mut s) = sink.lock() {
                s.push(seen);
            }
        },
    );
    let event_template = "{.metadata.name}|{.reason}|{.eventTime}|{.note}{\"\\n\"}";
    let sink = events.clone();
    let mut seen_events: HashSet<String> = HashSet::new();
    let event_watch = watch(
        &stack,
        &ns.name,
        "events.v1.events.k8s.io",
        event_template,
        stop_watching.clone(),
        watcher_pids.clone(),
        move |at, line| {
            let f: Vec<&str> = line.splitn(4, '|').collect();
            let (Some(name), Some(reason)) = (f.first(), f.get(1)) else {
                return;
            };
            if name.is_empty() || !seen_events.insert(name.to_string()) {
                return;
            }
            let note = f.get(3).copied().unwrap_or_default();
            let program = note
                .split_once("program ")
                .and_then(|(_, rest)| rest.split([' ', ')']).next())
                .map(str::to_string);
            let ev = EventSeen {
                arrival_ms: at,
                reason: reason.to_string(),
                event_time_us: f
                    .get(2)
                    .and_then(|s| heartbeat_crds::beat::parse_timestamp(s.trim()).ok())
                    .map(|t| t.as_microsecond()),
                program,
            };
            if let Ok(mut e) = sink.lock() {
                e.push(ev);
            }
        },
    );

    // The generator.
    let deliveries = Arc::new(Mutex::new(Deliveries {
        beats: vec![Vec::new(); plan.monitors.len()],
        last: vec![0; plan.members.len()],
        delivered: 0,
        failed: 0,
        log_append: 0,
    }));
    let producer: ThreadedProducer<Reports> = ClientConfig::new()
        .set("bootstrap.servers", &stack.kafka_bootstrap)
        .set("linger.ms", args.linger_ms.to_string())
        .set("acks", "1")
        .set("queue.buffering.max.messages", "1000000")
        .set("message.timeout.ms", "30000")
        .create_with_context(Reports(deliveries.clone()))
        .expect("kafka producer");
    let t0 = Instant::now();
    let t0_ms = unix_ms();
    let generating = Arc::new(AtomicBool::new(true));
    let generator = {
        let plan = plan.clone();
        let generating = generating.clone();
        let interval = args.interval;
        std::thread::spawn(move || {
            let n = plan.order.len() as u64;
            let slot_ns = f64::from(interval) * 1e9 / n as f64;
            let mut k: u64 = 0;
            let mut sent = 0u64;
            let mut queue_full = 0u64;
            loop {
                let elapsed = t0.elapsed();
                if elapsed >= duration {
                    break;
                }
                // Every beat whose moment has come: beat k is due at k * slot.
                let due = (elapsed.as_nanos() as f64 / slot_ns) as u64 + 1;
                let silent = elapsed >= stop_at;
                while k < due {
                    let member = plan.order[(k % n) as usize];
                    let seq = k / n;
                    k += 1;
                    if silent && plan.stopped.contains(&member) {
                        continue;
                    }
                    let m = &plan.members[member];
                    let value = format!(
                        "{{\"timestamp\":\"{}\",\"program_id\":\"{}\",\"seq\":{seq},\"interval_secs\":{interval}}}",
                        iso(unix_us()),
                        m.program
                    );
                    let mut record = BaseRecord::with_opaque_to(
                        &plan.topics[m.monitor],
                        Box::new((member, m.monitor)),
                    )
                    .key(&m.key)
                    .payload(&value);
                    loop {
                        match producer.send(record) {
                            Ok(()) => {
                                sent += 1;
                                break;
                            }
                            Err((
                                KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                                r,
                            )) => {
                                queue_full += 1;
                                record = r;
                                std::thread::sleep(Duration::from_millis(5));
                            }
                            Err((e, _)) => {
                                eprintln!("[scale] produce failed: {e}");
                                break;
                            }
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            generating.store(false, Ordering::Relaxed);
            let _ = producer.flush(Duration::from_secs(30));
            (sent, queue_full)
        })
    };

    // The monitors, once beats flow (in chunks: 100 monitors are megabytes of YAML).
    let label = op.monitor_label().1;
    let mut start = 0;
    while start < plan.monitors.len() {
        let end = (start + 10).min(plan.monitors.len());
        let yaml = monitors_yaml(&plan, &args, &label, start..end);
        let mut cmd = stack.kubectl();
        cmd.args(["apply", "--server-side", "-n", &ns.name, "-f", "-"]);
        let (ok, _, err) = run_with_stdin(&mut cmd, &yaml);
        assert!(ok, "applying the monitors failed: {err}");
        start = end;
    }
    let applied_ms = unix_ms();
    eprintln!(
        "[scale] monitors applied {:.1} s after the first beat",
        (applied_ms - t0_ms) as f64 / 1000.0
    );

    // Samples until the generator is done, and a few seconds more.
    let clk_tck: u64 = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100);
    let metrics_url = format!("http://{}/metrics", op.admin);
    let mut samples: Vec<Sample> = Vec::new();
    let mut steady_ms: Option<i64> = None;
    let mut next_report = Instant::now();
    let tail = Duration::from_secs(3);
    loop {
        let done = !generating.load(Ordering::Relaxed);
        let (_, text, _) = heartbeat_e2e::stack::run(Command::new("curl").args([
            "-sf",
            "--noproxy",
            "*",
            "--max-time",
            "5",
            &metrics_url,
        ]));
        let m = heartbeat_e2e::metrics::parse(&text);
        let watchers: Vec<u32> = watcher_pids.lock().map(|v| v.clone()).unwrap_or_default();
        let sample = Sample {
            at_ms: unix_ms(),
            op_ticks: cpu_ticks(op_pid).unwrap_or_default(),
            op_rss_kib: rss_kib(op_pid).unwrap_or_default(),
            op_threads: status_field(op_pid, "Threads").unwrap_or_default(),
            self_ticks: cpu_ticks(std::process::id()).unwrap_or_default(),
            self_rss_kib: rss_kib(std::process::id()).unwrap_or_default(),
            watchers_ticks: watchers.iter().filter_map(|p| cpu_ticks(*p)).sum(),
            stack_ticks: stack_pids.map(|p| p.and_then(cpu_ticks).unwrap_or_default()),
            machine: machine_ticks().unwrap_or_default(),
            lag: heartbeat_e2e::metrics::sum(&m, "heartbeat_operator_consumer_lag_messages", &[]),
            status_writes: m
                .iter()
                .filter(|s| s.name == "heartbeat_operator_status_writes_total")
                .filter_map(|s| Some((s.labels.get("monitor")?.clone(), s.value)))
                .collect(),
            events_suppressed: heartbeat_e2e::metrics::sum(
                &m,
                "heartbeat_operator_events_suppressed_total",
                &[],
            ),
            reconcile_errors: heartbeat_e2e::metrics::sum(
                &m,
                "heartbeat_operator_reconcile_errors_total",
                &[],
            ),
        };
        if steady_ms.is_none() {
            // Steady: every monitor Ready with all its members Up.
            let s = statuses.lock().map(|s| s.clone()).unwrap_or_default();
            let mut latest: HashMap<usize, &StatusSeen> = HashMap::new();
            for x in &s {
                latest.insert(x.monitor, x);
            }
            let all_up = (0..plan.monitors.len()).all(|m| {
                latest
                    .get(&m)
                    .is_some_and(|x| x.ready && x.up as usize == plan.of_monitor[m].len())
            });
            if all_up {
                steady_ms = s.iter().map(|x| x.arrival_ms).max();
                eprintln!(
                    "[scale] all {} members Up {:.1} s after the monitors were applied",
                    args.members,
                    (steady_ms.unwrap_or(applied_ms) - applied_ms) as f64 / 1000.0
                );
            }
        }
        if Instant::now() >= next_report {
            let d = deliveries
                .lock()
                .map(|d| (d.delivered, d.failed))
                .unwrap_or_default();
            eprintln!(
                "[scale] t={:>4}s delivered {} failed {} | operator rss {} MiB | lag {} | status writes seen {}",
                t0.elapsed().as_secs(),
                d.0,
                d.1,
                sample.op_rss_kib / 1024,
                sample.lag + 0.0,
                statuses.lock().map(|s| s.len()).unwrap_or_default()
            );
            next_report = Instant::now() + Duration::from_secs(30);
        }
        samples.push(sample);
        if done && t0.elapsed() >= duration + tail {
            break;
        }
        std::thread::sleep(Duration::from_secs(args.sample_every));
    }
    let end_ms = t0_ms + duration.as_millis() as i64;
    let (sent, queue_full) = generator.join().expect("the generator thread");
    stop_watching.store(true, Ordering::Relaxed);
    for pid in watcher_pids.lock().map(|v| v.clone()).unwrap_or_default() {
        // Only the watches still running (a pid not reused yet: checked just before).
        if cpu_ticks(pid).is_some() {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
    }
    let _ = status_watch.join();
    let _ = event_watch.join();
    if let Some(path) = &args.keep_log {
        let _ = std::fs::write(path, op.log());
    }
    let op_log = op.log();
    let (warns, errors) = op_log.lines().fold((0, 0), |(w, e), l| {
        (
            w + usize::from(l.contains(" WARN ")),
            e + usize::from(l.contains(" ERROR ")),
        )
    });

    let published = published_events(&op_log);
    let ok = summarize(&Summary {
        args: &args,
        plan: &plan,
        deliveries: &deliveries.lock().expect("deliveries"),
        statuses: &statuses.lock().expect("statuses"),
        events: &events.lock().expect("events"),
        published: &published,
        samples: &samples,
        t0_ms,
        applied_ms,
        steady_ms,
        end_ms,
        stop_at_ms: t0_ms + stop_at.as_millis() as i64,
        interval_ms,
        stale_after_ms,
        clk_tck,
        sent,
        queue_full,
        warns,
        errors,
    });
    drop(op);
    delete_topics(&stack.kafka_bootstrap, &plan.topics);
    drop(ns);
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

struct Summary<'a> {
    args: &'a Args,
    plan: &'a Plan,
    deliveries: &'a Deliveries,
    statuses: &'a [StatusSeen],
    events: &'a [EventSeen],
    /// (publish time in µs from the operator's log, reason, program).
    published: &'a [(i64, String, String)],
    samples: &'a [Sample],
    t0_ms: i64,
    applied_ms: i64,
    steady_ms: Option<i64>,
    end_ms: i64,
    stop_at_ms: i64,
    interval_ms: i64,
    stale_after_ms: i64,
    clk_tck: u64,
    sent: u64,
    queue_full: u64,
    warns: usize,
    errors: usize,
}

/// Prints the summary; false when a member that kept beating was Stale or alarmed about.
fn summarize(s: &Summary<'_>) -> bool {
    let plan = s.plan;
    let d = s.deliveries;
    let steady = s.steady_ms.unwrap_or(s.applied_ms);
    let name_of: HashMap<&str, usize> = plan
        .members
        .iter()
        .enumerate()
        .map(|(i, m)| (m.program.as_str(), i))
        .collect();
    let is_stopped = |p: &str| name_of.get(p).is_some_and(|i| plan.stopped.contains(i));
    println!();
    println!("== scale: {} ==", iso(s.t0_ms * 1000));
    println!(
        "members {} in {} monitors (one topic each), interval {} s, Stale after {} s; beating {} s; {} members silent from t={} s",
        plan.members.len(),
        plan.monitors.len(),
        s.args.interval,
        s.stale_after_ms / 1000,
        s.args.duration,
        plan.stopped.len(),
        (s.stop_at_ms - s.t0_ms) / 1000
    );
    println!(
        "beats: sent {} delivered {} failed {} (LogAppendTime {}), producer queue-full waits {}",
        s.sent, d.delivered, d.failed, d.log_append, s.queue_full
    );
    match s.steady_ms {
        Some(t) => println!(
            "all members Up {:.1} s after the monitors were applied",
            (t - s.applied_ms) as f64 / 1000.0
        ),
        None => println!("NOT every member was Up at the same time in the run"),
    }

    // False alarms: any Stale or Late among members that kept beating.
    let mut max_false_stale = 0usize;
    let mut max_false_late = 0usize;
    let mut false_stale: BTreeMap<String, i64> = BTreeMap::new();
    let mut max_stale = 0u32;
    for x in s.statuses {
        max_stale = max_stale.max(x.stale);
        let fs: Vec<&String> = x.stale_members.iter().filter(|p| !is_stopped(p)).collect();
        // The list holds the 50 worst; a count above what it names is false too.
        let listed_stopped = x.stale_members.len() - fs.len();
        max_false_stale = max_false_stale.max((x.stale as usize).saturating_sub(listed_stopped));
        for p in fs {
            false_stale
                .entry(p.clone())
                .or_insert(x.arrival_ms - s.t0_ms);
        }
        let fl = x.late_members.iter().filter(|p| !is_stopped(p)).count();
        let listed_stopped_late = x.late_members.len() - fl;
        max_false_late = max_false_late.max((x.late as usize).saturating_sub(listed_stopped_late));
    }
    let stale_events: Vec<&EventSeen> = s
        .events
        .iter()
        .filter(|e| e.reason == "HeartbeatStale")
        .collect();
    let false_events = stale_events
        .iter()
        .filter(|e| !e.program.as_deref().is_some_and(is_stopped))
        .count();
    let published_stale: Vec<&(i64, String, String)> = s
        .published
        .iter()
        .filter(|(_, r, _)| r == "HeartbeatStale")
        .collect();
    let false_published = published_stale
        .iter()
        .filter(|(_, _, p)| !is_stopped(p))
        .count();
    let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
    for e in s.events {
        *reasons.entry(e.reason.as_str()).or_default() += 1;
    }
    println!(
        "false Stale: max {} at once (members that kept beating; max Stale count incl. the silenced: {}), {} distinct {:?}",
        max_false_stale,
        max_stale,
        false_stale.len(),
        false_stale.iter().take(5).collect::<Vec<_>>()
    );
    println!("false Late (a warning, not an alarm): max {max_false_late} at once");
    println!(
        "HeartbeatStale Events published (operator log): {} for silenced members, {} false; \
         Event objects seen by the watch: {} HeartbeatStale ({} false), by reason {:?} (repeats fold into series)",
        published_stale.len() - false_published,
        false_published,
        stale_events.len(),
        false_events,
        reasons
    );

    // Status writes: each new resourceVersion is one write.
    let mut by_monitor: Vec<Vec<&StatusSeen>> = vec![Vec::new(); plan.monitors.len()];
    for x in s.statuses {
        by_monitor[x.monitor].push(x);
    }
    let mut gaps: Vec<i64> = Vec::new();
    let mut writes_steady: Vec<usize> = Vec::new();
    for list in &by_monitor {
        let times: Vec<i64> = list
            .iter()
            .map(|x| x.arrival_ms)
            .filter(|t| *t >= steady && *t <= s.end_ms)
            .collect();
        writes_steady.push(times.len());
        gaps.extend(times.windows(2).map(|w| w[1] - w[0]));
    }
    gaps.sort_unstable();
    let steady_secs = ((s.end_ms - steady) as f64 / 1000.0).max(1.0);
    let too_close = gaps.iter().filter(|g| **g < s.interval_ms - 500).count();
    println!(
        "status writes (watch, steady {:.0} s): per monitor min {} max {} ({:.2}/interval); gap min {} p50 {} max {}; {} gaps under interval-0.5 s, {} over 60 s",
        steady_secs,
        writes_steady.iter().min().copied().unwrap_or_default(),
        writes_steady.iter().max().copied().unwrap_or_default(),
        writes_steady.iter().sum::<usize>() as f64
            / plan.monitors.len() as f64
            / (steady_secs * 1000.0 / s.interval_ms as f64),
        secs(gaps.first().copied().unwrap_or_default()),
        secs(percentile(&gaps, 0.5)),
        secs(gaps.last().copied().unwrap_or_default()),
        too_close,
        gaps.iter().filter(|g| **g > 60_000).count()
    );
    if let Some(last) = s.samples.last() {
        let w: Vec<f64> = last.status_writes.values().copied().collect();
        println!(
            "status writes (operator metric heartbeat_operator_status_writes_total, whole run): {} in all, per monitor {} to {}",
            w.iter().sum::<f64>(),
            w.iter().copied().fold(f64::INFINITY, f64::min),
            w.iter().copied().fold(0.0, f64::max)
        );
    }

    // CPU and memory over the steady part.
    let window: Vec<&Sample> = s
        .samples
        .iter()
        .filter(|x| x.at_ms >= steady && x.at_ms <= s.end_ms)
        .collect();
    if let (Some(a), Some(b)) = (window.first(), window.last())
        && b.at_ms > a.at_ms
    {
        let wall = (b.at_ms - a.at_ms) as f64 / 1000.0;
        let tck = s.clk_tck as f64;
        let cores = |x: u64, y: u64| y.saturating_sub(x) as f64 / tck / wall;
        let machine =
            (b.machine.0 - a.machine.0) as f64 / (b.machine.1 - a.machine.1).max(1) as f64;
        println!(
            "CPU over {:.0} s steady (cores): operator {:.3}, generator {:.3}, kubectl watches {:.3}, kube-apiserver {:.3}, etcd {:.3}, kafka {:.3}; machine {:.0}% busy of {} cores (others' work included)",
            wall,
            cores(a.op_ticks, b.op_ticks),
            cores(a.self_ticks, b.self_ticks),
            cores(a.watchers_ticks, b.watchers_ticks),
            cores(a.stack_ticks[0], b.stack_ticks[0]),
            cores(a.stack_ticks[1], b.stack_ticks[1]),
            cores(a.stack_ticks[2], b.stack_ticks[2]),
            machine * 100.0,
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        );
    }
    if let Some(last) = s.samples.last() {
        println!(
            "operator CPU whole run {:.1} s; RSS max {} MiB, final {} MiB; threads max {}, final {}; generator RSS max {} MiB",
            last.op_ticks as f64 / s.clk_tck as f64,
            s.samples
                .iter()
                .map(|x| x.op_rss_kib)
                .max()
                .unwrap_or_default()
                / 1024,
            last.op_rss_kib / 1024,
            s.samples
                .iter()
                .map(|x| x.op_threads)
                .max()
                .unwrap_or_default(),
            last.op_threads,
            s.samples
                .iter()
                .map(|x| x.self_rss_kib)
                .max()
                .unwrap_or_default()
                / 1024
        );
        let lags: Vec<f64> = window.iter().map(|x| x.lag).collect();
        println!(
            "consumer lag (heartbeat_operator_consumer_lag_messages, all topics): max {} in steady state, final {}; reconcile errors {}, Events suppressed {}",
            lags.iter().copied().fold(0.0, f64::max),
            last.lag + 0.0,
            last.reconcile_errors + 0.0,
            last.events_suppressed + 0.0
        );
    }
    println!("operator log: {} WARN, {} ERROR lines", s.warns, s.errors);

    // Beat-to-status latency: a beat's broker time to the arrival (at the
    // watch) of the first status write whose lastBeatTime covers it.
    // lastBeatTime is a metav1.Time (whole seconds, truncated), so a write
    // with lastBeatTime L covers a beat b for certain when L >= b, and may
    // cover it when L + 1 s > b: the two give an upper and a lower bound.
    let (mut upper, mut lower) = (Vec::new(), Vec::new());
    let mut uncovered = 0u64;
    for (m, list) in by_monitor.iter().enumerate() {
        let mut writes: Vec<(i64, i64)> = list
            .iter()
            .filter_map(|x| Some((x.arrival_ms, x.last_beat_ms?)))
            .collect();
        writes.sort_unstable();
        // Running maximum of lastBeatTime, so the search below is monotone.
        let mut covered = Vec::with_capacity(writes.len());
        let mut best = i64::MIN;
        for (_, l) in &writes {
            best = best.max(*l);
            covered.push(best);
        }
        let mut beats = d.beats[m].clone();
        beats.sort_unstable();
        for b in beats.into_iter().filter(|b| *b >= steady && *b <= s.end_ms) {
            let certain = covered.partition_point(|l| *l < b);
            let maybe = covered.partition_point(|l| *l + 1000 <= b);
            match writes.get(certain) {
                Some((at, _)) => upper.push(at - b),
                None => uncovered += 1,
            }
            if let Some((at, _)) = writes.get(maybe) {
                lower.push(at - b);
            }
        }
    }
    upper.sort_unstable();
    lower.sort_unstable();
    println!(
        "beat-to-status latency ({} beats in steady state; broker time -> watch arrival of the first status write covering it; \
status writes are held to one per interval by design, so ~interval/2 median is expected; bounds from lastBeatTime's whole seconds): \
p50 {}..{}, p99 {}..{}, max {}; {} beats after the last write",
        upper.len(),
        secs(percentile(&lower, 0.5)),
        secs(percentile(&upper, 0.5)),
        secs(percentile(&lower, 0.99)),
        secs(percentile(&upper, 0.99)),
        secs(upper.last().copied().unwrap_or_default()),
        uncovered
    );

    // Stale Events of the silenced members against their deadlines.
    let mut by_event_time = Vec::new();
    let mut by_log = Vec::new();
    let mut by_arrival = Vec::new();
    let mut by_status = Vec::new();
    let mut missing = Vec::new();
    let mut stopped: Vec<usize> = plan.stopped.iter().copied().collect();
    stopped.sort_unstable();
    for i in stopped {
        let p = &plan.members[i].program;
        let deadline = d.last[i] + s.stale_after_ms;
        if let Some(e) = stale_events
            .iter()
            .find(|e| e.program.as_deref() == Some(p.as_str()))
        {
            if let Some(us) = e.event_time_us {
                by_event_time.push(us / 1000 - deadline);
            }
            by_arrival.push(e.arrival_ms - deadline);
        }
        match published_stale.iter().find(|(_, _, q)| q == p) {
            Some((us, _, _)) => by_log.push(us / 1000 - deadline),
            None => missing.push(p.clone()),
        }
        if let Some(x) = s
            .statuses
            .iter()
            .find(|x| x.stale_members.iter().any(|q| q == p))
        {
            by_status.push(x.arrival_ms - deadline);
        }
    }
    for v in [
        &mut by_event_time,
        &mut by_log,
        &mut by_arrival,
        &mut by_status,
    ] {
        v.sort_unstable();
    }
    let dist = |v: &[i64]| {
        format!(
            "min {} p50 {} max {} (n={})",
            secs(v.first().copied().unwrap_or_default()),
            secs(percentile(v, 0.5)),
            secs(v.last().copied().unwrap_or_default()),
            v.len()
        )
    };
    println!(
        "Stale lateness (deadline = last beat's broker time + {} s; the member is Stale once silent longer): \
         HeartbeatStale published (log) - deadline {}; Event eventTime - deadline {} (Events not folded into a series); \
         their arrival at the watch {}; first status listing it Stale {}; no Event for {:?}",
        s.stale_after_ms / 1000,
        dist(&by_log),
        dist(&by_event_time),
        dist(&by_arrival),
        dist(&by_status),
        missing
    );
    println!("  each (ms, published - deadline): {by_log:?}");
    let ok = s.steady_ms.is_some()
        && max_false_stale == 0
        && false_events == 0
        && false_published == 0
        && d.failed == 0;
    println!(
        "result: {}",
        if ok {
            "PASS (no member that kept beating was Stale or alarmed about)"
        } else {
            "FAIL"
        }
    );
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_render_as_the_parser_reads_them() {
        for us in [
            0,
            1_700_000_000_123_456,
            951_782_400_000_001,
            4_102_444_799_999_999,
        ] {
            let s = iso(us);
            let t = heartbeat_crds::beat::parse_timestamp(&s).expect("parses");
            assert_eq!(t.as_microsecond(), us, "{s}");
        }
        assert_eq!(iso(0), "1970-01-01T00:00:00.000000+00:00");
    }

    #[test]
    fn silenced_members_are_spread_and_distinct() {
        let args = Args::parse_from([
            "x",
            "--members",
            "2500",
            "--per-monitor",
            "1000",
            "--stop",
            "7",
        ]);
        let plan = Plan::new(&args, "t");
        assert_eq!(plan.monitors.len(), 3);
        assert_eq!(plan.of_monitor[2].len(), 500);
        assert_eq!(plan.stopped.len(), 7);
        assert_eq!(plan.order.len(), 2500);
        let monitors: HashSet<usize> = plan
            .stopped
            .iter()
            .map(|&i| plan.members[i].monitor)
            .collect();
        assert_eq!(monitors.len(), 3);
    }

    #[test]
    fn published_events_are_read_from_the_operator_log() {
        let log = "2026-11-27T10:38:49.477773Z  INFO reconciling object{object.ref=HeartbeatMonitor.v1alpha1.heartbeat.dev/scale-000.hb-scale-520301871 object.reason=reconciler requested retry}: heartbeat_operator::controller::events: event monitor=Some(\"scale-000\") reason=HeartbeatStale note=Some(\"program scale-m000-p0000 is Stale: no beat for over 35s\")\nnot an event line";
        let got = published_events(log);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].1, "HeartbeatStale");
        assert_eq!(got[0].2, "scale-m000-p0000");
        assert!(got[0].0 > 1_700_000_000_000_000);
    }
}
