//! One reconcile of a monitor: fetch what it needs (its pods, its broker
//! Secret, its consumer's health) -> decide (membership, pure) -> raise
//! Events -> write status when it changed, at most once per interval.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use heartbeat_crds::conditions::{READY, TRUE, reason};
use heartbeat_crds::monitor::{ClockSource, HeartbeatMonitor, HeartbeatMonitorStatus, MemberState};
use jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use serde_json::json;

use super::secrets::{self, Read};
use super::sight::KeySight;
use super::status::{self, Inputs, Readiness, Row};
use super::{Context, Tracked, events, pods, signing};
use crate::consumer::{AttachRequest, BlindKind, ConsumerKey, Health, catching_up, lock, view_for};
use crate::membership::silence;
use crate::membership::state::Timing;
use crate::membership::table::{MonitorId, Settings};
use crate::membership::{Blind, View};
use crate::metrics::{ErrorLabels, MemberLabels, MonitorLabels, StateLabels};
use crate::webhook::config::FIELD_MANAGER;
use crate::{Error, Result};

/// The longest a changed status waits for its write.
const MAX_HOLD: SignedDuration = SignedDuration::from_secs(60);

/// The least time between two writes when Ready changed (see
/// [`readiness_changed`]).
const READY_NEWS_GAP: SignedDuration = SignedDuration::from_secs(1);

/// How long a new leader keeps the status it found while it replays the
/// topic; a longer replay shows members Unknown (`CatchingUp`) meanwhile.
const CATCH_UP_HOLD: SignedDuration = SignedDuration::from_secs(30);

/// How long to wait for the consumer to confirm the topic past a deadline
/// (it confirms every [`crate::consumer`] check, 500 ms, or sooner).
const CONFIRM_WAIT: SignedDuration = SignedDuration::from_millis(200);

/// How far back a consumer reads when a monitor attaches: the Stale
/// window with room to spare (what a restart must see to judge without
/// flapping), or the availability history if longer.
pub fn seek_window(timing: &Timing, history: SignedDuration) -> SignedDuration {
    stale_window(timing).max(history)
}

/// The part of the seek-back window retention must cover, and what a
/// monitor joining a running consumer replays.
fn stale_window(timing: &Timing) -> SignedDuration {
    timing.stale_after + timing.interval * 2 + SignedDuration::from_secs(30)
}

/// Reconciles one monitor.
pub async fn reconcile(monitor: Arc<HeartbeatMonitor>, ctx: Arc<Context>) -> Result<Action> {
    if !ctx.leader.load(Ordering::SeqCst) {
        return Ok(Action::await_change());
    }
    // Judging before the pod cache is filled would drop every member (and
    // ignore their replayed beats): wait for it once.
    if ctx.pods.wait_until_ready().await.is_err() {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let id = MonitorId {
        namespace: monitor.namespace().unwrap_or_default(),
        name: monitor.name_any(),
    };
    let now = Timestamp::now();
    let settings = Settings::from_spec(&monitor.spec, &ctx.limits);
    let timing = settings.timing;
    let tracked = ctx.track(&id, settings, now);

    // Members: the pods the monitor covers.
    // Shared, not cloned: a namespace may hold a hundred monitors of a
    // thousand expected programs each, and every reconcile looks at them.
    let siblings: Vec<Arc<HeartbeatMonitor>> = ctx
        .monitors
        .state()
        .into_iter()
        .filter(|m| m.metadata.namespace.as_deref() == Some(id.namespace.as_str()))
        .collect();
    let all_pods = ctx.pods.state();
    let coverage = pods::coverage(&monitor, &siblings, all_pods.iter().map(|p| p.as_ref()));
    lock(&tracked.table).sync_pods(coverage.members, now);

    // Sight: the broker Secret, the consumer, its health.
    tracked.wake_pending.store(false, Ordering::Relaxed);
    let sight = broker_key(&ctx, &monitor)
        .await?
        .and_then(|key| signing::load(&ctx, &monitor, &tracked).map(|()| key))
        .into_result();
    let mut replaying = false;
    let readiness = match sight {
        Ok(key) => {
            let a = ctx.consumers.attach(AttachRequest {
                key: &key,
                id: &id,
                table: &tracked.table,
                wake_pending: &tracked.wake_pending,
                signing: &tracked.signing,
                full: seek_window(&timing, ctx.limits.history),
                short: stale_window(&timing),
                now,
            });
            let health = a.health.borrow().clone();
            replaying = catching_up(&health, a.epoch);
            lock(&tracked.table).set_view(view_for(
                &health,
                a.epoch,
                a.replayed_from,
                &a.replay(),
                now,
            ));
            let retention = a.retention_ms.load(Ordering::Relaxed);
            let mut r = readiness_for(&id, &key, &health, retention, &timing);
            if a.create_time() && monitor.spec.clock.source == ClockSource::Broker {
                r.warn(format!(
                    "topic {} stamps messages with the producers' clock (message.timestamp.type=CreateTime), so clock.source Broker judges by the sidecars' clocks: set it to LogAppendTime",
                    key.topic
                ));
            }
            r
        }
        Err(not_reading) => {
            ctx.consumers.detach(&id);
            if let Readiness::NotReading { message, .. } = &not_reading {
                lock(&tracked.table).set_view(View::Blind(Blind::Unreadable {
                    why: message.clone(),
                }));
            }
            not_reading
        }
    };

    // Decide. Members an earlier leader already alarmed about raise no
    // second Stale Event.
    if lock(&tracked.written).is_none()
        && let Some(previous) = &monitor.status
    {
        lock(&tracked.table).sighted_from(sight_floor(previous, tracked.since));
        lock(&tracked.table).inherit_alarms(
            previous
                .members
                .iter()
                .filter(|m| m.state == MemberState::Stale)
                .map(|m| m.program_id.as_str()),
        );
    }
    let (silence, bad_windows) = silence::silence(&monitor.spec, now);
    let transitions = lock(&tracked.table).evaluate(now, silence.as_ref());
    events::publish(
        &ctx,
        &monitor,
        &tracked.budget,
        &transitions,
        timing.stale_after,
    )
    .await;
    // Pods admitted without the sidecar: one Event per newly seen pod.
    let fresh: Vec<String> = {
        let mut reported = lock(&tracked.uninjected_reported);
        reported.retain(|p| coverage.uninjected.contains(p));
        coverage
            .uninjected
            .iter()
            .filter(|p| reported.insert((*p).clone()))
            .cloned()
            .collect()
    };
    if let Some(ev) = events::uninjected_event(&fresh, &id.namespace) {
        events::publish_one(&ctx, &monitor, &tracked.budget, ev).await;
    }
    let (rows, view, last_beat, deadline) = {
        let mut t = lock(&tracked.table);
        let rows = status::rows(&mut t, now);
        (rows, t.view().clone(), t.last_beat, t.next_deadline(now))
    };
    // A new leader (or a restarted operator) keeps the status it finds
    // while it replays the topic, briefly: writing every member Unknown for
    // the second a replay takes would be a flap on every failover.
    if replaying
        && lock(&tracked.written).is_none()
        && monitor.status.is_some()
        && now < tracked.since + CATCH_UP_HOLD
    {
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    observe(&ctx, &id, &tracked, &rows, silence.is_some());

    // Status.
    let previous = lock(&tracked.written)
        .as_ref()
        .map(|(_, s)| s.clone())
        .or_else(|| monitor.status.clone());
    let desired = status::build(&Inputs {
        generation: monitor.metadata.generation,
        namespace: &id.namespace,
        rows: &rows,
        view: &view,
        readiness: &readiness,
        silence: silence.as_ref(),
        bad_windows: &bad_windows,
        uninjected: &coverage.uninjected,
        last_beat,
        stale_after: timing.stale_after,
        previous: previous.as_ref(),
        now,
    });
    let ready = desired
        .conditions
        .iter()
        .any(|c| c.type_ == READY && c.status == TRUE);
    ctx.metrics
        .monitor_ready
        .get_or_create(&MonitorLabels {
            namespace: id.namespace.clone(),
            monitor: id.name.clone(),
        })
        .set(i64::from(ready));
    let not_before = write_status(&ctx, &id, &tracked, desired, timing.interval, now).await?;

    // Wake up at the next deadline (a member going Late or Stale), when a
    // held-back write may go, at least once per interval, and in time to
    // read the Secrets again (nothing watches them).
    let recheck = SignedDuration::try_from(secrets::RECHECK).unwrap_or(MAX_HOLD);
    let mut next = now + timing.interval.min(MAX_HOLD).min(recheck);
    if let Some(d) = deadline {
        // A deadline already past `now` waits for the consumer to confirm
        // the topic up to it (within a check or two).
        let d = d.checked_add(SignedDuration::from_millis(100)).unwrap_or(d);
        next = next.min(d.max(now + CONFIRM_WAIT));
    }
    if let Some(w) = not_before {
        next = next.min(w);
    }
    let wait = now
        .duration_until(next)
        .max(SignedDuration::from_millis(100));
    Ok(Action::requeue(
        Duration::try_from(wait).unwrap_or(Duration::from_secs(1)),
    ))
}

/// From when the status a new leader finds says the topic was read
/// without a break: `Ready` True since its last transition. Otherwise (not
/// ready, or no condition) nothing is known before `fallback`, this
/// replica's first sight of the monitor. A replay cannot tell an outage's
/// gap in the topic from silence; the previous leader could.
pub fn sight_floor(previous: &HeartbeatMonitorStatus, fallback: Timestamp) -> Timestamp {
    previous
        .conditions
        .iter()
        .find(|c| c.type_ == READY)
        .filter(|c| c.status == TRUE)
        .map_or(fallback, |c| c.last_transition_time.0.min(fallback))
}

/// Backs off a failed reconcile; the failure is counted and logged.
pub fn error_policy(monitor: Arc<HeartbeatMonitor>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .reconcile_errors
        .get_or_create(&ErrorLabels {
            error: error.metric_label().into(),
        })
        .inc();
    tracing::warn!(monitor = %monitor.name_any(), namespace = ?monitor.namespace(), error = %error, "reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

/// The consumer key from the monitor's broker Secret, read by name (at
/// most once per [`secrets::RECHECK`]: a changed Secret restarts the
/// consumer then). A Secret the operator may not read is a reason not to
/// read the topic, with the command that grants it.
async fn broker_key(ctx: &Context, monitor: &HeartbeatMonitor) -> Result<KeySight<ConsumerKey>> {
    let ns = monitor.namespace().unwrap_or_default();
    let name = &monitor.spec.broker_secret_ref.name;
    Ok(match ctx.secrets.get(&ns, name).await? {
        Read::Missing => KeySight::Unseen {
            reason: reason::SECRET_MISSING,
            message: format!(
                "broker Secret {ns}/{name} does not exist: create it with librdkafka properties, e.g. kubectl -n {ns} create secret generic {name} --from-literal=bootstrap.servers=HOST:9092"
            ),
        },
        Read::Forbidden => KeySight::Unseen {
            reason: reason::SECRET_FORBIDDEN,
            message: format!(
                "the operator may not read Secrets in namespace {ns} (the chart's rbac.namespaced mode): grant it with: {}",
                ctx.grant.command(&ns)
            ),
        },
        Read::Found(s) => {
            let empty = Default::default();
            let key = match ConsumerKey::from_secret(
                &monitor.spec.topic,
                s.data.as_ref().unwrap_or(&empty),
            ) {
                Ok(k) => k,
                Err(e) => {
                    return Ok(KeySight::Unseen {
                        reason: reason::SECRET_INVALID,
                        message: format!("broker Secret {ns}/{name}: {e}"),
                    });
                }
            };
            if !ctx.allowed_brokers.allows(key.bootstrap_servers()) {
                return Ok(KeySight::Unseen {
                    reason: reason::BROKER_NOT_ALLOWED,
                    message: format!(
                        "the bootstrap.servers of broker Secret {ns}/{name} are not among the brokers this operator may connect to ({}): the operator did not connect",
                        ctx.allowed_brokers.0.join(", ")
                    ),
                });
            }
            with_operator_credentials(ctx, key).await?
        }
    })
}

/// `key` with the operator's own credentials when it has a consumer Secret.
async fn with_operator_credentials(
    ctx: &Context,
    key: ConsumerKey,
) -> Result<KeySight<ConsumerKey>> {
    let Some((ns, name)) = &ctx.consumer_secret else {
        return Ok(KeySight::Seen(key));
    };
    let unavailable = |why: String| KeySight::Unseen {
        reason: reason::CONSUMER_SECRET_UNAVAILABLE,
        message: format!("the operator's own consumer Secret {ns}/{name} {why}"),
    };
    Ok(match ctx.secrets.get(ns, name).await? {
        Read::Found(s) => {
            let empty = Default::default();
            match key.with_credentials(s.data.as_ref().unwrap_or(&empty)) {
                Ok(k) => KeySight::Seen(k),
                Err(e) => unavailable(format!("is unusable: {e}")),
            }
        }
        Read::Missing => unavailable("does not exist".into()),
        Read::Forbidden => {
            unavailable("may not be read: the chart's Role grants get on it by name".into())
        }
    })
}

/// Ready, from the consumer's health.
fn readiness_for(
    id: &MonitorId,
    key: &ConsumerKey,
    health: &Health,
    retention_ms: i64,
    timing: &Timing,
) -> Readiness {
    let (topic, bootstrap) = (&key.topic, key.bootstrap());
    let window = stale_window(timing);
    match health {
        Health::Blind {
            kind: BlindKind::TopicMissing,
            ..
        } => Readiness::NotReading {
            reason: reason::TOPIC_MISSING,
            message: format!(
                "topic {topic} does not exist on {bootstrap}, and the operator does not create topics: create it, e.g. kafka-topics.sh --bootstrap-server {bootstrap} --create --topic {topic} --partitions 3 --config retention.ms={}",
                window.as_millis().max(86_400_000)
            ),
        },
        Health::Blind {
            kind: BlindKind::BadSettings,
            why,
        } => Readiness::NotReading {
            reason: reason::INVALID_BROKER_SETTINGS,
            message: format!("librdkafka refused the settings of the broker Secret of {id}: {why}"),
        },
        Health::Blind {
            kind: BlindKind::Broker,
            why,
        } => Readiness::NotReading {
            reason: reason::BROKER_UNAVAILABLE,
            message: format!(
                "cannot read {key}: {why}; members are Unknown (never Stale) until it is back"
            ),
        },
        Health::Starting | Health::Reading { .. } => Readiness::Reading {
            what: key.to_string(),
            warning: (retention_ms >= 0 && i128::from(retention_ms) < window.as_millis())
                .then(|| {
                    format!(
                        "but the topic keeps messages for {}s only, less than the {}s a restart reads back to rebuild state: raise its retention.ms",
                        retention_ms / 1000,
                        window.as_secs()
                    )
                }),
        },
    }
}

/// Per-monitor gauges, and the capped per-member series.
fn observe(ctx: &Context, id: &MonitorId, tracked: &Tracked, rows: &[Row], silenced: bool) {
    let m = &ctx.metrics;
    for state in MemberState::ALL {
        m.members
            .get_or_create(&StateLabels {
                namespace: id.namespace.clone(),
                monitor: id.name.clone(),
                state: state.as_str().to_string(),
            })
            .set(rows.iter().filter(|r| r.state == state).count() as i64);
    }
    m.alarms_silenced
        .get_or_create(&MonitorLabels {
            namespace: id.namespace.clone(),
            monitor: id.name.clone(),
        })
        .set(i64::from(silenced));
    let mut series = lock(&tracked.member_series);
    let mut now_exported = std::collections::HashSet::new();
    for r in rows.iter().take(ctx.member_metrics_cap) {
        let member = r.pod.clone().unwrap_or_else(|| r.program_id.clone());
        m.member_up
            .get_or_create(&MemberLabels {
                namespace: id.namespace.clone(),
                monitor: id.name.clone(),
                member: member.clone(),
            })
            .set(i64::from(r.state == MemberState::Up));
        now_exported.insert(member);
    }
    for gone in series.difference(&now_exported) {
        let _ = m.member_up.remove(&MemberLabels {
            namespace: id.namespace.clone(),
            monitor: id.name.clone(),
            member: gone.clone(),
        });
    }
    *series = now_exported;
}

/// Whether the Ready condition changed (caught up, lost sight, a Secret
/// fixed): such news is written at once, not held for the write slot; a
/// new leader's first correct status, above all, must not wait a minute
/// after its replay.
fn readiness_changed(
    last: &heartbeat_crds::HeartbeatMonitorStatus,
    desired: &heartbeat_crds::HeartbeatMonitorStatus,
) -> bool {
    let ready = |s: &heartbeat_crds::HeartbeatMonitorStatus| {
        s.conditions
            .iter()
            .find(|c| c.type_ == READY)
            .map(|c| (c.status.clone(), c.reason.clone()))
    };
    ready(last) != ready(desired)
}

/// Writes `desired` through the status subresource (server-side apply)
/// when it differs from the last write and an interval has passed since,
/// or at once (a second after the last at the soonest) when its Ready
/// condition changed; returns when a held-back write may go.
async fn write_status(
    ctx: &Context,
    id: &MonitorId,
    tracked: &Tracked,
    desired: heartbeat_crds::HeartbeatMonitorStatus,
    interval: SignedDuration,
    now: Timestamp,
) -> Result<Option<Timestamp>> {
    // Once per interval, but at least once a minute: a monitor beating
    // daily must not take a day to show Stale.
    let hold = interval.min(MAX_HOLD);
    if let Some((at, last)) = lock(&tracked.written).as_ref() {
        if *last == desired {
            return Ok(None);
        }
        if now < *at + hold {
            if !readiness_changed(last, &desired) {
                return Ok(Some(*at + hold));
            }
            // News goes at once, but a flapping Ready at most once a second.
            let news = *at + READY_NEWS_GAP;
            if now < news {
                return Ok(Some(news));
            }
        }
    }
    // Checked last thing before the write: a replica that lost the Lease
    // writes nothing more.
    if !ctx.leader.load(Ordering::SeqCst) {
        return Ok(None);
    }
    let patch = json!({
        "apiVersion": "heartbeat.dev/v1alpha1",
        "kind": "HeartbeatMonitor",
        "status": desired,
    });
    Api::<HeartbeatMonitor>::namespaced(ctx.client.clone(), &id.namespace)
        .patch_status(
            &id.name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(|source| Error::WriteStatus {
            namespace: id.namespace.clone(),
            name: id.name.clone(),
            source,
        })?;
    ctx.metrics
        .status_writes
        .get_or_create(&MonitorLabels {
            namespace: id.namespace.clone(),
            monitor: id.name.clone(),
        })
        .inc();
    *lock(&tracked.written) = Some((now, desired));
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn a_new_leader_trusts_sight_only_since_ready_last_became_true() {
        let at = |s: i64| Timestamp::from_second(1_800_000_000 + s).expect("time");
        let status = |ready: &str, since: i64| -> HeartbeatMonitorStatus {
            serde_json::from_value(json!({"conditions": [{
                "type": "Ready", "status": ready, "reason": "R", "message": "",
                "lastTransitionTime": at(since).to_string(),
            }]}))
            .expect("status")
        };
        assert_eq!(sight_floor(&status("True", 50), at(100)), at(50));
        assert_eq!(sight_floor(&status("False", 50), at(100)), at(100));
        assert_eq!(
            sight_floor(&HeartbeatMonitorStatus::default(), at(100)),
            at(100)
        );
        // A clock ahead of ours is not trusted past our own start.
        assert_eq!(sight_floor(&status("True", 500), at(100)), at(100));
    }

    /// Rule (issue 20): a change of Ready (caught up, above all) is
    /// written at once; anything else waits for the write slot.
    #[test]
    fn only_a_change_of_ready_skips_the_write_slot() {
        let status = |ready: &str, reason: &str, up: u32| -> HeartbeatMonitorStatus {
            serde_json::from_value(json!({"up": up, "conditions": [{
                "type": "Ready", "status": ready, "reason": reason, "message": "m",
                "lastTransitionTime": "2026-12-06T00:00:00Z",
            }]}))
            .expect("status")
        };
        let catching_up = status("False", "CatchingUp", 0);
        assert!(readiness_changed(
            &catching_up,
            &status("True", "Reading", 1000)
        ));
        assert!(readiness_changed(
            &catching_up,
            &status("False", "BrokerUnavailable", 0)
        ));
        assert!(!readiness_changed(
            &status("True", "Reading", 999),
            &status("True", "Reading", 1000)
        ));
    }

    fn key() -> ConsumerKey {
        let data: BTreeMap<String, k8s_openapi::ByteString> = [(
            "bootstrap.servers".to_string(),
            k8s_openapi::ByteString(b"kafka:9092".to_vec()),
        )]
        .into();
        ConsumerKey::from_secret("hb", &data).expect("key")
    }

    fn timing() -> Timing {
        Timing::from_spec(
            &serde_json::from_value(json!({
                "topic": "hb", "intervalSeconds": 10, "brokerSecretRef": {"name": "k"}
            }))
            .expect("spec"),
        )
    }

    #[test]
    fn a_retention_shorter_than_the_seek_back_is_a_warning_and_unknown_retention_none() {
        let id = MonitorId {
            namespace: "d".into(),
            name: "m".into(),
        };
        let reading = Health::Reading {
            since: Timestamp::UNIX_EPOCH,
            caught_up_epoch: 1,
            until: Timestamp::UNIX_EPOCH,
        };
        let r = readiness_for(&id, &key(), &reading, 60_000, &timing());
        let Readiness::Reading {
            warning: Some(w), ..
        } = r
        else {
            panic!("no warning: {r:?}");
        };
        assert!(
            w.contains("60s") && w.contains("85s") && w.contains("retention.ms"),
            "{w}"
        );
        for ms in [-1, 86_400_000] {
            let r = readiness_for(&id, &key(), &reading, ms, &timing());
            assert!(
                matches!(r, Readiness::Reading { warning: None, .. }),
                "{ms}: {r:?}"
            );
        }
    }

    #[test]
    fn a_missing_topic_names_the_command_and_a_broker_error_is_verbatim() {
        let id = MonitorId {
            namespace: "d".into(),
            name: "m".into(),
        };
        let missing = Health::Blind {
            kind: BlindKind::TopicMissing,
            why: "x".into(),
        };
        let Readiness::NotReading { reason, message } =
            readiness_for(&id, &key(), &missing, -1, &timing())
        else {
            panic!("ready without a topic");
        };
        assert_eq!(reason, "TopicMissing");
        assert!(
            message.contains("kafka-topics.sh --bootstrap-server kafka:9092 --create --topic hb"),
            "{message}"
        );
        let down = Health::Blind {
            kind: BlindKind::Broker,
            why: "Local: All broker connections are down".into(),
        };
        let Readiness::NotReading { reason, message } =
            readiness_for(&id, &key(), &down, -1, &timing())
        else {
            panic!("ready without a broker");
        };
        assert_eq!(reason, "BrokerUnavailable");
        assert!(
            message.contains("Local: All broker connections are down")
                && message.contains("kafka:9092")
        );
    }

    #[test]
    fn the_seek_back_covers_the_stale_window_with_room_or_the_history() {
        let spec: heartbeat_crds::HeartbeatMonitorSpec = serde_json::from_value(json!({
            "topic": "t", "intervalSeconds": 10, "brokerSecretRef": {"name": "k"}
        }))
        .expect("spec");
        let timing = Timing::from_spec(&spec);
        // 10 x 3 + 5 = 35 s Stale window, + 2 intervals + 30 s.
        assert_eq!(
            seek_window(&timing, SignedDuration::ZERO),
            SignedDuration::from_secs(85)
        );
        assert_eq!(
            seek_window(&timing, SignedDuration::from_hours(24)),
            SignedDuration::from_hours(24)
        );
    }
}
