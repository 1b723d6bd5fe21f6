//! kstatus (Flux, Helm `--wait`, kpt) reads our installations right: the real
//! sigs.k8s.io/cli-utils library (`hack/tools.sh`) judges objects read from the local control
//! plane. InProgress while rolling out and while waiting for a rollout slot, Failed when blocked
//! (failed update Job, bad configuration, failed preflight), Current when stable; the same for a
//! `ClusterInstallation` during its migration. Every object judged by kstatus is also judged by our
//! Argo CD health check (Healthy, Progressing, Degraded), which must agree.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::argocd::health;
use common::{SECRETS, TIMEOUT, env_without_operator};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Api;
use kube::api::Patch;
use mattermost_api::v1alpha1::ClusterInstallation;
use mattermost_api::v1beta1::Mattermost;
use serde_json::json;

fn manifest(name: &str, version: &str) -> String {
    serde_json::to_string(&json!({
        "apiVersion": "installation.mattermost.com/v1beta1", "kind": "Mattermost",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1, "version": version,
            "ingress": {"enabled": true, "host": format!("{name}.example.test")},
            "database": {"external": {"secret": "db-credentials"}},
            "fileStore": {"external": {"url": "s3.amazonaws.com", "bucket": "b", "secret": "file-store-credentials"}},
            "scheduling": {"resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}},
            // Slow update Jobs keep a rollout (and the slot it holds) visible.
            "updateJob": {"extraAnnotations": {"testenv.invalid/complete-after": "6s"}},
        }
    }))
    .unwrap()
}

/// kstatus' verdict (status, message) on a real object, checked against the Argo CD health
/// check's verdict on the same object: both tools must tell the same story.
async fn kstatus<K: kube::Resource<DynamicType = ()> + serde::Serialize>(obj: &K) -> (String, String) {
    let (status, message) = common::tools::kstatus(obj).await;
    let json = serde_json::to_value(obj).unwrap();
    let (argo, _) = health(&K::group(&()), &K::kind(&()), &json);
    let expected = match status.as_str() {
        "Current" => "Healthy",
        "InProgress" => "Progressing",
        "Failed" => "Degraded",
        other => panic!("unexpected kstatus {other}"),
    };
    assert_eq!(argo, expected, "Argo CD health vs kstatus {status}: {json}");
    (status, message)
}

fn cond<'a>(conds: &'a [Condition], type_: &str) -> &'a Condition {
    conds
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {conds:?}"))
}

/// kstatus' verdict on `mm`, checking that it came from our condition of `type_` (not from a
/// generation mismatch): kstatus then repeats the condition's message.
async fn verdict_from(mm: &Mattermost, type_: &str) -> String {
    let (status, message) = kstatus(mm).await;
    let c = cond(&mm.status.as_ref().unwrap().conditions, type_);
    assert_eq!(c.status, "True");
    assert_eq!(message, c.message, "kstatus read {type_}: {mm:?}");
    status
}

#[tokio::test]
async fn kstatus_reads_rollouts_slots_blocks_and_stable_installations() {
    let mut env = env_without_operator("kstatus").await;
    env.max_rollouts = 1;
    env.start_operator();
    env.apply(SECRETS).await;
    env.apply(&manifest("a", "10.8.1")).await;
    env.apply(&manifest("b", "10.8.1")).await;
    for n in ["a", "b"] {
        let mm = env.wait_state(n, "stable").await;
        assert_eq!(kstatus(&mm).await.0, "Current", "{n} stable: {mm:?}");
    }

    // A rollout holds the only slot; the second waits for it.
    env.patch_spec("a", json!({"version": "10.9.0"})).await;
    let a = env
        .wait_condition("a", "Reconciling", "True", Some("UpdateJobRunning"))
        .await;
    assert_eq!(verdict_from(&a, "Reconciling").await, "InProgress");
    env.patch_spec("b", json!({"version": "10.9.0"})).await;
    let b = env
        .wait_condition("b", "Reconciling", "True", Some("WaitingForRolloutSlot"))
        .await;
    assert_eq!(verdict_from(&b, "Reconciling").await, "InProgress");
    for n in ["a", "b"] {
        let mm = env.wait_state(n, "stable").await;
        assert_eq!(kstatus(&mm).await.0, "Current", "{n} upgraded: {mm:?}");
    }

    // Blocked: a failing update Job, a missing secret, a failed preflight.
    env.patch_spec("a", json!({"version": "10.9.1-fail"})).await;
    let a = env
        .wait_condition("a", "Stalled", "True", Some("UpdateJobFailed"))
        .await;
    assert_eq!(verdict_from(&a, "Stalled").await, "Failed");
    env.patch_spec("b", json!({"licenseSecret": "missing"})).await;
    let b = env
        .wait_condition("b", "Stalled", "True", Some("SecretNotFound"))
        .await;
    assert_eq!(verdict_from(&b, "Stalled").await, "Failed");
    env.patch_spec(
        "b",
        json!({"licenseSecret": null, "version": "10.9.2",
               "scheduling": {"resources": {"requests": {"cpu": "100", "memory": "128Mi"}}}}),
    )
    .await;
    let b = env
        .wait_condition("b", "Stalled", "True", Some("InsufficientCapacity"))
        .await;
    assert_eq!(verdict_from(&b, "Stalled").await, "Failed");

    // Fixed: back to Current.
    env.patch_spec("a", json!({"version": "10.9.0"})).await;
    env.wait_state("a", "stable").await;
    let a = env
        .wait_condition("a", "Stalled", "False", Some("AsExpected"))
        .await;
    assert_eq!(kstatus(&a).await.0, "Current", "{a:?}");
    env.cleanup().await;
}

#[tokio::test]
async fn kstatus_reads_a_cluster_installation_through_its_migration() {
    let env = common::env("kstatus-ci").await;
    env.apply(SECRETS).await;
    env.apply(include_str!("fixtures/clusterinstallation.yaml")).await;
    let cis: Api<ClusterInstallation> = env.api();
    let ci = testenv::wait_for_object(&cis, "mm-legacy", TIMEOUT, |ci: &ClusterInstallation| {
        ci.status.as_ref().and_then(|s| s.state.as_deref()) == Some("stable")
    })
    .await
    .unwrap();
    assert_eq!(kstatus(&ci).await.0, "Current", "{ci:?}");
    cis.patch(
        "mm-legacy",
        &Default::default(),
        &Patch::Merge(json!({"spec": {"migrate": true}})),
    )
    .await
    .unwrap();
    // Sample the object until the migration deleted it; every sample taken mid-migration must
    // read InProgress, from our Reconciling condition.
    let mut in_progress = 0;
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while let Some(ci) = cis.get_opt("mm-legacy").await.unwrap() {
        assert!(tokio::time::Instant::now() < deadline, "migration never finished");
        let conds = ci
            .status
            .as_ref()
            .map(|s| s.conditions.clone())
            .unwrap_or_default();
        if conds.iter().any(|c| c.type_ == "Migrating") && ci.metadata.deletion_timestamp.is_none() {
            let (status, message) = kstatus(&ci).await;
            assert_eq!(status, "InProgress", "{ci:?}");
            assert_eq!(message, cond(&conds, "Reconciling").message);
            in_progress += 1;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(in_progress > 0, "no sample taken during the migration");
    env.wait_state("mm-legacy", "stable").await;
    env.cleanup().await;
}
