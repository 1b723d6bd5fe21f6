use super::*;
use crate::observe::{Check, ConfigError};
use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStatus, ReplicaSetSpec, ReplicaSetStatus};
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use mattermost_api::v1beta1::MattermostSpec;
use std::collections::BTreeMap;

fn t(s: &str) -> Time {
    Time(s.parse().unwrap())
}

fn mm(replicas: i32) -> Mattermost {
    let mut mm = Mattermost::new(
        "chat",
        MattermostSpec {
            replicas: Some(replicas),
            ..Default::default()
        },
    );
    mm.metadata.generation = Some(3);
    mm
}

fn template(image: &str) -> PodTemplateSpec {
    PodTemplateSpec {
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "mattermost".into(),
                image: Some(image.into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn deployment(revision: &str, image: &str, replicas: i32) -> Deployment {
    Deployment {
        metadata: ObjectMeta {
            uid: Some("dep".into()),
            generation: Some(2),
            annotations: Some(BTreeMap::from([(REVISION.into(), revision.into())])),
            ..Default::default()
        },
        spec: Some(DeploymentSpec {
            template: template(image),
            ..Default::default()
        }),
        status: Some(DeploymentStatus {
            observed_generation: Some(2),
            replicas: Some(replicas),
            ..Default::default()
        }),
    }
}

fn rs(revision: &str, image: &str, available: i32) -> ReplicaSet {
    ReplicaSet {
        metadata: ObjectMeta {
            annotations: Some(BTreeMap::from([(REVISION.into(), revision.into())])),
            owner_references: Some(vec![OwnerReference {
                uid: "dep".into(),
                ..Default::default()
            }]),
            ..Default::default()
        },
        spec: Some(ReplicaSetSpec {
            template: Some(template(image)),
            ..Default::default()
        }),
        status: Some(ReplicaSetStatus {
            available_replicas: Some(available),
            observed_generation: Some(1),
            ..Default::default()
        }),
    }
}

fn ok_checks() -> Vec<Check> {
    vec![Check {
        type_: "DatabaseConfigured",
        result: Ok(("ExternalDatabase", "db".into())),
    }]
}

fn compute_for(
    mm: &Mattermost,
    dep: &Deployment,
    sets: &[ReplicaSet],
    old: Option<&MattermostStatus>,
    now: &str,
) -> MattermostStatus {
    compute_missing(mm, dep, sets, old, now, &[])
}

fn compute_missing(
    mm: &Mattermost,
    dep: &Deployment,
    sets: &[ReplicaSet],
    old: Option<&MattermostStatus>,
    now: &str,
    missing: &[String],
) -> MattermostStatus {
    let checks = ok_checks();
    let obs = Observation {
        mm,
        checks: &checks,
        failure: None,
        gate: &Gate::Open,
        deployment: Some(dep),
        replica_sets: sets,
        pods: &[],
        job_server: None,
        service: None,
        ingress: None,
        resource_patch: None,
        rolled_back_from: None,
        verification: None,
        last_backup: None,
        missing,
    };
    compute(&obs, old, &t(now))
}

#[test]
fn states_follow_the_go_operator_during_a_rollout() {
    let m = mm(2);
    let dep = deployment("2", "mm:2", 3);
    let st = compute_for(
        &m,
        &dep,
        &[rs("1", "mm:1", 2), rs("2", "mm:2", 0)],
        None,
        "2026-01-01T00:00:00Z",
    );
    assert_eq!(st.state.as_deref(), Some("reconciling"));
    assert_eq!(
        st.version.as_deref(),
        Some("1"),
        "observed from the serving pods, not the spec"
    );
    let st = compute_for(
        &m,
        &dep,
        &[rs("1", "mm:1", 2), rs("2", "mm:2", 1)],
        Some(&st),
        "2026-01-01T00:01:00Z",
    );
    assert_eq!(st.state.as_deref(), Some("ready"));
    assert_eq!(st.version.as_deref(), Some("2"));
    let dep = deployment("2", "mm:2", 2);
    let st2 = compute_for(
        &m,
        &dep,
        &[rs("1", "mm:1", 0), rs("2", "mm:2", 2)],
        Some(&st),
        "2026-01-01T00:02:00Z",
    );
    assert_eq!(st2.state.as_deref(), Some("stable"));
    assert_eq!(st2.observed_generation, Some(3));
    assert_eq!((st2.replicas, st2.updated_replicas), (Some(2), Some(2)));
    let ready = conditions::find(&st2.conditions, READY).unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.last_transition_time.clone()),
        ("True", t("2026-01-01T00:02:00Z"))
    );
    let again = compute_for(
        &m,
        &dep,
        &[rs("1", "mm:1", 0), rs("2", "mm:2", 2)],
        Some(&st2),
        "2026-01-01T00:09:00Z",
    );
    assert_eq!(again, st2, "nothing changed: identical status, so no write");
}

#[test]
fn hibernation_is_stable() {
    let m = mm(0);
    let st = compute_for(
        &m,
        &deployment("4", "mm:2", 0),
        &[rs("4", "mm:2", 0)],
        None,
        "2026-01-01T00:00:00Z",
    );
    assert_eq!(st.state.as_deref(), Some("stable"));
}

#[test]
fn problems_keep_reconciling_with_reason() {
    let m = mm(1);
    let checks = vec![Check {
        type_: "DatabaseConfigured",
        result: Err(ConfigError::SecretNotFound {
            purpose: "database",
            secret: "db".into(),
        }),
    }];
    let obs = Observation {
        mm: &m,
        checks: &checks,
        failure: None,
        gate: &Gate::Open,
        deployment: None,
        replica_sets: &[],
        pods: &[],
        job_server: None,
        service: None,
        ingress: None,
        resource_patch: None,
        rolled_back_from: None,
        verification: None,
        last_backup: None,
        missing: &[],
    };
    let st = compute(&obs, None, &t("2026-01-01T00:00:00Z"));
    assert_eq!(st.state.as_deref(), Some("reconciling"));
    let degraded = conditions::find(&st.conditions, DEGRADED).unwrap();
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", "SecretNotFound")
    );
    assert_eq!(st.error.as_deref(), Some("database secret \"db\" not found"));
    let stalled = conditions::find(&st.conditions, STALLED).unwrap();
    assert_eq!(
        (stalled.status.as_str(), stalled.reason.as_str()),
        ("True", "SecretNotFound"),
        "bad configuration needs a person: kstatus Failed"
    );
}

#[test]
fn failed_update_job_is_reported() {
    let m = mm(1);
    let checks = ok_checks();
    let gate = Gate::Failed {
        kind: JobKind::Update,
        job: "chat-update-1".into(),
        message: "exit code 1: boom".into(),
    };
    let dep = deployment("1", "mm:1", 1);
    let sets = [rs("1", "mm:1", 1)];
    let obs = Observation {
        mm: &m,
        checks: &checks,
        failure: None,
        gate: &gate,
        deployment: Some(&dep),
        replica_sets: &sets,
        pods: &[],
        job_server: None,
        service: None,
        ingress: None,
        resource_patch: None,
        rolled_back_from: None,
        verification: None,
        last_backup: None,
        missing: &[],
    };
    let st = compute(&obs, None, &t("2026-01-01T00:00:00Z"));
    assert_eq!(st.state.as_deref(), Some("reconciling"));
    let c = conditions::find(&st.conditions, UPDATE_JOB).unwrap();
    assert_eq!(c.reason, "UpdateJobFailed");
    assert!(c.message.contains("boom"));
}

#[test]
fn no_version_while_no_pod_serves() {
    let m = mm(2);
    let mut old = MattermostStatus {
        version: Some("1".into()),
        image: Some("mm".into()),
        ..Default::default()
    };
    // A fresh installation whose pods cannot be created: nothing serves, so no version.
    let st = compute_for(
        &m,
        &deployment("1", "mm:1", 0),
        &[rs("1", "mm:1", 0)],
        Some(&old),
        "2026-01-01T00:00:00Z",
    );
    assert_eq!((st.version.as_deref(), st.image.as_deref()), (None, None));
    // Caches not filled yet (no ReplicaSet seen) but the Deployment has available pods: keep.
    let mut dep = deployment("1", "mm:1", 2);
    dep.status.as_mut().unwrap().available_replicas = Some(2);
    old.version = Some("1".into());
    let st = compute_for(&m, &dep, &[], Some(&old), "2026-01-01T00:00:00Z");
    assert_eq!(st.version.as_deref(), Some("1"));
}

#[test]
fn mutable_tags_are_flagged_and_pinned_ones_are_not() {
    let mut m = mm(1);
    let dep = deployment("1", "mm:1", 1);
    let sets = [rs("1", "mm:1", 1)];
    let st = compute_for(&m, &dep, &sets, None, "2026-01-01T00:00:00Z");
    assert_eq!(
        conditions::find(&st.conditions, IMAGE_PINNED).unwrap().status,
        "True"
    );
    m.spec.version = Some("latest".into());
    let st = compute_for(&m, &dep, &sets, None, "2026-01-01T00:00:00Z");
    let c = conditions::find(&st.conditions, IMAGE_PINNED).unwrap();
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "MutableTag"));
    assert_eq!(
        conditions::find(&st.conditions, DEGRADED).unwrap().status,
        "False",
        "a warning, not a failure"
    );
}

#[test]
fn refused_pods_degrade_with_the_kubernetes_reason_and_message() {
    use k8s_openapi::api::apps::v1::DeploymentCondition;
    let m = mm(2);
    let mut dep = deployment("2", "mm:2", 0);
    dep.status.as_mut().unwrap().conditions = Some(vec![DeploymentCondition {
        type_: "ReplicaFailure".into(),
        status: "True".into(),
        reason: Some("FailedCreate".into()),
        message: Some(
            "pods \"chat-1\" is forbidden: violates PodSecurity \"restricted:latest\": privileged (container \"mattermost\" must not set securityContext.privileged=true)"
                .into(),
        ),
        ..Default::default()
    }]);
    let st = compute_for(
        &m,
        &dep,
        &[rs("1", "mm:1", 2), rs("2", "mm:2", 0)],
        None,
        "2026-01-01T00:00:00Z",
    );
    let d = conditions::find(&st.conditions, DEGRADED).unwrap();
    assert_eq!((d.status.as_str(), d.reason.as_str()), ("True", "FailedCreate"));
    assert!(d.message.contains("violates PodSecurity"));
    assert_eq!(st.version.as_deref(), Some("1"), "the old pods still serve");
}

/// (status, reason) of `type_`.
fn cond(st: &MattermostStatus, type_: &str) -> (String, String) {
    let c = conditions::find(&st.conditions, type_).unwrap();
    (c.status.clone(), c.reason.clone())
}

#[test]
fn kstatus_pair_follows_rollout_slot_block_and_stable() {
    let m = mm(1);
    let checks = ok_checks();
    let dep = deployment("1", "mm:1", 1);
    let sets = [rs("1", "mm:1", 1)];
    let observe = |gate: &Gate| {
        let obs = Observation {
            mm: &m,
            checks: &checks,
            failure: None,
            gate,
            deployment: Some(&dep),
            replica_sets: &sets,
            pods: &[],
            job_server: None,
            service: None,
            ingress: None,
            resource_patch: None,
            rolled_back_from: None,
            verification: None,
            last_backup: None,
            missing: &[],
        };
        compute(&obs, None, &t("2026-01-01T00:00:00Z"))
    };
    let f = |s: &str| s.to_owned();
    let stable = observe(&Gate::Open);
    assert_eq!(cond(&stable, RECONCILING), (f("False"), f("AsExpected")));
    assert_eq!(cond(&stable, STALLED), (f("False"), f("AsExpected")));
    let waiting = observe(&Gate::Waiting);
    assert_eq!(
        cond(&waiting, RECONCILING),
        (f("True"), f("WaitingForRolloutSlot"))
    );
    assert_eq!(cond(&waiting, STALLED).0, "False");
    let running = observe(&Gate::Running {
        kind: JobKind::Update,
        job: "j".into(),
    });
    assert_eq!(cond(&running, RECONCILING), (f("True"), f("UpdateJobRunning")));
    let backup = observe(&Gate::Running {
        kind: JobKind::Backup,
        job: "b".into(),
    });
    assert_eq!(cond(&backup, RECONCILING), (f("True"), f("BackupRunning")));
    assert_eq!(cond(&backup, BACKUP), (f("False"), f("BackupRunning")));
    let failed = observe(&Gate::Failed {
        kind: JobKind::Update,
        job: "j".into(),
        message: "exit code 1".into(),
    });
    assert_eq!(cond(&failed, RECONCILING).0, "False");
    assert_eq!(cond(&failed, STALLED), (f("True"), f("UpdateJobFailed")));
    let blocked = observe(&Gate::Blocked {
        reason: "InsufficientCapacity",
        message: "no room".into(),
    });
    assert_eq!(cond(&blocked, STALLED), (f("True"), f("InsufficientCapacity")));
    let mut late = dep.clone();
    late.status.as_mut().unwrap().conditions = Some(vec![k8s_openapi::api::apps::v1::DeploymentCondition {
        type_: "Progressing".into(),
        status: "False".into(),
        reason: Some("ProgressDeadlineExceeded".into()),
        message: Some("too slow".into()),
        ..Default::default()
    }]);
    let obs = Observation {
        mm: &m,
        checks: &checks,
        failure: None,
        gate: &Gate::Open,
        deployment: Some(&late),
        replica_sets: &sets,
        pods: &[],
        job_server: None,
        service: None,
        ingress: None,
        resource_patch: None,
        rolled_back_from: None,
        verification: None,
        last_backup: None,
        missing: &[],
    };
    let st = compute(&obs, None, &t("2026-01-01T00:00:00Z"));
    assert_eq!(cond(&st, STALLED), (f("True"), f("ProgressDeadlineExceeded")));
    assert_eq!(cond(&st, RECONCILING).0, "False");
}

#[test]
fn a_missing_child_is_never_stable() {
    let m = mm(2);
    let dep = deployment("2", "mattermost/mattermost-enterprise-edition:10.5.1", 2);
    let sets = [rs("2", "mattermost/mattermost-enterprise-edition:10.5.1", 2)];
    let stable = compute_for(&m, &dep, &sets, None, "2026-01-01T00:00:00Z");
    assert_eq!(stable.state.as_deref(), Some("stable"));
    let missing = vec!["Service mm-a".to_owned(), "PodDisruptionBudget mm-a".to_owned()];
    let s = compute_missing(&m, &dep, &sets, Some(&stable), "2026-01-01T00:00:10Z", &missing);
    assert_eq!(s.state.as_deref(), Some("reconciling"));
    let ready = crate::status::conditions::find(&s.conditions, READY).unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "ChildrenMissing")
    );
    assert!(
        ready.message.contains("Service mm-a, PodDisruptionBudget mm-a"),
        "{}",
        ready.message
    );
    let again = compute_for(&m, &dep, &sets, Some(&s), "2026-01-01T00:00:11Z");
    assert_eq!(again.state.as_deref(), Some("stable"));
}

#[test]
fn a_new_version_is_stable_only_once_verified_and_a_failed_verification_degrades() {
    let m = mm(1);
    let checks = ok_checks();
    let dep = deployment("1", "mm:1", 1);
    let sets = [rs("1", "mm:1", 1)];
    let observe = |state: JobState| {
        let run = JobRun {
            kind: JobKind::Verify,
            job: "chat-verify-1".into(),
            state,
        };
        let obs = Observation {
            mm: &m,
            checks: &checks,
            failure: None,
            gate: &Gate::Open,
            deployment: Some(&dep),
            replica_sets: &sets,
            pods: &[],
            job_server: None,
            service: None,
            ingress: None,
            resource_patch: None,
            rolled_back_from: None,
            verification: Some(&run),
            last_backup: None,
            missing: &[],
        };
        compute(&obs, None, &t("2026-01-01T00:00:00Z"))
    };
    let f = |s: &str| s.to_owned();
    let running = observe(JobState::Running);
    assert_eq!(running.state.as_deref(), Some("ready"));
    assert_eq!(cond(&running, PROGRESSING), (f("True"), f("VerificationRunning")));
    assert_eq!(running.last_stable_version, None, "not stable before verified");
    let passed = observe(JobState::Succeeded);
    assert_eq!(passed.state.as_deref(), Some("stable"));
    assert_eq!(cond(&passed, VERIFIED), (f("True"), f("VerificationSucceeded")));
    let failed = observe(JobState::Failed {
        message: "exit code 1: ServerUnhealthy: database UNHEALTHY".into(),
    });
    assert_eq!(cond(&failed, DEGRADED), (f("True"), f("VerificationFailed")));
    assert!(failed.error.as_deref().unwrap().contains("database UNHEALTHY"));
    assert_ne!(failed.state.as_deref(), Some("stable"));
}
