//! The pod status the process node reports, built from its containers.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::container::{Ctr, Kind, State};

/// A pod's phase, as the node reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodPhase {
    /// Init containers or native sidecars are still starting, or an app
    /// container has not started yet.
    Pending,
    /// Initialized, and every app container has started at least once.
    Running,
    /// Ended with every app container exiting 0.
    Succeeded,
    /// Ended otherwise.
    Failed,
}

impl PodPhase {
    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PodPhase::Pending => "Pending",
            PodPhase::Running => "Running",
            PodPhase::Succeeded => "Succeeded",
            PodPhase::Failed => "Failed",
        }
    }

    /// The phase a pod object reports (Pending when it has none yet or one
    /// this node does not know).
    pub fn of(pod: &Pod) -> PodPhase {
        match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
            Some("Running") => PodPhase::Running,
            Some("Succeeded") => PodPhase::Succeeded,
            Some("Failed") => PodPhase::Failed,
            _ => PodPhase::Pending,
        }
    }

    /// How a pod ends: Succeeded when every app container succeeded.
    pub fn ended(succeeded: bool) -> PodPhase {
        if succeeded {
            PodPhase::Succeeded
        } else {
            PodPhase::Failed
        }
    }

    /// Whether the pod has ended for good.
    pub fn is_final(self) -> bool {
        matches!(self, PodPhase::Succeeded | PodPhase::Failed)
    }
}

fn state(s: &State) -> ContainerState {
    match s {
        State::Waiting { reason, message } => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.clone()),
                message: (!message.is_empty()).then(|| message.clone()),
            }),
            ..Default::default()
        },
        State::Running { started_at } => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(Time(*started_at)),
            }),
            ..Default::default()
        },
        State::Terminated {
            exit_code,
            signal,
            reason,
            message,
            started_at,
            finished_at,
        } => ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: *exit_code,
                signal: *signal,
                reason: Some(reason.clone()),
                message: message.clone(),
                started_at: Some(Time(*started_at)),
                finished_at: Some(Time(*finished_at)),
                ..Default::default()
            }),
            ..Default::default()
        },
    }
}

fn container_status(c: &Ctr, pid: Option<u32>) -> ContainerStatus {
    ContainerStatus {
        name: c.name().to_string(),
        image: c.spec.image.clone().unwrap_or_default(),
        image_id: format!(
            "process-node://{}",
            c.spec.image.clone().unwrap_or_default()
        ),
        container_id: pid.map(|p| format!("process://{p}")),
        ready: c.ready,
        started: Some(c.running() && c.started),
        restart_count: c.restarts,
        state: Some(state(&c.state)),
        last_state: c.last_state.as_ref().map(state),
        ..Default::default()
    }
}

fn condition(type_: &str, ok: bool, now: Timestamp) -> PodCondition {
    PodCondition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        last_transition_time: Some(Time(now)),
        ..Default::default()
    }
}

/// What the status is built from besides the containers: the worker's
/// view of the pod as a whole.
pub struct StatusInputs<'a> {
    /// The pod's phase.
    pub phase: PodPhase,
    /// Whether every init container has completed and every native sidecar
    /// has started (the Initialized condition).
    pub initialized: bool,
    /// The pod's IP, once its network is made.
    pub pod_ip: Option<String>,
    /// The node's address.
    pub host_ip: &'a str,
    /// When this node took the pod on; also every condition's transition time.
    pub start_time: Timestamp,
    /// Why the pod failed, if it did.
    pub message: Option<String>,
}

/// Builds the status; condition times are `start_time` so that an unchanged
/// pod yields an identical status (and no write).
pub fn build(ctrs: &[Ctr], pids: &[Option<u32>], inputs: StatusInputs<'_>) -> PodStatus {
    let apps: Vec<&Ctr> = ctrs.iter().filter(|c| c.kind == Kind::App).collect();
    let all_ready = !apps.is_empty() && apps.iter().all(|c| c.ready);
    let t = inputs.start_time;
    let statuses = |want: fn(Kind) -> bool| -> Vec<ContainerStatus> {
        ctrs.iter()
            .zip(pids)
            .filter(|(c, _)| want(c.kind))
            .map(|(c, pid)| container_status(c, *pid))
            .collect()
    };
    PodStatus {
        phase: Some(inputs.phase.as_str().to_string()),
        message: inputs.message,
        conditions: Some(vec![
            condition("PodScheduled", true, t),
            condition("Initialized", inputs.initialized, t),
            condition("ContainersReady", all_ready, t),
            condition("Ready", all_ready, t),
        ]),
        host_ip: Some(inputs.host_ip.to_string()),
        host_ips: Some(vec![HostIP {
            ip: inputs.host_ip.to_string(),
        }]),
        pod_ips: inputs.pod_ip.clone().map(|ip| vec![PodIP { ip }]),
        pod_ip: inputs.pod_ip,
        start_time: Some(Time(t)),
        init_container_statuses: Some(statuses(|k| k != Kind::App)),
        container_statuses: Some(statuses(|k| k == Kind::App)),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodStatus;

    fn pod_in(phase: Option<&str>) -> Pod {
        Pod {
            status: Some(PodStatus {
                phase: phase.map(str::to_string),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_phase_reads_back_from_its_api_spelling() {
        for phase in [
            PodPhase::Pending,
            PodPhase::Running,
            PodPhase::Succeeded,
            PodPhase::Failed,
        ] {
            assert_eq!(PodPhase::of(&pod_in(Some(phase.as_str()))), phase);
        }
    }

    #[test]
    fn a_missing_or_unknown_phase_reads_as_pending() {
        assert_eq!(PodPhase::of(&Pod::default()), PodPhase::Pending);
        assert_eq!(PodPhase::of(&pod_in(None)), PodPhase::Pending);
        assert_eq!(PodPhase::of(&pod_in(Some("Unknown"))), PodPhase::Pending);
    }

    #[test]
    fn only_succeeded_and_failed_are_final() {
        assert_eq!(PodPhase::ended(true), PodPhase::Succeeded);
        assert_eq!(PodPhase::ended(false), PodPhase::Failed);
        assert!(PodPhase::ended(true).is_final() && PodPhase::ended(false).is_final());
        assert!(!PodPhase::Pending.is_final() && !PodPhase::Running.is_final());
    }
}
