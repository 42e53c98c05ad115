//! The process node's one error type: each variant names the call that failed.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading kubeconfig {}: {why}", path.display())]
    Kubeconfig { path: PathBuf, why: String },
    #[error("creating the Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    #[error("{verb} Node {name}: {source}")]
    Node {
        verb: &'static str,
        name: String,
        source: kube::Error,
    },
    #[error("renewing Lease of node {name}: {source}")]
    Lease { name: String, source: kube::Error },
    #[error("kubelet API TLS ({}): {why}", path.display())]
    Tls { path: PathBuf, why: String },
    #[error("binding the kubelet API on port {port}: {source}")]
    Bind { port: u16, source: std::io::Error },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
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
