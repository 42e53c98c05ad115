//! Container probes as the kubelet runs them: httpGet (2xx/3xx passes),
//! tcpSocket (a connect passes) and exec (exit 0 passes).

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Timing of a probe, with the kubelet's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub failure_threshold: u32,
    pub success_threshold: u32,
}

fn secs(v: Option<i32>, default: u64) -> Duration {
    Duration::from_secs(v.and_then(|v| u64::try_from(v).ok()).unwrap_or(default))
}

impl Timing {
    pub fn of(p: &Probe) -> Timing {
        Timing {
            initial_delay: secs(p.initial_delay_seconds, 0),
            period: secs(p.period_seconds, 10).max(Duration::from_secs(1)),
            timeout: secs(p.timeout_seconds, 1).max(Duration::from_secs(1)),
            failure_threshold: p
                .failure_threshold
                .and_then(|v| u32::try_from(v).ok())
                .unwrap_or(3)
                .max(1),
            success_threshold: p
                .success_threshold
                .and_then(|v| u32::try_from(v).ok())
                .unwrap_or(1)
                .max(1),
        }
    }
}

fn port(ctr: &Container, p: &IntOrString) -> Result<u16, String> {
    match p {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("bad port {n}")),
        IntOrString::String(name) => ctr
            .ports
            .iter()
            .flatten()
            .find(|cp| cp.name.as_deref() == Some(name))
            .and_then(|cp| u16::try_from(cp.container_port).ok())
            .ok_or_else(|| format!("no container port named {name:?}")),
    }
}

/// Runs one probe against a container at `pod_ip`; Err carries the failure reason.
pub async fn run(
    probe: &Probe,
    ctr: &Container,
    pod_ip: &str,
    cwd: &std::path::Path,
) -> Result<(), String> {
    let timeout = Timing::of(probe).timeout;
    if let Some(h) = &probe.http_get {
        if h.scheme
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("https"))
        {
            return Err("HTTPS probes are not supported by the process node".into());
        }
        let host = h.host.clone().unwrap_or_else(|| pod_ip.to_string());
        let url = format!(
            "http://{host}:{}{}",
            port(ctr, &h.port)?,
            h.path.as_deref().unwrap_or("/")
        );
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string())?;
        let code = client
            .get(&url)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?
            .status()
            .as_u16();
        return if (200..400).contains(&code) {
            Ok(())
        } else {
            Err(format!("HTTP probe failed with statuscode: {code}"))
        };
    }
    if let Some(t) = &probe.tcp_socket {
        let host = t.host.clone().unwrap_or_else(|| pod_ip.to_string());
        let addr = format!("{host}:{}", port(ctr, &t.port)?);
        return match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&addr)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("dial {addr}: {e}")),
            Err(_) => Err(format!("dial {addr}: timeout")),
        };
    }
    if let Some(cmd) = probe.exec.as_ref().and_then(|e| e.command.as_ref()) {
        let Some((prog, args)) = cmd.split_first() else {
            return Err("exec probe without a command".into());
        };
        let child = tokio::process::Command::new(prog)
            .args(args)
            .current_dir(cwd)
            .kill_on_drop(true)
            .status();
        return match tokio::time::timeout(timeout, child).await {
            Ok(Ok(s)) if s.success() => Ok(()),
            Ok(Ok(s)) => Err(format!("exec probe exited with {s}")),
            Ok(Err(e)) => Err(format!("exec probe: {e}")),
            Err(_) => Err("exec probe timed out".into()),
        };
    }
    Err("probe has no handler".into())
}
