//! The operator's one error type: each variant names the call that failed
//! and on what; `metric_label` turns it into a low-cardinality label.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading kubeconfig {}: {why}", path.display())]
    Kubeconfig {
        path: std::path::PathBuf,
        why: String,
    },
    #[error("finding the Kubernetes API (in-cluster or $KUBECONFIG): {0}")]
    InferConfig(String),
    #[error("connecting to the Kubernetes API: {0}")]
    Client(#[source] kube::Error),
    #[error("reading Secret {namespace}/{name}: {source}")]
    GetSecret {
        namespace: String,
        name: String,
        source: kube::Error,
    },
    #[error("writing Secret {namespace}/{name}: {source}")]
    WriteSecret {
        namespace: String,
        name: String,
        source: kube::Error,
    },
    #[error("dating a certificate {lifetime} from {now}: {source}")]
    CertValidity {
        now: jiff::Timestamp,
        lifetime: jiff::SignedDuration,
        source: jiff::Error,
    },
    #[error("certificate lifetimes (--cert-*, --ca-* flags): {0}")]
    CertLifetimes(String),
    #[error("making certificates: {0}")]
    MakeCert(#[source] rcgen::Error),
    #[error("applying MutatingWebhookConfiguration {name}: {source}")]
    ApplyWebhookConfig { name: String, source: kube::Error },
    #[error("loading the serving certificate: {0}")]
    LoadCert(#[source] std::io::Error),
    #[error("serving {what} on {addr}: {source}")]
    Serve {
        what: &'static str,
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("the certificate Secret kept changing under us; giving up after {0} tries")]
    CertContention(u32),
    #[error("installing the SIGTERM handler: {0}")]
    Signal(#[source] std::io::Error),
    #[error("a server task ended: {0}")]
    Task(String),
    #[error("writing the status of HeartbeatMonitor {namespace}/{name}: {source}")]
    WriteStatus {
        namespace: String,
        name: String,
        source: kube::Error,
    },
    #[error("joining leader election on Lease {namespace}/{name}: {source}")]
    Lease {
        namespace: String,
        name: String,
        source: kube_lease_manager::LeaseManagerError,
    },
}

impl Error {
    /// A fixed, low-cardinality label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kubeconfig { .. } => "kubeconfig",
            Error::InferConfig(_) => "infer_config",
            Error::Client(_) => "client",
            Error::GetSecret { .. } => "get_secret",
            Error::WriteSecret { .. } => "write_secret",
            Error::CertValidity { .. } => "cert_validity",
            Error::CertLifetimes(_) => "cert_lifetimes",
            Error::MakeCert(_) => "make_cert",
            Error::ApplyWebhookConfig { .. } => "apply_webhook_config",
            Error::LoadCert(_) => "load_cert",
            Error::Serve { .. } => "serve",
            Error::CertContention(_) => "cert_contention",
            Error::Signal(_) => "signal",
            Error::Task(_) => "task",
            Error::WriteStatus { .. } => "write_status",
            Error::Lease { .. } => "lease",
        }
    }
}

/// The operator's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
