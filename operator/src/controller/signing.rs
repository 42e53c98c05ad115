//! Whether a monitor's beats must be signed, and under what: with signing
//! on, the consumer checks every beat against the key of the pod the beat
//! names, derived from the operator's masters (`crate::keys`). Nothing is
//! written in the monitor's namespace: there is no per-monitor key.

use heartbeat_crds::conditions::reason;
use heartbeat_crds::monitor::HeartbeatMonitor;

use super::sight::KeySight;
use super::{Context, Tracked};

/// Points the monitor's consumer at the masters when signing is on (clears
/// it when off). Without a master loaded yet no beat can be believed, and
/// judging without beats would make everyone Stale: that is a reason not
/// to read.
pub fn load(ctx: &Context, monitor: &HeartbeatMonitor, tracked: &Tracked) -> KeySight<()> {
    let enabled = monitor.spec.signing.as_ref().is_some_and(|s| s.enabled);
    if !enabled {
        set(tracked, None);
        return KeySight::Seen(());
    }
    if ctx.master.get().is_none() {
        return KeySight::Unseen {
            reason: reason::SIGNING_KEY_UNAVAILABLE,
            message: format!(
                "signing is on but the operator has not loaded its signing master Secret {} yet (its log says why); beats are not judged until it has",
                ctx.master_secret
            ),
        };
    }
    set(tracked, Some(ctx.master.clone()));
    KeySight::Seen(())
}

fn set(tracked: &Tracked, master: Option<crate::keys::Master>) {
    match tracked.signing.write() {
        Ok(mut g) => *g = master,
        Err(p) => *p.into_inner() = master,
    }
}
