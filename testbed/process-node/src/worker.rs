//! One pod on the process node: starts its init containers, native sidecars
//! and app containers in the kubelet's order, restarts them per
//! restartPolicy, runs probes, reports status, and on deletion stops apps
//! before sidecars (SIGTERM, grace period, SIGKILL) and removes the pod.

use std::sync::Arc;
use std::time::{Duration, Instant};

use heartbeat_testbed::layout::{PodDir, PodsDir};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::Resource;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::sync::mpsc;

use crate::NodeSettings;
use crate::container::{Ctr, Kind, Notice, State};
use crate::enter::Entry;
use crate::images::Images;
use crate::launch::{self, Lookups, PodIdentity};
use crate::pod_network::PodNetwork;
use crate::restart::{self, RestartPolicy};
use crate::status::{self, PodPhase};
use crate::volumes::{self, PodVolumes};

/// What the node tells a pod worker.
pub enum Msg {
    /// The pod object changed.
    Update(Box<Pod>),
    /// The pod object is gone (force-deleted): stop everything.
    Gone,
    /// The node is shutting down: stop everything, touch nothing in the API.
    Shutdown,
}

/// The task that runs one pod: its containers, its progress through the
/// pod lifecycle, and the status last reported for it.
pub struct Worker {
    client: kube::Client,
    /// The pod object as last seen.
    pod: Pod,
    /// The pod's restartPolicy (immutable in the API, so read once).
    restart_policy: RestartPolicy,
    /// Init containers and native sidecars in spec order, then app containers.
    ctrs: Vec<Ctr>,
    dir: PodDir,
    images: Images,
    /// What every pod on this node shares (addresses, pod-enter, ...).
    node: Arc<NodeSettings>,
    /// The pod's network namespace and address.
    network: PodNetwork,
    /// The pod's volumes.
    volumes: PodVolumes,
    /// The network and the volumes are in place (the pod's "sandbox").
    sandbox_ready: bool,
    /// No new attempt at the sandbox before this, after a failed one.
    sandbox_retry_at: Option<Instant>,
    /// When this node took the pod on.
    start_time: Timestamp,
    /// The init sequence is done (and stays so).
    initialized: bool,
    /// The pod is winding down (its apps are done, or it is being deleted):
    /// nothing is started or restarted any more.
    completing: bool,
    /// Succeeded or Failed, once the pod has ended.
    final_phase: Option<PodPhase>,
    /// Why the pod failed, for its status.
    message: Option<String>,
    /// The status last written, to skip writes that change nothing.
    reported: Option<serde_json::Value>,
    /// Who writes the pod's Events (failed probes, probe kills), as the kubelet's.
    reporter: Reporter,
}

const TICK: Duration = Duration::from_millis(250);

/// How far a pod's init sequence has got.
enum InitProgress {
    /// Every init container has exited 0 and every native sidecar runs.
    Done,
    /// A container of the sequence is starting, running, or waiting to restart.
    Waiting,
    /// An init container failed, and restartPolicy Never ends the pod.
    Failed { container: String },
}

impl Worker {
    /// A worker for `pod`, which gets the network `network` and its files
    /// in its own directory under `pods`; nothing runs until [`Worker::run`].
    pub fn new(
        client: kube::Client,
        pod: Pod,
        pods: &PodsDir,
        images: Images,
        node: Arc<NodeSettings>,
        network: PodNetwork,
    ) -> Worker {
        let meta = &pod.metadata;
        let dir = pods.pod(
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default(),
            meta.uid.as_deref().unwrap_or_default(),
        );
        let spec = pod.spec.clone().unwrap_or_default();
        let mut ctrs = Vec::new();
        for c in spec.init_containers.unwrap_or_default() {
            let kind = if RestartPolicy::of_container(&c) == Some(RestartPolicy::Always) {
                Kind::Sidecar
            } else {
                Kind::Init
            };
            ctrs.push(Ctr::new(c, kind, &dir));
        }
        for c in spec.containers {
            ctrs.push(Ctr::new(c, Kind::App, &dir));
        }
        Worker {
            reporter: Reporter {
                controller: "process-node".into(),
                instance: Some(node.name.clone()),
            },
            volumes: PodVolumes::new(client.clone(), dir.clone()),
            client,
            restart_policy: RestartPolicy::of_pod(pod.spec.as_ref()),
            pod,
            ctrs,
            dir,
            images,
            node,
            network,
            sandbox_ready: false,
            sandbox_retry_at: None,
            start_time: Timestamp::now(),
            initialized: false,
            completing: false,
            final_phase: None,
            message: None,
            reported: None,
        }
    }

    fn api(&self) -> Api<Pod> {
        Api::namespaced(
            self.client.clone(),
            self.pod.metadata.namespace.as_deref().unwrap_or("default"),
        )
    }

    /// The pod's termination grace period: the deletion's, else the spec's,
    /// else 30 s.
    fn grace(&self) -> Duration {
        let secs = self
            .pod
            .metadata
            .deletion_grace_period_seconds
            .or_else(|| {
                self.pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds)
            })
            .unwrap_or(30);
        Duration::from_secs(u64::try_from(secs).unwrap_or(0))
    }

    /// The grace period for stops the node decides on itself (the pod has
    /// completed, a liveness probe failed): the pod's, at most 10 s.
    fn stop_grace(&self) -> Duration {
        self.grace().min(Duration::from_secs(10))
    }

    /// Runs the pod until it is deleted, gone, or the node stops.
    pub async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        let _ = std::fs::create_dir_all(self.dir.volumes_dir());
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(Msg::Update(p)) => self.pod = *p,
                    Some(Msg::Gone) | None => return self.stop_all(Duration::from_secs(2)).await,
                    Some(Msg::Shutdown) => return self.stop_all(Duration::from_secs(3)).await,
                },
                _ = tick.tick() => {}
            }
            if self.pod.metadata.deletion_timestamp.is_some() {
                return self.delete().await;
            }
            self.step().await;
            self.report().await;
        }
    }

    /// Whether `c`, which has exited, is started again: never once the pod
    /// is completing or has ended, otherwise as its restartPolicy says.
    fn should_restart(&self, c: &Ctr) -> bool {
        if self.completing || self.final_phase.is_some() {
            return false;
        }
        restart::should_restart(c.kind, self.restart_policy, c.exit_code().unwrap_or(0))
    }

    /// One tick of the pod's life: notice exits, start what is due in the
    /// kubelet's order (init sequence, then apps), end the pod once its apps
    /// are done, and run the probes that are due.
    async fn step(&mut self) {
        self.reap_exits();
        if self.final_phase.is_some() {
            return;
        }
        if !self.sandbox_ready {
            return self.prepare_sandbox().await;
        }
        if self.volumes.refresh_due()
            && let Err(e) = self.volumes.prepare(&self.pod).await
        {
            tracing::warn!(pod = ?self.pod.metadata.name, error = %e, "refreshing volumes failed");
        }
        if self.completing {
            return self.check_completion();
        }
        if self.initialized {
            self.restart_sidecars().await;
        } else {
            match self.advance_init().await {
                InitProgress::Done => self.initialized = true,
                InitProgress::Waiting => return self.probe_all().await,
                InitProgress::Failed { container } => {
                    self.message = Some(format!("init container {container} failed"));
                    return self.finish(false);
                }
            }
        }
        self.start_apps().await;
        self.check_completion();
        self.probe_all().await;
    }

    /// Notices the containers that exited and schedules the restarts their
    /// policy asks for; SIGKILLs those whose stop grace period has passed.
    fn reap_exits(&mut self) {
        for i in 0..self.ctrs.len() {
            if self.ctrs[i].reap() && self.should_restart(&self.ctrs[i]) {
                self.ctrs[i].schedule_restart();
            }
            self.ctrs[i].enforce_kill();
        }
    }

    /// Once initialized, a pod stays so (as with the kubelet): native
    /// sidecars that exit are started again without holding up the apps.
    async fn restart_sidecars(&mut self) {
        for i in 0..self.ctrs.len() {
            let c = &self.ctrs[i];
            if c.kind == Kind::Sidecar && !c.running() && c.start_due() {
                self.start(i).await;
            }
        }
    }

    /// Moves the init sequence on: init containers and native sidecars, one
    /// at a time and in order. The next one starts once an init container
    /// has exited 0, or once a native sidecar runs.
    async fn advance_init(&mut self) -> InitProgress {
        for i in 0..self.ctrs.len() {
            let c = &self.ctrs[i];
            match c.kind {
                Kind::App => continue,
                // As the kubelet: the next container waits for a native
                // sidecar's startup probe (started is true without one).
                Kind::Sidecar if c.running() && c.started => continue,
                Kind::Init if c.exit_code() == Some(0) => continue,
                Kind::Init
                    if c.exit_code().is_some() && self.restart_policy == RestartPolicy::Never =>
                {
                    return InitProgress::Failed {
                        container: c.name().to_string(),
                    };
                }
                _ => {}
            }
            if !c.running() && c.start_due() {
                self.start(i).await;
            }
            let c = &self.ctrs[i];
            if !(c.kind == Kind::Sidecar && c.running() && c.started) {
                return InitProgress::Waiting;
            }
        }
        InitProgress::Done
    }

    /// Starts the app containers that are stopped and due to start.
    async fn start_apps(&mut self) {
        for i in 0..self.ctrs.len() {
            let c = &self.ctrs[i];
            if c.kind == Kind::App && !c.running() && self.wants_start(c) && c.start_due() {
                self.start(i).await;
            }
        }
    }

    /// Whether a stopped app container is to be started: it never ran, it
    /// exited and its policy restarts it, or it waits (in back-off, or after
    /// a start that failed).
    fn wants_start(&self, c: &Ctr) -> bool {
        !c.ever_started
            || (c.exit_code().is_some() && self.should_restart(c))
            || matches!(c.state, State::Waiting { .. })
    }

    /// With restartPolicy Never or OnFailure, the pod ends once every app
    /// container is done; native sidecars are then stopped and do not count.
    fn check_completion(&mut self) {
        if self.restart_policy == RestartPolicy::Always || !self.apps_done() {
            return;
        }
        self.completing = true;
        let grace = self.stop_grace();
        for c in self.ctrs.iter_mut().filter(|c| c.kind == Kind::Sidecar) {
            c.terminate(grace);
        }
        if self.ctrs.iter().all(|c| !c.running()) {
            let ok = self.apps_succeeded();
            self.finish(ok);
        }
    }

    /// Whether every app container has exited and its policy will not start
    /// it again.
    fn apps_done(&self) -> bool {
        self.ctrs.iter().filter(|c| c.kind == Kind::App).all(|c| {
            !c.running()
                && c.exit_code().is_some_and(|code| {
                    !restart::should_restart(Kind::App, self.restart_policy, code)
                })
        })
    }

    /// Whether every app container exited 0.
    fn apps_succeeded(&self) -> bool {
        self.ctrs
            .iter()
            .filter(|c| c.kind == Kind::App)
            .all(|c| c.exit_code() == Some(0))
    }

    /// The pod has ended: record the phase and stop whatever still runs.
    fn finish(&mut self, succeeded: bool) {
        self.final_phase = Some(PodPhase::ended(succeeded));
        let grace = self.stop_grace();
        for c in self.ctrs.iter_mut() {
            c.terminate(grace);
        }
    }

    async fn lookups(&self, i: usize) -> Lookups {
        let ns = self.pod.metadata.namespace.as_deref().unwrap_or("default");
        let (secrets, maps) = launch::referenced(&self.ctrs[i].spec);
        let mut l = Lookups::default();
        let sapi: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        for name in secrets {
            if let Ok(Some(s)) = sapi.get_opt(&name).await {
                let data = s
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                    .chain(s.string_data.unwrap_or_default())
                    .collect();
                l.secrets.insert(name, data);
            }
        }
        let capi: Api<ConfigMap> = Api::namespaced(self.client.clone(), ns);
        for name in maps {
            if let Ok(Some(c)) = capi.get_opt(&name).await {
                l.config_maps.insert(name, c.data.unwrap_or_default());
            }
        }
        l
    }

    /// Makes the pod's network and volumes; a failure is shown in the pod's
    /// status and tried again a little later (a Secret may appear).
    async fn prepare_sandbox(&mut self) {
        if self.sandbox_retry_at.is_some_and(|t| Instant::now() < t) {
            return;
        }
        // `ip` runs to its end: off the async threads.
        let result = match tokio::task::block_in_place(|| self.network.create(&self.node.net)) {
            Ok(()) => self.volumes.prepare(&self.pod).await,
            Err(e) => Err(format!("creating the pod network: {e}")),
        };
        match result {
            Ok(()) => {
                self.sandbox_ready = true;
                self.message = None;
            }
            Err(e) => {
                tracing::info!(pod = ?self.pod.metadata.name, error = %e, "pod not ready to start");
                self.message = Some(e);
                self.sandbox_retry_at = Some(Instant::now() + Duration::from_secs(2));
            }
        }
    }

    /// How container `i` is entered: the pod's namespaces, its mounts, its env.
    fn entry(&self, i: usize, env: Vec<(String, String)>) -> Result<Entry, String> {
        let mounts = volumes::mounts(
            &self.pod,
            &self.dir,
            self.ctrs[i]
                .spec
                .volume_mounts
                .as_deref()
                .unwrap_or_default(),
        )?;
        Ok(Entry {
            pod_enter: self.node.pod_enter.clone(),
            netns: self.network.netns_path(),
            pod_ip: self.network.ip.to_string(),
            hostname: self.pod.metadata.name.clone().unwrap_or_default(),
            scratch: self
                .dir
                .container(&self.ctrs[i].spec.name)
                .path()
                .join("scratch"),
            mountpoints_log: self.node.mountpoints_log.clone(),
            mounts,
            env,
        })
    }

    fn identity(&self) -> PodIdentity {
        let m = &self.pod.metadata;
        PodIdentity {
            name: m.name.clone().unwrap_or_default(),
            namespace: m.namespace.clone().unwrap_or_default(),
            uid: m.uid.clone().unwrap_or_default(),
            node: self.node.name.clone(),
            pod_ip: self.network.ip.to_string(),
            host_ip: self.node.ip.clone(),
            service_account: self
                .pod
                .spec
                .as_ref()
                .and_then(|s| s.service_account_name.clone())
                .unwrap_or_else(|| "default".into()),
            api_server: Some(self.node.api_server.clone()),
        }
    }

    /// Starts container `i`; a start that fails leaves it waiting with the
    /// kubelet's reason (ErrImagePull, CreateContainerConfigError,
    /// RunContainerError) and retries after the back-off.
    async fn start(&mut self, i: usize) {
        let image = self.ctrs[i].spec.image.clone().unwrap_or_default();
        let image_entry = match self.images.resolve(&image) {
            Ok(e) => e,
            Err(msg) => return self.ctrs[i].fail_to_start("ErrImagePull", msg),
        };
        let lookups = self.lookups(i).await;
        let env = match launch::resolve_env(&self.ctrs[i].spec, &self.identity(), &lookups) {
            Ok(env) => env,
            Err(msg) => return self.ctrs[i].fail_to_start("CreateContainerConfigError", msg),
        };
        let spec = launch::launch(&self.ctrs[i].spec, &image_entry, env);
        let entry = match self.entry(i, spec.env.clone()) {
            Ok(entry) => entry,
            Err(msg) => return self.ctrs[i].fail_to_start("CreateContainerConfigError", msg),
        };
        if let Err(msg) = self.ctrs[i].start(&spec, entry) {
            self.ctrs[i].fail_to_start("RunContainerError", msg);
        }
    }

    /// Runs each container's probes that are due, and publishes what they
    /// found as the pod's Events.
    async fn probe_all(&mut self) {
        let now = Instant::now();
        let grace = self.stop_grace();
        let mut notices = Vec::new();
        for c in self.ctrs.iter_mut() {
            notices.extend(c.run_due_probes(now, grace).await);
        }
        for notice in notices {
            self.publish(notice);
        }
    }

    /// Publishes `notice` as an Event about the pod's container, as the
    /// kubelet words it; in the background, so probes never wait on the API.
    fn publish(&self, notice: Notice) {
        let pod = self.pod.metadata.name.clone().unwrap_or_default();
        let (container, event) = match notice {
            Notice::Unhealthy {
                container,
                probe,
                why,
            } => {
                tracing::info!(%pod, %container, probe = probe.as_str(), %why, "probe failed");
                let event = Event {
                    type_: EventType::Warning,
                    reason: "Unhealthy".into(),
                    note: Some(format!("{} probe failed: {why}", probe.as_str())),
                    action: "Probe".into(),
                    secondary: None,
                };
                (container, event)
            }
            Notice::Killing {
                container, probe, ..
            } => {
                let event = Event {
                    type_: EventType::Normal,
                    reason: "Killing".into(),
                    note: Some(format!(
                        "Container {container} failed {} probe, will be restarted",
                        probe.as_str().to_lowercase()
                    )),
                    action: "Kill".into(),
                    secondary: None,
                };
                (container, event)
            }
        };
        let mut reference = self.pod.object_ref(&());
        let list = match self.ctrs.iter().find(|c| c.name() == container) {
            Some(c) if c.kind != Kind::App => "initContainers",
            _ => "containers",
        };
        reference.field_path = Some(format!("spec.{list}{{{container}}}"));
        // A Recorder of its own for each Event: a shared one folds every
        // later failure of the container into the first Event's series,
        // which keeps the first message, and each failure's cause is what
        // a reader needs (the kubelet folds only identical messages).
        let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
        tokio::spawn(async move {
            if let Err(e) = recorder.publish(&event, &reference).await {
                tracing::warn!(%pod, error = %e, reason = %event.reason, "cannot publish an Event");
            }
        });
    }

    /// The phase to report: Running once initialized and every app container
    /// has started, until the pod ends.
    fn phase(&self) -> PodPhase {
        if let Some(p) = self.final_phase {
            return p;
        }
        let apps_started = self
            .ctrs
            .iter()
            .filter(|c| c.kind == Kind::App)
            .all(|c| c.ever_started);
        if self.initialized && apps_started {
            PodPhase::Running
        } else {
            PodPhase::Pending
        }
    }

    async fn report(&mut self) {
        let pids: Vec<Option<u32>> = self.ctrs.iter().map(Ctr::pid).collect();
        let status = status::build(
            &self.ctrs,
            &pids,
            status::StatusInputs {
                phase: self.phase(),
                initialized: self.initialized,
                pod_ip: self.sandbox_ready.then(|| self.network.ip.to_string()),
                host_ip: &self.node.ip,
                start_time: self.start_time,
                message: self.message.clone(),
            },
        );
        let Ok(value) = serde_json::to_value(&status) else {
            return;
        };
        if self.reported.as_ref() == Some(&value) {
            return;
        }
        let name = self.pod.metadata.name.clone().unwrap_or_default();
        let patch = serde_json::json!({ "status": value });
        match self
            .api()
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => self.reported = Some(value),
            Err(e) => tracing::debug!(pod = %name, error = %e, "status update failed; retrying"),
        }
    }

    async fn wait_until_stopped(&mut self, kinds: &[Kind], deadline: Instant) {
        loop {
            for c in self.ctrs.iter_mut() {
                c.reap();
            }
            let running = self
                .ctrs
                .iter()
                .any(|c| kinds.contains(&c.kind) && c.running());
            if !running || Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Graceful deletion: apps first, then sidecars and init containers,
    /// within the grace period; then SIGKILL, a final status, and the
    /// pod object is removed (grace 0), as the kubelet does.
    async fn delete(mut self) {
        let grace = self.grace();
        let deadline = Instant::now() + grace;
        self.completing = true;
        for c in self.ctrs.iter_mut().filter(|c| c.kind == Kind::App) {
            c.terminate(grace);
        }
        self.wait_until_stopped(&[Kind::App], deadline).await;
        for c in self.ctrs.iter_mut().filter(|c| c.kind == Kind::App) {
            c.kill_now();
        }
        let rest = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(2));
        for c in self.ctrs.iter_mut().rev().filter(|c| c.kind != Kind::App) {
            c.terminate(rest);
        }
        self.wait_until_stopped(&[Kind::Sidecar, Kind::Init], Instant::now() + rest)
            .await;
        for c in self.ctrs.iter_mut() {
            c.kill_now();
        }
        self.wait_until_stopped(
            &[Kind::App, Kind::Sidecar, Kind::Init],
            Instant::now() + Duration::from_secs(2),
        )
        .await;
        // A worker that never ran anything (the pod was already being deleted
        // when this node saw it) must not overwrite the pod's real status.
        if self.ctrs.iter().any(|c| c.ever_started) {
            if self.final_phase.is_none() {
                self.final_phase = Some(PodPhase::ended(self.apps_succeeded()));
            }
            self.report().await;
        }
        tokio::task::block_in_place(|| self.network.remove());
        let name = self.pod.metadata.name.clone().unwrap_or_default();
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: self.pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        if let Err(e) = self.api().delete(&name, &dp).await {
            tracing::debug!(pod = %name, error = %e, "final delete failed (already gone?)");
        }
    }

    async fn stop_all(mut self, grace: Duration) {
        for c in self.ctrs.iter_mut() {
            c.terminate(grace);
        }
        let all = [Kind::App, Kind::Sidecar, Kind::Init];
        self.wait_until_stopped(&all, Instant::now() + grace).await;
        for c in self.ctrs.iter_mut() {
            c.kill_now();
        }
        self.wait_until_stopped(&all, Instant::now() + Duration::from_secs(2))
            .await;
        tokio::task::block_in_place(|| self.network.remove());
    }
}
