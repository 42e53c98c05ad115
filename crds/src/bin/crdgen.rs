//! Prints the HeartbeatMonitor CRD as YAML: `cargo run -p heartbeat-crds --bin crdgen > crds/heartbeatmonitors.yaml`.

fn main() -> Result<(), serde_yaml::Error> {
    print!("{}", heartbeat_crds::monitor::crd_yaml()?);
    Ok(())
}
