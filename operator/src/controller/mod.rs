//! The controller: while this replica leads, one kube-runtime Controller
//! for HeartbeatMonitors that also watches Pods (the members), woken early
//! when a silent member beats again. Secrets are never watched: each pass
//! reads the ones a monitor names (`secrets`). `reconcile` owns one pass
//! (its I/O), `decide` what the pass does (pure).

pub mod decide;
pub mod events;
pub mod pods;
pub mod reconcile;
pub mod secrets;
pub mod sight;
pub mod signing;
pub mod status;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use heartbeat_crds::monitor::{HeartbeatMonitor, HeartbeatMonitorStatus, MemberState};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Container, ContainerStatus, Pod, PodSpec, PodStatus};
use kube::Client;
use kube::api::Api;
use kube::runtime::controller::{self, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::{mpsc, watch};

use crate::caches::Caches;
use crate::consumer::{BrokerAllowlist, Consumers, SigningKeys, lock};
use crate::membership::Table;
use crate::membership::table::{Limits, MonitorId, Settings};
use crate::metrics::{MemberLabels, Metrics, MonitorLabels, StateLabels};
use crate::synced::Synced;

/// What every reconcile works with.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub consumers: Consumers,
    /// The monitors this replica tracks.
    pub tracked: Mutex<HashMap<MonitorId, Arc<Tracked>>>,
    pub monitors: Store<HeartbeatMonitor>,
    /// Whether `monitors` is filled (wait on this, not on the store: see
    /// [`crate::synced::Synced`]).
    pub monitors_synced: Synced,
    pub pods: Store<Pod>,
    /// Whether `pods` is filled; every reconcile waits on it at first.
    pub pods_synced: Synced,
    /// The Secrets monitors name, read by name.
    pub secrets: secrets::SecretReader,
    /// What grants the operator a namespace's Secrets (for `Ready`'s advice).
    pub grant: secrets::Grant,
    /// The brokers it may connect to.
    pub allowed_brokers: BrokerAllowlist,
    /// Its own consumer credentials (`namespace`, `name`), if any.
    pub consumer_secret: Option<(String, String)>,
    pub limits: Limits,
    pub member_metrics_cap: usize,
    /// Cleared the moment leadership is lost: no status write after that.
    pub leader: Arc<AtomicBool>,
    /// The signing masters (kept by `keys::master::upkeep`), and where.
    pub master: crate::keys::Master,
    pub master_secret: String,
}

/// One monitor's state in this replica.
pub struct Tracked {
    pub table: Arc<Mutex<Table>>,
    pub budget: Mutex<events::Budget>,
    /// The last status written, and when.
    pub written: Mutex<Option<(Timestamp, HeartbeatMonitorStatus)>>,
    /// Members with `heartbeat_member_up`/`_stale` series, to remove the gone.
    pub member_series: Mutex<HashSet<String>>,
    /// A consumer's wake-up for this monitor is on its way.
    pub wake_pending: Arc<AtomicBool>,
    /// Uninjected pods already reported in an Event.
    pub uninjected_reported: Mutex<HashSet<String>>,
    /// The keys its beats must be signed with (shared with the consumer).
    pub signing: SigningKeys,
    /// When this replica began tracking it (took the lead, or saw it made).
    pub since: Timestamp,
}

impl Context {
    /// The monitor's state, made on first sight; its settings applied.
    pub fn track(&self, id: &MonitorId, settings: Settings, now: Timestamp) -> Arc<Tracked> {
        let mut all = lock(&self.tracked);
        let t = all
            .entry(id.clone())
            .or_insert_with(|| {
                Arc::new(Tracked {
                    table: Arc::new(Mutex::new(Table::new(id.clone(), settings.clone(), now))),
                    budget: Mutex::new(events::Budget::default()),
                    written: Mutex::new(None),
                    member_series: Mutex::new(HashSet::new()),
                    wake_pending: Arc::new(AtomicBool::new(false)),
                    uninjected_reported: Mutex::new(HashSet::new()),
                    signing: SigningKeys::default(),
                    since: now,
                })
            })
            .clone();
        drop(all);
        let mut table = lock(&t.table);
        if table.settings != settings {
            table.configure(settings, now);
        }
        drop(table);
        t
    }

    /// Forgets a monitor that is gone (or no longer ours): its consumer
    /// attachment and its metric series.
    pub fn forget(&self, id: &MonitorId) {
        self.consumers.detach(id);
        let Some(t) = lock(&self.tracked).remove(id) else {
            return;
        };
        tracing::info!(monitor = %id, "monitor gone; stopped tracking it");
        for state in MemberState::ALL {
            let _ = self.metrics.members.remove(&StateLabels {
                namespace: id.namespace.clone(),
                monitor: id.name.clone(),
                state: state.as_str().to_string(),
            });
        }
        for member in lock(&t.member_series).drain() {
            self.metrics.forget_member(&MemberLabels {
                namespace: id.namespace.clone(),
                monitor: id.name.clone(),
                member,
            });
        }
        let labels = MonitorLabels {
            namespace: id.namespace.clone(),
            monitor: id.name.clone(),
        };
        let _ = self.metrics.alarms_silenced.remove(&labels);
        let _ = self.metrics.status_writes.remove(&labels);
        let _ = self.metrics.monitor_ready.remove(&labels);
    }
}

/// The flags the controller needs.
#[derive(Debug, Clone)]
pub struct ControllerSettings {
    pub consumer_group: String,
    /// Where member tables are checkpointed (`None`: not at all).
    pub checkpoint_topic: Option<String>,
    pub identity: String,
    pub limits: Limits,
    pub member_metrics_cap: usize,
    pub grant: secrets::Grant,
    pub allowed_brokers: BrokerAllowlist,
    pub consumer_secret: Option<(String, String)>,
    /// The signing masters, shared with the key endpoint.
    pub master: crate::keys::Master,
    /// The master Secret, `namespace/name` (for `Ready`'s message).
    pub master_secret: String,
}

/// Keeps only what membership reads of a pod: the cache holds every pod of
/// the cluster, so the rest is dropped on arrival.
fn trim_pod(p: &mut Pod) {
    p.metadata.managed_fields = None;
    let names = |cs: Vec<Container>| -> Vec<Container> {
        cs.into_iter()
            .map(|c| Container {
                name: c.name,
                ..Container::default()
            })
            .collect()
    };
    p.spec = p.spec.take().map(|s| PodSpec {
        containers: names(s.containers),
        init_containers: s.init_containers.map(names),
        node_name: s.node_name,
        ..PodSpec::default()
    });
    // Only the sidecar's container status is read (when it started).
    let sidecar = |cs: Option<Vec<ContainerStatus>>| {
        cs.map(|v| {
            v.into_iter()
                .filter(|c| c.name == crate::pod_contract::SIDECAR_NAME)
                .collect::<Vec<_>>()
        })
    };
    p.status = p.status.take().map(|s| PodStatus {
        phase: s.phase,
        start_time: s.start_time,
        init_container_statuses: sidecar(s.init_container_statuses),
        container_statuses: sidecar(s.container_statuses),
        ..PodStatus::default()
    });
}

/// The monitors a pod event concerns: those of its namespace (the covering
/// one is decided in reconcile; a pod can also leave a monitor).
fn monitors_in_namespace(
    store: &Store<HeartbeatMonitor>,
    ns: Option<&str>,
) -> Vec<ObjectRef<HeartbeatMonitor>> {
    store
        .state()
        .iter()
        .filter(|m| m.metadata.namespace.as_deref() == ns)
        .map(|m| ObjectRef::from(m.as_ref()))
        .collect()
}

/// Runs the controller whenever `leader` says this replica leads, and
/// stops it (consumers included) the moment it does not, or when
/// `shutdown` says so (before the Lease is released).
pub async fn lead(
    client: Client,
    settings: ControllerSettings,
    metrics: Arc<Metrics>,
    caches: Caches,
    mut leader: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let flag = Arc::new(AtomicBool::new(false));
    loop {
        while !*leader.borrow_and_update() {
            tokio::select! {
                r = leader.changed() => if r.is_err() { return },
                _ = shutdown.changed() => return,
            }
        }
        tracing::info!(identity = %settings.identity, "leading: consuming beats and writing status");
        // The Controller waits for the monitor cache itself, on the store:
        // started once the cache is filled, that wait returns at once and
        // cannot take the store's one wake-up from another waiter.
        tokio::select! {
            filled = caches.synced.wait() => if !filled { return },
            _ = shutdown.changed() => return,
        }
        flag.store(true, Ordering::SeqCst);
        metrics.leader.set(1);
        let (ctx, run) = controller(
            client.clone(),
            &settings,
            metrics.clone(),
            flag.clone(),
            &caches,
        );
        tokio::pin!(run);
        enum End {
            ControllerEnded,
            LostLease,
            Shutdown,
        }
        let end = loop {
            tokio::select! {
                _ = &mut run => break End::ControllerEnded,
                _ = shutdown.changed() => break End::Shutdown,
                changed = leader.changed() => {
                    if changed.is_err() || !*leader.borrow_and_update() {
                        break End::LostLease;
                    }
                }
            }
        };
        // No status write after this, whatever is still in flight.
        flag.store(false, Ordering::SeqCst);
        metrics.leader.set(0);
        // Collected first: a `for` head's temporaries (the guard) live
        // through the loop, and `forget` takes the same lock.
        let ids: Vec<MonitorId> = lock(&ctx.tracked).keys().cloned().collect();
        for id in ids {
            ctx.forget(&id);
        }
        ctx.consumers.stop_all();
        match end {
            End::LostLease => {
                tracing::warn!("lost the leader Lease: stopped consuming and writing status")
            }
            End::Shutdown => {
                tracing::info!("shutting down: stopped consuming and writing status");
                return;
            }
            End::ControllerEnded => {
                tracing::error!("the controller ended; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Builds the Controller (on the shared monitor cache) and its Context;
/// the future runs it.
fn controller(
    client: Client,
    settings: &ControllerSettings,
    metrics: Arc<Metrics>,
    leader: Arc<AtomicBool>,
    caches: &Caches,
) -> (Arc<Context>, impl std::future::Future<Output = ()>) {
    let controller =
        Controller::for_shared_stream(caches.monitor_changes(), caches.monitors.clone())
            // Short: the debounce delays requeues too, so a deadline's Stale.
            .with_config(controller::Config::default().debounce(Duration::from_millis(100)));
    let monitors = controller.store();

    let (pods, pod_writer) = reflector::store();
    let pod_stream = watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .modify(trim_pod)
        .reflect(pod_writer)
        .touched_objects();

    let (wake, mut woken) = mpsc::unbounded_channel();
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "heartbeat-operator".into(),
            instance: Some(settings.identity.clone()),
        },
    );
    let ctx = Arc::new(Context {
        secrets: secrets::SecretReader::new(client.clone()),
        grant: settings.grant.clone(),
        allowed_brokers: settings.allowed_brokers.clone(),
        consumer_secret: settings.consumer_secret.clone(),
        master: settings.master.clone(),
        master_secret: settings.master_secret.clone(),
        client,
        recorder,
        metrics: metrics.clone(),
        consumers: Consumers::new(
            metrics,
            wake,
            settings.consumer_group.clone(),
            settings.identity.clone(),
            settings.checkpoint_topic.clone(),
        ),
        tracked: Mutex::new(HashMap::new()),
        monitors: monitors.clone(),
        monitors_synced: caches.synced.clone(),
        pods_synced: Synced::of(pods.clone()),
        pods,
        limits: settings.limits.clone(),
        member_metrics_cap: settings.member_metrics_cap,
        leader,
    });

    let for_pods = monitors.clone();
    let run = controller
        .watches_stream(pod_stream, move |pod: Pod| {
            monitors_in_namespace(&for_pods, pod.metadata.namespace.as_deref())
        })
        .reconcile_on(futures::stream::poll_fn(move |cx| woken.poll_recv(cx)))
        .run(reconcile::reconcile, reconcile::error_policy, ctx.clone())
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "reconcile");
            }
        });
    let sweep = sweep(ctx.clone());
    let both = async move {
        tokio::select! {
            _ = run => {}
            _ = sweep => {}
        }
    };
    (ctx, both)
}

/// Forgets monitors that left the cache (deleted, or no longer selected):
/// the Controller calls nothing for a deleted object without a finalizer,
/// and a finalizer would block deletions while the operator is down.
async fn sweep(ctx: Arc<Context>) {
    let mut every = tokio::time::interval(Duration::from_secs(2));
    loop {
        every.tick().await;
        if !ctx.monitors_synced.wait().await {
            return;
        }
        let gone: Vec<MonitorId> = lock(&ctx.tracked)
            .keys()
            .filter(|id| {
                ctx.monitors
                    .get(&ObjectRef::new(&id.name).within(&id.namespace))
                    .is_none()
            })
            .cloned()
            .collect();
        for id in gone {
            ctx.forget(&id);
        }
        ctx.secrets.sweep();
    }
}
