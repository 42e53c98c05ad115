//! The process node's one error type: each variant names the call that failed.

use std::path::PathBuf;

/// Why the process node could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kubeconfig could not be read or used.
    #[error("reading kubeconfig {}: {why}", path.display())]
    Kubeconfig { path: PathBuf, why: String },
    /// The client could not be built from the kubeconfig.
    #[error("creating the Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    /// A call on the Node object failed.
    #[error("{verb} Node {name}: {source}")]
    Node {
        verb: &'static str,
        name: String,
        source: kube::Error,
    },
    /// The node's Lease could not be renewed.
    #[error("renewing Lease of node {name}: {source}")]
    Lease { name: String, source: kube::Error },
    /// The kubelet API's certificate or key could not be loaded.
    #[error("kubelet API TLS ({}): {why}", path.display())]
    Tls { path: PathBuf, why: String },
    /// The kubelet API's port could not be bound.
    #[error("binding the kubelet API on port {port}: {source}")]
    Bind { port: u16, source: std::io::Error },
    /// A directory of the node could not be created.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// SIGTERM/SIGINT handlers could not be installed.
    #[error("installing signal handlers: {0}")]
    Signals(#[source] std::io::Error),
}

impl Error {
    /// A short, fixed label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Error::Kubeconfig { .. } => "kubeconfig",
            Error::Client(_) => "client",
            Error::Node { .. } => "node",
            Error::Lease { .. } => "lease",
            Error::Tls { .. } => "tls",
            Error::Bind { .. } => "bind",
            Error::Io { .. } => "io",
            Error::Signals(_) => "signals",
        }
    }
}
