//! The process node: a kubelet stand-in for the local stack that runs each
//! container of the pods bound to it as a local process. Test
//! infrastructure only; see e2e/README.md for what it does and does not do.

pub mod container;
pub mod images;
pub mod kubelet_api;
pub mod launch;
pub mod probe;
pub mod registration;
pub mod status;
pub mod worker;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::watcher;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::Error;
use images::Images;
use worker::{Msg, Worker};

/// How the node is started.
#[derive(Debug, Clone)]
pub struct Config {
    pub kubeconfig: PathBuf,
    pub node_name: String,
    pub state_dir: PathBuf,
    pub repo_dir: PathBuf,
    /// Serve the kubelet log API (for `kubectl logs`) on this port with this certificate.
    pub kubelet_api: Option<(u16, PathBuf, PathBuf)>,
}

struct PodHandle {
    tx: mpsc::UnboundedSender<Msg>,
    task: JoinHandle<()>,
}

/// Kills container process groups a previous, crashed run left behind.
fn kill_leftovers(pods_dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(pods_dir) else {
        return;
    };
    for pod in entries.flatten() {
        let Ok(ctrs) = std::fs::read_dir(pod.path()) else {
            continue;
        };
        for ctr in ctrs.flatten() {
            // Only a pid that still names the process the node started.
            let pid_file = ctr.path().join("pid");
            if let Some(pid) = container::live_pid_from_file(&pid_file) {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = std::fs::remove_file(pid_file);
        }
    }
}

/// A distinct loopback address per pod, so pods do not share ports.
fn pod_ip(n: u32) -> String {
    format!("127.1.{}.{}", (n / 250) % 250, n % 250 + 1)
}

pub async fn run(cfg: Config) -> Result<(), Error> {
    let kc = kube::config::Kubeconfig::read_from(&cfg.kubeconfig)
        .map_err(|e| Error::Config(e.to_string()))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .map_err(|e| Error::Config(e.to_string()))?;
    let client = kube::Client::try_from(config)?;
    let pods_dir = cfg.state_dir.join("pods");
    std::fs::create_dir_all(&pods_dir)?;
    kill_leftovers(&pods_dir);
    let images = Images::new(&cfg.repo_dir);
    let port = cfg.kubelet_api.as_ref().map(|(p, _, _)| *p);
    let api_task = match &cfg.kubelet_api {
        Some((port, cert, key)) => {
            Some(kubelet_api::serve(*port, cert, key, pods_dir.clone()).await?)
        }
        None => None,
    };
    registration::register(&client, &cfg.node_name, port).await?;
    tracing::info!(node = %cfg.node_name, sidecar = ?images.sidecar_bin, "process node registered");

    let hb_client = client.clone();
    let hb_name = cfg.node_name.clone();
    let heartbeat = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(registration::HEARTBEAT_SECS));
        loop {
            tick.tick().await;
            if let Err(e) = registration::heartbeat(&hb_client, &hb_name, port).await {
                tracing::warn!(error = %e, "node heartbeat failed");
            }
        }
    });

    let api: Api<Pod> = Api::all(client.clone());
    let wc = watcher::Config::default().fields(&format!("spec.nodeName={}", cfg.node_name));
    let mut events = watcher(api, wc).boxed();
    let mut pods: HashMap<String, PodHandle> = HashMap::new();
    let mut next_ip = 0u32;
    let mut listed: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;

    loop {
        let event = tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            e = events.next() => e,
        };
        pods.retain(|_, h| !h.task.is_finished());
        let Some(event) = event else { break };
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "pod watch error; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        match event {
            watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) => {
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                listed.insert(uid.clone());
                if let Some(h) = pods.get(&uid) {
                    let _ = h.tx.send(Msg::Update(Box::new(pod)));
                    continue;
                }
                let phase = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.phase.as_deref())
                    .unwrap_or("Pending");
                if matches!(phase, "Succeeded" | "Failed")
                    && pod.metadata.deletion_timestamp.is_none()
                {
                    continue;
                }
                let (tx, rx) = mpsc::unbounded_channel();
                let w = Worker::new(
                    client.clone(),
                    pod,
                    &pods_dir,
                    images.clone(),
                    &cfg.node_name,
                    pod_ip(next_ip),
                );
                next_ip += 1;
                pods.insert(
                    uid,
                    PodHandle {
                        tx,
                        task: tokio::spawn(w.run(rx)),
                    },
                );
            }
            watcher::Event::Delete(pod) => {
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                if let Some(h) = pods.get(&uid) {
                    let _ = h.tx.send(Msg::Gone);
                }
            }
            watcher::Event::Init => listed.clear(),
            // After a re-list, pods that vanished during a watch gap get no
            // Delete event: stop the ones the list no longer has.
            watcher::Event::InitDone => {
                for (uid, h) in &pods {
                    if !listed.contains(uid) {
                        let _ = h.tx.send(Msg::Gone);
                    }
                }
            }
        }
    }

    tracing::info!("process node stopping: stopping every container");
    heartbeat.abort();
    if let Some(t) = api_task {
        t.abort();
    }
    for h in pods.values() {
        let _ = h.tx.send(Msg::Shutdown);
    }
    for (_, h) in pods {
        let _ = tokio::time::timeout(Duration::from_secs(8), h.task).await;
    }
    Ok(())
}
