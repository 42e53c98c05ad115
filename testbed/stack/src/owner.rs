//! A stack owned by one process (`up --stop-when-exits PID`): a detached
//! watcher stops the stack once that process has gone, however it ends
//! (pass, panic, abort). A stack that is already up is handed on to the
//! next owner instead of being restarted, so test binaries run one after
//! another share one stack.

use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::Error;
use crate::layout::{PidRecord, StackLayout};

/// The watcher's name in pid files and logs.
pub const WATCHER: &str = "watcher";

/// Whether the recorded owner still runs (the very process: a reused pid
/// does not count).
pub fn owner_alive(layout: &StackLayout) -> bool {
    PidRecord::read(&layout.owner_file()).is_some_and(|r| r.is_alive())
}

/// Whether this stack's watcher runs.
pub fn watcher_alive(layout: &StackLayout) -> bool {
    crate::process::running(&layout.pid_file(WATCHER)).is_some()
}

/// Makes `pid` the owner the watcher follows.
pub fn hand_over(layout: &StackLayout, pid: i32) -> Result<(), Error> {
    let record = PidRecord::of(pid)
        .ok_or_else(|| Error::Usage(format!("--stop-when-exits {pid}: no such process")))?;
    record.write(&layout.owner_file())
}

/// Records `owner` and starts a watcher (this binary, `watch-owner`).
pub fn watch(layout: &StackLayout, owner: i32) -> Result<(), Error> {
    hand_over(layout, owner)?;
    let exe = std::env::current_exe()
        .map_err(|e| Error::io(std::path::Path::new("/proc/self/exe"), e))?;
    crate::process::start_detached(
        &exe,
        // The directory in the command line lets tests find every process
        // of a stack, the watcher included.
        &[
            "--stack-dir".to_string(),
            layout.root().display().to_string(),
            "watch-owner".to_string(),
        ],
        &[],
        &layout.log_file(WATCHER),
        &layout.pid_file(WATCHER),
    )?;
    Ok(())
}

/// The watcher's loop: returns once the owner has been gone for two checks
/// in a row (it may be handed on between them).
pub fn wait_until_owner_gone(layout: &StackLayout) {
    let mut gone = 0;
    while gone < 2 {
        if owner_alive(layout) {
            gone = 0;
        } else {
            gone += 1;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Holds the stack's lock while it lives.
pub struct StackLock {
    _flock: nix::fcntl::Flock<std::fs::File>,
}

/// Waits for the stack's lock (see `StackLayout::lock_file`).
pub fn lock(layout: &StackLayout) -> Result<StackLock, Error> {
    let path = layout.lock_file();
    std::fs::create_dir_all(layout.root()).map_err(|e| Error::io(layout.root(), e))?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map(|flock| StackLock { _flock: flock })
        .map_err(|(_, errno)| Error::io(&path, std::io::Error::from(errno)))
}

/// Stops the watcher, unless the caller is the watcher itself.
pub fn stop_watcher(layout: &StackLayout) {
    let file = layout.pid_file(WATCHER);
    if let Some(record) = PidRecord::read(&file).filter(PidRecord::is_alive) {
        let me = i32::try_from(std::process::id()).unwrap_or_default();
        if record.pid != me {
            let _ = kill(Pid::from_raw(record.pid), Signal::SIGTERM);
            // `down` leaves nothing running: a loaded machine takes a
            // moment to run the watcher's exit, so wait for it (bounded).
            let by = std::time::Instant::now() + Duration::from_secs(5);
            while record.is_alive() && std::time::Instant::now() < by {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    let _ = std::fs::remove_file(file);
    let _ = std::fs::remove_file(layout.owner_file());
}
