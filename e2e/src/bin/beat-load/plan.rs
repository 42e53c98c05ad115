//! What to send: the simulated members, the monitors and topics they
//! belong to, the beat order within an interval, who goes silent and
//! when, and the monitors' YAML.

use std::collections::HashSet;
use std::time::Duration;

use heartbeat_crds::program_id::key_for;
use heartbeat_e2e::operator::MONITOR_LABEL;

use crate::Args;

/// One simulated member.
pub struct Member {
    pub monitor: usize,
    pub program: String,
    /// Its Kafka key (the crds key rule), made once.
    pub key: String,
}

/// The members, the monitors they belong to and the beat order.
pub struct Plan {
    pub monitors: Vec<String>,
    pub topics: Vec<String>,
    /// Members of each monitor (indices into `members`).
    pub of_monitor: Vec<Vec<usize>>,
    pub members: Vec<Member>,
    /// The beat order within an interval: monitors interleaved, so every
    /// monitor's beats are spread over the interval too.
    pub order: Vec<usize>,
    /// Members that go silent at `stop_at`.
    pub stopped: HashSet<usize>,
}

impl Plan {
    pub fn new(args: &Args, suffix: &str) -> Plan {
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
                key: key_for(&program),
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

    /// The monitors as YAML (flow style: a 1,000-program list stays small).
    pub fn monitors_yaml(&self, args: &Args, label: &str, range: std::ops::Range<usize>) -> String {
        let mut y = String::new();
        for m in range {
            let programs: Vec<&str> = self.of_monitor[m]
                .iter()
                .map(|&i| self.members[i].program.as_str())
                .collect();
            y.push_str(&format!(
                "---\napiVersion: heartbeat.dev/v1alpha1\nkind: HeartbeatMonitor\n\
                 metadata: {{name: {}, labels: {{{MONITOR_LABEL}: {label}}}}}\n\
                 spec: {{topic: {}, intervalSeconds: {}, missedBeatsTolerated: {}, graceSeconds: {}, \
                 brokerSecretRef: {{name: kafka}}, external: {{expectedPrograms: [{}]}}}}\n",
                self.monitors[m],
                self.topics[m],
                args.interval,
                args.missed,
                args.grace,
                programs.join(", ")
            ));
        }
        y
    }
}

/// The run's clock: how long it beats, when a member is Stale, and when
/// the silenced members stop.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub interval_ms: i64,
    /// A member silent longer than this is Stale (interval × missed + grace).
    pub stale_after_ms: i64,
    pub duration: Duration,
    /// From the first beat, when the silenced members stop.
    pub stop_at: Duration,
}

impl Timing {
    pub fn new(args: &Args) -> Timing {
        let stale_after_ms =
            (i64::from(args.interval) * i64::from(args.missed) + i64::from(args.grace)) * 1000;
        let duration = Duration::from_secs(args.duration);
        Timing {
            interval_ms: i64::from(args.interval) * 1000,
            stale_after_ms,
            duration,
            // The silent members stop early enough for their deadline (at
            // most stale_after after their last beat) plus some lateness
            // to fall inside the run, while everyone else still beats.
            stop_at: duration.saturating_sub(Duration::from_millis(stale_after_ms as u64 + 15_000)),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

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
}
