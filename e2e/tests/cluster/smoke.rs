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

/// The version the go command recorded for `module` in `bin`'s build
/// information: what it downloaded and checksummed, not a string the build
/// stamped from `versions.env`.
fn go_module_version(bin: &std::path::Path, module: &str) -> String {
    let info = run_ok(
        std::process::Command::new("go")
            .args(["version", "-m"])
            .arg(bin),
    );
    info.lines()
        .find_map(|line| {
            let mut cols = line.split_whitespace();
            let kind = cols.next()?;
            ((kind == "mod" || kind == "dep") && cols.next()? == module)
                .then(|| cols.next().map(str::to_string))?
        })
        .unwrap_or_else(|| {
            panic!(
                "{} has no {module} in its build info:\n{info}",
                bin.display()
            )
        })
}

/// `version=` of the `kafka/kafka-version.properties` each Kafka jar on the
/// running broker's class path carries (written by Kafka's own build).
fn broker_jar_versions(stack: &Stack) -> Vec<(String, String)> {
    let pid = std::fs::read_to_string(stack.layout.pid_file("kafka")).expect("kafka.pid");
    // `<pid> <start time>`
    let pid = pid.split_whitespace().next().unwrap_or_default();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("broker cmdline");
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let class_path = args
        .iter()
        .position(|a| a == "-cp" || a == "-classpath")
        .and_then(|i| args.get(i + 1))
        .unwrap_or_else(|| panic!("the broker runs without a class path: {args:?}"));
    let script = r#"
import sys, zipfile
for jar in sys.argv[1:]:
    z = zipfile.ZipFile(jar)
    if 'kafka/kafka-version.properties' in z.namelist():
        props = z.read('kafka/kafka-version.properties').decode()
        v = [l[8:] for l in props.splitlines() if l.startswith('version=')]
        print(jar.rsplit('/', 1)[-1], v[0] if v else '')
"#;
    let mut cmd = std::process::Command::new("python3");
    cmd.args(["-c", script]);
    for entry in class_path.split(':') {
        if entry.ends_with("/*") {
            let dir = entry.trim_end_matches("/*");
            for jar in std::fs::read_dir(dir).expect("class path dir") {
                cmd.arg(jar.expect("dir entry").path());
            }
        } else if entry.ends_with(".jar") {
            cmd.arg(entry);
        }
    }
    run_ok(&mut cmd)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(jar, v)| (jar.to_string(), v.to_string()))
        .collect()
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
    // What each binary says of itself was stamped at build time from
    // versions.env, so it alone proves nothing: the module the go command
    // actually built (its build info) must be the pinned one too.
    for (bin, module, key) in [
        ("kube-apiserver", "k8s.io/kubernetes", "K8S_VERSION"),
        (
            "kube-controller-manager",
            "k8s.io/kubernetes",
            "K8S_VERSION",
        ),
        ("kube-scheduler", "k8s.io/kubernetes", "K8S_VERSION"),
        ("kubectl", "k8s.io/kubernetes", "K8S_VERSION"),
        ("etcd", "go.etcd.io/etcd/server/v3", "ETCD_VERSION"),
        ("helm", "helm.sh/helm/v3", "HELM_VERSION"),
    ] {
        let built = go_module_version(&stack.tools_bin.join(bin), module);
        assert_eq!(built, pinned(key), "{bin} was built from {module} {built}");
    }
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
    // The running broker: every Kafka jar on its class path, by the version
    // Kafka's build wrote inside it.
    let jars = broker_jar_versions(stack);
    assert!(
        jars.iter().any(|(jar, _)| jar.starts_with("kafka-server-")),
        "no kafka-server jar on the broker's class path: {jars:?}"
    );
    for (jar, version) in &jars {
        assert_eq!(
            version,
            &pinned("KAFKA_VERSION"),
            "{jar} on the broker's class path"
        );
    }
}
