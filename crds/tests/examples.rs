//! Every valid example under examples/ deserializes into the Rust types.
//! (The API server's verdict on examples/invalid/ is tested in e2e.)

use heartbeat_crds::HeartbeatMonitor;

#[test]
fn every_valid_example_deserializes() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).expect("examples dir") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read example");
        let parsed: Result<HeartbeatMonitor, _> = serde_yaml::from_str(&text);
        assert!(parsed.is_ok(), "{}: {:?}", path.display(), parsed.err());
        seen += 1;
    }
    assert!(seen >= 5, "expected at least 5 examples, found {seen}");
}
