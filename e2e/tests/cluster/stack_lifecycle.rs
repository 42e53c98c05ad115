//! `e2e/stack` itself: a second stack comes up beside any other in a network
//! of its own (no default route, every printed address inside it), answers,
//! and `down` leaves no process, namespace, link, route or mount behind, even
//! after the node was SIGKILLed; a warm `install` touches no network tool.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

use heartbeat_e2e::stack::{repo_dir, run, run_ok};
use heartbeat_testbed::layout::{PidRecord, StackEnv, StackLayout};
use heartbeat_testbed::network::{self, StackNet};

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

/// Every address `e2e/stack env` prints lies in what the stack made (its
/// /30 and its pod network), and the stack namespace has no default route.
fn assert_stays_inside(net: &StackNet, env: &str) {
    let mut addresses = 0;
    for line in env.lines() {
        let value = line.split_once('=').map(|(_, v)| v).unwrap_or_default();
        let value = value
            .trim_start_matches("https://")
            .trim_start_matches("http://");
        let host = value.split(['/', ':']).next().unwrap_or_default();
        if let Ok(ip) = host.parse::<Ipv4Addr>() {
            addresses += 1;
            assert!(net.owns(ip), "{line} is outside the stack's networks");
        }
    }
    assert!(addresses >= 5, "expected the stack's addresses in:\n{env}");
    let routes = run_ok(Command::new("ip").args(["-n", &net.netns(), "route", "show"]));
    assert!(
        !routes.contains("default"),
        "the stack namespace has a default route:\n{routes}"
    );
    assert!(routes.contains(&net.pod_cidr()), "{routes}");
}

/// The network namespaces of the stack (its own and its pods').
fn netns_of(net: &StackNet) -> Vec<String> {
    let mut names: Vec<String> = network::list_netns()
        .into_iter()
        .filter(|n| *n == net.netns() || n.starts_with(&net.pod_netns_prefix()))
        .collect();
    names.sort();
    names
}

#[test]
fn a_second_stack_comes_up_in_its_own_network_recovers_from_a_crash_and_down_leaves_nothing() {
    // Alone: a second stack (etcd, API server, broker) loads the machine,
    // and the process node's probe tests beside it time their probes.
    let (_shared, _exclusive) = heartbeat_e2e::Stack::exclusive();
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
    let layout = StackLayout::new(&dir);
    let net = StackNet::read(&layout).expect("the stack's network");
    assert_stays_inside(&net, &run_ok(&mut stack_cmd(&dir, "env")));
    // `exec` runs where the API server can call back: in the stack namespace.
    let inside = run_ok(stack_cmd(&dir, "exec").args(["--", "ip", "-o", "-4", "addr", "show"]));
    assert!(
        inside.contains(&format!("{}/30", net.stack_addr()))
            && !inside.contains(&net.host_addr().to_string()),
        "{inside}"
    );
    // A crashed component: `up` again notices, cleans up and starts afresh.
    let apiserver = PidRecord::read(&layout.pid_file("kube-apiserver")).expect("pid file");
    run_ok(Command::new("kill").args(["-KILL", &apiserver.pid.to_string()]));
    // A signal is delivered asynchronously: give the kernel a moment.
    let mut status = String::new();
    for _ in 0..50 {
        let (ok, out, _) = run(&mut stack_cmd(&dir, "status"));
        status = out;
        if !ok && status.contains("kube-apiserver: stopped") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(status.contains("kube-apiserver: stopped"), "{status}");
    run_ok(
        stack_cmd(&dir, "up")
            .arg("--stop-when-exits")
            .arg(std::process::id().to_string()),
    );
    let status = run_ok(&mut stack_cmd(&dir, "status"));
    assert!(status.contains("kube-apiserver: running"), "{status}");

    let kubeconfig = layout.kubeconfig();
    let tools_bin = StackEnv::read(&layout)
        .ok()
        .and_then(|e| e.tools_bin)
        .expect("HB_TOOLS_BIN in stack.env");
    let version = run_ok(
        Command::new(tools_bin.join("kubectl"))
            .env("KUBECONFIG", &kubeconfig)
            .args(["version", "-o", "json"]),
    );
    assert!(version.contains("\"serverVersion\""), "{version}");
    assert!(!processes_mentioning(dir.to_str().expect("utf8 path")).is_empty());

    // A pod on the process node is a process too; down must stop it.
    let kubectl = || {
        let mut c = Command::new(tools_bin.join("kubectl"));
        c.env("KUBECONFIG", &kubeconfig);
        c
    };
    for _ in 0..120 {
        if run(kubectl().args(["get", "serviceaccount", "default"])).0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    // The pod mounts an emptyDir where the host has no directory: the mount
    // point is made in the container's own overlay, never on the host.
    let mountpoint = format!("/run/hb-e2e-lifecycle-{}", std::process::id());
    let overrides = format!(
        r#"{{"spec": {{"volumes": [{{"name": "data", "emptyDir": {{}}}}],
             "containers": [{{"name": "idle", "image": "demo/worker",
               "volumeMounts": [{{"name": "data", "mountPath": "{mountpoint}/data"}}]}}]}}}}"#
    );
    run_ok(kubectl().args([
        "run",
        "idle",
        "--image=demo/worker",
        "--restart=Never",
        "--overrides",
        &overrides,
    ]));
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
    assert!(
        !Path::new(&mountpoint).exists(),
        "{mountpoint} was made on the host"
    );
    let pod_netns: Vec<String> = netns_of(&net);
    assert!(
        pod_netns.len() >= 2,
        "stack and pod namespaces: {pod_netns:?}"
    );

    // The node dies without cleaning up: its pod keeps running, its
    // namespaces stay; `down` must still leave nothing behind.
    let node = PidRecord::read(&layout.pid_file("process-node")).expect("node pid file");
    run_ok(Command::new("kill").args(["-KILL", &node.pid.to_string()]));
    run_ok(&mut stack_cmd(&dir, "down"));
    assert_eq!(
        netns_of(&net),
        Vec::<String>::new(),
        "namespaces left after down"
    );
    let links = run_ok(Command::new("ip").args(["-o", "link", "show"]));
    assert!(!links.contains(&format!("{}@", net.host_link())), "{links}");
    let routes = run_ok(Command::new("ip").args(["route", "show"]));
    assert!(!routes.contains(&net.pod_cidr()), "{routes}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let ours = |field: &str| {
        field
            .strip_prefix("/run/netns/")
            .is_some_and(|n| n == net.netns() || n.starts_with(&net.pod_netns_prefix()))
    };
    assert!(
        !mounts.lines().any(|l| l.split_whitespace().any(ours)),
        "netns mounts left:\n{mounts}"
    );
    assert!(
        !Path::new(&mountpoint).exists(),
        "{mountpoint} left after down"
    );
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
