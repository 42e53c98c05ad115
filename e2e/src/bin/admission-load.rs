//! admission-load: an open-loop load generator for the webhook's `/mutate`.
//!
//! Requests are sent on a fixed schedule (request i at start + i/rate)
//! whatever the answers do: a slow server cannot slow the sender down, so
//! it cannot hide its queueing (no coordinated omission). Latency is
//! reported from the moment each request was sent; how late the sender was
//! against its schedule (tokio's timer has 1 ms ticks) is reported apart,
//! as `lag`, so a sender that fell behind shows. A pool of keep-alive
//! HTTP/1.1 connections over TLS is opened first and reused (hyper and
//! tokio-rustls directly: reqwest's TLS features would reach the sidecar's
//! reqwest through Cargo's feature unification).
//!
//!   admission-load --url https://host:port/mutate --body review.json --ca ca.pem fixed --rate 1000 --seconds 30
//!   admission-load ... search --p99-ms 10 --seconds 10

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::sync::{Mutex, mpsc};

/// Open-loop load on an admission webhook.
#[derive(Parser, Debug)]
struct Args {
    /// The webhook's URL.
    #[arg(long)]
    url: String,
    /// The AdmissionReview sent (JSON).
    #[arg(long)]
    body: PathBuf,
    /// The CA that signed the webhook's certificate (PEM).
    #[arg(long)]
    ca: PathBuf,
    /// Keep-alive connections opened up front.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// One fixed rate: p50, p99, max.
    Fixed {
        #[arg(long, default_value_t = 1000)]
        rate: u32,
        #[arg(long, default_value_t = 30)]
        seconds: u64,
    },
    /// The highest rate whose p99 stays under the bound.
    Search {
        #[arg(long, default_value_t = 10.0)]
        p99_ms: f64,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
}

/// What one run at one rate measured.
struct Run {
    rate: u32,
    sent: usize,
    errors: usize,
    p50: Duration,
    p99: Duration,
    max: Duration,
    /// How late requests left against their schedule (p99).
    lag_p99: Duration,
    achieved: f64,
}

/// Keep-alive connections; a request takes one and gives it back.
struct Pool {
    idle: Mutex<mpsc::UnboundedReceiver<SendRequest<Full<bytes::Bytes>>>>,
    back: mpsc::UnboundedSender<SendRequest<Full<bytes::Bytes>>>,
    host: String,
    path: String,
}

/// Opens `n` TLS connections to `url` (https://host:port/path).
async fn connect(url: &str, ca: &[u8], n: usize) -> Result<Pool, String> {
    let rest = url
        .strip_prefix("https://")
        .ok_or("the URL must be https://")?;
    let (authority, path) = rest
        .split_once('/')
        .map(|(a, p)| (a, format!("/{p}")))
        .unwrap_or((rest, "/".into()));
    let host = authority
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(authority)
        .to_string();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca) {
        roots
            .add(cert.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let server_name = ServerName::try_from(host.clone()).map_err(|e| e.to_string())?;
    let (back, idle) = mpsc::unbounded_channel();
    for _ in 0..n {
        let tcp = tokio::net::TcpStream::connect(authority)
            .await
            .map_err(|e| e.to_string())?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        let tls = connector
            .connect(server_name.clone(), tcp)
            .await
            .map_err(|e| e.to_string())?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let _ = back.send(sender);
    }
    Ok(Pool {
        idle: Mutex::new(idle),
        back,
        host: authority.to_string(),
        path,
    })
}

/// One POST on a pooled connection; true when it answered 2xx with a body.
async fn post(pool: &Pool, body: bytes::Bytes) -> bool {
    let Some(mut sender) = pool.idle.lock().await.recv().await else {
        return false;
    };
    let req = hyper::Request::post(&pool.path)
        .header("host", &pool.host)
        .header("content-type", "application/json")
        .body(Full::new(body));
    let ok = match req {
        Ok(req) => match sender.send_request(req).await {
            Ok(resp) => {
                let good = resp.status().is_success();
                good && resp.into_body().collect().await.is_ok()
            }
            Err(_) => false,
        },
        Err(_) => false,
    };
    if !sender.is_closed() {
        let _ = pool.back.send(sender);
    }
    ok
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

async fn run_at(pool: &Arc<Pool>, body: &bytes::Bytes, rate: u32, seconds: u64) -> Run {
    let total = u64::from(rate) * seconds;
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(total as usize)));
    let mut lags = Vec::with_capacity(total as usize);
    let errors = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now() + Duration::from_millis(50);
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / f64::from(rate));
        tokio::time::sleep_until(due.into()).await;
        let sent = Instant::now();
        lags.push(sent.saturating_duration_since(due));
        let (pool, body) = (pool.clone(), body.clone());
        let (latencies, errors) = (latencies.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let ok = post(&pool, body).await;
            let took = sent.elapsed();
            if ok {
                latencies.lock().await.push(took);
            } else {
                errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mut l = latencies.lock().await.clone();
    l.sort_unstable();
    lags.sort_unstable();
    Run {
        rate,
        sent: total as usize,
        errors: errors.load(std::sync::atomic::Ordering::Relaxed),
        p50: percentile(&l, 0.50),
        p99: percentile(&l, 0.99),
        max: l.last().copied().unwrap_or_default(),
        lag_p99: percentile(&lags, 0.99),
        achieved: l.len() as f64 / elapsed,
    }
}

fn print(r: &Run) {
    println!(
        "rate {:>6}/s  sent {:>7}  errors {:>5}  achieved {:>8.0}/s  p50 {:>7.3} ms  p99 {:>7.3} ms  max {:>8.3} ms  (sender lag p99 {:>6.3} ms)",
        r.rate,
        r.sent,
        r.errors,
        r.achieved,
        r.p50.as_secs_f64() * 1e3,
        r.p99.as_secs_f64() * 1e3,
        r.max.as_secs_f64() * 1e3,
        r.lag_p99.as_secs_f64() * 1e3
    );
}

// One thread: the other core is left to the operator under test.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (body, ca) = match (std::fs::read(&args.body), std::fs::read(&args.ca)) {
        (Ok(b), Ok(c)) => (bytes::Bytes::from(b), c),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("admission-load: {e}");
            return ExitCode::from(2);
        }
    };
    let pool = match connect(&args.url, &ca, args.connections).await {
        Ok(p) => Arc::new(p),
        Err(e) => {
            eprintln!("admission-load: connecting to {}: {e}", args.url);
            return ExitCode::from(2);
        }
    };
    // Warm the connections and the server.
    let _ = run_at(&pool, &body, 500, 2).await;
    match args.mode {
        Mode::Fixed { rate, seconds } => print(&run_at(&pool, &body, rate, seconds).await),
        Mode::Search { p99_ms, seconds } => {
            let mut best = None;
            for rate in [
                1_000, 2_000, 4_000, 6_000, 8_000, 10_000, 11_000, 12_000, 15_000, 20_000, 25_000,
                30_000,
            ] {
                let r = run_at(&pool, &body, rate, seconds).await;
                print(&r);
                let good = r.errors == 0
                    && r.p99.as_secs_f64() * 1e3 < p99_ms
                    && r.achieved > 0.95 * f64::from(rate);
                if !good {
                    break;
                }
                best = Some(rate);
            }
            match best {
                Some(rate) => {
                    println!("highest open-loop rate with p99 under {p99_ms} ms: {rate}/s")
                }
                None => println!("no tested rate kept p99 under {p99_ms} ms"),
            }
        }
    }
    ExitCode::SUCCESS
}
