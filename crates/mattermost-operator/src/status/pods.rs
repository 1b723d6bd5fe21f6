//! Why new pods do not run: creation refused (Pod Security, quota, admission webhooks: the
//! `ReplicaFailure` condition), image pull errors, crash loops, unschedulable pods. Pure: reads
//! the cached Deployment, ReplicaSets and pods.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;

use crate::redact;

/// Kubernetes reasons reported as the `Degraded` reason (anything else waiting is transient).
pub const REASONS: [&str; 10] = [
    "FailedCreate",
    "Unschedulable",
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// A problem of the new pods: a reason from [`REASONS`] and the Kubernetes message, scrubbed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodProblem {
    /// Kubernetes reason.
    pub reason: &'static str,
    /// Kubernetes message, one line, scrubbed and bounded.
    pub message: String,
}

fn known(reason: &str) -> Option<&'static str> {
    REASONS.iter().copied().find(|r| *r == reason)
}

fn replica_failure(
    conditions: Option<&Vec<k8s_openapi::api::apps::v1::ReplicaSetCondition>>,
) -> Option<PodProblem> {
    let c = conditions?
        .iter()
        .find(|c| c.type_ == "ReplicaFailure" && c.status == "True")?;
    Some(PodProblem {
        reason: c.reason.as_deref().and_then(known).unwrap_or("FailedCreate"),
        message: redact::message(c.message.as_deref().unwrap_or("pods cannot be created")),
    })
}

/// Restarts after which a container that is up again but not ready still counts as crash
/// looping: between two back-offs the kubelet reports it running, and the condition must not
/// flip with every attempt.
const CRASH_LOOP_RESTARTS: i32 = 3;

/// A container running again (not ready) after repeated failed exits.
pub(crate) fn restarting(cs: &k8s_openapi::api::core::v1::ContainerStatus) -> Option<PodProblem> {
    let last = cs.last_state.as_ref()?.terminated.as_ref()?;
    (!cs.ready && cs.restart_count >= CRASH_LOOP_RESTARTS && last.exit_code != 0).then(|| PodProblem {
        reason: "CrashLoopBackOff",
        message: redact::message(&format!(
            "container {}: restarted {} times, last exit code {} ({})",
            cs.name,
            cs.restart_count,
            last.exit_code,
            last.reason.as_deref().unwrap_or("Error")
        )),
    })
}

/// The problem one pod shows, if any.
pub fn pod_problem(pod: &Pod) -> Option<PodProblem> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let status = pod.status.as_ref()?;
    let statuses = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten());
    for cs in statuses {
        let Some(waiting) = cs.state.as_ref().and_then(|s| s.waiting.as_ref()) else {
            if let Some(problem) = restarting(cs) {
                return Some(problem);
            }
            continue;
        };
        if let Some(reason) = waiting.reason.as_deref().and_then(known) {
            let msg = waiting.message.as_deref().unwrap_or(reason);
            return Some(PodProblem {
                reason,
                message: redact::message(&format!("container {}: {msg}", cs.name)),
            });
        }
    }
    let unschedulable = status.conditions.iter().flatten().find(|c| {
        c.type_ == "PodScheduled" && c.status == "False" && c.reason.as_deref() == Some("Unschedulable")
    })?;
    Some(PodProblem {
        reason: "Unschedulable",
        message: redact::message(unschedulable.message.as_deref().unwrap_or("no node fits the pod")),
    })
}

/// The first problem of `dep`'s new pods: creation refused, else the first pod (by name) of the
/// current ReplicaSet that shows a problem.
pub fn new_pods_problem(dep: &Deployment, current: Option<&ReplicaSet>, pods: &[Pod]) -> Option<PodProblem> {
    let dep_failure = dep.status.as_ref().and_then(|s| {
        let c = s
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "ReplicaFailure" && c.status == "True")?;
        Some(PodProblem {
            reason: c.reason.as_deref().and_then(known).unwrap_or("FailedCreate"),
            message: redact::message(c.message.as_deref().unwrap_or("pods cannot be created")),
        })
    });
    if dep_failure.is_some() {
        return dep_failure;
    }
    let current = current?;
    if let Some(p) = replica_failure(current.status.as_ref().and_then(|s| s.conditions.as_ref())) {
        return Some(p);
    }
    let uid = current.metadata.uid.as_deref()?;
    let mut own: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.metadata.owner_references.iter().flatten().any(|o| o.uid == uid))
        .collect();
    own.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    own.into_iter().find_map(|p| {
        pod_problem(p).map(|mut problem| {
            let name = p.metadata.name.as_deref().unwrap_or_default();
            problem.message = redact::truncate(
                &format!("pod {name}: {}", problem.message),
                redact::MAX_STATUS_MESSAGE,
            );
            problem
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentStatus, ReplicaSetStatus};
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateWaiting, ContainerStatus, PodCondition, PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

    fn rs() -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta {
                uid: Some("rs".into()),
                ..Default::default()
            },
            status: Some(ReplicaSetStatus::default()),
            ..Default::default()
        }
    }

    fn pod(name: &str, status: PodStatus) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                owner_references: Some(vec![OwnerReference {
                    uid: "rs".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            },
            status: Some(status),
            ..Default::default()
        }
    }

    fn waiting(reason: &str, message: &str) -> PodStatus {
        PodStatus {
            container_statuses: Some(vec![ContainerStatus {
                name: "mattermost".into(),
                state: Some(ContainerState {
                    waiting: Some(ContainerStateWaiting {
                        reason: Some(reason.into()),
                        message: Some(message.into()),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    #[test]
    fn refused_creation_wins_with_the_admission_message() {
        let dep = Deployment {
            status: Some(DeploymentStatus {
                conditions: Some(vec![DeploymentCondition {
                    type_: "ReplicaFailure".into(),
                    status: "True".into(),
                    reason: Some("FailedCreate".into()),
                    message: Some(
                        "pods \"x\" is forbidden: violates PodSecurity \"restricted:latest\": privileged"
                            .into(),
                    ),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let p = new_pods_problem(&dep, None, &[]).unwrap();
        assert_eq!(p.reason, "FailedCreate");
        assert!(p.message.contains("violates PodSecurity"));
    }

    #[test]
    fn pull_errors_crash_loops_and_unschedulable_pods_are_reported() {
        let dep = Deployment::default();
        let current = rs();
        let pods = [
            pod("b", waiting("ContainerCreating", "")),
            pod(
                "c",
                waiting("CrashLoopBackOff", "back-off 10s restarting failed container"),
            ),
            pod(
                "a",
                waiting("ImagePullBackOff", "Back-off pulling image \"mm:nope\""),
            ),
        ];
        let p = new_pods_problem(&dep, Some(&current), &pods).unwrap();
        assert_eq!(p.reason, "ImagePullBackOff");
        assert!(
            p.message
                .starts_with("pod a: container mattermost: Back-off pulling image")
        );
        let unsched = pod(
            "d",
            PodStatus {
                conditions: Some(vec![PodCondition {
                    type_: "PodScheduled".into(),
                    status: "False".into(),
                    reason: Some("Unschedulable".into()),
                    message: Some("0/3 nodes are available: 3 Insufficient cpu.".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            },
        );
        let p = new_pods_problem(&dep, Some(&current), &[unsched]).unwrap();
        assert_eq!(p.reason, "Unschedulable");
        assert!(p.message.contains("Insufficient cpu"));
        assert!(
            new_pods_problem(
                &dep,
                Some(&current),
                &[pod("e", waiting("ContainerCreating", ""))]
            )
            .is_none()
        );
        let mut other = pod("f", waiting("CrashLoopBackOff", "x"));
        other.metadata.owner_references = None;
        assert!(
            new_pods_problem(&dep, Some(&current), &[other]).is_none(),
            "old pods do not count"
        );
    }

    #[test]
    fn a_crash_loop_stays_reported_while_the_container_is_up_between_back_offs() {
        use k8s_openapi::api::core::v1::{
            ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStatus,
        };
        let up_again = |restarts: i32, exit_code: i32, ready: bool| {
            pod_problem(&pod(
                "a",
                PodStatus {
                    container_statuses: Some(vec![ContainerStatus {
                        name: "mattermost".into(),
                        ready,
                        restart_count: restarts,
                        state: Some(ContainerState {
                            running: Some(ContainerStateRunning::default()),
                            ..Default::default()
                        }),
                        last_state: Some(ContainerState {
                            terminated: Some(ContainerStateTerminated {
                                exit_code,
                                reason: Some("Error".into()),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }]),
                    ..Default::default()
                },
            ))
        };
        let p = up_again(4, 1, false).unwrap();
        assert_eq!(p.reason, "CrashLoopBackOff");
        assert_eq!(
            p.message,
            "container mattermost: restarted 4 times, last exit code 1 (Error)"
        );
        assert!(up_again(1, 1, false).is_none(), "one restart is not a loop yet");
        assert!(up_again(4, 1, true).is_none(), "ready again");
        assert!(up_again(4, 0, false).is_none(), "exited cleanly");
    }

    #[test]
    fn pod_text_is_scrubbed() {
        let p = pod_problem(&pod(
            "a",
            waiting("CreateContainerConfigError", "bad env postgres://u:hunter2@db/x"),
        ))
        .unwrap();
        assert!(!p.message.contains("hunter2"));
    }
}
