//! `e2e/stack` itself: a second stack comes up beside any other, answers, and
//! `down` leaves no process behind; a warm `install` touches no network tool.

use std::path::Path;
use std::process::Command;

use heartbeat_e2e::stack::{repo_dir, run, run_ok};
use heartbeat_testbed::layout::{PidRecord, StackLayout, default_tools_dir};

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc") {
        let Ok(entry) = entry else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) {
            found.push(format!(
                "{}: {cmdline}",
                entry.file_name().to_string_lossy()
            ));
        }
    }
    found
}

fn stack_cmd(dir: &Path, sub: &str) -> Command {
    let mut cmd = Command::new(repo_dir().join("e2e/stack"));
    cmd.arg(sub).env("HB_STACK_DIR", dir);
    cmd
}

#[test]
fn a_second_stack_comes_up_recovers_from_a_crash_and_down_leaves_no_process() {
    // Kept on failure: the watcher needs the state dir to stop what runs.
    let tmp = tempfile::tempdir().expect("tempdir").keep();
    let dir = tmp.join("stack");
    // If an assertion fails before `down`, the watcher still stops this stack.
    run_ok(
        stack_cmd(&dir, "up")
            .arg("--stop-when-exits")
            .arg(std::process::id().to_string()),
    );
    let status = run_ok(&mut stack_cmd(&dir, "status"));
    for c in ["etcd", "kube-apiserver", "kafka"] {
        assert!(status.contains(&format!("{c}: running")), "{status}");
    }
    let env = run_ok(&mut stack_cmd(&dir, "env"));
    assert!(
        env.contains("export KUBECONFIG=") && env.contains("export KAFKA_BOOTSTRAP=127.0.0.1:"),
        "{env}"
    );
    // A crashed component: `up` again notices, cleans up and starts afresh.
    let layout = StackLayout::new(&dir);
    let apiserver = PidRecord::read(&layout.pid_file("kube-apiserver")).expect("pid file");
    run_ok(Command::new("kill").args(["-KILL", &apiserver.pid.to_string()]));
    let (ok, status, _) = run(&mut stack_cmd(&dir, "status"));
    assert!(
        !ok && status.contains("kube-apiserver: stopped"),
        "{status}"
    );
    run_ok(
        stack_cmd(&dir, "up")
            .arg("--stop-when-exits")
            .arg(std::process::id().to_string()),
    );
    let status = run_ok(&mut stack_cmd(&dir, "status"));
    assert!(status.contains("kube-apiserver: running"), "{status}");

    let kubeconfig = layout.kubeconfig();
    let version = run_ok(
        Command::new(default_tools_dir().join("bin/kubectl"))
            .env("KUBECONFIG", &kubeconfig)
            .args(["version", "-o", "json"]),
    );
    assert!(version.contains("\"serverVersion\""), "{version}");
    assert!(!processes_mentioning(dir.to_str().expect("utf8 path")).is_empty());

    // A pod on the process node is a process too; down must stop it.
    let kubectl = || {
        let mut c = Command::new(default_tools_dir().join("bin/kubectl"));
        c.env("KUBECONFIG", &kubeconfig);
        c
    };
    for _ in 0..120 {
        if run(kubectl().args(["get", "serviceaccount", "default"])).0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    run_ok(kubectl().args(["run", "idle", "--image=demo/worker", "--restart=Never"]));
    let mut pid = None;
    for _ in 0..120 {
        pid = layout
            .pods()
            .newest("default", "idle")
            .and_then(|pod| PidRecord::live_pid(&pod.container("idle").pid_file()));
        if pid.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    let pid = pid.expect("the pod's container started");
    assert!(Path::new(&format!("/proc/{pid}")).exists());

    run_ok(&mut stack_cmd(&dir, "down"));
    assert!(
        !Path::new(&format!("/proc/{pid}/cmdline")).exists()
            || std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.is_empty()),
        "container process {pid} survived down"
    );
    let left = processes_mentioning(dir.to_str().expect("utf8 path"));
    assert!(
        left.is_empty(),
        "processes left after down:\n{}",
        left.join("\n")
    );
    let (ok, _, _) = run(&mut stack_cmd(&dir, "status"));
    assert!(!ok, "status must fail when the stack is down");
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn warm_install_runs_no_network_tool() {
    // Every tool that could reach the network is replaced by one that fails loudly.
    let fake = tempfile::tempdir().expect("tempdir");
    for tool in ["go", "mvn", "apt-get", "curl"] {
        let path = fake.path().join(tool);
        std::fs::write(
            &path,
            format!("#!/bin/sh\necho 'warm install ran {tool}' >&2\nexit 97\n"),
        )
        .expect("write fake tool");
        run_ok(Command::new("chmod").arg("+x").arg(&path));
    }
    let path = format!(
        "{}:{}",
        fake.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    run_ok(
        Command::new(repo_dir().join("e2e/stack"))
            .arg("install")
            .env("PATH", path),
    );
}
