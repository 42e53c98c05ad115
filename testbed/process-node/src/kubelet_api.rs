//! The slice of the kubelet's HTTPS API that `kubectl logs` needs:
//! `GET /containerLogs/{namespace}/{pod}/{container}` (with `tailLines`,
//! `previous`, `follow`, `limitBytes`), served from the container log files.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use heartbeat_testbed::layout::{PodsDir, run_of};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::Error;

/// A TLS listener for `axum::serve`; failed handshakes are dropped.
struct TlsListener {
    tcp: TcpListener,
    tls: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.tcp.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            if let Ok(Ok(tls)) =
                tokio::time::timeout(Duration::from_secs(10), self.tls.accept(stream)).await
            {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, Error> {
    let bad = |what: &Path, e: &dyn std::fmt::Display| Error::Tls {
        path: what.to_path_buf(),
        why: e.to_string(),
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad(cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(cert, &e))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, &e))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(cert, &e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| bad(cert, &e))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct LogQuery {
    #[serde(default)]
    follow: bool,
    #[serde(default)]
    previous: bool,
    tail_lines: Option<usize>,
    limit_bytes: Option<usize>,
}

/// The log file of a container's current (or previous) run, in the newest
/// directory of the pod.
pub fn log_file(
    pods: &PodsDir,
    ns: &str,
    pod: &str,
    container: &str,
    previous: bool,
) -> Option<PathBuf> {
    pods.newest(ns, pod)?
        .container(container)
        .current_log(previous)
}

/// Whether the run after this log's run has a log too.
fn newer_run_exists(file: &Path) -> bool {
    let (Some(current), Some(dir)) = (run_of(file), file.parent()) else {
        return false;
    };
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| run_of(&e.path()).is_some_and(|n| n > current))
}

fn tail(text: &[u8], lines: usize) -> &[u8] {
    let body = text.strip_suffix(b"\n").unwrap_or(text);
    match body
        .iter()
        .enumerate()
        .rev()
        .filter(|(_, b)| **b == b'\n')
        .nth(lines.saturating_sub(1))
    {
        Some((i, _)) if lines > 0 => &text[i + 1..],
        _ if lines == 0 => &[],
        _ => text,
    }
}

async fn container_logs(
    State(pods): State<Arc<PodsDir>>,
    UrlPath((ns, pod, container)): UrlPath<(String, String, String)>,
    Query(q): Query<LogQuery>,
) -> Response {
    let Some(file) = log_file(&pods, &ns, &pod, &container, q.previous) else {
        return (
            StatusCode::NOT_FOUND,
            format!("no logs for container {container} of pod {ns}/{pod}\n"),
        )
            .into_response();
    };
    let Ok(all) = tokio::fs::read(&file).await else {
        return (StatusCode::NOT_FOUND, "log file vanished\n").into_response();
    };
    let mut head = match q.tail_lines {
        Some(n) => tail(&all, n).to_vec(),
        None => all.clone(),
    };
    if let Some(limit) = q.limit_bytes {
        head.truncate(limit);
    }
    if !q.follow {
        return head.into_response();
    }
    // Follow: the existing text, then whatever is appended, until the client goes away.
    let offset = all.len() as u64;
    let stream = futures::stream::unfold(
        (Some(head), offset, file),
        |(first, mut offset, file)| async move {
            if let Some(first) = first {
                return Some((Ok::<_, std::io::Error>(first), (None, offset, file)));
            }
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let mut f = tokio::fs::File::open(&file).await.ok()?;
                f.seek(std::io::SeekFrom::Start(offset)).await.ok()?;
                let mut more = Vec::new();
                f.read_to_end(&mut more).await.ok()?;
                if !more.is_empty() {
                    offset += more.len() as u64;
                    return Some((Ok(more), (None, offset, file)));
                }
                // The container was restarted (a newer run's log exists): this
                // run's log is complete, as with the kubelet.
                if newer_run_exists(&file) {
                    return None;
                }
            }
        },
    );
    Body::from_stream(stream).into_response()
}

/// Serves the API on `ip`:`port` until the task is aborted.
pub async fn serve(
    ip: &str,
    port: u16,
    cert: &Path,
    key: &Path,
    pods: PodsDir,
) -> Result<tokio::task::JoinHandle<()>, Error> {
    let tls = acceptor(cert, key)?;
    let tcp = TcpListener::bind((ip, port))
        .await
        .map_err(|source| Error::Bind { port, source })?;
    let app = Router::new()
        .route("/containerLogs/{ns}/{pod}/{container}", get(container_logs))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(Arc::new(pods));
    Ok(tokio::spawn(async move {
        let _ = axum::serve(TlsListener { tcp, tls }, app).await;
    }))
}

#[cfg(test)]
mod tests {
    use super::tail;

    #[test]
    fn a_newer_run_ends_a_follow() {
        let dir = std::env::temp_dir().join(format!("hb-logs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("0.log"), "a").expect("write");
        assert!(!super::newer_run_exists(&dir.join("0.log")));
        std::fs::write(dir.join("1.log"), "b").expect("write");
        assert!(super::newer_run_exists(&dir.join("0.log")));
        assert!(!super::newer_run_exists(&dir.join("1.log")));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(tail(b"a\nb\nc", 2), b"b\nc");
        assert_eq!(tail(b"a\nb\n", 5), b"a\nb\n");
        assert_eq!(tail(b"a\nb\n", 0), b"");
    }
}
