//! Cluster-tier smoke tests: the CRD and examples against the real
//! kube-apiserver, and the installed tools at their pinned versions.

use heartbeat_e2e::kube_env::install_crds;
use heartbeat_e2e::stack::{repo_dir, run, run_ok};
use heartbeat_e2e::{Stack, TestNamespace};

fn yaml_files(dir: &str) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(repo_dir().join(dir))
        .expect("read examples dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no YAML files in {dir}");
    files
}

#[test]
fn crds_and_every_example_apply() {
    let stack = Stack::get();
    install_crds(stack);
    let ns = TestNamespace::create(stack, "smoke-examples");
    for file in yaml_files("examples") {
        run_ok(
            stack
                .kubectl()
                .args(["apply", "-n", &ns.name, "-f"])
                .arg(&file),
        );
    }
    let listed = run_ok(
        stack
            .kubectl()
            .args(["get", "hbm", "-n", &ns.name, "-o", "name"]),
    );
    assert_eq!(
        listed.lines().count(),
        yaml_files("examples").len(),
        "{listed}"
    );
}

#[test]
fn kubectl_get_prints_the_printer_columns() {
    let stack = Stack::get();
    install_crds(stack);
    let ns = TestNamespace::create(stack, "smoke-columns");
    run_ok(
        stack
            .kubectl()
            .args(["apply", "-n", &ns.name, "-f"])
            .arg(repo_dir().join("examples/minimal.yaml")),
    );
    let out = run_ok(stack.kubectl().args(["get", "heartbeatmonitors", "-A"]));
    let header: Vec<&str> = out
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAMESPACE",
            "NAME",
            "TOPIC",
            "INTERVAL",
            "EXPECTED",
            "UP",
            "STALE",
            "LAST",
            "BEAT",
            "AGE"
        ],
        "{out}"
    );
    assert!(out.contains(&ns.name) && out.contains("minimal"), "{out}");
    let wide = run_ok(
        stack
            .kubectl()
            .args(["get", "hbm", "-n", &ns.name, "-o", "wide"]),
    );
    let header = wide.lines().next().unwrap_or_default();
    assert!(header.ends_with("READY   HEALTHY"), "{wide}");
}

#[test]
fn every_invalid_example_is_refused_naming_the_field() {
    let stack = Stack::get();
    install_crds(stack);
    let ns = TestNamespace::create(stack, "smoke-invalid");
    for file in yaml_files("examples/invalid") {
        let text = std::fs::read_to_string(&file).expect("read example");
        let expect: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .collect();
        assert!(
            !expect.is_empty(),
            "{} has no '# expect:' line",
            file.display()
        );
        let (ok, stdout, stderr) = run(stack
            .kubectl()
            .args(["apply", "-n", &ns.name, "-f"])
            .arg(&file));
        assert!(!ok, "{} was accepted:\n{stdout}", file.display());
        for want in expect {
            assert!(
                stderr.contains(want),
                "{}: error does not name {want}:\n{stderr}",
                file.display()
            );
        }
    }
    let left = run_ok(
        stack
            .kubectl()
            .args(["get", "hbm", "-n", &ns.name, "-o", "name"]),
    );
    assert_eq!(left.trim(), "", "invalid monitors were stored");
}

#[test]
fn installed_tools_report_their_pinned_versions() {
    let stack = Stack::get();
    let versions =
        std::fs::read_to_string(repo_dir().join("e2e/tools/versions.env")).expect("versions.env");
    let pinned = |key: &str| {
        versions
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("{key} not in versions.env"))
            .to_string()
    };
    let server = run_ok(stack.kubectl().args(["version", "-o", "json"]));
    assert!(
        server.contains(&format!("\"gitVersion\": \"{}\"", pinned("K8S_VERSION"))),
        "{server}"
    );
    let helm = run_ok(stack.tool("helm").args(["version", "--short"]));
    assert!(helm.starts_with(&pinned("HELM_VERSION")), "{helm}");
    let etcd = run_ok(stack.tool("etcd").arg("--version"));
    assert!(
        etcd.contains(pinned("ETCD_VERSION").trim_start_matches('v')),
        "{etcd}"
    );
}
