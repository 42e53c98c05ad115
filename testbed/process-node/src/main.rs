//! process-node: the local stack's kubelet stand-in (see e2e/README.md).

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use heartbeat_process_node::pod_network::NetConfig;

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
    /// The node's address: its InternalIP, the pods' hostIP.
    #[arg(long)]
    node_ip: String,
    /// `host:port` of the API server for in-cluster clients
    /// (KUBERNETES_SERVICE_HOST/_PORT).
    #[arg(long, value_parser = parse_host_port)]
    api_server: (String, u16),
    /// The pod network (`a.b.c.d/len`).
    #[arg(long, value_parser = NetConfig::parse_cidr)]
    pod_cidr: (Ipv4Addr, u8),
    /// The pods' default gateway (the bridge's address).
    #[arg(long)]
    pod_gateway: Ipv4Addr,
    /// The bridge pods are joined to (in the node's network namespace).
    #[arg(long)]
    bridge: String,
    /// Prefix of the pods' network namespace names (unique to the stack).
    #[arg(long)]
    netns_prefix: String,
    /// The pod-enter binary (default: next to this one).
    #[arg(long)]
    pod_enter: Option<PathBuf>,
}

fn parse_host_port(s: &str) -> Result<(String, u16), String> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?} is not host:port"))?;
    let port = port.parse().map_err(|e| format!("{s:?}: {e}"))?;
    Ok((host.to_string(), port))
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
    let pod_enter = match args
        .pod_enter
        .or_else(|| Some(std::env::current_exe().ok()?.parent()?.join("pod-enter")))
    {
        Some(p) if p.is_file() => p,
        other => {
            eprintln!(
                "process-node: pod-enter not found ({other:?}); build it: cargo build -p heartbeat-process-node"
            );
            return ExitCode::FAILURE;
        }
    };
    let cfg = heartbeat_process_node::Config {
        kubeconfig: args.kubeconfig,
        node_name: args.node_name,
        state_dir: args.state_dir,
        repo_dir: args.repo_dir,
        kubelet_api: match (args.kubelet_port, args.tls_cert, args.tls_key) {
            (Some(p), Some(c), Some(k)) => Some((p, c, k)),
            _ => None,
        },
        node_ip: args.node_ip,
        api_server: args.api_server,
        net: NetConfig {
            network: args.pod_cidr.0,
            prefix_len: args.pod_cidr.1,
            gateway: args.pod_gateway,
            bridge: args.bridge,
            netns_prefix: args.netns_prefix,
        },
        pod_enter,
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        super::Args::command().debug_assert();
    }
}
