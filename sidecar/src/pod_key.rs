//! The key this pod's beats are signed with: fixed (`--signing-key`), or
//! fetched from the operator's key endpoint (`--signing-key-url`: through
//! the API server's service proxy, or directly) and
//! fetched again as often as the answer says, so a rotated master reaches
//! a running sidecar without a restart. The pod proves who it is with its
//! projected ServiceAccount token for audience `heartbeat.dev`, and passes
//! the API server's proxy with another one for the API server's audience.
//! The key is held in memory only and never logged.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use heartbeat_crds::sidecar_contract::{
    IDENTITY_API_TOKEN, IDENTITY_CA, IDENTITY_TOKEN, env as env_name,
};
use heartbeat_crds::signing::{
    MAX_REFRESH_SECONDS, MAX_TOKEN_BYTES, MIN_REFRESH_SECONDS, PodKey, TOKEN_HEADER,
};

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls;

use crate::metrics::Metrics;

/// The key the producer signs with now; `None`: beats go unsigned.
#[derive(Clone, Default)]
pub struct KeySlot(Arc<RwLock<Option<Vec<u8>>>>);

impl KeySlot {
    /// A slot holding `key` from the start (`--signing-key`).
    pub fn fixed(key: Option<Vec<u8>>) -> KeySlot {
        KeySlot(Arc::new(RwLock::new(key)))
    }

    /// The current key.
    pub fn get(&self) -> Option<Vec<u8>> {
        match self.0.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn set(&self, key: Vec<u8>) {
        match self.0.write() {
            Ok(mut g) => *g = Some(key),
            Err(p) => *p.into_inner() = Some(key),
        }
    }
}

/// Why a key could not be had (never carries a token or a key).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Setup(String),
    #[error("asking {url}: {why}")]
    Request { url: String, why: String },
    #[error("{url} answered {status}: {body}")]
    Refused {
        url: String,
        status: u16,
        body: String,
    },
    #[error("{url} answered with no usable key: {why}")]
    BadAnswer { url: String, why: String },
}

/// Where and how to ask for the key.
pub struct Fetcher {
    /// The absolute URL.
    url: String,
    /// The CA of a direct URL; `None`: through the API server (the
    /// identity's `ca.crt`, and its `api-token` to pass the API server).
    direct_ca: Option<String>,
    identity: PathBuf,
    pod_uid: Option<String>,
}

/// The URL to ask: an https:// URL as it is (`false`), or `path` on the
/// API server at `KUBERNETES_SERVICE_HOST`/`_PORT` from `env` (`true`).
pub fn resolve(path: &str, env: impl Fn(&str) -> Option<String>) -> Result<(String, bool), String> {
    if path.starts_with("https://") {
        return Ok((path.to_string(), false));
    }
    let host = env(env_name::KUBERNETES_SERVICE_HOST)
        .filter(|h| !h.is_empty())
        .ok_or("KUBERNETES_SERVICE_HOST is not set: the key path needs the API server")?;
    let port = env(env_name::KUBERNETES_SERVICE_PORT).unwrap_or_else(|| "443".into());
    // An IPv6 address goes in brackets.
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host
    };
    Ok((format!("https://{host}:{port}{path}"), true))
}

fn read(dir: &Path, name: &str) -> Result<Vec<u8>, FetchError> {
    let path = dir.join(name);
    let bytes = std::fs::read(&path).map_err(|source| FetchError::Read {
        path: path.clone(),
        source,
    })?;
    if bytes.len() > MAX_TOKEN_BYTES.max(1 << 20) {
        return Err(FetchError::Setup(format!(
            "{} is too large",
            path.display()
        )));
    }
    Ok(bytes)
}

fn token(dir: &Path, name: &str) -> Result<String, FetchError> {
    let bytes = read(dir, name)?;
    let t = String::from_utf8(bytes)
        .map_err(|_| FetchError::Setup(format!("{name} is not UTF-8")))?
        .trim()
        .to_string();
    if t.is_empty() || t.len() > MAX_TOKEN_BYTES {
        return Err(FetchError::Setup(format!("{name} is empty or too long")));
    }
    Ok(t)
}

/// TLS that trusts only `pem` (the API server's CA, or the operator's for
/// a direct URL). hyper and tokio-rustls directly: reqwest's TLS features
/// would reach every reqwest of the workspace through feature unification.
fn tls(pem: &[u8]) -> Result<tokio_rustls::TlsConnector, FetchError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| FetchError::Setup(format!("the CA: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| FetchError::Setup(format!("the CA: {e}")))?;
    }
    if roots.is_empty() {
        return Err(FetchError::Setup("the CA holds no certificate".to_string()));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| FetchError::Setup(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// How long one request may take, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// One `POST url` with `headers` and no body, over TLS trusting `ca`: the
/// status and at most [`MAX_ANSWER_BYTES`] of the answer.
async fn post(url: &str, ca: &[u8], headers: &[(&str, String)]) -> Result<(u16, Bytes), String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("{e}"))?;
    let authority = uri.authority().ok_or("no host")?.clone();
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = authority.port_u16().unwrap_or(443);
    let connector = tls(ca).map_err(|e| e.to_string())?;
    let server_name = ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
    let tcp = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| e.to_string())?;
    let stream = connector
        .connect(server_name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    let connection = tokio::spawn(conn);
    let mut request = hyper::Request::post(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(hyper::header::HOST, authority.as_str());
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    connection.abort();
    Ok((status, body))
}

/// Longest answer read from the endpoint.
const MAX_ANSWER_BYTES: usize = 4096;
/// Longest error body repeated in a log line.
const MAX_SHOWN_BODY: usize = 200;

impl Fetcher {
    pub fn new(
        url: &str,
        ca: Option<String>,
        identity: PathBuf,
        pod_uid: Option<String>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Fetcher, String> {
        let (url, via_api_server) = resolve(url, env)?;
        let direct_ca = match (via_api_server, ca) {
            (true, _) => None,
            (false, Some(ca)) if !ca.trim().is_empty() => Some(ca),
            (false, _) => {
                return Err(format!(
                    "{url} needs the CA that signed its certificate (--signing-key-ca)"
                ));
            }
        };
        Ok(Fetcher {
            url,
            direct_ca,
            identity,
            pod_uid,
        })
    }

    /// Asks once.
    pub async fn fetch(&self) -> Result<(Vec<u8>, PodKey), FetchError> {
        let mut headers = vec![(TOKEN_HEADER, token(&self.identity, IDENTITY_TOKEN)?)];
        let ca = match &self.direct_ca {
            Some(ca) => ca.as_bytes().to_vec(),
            // The API server takes the bearer token for itself (and drops
            // it); the audience-bound one goes on to the operator.
            None => {
                let api = token(&self.identity, IDENTITY_API_TOKEN)?;
                headers.push(("authorization", format!("Bearer {api}")));
                read(&self.identity, IDENTITY_CA)?
            }
        };
        let url = self.url.clone();
        let (status, body) = tokio::time::timeout(REQUEST_TIMEOUT, post(&url, &ca, &headers))
            .await
            .map_err(|_| FetchError::Request {
                url: url.clone(),
                why: format!("no answer within {REQUEST_TIMEOUT:?}"),
            })?
            .map_err(|why| FetchError::Request {
                url: url.clone(),
                why,
            })?;
        if !(200..300).contains(&status) {
            let text = String::from_utf8_lossy(&body);
            return Err(FetchError::Refused {
                url,
                status,
                body: text.chars().take(MAX_SHOWN_BODY).collect(),
            });
        }
        if body.len() > MAX_ANSWER_BYTES {
            return Err(FetchError::BadAnswer {
                url,
                why: "too large".into(),
            });
        }
        let answer: PodKey = serde_json::from_slice(&body).map_err(|e| FetchError::BadAnswer {
            url: url.clone(),
            why: e.to_string(),
        })?;
        let key = hex::decode(&answer.key)
            .ok()
            .filter(|k| k.len() == 32)
            .ok_or_else(|| FetchError::BadAnswer {
                url: url.clone(),
                why: "the key is not 32 bytes of hex".into(),
            })?;
        // A key for another pod would sign beats the operator refuses.
        if let Some(uid) = &self.pod_uid
            && *uid != answer.pod_uid
        {
            return Err(FetchError::BadAnswer {
                url,
                why: format!("a key for pod {}, not this one ({uid})", answer.pod_uid),
            });
        }
        Ok((key, answer))
    }

    /// Keeps `slot` filled: asks now, then again when the answer says (or
    /// sooner after a failure, keeping the key it has). Runs until dropped.
    pub async fn keep(self, slot: KeySlot, metrics: Arc<Metrics>) {
        let mut backoff = Duration::from_secs(1);
        loop {
            let wait = match self.fetch().await {
                Ok((key, answer)) => {
                    let changed = slot.get().as_deref() != Some(key.as_slice());
                    slot.set(key);
                    metrics
                        .signing_key_generation
                        .set(i64::try_from(answer.generation).unwrap_or(i64::MAX));
                    if changed {
                        tracing::info!(
                            generation = answer.generation,
                            refresh_seconds = answer.refresh_seconds,
                            "signing with the pod's key"
                        );
                    }
                    backoff = Duration::from_secs(1);
                    Duration::from_secs(u64::from(
                        answer
                            .refresh_seconds
                            .clamp(MIN_REFRESH_SECONDS, MAX_REFRESH_SECONDS),
                    ))
                }
                Err(e) => {
                    metrics.signing_key_failures.inc();
                    tracing::warn!(error = %e, have_key = slot.get().is_some(), "cannot get the pod's signing key; asking again");
                    let wait = backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    wait
                }
            };
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_goes_to_the_api_server_and_a_url_as_it_is() {
        let env = |k: &str| match k {
            "KUBERNETES_SERVICE_HOST" => Some("10.0.0.1".to_string()),
            "KUBERNETES_SERVICE_PORT" => Some("6443".to_string()),
            _ => None,
        };
        assert_eq!(
            resolve("/api/v1/x", env),
            Ok(("https://10.0.0.1:6443/api/v1/x".to_string(), true))
        );
        assert_eq!(
            resolve("https://op:8444/keys/pod", env),
            Ok(("https://op:8444/keys/pod".to_string(), false))
        );
        let v6 = |k: &str| (k == "KUBERNETES_SERVICE_HOST").then(|| "fd00::1".to_string());
        assert_eq!(
            resolve("/p", v6),
            Ok(("https://[fd00::1]:443/p".to_string(), true))
        );
        assert!(resolve("/p", |_| None).is_err());
    }
}
