//! A combined fault run: random faults, one after another, against 50
//! members (10 injected pods of a Deployment, 40 programs outside the
//! cluster) watched by two operator replicas. It stops the broker and the
//! API server, so it runs on a stack of its own ([`Stack::alone`]).
//!
//! Seeded: the seed is printed at the start and in every failure, and
//! `HB_CHAOS_SEED=N` replays the same faults in the same order with the
//! same durations (what the machine does in between is not replayed).
//! `HB_CHAOS_SECS` sets how long faults are thrown (default 120 s; the
//! documented long run, `e2e/bench/chaos`, uses 600).
//!
//! Tests never assert on speed: every wait is a poll with a generous bound.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use heartbeat_crds::HeartbeatMonitorStatus;
use heartbeat_crds::monitor::MemberState;
use heartbeat_e2e::kube_env::install_crds;
use heartbeat_e2e::monitor::{MonitorBuilder, member, status_from_json};
use heartbeat_e2e::operator::OperatorProcess;
use heartbeat_e2e::stack::{run, run_with_stdin};
use heartbeat_e2e::{Stack, TestNamespace, TestTopic};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_heartbeat-operator");
/// The bound of the final convergence: generous, a slow machine is not a failure.
const T: Duration = Duration::from_secs(240);
const PODS: u32 = 10;
const EXTERNAL: usize = 40;
/// A beat every 2 s, Stale after 3 missed beats plus 15 s of grace (21 s
/// of silence): faults last up to 30 s, so some outlast the window.
const INTERVAL_SECS: u64 = 2;
const GRACE_SECS: u64 = 15;
/// External programs stopped (with a `stopping` beat) at most.
const MAX_EXTERNAL_STOPS: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    /// The broker stopped for a while (every producer and consumer loses it).
    BrokerDown,
    /// The API server stopped for a while.
    ApiServerDown,
    /// One operator replica SIGKILLed, started again after a while.
    ReplicaKilled,
    /// An injected pod deleted (the Deployment replaces it).
    PodDeleted,
    /// The Deployment scaled down, then back up after a while.
    ScaledDown,
    /// The broker Secret rewritten with another client.id (a new consumer).
    SecretRotated,
    /// An external program says `stopping` and goes quiet.
    ExternalStopped,
}

const FAULTS: [Fault; 7] = [
    Fault::BrokerDown,
    Fault::ApiServerDown,
    Fault::ReplicaKilled,
    Fault::PodDeleted,
    Fault::ScaledDown,
    Fault::SecretRotated,
    Fault::ExternalStopped,
];

/// Programs outside the cluster: one producer beating for each running
/// program every interval, as an OpenMSIStream program would; a stopped
/// one sends a last `stopping` beat.
struct Externals {
    running: Arc<Mutex<Vec<bool>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn program(i: usize) -> String {
    format!("lab-{i}")
}

fn beat(phase: &str, seq: u64) -> String {
    format!(
        r#"{{"timestamp": "{}", "phase": "{phase}", "seq": {seq}}}"#,
        jiff::Timestamp::now()
    )
}

impl Externals {
    fn start(bootstrap: &str, topic: &str) -> Externals {
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("linger.ms", "20")
            .create()
            .expect("producer");
        let running = Arc::new(Mutex::new(vec![true; EXTERNAL]));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s, topic) = (running.clone(), stop.clone(), topic.to_string());
        let thread = std::thread::spawn(move || {
            let mut seq = 0;
            let mut said_stop = [false; EXTERNAL];
            while !s.load(Ordering::Relaxed) {
                seq += 1;
                let alive = r.lock().map(|g| g.clone()).unwrap_or_default();
                for (i, up) in alive.iter().enumerate() {
                    let phase = match (up, said_stop[i]) {
                        (true, _) => "running",
                        (false, false) => "stopping",
                        (false, true) => continue,
                    };
                    said_stop[i] = !up;
                    let key = format!("{}_heartbeat", program(i));
                    let value = beat(phase, seq);
                    // A full queue (a long broker outage) loses the beat, as
                    // it would in the wild.
                    let _ = producer.send(BaseRecord::to(&topic).key(&key).payload(&value));
                }
                producer.poll(Duration::from_millis(0));
                let until = Instant::now() + Duration::from_secs(INTERVAL_SECS);
                while Instant::now() < until && !s.load(Ordering::Relaxed) {
                    producer.poll(Duration::from_millis(100));
                }
            }
            let _ = producer.flush(Duration::from_secs(1));
        });
        Externals {
            running,
            stop,
            thread: Some(thread),
        }
    }

    fn stop_program(&self, i: usize) {
        if let Ok(mut g) = self.running.lock() {
            g[i] = false;
        }
    }

    fn running(&self) -> Vec<usize> {
        self.running
            .lock()
            .map(|g| (0..EXTERNAL).filter(|i| g[*i]).collect())
            .unwrap_or_default()
    }
}

impl Drop for Externals {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads the monitor's status every second throughout the run, faults
/// included, and keeps the first one that shows a member Stale: checking
/// only between faults would miss a false alarm raised and cleared within
/// one.
struct StaleWatch {
    stop: Arc<AtomicBool>,
    first_stale: Arc<Mutex<Option<String>>>,
    reads: Arc<std::sync::atomic::AtomicUsize>,
    started: Instant,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StaleWatch {
    fn start(stack: &'static Stack, namespace: &str) -> StaleWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let first_stale = Arc::new(Mutex::new(None));
        let reads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (s, f, r, ns) = (
            stop.clone(),
            first_stale.clone(),
            reads.clone(),
            namespace.to_string(),
        );
        let started = Instant::now();
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let (ok, out, _) = run(stack.kubectl().args([
                    "-n",
                    &ns,
                    "get",
                    "hbm",
                    "chaos",
                    "-o",
                    "json",
                    "--request-timeout=5s",
                ]));
                if let Some(status) = ok.then(|| status_from_json(&out).ok()).flatten() {
                    r.fetch_add(1, Ordering::Relaxed);
                    let stale_member =
                        (status.members.iter()).any(|m| m.state == MemberState::Stale);
                    if (status.stale > 0 || stale_member)
                        && let Ok(mut first) = f.lock()
                        && first.is_none()
                    {
                        *first = Some(format!(
                            "t+{}s (watch): {status:#?}",
                            started.elapsed().as_secs()
                        ));
                    }
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        });
        StaleWatch {
            stop,
            first_stale,
            reads,
            started,
            thread: Some(thread),
        }
    }

    fn first_stale(&self) -> Option<String> {
        self.first_stale.lock().ok().and_then(|g| g.clone())
    }

    fn reads(&self) -> usize {
        self.reads.load(Ordering::Relaxed)
    }
}

impl Drop for StaleWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts a stopped component again if the run panics before it does (its
/// start failing, say), so the tests after this one find the stack up.
struct RestartOnPanic(&'static Stack, &'static str);

impl Drop for RestartOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = run(heartbeat_e2e::stack::stack_command(self.0.layout.root())
                .env("HB_COMPONENTS", "")
                .args(["start", self.1]));
        }
    }
}

/// A pod of the Deployment: its name, whether it has the sidecar, and when
/// the API server admitted it.
struct IngestPod {
    name: String,
    injected: bool,
    created: Option<jiff::Timestamp>,
}

struct Run {
    stack: &'static Stack,
    ns: TestNamespace,
    ops: Vec<OperatorProcess>,
    externals: Externals,
    seed: u64,
    log: Vec<String>,
    started: Instant,
    watch: Option<StaleWatch>,
    /// When the replica serving the webhook (replica 0, whose URL the
    /// webhook configuration names) was down: the only times a pod may be
    /// admitted without the sidecar (failurePolicy Ignore).
    webhook_down: Vec<(jiff::Timestamp, jiff::Timestamp)>,
}

impl Run {
    /// Every failure names the seed and what was done.
    fn fail(&self, what: &str) -> ! {
        let tails: Vec<String> = self.ops.iter().map(|o| o.log_tail(30)).collect();
        panic!(
            "{what}\nseed {seed} (replay: HB_CHAOS_SEED={seed})\nfaults:\n{}\noperator logs (tails):\n{}",
            self.log.join("\n"),
            tails.join("\n---\n"),
            seed = self.seed,
        );
    }

    fn note(&mut self, what: String) {
        let line = format!("t+{:>3}s {what}", self.started.elapsed().as_secs());
        eprintln!("chaos: {line}");
        self.log.push(line);
    }

    fn kubectl(&self, args: &[&str]) -> (bool, String, String) {
        run(self.stack.kubectl().args(["-n", &self.ns.name]).args(args))
    }

    fn status(&self) -> Option<HeartbeatMonitorStatus> {
        let (ok, out, _) = self.kubectl(&["get", "hbm", "chaos", "-o", "json"]);
        ok.then(|| status_from_json(&out).ok()).flatten()
    }

    /// A Stale member now, or at any time the watch saw, is a false alarm:
    /// every member beats or stopped. The status must be readable (the API
    /// server is up between faults): a failing kubectl is not a pass.
    fn check_no_stale(&self) {
        if let Some(first) = self.watch.as_ref().and_then(StaleWatch::first_stale) {
            self.fail(&format!("a member was Stale: {first}"));
        }
        let by = Instant::now() + Duration::from_secs(60);
        let status = loop {
            match self.status() {
                Some(s) => break s,
                None if Instant::now() > by => self.fail("the monitor's status is unreadable"),
                None => std::thread::sleep(Duration::from_secs(1)),
            }
        };
        if status.stale > 0 {
            self.fail(&format!("a member is Stale: {status:#?}"));
        }
    }

    /// The Deployment's pods (not being deleted); a failed listing fails.
    fn ingest_pods(&self) -> Vec<IngestPod> {
        let (ok, out, err) = self.kubectl(&["get", "pods", "-l", "app=ingest", "-o", "json"]);
        let list: Value = match ok.then(|| serde_json::from_str(&out).ok()).flatten() {
            Some(list) => list,
            None => self.fail(&format!("listing the pods failed: {err}")),
        };
        list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .map(|p| IngestPod {
                name: p["metadata"]["name"].as_str().unwrap_or("?").to_string(),
                injected: p["spec"]["initContainers"]
                    .as_array()
                    .into_iter()
                    .chain(p["spec"]["containers"].as_array())
                    .flatten()
                    .any(|c| c["name"] == "heartbeat"),
                created: p["metadata"]["creationTimestamp"]
                    .as_str()
                    .and_then(|t| t.parse().ok()),
            })
            .collect()
    }

    fn delete_pod(&self, pod: &str) {
        let (ok, _, err) = self.kubectl(&["delete", "pod", pod, "--wait=false"]);
        if !ok {
            self.fail(&format!("deleting pod {pod} failed: {err}"));
        }
    }

    /// Whether `pod` was admitted while the webhook's replica was down (with
    /// two seconds of margin each side: creation times are whole seconds).
    fn admitted_while_webhook_down(&self, pod: &IngestPod) -> bool {
        let margin = jiff::SignedDuration::from_secs(2);
        pod.created.is_some_and(|at| {
            self.webhook_down
                .iter()
                .any(|(from, to)| at >= *from - margin && at <= *to + margin)
        })
    }

    /// Whether the API server logged a webhook call it could not complete
    /// (and so admitted a pod unchanged, `failurePolicy: Ignore`) within two
    /// seconds of when `pod` was admitted: a call that timed out under the
    /// faults' load, not a webhook that answered without injecting.
    fn failed_open_when_admitted(&self, pod: &IngestPod) -> bool {
        let Some(at) = pod.created else {
            return false;
        };
        let log = std::fs::read_to_string(self.stack.layout.log_file("kube-apiserver"))
            .unwrap_or_default();
        // klog lines start `W1207 11:35:37.123456`: the day and the UTC time.
        let day = at
            .to_zoned(jiff::tz::TimeZone::UTC)
            .strftime("%m%d")
            .to_string();
        let second = |t: jiff::Timestamp| {
            t.to_zoned(jiff::tz::TimeZone::UTC)
                .time()
                .duration_since(jiff::civil::Time::midnight())
                .as_secs()
        };
        let admitted = second(at);
        log.lines()
            .filter(|l| l.contains("failing open") && l.get(1..5) == Some(day.as_str()))
            .filter_map(|l| l.get(6..14)?.parse::<jiff::civil::Time>().ok())
            .any(|t| {
                let logged = t.duration_since(jiff::civil::Time::midnight()).as_secs();
                (logged - admitted).abs() <= 2
            })
    }

    fn scale(&self, replicas: u32) {
        let (ok, _, err) = self.kubectl(&[
            "scale",
            "deployment",
            "ingest",
            &format!("--replicas={replicas}"),
        ]);
        if !ok {
            self.fail(&format!("scale to {replicas}: {err}"));
        }
    }

    fn broker_secret(&self, client_id: &str) {
        let yaml = format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: kafka, namespace: {}}}\nstringData:\n  bootstrap.servers: \"{}\"\n  client.id: \"{client_id}\"\n",
            self.ns.name, self.stack.kafka_bootstrap
        );
        let (ok, _, err) = run_with_stdin(self.stack.kubectl().args(["apply", "-f", "-"]), &yaml);
        if !ok {
            self.fail(&format!("broker Secret: {err}"));
        }
    }

    fn ops_alive(&mut self, which: &[usize]) {
        for &i in which {
            if !self.ops[i].is_running() {
                let log = self.ops[i].log();
                self.fail(&format!("operator replica {i} exited:\n{log}"));
            }
        }
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|e| panic!("{name}={v:?} is not a number: {e}"))
    })
}

/// Rule: under random faults (broker down, API server down, an operator
/// replica SIGKILLed, pods deleted, the Deployment scaled down and up, the
/// broker Secret rotated, external programs stopping), none of which
/// silences a member that is still running for longer than an outage the
/// operator can see, no member is ever Stale and no `HeartbeatStale` Event
/// is raised; once the faults end (and pods admitted while the webhook was
/// down are recreated, as the `Injected` condition says), every running
/// member is Up, every stopped program Stopped, none Unknown or Pending.
#[tokio::test]
async fn random_faults_end_with_every_member_up_or_stopped_and_no_false_alarm() {
    let seed = env_u64("HB_CHAOS_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let budget = Duration::from_secs(env_u64("HB_CHAOS_SECS").unwrap_or(120));
    eprintln!("chaos: seed {seed} (replay: HB_CHAOS_SEED={seed}), faults for {budget:?}");
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);

    // Stops the broker and the API server: a stack of its own.
    let (stack, _alone) = Stack::alone();
    install_crds(stack);
    let first = OperatorProcess::start(stack, BIN.as_ref());
    let second = first.start_replica();
    let topic = TestTopic::create(&stack.kafka_bootstrap, "chaos").await;
    let ns = TestNamespace::create(stack, "chaos");
    first.enable_injection(&ns);
    let externals = Externals::start(&stack.kafka_bootstrap, &topic.name);
    let mut run = Run {
        stack,
        ns,
        ops: vec![first, second],
        externals,
        seed,
        log: Vec::new(),
        started: Instant::now(),
        watch: None,
        webhook_down: Vec::new(),
    };
    run.broker_secret("chaos-0");
    let expected: Vec<String> = (0..EXTERNAL).map(program).collect();
    let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
    let monitor = MonitorBuilder::new("chaos", &topic.name, (INTERVAL_SECS, GRACE_SECS))
        .labelled(&run.ops[0].monitor_label())
        .selecting_app("ingest")
        .expecting(&expected);
    run.ns.apply_monitor(&monitor.build());
    // The webhook decides from its cache: wait until it has seen the monitor.
    run.ns.wait_injects_app("ingest", T);
    run.ns.deploy_workers("ingest", PODS);
    let want_up = PODS + u32::try_from(EXTERNAL).expect("a few programs");
    let ready_by = Instant::now() + T;
    loop {
        match run.status() {
            Some(s) if s.up == want_up => break,
            s if Instant::now() > ready_by => run.fail(&format!("never all up: {s:#?}")),
            _ => std::thread::sleep(Duration::from_secs(1)),
        }
    }
    run.note(format!("all {want_up} members up; faults begin"));
    run.watch = Some(StaleWatch::start(stack, &run.ns.name));
    let mut api_down = Duration::ZERO;

    let mut thrown: BTreeMap<Fault, u32> = BTreeMap::new();
    let mut external_stops = 0;
    let mut rotations = 0;
    let faults_from = Instant::now();
    while faults_from.elapsed() < budget {
        let fault = FAULTS[rng.random_range(0..FAULTS.len())];
        let secs = rng.random_range(3..=30u64);
        let hold = Duration::from_secs(secs);
        match fault {
            Fault::BrokerDown => {
                run.note(format!("broker down for {secs}s"));
                let _restart = RestartOnPanic(run.stack, "kafka");
                run.stack.stop_kafka();
                std::thread::sleep(hold);
                run.stack.start_kafka();
            }
            Fault::ApiServerDown => {
                run.note(format!("API server down for {secs}s"));
                let down_from = Instant::now();
                let _restart = RestartOnPanic(run.stack, "apiserver");
                run.stack.stop_apiserver();
                std::thread::sleep(hold);
                run.stack.start_apiserver();
                api_down += down_from.elapsed();
            }
            Fault::ReplicaKilled => {
                let i = rng.random_range(0..run.ops.len());
                run.note(format!("operator replica {i} SIGKILLed for {secs}s"));
                let down_from = jiff::Timestamp::now();
                run.ops[i].kill();
                std::thread::sleep(hold);
                run.ops[i].restart();
                if i == 0 {
                    // Down until the webhook configuration names the new
                    // process and it injects again.
                    run.ns.wait_injects_app("ingest", T);
                    run.webhook_down.push((down_from, jiff::Timestamp::now()));
                }
            }
            Fault::PodDeleted => {
                let pods = run.ingest_pods();
                if pods.is_empty() {
                    continue;
                }
                let pod = &pods[rng.random_range(0..pods.len())].name;
                run.note(format!("pod {pod} deleted"));
                run.delete_pod(pod);
                std::thread::sleep(Duration::from_secs(3));
            }
            Fault::ScaledDown => {
                let to = rng.random_range(5..PODS);
                run.note(format!("scaled to {to} for {secs}s"));
                run.scale(to);
                std::thread::sleep(hold);
                run.scale(PODS);
            }
            Fault::SecretRotated => {
                rotations += 1;
                run.note(format!(
                    "broker Secret rotated (client.id chaos-{rotations})"
                ));
                run.broker_secret(&format!("chaos-{rotations}"));
                std::thread::sleep(Duration::from_secs(3));
            }
            Fault::ExternalStopped => {
                let alive = run.externals.running();
                if external_stops >= MAX_EXTERNAL_STOPS || alive.is_empty() {
                    continue;
                }
                let i = alive[rng.random_range(0..alive.len())];
                external_stops += 1;
                run.note(format!("{} stops", program(i)));
                run.externals.stop_program(i);
                std::thread::sleep(Duration::from_secs(3));
            }
        }
        *thrown.entry(fault).or_default() += 1;
        run.ops_alive(&[0, 1]);
        run.check_no_stale();
        std::thread::sleep(Duration::from_secs(rng.random_range(1..=5u64)));
    }
    run.note(format!("faults end: {thrown:?}"));

    // Converge: recreate, once, each pod admitted without the sidecar while
    // the webhook's replica was down or when the API server could not
    // complete its call (it logs failing open; what the Injected condition
    // tells a user to do); a pod admitted without it otherwise is a webhook
    // that answered without injecting, not a fault's doing.
    let stopped: Vec<usize> = (0..EXTERNAL)
        .filter(|i| !run.externals.running().contains(i))
        .collect();
    let want_up = PODS + u32::try_from(EXTERNAL - stopped.len()).expect("a few programs");
    let converge_from = Instant::now();
    let by = converge_from + T;
    let mut recreated: Vec<String> = Vec::new();
    let last = loop {
        run.ops_alive(&[0, 1]);
        let pods = run.ingest_pods();
        for pod in pods.iter().filter(|p| !p.injected) {
            if recreated.contains(&pod.name) {
                continue;
            }
            let why = if run.admitted_while_webhook_down(pod) {
                "admitted while the webhook was down"
            } else if run.failed_open_when_admitted(pod) {
                "the API server's call to the webhook failed then"
            } else {
                run.fail(&format!(
                    "pod {} was admitted without the sidecar at {:?}, when the webhook was up (down: {:?}) and the API server logged no failed call to it",
                    pod.name, pod.created, run.webhook_down
                ));
            };
            run.note(format!("recreating {} ({why})", pod.name));
            run.delete_pod(&pod.name);
            recreated.push(pod.name.clone());
        }
        run.check_no_stale();
        let status = run.status().unwrap_or_default();
        let settled = status.up == want_up
            && status.unknown == 0
            && status.pending == 0
            && status.late == 0
            && status.uninjected == 0
            && pods.len() == PODS as usize
            && pods.iter().all(|p| p.injected);
        if settled {
            break status;
        }
        if Instant::now() > by {
            let pods: Vec<(&str, bool)> =
                pods.iter().map(|p| (p.name.as_str(), p.injected)).collect();
            run.fail(&format!(
                "did not settle: want up {want_up}, pods {pods:?}\n{status:#?}"
            ));
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    let secs = converge_from.elapsed().as_secs();
    run.note(format!(
        "settled in {secs}s (recreated {} uninjected pods)",
        recreated.len()
    ));
    for i in &stopped {
        let id = program(*i);
        let state = member(&last, &id).map(|m| m.state);
        if state != Some(MemberState::Stopped) {
            run.fail(&format!("{id} stopped but is {state:?}: {last:#?}"));
        }
    }
    if (last.stopped as usize) < stopped.len() {
        run.fail(&format!("{} programs stopped: {last:#?}", stopped.len()));
    }
    // The watch read the status all along (a failing kubectl is not a
    // pass): about once a second while the API server was up; a fifth of
    // that is asked.
    let (watched, watched_for) = run
        .watch
        .as_ref()
        .map_or((0, Duration::ZERO), |w| (w.reads(), w.started.elapsed()));
    let up_secs = watched_for.saturating_sub(api_down).as_secs() as usize;
    if watched < up_secs / 5 {
        run.fail(&format!(
            "the watch read the status {watched} times in {up_secs} s of API server"
        ));
    }
    let by = Instant::now() + T;
    let events = loop {
        let (ok, events, err) = run.kubectl(&[
            "get",
            "events.events.k8s.io",
            "-o",
            "jsonpath={range .items[*]}{.reason}: {.note}{\"\\n\"}{end}",
        ]);
        if ok {
            break events;
        }
        if Instant::now() > by {
            run.fail(&format!("listing Events failed: {err}"));
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    if events.contains("HeartbeatStale") {
        run.fail(&format!("a false HeartbeatStale Event:\n{events}"));
    }
    eprintln!(
        "chaos: seed {seed}: {} faults {thrown:?}, no Stale, settled in {secs}s",
        thrown.values().sum::<u32>()
    );
}
