//! The summary printed at the end, computed from what was recorded (the
//! delivery reports, the watches, the samples, the operator's log). The
//! figures are pure functions of those records; `print` only formats them.

use std::collections::{BTreeMap, HashSet};

use heartbeat_crds::beat::format_timestamp;
use jiff::Timestamp;

use crate::generator::Deliveries;
use crate::plan::Plan;
use crate::sampler::Sample;
use crate::watch::{EventSeen, StatusSeen};

const STALE: &str = "HeartbeatStale";

/// Everything recorded in a run.
pub struct Summary<'a> {
    pub plan: &'a Plan,
    pub interval_s: u32,
    pub duration_s: u64,
    pub deliveries: &'a Deliveries,
    pub statuses: &'a [StatusSeen],
    pub events: &'a [EventSeen],
    /// (publish time in µs from the operator's log, reason, program).
    pub published: &'a [(i64, String, String)],
    pub samples: &'a [Sample],
    pub t0_ms: i64,
    pub applied_ms: i64,
    pub steady_ms: Option<i64>,
    pub end_ms: i64,
    pub stop_at_ms: i64,
    pub interval_ms: i64,
    pub stale_after_ms: i64,
    pub clk_tck: u64,
    pub sent: u64,
    pub queue_full: u64,
    pub warns: usize,
    pub errors: usize,
}

/// The value at quantile `p` of sorted values (nearest rank); 0 when empty.
pub fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn secs(ms: i64) -> String {
    format!("{:.2} s", ms as f64 / 1000.0)
}

/// Stale and Late among members that kept beating, and the Stale Events.
#[derive(Debug, Default, PartialEq)]
pub struct Alarms {
    /// Most members that kept beating counted Stale in one status write.
    pub max_false_stale: usize,
    pub max_false_late: usize,
    /// Each member that kept beating and was listed Stale: when first (ms from t0).
    pub false_stale: BTreeMap<String, i64>,
    /// Most members counted Stale in one write, the silenced included.
    pub max_stale: u32,
    /// HeartbeatStale Event objects seen by the watch, and how many of them false.
    pub stale_events: usize,
    pub false_events: usize,
    /// HeartbeatStale Events the operator's log says it published, and how many false.
    pub published_stale: usize,
    pub false_published: usize,
    /// Event objects seen, by reason.
    pub reasons: BTreeMap<String, usize>,
}

/// False alarms: any Stale or Late among members not in `silenced`.
pub fn alarms(s: &Summary<'_>, silenced: &HashSet<&str>) -> Alarms {
    let is_stopped = |p: &str| silenced.contains(p);
    let mut a = Alarms::default();
    for x in s.statuses {
        a.max_stale = a.max_stale.max(x.stale);
        let fs: Vec<&String> = x.stale_members.iter().filter(|p| !is_stopped(p)).collect();
        // The list holds the 50 worst; a count above what it names is false too.
        let listed_stopped = x.stale_members.len() - fs.len();
        a.max_false_stale = a
            .max_false_stale
            .max((x.stale as usize).saturating_sub(listed_stopped));
        for p in fs {
            a.false_stale
                .entry(p.clone())
                .or_insert(x.arrival_ms - s.t0_ms);
        }
        let fl = x.late_members.iter().filter(|p| !is_stopped(p)).count();
        let listed_stopped_late = x.late_members.len() - fl;
        a.max_false_late = a
            .max_false_late
            .max((x.late as usize).saturating_sub(listed_stopped_late));
    }
    for e in s.events.iter().filter(|e| e.reason == STALE) {
        a.stale_events += 1;
        a.false_events += usize::from(!e.program.as_deref().is_some_and(is_stopped));
    }
    for (_, _, p) in s.published.iter().filter(|(_, r, _)| r == STALE) {
        a.published_stale += 1;
        a.false_published += usize::from(!is_stopped(p));
    }
    for e in s.events {
        *a.reasons.entry(e.reason.clone()).or_default() += 1;
    }
    a
}

/// Status writes per monitor in the steady window, and the gaps between
/// one monitor's consecutive writes (sorted).
#[derive(Debug, Default, PartialEq)]
pub struct Writes {
    pub per_monitor: Vec<usize>,
    pub gaps: Vec<i64>,
}

/// Each new resourceVersion is one write; only those from `steady` to `end`.
pub fn writes(by_monitor: &[Vec<&StatusSeen>], steady: i64, end: i64) -> Writes {
    let mut w = Writes::default();
    for list in by_monitor {
        let times: Vec<i64> = list
            .iter()
            .map(|x| x.arrival_ms)
            .filter(|t| *t >= steady && *t <= end)
            .collect();
        w.per_monitor.push(times.len());
        w.gaps.extend(times.windows(2).map(|w| w[1] - w[0]));
    }
    w.gaps.sort_unstable();
    w
}

/// Beat-to-status latency bounds (sorted, ms) and the beats no write covered.
#[derive(Debug, Default, PartialEq)]
pub struct Latency {
    pub upper: Vec<i64>,
    pub lower: Vec<i64>,
    pub uncovered: u64,
}

/// A beat's broker time to the arrival (at the watch) of the first status
/// write whose lastBeatTime covers it, for the beats from `steady` to
/// `end`. lastBeatTime is a metav1.Time (whole seconds, truncated), so a
/// write with lastBeatTime L covers a beat b for certain when L >= b, and
/// may cover it when L + 1 s > b: the two give an upper and a lower bound.
pub fn latency(
    by_monitor: &[Vec<&StatusSeen>],
    beats: &[Vec<i64>],
    steady: i64,
    end: i64,
) -> Latency {
    let mut lat = Latency::default();
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
        let mut beats = beats[m].clone();
        beats.sort_unstable();
        for b in beats.into_iter().filter(|b| *b >= steady && *b <= end) {
            let certain = covered.partition_point(|l| *l < b);
            let maybe = covered.partition_point(|l| *l + 1000 <= b);
            match writes.get(certain) {
                Some((at, _)) => lat.upper.push(at - b),
                None => lat.uncovered += 1,
            }
            if let Some((at, _)) = writes.get(maybe) {
                lat.lower.push(at - b);
            }
        }
    }
    lat.upper.sort_unstable();
    lat.lower.sort_unstable();
    lat
}

/// How late the silenced members were declared Stale, each against its
/// deadline (last beat's broker time + stale_after), in ms, sorted.
#[derive(Debug, Default, PartialEq)]
pub struct Lateness {
    /// The Event's eventTime (Events not folded into a series).
    pub by_event_time: Vec<i64>,
    /// The publication in the operator's log.
    pub by_log: Vec<i64>,
    /// The Event's arrival at the watch.
    pub by_arrival: Vec<i64>,
    /// The first status write listing the member Stale.
    pub by_status: Vec<i64>,
    /// Silenced members with no HeartbeatStale published.
    pub missing: Vec<String>,
}

pub fn lateness(s: &Summary<'_>) -> Lateness {
    let plan = s.plan;
    let mut l = Lateness::default();
    let mut stopped: Vec<usize> = plan.stopped.iter().copied().collect();
    stopped.sort_unstable();
    for i in stopped {
        let p = &plan.members[i].program;
        let deadline = s.deliveries.last[i] + s.stale_after_ms;
        if let Some(e) = s
            .events
            .iter()
            .find(|e| e.reason == STALE && e.program.as_deref() == Some(p.as_str()))
        {
            if let Some(us) = e.event_time_us {
                l.by_event_time.push(us / 1000 - deadline);
            }
            l.by_arrival.push(e.arrival_ms - deadline);
        }
        match s.published.iter().find(|(_, r, q)| r == STALE && q == p) {
            Some((us, _, _)) => l.by_log.push(us / 1000 - deadline),
            None => l.missing.push(p.clone()),
        }
        if let Some(x) = s
            .statuses
            .iter()
            .find(|x| x.stale_members.iter().any(|q| q == p))
        {
            l.by_status.push(x.arrival_ms - deadline);
        }
    }
    for v in [
        &mut l.by_event_time,
        &mut l.by_log,
        &mut l.by_arrival,
        &mut l.by_status,
    ] {
        v.sort_unstable();
    }
    l
}

/// The run passes when every member was Up at once, no member that kept
/// beating was Stale or alarmed about, and no beat failed delivery.
pub fn passed(s: &Summary<'_>, a: &Alarms) -> bool {
    s.steady_ms.is_some()
        && a.max_false_stale == 0
        && a.false_events == 0
        && a.false_published == 0
        && s.deliveries.failed == 0
}

/// Cores used over `wall_s` seconds by a process whose CPU ticks went from `x` to `y`.
pub fn cores_used(x: u64, y: u64, clk_tck: u64, wall_s: f64) -> f64 {
    y.saturating_sub(x) as f64 / clk_tck as f64 / wall_s
}

/// Prints the summary; false when a member that kept beating was Stale or alarmed about.
pub fn print(s: &Summary<'_>) -> bool {
    let plan = s.plan;
    let d = s.deliveries;
    let steady = s.steady_ms.unwrap_or(s.applied_ms);
    let silenced: HashSet<&str> = plan
        .stopped
        .iter()
        .map(|&i| plan.members[i].program.as_str())
        .collect();
    let t0 = Timestamp::from_millisecond(s.t0_ms).unwrap_or(Timestamp::UNIX_EPOCH);
    println!();
    println!("== scale: {} ==", format_timestamp(t0));
    println!(
        "members {} in {} monitors (one topic each), interval {} s, Stale after {} s; beating {} s; {} members silent from t={} s",
        plan.members.len(),
        plan.monitors.len(),
        s.interval_s,
        s.stale_after_ms / 1000,
        s.duration_s,
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

    let a = alarms(s, &silenced);
    println!(
        "false Stale: max {} at once (members that kept beating; max Stale count incl. the silenced: {}), {} distinct {:?}",
        a.max_false_stale,
        a.max_stale,
        a.false_stale.len(),
        a.false_stale.iter().take(5).collect::<Vec<_>>()
    );
    println!(
        "false Late (a warning, not an alarm): max {} at once",
        a.max_false_late
    );
    println!(
        "HeartbeatStale Events published (operator log): {} for silenced members, {} false; \
         Event objects seen by the watch: {} HeartbeatStale ({} false), by reason {:?} (repeats fold into series)",
        a.published_stale - a.false_published,
        a.false_published,
        a.stale_events,
        a.false_events,
        a.reasons
    );

    let mut by_monitor: Vec<Vec<&StatusSeen>> = vec![Vec::new(); plan.monitors.len()];
    for x in s.statuses {
        by_monitor[x.monitor].push(x);
    }
    let w = writes(&by_monitor, steady, s.end_ms);
    let gaps = &w.gaps;
    let steady_secs = ((s.end_ms - steady) as f64 / 1000.0).max(1.0);
    let too_close = gaps.iter().filter(|g| **g < s.interval_ms - 500).count();
    println!(
        "status writes (watch, steady {:.0} s): per monitor min {} max {} ({:.2}/interval); gap min {} p50 {} max {}; {} gaps under interval-0.5 s, {} over 60 s",
        steady_secs,
        w.per_monitor.iter().min().copied().unwrap_or_default(),
        w.per_monitor.iter().max().copied().unwrap_or_default(),
        w.per_monitor.iter().sum::<usize>() as f64
            / plan.monitors.len() as f64
            / (steady_secs * 1000.0 / s.interval_ms as f64),
        secs(gaps.first().copied().unwrap_or_default()),
        secs(percentile(gaps, 0.5)),
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
        let cores = |x: u64, y: u64| cores_used(x, y, s.clk_tck, wall);
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

    let lat = latency(&by_monitor, &d.beats, steady, s.end_ms);
    println!(
        "beat-to-status latency ({} beats in steady state; broker time -> watch arrival of the first status write covering it; \
status writes are held to one per interval by design, so ~interval/2 median is expected; bounds from lastBeatTime's whole seconds): \
p50 {}..{}, p99 {}..{}, max {}; {} beats after the last write",
        lat.upper.len(),
        secs(percentile(&lat.lower, 0.5)),
        secs(percentile(&lat.upper, 0.5)),
        secs(percentile(&lat.lower, 0.99)),
        secs(percentile(&lat.upper, 0.99)),
        secs(lat.upper.last().copied().unwrap_or_default()),
        lat.uncovered
    );

    let l = lateness(s);
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
        dist(&l.by_log),
        dist(&l.by_event_time),
        dist(&l.by_arrival),
        dist(&l.by_status),
        l.missing
    );
    println!("  each (ms, published - deadline): {:?}", l.by_log);
    let ok = passed(s, &a);
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
    use clap::Parser;

    use super::*;
    use crate::Args;

    /// Two monitors of two members each; member 3 (scale-m001-p0001) is silenced.
    fn plan() -> Plan {
        let args = Args::parse_from(["x", "--members", "4", "--per-monitor", "2", "--stop", "1"]);
        let mut plan = Plan::new(&args, "t");
        plan.stopped = HashSet::from([3]);
        plan
    }

    fn status(arrival_ms: i64, monitor: usize, stale: &[&str], late: &[&str]) -> StatusSeen {
        StatusSeen {
            arrival_ms,
            monitor,
            up: 0,
            late: late.len() as u32,
            stale: stale.len() as u32,
            last_beat_ms: None,
            ready: true,
            stale_members: stale.iter().map(|s| s.to_string()).collect(),
            late_members: late.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn event(arrival_ms: i64, reason: &str, program: &str) -> EventSeen {
        EventSeen {
            arrival_ms,
            reason: reason.into(),
            event_time_us: Some((arrival_ms - 100) * 1000),
            program: Some(program.into()),
        }
    }

    fn summary<'a>(
        plan: &'a Plan,
        deliveries: &'a Deliveries,
        statuses: &'a [StatusSeen],
        events: &'a [EventSeen],
        published: &'a [(i64, String, String)],
    ) -> Summary<'a> {
        Summary {
            plan,
            interval_s: 10,
            duration_s: 600,
            deliveries,
            statuses,
            events,
            published,
            samples: &[],
            t0_ms: 1_000,
            applied_ms: 2_000,
            steady_ms: Some(3_000),
            end_ms: 601_000,
            stop_at_ms: 500_000,
            interval_ms: 10_000,
            stale_after_ms: 35_000,
            clk_tck: 100,
            sent: 0,
            queue_full: 0,
            warns: 0,
            errors: 0,
        }
    }

    #[test]
    fn percentile_takes_the_nearest_rank() {
        let v: Vec<i64> = (1..=101).collect();
        assert_eq!(percentile(&v, 0.5), 51);
        assert_eq!(percentile(&v, 0.99), 100);
        assert_eq!(percentile(&v, 1.0), 101);
        assert_eq!(percentile(&[], 0.5), 0);
        // Rank 1.5 rounds up.
        assert_eq!(percentile(&[1, 2, 3, 4], 0.5), 3);
    }

    #[test]
    fn only_members_that_kept_beating_are_false_alarms() {
        let plan = plan();
        let d = Deliveries::new(&plan);
        let mut crowded = status(9_000, 1, &["scale-m001-p0001"], &["scale-m001-p0001"]);
        // Three Stale counted, one (the silenced) listed: two are false.
        crowded.stale = 3;
        let statuses = [
            status(5_000, 0, &[], &["scale-m000-p0000"]),
            status(6_000, 0, &["scale-m000-p0001"], &[]),
            status(7_000, 0, &["scale-m000-p0001"], &[]),
            crowded,
        ];
        let events = [
            event(8_000, STALE, "scale-m001-p0001"),
            event(8_500, STALE, "scale-m000-p0001"),
            event(8_600, "HeartbeatLate", "scale-m000-p0000"),
        ];
        let published = [
            (8_000_000, STALE.to_string(), "scale-m001-p0001".to_string()),
            (8_400_000, STALE.to_string(), "scale-m000-p0001".to_string()),
        ];
        let s = summary(&plan, &d, &statuses, &events, &published);
        let silenced = HashSet::from(["scale-m001-p0001"]);
        let a = alarms(&s, &silenced);
        assert_eq!(a.max_false_stale, 2);
        assert_eq!(a.max_false_late, 1);
        assert_eq!(a.max_stale, 3);
        // First listed 5 s after t0, kept at its first sight.
        assert_eq!(
            a.false_stale,
            BTreeMap::from([("scale-m000-p0001".to_string(), 5_000)])
        );
        assert_eq!((a.stale_events, a.false_events), (2, 1));
        assert_eq!((a.published_stale, a.false_published), (2, 1));
        assert_eq!(a.reasons.get(STALE), Some(&2));
        assert!(!passed(&s, &a));
    }

    #[test]
    fn a_run_passes_only_when_steady_and_without_false_alarms_or_failures() {
        let plan = plan();
        let mut d = Deliveries::new(&plan);
        let statuses = [status(9_000, 1, &["scale-m001-p0001"], &[])];
        let events = [event(9_500, STALE, "scale-m001-p0001")];
        let published = [(9_400_000, STALE.to_string(), "scale-m001-p0001".to_string())];
        let silenced = HashSet::from(["scale-m001-p0001"]);
        let s = summary(&plan, &d, &statuses, &events, &published);
        assert!(passed(&s, &alarms(&s, &silenced)));
        let never_steady = Summary {
            steady_ms: None,
            ..summary(&plan, &d, &statuses, &events, &published)
        };
        assert!(!passed(&never_steady, &alarms(&never_steady, &silenced)));
        d.failed = 1;
        let s = summary(&plan, &d, &statuses, &events, &published);
        assert!(!passed(&s, &alarms(&s, &silenced)));
    }

    #[test]
    fn writes_are_counted_and_gapped_per_monitor_inside_the_steady_window() {
        let a = [
            status(1_000, 0, &[], &[]),
            status(3_000, 0, &[], &[]),
            status(13_000, 0, &[], &[]),
            status(30_000, 0, &[], &[]),
        ];
        let b = [status(4_000, 1, &[], &[]), status(9_000, 1, &[], &[])];
        let by_monitor = vec![a.iter().collect(), b.iter().collect()];
        let w = writes(&by_monitor, 2_000, 20_000);
        assert_eq!(w.per_monitor, vec![2, 2]);
        // No gap across monitors (9,000 - 3,000 is not one).
        assert_eq!(w.gaps, vec![5_000, 10_000]);
    }

    #[test]
    fn latency_is_bounded_by_the_whole_seconds_of_last_beat_time() {
        let mut w1 = status(12_000, 0, &[], &[]);
        w1.last_beat_ms = Some(10_000);
        let mut w2 = status(22_000, 0, &[], &[]);
        w2.last_beat_ms = Some(20_000);
        let by_monitor = vec![vec![&w2, &w1]];
        // 10,500 is covered for certain only by w2 (20 s >= 10.5 s), maybe
        // by w1 (10 s + 1 s > 10.5 s); 25,000 by no write; 1,000 is before
        // the steady window.
        let beats = vec![vec![25_000, 10_500, 1_000]];
        let lat = latency(&by_monitor, &beats, 5_000, 30_000);
        assert_eq!(lat.upper, vec![22_000 - 10_500]);
        assert_eq!(lat.lower, vec![12_000 - 10_500]);
        assert_eq!(lat.uncovered, 1);
    }

    #[test]
    fn lateness_is_measured_from_the_last_delivered_beat_plus_stale_after() {
        let plan = plan();
        let mut d = Deliveries::new(&plan);
        d.last[3] = 100_000;
        // Deadline 135,000.
        let statuses = [
            status(134_000, 1, &[], &[]),
            status(137_000, 1, &["scale-m001-p0001"], &[]),
            status(140_000, 1, &["scale-m001-p0001"], &[]),
        ];
        let events = [
            event(136_000, "HeartbeatLate", "scale-m001-p0001"),
            event(138_000, STALE, "scale-m001-p0001"),
        ];
        let published = [(
            135_500_000,
            STALE.to_string(),
            "scale-m001-p0001".to_string(),
        )];
        let s = summary(&plan, &d, &statuses, &events, &published);
        let l = lateness(&s);
        assert_eq!(l.by_log, vec![500]);
        assert_eq!(l.by_arrival, vec![3_000]);
        assert_eq!(l.by_event_time, vec![2_900]);
        assert_eq!(l.by_status, vec![2_000]);
        assert!(l.missing.is_empty());
        let s = summary(&plan, &d, &statuses, &events, &[]);
        assert_eq!(lateness(&s).missing, vec!["scale-m001-p0001".to_string()]);
    }

    #[test]
    fn cores_are_ticks_per_second_of_wall_time() {
        assert_eq!(cores_used(100, 400, 100, 2.0), 1.5);
        // A restarted process's counter going back counts nothing.
        assert_eq!(cores_used(400, 100, 100, 2.0), 0.0);
    }
}
