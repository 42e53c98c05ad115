//! Bad input on a live topic: the corpus in `e2e/corpus/malformed-beats.json`
//! (binary garbage, deep JSON, a value near the broker's limit, wrong
//! types, non-UTF-8 keys, timestamps beyond the skew bound, a replayed
//! beat, stopping beats for other pods) produced onto the topic of a
//! monitor with one real member.

use std::time::{Duration, Instant};

use heartbeat_e2e::kafka::read_until;
use heartbeat_e2e::kube_env::install_crds;
use heartbeat_e2e::operator::OperatorProcess;
use heartbeat_e2e::stack::run_ok;
use heartbeat_e2e::{Stack, TestNamespace, TestTopic};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_heartbeat-operator");
const T: Duration = Duration::from_secs(120);
const REJECTED: &str = "heartbeat_operator_beats_rejected_total";
/// Rounds of the whole corpus: enough for growth to show.
const ROUNDS: usize = 20;
/// The operator's resident memory may grow this much over all rounds
/// (caches warming), not with the bytes thrown at it (~18 MiB).
const RSS_SLACK_KIB: u64 = 12 * 1024;

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

/// One corpus entry as (key, value, reason).
fn message(
    entry: &Value,
    n: &Names<'_>,
    captured: &(Vec<u8>, Vec<u8>),
) -> (Option<Vec<u8>>, Vec<u8>, String) {
    let reason = entry["reason"].as_str().expect("reason").to_string();
    if entry["replay_captured"].as_bool() == Some(true) {
        return (Some(captured.0.clone()), captured.1.clone(), reason);
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
    (key, value, reason)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Rule: every malformed or hostile message of the corpus is rejected or
/// left unattributed and counted under its reason, round after round; the
/// operator keeps running, its real member stays Up (never Stopped, Stale
/// or Failing, and no new member appears), and its memory stays flat.
#[tokio::test]
async fn the_malformed_corpus_is_counted_by_reason_and_changes_nothing() {
    let stack = Stack::get();
    install_crds(stack);
    let op = OperatorProcess::start(stack, BIN.as_ref());
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
  missedBeatsTolerated: 3
  graceSeconds: 15
  brokerSecretRef: {{name: kafka}}
  selector: {{matchLabels: {{app: ingest}}}}
"#,
        topic.name
    ));
    std::thread::sleep(Duration::from_secs(2));
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
    let mut want: std::collections::BTreeMap<String, f64> = Default::default();
    let labels = |reason: &str| {
        op.metric_value(
            REJECTED,
            &[("topic", topic.name.as_str()), ("reason", reason)],
        )
        .unwrap_or(0.0)
    };
    for e in entries {
        let reason = e["reason"].as_str().expect("reason").to_string();
        let before = labels(&reason);
        *want.entry(reason).or_insert(before) += ROUNDS as f64;
    }

    let pid = run_ok(std::process::Command::new("pgrep").args([
        "-f",
        "--",
        &format!("--identity {}", op.process_identity),
    ]))
    .lines()
    .next()
    .and_then(|l| l.trim().parse::<u32>().ok())
    .expect("the operator's pid");
    let rss_before = rss_kib(pid);
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &stack.kafka_bootstrap)
        .set("message.max.bytes", "1000000")
        .create()
        .expect("producer");
    for _ in 0..ROUNDS {
        for e in entries {
            let (key, value, _) = message(e, &names, &captured);
            let mut record = FutureRecord::<Vec<u8>, Vec<u8>>::to(&topic.name).payload(&value);
            if let Some(k) = &key {
                record = record.key(k);
            }
            producer
                .send(record, Duration::from_secs(10))
                .await
                .unwrap_or_else(|(err, _)| panic!("producing {}: {err}", e["name"]));
        }
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
        let counted: Vec<(String, f64, f64)> = want
            .iter()
            .map(|(r, w)| (r.clone(), labels(r), *w))
            .collect();
        if counted.iter().all(|(_, got, w)| got == w) {
            break;
        }
        assert!(
            start.elapsed() < T,
            "not counted by reason (reason, got, want): {counted:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(status()["status"]["up"], 1, "{:#}", status());
    let rss_after = rss_kib(pid);
    eprintln!(
        "corpus: {} messages x {ROUNDS} rounds counted by reason {want:?}; operator RSS {rss_before} -> {rss_after} KiB",
        entries.len()
    );
    assert!(
        rss_after <= rss_before + RSS_SLACK_KIB,
        "resident memory grew from {rss_before} KiB to {rss_after} KiB over {ROUNDS} rounds of the corpus"
    );
}
