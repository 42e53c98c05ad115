//! One container as a local process: its state machine (waiting, running,
//! terminated), restarts with back-off, its liveness and readiness probes,
//! and signals to its process group.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Container;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use heartbeat_testbed::layout::{ContainerDir, PidRecord, PodDir};

use crate::enter::Entry;
use crate::launch::Launch;
use crate::probe::{ProbeKind, ProbeTracker, Verdict};

/// Where a container stands in the pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular init container: runs to completion before the next.
    Init,
    /// A native sidecar (init container with restartPolicy Always).
    Sidecar,
    /// An app container.
    App,
}

/// The container's observable state, as in ContainerState.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Not running: not started yet, in back-off, or a start failed.
    Waiting {
        /// ContainerCreating, CrashLoopBackOff, or why the start failed.
        reason: String,
        /// Details; empty when there are none.
        message: String,
    },
    /// The process runs.
    Running {
        /// When the process was started.
        started_at: Timestamp,
    },
    /// The process has exited (and is not waiting to restart).
    Terminated {
        /// The exit code; 128 + the signal number when a signal ended it.
        exit_code: i32,
        /// The signal that ended the process, if one did.
        signal: Option<i32>,
        /// Completed (exit 0) or Error.
        reason: String,
        /// Why the node stopped it, when it did (a failed liveness probe);
        /// none when the process ended on its own.
        message: Option<String>,
        /// When the process was started.
        started_at: Timestamp,
        /// When the exit was noticed.
        finished_at: Timestamp,
    },
}

/// Restart back-off: 1 s doubling to 20 s (the kubelet's is 10 s to 5 min;
/// shortened so tests see restarts quickly).
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(20);
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(60);

/// A running process: the leader of its own process group.
pub struct Running {
    child: tokio::process::Child,
    pid: i32,
    started_at: Timestamp,
    /// When it was started, on the monotonic clock (probe delays count from here).
    pub since: Instant,
}

/// One container of a pod and its process, if it runs.
pub struct Ctr {
    /// The container as the pod spec has it.
    pub spec: Container,
    /// Init container, native sidecar, or app container.
    pub kind: Kind,
    /// The state the status reports.
    pub state: State,
    /// The state before the last restart (the previous exit).
    pub last_state: Option<State>,
    /// How often it was started again (restartCount).
    pub restarts: i32,
    /// The process, while it runs.
    pub proc: Option<Running>,
    /// Whether it was ever started.
    pub ever_started: bool,
    backoff: Duration,
    /// No start before this (back-off after an exit or a failed start).
    pub restart_at: Option<Instant>,
    /// SIGKILL after this, once SIGTERM was sent.
    pub kill_at: Option<Instant>,
    /// Whether it is ready (readiness probe, or simply running without one).
    pub ready: bool,
    startup: Option<ProbeTracker>,
    /// Whether the startup probe has passed in this run (true without one):
    /// until then liveness and readiness are not run, as with the kubelet.
    pub started: bool,
    liveness: Option<ProbeTracker>,
    readiness: Option<ProbeTracker>,
    dir: ContainerDir,
    /// How its process was entered, for exec probes.
    entry: Option<Entry>,
    /// Why the node is stopping the current run, for its terminated state.
    stopped_because: Option<String>,
}

/// What a probe run has to tell the pod's Events, as the kubelet's do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A probe run failed (reason `Unhealthy`).
    Unhealthy {
        container: String,
        probe: ProbeKind,
        why: String,
    },
    /// A liveness or startup probe failed its threshold: the container is
    /// stopped for a restart (reason `Killing`).
    Killing {
        container: String,
        probe: ProbeKind,
        why: String,
    },
}

impl Ctr {
    /// A container that has not started yet, its files under `pod_dir`.
    pub fn new(spec: Container, kind: Kind, pod_dir: &PodDir) -> Ctr {
        let dir = pod_dir.container(&spec.name);
        let startup = spec.startup_probe.clone().map(ProbeTracker::new);
        let liveness = spec.liveness_probe.clone().map(ProbeTracker::new);
        let readiness = spec.readiness_probe.clone().map(ProbeTracker::new);
        Ctr {
            spec,
            kind,
            state: State::Waiting {
                reason: "ContainerCreating".into(),
                message: String::new(),
            },
            last_state: None,
            restarts: 0,
            proc: None,
            ever_started: false,
            backoff: BACKOFF_START,
            restart_at: None,
            kill_at: None,
            ready: false,
            started: false,
            startup,
            liveness,
            readiness,
            dir,
            entry: None,
            stopped_because: None,
        }
    }

    /// The container's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().and_then(|p| u32::try_from(p.pid).ok())
    }

    /// Whether its process runs (until its exit is noticed by `reap`).
    pub fn running(&self) -> bool {
        self.proc.is_some()
    }

    /// The exit code, while it is terminated (not while it waits to restart).
    pub fn exit_code(&self) -> Option<i32> {
        match &self.state {
            State::Terminated { exit_code, .. } => Some(*exit_code),
            _ => None,
        }
    }

    /// The log file of the current run (`<restarts>.log`).
    pub fn log_path(&self) -> PathBuf {
        self.dir
            .log(u32::try_from(self.restarts).unwrap_or_default())
    }

    /// Records a start that failed: waiting with `reason`, retried after the back-off.
    pub fn fail_to_start(&mut self, reason: &str, message: String) {
        self.state = State::Waiting {
            reason: reason.into(),
            message,
        };
        self.restart_at = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    /// Whether a start is due (first start, or the back-off has passed).
    pub fn start_due(&self) -> bool {
        self.proc.is_none() && self.restart_at.is_none_or(|t| Instant::now() >= t)
    }

    /// Spawns the process inside its pod (`entry`) in its own process
    /// group, logging to `<restarts>.log`.
    pub fn start(&mut self, launch: &Launch, entry: Entry) -> Result<(), String> {
        // A restart counts only once the process is really started again.
        let run = if self.ever_started {
            self.restarts + 1
        } else {
            0
        };
        let dir = self.dir.path();
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let log = std::fs::File::create(self.dir.log(u32::try_from(run).unwrap_or_default()))
            .map_err(|e| e.to_string())?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        // pod-enter reports a workingDir that does not exist, as a runtime does.
        let cwd = launch.working_dir.as_deref().unwrap_or(Path::new("/"));
        let mut cmd = entry.command(cwd, &launch.program, &launch.args);
        cmd.stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(0)
            .kill_on_drop(false);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", launch.program.display()))?;
        let Some(pid) = child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .filter(|p| *p > 1)
        else {
            return Err("the process exited before it could be tracked".into());
        };
        // Lets `e2e/stack down` kill the group if the node dies first.
        if let Some(record) = PidRecord::of(pid) {
            let _ = record.write(&self.dir.pid_file());
        }
        if self.ever_started {
            self.restarts = run;
            if matches!(self.state, State::Terminated { .. }) {
                self.last_state = Some(self.state.clone());
            }
        }
        let started_at = Timestamp::now();
        self.proc = Some(Running {
            child,
            pid,
            started_at,
            since: Instant::now(),
        });
        self.ever_started = true;
        self.entry = Some(entry);
        self.restart_at = None;
        self.kill_at = None;
        self.stopped_because = None;
        self.state = State::Running { started_at };
        self.ready = false;
        self.started = self.startup.is_none();
        if let Some(startup) = &mut self.startup {
            startup.reset();
        }
        if let Some(liveness) = &mut self.liveness {
            liveness.reset();
        }
        if let Some(readiness) = &mut self.readiness {
            readiness.reset();
        }
        Ok(())
    }

    /// Runs the probes that are due at `now`, while the process runs and is
    /// not being stopped. Readiness sets `ready` (a container without a
    /// readiness probe is ready while it runs); a failed liveness probe stops
    /// the process within `grace`, for its restart policy to start it again.
    /// Returns what the pod's Events are to say: every failed run, and a
    /// stop.
    pub async fn run_due_probes(&mut self, now: Instant, grace: Duration) -> Vec<Notice> {
        let mut notices = Vec::new();
        let (Some(since), Some(entry)) = (self.proc.as_ref().map(|p| p.since), self.entry.clone())
        else {
            return notices;
        };
        if self.kill_at.is_some() {
            return notices;
        }
        let name = self.name().to_string();
        let unhealthy = |probe, why: &String| Notice::Unhealthy {
            container: name.clone(),
            probe,
            why: why.clone(),
        };
        // Until the startup probe passes, it is the only probe that runs
        // (`started` is set at start when there is none).
        if !self.started {
            if let Some(startup) = &mut self.startup
                && let Some(run) = startup.check(&self.spec, &entry, since, now).await
            {
                if let Some(why) = &run.failure {
                    notices.push(unhealthy(ProbeKind::Startup, why));
                }
                match run.verdict {
                    Some(Verdict::Passing) => self.started = true,
                    Some(Verdict::Failing(why)) => {
                        notices.push(self.kill_for(ProbeKind::Startup, &why, grace));
                    }
                    None => {}
                }
            }
            if !self.started {
                return notices;
            }
        }
        if let Some(liveness) = &mut self.liveness
            && let Some(run) = liveness.check(&self.spec, &entry, since, now).await
        {
            if let Some(why) = &run.failure {
                notices.push(unhealthy(ProbeKind::Liveness, why));
            }
            if let Some(Verdict::Failing(why)) = run.verdict {
                notices.push(self.kill_for(ProbeKind::Liveness, &why, grace));
                return notices;
            }
        }
        let Some(readiness) = &mut self.readiness else {
            self.ready = true;
            return notices;
        };
        if let Some(run) = readiness.check(&self.spec, &entry, since, now).await {
            if let Some(why) = &run.failure {
                notices.push(unhealthy(ProbeKind::Readiness, why));
            }
            if let Some(verdict) = run.verdict {
                self.ready = verdict == Verdict::Passing;
            }
        }
        notices
    }

    /// Stops the process because its `probe` failed its threshold (the
    /// restart policy starts it again), remembering why for its terminated
    /// state; the `Killing` notice the kubelet would publish.
    fn kill_for(&mut self, probe: ProbeKind, why: &str, grace: Duration) -> Notice {
        let kind = probe.as_str().to_lowercase();
        tracing::info!(container = %self.name(), %why, "{kind} probe failed; restarting");
        self.stopped_because = Some(format!("killed by the node: {kind} probe failed: {why}"));
        self.terminate(grace);
        Notice::Killing {
            container: self.name().to_string(),
            probe,
            why: why.to_string(),
        }
    }

    /// Notices an exit; returns true when the process just ended.
    pub fn reap(&mut self) -> bool {
        let Some(run) = self.proc.as_mut() else {
            return false;
        };
        let status = match run.child.try_wait() {
            Ok(Some(status)) => status,
            Ok(None) => return false,
            Err(_) => return false,
        };
        use std::os::unix::process::ExitStatusExt;
        let signal = status.signal();
        let exit_code = status.code().unwrap_or_else(|| 128 + signal.unwrap_or(0));
        let started_at = run.started_at;
        // A run that lasted a while was healthy: the next crash starts the back-off afresh.
        if run.since.elapsed() >= BACKOFF_RESET_AFTER {
            self.backoff = BACKOFF_START;
        }
        // The group may still hold children of the container's process.
        let _ = killpg(Pid::from_raw(run.pid), Signal::SIGKILL);
        self.proc = None;
        let _ = std::fs::remove_file(self.dir.pid_file());
        self.ready = false;
        self.kill_at = None;
        self.state = State::Terminated {
            exit_code,
            signal,
            reason: if exit_code == 0 { "Completed" } else { "Error" }.into(),
            message: self.stopped_because.take(),
            started_at,
            finished_at: Timestamp::now(),
        };
        true
    }

    /// Schedules the next start after the back-off.
    pub fn schedule_restart(&mut self) {
        if self.restart_at.is_none() {
            self.restart_at = Some(Instant::now() + self.backoff);
            // As the kubelet shows it: waiting in back-off, the exit as last state.
            self.last_state = Some(self.state.clone());
            self.state = State::Waiting {
                reason: "CrashLoopBackOff".into(),
                message: format!(
                    "back-off {}s restarting container {}",
                    self.backoff.as_secs(),
                    self.spec.name
                ),
            };
            self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// SIGTERM to the group, SIGKILL after `grace` (see `enforce_kill`).
    pub fn terminate(&mut self, grace: Duration) {
        if let Some(run) = &self.proc
            && self.kill_at.is_none()
        {
            let _ = killpg(Pid::from_raw(run.pid), Signal::SIGTERM);
            self.kill_at = Some(Instant::now() + grace);
        }
    }

    /// SIGKILL once the grace period of a terminate has passed.
    pub fn enforce_kill(&mut self) {
        if let (Some(run), Some(at)) = (&self.proc, self.kill_at)
            && Instant::now() >= at
        {
            let _ = killpg(Pid::from_raw(run.pid), Signal::SIGKILL);
        }
    }

    /// SIGKILL now (node shutdown, pod gone).
    pub fn kill_now(&mut self) {
        if let Some(run) = &self.proc {
            let _ = killpg(Pid::from_raw(run.pid), Signal::SIGKILL);
        }
    }
}

impl Drop for Ctr {
    /// However a worker ends (panic, node shutdown timing out), its processes go with it.
    fn drop(&mut self) {
        self.kill_now();
    }
}
