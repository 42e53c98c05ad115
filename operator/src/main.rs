//! heartbeat-operator: flags, logs, then [`heartbeat_operator::run`].

use std::process::ExitCode;

use clap::Parser;
use heartbeat_operator::args::{self, Args};

/// Threads for blocking calls at most (see where the runtime is built).
const MAX_BLOCKING_THREADS: usize = 16;

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("HEARTBEAT_OPERATOR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false);
    // Structured logs (one JSON object per line) for a log pipeline; text
    // for a person at a terminal.
    if args.log_format == args::LogFormat::Json {
        logs.json().flatten_event(true).init();
    } else {
        logs.init();
    }
    // One TLS crypto provider for the whole process (rustls, ring).
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    // The blocking pool runs librdkafka's blocking calls (each topic's
    // watermark query every 500 ms, checkpoint writes, closes). tokio's
    // default lets it grow to 512 threads, and at 100 topics it held 80,
    // each with a malloc arena of its own: bounded, so threads and memory
    // do not grow with topics.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("heartbeat-operator: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(heartbeat_operator::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, label = e.metric_label(), "heartbeat-operator failed");
            eprintln!("heartbeat-operator: {e}");
            ExitCode::FAILURE
        }
    }
}
