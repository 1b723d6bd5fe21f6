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
    // A secret the old resource owns (as the Go operator's generated secrets were).
    let ci_uid = cis.get(NAME).await.unwrap().uid().unwrap();
    env.apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: legacy-owned\n  ownerReferences:\n  - {{apiVersion: mattermost.com/v1alpha1, kind: ClusterInstallation, name: {NAME}, uid: {ci_uid}, controller: true}}\nstringData: {{k: v}}\n"
    ))
    .await;
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
    tokio::time::sleep(std::time::Duration::from_secs(2)).await; // give garbage collection a chance
    let owned = secrets
        .get("legacy-owned")
        .await
        .expect("the old resource's secret survives");
    assert!(owned_by(&owned, &uid), "and now belongs to the Mattermost");
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
    let status = ci.status.unwrap();
    let error = status.migration.unwrap().error.unwrap();
    assert!(error.contains("spec.blueGreen"), "{error}");
    let cond = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Reconciled")
        .unwrap();
    assert_eq!(
        (cond.status.as_str(), cond.reason.as_str()),
        ("False", "NotSupported")
    );
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

#[tokio::test]
async fn fifty_installations_migrate_with_at_most_ten_in_flight() {
    let mut env = common::env_without_operator("mig-fleet").await;
    env.max_rollouts = 10;
    env.start_operator();
    env.apply(SECRETS).await;
    let names: Vec<String> = (0..50).map(|i| format!("legacy-{i:02}")).collect();
    let manifests: Vec<String> = names
        .iter()
        .map(|n| {
            LEGACY
                .replace("name: mm-legacy", &format!("name: {n}"))
                .replace(
                    "size: 1000users",
                    "replicas: 1\n  resources: {requests: {cpu: 10m, memory: 32Mi}}",
                )
                .replace("legacy.example.com", &format!("{n}.example.com"))
        })
        .collect();
    env.apply(&manifests.join("\n---\n")).await;
    let cis: Api<ClusterInstallation> = env.api();
    wait_until(
        "all legacy installations stable",
        std::time::Duration::from_secs(120),
        || async {
            let list = cis.list(&ListParams::default()).await.unwrap().items;
            (list.len() == 50
                && list
                    .iter()
                    .all(|c| c.status.as_ref().and_then(|s| s.state.as_deref()) == Some("stable")))
            .then_some(())
        },
    )
    .await
    .unwrap();

    let t0 = std::time::Instant::now();
    for n in &names {
        cis.patch(
            n,
            &Default::default(),
            &kube::api::Patch::Merge(json!({"spec": {"migrate": true}})),
        )
        .await
        .unwrap();
    }
    let in_flight_steps = [
        "OrphaningDeployment",
        "WaitingForNewPods",
        "WaitingForMattermost",
        "CleaningUp",
    ];
    let mut started: std::collections::BTreeMap<String, std::time::Duration> = Default::default();
    let mut finished: std::collections::BTreeMap<String, std::time::Duration> = Default::default();
    let mut max_in_flight = 0;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(400);
    while finished.len() < names.len() {
        let list = cis.list(&ListParams::default()).await.unwrap().items;
        let mut in_flight = 0;
        for ci in &list {
            if step(ci).is_some_and(|s| in_flight_steps.contains(&s.as_str())) {
                in_flight += 1;
                started.entry(ci.name_any()).or_insert(t0.elapsed());
            }
        }
        max_in_flight = max_in_flight.max(in_flight);
        for n in &names {
            if !list.iter().any(|c| &c.name_any() == n) {
                finished.entry(n.clone()).or_insert(t0.elapsed());
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of 50 migrated",
            finished.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let total = t0.elapsed();
    let mut durations: Vec<f64> = names
        .iter()
        .filter_map(|n| Some(finished.get(n)?.as_secs_f64() - started.get(n)?.as_secs_f64()))
        .collect();
    durations.sort_by(f64::total_cmp);
    let median = durations.get(durations.len() / 2).copied().unwrap_or_default();
    println!(
        "50 migrations, cap 10: total {total:?}, per-installation median {median:.1}s, at most {max_in_flight} in flight"
    );
    assert!(max_in_flight <= 10, "{max_in_flight} migrations in flight");
    let mms: Api<Mattermost> = env.api();
    wait_until("all Mattermost stable", TIMEOUT, || async {
        let list = mms.list(&ListParams::default()).await.unwrap().items;
        (list.len() == 50
            && list
                .iter()
                .all(|m| m.status.as_ref().and_then(|s| s.state.as_deref()) == Some("stable")))
        .then_some(())
    })
    .await
    .unwrap();
    env.cleanup().await;
}

#[tokio::test]
async fn deleting_the_new_mattermost_before_completion_reverts_instead_of_deleting_children() {
    let env = env("mig-delete").await;
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
    let mms: Api<Mattermost> = env.api();
    let t0 = std::time::Instant::now();
    cis.patch(
        NAME,
        &Default::default(),
        &kube::api::Patch::Merge(json!({"spec": {"migrate": true}})),
    )
    .await
    .unwrap();
    wait_until("Mattermost created", TIMEOUT, || async {
        mms.get_opt(NAME).await.unwrap().map(|_| ())
    })
    .await
    .unwrap();
    mms.delete(NAME, &Default::default()).await.unwrap();
    wait_until("Mattermost gone", TIMEOUT, || async {
        mms.get_opt(NAME).await.unwrap().is_none().then_some(())
    })
    .await
    .unwrap();
    wait_legacy_stable(&env).await;
    let ci = cis.get(NAME).await.unwrap();
    assert_eq!(ci.spec.migrate, Some(false), "the deletion stopped the migration");
    let svc: Service = env.api().get(NAME).await.unwrap();
    assert!(
        owned_by(&svc, &ci.uid().unwrap()),
        "the Service was handed back, not deleted"
    );
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert!(
        watcher.min_ready_since(t0) >= 2,
        "ready endpoints dropped: {:?}",
        watcher.history()
    );
    env.cleanup().await;
}
