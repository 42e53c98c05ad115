//! process-node: the local stack's kubelet stand-in (see e2e/README.md).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Registers a Node and runs the containers of its pods as local processes.
#[derive(Parser, Debug)]
#[command(name = "process-node", version, about)]
struct Args {
    /// Admin kubeconfig of the local API server.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// Name of the Node to register.
    #[arg(long, default_value = "process-node")]
    node_name: String,
    /// Where pod directories, logs and pid files live.
    #[arg(long)]
    state_dir: PathBuf,
    /// The repository (for the image map: sidecar binary, e2e/workloads).
    #[arg(long)]
    repo_dir: PathBuf,
    /// Port of the kubelet log API (`kubectl logs`); needs --tls-cert and --tls-key.
    #[arg(long, requires_all = ["tls_cert", "tls_key"])]
    kubelet_port: Option<u16>,
    /// Serving certificate (PEM) of the kubelet log API.
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long)]
    tls_key: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PROCESS_NODE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(false)
        .init();
    let cfg = heartbeat_process_node::Config {
        kubeconfig: args.kubeconfig,
        node_name: args.node_name,
        state_dir: args.state_dir,
        repo_dir: args.repo_dir,
        kubelet_api: match (args.kubelet_port, args.tls_cert, args.tls_key) {
            (Some(p), Some(c), Some(k)) => Some((p, c, k)),
            _ => None,
        },
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("process-node: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(heartbeat_process_node::run(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("process-node: {e}");
            ExitCode::FAILURE
        }
    }
}
