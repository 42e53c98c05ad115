//! The heartbeat.dev API contract shared by the operator, the webhook and the
//! sidecar: the `HeartbeatMonitor` custom resource, the beat wire format,
//! program-id templates and the sidecar's env interface. No I/O lives here.
#![forbid(unsafe_code)]

pub mod beat;
pub mod conditions;
pub mod error;
pub mod monitor;
pub mod program_id;
pub mod sidecar_contract;
pub mod signing;

pub use beat::{
    Beat, BeatApp, BeatPod, BeatSidecar, DroppedField, LenientBeat, Phase, ReadBeat, Text,
};
pub use error::Error;
pub use monitor::{HeartbeatMonitor, HeartbeatMonitorSpec, HeartbeatMonitorStatus};
pub use sidecar_contract::SidecarAppHealth;
