//! Bad flags and env: exit code 2 and a message naming the field. No broker needed.

use std::process::Command;

fn sidecar(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_heartbeat-sidecar"));
    cmd.env_clear().args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run sidecar");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const BROKER: (&str, &str) = ("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9");

#[test]
fn missing_topic_exits_2_naming_it() {
    let (code, err) = sidecar(&["--program-id", "p"], &[BROKER]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--topic"), "{err}");
}

#[test]
fn interval_out_of_range_in_env_exits_2_naming_it() {
    let (code, err) = sidecar(
        &[],
        &[
            ("HEARTBEAT_TOPIC", "hb"),
            ("HEARTBEAT_PROGRAM_ID", "p"),
            ("HEARTBEAT_INTERVAL_SECS", "0"),
            BROKER,
        ],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--interval-secs"), "{err}");
}

#[test]
fn bad_app_health_exits_2_with_the_expected_syntax() {
    let (code, err) = sidecar(
        &["--topic", "hb", "--program-id", "p"],
        &[("HEARTBEAT_APP_HEALTH", "file:relative:30"), BROKER],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--app-health") && err.contains("absolute"),
        "{err}"
    );
}

#[test]
fn bad_program_id_exits_2() {
    let (code, err) = sidecar(&["--topic", "hb", "--program-id", "ns/pod"], &[BROKER]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--program-id"), "{err}");
}

#[test]
fn bad_monitor_and_http_addr_exit_2() {
    let (code, err) = sidecar(
        &[
            "--topic",
            "hb",
            "--program-id",
            "p",
            "--monitor",
            "no-slash",
        ],
        &[BROKER],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--monitor"), "{err}");
    let (code, err) = sidecar(
        &["--topic", "hb", "--program-id", "p"],
        &[("HEARTBEAT_HTTP_ADDR", "localhost"), BROKER],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--http-addr"), "{err}");
}

#[test]
fn missing_bootstrap_servers_exits_2_naming_the_env() {
    let (code, err) = sidecar(&["--topic", "hb", "--program-id", "p"], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("KAFKA_BOOTSTRAP_SERVERS"), "{err}");
}

#[test]
fn help_documents_env_and_openmsistream_names() {
    let out = Command::new(env!("CARGO_BIN_EXE_heartbeat-sidecar"))
        .arg("--help")
        .output()
        .expect("help");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "HEARTBEAT_TOPIC",
        "HEARTBEAT_PROGRAM_ID",
        "HEARTBEAT_INTERVAL_SECS",
        "HEARTBEAT_MONITOR",
        "HEARTBEAT_HTTP_ADDR",
        "HEARTBEAT_APP_HEALTH",
        "HEARTBEAT_SIGNING_KEY",
        "KAFKA_BOOTSTRAP_SERVERS",
        "POD_NAME",
        "NODE_NAME",
        "--heartbeat_topic_name",
        "--heartbeat_program_id",
        "--heartbeat_interval_secs",
    ] {
        assert!(help.contains(needle), "--help does not mention {needle}");
    }
}

#[test]
fn invalid_kafka_property_value_exits_2_naming_the_env() {
    let (code, err) = sidecar(
        &["--topic", "hb", "--program-id", "p"],
        &[BROKER, ("KAFKA_ACKS", "most")],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("KAFKA_ACKS"), "{err}");
}

#[test]
fn unknown_kafka_property_in_a_flag_exits_2() {
    let (code, err) = sidecar(
        &[
            "--topic",
            "hb",
            "--program-id",
            "p",
            "--kafka",
            "no.such.thing=1",
        ],
        &[BROKER],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no.such.thing"), "{err}");
}
