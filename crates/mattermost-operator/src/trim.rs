//! What the child caches keep of objects that are only read, never compared before an apply:
//! ReplicaSets (rollout progress and the serving image), Pods (why they do not run) and Jobs
//! (their conditions). Dropping pod templates, env and volumes keeps the operator's memory flat
//! while a fleet upgrade doubles the ReplicaSets. Every cache (the `Mattermost`s included) also
//! drops the copy of the object that `kubectl apply` keeps in an annotation.

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStatus, Pod, PodSpec, PodStatus, PodTemplateSpec,
};
use kube::Resource;

/// What a child cache drops of an object of its kind before keeping it (see [`crate::cache`]);
/// kinds compared field by field before an apply keep everything.
pub trait Trim {
    /// Drops what nothing reads.
    fn trim(&mut self) {}
}

impl Trim for k8s_openapi::api::apps::v1::Deployment {}
impl Trim for mattermost_api::v1beta1::Mattermost {}
impl Trim for k8s_openapi::api::core::v1::Service {}
impl Trim for k8s_openapi::api::core::v1::ServiceAccount {}
impl Trim for k8s_openapi::api::core::v1::PersistentVolumeClaim {}
impl Trim for k8s_openapi::api::networking::v1::Ingress {}
impl Trim for k8s_openapi::api::policy::v1::PodDisruptionBudget {}

impl Trim for ReplicaSet {
    fn trim(&mut self) {
        replica_set(self);
    }
}

impl Trim for Pod {
    fn trim(&mut self) {
        pod(self);
    }
}

impl Trim for Job {
    fn trim(&mut self) {
        job(self);
    }
}

/// The annotation `kubectl apply` (client-side) writes: the whole object as last applied.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops the `kubectl apply` copy of the object (nothing reads it; it doubles a user's spec).
pub fn last_applied<K: Resource>(obj: &mut K) {
    if let Some(a) = obj.meta_mut().annotations.as_mut() {
        a.remove(LAST_APPLIED);
    }
}

/// Keeps only each container's name and image.
fn containers(spec: &mut PodSpec) {
    let slim = |c: &Container| Container {
        name: c.name.clone(),
        image: c.image.clone(),
        ..Default::default()
    };
    *spec = PodSpec {
        containers: spec.containers.iter().map(slim).collect(),
        init_containers: spec
            .init_containers
            .as_ref()
            .map(|cs| cs.iter().map(slim).collect()),
        node_name: spec.node_name.take(),
        ..Default::default()
    };
}

fn template(t: &mut PodTemplateSpec) {
    t.metadata = None;
    if let Some(spec) = t.spec.as_mut() {
        containers(spec);
    }
}

/// A ReplicaSet: metadata, status and its containers' images (the serving image; init
/// containers and the selector are not read). A ReplicaSet scaled down to no pod is history kept by
/// `revisionHistoryLimit`: it serves no image, so it keeps no template (each upgrade adds one per
/// installation; scaled up again, it arrives whole in the next watch event).
pub fn replica_set(rs: &mut ReplicaSet) {
    let scaled_down = rs.spec.as_ref().and_then(|s| s.replicas) == Some(0)
        && rs.status.as_ref().map(|s| s.replicas) == Some(0);
    if let Some(spec) = rs.spec.as_mut() {
        spec.selector = Default::default();
        if scaled_down {
            spec.template = None;
        }
        if let Some(t) = spec.template.as_mut() {
            template(t);
            if let Some(pod) = t.spec.as_mut() {
                pod.init_containers = None;
            }
        }
    }
}

/// A container's status as the problem checks read it: its name and a waiting or terminated
/// state; a running container only while it keeps crashing between back-offs (its readiness,
/// restarts and last exit), otherwise it shows no problem.
fn container_status(c: &ContainerStatus) -> Option<ContainerStatus> {
    let state = c.state.as_ref()?;
    if state.waiting.is_none() && state.terminated.is_none() {
        return crate::status::pods::restarting(c).map(|_| ContainerStatus {
            name: c.name.clone(),
            ready: c.ready,
            restart_count: c.restart_count,
            last_state: c.last_state.as_ref().map(|l| ContainerState {
                terminated: l.terminated.clone(),
                ..Default::default()
            }),
            state: Some(ContainerState {
                running: Some(Default::default()),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    Some(ContainerStatus {
        name: c.name.clone(),
        state: Some(ContainerState {
            waiting: state.waiting.clone(),
            terminated: state.terminated.clone(),
            running: None,
        }),
        ..Default::default()
    })
}

/// A Pod: metadata and what `status::pods` and the Job checks read of its status (the phase,
/// the `PodScheduled` condition when false, waiting or terminated containers). No spec: nothing
/// reads it (the capacity view keeps its own summaries).
pub fn pod(pod: &mut Pod) {
    pod.spec = None;
    let Some(status) = pod.status.take() else {
        return;
    };
    let statuses = |cs: Option<Vec<ContainerStatus>>| {
        cs.map(|cs| cs.iter().filter_map(container_status).collect::<Vec<_>>())
            .filter(|cs| !cs.is_empty())
    };
    pod.status = Some(PodStatus {
        phase: status.phase,
        conditions: status
            .conditions
            .map(|cs| {
                cs.into_iter()
                    .filter(|c| c.type_ == "PodScheduled" && c.status == "False")
                    .collect::<Vec<_>>()
            })
            .filter(|cs| !cs.is_empty()),
        init_container_statuses: statuses(status.init_container_statuses),
        container_statuses: statuses(status.container_statuses),
        ..Default::default()
    });
}

/// A Job: metadata, status and its containers' images.
pub fn job(job: &mut Job) {
    if let Some(spec) = job.spec.as_mut() {
        template(&mut spec.template);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::EnvVar;

    #[test]
    fn pods_keep_no_spec() {
        let mut p = Pod {
            spec: Some(PodSpec {
                node_name: Some("n1".into()),
                containers: vec![Container {
                    name: "mattermost".into(),
                    image: Some("mattermost/mattermost-enterprise-edition:10.8.1".into()),
                    env: Some(vec![EnvVar {
                        name: "MM_CONFIG".into(),
                        value: Some("postgres://u:p@db".into()),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }],
                volumes: Some(vec![Default::default()]),
                ..Default::default()
            }),
            ..Default::default()
        };
        pod(&mut p);
        assert!(p.spec.is_none());
    }

    #[test]
    fn pod_status_keeps_what_the_problem_checks_read() {
        use k8s_openapi::api::core::v1::{
            ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, PodCondition,
        };
        let cond = |t: &str, s: &str| PodCondition {
            type_: t.into(),
            status: s.into(),
            reason: Some("Unschedulable".into()),
            ..Default::default()
        };
        let state = |waiting, terminated, running| ContainerState {
            waiting,
            terminated,
            running,
        };
        let status = |name: &str, state| ContainerStatus {
            name: name.into(),
            image: "img".into(),
            image_id: "id".into(),
            ready: true,
            state: Some(state),
            ..Default::default()
        };
        let mut p = Pod {
            status: Some(PodStatus {
                phase: Some("Pending".into()),
                pod_ip: Some("10.0.0.1".into()),
                conditions: Some(vec![cond("Ready", "False"), cond("PodScheduled", "False")]),
                init_container_statuses: Some(vec![status(
                    "init",
                    state(
                        None,
                        Some(ContainerStateTerminated {
                            exit_code: 1,
                            message: Some("boom".into()),
                            ..Default::default()
                        }),
                        None,
                    ),
                )]),
                container_statuses: Some(vec![
                    status(
                        "app",
                        state(
                            Some(ContainerStateWaiting {
                                reason: Some("ImagePullBackOff".into()),
                                message: Some("no such image".into()),
                            }),
                            None,
                            None,
                        ),
                    ),
                    status(
                        "sidecar",
                        state(None, None, Some(ContainerStateRunning::default())),
                    ),
                ]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let before = crate::status::pods::pod_problem(&p);
        pod(&mut p);
        assert_eq!(crate::status::pods::pod_problem(&p), before);
        let s = p.status.unwrap();
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        assert!(s.pod_ip.is_none());
        let conds = s.conditions.unwrap();
        assert_eq!(conds.len(), 1);
        assert_eq!(conds[0].type_, "PodScheduled");
        let init = s.init_container_statuses.unwrap();
        let terminated = init[0]
            .state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .unwrap();
        assert_eq!(
            (terminated.exit_code, terminated.message.as_deref()),
            (1, Some("boom"))
        );
        let cs = s.container_statuses.unwrap();
        assert_eq!(cs.len(), 1, "a running container is not kept");
        assert_eq!(cs[0].name, "app");
        assert!(cs[0].image.is_empty());
    }

    #[test]
    fn a_container_up_again_between_crash_back_offs_is_kept() {
        use k8s_openapi::api::core::v1::{ContainerStateRunning, ContainerStateTerminated};
        let running = |restarts: i32| ContainerStatus {
            name: "mattermost".into(),
            restart_count: restarts,
            state: Some(ContainerState {
                running: Some(ContainerStateRunning::default()),
                ..Default::default()
            }),
            last_state: Some(ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: 1,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut p = Pod {
            status: Some(PodStatus {
                container_statuses: Some(vec![running(4)]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let before = crate::status::pods::pod_problem(&p);
        assert_eq!(before.as_ref().map(|b| b.reason), Some("CrashLoopBackOff"));
        pod(&mut p);
        assert_eq!(crate::status::pods::pod_problem(&p), before);
        // One restart is no loop: the running container is dropped.
        let mut once = Pod {
            status: Some(PodStatus {
                container_statuses: Some(vec![running(1)]),
                ..Default::default()
            }),
            ..Default::default()
        };
        pod(&mut once);
        assert!(once.status.unwrap().container_statuses.is_none());
    }

    #[test]
    fn a_scaled_down_replica_set_keeps_no_template() {
        use k8s_openapi::api::apps::v1::{ReplicaSetSpec, ReplicaSetStatus};
        let rs = |replicas: i32, running: i32| ReplicaSet {
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                template: Some(PodTemplateSpec {
                    spec: Some(PodSpec {
                        containers: vec![Container {
                            name: "mattermost".into(),
                            image: Some("mm:10.8.1".into()),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            status: Some(ReplicaSetStatus {
                replicas: running,
                observed_generation: Some(3),
                ..Default::default()
            }),
            ..Default::default()
        };
        let image = |rs: &ReplicaSet| {
            let pod = rs.spec.as_ref()?.template.as_ref()?.spec.as_ref()?;
            pod.containers[0].image.clone()
        };
        // Serving, and still scaling down: the image is kept.
        for (replicas, running) in [(2, 2), (0, 1)] {
            let mut r = rs(replicas, running);
            replica_set(&mut r);
            assert_eq!(image(&r).as_deref(), Some("mm:10.8.1"));
        }
        let mut history = rs(0, 0);
        replica_set(&mut history);
        assert!(history.spec.as_ref().unwrap().template.is_none());
        assert_eq!(history.status.unwrap().observed_generation, Some(3));
    }

    #[test]
    fn drops_the_kubectl_apply_annotation_only() {
        let mut p = Pod::default();
        p.metadata.annotations = Some(
            [
                (LAST_APPLIED.to_owned(), "{}".to_owned()),
                ("keep".to_owned(), "v".to_owned()),
            ]
            .into(),
        );
        last_applied(&mut p);
        let a = p.metadata.annotations.unwrap();
        assert!(!a.contains_key(LAST_APPLIED) && a.contains_key("keep"));
    }
}
