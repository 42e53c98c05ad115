//! Bad input on a live topic: the corpus in `e2e/corpus/malformed-beats.json`
//! (binary garbage, deep JSON, a value near the broker's limit, wrong
//! types, non-UTF-8 keys, timestamps beyond the skew bound, a replayed
//! beat, stopping beats for other pods) produced onto the topic of a
//! monitor with one real member; and monitors at every validation bound.

use std::time::{Duration, Instant};

use heartbeat_e2e::kafka::read_until;
use heartbeat_e2e::kube_env::install_crds;
use heartbeat_e2e::operator::OperatorProcess;
use heartbeat_e2e::procfs::{find_pid, rss_kib};
use heartbeat_e2e::stack::run_ok;
use heartbeat_e2e::{Stack, TestNamespace, TestTopic};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_heartbeat-operator");
const T: Duration = Duration::from_secs(120);
const REJECTED: &str = "heartbeat_operator_beats_rejected_total";
const DROPPED: &str = "heartbeat_operator_beat_fields_dropped_total";
/// Rounds of the whole corpus: enough for growth to show.
const ROUNDS: usize = 20;
/// Rounds before resident memory is taken as settled (fetch buffers,
/// caches and allocator arenas reach their size).
const WARM_ROUNDS: usize = 6;
/// After warming, resident memory may grow by at most this share of the
/// bytes thrown at it: a leak of an eighth of the input fails.
const LEAK_SHARE: u64 = 8;

/// The placeholders of one run.
struct Names<'a> {
    namespace: &'a str,
    monitor: &'a str,
    pod: &'a str,
    uid: &'a str,
}

fn fill(text: &str, n: &Names<'_>) -> String {
    text.replace("{NAMESPACE}", n.namespace)
        .replace("{MONITOR}", n.monitor)
        .replace("{POD}", n.pod)
        .replace("{UID}", n.uid)
        .replace(
            "{NOW}",
            &heartbeat_crds::beat::format_timestamp(jiff::Timestamp::now()),
        )
}

/// Where an entry is counted: (metric, label, value). A rejected message
/// under its `reason`; a beat that counts with a field dropped (an
/// interval beyond the CRD's bound) under its `dropped_field`.
type Counted = (&'static str, &'static str, String);

fn counted(entry: &Value) -> Counted {
    match (entry["reason"].as_str(), entry["dropped_field"].as_str()) {
        (Some(r), None) => (REJECTED, "reason", r.to_string()),
        (None, Some(f)) => (DROPPED, "field", f.to_string()),
        _ => panic!("corpus entry needs one of reason, dropped_field: {entry}"),
    }
}

/// One corpus entry as (key, value).
fn message(
    entry: &Value,
    n: &Names<'_>,
    captured: &(Vec<u8>, Vec<u8>),
) -> (Option<Vec<u8>>, Vec<u8>) {
    if entry["replay_captured"].as_bool() == Some(true) {
        return (Some(captured.0.clone()), captured.1.clone());
    }
    let key = match (&entry["key"], &entry["key_hex"]) {
        (Value::String(k), _) => Some(fill(k, n).into_bytes()),
        (_, Value::String(h)) => Some(hex::decode(h).expect("key_hex")),
        _ => None,
    };
    let value = if let Some(v) = entry["value"].as_str() {
        fill(v, n).into_bytes()
    } else if let Some(h) = entry["value_hex"].as_str() {
        hex::decode(h).expect("value_hex")
    } else if let Some(depth) = entry["value_nested_depth"].as_u64() {
        let d = depth as usize;
        format!("{}{}", "[".repeat(d), "]".repeat(d)).into_bytes()
    } else if let Some(f) = entry["value_fill"].as_object() {
        let s = |k: &str| f[k].as_str().expect("value_fill field");
        let len = f["len"].as_u64().expect("len") as usize;
        format!("{}{}{}", s("prefix"), s("byte").repeat(len), s("suffix")).into_bytes()
    } else {
        panic!("corpus entry without a value: {entry}")
    };
    (key, value)
}

/// Rule: every malformed or hostile message of the corpus is rejected or
/// left unattributed and counted under its reason (or, for a beat with a
/// field out of its bound, counted with the field dropped), round after
/// round; the operator keeps running and writing status (an
/// `interval_secs` of 2^32-1 s for a monitor tolerating 100 missed beats
/// once overflowed its deadline arithmetic and crash-looped every
/// replica), its real member stays Up (never Stopped, Stale or Failing,
/// and no new member appears), and its memory stays flat; a new process
/// replaying the topic (a failover) judges every message as the live
/// path did: the same members in the same states.
#[tokio::test]
async fn the_malformed_corpus_is_counted_by_reason_and_changes_nothing() {
    // A stack of its own: the operator caches every pod of the cluster,
    // so pods other tests make meanwhile would count as growth here.
    let (stack, _alone) = Stack::alone();
    install_crds(stack);
    let mut op = OperatorProcess::start(stack, BIN.as_ref());
    let ns = TestNamespace::create(stack, "bad-input");
    op.enable_injection(&ns);
    ns.create_broker_secret(&stack.kafka_bootstrap);
    let topic = TestTopic::create(&stack.kafka_bootstrap, "bad-input").await;
    let (k, v) = op.monitor_label();
    ns.apply(&format!(
        r#"
apiVersion: heartbeat.dev/v1alpha1
kind: HeartbeatMonitor
metadata: {{name: ingest, labels: {{"{k}": "{v}"}}}}
spec:
  topic: {}
  intervalSeconds: 2
  missedBeatsTolerated: 100
  graceSeconds: 15
  brokerSecretRef: {{name: kafka}}
  selector: {{matchLabels: {{app: ingest}}}}
"#,
        topic.name
    ));
    // The webhook decides from its cache: wait until it has seen the monitor.
    ns.wait_injects_app("ingest", T);
    ns.apply(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: real, labels: {app: ingest}}\n\
         spec: {terminationGracePeriodSeconds: 2, containers: [{name: app, image: demo/worker}]}\n",
    );
    ns.wait_pod_phase("real", "Running", T);
    let uid = ns.kubectl(&["get", "pod", "real", "-o", "jsonpath={.metadata.uid}"]);
    let status = || -> Value {
        serde_json::from_str(&ns.kubectl(&["get", "hbm", "ingest", "-o", "json"])).expect("hbm")
    };
    let start = Instant::now();
    while status()["status"]["up"] != 1 {
        assert!(start.elapsed() < T, "never Up: {:#}", status());
        std::thread::sleep(Duration::from_millis(500));
    }
    // A real beat of the member, to produce again later (a replay).
    let key = format!("{}.real_heartbeat", ns.name);
    let got = read_until(&stack.kafka_bootstrap, &topic.name, T, |r| {
        r.iter().any(|m| m.key.as_deref() == Some(key.as_bytes()))
    })
    .await;
    let captured = got
        .iter()
        .find(|m| m.key.as_deref() == Some(key.as_bytes()))
        .map(|m| {
            (
                key.clone().into_bytes(),
                m.value.clone().unwrap_or_default(),
            )
        })
        .expect("a captured beat");

    let corpus: Value = serde_json::from_str(
        &std::fs::read_to_string(
            heartbeat_e2e::stack::repo_dir().join("e2e/corpus/malformed-beats.json"),
        )
        .expect("corpus"),
    )
    .expect("corpus JSON");
    let entries = corpus["entries"].as_array().expect("entries");
    let names = Names {
        namespace: &ns.name,
        monitor: "ingest",
        pod: "real",
        uid: &uid,
    };
    // Each reason's count before the corpus, and how many entries of one
    // round count under it.
    let topic_name = topic.name.as_str();
    let counts = || {
        let samples = op.metrics();
        move |(metric, label, value): &Counted| {
            heartbeat_e2e::metrics::value(
                &samples,
                metric,
                &[("topic", topic_name), (label, value.as_str())],
            )
            .unwrap_or(0.0)
        }
    };
    let mut per_round: std::collections::BTreeMap<Counted, f64> = Default::default();
    for e in entries {
        *per_round.entry(counted(e)).or_default() += 1.0;
    }
    let before: std::collections::BTreeMap<Counted, f64> = {
        let now = counts();
        per_round.keys().map(|c| (c.clone(), now(c))).collect()
    };
    let want_after = |round: usize| -> std::collections::BTreeMap<Counted, f64> {
        per_round
            .iter()
            .map(|(c, n)| (c.clone(), before[c] + n * round as f64))
            .collect()
    };
    let want = want_after(ROUNDS);

    let pid =
        find_pid(&[&format!("--identity {}", op.process_identity)]).expect("the operator's pid");
    let rss = || rss_kib(pid).expect("the operator's VmRSS");
    let round_bytes: usize = entries
        .iter()
        .map(|e| {
            let (k, v) = message(e, &names, &captured);
            k.map_or(0, |k| k.len()) + v.len()
        })
        .sum();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &stack.kafka_bootstrap)
        .set("message.max.bytes", "1000000")
        .create()
        .expect("producer");
    // Resident memory after each round has been counted: a leak grows with
    // the rounds, where warming up does not.
    let mut rss_by_round = Vec::with_capacity(ROUNDS);
    for round in 1..=ROUNDS {
        for e in entries {
            let (key, value) = message(e, &names, &captured);
            let mut record = FutureRecord::<Vec<u8>, Vec<u8>>::to(&topic.name).payload(&value);
            if let Some(k) = &key {
                record = record.key(k);
            }
            producer
                .send(record, Duration::from_secs(10))
                .await
                .unwrap_or_else(|(err, _)| panic!("producing {}: {err}", e["name"]));
        }
        let start = Instant::now();
        let want_now = want_after(round);
        while !{
            let now = counts();
            want_now.iter().all(|(c, w)| now(c) >= *w)
        } {
            assert!(
                start.elapsed() < T,
                "round {round} not counted\n{}",
                op.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        rss_by_round.push(rss());
    }
    // Every message counted under its reason; the member untouched throughout.
    let start = Instant::now();
    loop {
        let s = status();
        let st = &s["status"];
        assert_eq!(st["expected"], 1, "a new member appeared: {s:#}");
        for field in ["stale", "stopped", "failing"] {
            assert_eq!(st[field], 0, "{field}: {s:#}");
        }
        let now = counts();
        let counted: Vec<(Counted, f64, f64)> =
            want.iter().map(|(r, w)| (r.clone(), now(r), *w)).collect();
        if counted.iter().all(|(_, got, w)| got == w) {
            break;
        }
        assert!(
            start.elapsed() < T,
            "not counted by reason (reason, got, want): {counted:?}\n{}",
            op.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // Status still written after the whole corpus: a newer beat of the
    // real member shows (a dead controller would leave it frozen).
    let sent = jiff::Timestamp::now();
    let start = Instant::now();
    loop {
        let s = status();
        let last = s["status"]["lastBeatTime"]
            .as_str()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok());
        if last.is_some_and(|t| t > sent) {
            break;
        }
        assert!(
            start.elapsed() < T,
            "status stopped advancing after the corpus: {s:#}\n{}",
            op.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(!op.log().contains("panicked"), "{}", op.log());
    assert_eq!(status()["status"]["up"], 1, "{:#}", status());
    // Median of three readings, so one allocator hiccup decides nothing.
    let median3 = |r: &[u64]| {
        let mut r = r.to_vec();
        r.sort_unstable();
        r[1]
    };
    let settled = median3(&rss_by_round[WARM_ROUNDS - 1..WARM_ROUNDS + 2]);
    let last = median3(&rss_by_round[ROUNDS - 3..]);
    let input_kib = (round_bytes * (ROUNDS - WARM_ROUNDS - 1) / 1024) as u64;
    eprintln!(
        "corpus: {} messages ({round_bytes} bytes) x {ROUNDS} rounds counted by reason {want:?}; operator RSS by round (KiB): {rss_by_round:?}",
        entries.len()
    );
    assert!(
        last <= settled + input_kib / LEAK_SHARE,
        "resident memory grew from {settled} KiB to {last} KiB over {} KiB of corpus after warming: {rss_by_round:?}",
        input_kib
    );

    // A new process replays the whole topic (what a failover does): every
    // beat is judged as the live path judged it, so the same members in
    // the same states (no phantom from a beat the live path refused).
    let judged = |s: &Value| {
        let mut members: Vec<String> = s["status"]["members"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| format!("{} {} {}", m["programId"], m["pod"], m["state"]))
            .collect();
        members.sort();
        let counts: Vec<String> = [
            "expected", "up", "late", "stale", "stopped", "pending", "failing",
        ]
        .iter()
        .map(|f| format!("{f}={}", s["status"][f]))
        .collect();
        (counts, members)
    };
    let live = judged(&status());
    op.restart();
    let start = Instant::now();
    loop {
        let written = op.metric_sum(
            "heartbeat_operator_status_writes_total",
            &[("namespace", ns.name.as_str()), ("monitor", "ingest")],
        );
        let s = status();
        let ready = s["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        if written > 0.0 && ready && judged(&s) == live {
            break;
        }
        assert!(
            start.elapsed() < T,
            "after a replay by a new process (written {written}, ready {ready}):\n{:?}\nlive:\n{live:?}\n{}",
            judged(&s),
            op.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Every numeric, length, item-count and property-count bound of the
/// monitor spec in the generated CRD, as (path, keyword, limit).
fn crd_bounds() -> std::collections::BTreeSet<(String, String)> {
    fn walk(s: &Value, path: &str, out: &mut std::collections::BTreeSet<(String, String)>) {
        for k in [
            "minimum",
            "maximum",
            "minLength",
            "maxLength",
            "minItems",
            "maxItems",
            "maxProperties",
        ] {
            if s.get(k).is_some() {
                out.insert((path.to_string(), k.to_string()));
            }
        }
        if let Some(props) = s["properties"].as_object() {
            for (name, sub) in props {
                walk(sub, &format!("{path}.{name}"), out);
            }
        }
        if s.get("items").is_some() {
            walk(&s["items"], &format!("{path}[]"), out);
        }
    }
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../crds/heartbeatmonitors.yaml"
    ))
    .expect("the generated CRD");
    let crd: Value = serde_yaml::from_str(&text).expect("CRD yaml");
    let mut out = std::collections::BTreeSet::new();
    walk(
        &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"],
        "spec",
        &mut out,
    );
    out
}

/// One bound: the spec at it (accepted) and just past it (refused).
struct Bound {
    path: &'static str,
    keyword: &'static str,
    at: Value,
    past: Value,
}

fn bound(path: &'static str, keyword: &'static str, at: Value, past: Value) -> Bound {
    Bound {
        path,
        keyword,
        at,
        past,
    }
}

fn window(schedule: &str, minutes: i64, zone: &str) -> Value {
    serde_json::json!({"schedule": schedule, "durationMinutes": minutes, "timeZone": zone})
}

fn bounds() -> Vec<Bound> {
    use serde_json::json;
    let s = |c: char, n: usize| c.to_string().repeat(n);
    let file = |age: i64| json!({"appHealth": {"mode": "File", "file": {"path": "/var/run/heartbeat/health", "maxAgeSeconds": age}}});
    // The touch file lies under the fixed directory (19 characters with its slash).
    let dir = format!("{}/", heartbeat_crds::monitor::HEALTH_FILE_DIR);
    let ping = |age: i64| json!({"appHealth": {"mode": "Ping", "ping": {"maxAgeSeconds": age}}});
    let http = |port: i64, path: String| json!({"appHealth": {"mode": "Http", "http": {"port": port, "path": path}}});
    let programs = |n: usize| json!({"external": {"expectedPrograms": (0..n).map(|i| format!("p-{i}")).collect::<Vec<_>>()}});
    let windows = |n: usize| json!({"maintenanceWindows": vec![window("0 3 * * 0", 60, "UTC"); n]});
    let producer = |n: usize| {
        let mut keys: Vec<String> = heartbeat_crds::monitor::PRODUCER_ALLOWLIST
            .iter()
            .map(|k| k.to_string())
            .collect();
        keys.push("linger.ms.extra".into());
        let map: serde_json::Map<String, Value> =
            keys.into_iter().take(n).map(|k| (k, json!("1"))).collect();
        json!({ "producer": map })
    };
    let max_producer = heartbeat_crds::monitor::PRODUCER_ALLOWLIST.len();
    vec![
        bound(
            "spec.appHealth.file.maxAgeSeconds",
            "minimum",
            file(1),
            file(0),
        ),
        bound(
            "spec.appHealth.file.maxAgeSeconds",
            "maximum",
            file(86_400),
            file(86_401),
        ),
        bound(
            "spec.appHealth.file.path",
            "maxLength",
            json!({"appHealth": {"mode": "File", "file": {"path": format!("{dir}{}", s('a', 1024 - dir.len()))}}}),
            json!({"appHealth": {"mode": "File", "file": {"path": format!("{dir}{}", s('a', 1025 - dir.len()))}}}),
        ),
        bound(
            "spec.appHealth.http.port",
            "minimum",
            http(1, "/".into()),
            http(0, "/".into()),
        ),
        bound(
            "spec.appHealth.http.port",
            "maximum",
            http(65_535, "/".into()),
            http(65_536, "/".into()),
        ),
        bound(
            "spec.appHealth.http.path",
            "maxLength",
            http(8080, format!("/{}", s('a', 1023))),
            http(8080, format!("/{}", s('a', 1024))),
        ),
        bound(
            "spec.appHealth.ping.maxAgeSeconds",
            "minimum",
            ping(1),
            ping(0),
        ),
        bound(
            "spec.appHealth.ping.maxAgeSeconds",
            "maximum",
            ping(86_400),
            ping(86_401),
        ),
        bound(
            "spec.brokerSecretRef.name",
            "minLength",
            json!({"brokerSecretRef": {"name": "k"}}),
            json!({"brokerSecretRef": {"name": ""}}),
        ),
        bound(
            "spec.brokerSecretRef.name",
            "maxLength",
            json!({"brokerSecretRef": {"name": s('k', 253)}}),
            json!({"brokerSecretRef": {"name": s('k', 254)}}),
        ),
        bound(
            "spec.clock.maxSkewSeconds",
            "minimum",
            json!({"clock": {"maxSkewSeconds": 0}}),
            json!({"clock": {"maxSkewSeconds": -1}}),
        ),
        bound(
            "spec.clock.maxSkewSeconds",
            "maximum",
            json!({"clock": {"maxSkewSeconds": 86_400}}),
            json!({"clock": {"maxSkewSeconds": 86_401}}),
        ),
        bound(
            "spec.external.expectedPrograms",
            "maxItems",
            programs(1000),
            programs(1001),
        ),
        bound(
            "spec.graceSeconds",
            "minimum",
            json!({"graceSeconds": 0}),
            json!({"graceSeconds": -1}),
        ),
        bound(
            "spec.graceSeconds",
            "maximum",
            json!({"graceSeconds": 86_400}),
            json!({"graceSeconds": 86_401}),
        ),
        bound(
            "spec.intervalSeconds",
            "minimum",
            json!({"intervalSeconds": 1}),
            json!({"intervalSeconds": 0}),
        ),
        bound(
            "spec.intervalSeconds",
            "maximum",
            json!({"intervalSeconds": 86_400}),
            json!({"intervalSeconds": 86_401}),
        ),
        bound(
            "spec.maintenanceWindows",
            "maxItems",
            windows(20),
            windows(21),
        ),
        bound(
            "spec.maintenanceWindows[].durationMinutes",
            "minimum",
            json!({"maintenanceWindows": [window("0 3 * * 0", 1, "UTC")]}),
            json!({"maintenanceWindows": [window("0 3 * * 0", 0, "UTC")]}),
        ),
        bound(
            "spec.maintenanceWindows[].durationMinutes",
            "maximum",
            json!({"maintenanceWindows": [window("0 3 * * 0", 10_080, "UTC")]}),
            json!({"maintenanceWindows": [window("0 3 * * 0", 10_081, "UTC")]}),
        ),
        // Five fields that pass the pattern but are no schedule: the
        // operator must say so, not stumble.
        bound(
            "spec.maintenanceWindows[].schedule",
            "maxLength",
            json!({"maintenanceWindows": [window(&format!("0 3 * * {}", s('9', 120)), 60, "UTC")]}),
            json!({"maintenanceWindows": [window(&format!("0 3 * * {}", s('9', 121)), 60, "UTC")]}),
        ),
        bound(
            "spec.maintenanceWindows[].timeZone",
            "maxLength",
            json!({"maintenanceWindows": [window("0 3 * * 0", 60, &s('Z', 64))]}),
            json!({"maintenanceWindows": [window("0 3 * * 0", 60, &s('Z', 65))]}),
        ),
        bound(
            "spec.missedBeatsTolerated",
            "minimum",
            json!({"missedBeatsTolerated": 1}),
            json!({"missedBeatsTolerated": 0}),
        ),
        bound(
            "spec.missedBeatsTolerated",
            "maximum",
            json!({"missedBeatsTolerated": 1000}),
            json!({"missedBeatsTolerated": 1001}),
        ),
        bound(
            "spec.producer",
            "maxProperties",
            producer(max_producer),
            producer(max_producer + 1),
        ),
        bound(
            "spec.programId",
            "maxLength",
            json!({"programId": s('p', 249)}),
            json!({"programId": s('p', 250)}),
        ),
        bound(
            "spec.sidecar.image",
            "minLength",
            json!({"sidecar": {"image": "x"}}),
            json!({"sidecar": {"image": ""}}),
        ),
        bound(
            "spec.sidecar.image",
            "maxLength",
            json!({"sidecar": {"image": s('x', 1024)}}),
            json!({"sidecar": {"image": s('x', 1025)}}),
        ),
    ]
}

/// Rule: every bound of the monitor spec (each numeric, length, item and
/// property limit in the generated CRD has a case here, so a new bound
/// without one fails this test) holds at the API server: a monitor at the
/// bound is stored, one just past it is refused with an error naming the
/// field; and the operator, given all the at-bound monitors at once
/// (1,000 expected programs, 20 windows, a day-long interval, schedules and
/// zones that pass the pattern but mean nothing), keeps running and writes
/// a status with a Ready condition for every one of them.
#[test]
fn monitors_at_every_validation_bound_are_stored_past_it_refused_and_the_operator_copes() {
    let stack = Stack::get();
    install_crds(stack);
    let mut op = OperatorProcess::start(stack, BIN.as_ref());
    let ns = TestNamespace::create(stack, "bounds");
    ns.create_broker_secret(&stack.kafka_bootstrap);
    let cases = bounds();
    let covered: std::collections::BTreeSet<(String, String)> = cases
        .iter()
        .map(|b| (b.path.to_string(), b.keyword.to_string()))
        .collect();
    assert_eq!(
        covered,
        crd_bounds(),
        "bounds without a case (or cases without a bound)"
    );

    let (label_key, label_value) = op.monitor_label();
    let manifest = |name: &str, patch: &Value| {
        let mut m = serde_json::json!({
            "apiVersion": "heartbeat.dev/v1alpha1",
            "kind": "HeartbeatMonitor",
            "metadata": {"name": name, "namespace": ns.name, "labels": {&label_key: &label_value}},
            "spec": {
                "topic": "bounds",
                "intervalSeconds": 10,
                "brokerSecretRef": {"name": "kafka"},
                "selector": {"matchLabels": {"app": "none"}},
            },
        });
        json_patch::merge(&mut m["spec"], patch);
        m.to_string()
    };
    let apply = |json: &str| {
        heartbeat_e2e::stack::run_with_stdin(stack.kubectl().args(["apply", "-f", "-"]), json)
    };
    let mut stored = Vec::new();
    for (i, b) in cases.iter().enumerate() {
        let what = format!("{} {}", b.path, b.keyword);
        let name = format!("at-{i}");
        let (ok, out, err) = apply(&manifest(&name, &b.at));
        assert!(ok, "{what}: at the bound refused:\n{out}{err}");
        stored.push(name);
        let (ok, out, err) = apply(&manifest(&format!("past-{i}"), &b.past));
        assert!(!ok, "{what}: past the bound stored:\n{out}");
        let field = b
            .path
            .rsplit('.')
            .next()
            .unwrap_or(b.path)
            .trim_end_matches("[]");
        assert!(
            err.contains(field),
            "{what}: the error does not name {field}:\n{err}"
        );
    }
    let statuses = || -> Result<(), String> {
        let list: Value = serde_json::from_str(&ns.kubectl(&["get", "hbm", "-o", "json"]))
            .map_err(|e| e.to_string())?;
        let missing: Vec<String> = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| {
                !m["status"]["conditions"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready"))
            })
            .map(|m| m["metadata"]["name"].as_str().unwrap_or("?").to_string())
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("no status yet: {missing:?}"))
        }
    };
    let deadline = Instant::now() + T;
    loop {
        assert!(op.is_running(), "the operator died:\n{}", op.log());
        match statuses() {
            Ok(()) => break,
            Err(e) if Instant::now() > deadline => panic!("{e}\n{}", op.log_tail(40)),
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
    let list: Value =
        serde_json::from_str(&ns.kubectl(&["get", "hbm", "-o", "json"])).expect("hbm list");
    let items = list["items"].as_array().cloned().unwrap_or_default();
    let names: Vec<&str> = items
        .iter()
        .filter_map(|m| m["metadata"]["name"].as_str())
        .collect();
    assert_eq!(names.len(), stored.len(), "stored: {names:?}");
    // The schedule and zone that pass the pattern but mean nothing are
    // named in the status, not ignored.
    let healthy_notes: String = items
        .iter()
        .flat_map(|m| {
            m["status"]["conditions"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter(|c| c["type"] == "Healthy")
        .filter_map(|c| c["message"].as_str().map(str::to_string))
        .collect::<Vec<_>>()
        .join("\n");
    for meaningless in ["9999999", "ZZZZZZZZ"] {
        assert!(
            healthy_notes.contains(meaningless) && healthy_notes.contains("silences nothing"),
            "no note on the window with {meaningless}:\n{healthy_notes}"
        );
    }
    assert!(op.is_running(), "the operator died:\n{}", op.log());
}

/// Rule: a File-mode touch file lies under the fixed directory the webhook
/// mounts (/var/run/heartbeat/, no `.`, `..` or empty segment): the API
/// server refuses any other path with an error naming
/// spec.appHealth.file.path, so a monitor cannot have a writable emptyDir
/// mounted over /etc of the pods it selects.
#[test]
fn a_touch_file_outside_the_fixed_directory_is_refused_naming_the_field() {
    let stack = Stack::get();
    install_crds(stack);
    let ns = TestNamespace::create(stack, "file-path");
    let manifest = |name: &str, path: &str| {
        serde_json::json!({
            "apiVersion": "heartbeat.dev/v1alpha1",
            "kind": "HeartbeatMonitor",
            "metadata": {"name": name, "namespace": ns.name},
            "spec": {
                "topic": "file-path",
                "intervalSeconds": 10,
                "brokerSecretRef": {"name": "kafka"},
                "selector": {"matchLabels": {"app": "none"}},
                "appHealth": {"mode": "File", "file": {"path": path}},
            },
        })
        .to_string()
    };
    let apply = |json: &str| {
        heartbeat_e2e::stack::run_with_stdin(stack.kubectl().args(["apply", "-f", "-"]), json)
    };
    for (i, bad) in [
        "/etc/passwd",
        "/etc/heartbeat",
        "/var/run/heartbeat",
        "/var/run/heartbeatx/health",
        "/var/run/heartbeat/../../etc/passwd",
        "/var/run/heartbeat/./health",
        "/var/run/heartbeat//health",
    ]
    .iter()
    .enumerate()
    {
        let (ok, out, err) = apply(&manifest(&format!("bad-{i}"), bad));
        assert!(!ok, "{bad}: stored:\n{out}");
        assert!(
            err.contains("spec.appHealth.file.path") && err.contains("must lie under"),
            "{bad}: the error does not name the field:\n{err}"
        );
    }
    for (i, good) in ["/var/run/heartbeat/health", "/var/run/heartbeat/app/touch"]
        .iter()
        .enumerate()
    {
        let (ok, out, err) = apply(&manifest(&format!("good-{i}"), good));
        assert!(ok, "{good}: refused:\n{out}{err}");
    }
}

/// Deletes the chart's sidecar policy (cluster-scoped) when a test ends.
struct SidecarPolicyInstalled<'a> {
    stack: &'a Stack,
    name: String,
}

impl Drop for SidecarPolicyInstalled<'_> {
    fn drop(&mut self) {
        for kind in [
            "validatingadmissionpolicybinding",
            "validatingadmissionpolicy",
        ] {
            let _ = heartbeat_e2e::stack::run(self.stack.kubectl().args([
                "delete",
                kind,
                &self.name,
                "--ignore-not-found",
            ]));
        }
    }
}

/// Rule: the chart's ValidatingAdmissionPolicy refuses, when a monitor is
/// written, a spec.sidecar.image off the allowlist (sidecarImage.repository
/// plus sidecarPolicy.allowedImageRepositories; a lookalike repository too)
/// and spec.sidecar.resources above sidecarPolicy.maxResources (or naming
/// another resource, or a request above its limit), each with a message
/// naming the field; an allowed sidecar is stored, and so is a monitor of
/// another installation (the binding follows monitorSelector).
#[test]
fn the_charts_sidecar_policy_refuses_off_list_images_and_oversized_resources_naming_the_field() {
    use serde_json::json;
    let stack = Stack::get();
    install_crds(stack);
    let ns = TestNamespace::create(stack, "sidecar-policy");
    let release = ns.name.clone();
    let label = "heartbeat.dev/operator";
    let chart = heartbeat_e2e::stack::repo_dir().join("charts/heartbeat-operator");
    let rendered = run_ok(stack.tool("helm").args([
        "template",
        &release,
        &chart.display().to_string(),
        "--namespace",
        &ns.name,
        "--show-only",
        "templates/sidecarpolicy.yaml",
        "--set",
        &format!("monitorSelector={label}={release}"),
        "--set",
        "sidecarImage.repository=ghcr.io/heartbeat-dev/heartbeat-sidecar",
        "--set",
        "sidecarPolicy.allowedImageRepositories[0]=registry.local/hb",
    ]));
    let _policy = SidecarPolicyInstalled {
        stack,
        name: format!("{release}-heartbeat-operator-sidecar-policy"),
    };
    let (ok, out, err) =
        heartbeat_e2e::stack::run_with_stdin(stack.kubectl().args(["apply", "-f", "-"]), &rendered);
    assert!(ok, "the policy is refused:\n{out}{err}");

    let manifest = |name: &str, labelled: bool, sidecar: Value| {
        let labels = if labelled {
            json!({label: release})
        } else {
            json!({})
        };
        json!({
            "apiVersion": "heartbeat.dev/v1alpha1",
            "kind": "HeartbeatMonitor",
            "metadata": {"name": name, "namespace": ns.name, "labels": labels},
            "spec": {
                "topic": "sidecar-policy",
                "intervalSeconds": 10,
                "brokerSecretRef": {"name": "kafka"},
                "selector": {"matchLabels": {"app": "none"}},
                "sidecar": sidecar,
            },
        })
        .to_string()
    };
    let apply = |json: &str, dry_run: bool| {
        let mut cmd = stack.kubectl();
        cmd.args(["apply", "-f", "-"]);
        if dry_run {
            cmd.arg("--dry-run=server");
        }
        heartbeat_e2e::stack::run_with_stdin(&mut cmd, json)
    };
    // A new policy takes a moment to be enforced: wait (with a deadline)
    // until an off-list image is refused in a dry run.
    let off_list = manifest("off-list", true, json!({"image": "evil.example/miner:1"}));
    let deadline = Instant::now() + T;
    while apply(&off_list, true).0 {
        assert!(Instant::now() < deadline, "the policy is never enforced");
        std::thread::sleep(Duration::from_millis(500));
    }

    let digest = format!("@sha256:{}", "a".repeat(64));
    let refused = [
        (
            json!({"image": "evil.example/miner:1"}),
            "spec.sidecar.image",
        ),
        (
            json!({"image": "ghcr.io/heartbeat-dev/heartbeat-sidecar-evil:1"}),
            "spec.sidecar.image",
        ),
        (
            json!({"image": "ghcr.io/heartbeat-dev/heartbeat-sidecar/evil:1"}),
            "spec.sidecar.image",
        ),
        (
            json!({"resources": {"limits": {"memory": "1Gi"}}}),
            "spec.sidecar.resources.limits.memory",
        ),
        (
            json!({"resources": {"limits": {"memory": 268435457}}}),
            "spec.sidecar.resources.limits.memory",
        ),
        (
            json!({"resources": {"requests": {"cpu": "2"}}}),
            "spec.sidecar.resources.requests.cpu",
        ),
        (
            json!({"resources": {"limits": {"cpu": "201m"}}}),
            "spec.sidecar.resources.limits.cpu",
        ),
        (
            json!({"resources": {"requests": {"nvidia.com/gpu": "1"}}}),
            "spec.sidecar.resources.requests may set only",
        ),
        (
            json!({"resources": {"requests": {"memory": "64Mi"}, "limits": {"memory": "32Mi"}}}),
            "spec.sidecar.resources.requests.memory must not be above",
        ),
    ];
    for (i, (sidecar, field)) in refused.iter().enumerate() {
        let (ok, out, err) = apply(
            &manifest(&format!("refused-{i}"), true, sidecar.clone()),
            false,
        );
        assert!(!ok, "{sidecar}: stored:\n{out}");
        assert!(
            err.contains(field),
            "{sidecar}: the refusal does not name {field}:\n{err}"
        );
    }
    let allowed = [
        json!({"image": "ghcr.io/heartbeat-dev/heartbeat-sidecar:0.2.0"}),
        json!({"image": format!("ghcr.io/heartbeat-dev/heartbeat-sidecar{digest}")}),
        json!({"image": "registry.local/hb:1"}),
        json!({"resources": {"requests": {"cpu": "0.2", "memory": "64Mi"},
                             "limits": {"cpu": "200m", "memory": "256Mi"}}}),
    ];
    for (i, sidecar) in allowed.iter().enumerate() {
        let (ok, out, err) = apply(
            &manifest(&format!("allowed-{i}"), true, sidecar.clone()),
            false,
        );
        assert!(ok, "{sidecar}: refused:\n{out}{err}");
    }
    // Another installation's monitor is not this policy's to judge.
    let (ok, out, err) = apply(
        &manifest(
            "other-installation",
            false,
            json!({"image": "evil.example/miner:1"}),
        ),
        false,
    );
    assert!(ok, "a monitor outside monitorSelector refused:\n{out}{err}");
}
