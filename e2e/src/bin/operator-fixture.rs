//! The cluster tests' operator fixture as a command, for the benchmarks
//! that measure the operator as a process: starts `--bin` exactly as
//! [`OperatorProcess`] does for a test (a ServiceAccount with the repo's
//! least-privilege RBAC under names of its own, its token and kubeconfig,
//! in the stack's network namespace), makes a namespace it injects holding
//! the broker Secret, prints where everything is as shell assignments
//! (`HB_OP_*`, then `HB_OP_READY=1`), and when its stdin closes stops the
//! operator and deletes what it made. The stack is the one in
//! `HB_STACK_DIR`, already up.
//!
//! ```sh
//! operator-fixture --bin target/release/heartbeat-operator -- --some-flag
//! ```

use std::io::{Read, Write};
use std::path::PathBuf;

use clap::Parser;
use heartbeat_e2e::operator::{OperatorOptions, OperatorProcess};
use heartbeat_e2e::stack::{run_ok, run_with_stdin};
use heartbeat_e2e::{Stack, TestNamespace};

#[derive(Parser)]
#[command(
    about = "Starts the operator as the cluster tests do; prints HB_OP_* assignments; stops when stdin closes"
)]
struct Args {
    /// The operator binary to run.
    #[arg(long)]
    bin: PathBuf,
    /// Prefix of the namespace it injects (a random suffix follows).
    #[arg(long, default_value = "bench")]
    namespace_prefix: String,
    /// The operator's HEARTBEAT_OPERATOR_LOG.
    #[arg(long, default_value = "warn")]
    log: String,
    /// More flags for the operator (after `--`).
    #[arg(last = true)]
    extra: Vec<String>,
}

fn main() {
    let args = Args::parse();
    let stack = Stack::get();
    heartbeat_e2e::kube_env::install_crds(stack);
    let options = OperatorOptions {
        extra_args: args.extra,
        log_filter: Some(args.log),
        ..OperatorOptions::default()
    };
    let op = OperatorProcess::start_with(stack, &args.bin, options);
    let ns = TestNamespace::create(stack, &args.namespace_prefix);
    op.enable_injection(&ns);
    ns.create_broker_secret(&stack.kafka_bootstrap);
    let ca = webhook_ca(stack, &op);
    let (key, value) = op.monitor_label();
    let mut out = std::io::stdout().lock();
    let lines = [
        format!("HB_OP_NAMESPACE={}", op.namespace()),
        format!("HB_OP_APP_NAMESPACE={}", ns.name),
        format!("HB_OP_MONITOR_LABEL={key}={value}"),
        format!("HB_OP_WEBHOOK_URL=https://{}/mutate", op.webhook),
        format!("HB_OP_ADMIN_URL=http://{}", op.admin),
        format!("HB_OP_CA={}", ca.display()),
        "HB_OP_READY=1".to_string(),
    ];
    for line in lines {
        writeln!(out, "{line}").expect("stdout");
    }
    out.flush().expect("stdout");
    // Until the caller closes our stdin (or exits).
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    drop(ns);
    drop(op);
    let _ = std::fs::remove_file(&ca);
}

/// The CA of the operator's webhook certificate, written to a file.
fn webhook_ca(stack: &Stack, op: &OperatorProcess) -> PathBuf {
    let secret = format!("{}-webhook-tls", op.name);
    let b64 = run_ok(stack.kubectl().args([
        "get",
        "secret",
        &secret,
        "-n",
        op.namespace(),
        "-o",
        "jsonpath={.data.ca\\.crt}",
    ]));
    let (ok, pem, err) = run_with_stdin(std::process::Command::new("base64").arg("-d"), b64.trim());
    assert!(
        ok && pem.contains("BEGIN CERTIFICATE"),
        "{secret}: no ca.crt: {err}"
    );
    let path = std::env::temp_dir().join(format!("{}-ca.pem", op.name));
    std::fs::write(&path, pem).expect("write the CA");
    path
}
