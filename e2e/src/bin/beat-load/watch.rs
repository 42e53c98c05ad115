//! Watching what the operator writes: every status write of the monitors
//! and every Event, each stamped with its arrival, through `kubectl get -w`
//! (restarted when the server ends it).

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use heartbeat_crds::beat::parse_timestamp;
use heartbeat_crds::conditions;
use heartbeat_e2e::Stack;
use heartbeat_e2e::procfs::cpu_ticks;
use jiff::Timestamp;

use crate::plan::Plan;

/// One status write as the watch saw it.
#[derive(Debug, Clone)]
pub struct StatusSeen {
    pub arrival_ms: i64,
    pub monitor: usize,
    pub up: u32,
    pub late: u32,
    pub stale: u32,
    /// status.lastBeatTime, whole seconds (metav1.Time), in ms.
    pub last_beat_ms: Option<i64>,
    pub ready: bool,
    pub stale_members: Vec<String>,
    pub late_members: Vec<String>,
}

/// One Event as the watch saw it (first sight only).
#[derive(Debug, Clone)]
pub struct EventSeen {
    pub arrival_ms: i64,
    pub reason: String,
    /// eventTime (microsecond precision, set by kube's Recorder), in µs.
    pub event_time_us: Option<i64>,
    pub program: Option<String>,
}

const STATUS_TEMPLATE: &str = "{.metadata.name}|{.metadata.resourceVersion}|{.status.up}|{.status.late}|{.status.stale}|{.status.lastBeatTime}|{.status.conditions[?(@.type==\"Ready\")].status}|{.status.members[?(@.state==\"Stale\")].programId}|{.status.members[?(@.state==\"Late\")].programId}{\"\\n\"}";
const EVENT_TEMPLATE: &str = "{.metadata.name}|{.reason}|{.eventTime}|{.note}{\"\\n\"}";

/// Unix milliseconds of an RFC 3339 time as the API server writes it.
fn parse_ms(s: &str) -> Option<i64> {
    Some(parse_timestamp(s.trim()).ok()?.as_millisecond())
}

/// A status line of the watch, when it is a new write (a resourceVersion
/// not in `seen`) of one of our monitors with a status.
fn status_line(
    at: i64,
    line: &str,
    monitor_index: &HashMap<String, usize>,
    seen: &mut HashSet<String>,
) -> Option<StatusSeen> {
    let f: Vec<&str> = line.split('|').collect();
    let (name, rv) = (f.first()?, f.get(1)?);
    let &monitor = monitor_index.get(*name)?;
    // A status field is empty before the first write.
    if f.get(2).is_none_or(|s| s.is_empty()) || !seen.insert(rv.to_string()) {
        return None;
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
    Some(StatusSeen {
        arrival_ms: at,
        monitor,
        up: num(2),
        late: num(3),
        stale: num(4),
        last_beat_ms: f.get(5).and_then(|s| parse_ms(s)),
        ready: f.get(6).is_some_and(|s| *s == conditions::TRUE),
        stale_members: list(7),
        late_members: list(8),
    })
}

/// An Event line of the watch, on the first sight of its name.
fn event_line(at: i64, line: &str, seen: &mut HashSet<String>) -> Option<EventSeen> {
    let f: Vec<&str> = line.splitn(4, '|').collect();
    let (name, reason) = (f.first()?, f.get(1)?);
    if name.is_empty() || !seen.insert(name.to_string()) {
        return None;
    }
    let note = f.get(3).copied().unwrap_or_default();
    let program = note
        .split_once("program ")
        .and_then(|(_, rest)| rest.split([' ', ')']).next())
        .map(str::to_string);
    Some(EventSeen {
        arrival_ms: at,
        reason: reason.to_string(),
        event_time_us: f
            .get(2)
            .and_then(|s| parse_timestamp(s.trim()).ok())
            .map(|t| t.as_microsecond()),
        program,
    })
}

/// When every monitor's latest write (in `statuses`) is Ready with all its
/// members Up: the arrival of the newest write; `None` while not so.
pub fn steady_since(statuses: &[StatusSeen], plan: &Plan) -> Option<i64> {
    let mut latest: HashMap<usize, &StatusSeen> = HashMap::new();
    for x in statuses {
        latest.insert(x.monitor, x);
    }
    let all_up = (0..plan.monitors.len()).all(|m| {
        latest
            .get(&m)
            .is_some_and(|x| x.ready && x.up as usize == plan.of_monitor[m].len())
    });
    if all_up {
        statuses.iter().map(|x| x.arrival_ms).max()
    } else {
        None
    }
}

/// The two watches of a namespace and what they saw.
pub struct Watches {
    pub statuses: Arc<Mutex<Vec<StatusSeen>>>,
    pub events: Arc<Mutex<Vec<EventSeen>>>,
    /// The kubectl processes (for their CPU, and to end them).
    pub pids: Arc<Mutex<Vec<u32>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Watches {
    /// Starts watching the monitors of `plan` and the Events in `namespace`.
    pub fn start(stack: &Stack, namespace: &str, plan: &Plan) -> Watches {
        let stop = Arc::new(AtomicBool::new(false));
        let pids = Arc::new(Mutex::new(Vec::new()));
        let statuses: Arc<Mutex<Vec<StatusSeen>>> = Arc::new(Mutex::new(Vec::new()));
        let events: Arc<Mutex<Vec<EventSeen>>> = Arc::new(Mutex::new(Vec::new()));
        let monitor_index: HashMap<String, usize> = plan
            .monitors
            .iter()
            .enumerate()
            .map(|(i, m)| (m.clone(), i))
            .collect();
        let sink = statuses.clone();
        let mut seen_versions: HashSet<String> = HashSet::new();
        let status_watch = watch(
            stack,
            namespace,
            "heartbeatmonitors",
            STATUS_TEMPLATE,
            stop.clone(),
            pids.clone(),
            move |at, line| {
                if let Some(seen) = status_line(at, line, &monitor_index, &mut seen_versions)
                    && let Ok(mut s) = sink.lock()
                {
                    s.push(seen);
                }
            },
        );
        let sink = events.clone();
        let mut seen_events: HashSet<String> = HashSet::new();
        let event_watch = watch(
            stack,
            namespace,
            "events.v1.events.k8s.io",
            EVENT_TEMPLATE,
            stop.clone(),
            pids.clone(),
            move |at, line| {
                if let Some(ev) = event_line(at, line, &mut seen_events)
                    && let Ok(mut e) = sink.lock()
                {
                    e.push(ev);
                }
            },
        );
        Watches {
            statuses,
            events,
            pids,
            stop,
            threads: vec![status_watch, event_watch],
        }
    }

    /// Ends the watches and waits for their threads.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for pid in self.pids.lock().map(|v| v.clone()).unwrap_or_default() {
            // Only the watches still running (a pid not reused yet: checked just before).
            if cpu_ticks(pid).is_some() {
                let _ = Command::new("kill").arg(pid.to_string()).status();
            }
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
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
) -> JoinHandle<()> {
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
                on_line(Timestamp::now().as_millisecond(), &line);
            }
            let _ = child.wait();
            std::thread::sleep(Duration::from_secs(1));
        }
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::Args;

    fn index() -> HashMap<String, usize> {
        HashMap::from([("scale-000".to_string(), 0), ("scale-001".to_string(), 1)])
    }

    #[test]
    fn a_status_line_is_read_once_per_resource_version() {
        let mut seen = HashSet::new();
        let line = "scale-001|42|998|1|1|2026-11-27T10:38:49Z|True|scale-m001-p0007|scale-m001-p0001 scale-m001-p0002";
        let x = status_line(5, line, &index(), &mut seen).expect("a write");
        assert_eq!((x.arrival_ms, x.monitor), (5, 1));
        assert_eq!((x.up, x.late, x.stale), (998, 1, 1));
        let at: Timestamp = "2026-11-27T10:38:49Z".parse().expect("a time");
        assert_eq!(x.last_beat_ms, Some(at.as_millisecond()));
        assert!(x.ready);
        assert_eq!(x.stale_members, vec!["scale-m001-p0007"]);
        assert_eq!(x.late_members, vec!["scale-m001-p0001", "scale-m001-p0002"]);
        // The same resourceVersion again (a re-list) is not a new write.
        assert!(status_line(6, line, &index(), &mut seen).is_none());
        // No status yet, or another namespace's monitor: nothing.
        assert!(status_line(7, "scale-000|43|||||||", &index(), &mut seen).is_none());
        assert!(status_line(7, "other|44|1|0|0||True||", &index(), &mut seen).is_none());
    }

    #[test]
    fn an_event_line_is_read_on_first_sight_with_its_program() {
        let mut seen = HashSet::new();
        let line = "scale-000.1|HeartbeatStale|2026-11-27T10:38:49.477773Z|program scale-m000-p0000 is Stale: no beat for over 35s";
        let e = event_line(9, line, &mut seen).expect("an Event");
        assert_eq!(e.reason, "HeartbeatStale");
        assert_eq!(e.program.as_deref(), Some("scale-m000-p0000"));
        let at: Timestamp = "2026-11-27T10:38:49.477773Z".parse().expect("a time");
        assert_eq!(e.event_time_us, Some(at.as_microsecond()));
        assert!(event_line(10, line, &mut seen).is_none());
    }

    #[test]
    fn steady_needs_every_monitor_ready_with_all_its_members_up() {
        let args = Args::parse_from(["x", "--members", "3", "--per-monitor", "2"]);
        let plan = Plan::new(&args, "t");
        let status = |arrival_ms, monitor, up, ready| StatusSeen {
            arrival_ms,
            monitor,
            up,
            late: 0,
            stale: 0,
            last_beat_ms: None,
            ready,
            stale_members: Vec::new(),
            late_members: Vec::new(),
        };
        let mut s = vec![status(1, 0, 2, true), status(2, 1, 1, false)];
        assert_eq!(steady_since(&s, &plan), None);
        s.push(status(3, 1, 1, true));
        assert_eq!(steady_since(&s, &plan), Some(3));
        // The latest write of a monitor counts: one member down again.
        s.push(status(4, 0, 1, true));
        assert_eq!(steady_since(&s, &plan), None);
    }
}
