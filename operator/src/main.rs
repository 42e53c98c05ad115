//! heartbeat-operator: flags, logs, then [`heartbeat_operator::run`].

use std::process::ExitCode;

use clap::Parser;
use heartbeat_operator::args::Args;

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HEARTBEAT_OPERATOR_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(false)
        .init();
    // One TLS crypto provider for the whole process (rustls, ring).
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
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
