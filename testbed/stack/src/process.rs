//! The stack's component processes: started detached in a session of their
//! own with output to their log, recorded in a pid file, stopped by that
//! record only (a reused pid is never signalled).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::Error;
use crate::layout::PidRecord;

/// Starts `program args...` through `setsid` (so it outlives this process
/// and a closed terminal), appending its output to `log`, and records it
/// in `pid_file`.
pub fn start_detached(
    program: &Path,
    args: &[String],
    env: &[(String, String)],
    log: &Path,
    pid_file: &Path,
) -> Result<PidRecord, Error> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| Error::io(log, e))?;
    let err = out.try_clone().map_err(|e| Error::io(log, e))?;
    // Not a group leader, so setsid execs in place and keeps the pid.
    let mut cmd = Command::new("setsid");
    cmd.arg(program).args(args);
    without_proxies(&mut cmd);
    let child = cmd
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|source| Error::Spawn {
            program: program.display().to_string(),
            source,
        })?;
    let pid = i32::try_from(child.id()).map_err(|_| Error::Command {
        what: format!("starting {}", program.display()),
        output: "pid out of range".into(),
    })?;
    let record = PidRecord::of(pid).ok_or_else(|| Error::Command {
        what: format!("starting {}", program.display()),
        output: format!("exited at once; see {}", log.display()),
    })?;
    record.write(pid_file)?;
    Ok(record)
}

/// Proxy settings a user may have: the stack's traffic stays on the
/// machine, so none of it may go through a proxy.
const PROXY_VARS: [&str; 6] = [
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
];

/// Removes the proxy settings from `cmd`'s environment.
pub fn without_proxies(cmd: &mut Command) -> &mut Command {
    for var in PROXY_VARS {
        cmd.env_remove(var);
    }
    cmd
}

/// The running process recorded in `pid_file`, if any.
pub fn running(pid_file: &Path) -> Option<PidRecord> {
    PidRecord::read(pid_file).filter(PidRecord::is_alive)
}

/// Stops the process recorded in `pid_file`: SIGTERM, up to `grace` to
/// exit, then SIGKILL; the pid file is removed. Returns the pid it stopped.
pub fn stop(pid_file: &Path, grace: Duration) -> Option<i32> {
    let record = running(pid_file);
    let _ = std::fs::remove_file(pid_file);
    let record = record?;
    let pid = Pid::from_raw(record.pid);
    let _ = kill(pid, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while record.is_alive() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    if record.is_alive() {
        let _ = kill(pid, Signal::SIGKILL);
        // Gone before the caller goes on (removing its namespace, say).
        let deadline = Instant::now() + Duration::from_secs(2);
        while record.is_alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Some(record.pid)
}

/// Runs a short command to its end: its stdout, or an error saying `what`
/// failed with the command's output.
pub fn run_checked(cmd: &mut Command, what: impl Into<String>) -> Result<String, Error> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let out = without_proxies(cmd)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| Error::Spawn { program, source })?;
    checked(out, what)
}

/// [`run_checked`] with `input` on the command's stdin (a secret that
/// must not be on its command line).
pub fn run_with_stdin(
    cmd: &mut Command,
    input: &str,
    what: impl Into<String>,
) -> Result<String, Error> {
    use std::io::Write;
    let program = cmd.get_program().to_string_lossy().into_owned();
    let spawn_error = |source| Error::Spawn {
        program: program.clone(),
        source,
    };
    let mut child = without_proxies(cmd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_error)?;
    if let Some(mut stdin) = child.stdin.take() {
        // Dropped at the end of the block: the command sees end of input.
        stdin.write_all(input.as_bytes()).map_err(spawn_error)?;
    }
    let out = child.wait_with_output().map_err(spawn_error)?;
    checked(out, what)
}

/// Stdout of a command that succeeded, or its output as the error.
fn checked(out: std::process::Output, what: impl Into<String>) -> Result<String, Error> {
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    Err(Error::Command {
        what: what.into(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    })
}

/// The last `n` lines of a log file.
pub fn tail(log: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
