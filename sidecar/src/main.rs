//! heartbeat-sidecar entry point.

fn main() {
    eprintln!(
        "heartbeat-sidecar {}: not built yet",
        env!("CARGO_PKG_VERSION")
    );
    std::process::exit(1);
}
