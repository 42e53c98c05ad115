//! One reconcile of a monitor, the I/O around [`super::decide`]: fetch
//! what it needs (its pods, its broker Secret, its consumer's health) ->
//! decide (pure, under the monitor's locks, taken once) -> apply (raise
//! Events, set the metrics, write status when the decision says so).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use heartbeat_crds::conditions::reason;
use heartbeat_crds::monitor::{ClockSource, HeartbeatMonitor, HeartbeatMonitorStatus, MemberState};
use jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use serde_json::json;

use super::decide::{self, Observation, State, StatusPlan, decide};
use super::secrets::Read;
use super::sight::KeySight;
use super::status::{Readiness, Row};
use super::{Context, Tracked, events, pods, signing};
use crate::consumer::{AttachRequest, BlindKind, ConsumerKey, Health, catching_up, lock, view_for};
use crate::membership::state::Timing;
use crate::membership::table::{MonitorId, Settings};
use crate::membership::{Blind, View};
use crate::metrics::{ErrorLabels, MemberLabels, MonitorLabels, StateLabels};
use crate::webhook::config::FIELD_MANAGER;
use crate::{Error, Result};

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
    if !ctx.pods_synced.wait().await {
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
    // In the table before the consumer attaches: the beats its replay
    // brings are attributed to these pods (a pod not yet there would have
    // them dropped). The decision's lock comes later, after the attach.
    lock(&tracked.table).sync_pods(coverage.members, now);

    // Sight: the broker Secret, the consumer, its health.
    tracked.wake_pending.store(false, Ordering::Relaxed);
    let sight = broker_key(&ctx, &monitor)
        .await?
        .and_then(|key| signing::load(&ctx, &monitor, &tracked).map(|()| key));
    let mut replaying = false;
    let (readiness, view) = match sight {
        KeySight::Seen(key) => {
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
            let view = view_for(&health, a.epoch, a.replayed_from, &a.replay(), now);
            let retention = a.retention_ms.load(Ordering::Relaxed);
            let mut r = readiness_for(&id, &key, &health, retention, &timing);
            if a.create_time() && monitor.spec.clock.source == ClockSource::Broker {
                r.warn(format!(
                    "topic {} stamps messages with the producers' clock (message.timestamp.type=CreateTime), so clock.source Broker judges by the sidecars' clocks: set it to LogAppendTime",
                    key.topic
                ));
            }
            (r, view)
        }
        KeySight::Unseen { reason, message } => {
            ctx.consumers.detach(&id);
            let view = View::Blind(Blind::Unreadable {
                why: message.clone(),
            });
            (Readiness::NotReading { reason, message }, view)
        }
    };

    // Decide, under the monitor's locks, taken once and released before
    // anything is awaited (the consumer records beats into the same table).
    let decision = {
        let mut table = lock(&tracked.table);
        let mut reported = lock(&tracked.uninjected_reported);
        let written = lock(&tracked.written);
        decide(
            &mut State {
                table: &mut table,
                uninjected_reported: &mut reported,
                written: written.as_ref(),
                since: tracked.since,
            },
            Observation {
                monitor: &monitor,
                readiness: &readiness,
                view,
                replaying,
                uninjected: &coverage.uninjected,
            },
            now,
        )
    };

    // Apply: Events, metrics, status.
    for ev in decision.events {
        events::publish_one(&ctx, &monitor, &tracked.budget, ev).await;
    }
    let requeue = Action::requeue(decision.requeue);
    let StatusPlan::Desired { status, write } = decision.status else {
        return Ok(requeue);
    };
    observe(&ctx, &id, &tracked, &decision.rows, decision.silenced);
    ctx.metrics
        .monitor_ready
        .get_or_create(&MonitorLabels {
            namespace: id.namespace.clone(),
            monitor: id.name.clone(),
        })
        .set(i64::from(decide::is_ready(&status)));
    if write {
        write_status(&ctx, &id, &tracked, *status, now).await?;
    }
    Ok(requeue)
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
        let labels = MemberLabels {
            namespace: id.namespace.clone(),
            monitor: id.name.clone(),
            member: member.clone(),
        };
        m.member_up
            .get_or_create(&labels)
            .set(i64::from(r.state == MemberState::Up));
        m.member_stale
            .get_or_create(&labels)
            .set(i64::from(r.state == MemberState::Stale));
        now_exported.insert(member);
    }
    for gone in series.difference(&now_exported) {
        m.forget_member(&MemberLabels {
            namespace: id.namespace.clone(),
            monitor: id.name.clone(),
            member: gone.clone(),
        });
    }
    *series = now_exported;
}

/// Writes `desired` through the status subresource (server-side apply),
/// unless this replica lost the Lease.
async fn write_status(
    ctx: &Context,
    id: &MonitorId,
    tracked: &Tracked,
    desired: HeartbeatMonitorStatus,
    now: Timestamp,
) -> Result<()> {
    // Checked last thing before the write: a replica that lost the Lease
    // writes nothing more.
    if !ctx.leader.load(Ordering::SeqCst) {
        return Ok(());
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

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
        let Readiness::NotReading {
            reason: got,
            message,
        } = readiness_for(&id, &key(), &missing, -1, &timing())
        else {
            panic!("ready without a topic");
        };
        assert_eq!(got, reason::TOPIC_MISSING);
        assert!(
            message.contains("kafka-topics.sh --bootstrap-server kafka:9092 --create --topic hb"),
            "{message}"
        );
        let down = Health::Blind {
            kind: BlindKind::Broker,
            why: "Local: All broker connections are down".into(),
        };
        let Readiness::NotReading {
            reason: got,
            message,
        } = readiness_for(&id, &key(), &down, -1, &timing())
        else {
            panic!("ready without a broker");
        };
        assert_eq!(got, reason::BROKER_UNAVAILABLE);
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
