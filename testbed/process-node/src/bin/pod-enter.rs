//! pod-enter: how the process node starts a container's process (and an
//! exec probe) inside its pod. It joins the pod's network namespace, makes a
//! mount namespace of its own with the container's volumes bind-mounted at
//! their real paths, sets the pod's hostname, changes to the working
//! directory and execs the program (so the pid the node recorded is the
//! container's).

use std::ffi::CString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use heartbeat_process_node::enter::{EnterError, MountSpec, enter};

/// Runs PROGRAM inside a pod's network namespace with the container's mounts.
#[derive(Parser, Debug)]
#[command(name = "pod-enter", version, about)]
struct Args {
    /// The pod's network namespace (a /run/netns path).
    #[arg(long)]
    netns: PathBuf,
    /// A volume mount, `SOURCE:TARGET[:ro]` (repeatable).
    #[arg(long = "mount", value_parser = MountSpec::parse)]
    mounts: Vec<MountSpec>,
    /// A directory for the container's private tmpfs (the upper layers of
    /// the overlays that hold missing mount points).
    #[arg(long)]
    scratch: PathBuf,
    /// Where to note directories made on the host as mount points (only
    /// under `/`, which cannot be overlaid).
    #[arg(long)]
    mountpoints_log: Option<PathBuf>,
    /// The pod's hostname (its name, as with the kubelet).
    #[arg(long)]
    hostname: Option<String>,
    /// The working directory.
    #[arg(long, default_value = "/")]
    cwd: PathBuf,
    /// The program and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let command: Result<Vec<CString>, _> = args
        .command
        .iter()
        .map(|a| CString::new(a.as_str()))
        .collect();
    let result = command
        .map_err(|e| EnterError::Exec(format!("argument with a NUL byte: {e}")))
        .and_then(|command| {
            enter(
                &args.netns,
                &args.mounts,
                &args.scratch,
                args.mountpoints_log.as_deref(),
                args.hostname.as_deref(),
                &args.cwd,
                &command,
            )
        });
    // `enter` only returns on failure: the exec replaced this process otherwise.
    match result {
        Ok(never) => match never {},
        Err(e) => {
            eprintln!("pod-enter: {e}");
            // 127, as a shell's "cannot run"; the node reports it as the exit code.
            ExitCode::from(127)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        super::Args::command().debug_assert();
    }
}
