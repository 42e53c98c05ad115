//! heartbeat-sidecar: flags/env -> config, then the beat loop and the HTTP
//! server side by side until SIGTERM/SIGINT, then a last `stopping` beat.
#![forbid(unsafe_code)]

mod beat_loop;
mod error;
mod health;
mod http;
mod metrics;
mod pod_key;
mod producer;
mod serve;
mod sidecar;
mod signals;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use heartbeat_sidecar::config;
use tokio::signal::unix::{SignalKind, signal};

use crate::config::{Args, Config};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::pod_key::KeySlot;
use crate::producer::BeatProducer;
use crate::sidecar::Sidecar;

/// How long the first beat waits for the pod's signing key.
const FIRST_KEY_WAIT: Duration = Duration::from_secs(10);

/// The process must be gone within 2 s of SIGTERM; this leaves room to exit.
const FLUSH_AT_SHUTDOWN: Duration = Duration::from_millis(1500);

fn main() -> ExitCode {
    let args = Args::parse();
    // Non-UTF-8 entries cannot be librdkafka properties; skip them.
    let env = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
    let config = Config::new(args, env, producer::check_property).unwrap_or_else(|e| e.exit());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env(heartbeat_crds::sidecar_contract::env::LOG)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    for name in &config.ignored_env {
        tracing::warn!(env = %name, "ignoring: librdkafka has no such property");
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("heartbeat-sidecar: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        // librdkafka refusing the combination of properties is a configuration error.
        Err(e @ Error::CreateProducer(_)) => {
            eprintln!("heartbeat-sidecar: invalid Kafka producer configuration: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            tracing::error!(error = %e, "heartbeat-sidecar failed");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> Result<(), Error> {
    let metrics = Arc::new(Metrics::new());
    let key = KeySlot::fixed(
        config
            .args
            .signing_key
            .as_ref()
            .map(|k| k.as_bytes().to_vec()),
    );
    if let Some(url) = &config.args.signing_key_url {
        let fetcher = pod_key::Fetcher::new(
            url,
            config.args.signing_key_ca.clone(),
            config.args.identity_dir.clone(),
            config.args.pod_uid.clone(),
            |k| std::env::var(k).ok(),
        )
        .map_err(Error::SigningKey)?;
        let fetching = tokio::spawn(fetcher.keep(key.clone(), metrics.clone()));
        // The first beat waits a little for the key: unsigned, it would be
        // refused. Beyond that, beats go out unsigned until a key comes.
        let deadline = tokio::time::Instant::now() + FIRST_KEY_WAIT;
        while key.get().is_none()
            && tokio::time::Instant::now() < deadline
            && !fetching.is_finished()
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let producer = BeatProducer::new(
        &config.kafka,
        &config.args.topic,
        config.interval(),
        config.args.queue_capacity,
        key,
        metrics.clone(),
    )?;
    let probe_client = health::probe_client().map_err(|e| Error::ProbeClient(e.to_string()))?;
    let addr = config.args.http_addr;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Http { addr, source })?;
    tracing::info!(
        topic = %config.args.topic,
        program_id = %config.args.program_id,
        interval_secs = config.args.interval_secs,
        app_health = config.args.app_health.mode(),
        %addr,
        "heartbeat-sidecar started"
    );
    let sidecar = Arc::new(Sidecar::new(config, metrics, producer, probe_client));
    let pingers = http::Pingers::for_listener(addr);
    let refused = sidecar.metrics.http_refused.clone();
    let server = tokio::spawn(serve::serve(
        listener,
        http::router(sidecar.clone(), pingers),
        move || {
            refused.inc();
        },
    ));

    let mut term = signal(SignalKind::terminate()).map_err(Error::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(Error::Signal)?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: sending the stopping beat"),
            _ = int.recv() => tracing::info!("SIGINT: sending the stopping beat"),
        }
    };
    beat_loop::run(&sidecar, shutdown, FLUSH_AT_SHUTDOWN).await;
    server.abort();
    Ok(())
}
