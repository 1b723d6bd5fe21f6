//! ClusterInstallation (v1alpha1) → Mattermost migration on the real control plane, with the
//! Service's ready endpoints watched the whole time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{SECRETS, TIMEOUT, env};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::ListParams;
use kube::{Api, Resource, ResourceExt};
use mattermost_api::v1alpha1::ClusterInstallation;
use mattermost_api::v1beta1::Mattermost;
use serde_json::json;
use testenv::{EndpointWatcher, wait_for_object, wait_until};

const LEGACY: &str = include_str!("fixtures/clusterinstallation.yaml");
const NAME: &str = "mm-legacy";

fn owned_by<K: Resource>(obj: &K, uid: &str) -> bool {
    obj.owner_references()
        .iter()
        .any(|o| o.uid == uid && o.controller == Some(true))
}

#[tokio::test]
async fn legacy_installation_migrates_to_mattermost_without_downtime() {
    let env = env("mig-one").await;
    env.apply(SECRETS).await;
    env.apply(LEGACY).await;
    let cis: Api<ClusterInstallation> = env.api();
    wait_for_object(&cis, NAME, TIMEOUT, |ci: &ClusterInstallation| {
        ci.status.as_ref().and_then(|s| s.state.as_deref()) == Some("stable")
    })
    .await
    .unwrap();
    let deps: Api<Deployment> = env.api();
    let legacy = deps.get(NAME).await.unwrap();
    assert!(
        legacy
            .spec
            .unwrap()
            .selector
            .match_labels
            .unwrap()
            .contains_key("v1alpha1.mattermost.com/installation")
    );
    let watcher = EndpointWatcher::start(&env.client, env.name(), NAME)
        .await
        .unwrap();
    wait_until("2 ready endpoints", TIMEOUT, || async {
        (watcher.current() == 2).then_some(())
    })
    .await
    .unwrap();

    let t0 = std::time::Instant::now();
    cis.patch(
        NAME,
        &Default::default(),
        &kube::api::Patch::Merge(json!({"spec": {"migrate": true}})),
    )
    .await
    .unwrap();
    wait_until("ClusterInstallation gone", TIMEOUT, || async {
        cis.get_opt(NAME).await.unwrap().is_none().then_some(())
    })
    .await
    .unwrap();
    let mm = env.wait_state(NAME, "stable").await;
    println!(
        "migration took {:?}; endpoint history {:?}",
        t0.elapsed(),
        watcher.history()
    );
    assert!(
        watcher.min_ready_since(t0) >= 2,
        "ready endpoints dropped: {:?}",
        watcher.history()
    );

    let uid = mm.uid().unwrap();
    let dep = deps.get(NAME).await.unwrap();
    assert!(owned_by(&dep, &uid));
    assert!(
        dep.spec
            .unwrap()
            .selector
            .match_labels
            .unwrap()
            .contains_key("installation.mattermost.com/installation")
    );
    assert!(owned_by(&env.api::<Service>().get(NAME).await.unwrap(), &uid));
    assert!(owned_by(&env.api::<Ingress>().get(NAME).await.unwrap(), &uid));
    assert!(owned_by(
        &env.api::<ServiceAccount>().get(NAME).await.unwrap(),
        &uid
    ));
    let sets: Api<ReplicaSet> = env.api();
    wait_until("old ReplicaSets deleted", TIMEOUT, || async {
        let lp = ListParams::default().labels("v1alpha1.mattermost.com/installation");
        sets.list(&lp).await.unwrap().items.is_empty().then_some(())
    })
    .await
    .unwrap();
    let secrets: Api<Secret> = env.api();
    assert!(
        secrets.get_opt("db-credentials").await.unwrap().is_some(),
        "secrets intact"
    );
    let st = mm.status.unwrap();
    assert_eq!((st.version.as_deref(), st.replicas), (Some("9.11.0"), Some(2)));
    env.cleanup().await;
}

#[tokio::test]
async fn non_convertible_installations_are_refused_with_the_reason() {
    let env = env("mig-refuse").await;
    env.apply(SECRETS).await;
    env.apply(&LEGACY.replace("  migrate: false\n", "").replace(
        "  elasticSearch:",
        "  migrate: true\n  blueGreen:\n    enable: true\n  elasticSearch:",
    ))
    .await;
    let cis: Api<ClusterInstallation> = env.api();
    let ci = wait_for_object(&cis, NAME, TIMEOUT, |ci: &ClusterInstallation| {
        ci.status
            .as_ref()
            .and_then(|s| s.migration.as_ref())
            .and_then(|m| m.status.as_deref())
            == Some("Refused")
    })
    .await
    .unwrap();
    let error = ci.status.unwrap().migration.unwrap().error.unwrap();
    assert!(error.contains("spec.blueGreen"), "{error}");
    let mms: Api<Mattermost> = env.api();
    assert!(mms.get_opt(NAME).await.unwrap().is_none());
    env.cleanup().await;
}

async fn wait_legacy_stable(env: &common::Env) {
    let cis: Api<ClusterInstallation> = env.api();
    wait_for_object(&cis, NAME, TIMEOUT, |ci: &ClusterInstallation| {
        ci.status.as_ref().and_then(|s| s.state.as_deref()) == Some("stable")
            && ci.status.as_ref().and_then(|s| s.migration.as_ref()).is_none()
    })
    .await
    .unwrap();
}

fn step(ci: &ClusterInstallation) -> Option<String> {
    ci.status.as_ref()?.migration.as_ref()?.status.clone()
}

#[tokio::test]
async fn operator_restarts_at_every_step_still_end_migrated_without_downtime() {
    let mut env = env("mig-restart").await;
    env.apply(SECRETS).await;
    env.apply(LEGACY).await;
    wait_legacy_stable(&env).await;
    let watcher = EndpointWatcher::start(&env.client, env.name(), NAME)
        .await
        .unwrap();
    wait_until("2 ready endpoints", TIMEOUT, || async {
        (watcher.current() == 2).then_some(())
    })
    .await
    .unwrap();
    let cis: Api<ClusterInstallation> = env.api();
    let t0 = std::time::Instant::now();
    cis.patch(
        NAME,
        &Default::default(),
        &kube::api::Patch::Merge(json!({"spec": {"migrate": true}})),
    )
    .await
    .unwrap();
    let mut interrupted = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let Some(ci) = cis.get_opt(NAME).await.unwrap() else {
            break;
        };
        if let Some(s) = step(&ci)
            && !interrupted.contains(&s)
        {
            // Crash right after the step was recorded, restart a moment later.
            env.stop_operator();
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            env.start_operator();
            interrupted.push(s);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "migration stuck after restarts at {interrupted:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    println!(
        "restarted after steps {interrupted:?}; endpoint history {:?}",
        watcher.history()
    );
    assert!(interrupted.len() >= 3, "steps seen: {interrupted:?}");
    env.wait_state(NAME, "stable").await;
    assert!(
        watcher.min_ready_since(t0) >= 2,
        "ready endpoints dropped: {:?}",
        watcher.history()
    );
    let sets: Api<ReplicaSet> = env.api();
    wait_until("old ReplicaSets deleted", TIMEOUT, || async {
        let lp = ListParams::default().labels("v1alpha1.mattermost.com/installation");
        sets.list(&lp).await.unwrap().items.is_empty().then_some(())
    })
    .await
    .unwrap();
    let secrets: Api<Secret> = env.api();
    assert!(secrets.get_opt("file-store-credentials").await.unwrap().is_some());
    env.cleanup().await;
}

#[tokio::test]
async fn reverting_before_completion_returns_to_the_legacy_installation_without_downtime() {
    let env = env("mig-revert").await;
    env.apply(SECRETS).await;
    env.apply(LEGACY).await;
    wait_legacy_stable(&env).await;
    let deps: Api<Deployment> = env.api();
    let sets: Api<ReplicaSet> = env.api();
    let old_rs: Vec<String> = sets
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|r| r.name_any())
        .collect();
    let watcher = EndpointWatcher::start(&env.client, env.name(), NAME)
        .await
        .unwrap();
    wait_until("2 ready endpoints", TIMEOUT, || async {
        (watcher.current() == 2).then_some(())
    })
    .await
    .unwrap();
    let cis: Api<ClusterInstallation> = env.api();
    let mms: Api<Mattermost> = env.api();
    let t0 = std::time::Instant::now();
    cis.patch(
        NAME,
        &Default::default(),
        &kube::api::Patch::Merge(json!({"spec": {"migrate": true}})),
    )
    .await
    .unwrap();
    // Revert once the Mattermost exists (the latest point before completion).
    wait_until("Mattermost created", TIMEOUT, || async {
        mms.get_opt(NAME).await.unwrap().map(|_| ())
    })
    .await
    .unwrap();
    cis.patch(
        NAME,
        &Default::default(),
        &kube::api::Patch::Merge(json!({"spec": {"migrate": false}})),
    )
    .await
    .unwrap();
    wait_until("Mattermost removed", TIMEOUT, || async {
        mms.get_opt(NAME).await.unwrap().is_none().then_some(())
    })
    .await
    .unwrap();
    wait_legacy_stable(&env).await;
    let dep = wait_for_object(&deps, NAME, TIMEOUT, |d: &Deployment| {
        d.spec
            .as_ref()
            .unwrap()
            .selector
            .match_labels
            .as_ref()
            .unwrap()
            .contains_key("v1alpha1.mattermost.com/installation")
            && d.status.as_ref().and_then(|s| s.available_replicas) == Some(2)
    })
    .await
    .unwrap();
    let ci = cis.get(NAME).await.unwrap();
    assert!(owned_by(&dep, &ci.uid().unwrap()));
    assert!(owned_by(
        &env.api::<Service>().get(NAME).await.unwrap(),
        &ci.uid().unwrap()
    ));
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    println!("revert: endpoint history {:?}", watcher.history());
    assert!(
        watcher.min_ready_since(t0) >= 2,
        "ready endpoints dropped: {:?}",
        watcher.history()
    );
    let rs_now: Vec<String> = sets
        .list(&ListParams::default().labels("v1alpha1.mattermost.com/installation"))
        .await
        .unwrap()
        .items
        .iter()
        .map(|r| r.name_any())
        .collect();
    assert!(
        rs_now.iter().all(|r| old_rs.contains(r)),
        "the orphaned ReplicaSet was re-adopted, no new one: {rs_now:?}"
    );
    env.cleanup().await;
}
