//! Per-pod signing keys: the master keys (one Secret in the operator's own
//! namespace, created and rotated by `master`) and the endpoint that gives
//! a sidecar its pod's key once its ServiceAccount token proves the pod
//! (`endpoint`). The consumer derives the same key from the uid a beat
//! names (`heartbeat_crds::signing::KeyRing`).

pub mod endpoint;
pub mod master;

use std::sync::{Arc, RwLock};

use heartbeat_crds::signing::KeyRing;

/// The masters as last read, shared by the endpoint, the controller and the
/// consumer: a rotation reaches all of them at once.
#[derive(Clone, Default, Debug)]
pub struct Master(Arc<RwLock<Option<Loaded>>>);

/// The masters and the generation of the current one.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub ring: KeyRing,
    pub generation: u64,
}

impl Master {
    /// The masters, once read.
    pub fn get(&self) -> Option<Loaded> {
        match self.0.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn set(&self, loaded: Loaded) {
        match self.0.write() {
            Ok(mut g) => *g = Some(loaded),
            Err(p) => *p.into_inner() = Some(loaded),
        }
    }

    /// A master holding `loaded` (tests).
    pub fn with(loaded: Loaded) -> Master {
        let m = Master::default();
        m.set(loaded);
        m
    }
}
