//! Per-pod signing keys: the master keys (one Secret in the operator's own
//! namespace, created and rotated by `master`) and the endpoint that gives
//! a sidecar its pod's key once its ServiceAccount token proves the pod
//! (`endpoint`). The consumer derives the same key from the uid a beat
//! names (`heartbeat_crds::signing::KeyRing`). `serve` starts both in a
//! replica: every replica keeps the masters and answers.

pub mod endpoint;
pub mod master;

use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::post;
use heartbeat_crds::signing::KeyRing;

use crate::args::KeyArgs;
use crate::metrics::Metrics;
use crate::webhook::certs::Serving;
use crate::webhook::listener::Running;

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

/// Starts keeping `master` (its Secret in `namespace`) and the pod key
/// endpoint on `--keys-addr`, served with the webhook's certificate.
pub fn serve(
    client: &kube::Client,
    namespace: &str,
    args: &KeyArgs,
    serving: &Serving,
    master: &Master,
    metrics: Arc<Metrics>,
) -> Running {
    tokio::spawn(master::upkeep(
        client.clone(),
        namespace.into(),
        args.signing_secret.clone(),
        master.clone(),
        metrics.clone(),
    ));
    let app = Router::new()
        .route(
            heartbeat_crds::signing::KEY_PATH,
            post(endpoint::pod_key_handler),
        )
        .layer(DefaultBodyLimit::max(endpoint::MAX_BODY_BYTES))
        .with_state(Arc::new(endpoint::KeyState {
            client: client.clone(),
            master: master.clone(),
            metrics,
            refresh_seconds: args.signing_key_refresh_seconds,
        }));
    Running::start(
        "pod keys",
        args.keys_addr,
        serving.tls.clone(),
        heartbeat_listener_limits::timeout::bounded(app, endpoint::REQUEST_TIMEOUT),
    )
}
