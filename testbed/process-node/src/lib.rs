//! The process node: a kubelet stand-in for the local stack that runs each
//! container of the pods bound to it as a local process. Test
//! infrastructure only; see e2e/README.md for what it does and does not do.
#![forbid(unsafe_code)]

pub mod container;
pub mod enter;
pub mod error;
pub mod images;
pub mod kubelet_api;
pub mod launch;
pub mod pod_network;
pub mod probe;
pub mod registration;
pub mod restart;
pub mod status;
pub mod volumes;
pub mod worker;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use heartbeat_testbed::layout::{NodeDir, PidRecord, PodsDir};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::watcher;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub use error::Error;
use images::Images;
use pod_network::{NetConfig, PodNetwork, Slots};
use status::PodPhase;
use worker::{Msg, Worker};

/// How the node is started.
#[derive(Debug, Clone)]
pub struct Config {
    /// The kubeconfig the node talks to the API server with.
    pub kubeconfig: PathBuf,
    /// The Node object's name (pods with this `spec.nodeName` run here).
    pub node_name: String,
    /// The node's state directory (pods live under `<state>/pods`).
    pub state_dir: PathBuf,
    /// The workspace checkout that images resolve into (see [`images`]).
    pub repo_dir: PathBuf,
    /// Serve the kubelet log API (for `kubectl logs`) on this port with this certificate.
    pub kubelet_api: Option<(u16, PathBuf, PathBuf)>,
    /// The node's address (its InternalIP, the pods' hostIP, where the
    /// kubelet API listens).
    pub node_ip: String,
    /// The API server's address for in-cluster clients.
    pub api_server: (String, u16),
    /// How pods are networked.
    pub net: NetConfig,
    /// The `pod-enter` binary.
    pub pod_enter: PathBuf,
}

/// What every pod worker of the node shares.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    /// The Node's name.
    pub name: String,
    /// The node's address.
    pub ip: String,
    /// The API server's address for in-cluster clients.
    pub api_server: (String, u16),
    /// How pods are networked.
    pub net: NetConfig,
    /// The `pod-enter` binary.
    pub pod_enter: PathBuf,
    /// Where mount points made on the host are listed.
    pub mountpoints_log: PathBuf,
}

/// Kills container process groups a previous, crashed run left behind.
fn kill_leftovers(pods: &PodsDir) {
    for pod in pods.all() {
        for ctr in pod.containers() {
            let pid_file = ctr.pid_file();
            if let Some(pid) = PidRecord::live_pid(&pid_file) {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = std::fs::remove_file(pid_file);
        }
    }
}

async fn connect(kubeconfig: &std::path::Path) -> Result<kube::Client, Error> {
    let bad = |why: String| Error::Kubeconfig {
        path: kubeconfig.to_path_buf(),
        why,
    };
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).map_err(|e| bad(e.to_string()))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .map_err(|e| bad(e.to_string()))?;
    kube::Client::try_from(config).map_err(Error::Client)
}

/// Keeps the Node Ready and its Lease fresh until aborted.
fn spawn_node_heartbeat(
    client: kube::Client,
    name: String,
    ip: String,
    port: Option<u16>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(registration::HEARTBEAT_SECS));
        loop {
            tick.tick().await;
            if let Err(e) = registration::heartbeat(&client, &name, &ip, port).await {
                tracing::warn!(error = %e, "node heartbeat failed");
            }
        }
    })
}

struct PodHandle {
    tx: mpsc::UnboundedSender<Msg>,
    task: JoinHandle<()>,
    /// The pod network slot, given back when the worker ends.
    slot: u32,
}

/// The pods this node runs, one worker task each, keyed by uid.
struct Pods {
    client: kube::Client,
    dir: PodsDir,
    images: Images,
    node: Arc<NodeSettings>,
    running: HashMap<String, PodHandle>,
    /// The uids seen since the watcher's last (re-)list began.
    listed: HashSet<String>,
    slots: Slots,
}

impl Pods {
    fn on_event(&mut self, event: watcher::Event<Pod>) {
        let slots = &mut self.slots;
        self.running.retain(|_, h| {
            let done = h.task.is_finished();
            if done {
                slots.free(h.slot);
            }
            !done
        });
        match event {
            watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) => self.apply(pod),
            watcher::Event::Delete(pod) => {
                let uid = pod.metadata.uid.unwrap_or_default();
                self.send(&uid, Msg::Gone);
            }
            watcher::Event::Init => self.listed.clear(),
            // After a re-list, pods that vanished during a watch gap get no
            // Delete event: stop the ones the list no longer has.
            watcher::Event::InitDone => {
                for (uid, h) in &self.running {
                    if !self.listed.contains(uid) {
                        let _ = h.tx.send(Msg::Gone);
                    }
                }
            }
        }
    }

    fn send(&self, uid: &str, msg: Msg) {
        if let Some(h) = self.running.get(uid) {
            let _ = h.tx.send(msg);
        }
    }

    fn apply(&mut self, pod: Pod) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        self.listed.insert(uid.clone());
        if self.running.contains_key(&uid) {
            self.send(&uid, Msg::Update(Box::new(pod)));
            return;
        }
        // A finished pod is not started again (after a node restart, say).
        if PodPhase::of(&pod).is_final() && pod.metadata.deletion_timestamp.is_none() {
            return;
        }
        let Some(slot) = self.slots.take(&self.node.net) else {
            tracing::warn!(pod = ?pod.metadata.name, "the pod network is full");
            return;
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let worker = Worker::new(
            self.client.clone(),
            pod,
            &self.dir,
            self.images.clone(),
            self.node.clone(),
            PodNetwork::plan(&self.node.net, slot),
        );
        let task = tokio::spawn(worker.run(rx));
        self.running.insert(uid, PodHandle { tx, task, slot });
    }

    /// Stops every container, giving each pod a bounded time.
    async fn shutdown(self) {
        for h in self.running.values() {
            let _ = h.tx.send(Msg::Shutdown);
        }
        for (_, h) in self.running {
            let _ = tokio::time::timeout(Duration::from_secs(8), h.task).await;
        }
    }
}

/// Registers the node and runs its pods until SIGTERM or SIGINT.
pub async fn run(cfg: Config) -> Result<(), Error> {
    let client = connect(&cfg.kubeconfig).await?;
    let node_dir = NodeDir::new(&cfg.state_dir);
    let pods_dir = node_dir.pods();
    std::fs::create_dir_all(pods_dir.root()).map_err(|source| Error::Io {
        path: pods_dir.root().to_path_buf(),
        source,
    })?;
    kill_leftovers(&pods_dir);
    pod_network::remove_leftovers(&cfg.net.netns_prefix);
    let images = Images::new(&cfg.repo_dir);
    let port = cfg.kubelet_api.as_ref().map(|(p, _, _)| *p);
    let api_task = match &cfg.kubelet_api {
        Some((port, cert, key)) => {
            Some(kubelet_api::serve(&cfg.node_ip, *port, cert, key, pods_dir.clone()).await?)
        }
        None => None,
    };
    registration::register(&client, &cfg.node_name, &cfg.node_ip, port).await?;
    tracing::info!(node = %cfg.node_name, sidecar = ?images.sidecar_bin, "process node registered");
    let heartbeat = spawn_node_heartbeat(
        client.clone(),
        cfg.node_name.clone(),
        cfg.node_ip.clone(),
        port,
    );

    let api: Api<Pod> = Api::all(client.clone());
    let wc = watcher::Config::default().fields(&format!("spec.nodeName={}", cfg.node_name));
    let mut events = watcher(api, wc).boxed();
    let mut pods = Pods {
        client,
        dir: pods_dir,
        images,
        node: Arc::new(NodeSettings {
            name: cfg.node_name.clone(),
            ip: cfg.node_ip.clone(),
            api_server: cfg.api_server.clone(),
            net: cfg.net.clone(),
            pod_enter: cfg.pod_enter.clone(),
            mountpoints_log: node_dir.created_mountpoints(),
        }),
        running: HashMap::new(),
        listed: HashSet::new(),
        slots: Slots::default(),
    };
    let mut term = signal(SignalKind::terminate()).map_err(Error::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(Error::Signals)?;
    loop {
        let event = tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            e = events.next() => e,
        };
        match event {
            None => break,
            Some(Ok(event)) => pods.on_event(event),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "pod watch error; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }

    tracing::info!("process node stopping: stopping every container");
    heartbeat.abort();
    if let Some(t) = api_task {
        t.abort();
    }
    pods.shutdown().await;
    Ok(())
}
