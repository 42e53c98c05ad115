//! heartbeat-operator: not built yet (webhook, controller and consumer come in later issues).

fn main() {
    eprintln!(
        "heartbeat-operator {}: not built yet",
        env!("CARGO_PKG_VERSION")
    );
    std::process::exit(1);
}
