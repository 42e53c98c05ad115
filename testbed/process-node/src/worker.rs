//! One pod on the process node: starts its init containers, native sidecars
//! and app containers in the kubelet's order, restarts them per
//! restartPolicy, runs probes, reports status, and on deletion stops apps
//! before sidecars (SIGTERM, grace period, SIGKILL) and removes the pod.

use std::time::{Duration, Instant};

use heartbeat_testbed::layout::{PodDir, PodsDir};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use tokio::sync::mpsc;

use crate::container::{Ctr, Kind, State};
use crate::images::Images;
use crate::launch::{self, Lookups, PodIdentity, Rewrites};
use crate::restart::{self, RestartPolicy};
use crate::status::{self, PodPhase};

/// What the node tells a pod worker.
pub enum Msg {
    /// The pod object changed.
    Update(Box<Pod>),
    /// The pod object is gone (force-deleted): stop everything.
    Gone,
    /// The node is shutting down: stop everything, touch nothing in the API.
    Shutdown,
}

pub struct Worker {
    client: kube::Client,
    pod: Pod,
    /// The pod's restartPolicy (immutable in the API, so read once).
    restart_policy: RestartPolicy,
    ctrs: Vec<Ctr>,
    dir: PodDir,
    images: Images,
    node: String,
    pod_ip: String,
    start_time: Timestamp,
    initialized: bool,
    completing: bool,
    final_phase: Option<PodPhase>,
    message: Option<String>,
    reported: Option<serde_json::Value>,
}

const TICK: Duration = Duration::from_millis(250);

impl Worker {
    pub fn new(
        client: kube::Client,
        pod: Pod,
        pods: &PodsDir,
        images: Images,
        node: &str,
        pod_ip: String,
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
            client,
            restart_policy: RestartPolicy::of_pod(pod.spec.as_ref()),
            pod,
            ctrs,
            dir,
            images,
            node: node.to_string(),
            pod_ip,
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

    async fn step(&mut self) {
        for i in 0..self.ctrs.len() {
            if self.ctrs[i].reap() && self.should_restart(&self.ctrs[i]) {
                self.ctrs[i].schedule_restart();
            }
            self.ctrs[i].enforce_kill();
        }
        if self.final_phase.is_some() {
            return;
        }
        if self.completing {
            return self.check_completion();
        }
        if self.initialized {
            // Once initialized, a pod stays so (as with the kubelet); native
            // sidecars that exit are restarted without holding up the apps.
            for i in 0..self.ctrs.len() {
                if self.ctrs[i].kind == Kind::Sidecar
                    && !self.ctrs[i].running()
                    && self.ctrs[i].start_due()
                {
                    self.start(i).await;
                }
            }
        } else {
            // Init containers and native sidecars, in order.
            let mut initialized = true;
            for i in 0..self.ctrs.len() {
                let c = &self.ctrs[i];
                match c.kind {
                    Kind::App => continue,
                    Kind::Sidecar if c.running() => continue,
                    Kind::Init if c.exit_code() == Some(0) => continue,
                    Kind::Init
                        if c.exit_code().is_some()
                            && self.restart_policy == RestartPolicy::Never =>
                    {
                        self.message = Some(format!("init container {} failed", c.name()));
                        return self.finish(false);
                    }
                    _ => {}
                }
                if !self.ctrs[i].running() && self.ctrs[i].start_due() {
                    self.start(i).await;
                }
                // A native sidecar lets the next container start once it runs.
                if !(self.ctrs[i].kind == Kind::Sidecar && self.ctrs[i].running()) {
                    initialized = false;
                    break;
                }
            }
            self.initialized = initialized;
            if !initialized {
                self.probe_all().await;
                return;
            }
        }
        for i in 0..self.ctrs.len() {
            let c = &self.ctrs[i];
            if c.kind != Kind::App || c.running() || self.completing {
                continue;
            }
            let never_ran = !c.ever_started;
            if (never_ran
                || (c.exit_code().is_some() && self.should_restart(c))
                || matches!(c.state, State::Waiting { .. }))
                && c.start_due()
            {
                self.start(i).await;
            }
        }
        self.check_completion();
        self.probe_all().await;
    }

    /// With restartPolicy Never/OnFailure, the pod ends once every app
    /// container is done; native sidecars are then stopped and do not count.
    fn check_completion(&mut self) {
        if self.restart_policy == RestartPolicy::Always {
            return;
        }
        let apps_done = self.ctrs.iter().filter(|c| c.kind == Kind::App).all(|c| {
            !c.running()
                && c.exit_code().is_some()
                && (c.exit_code() == Some(0) || self.restart_policy == RestartPolicy::Never)
        });
        if !apps_done {
            return;
        }
        self.completing = true;
        let grace = self.grace().min(Duration::from_secs(10));
        for c in self.ctrs.iter_mut().filter(|c| c.kind == Kind::Sidecar) {
            c.terminate(grace);
        }
        if self.ctrs.iter().all(|c| !c.running()) {
            let ok = self.apps_succeeded();
            self.finish(ok);
        }
    }

    fn apps_succeeded(&self) -> bool {
        self.ctrs
            .iter()
            .filter(|c| c.kind == Kind::App)
            .all(|c| c.exit_code() == Some(0))
    }

    /// The pod has ended: record the phase and stop whatever still runs.
    fn finish(&mut self, succeeded: bool) {
        self.final_phase = Some(PodPhase::ended(succeeded));
        let grace = self.grace().min(Duration::from_secs(10));
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

    fn rewrites(&self, i: usize) -> Rewrites {
        let volumes = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.clone())
            .unwrap_or_default();
        let mounts = self.ctrs[i]
            .spec
            .volume_mounts
            .iter()
            .flatten()
            .filter_map(|m| {
                let v = volumes.iter().find(|v| v.name == m.name)?;
                // Only emptyDir has a meaning here; other volume types are not materialised.
                v.empty_dir.as_ref()?;
                let host = self.dir.volume(&v.name);
                let _ = std::fs::create_dir_all(&host);
                Some((m.mount_path.clone(), host))
            })
            .collect();
        Rewrites::new(mounts, &self.pod_ip)
    }

    fn identity(&self) -> PodIdentity {
        let m = &self.pod.metadata;
        PodIdentity {
            name: m.name.clone().unwrap_or_default(),
            namespace: m.namespace.clone().unwrap_or_default(),
            uid: m.uid.clone().unwrap_or_default(),
            node: self.node.clone(),
            pod_ip: self.pod_ip.clone(),
            host_ip: "127.0.0.1".into(),
            service_account: self
                .pod
                .spec
                .as_ref()
                .and_then(|s| s.service_account_name.clone())
                .unwrap_or_else(|| "default".into()),
        }
    }

    async fn start(&mut self, i: usize) {
        let image = self.ctrs[i].spec.image.clone().unwrap_or_default();
        let entry = match self.images.resolve(&image) {
            Ok(e) => e,
            Err(msg) => return self.ctrs[i].fail_to_start("ErrImagePull", msg),
        };
        let lookups = self.lookups(i).await;
        let env = match launch::resolve_env(&self.ctrs[i].spec, &self.identity(), &lookups) {
            Ok(env) => env,
            Err(msg) => return self.ctrs[i].fail_to_start("CreateContainerConfigError", msg),
        };
        let spec = launch::launch(&self.ctrs[i].spec, &entry, env, &self.rewrites(i));
        if let Err(msg) = self.ctrs[i].start(&spec, self.dir.path()) {
            self.ctrs[i].fail_to_start("RunContainerError", msg);
        }
    }

    /// Runs each container's probes that are due.
    async fn probe_all(&mut self) {
        let now = Instant::now();
        let grace = self.grace().min(Duration::from_secs(10));
        for c in self.ctrs.iter_mut() {
            c.run_due_probes(&self.pod_ip, self.dir.path(), now, grace)
                .await;
        }
    }

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
                pod_ip: &self.pod_ip,
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
    }
}
