//! Safe upgrades on the real control plane: zero downtime measured on the Service's
//! EndpointSlices, the update Job before the rollout, rollbacks, preflight checks, the progress
//! deadline and the rollout cap.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Env, SECRETS, TIMEOUT, env, env_without_operator};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use mattermost_api::v1beta1::Mattermost;
use serde_json::json;
use testenv::{EndpointWatcher, wait_until};

const NAME: &str = "chat";

fn manifest(name: &str, replicas: i32, version: &str, extra: serde_json::Value) -> String {
    let mut spec = json!({
        "replicas": replicas,
        "version": version,
        "ingress": {"enabled": true, "host": format!("{name}.example.test")},
        "database": {"external": {"secret": "db-credentials"}},
        "fileStore": {"external": {"url": "s3.amazonaws.com", "bucket": "b", "secret": "file-store-credentials"}},
        "scheduling": {"resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}},
    });
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    serde_json::to_string(&json!({
        "apiVersion": "installation.mattermost.com/v1beta1", "kind": "Mattermost",
        "metadata": {"name": name}, "spec": spec
    }))
    .unwrap()
}

fn image(dep: &Deployment) -> String {
    dep.spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .image
        .clone()
        .unwrap()
}

async fn update_jobs(env: &Env) -> Vec<Job> {
    let jobs: Api<Job> = env.api();
    jobs.list(&ListParams::default().labels("app=mattermost-update-check"))
        .await
        .unwrap()
        .items
}

#[tokio::test]
async fn three_replicas_upgrade_and_roll_back_without_dropping_below_three_ready_endpoints() {
    let env = env("up-zero").await;
    env.apply(SECRETS).await;
    env.apply(&manifest(NAME, 3, "10.8.1", json!({}))).await;
    env.wait_state(NAME, "stable").await;
    let pdb: PodDisruptionBudget = env.api().get(NAME).await.unwrap();
    assert_eq!(
        pdb.spec.unwrap().max_unavailable,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
    );

    let watcher = EndpointWatcher::start(&env.client, env.name(), NAME)
        .await
        .unwrap();
    wait_until("3 ready endpoints", TIMEOUT, || async {
        (watcher.current() == 3).then_some(())
    })
    .await
    .unwrap();
    let t0 = std::time::Instant::now();
    let t0_wall = k8s_openapi::jiff::Timestamp::now();
    env.patch_spec(NAME, json!({"version": "10.9.0"})).await;
    let mut first_new_ready = None;
    let mms: Api<Mattermost> = env.api();
    let deps: Api<Deployment> = env.api();
    let stable_at = loop {
        let st = mms.get(NAME).await.unwrap().status.unwrap_or_default();
        let sets: Api<ReplicaSet> = env.api();
        let new_available = sets
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .any(|r| {
                let img = r
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .and_then(|t| t.spec.as_ref());
                img.is_some_and(|p| {
                    p.containers[0]
                        .image
                        .as_deref()
                        .is_some_and(|i| i.ends_with(":10.9.0"))
                }) && r.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0) >= 1
            });
        if first_new_ready.is_none() && new_available {
            first_new_ready = Some(t0.elapsed());
        }
        if st.state.as_deref() == Some("stable") && st.version.as_deref() == Some("10.9.0") {
            break t0.elapsed();
        }
        assert!(t0.elapsed() < TIMEOUT, "upgrade did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        watcher.min_ready_since(t0) >= 3,
        "ready endpoints dropped: {:?}",
        watcher.history()
    );

    // The pod template changed only after the update Job succeeded.
    let rs: Api<ReplicaSet> = env.api();
    let new_rs = rs
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|r| {
            r.spec
                .as_ref()
                .unwrap()
                .template
                .as_ref()
                .unwrap()
                .spec
                .as_ref()
                .unwrap()
                .containers[0]
                .image
                .as_deref()
                .is_some_and(|i| i.ends_with(":10.9.0"))
        });
    let new_rs_created = new_rs.unwrap().metadata.creation_timestamp.unwrap().0;
    let events: Api<k8s_openapi::api::core::v1::Event> = env.api();
    let job_done = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some("Completed") && e.involved_object.kind.as_deref() == Some("Job")
        })
        .filter_map(|e| e.event_time.map(|t| t.0).or(e.last_timestamp.map(|t| t.0)))
        .min()
        .expect("the update Job completed");
    assert!(
        job_done <= new_rs_created,
        "Deployment rolled ({new_rs_created}) before the Job completed ({job_done})"
    );
    println!(
        "upgrade timeline: version change -> Job done {:.1}s -> first new pod Ready {first_new_ready:?} -> stable {stable_at:?}; min ready endpoints {}",
        job_done.duration_since(t0_wall).as_secs_f64(),
        watcher.min_ready_since(t0)
    );
    assert!(first_new_ready.is_some());

    // Rollback: the previous version, nothing else; no update Job for a version that served
    // against this schema moments before.
    let jobs_before: BTreeSet<String> = update_jobs(&env).await.iter().map(|j| j.name_any()).collect();
    env.patch_spec(NAME, json!({"version": "10.8.1"})).await;
    let mm = env.wait_state(NAME, "stable").await;
    let st = mm.status.unwrap();
    assert_eq!(st.version.as_deref(), Some("10.8.1"));
    assert_eq!(st.last_stable_version.as_deref(), Some("10.8.1"));
    assert_eq!(st.previous_stable_version.as_deref(), Some("10.9.0"));
    let jobs_after: BTreeSet<String> = update_jobs(&env).await.iter().map(|j| j.name_any()).collect();
    assert!(
        jobs_after.is_subset(&jobs_before),
        "rollback ran an update Job: {jobs_after:?}"
    );
    assert!(
        watcher.min_ready_since(t0) >= 3,
        "ready endpoints dropped: {:?}",
        watcher.history()
    );
    println!("endpoint history: {:?}", watcher.history());

    // A downgrade below the last stable version (other than the previous one) is refused.
    env.patch_spec(NAME, json!({"version": "10.5.0"})).await;
    env.wait_condition(NAME, "PreflightPassed", "False", Some("DowngradeNotAllowed"))
        .await;
    assert!(image(&deps.get(NAME).await.unwrap()).ends_with(":10.8.1"));

    // The budget goes away at one replica (it would block node drains).
    env.patch_spec(NAME, json!({"version": "10.8.1", "replicas": 1}))
        .await;
    env.wait_state(NAME, "stable").await;
    let pdbs: Api<PodDisruptionBudget> = env.api();
    wait_until("PDB removed", TIMEOUT, || async {
        pdbs.get_opt(NAME).await.unwrap().is_none().then_some(())
    })
    .await
    .unwrap();
    env.cleanup().await;
}

#[tokio::test]
async fn a_rollout_past_its_deadline_is_degraded_and_rolled_back_when_asked() {
    let env = env("up-deadline").await;
    env.apply(SECRETS).await;
    let policy = json!({"upgrade": {"progressDeadlineSeconds": 10, "automaticRollback": true}});
    env.apply(&manifest(NAME, 2, "10.8.1", policy)).await;
    env.wait_state(NAME, "stable").await;
    let watcher = EndpointWatcher::start(&env.client, env.name(), NAME)
        .await
        .unwrap();
    wait_until("2 ready endpoints", TIMEOUT, || async {
        (watcher.current() == 2).then_some(())
    })
    .await
    .unwrap();

    let t0 = std::time::Instant::now();
    env.patch_spec(NAME, json!({"version": "10.9.0-never-ready"}))
        .await;
    let mm = env
        .wait_condition(NAME, "Degraded", "True", Some("RolledBack"))
        .await;
    assert_eq!(
        mm.status.as_ref().unwrap().state.as_deref(),
        Some("reconciling"),
        "not reported as stable"
    );
    let deps: Api<Deployment> = env.api();
    println!(
        "deadline test: min ready endpoints {}",
        watcher.min_ready_since(t0)
    );
    wait_until("old image restored", TIMEOUT, || async {
        image(&deps.get(NAME).await.unwrap())
            .ends_with(":10.8.1")
            .then_some(())
    })
    .await
    .unwrap();
    assert!(
        watcher.min_ready_since(t0) >= 2,
        "ready endpoints dropped: {:?}",
        watcher.history()
    );

    // A fixed version moves on.
    env.patch_spec(NAME, json!({"version": "10.9.0"})).await;
    let mm = env.wait_state(NAME, "stable").await;
    assert_eq!(mm.status.unwrap().rolled_back_from, None);
    assert!(
        watcher.min_ready_since(t0) >= 2,
        "ready endpoints dropped: {:?}",
        watcher.history()
    );
    env.cleanup().await;
}

#[tokio::test]
async fn failed_preflight_blocks_the_upgrade_and_changes_nothing() {
    let env = env("up-preflight").await;
    env.apply(SECRETS).await;
    env.apply(&manifest(NAME, 1, "10.8.1", json!({}))).await;
    env.wait_state(NAME, "stable").await;
    let deps: Api<Deployment> = env.api();
    let before = deps.get(NAME).await.unwrap();

    // No node has 100 free CPUs for the surge pod.
    env.patch_spec(NAME, json!({"version": "10.9.0", "scheduling": {"resources": {"requests": {"cpu": "100", "memory": "128Mi"}}}}))
        .await;
    let mm = env
        .wait_condition(NAME, "PreflightPassed", "False", Some("InsufficientCapacity"))
        .await;
    assert_eq!(mm.status.as_ref().unwrap().state.as_deref(), Some("reconciling"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = deps.get(NAME).await.unwrap();
    assert_eq!(
        after.metadata.generation, before.metadata.generation,
        "Deployment not modified"
    );
    assert!(
        update_jobs(&env).await.is_empty(),
        "no update Job before the checks pass"
    );

    env.patch_spec(
        NAME,
        json!({"scheduling": {"resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}}),
    )
    .await;
    assert_eq!(
        env.wait_state(NAME, "stable")
            .await
            .status
            .unwrap()
            .version
            .as_deref(),
        Some("10.9.0")
    );
    env.cleanup().await;
}

#[tokio::test]
async fn at_most_max_reconciling_installations_roll_at_once_and_all_finish() {
    let mut env = env_without_operator("up-cap").await;
    env.max_rollouts = 3;
    env.start_operator();
    env.apply(SECRETS).await;
    // Slow update Jobs make overlapping rollouts visible.
    let slow = json!({"updateJob": {"extraAnnotations": {"testenv.invalid/complete-after": "3s"}}});
    let names: Vec<String> = (0..10).map(|i| format!("mm-{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    for n in &names {
        env.apply(&manifest(n, 1, "10.8.1", slow.clone())).await;
    }
    for n in &names {
        env.wait_state(n, "stable").await;
    }
    // mm-0's migration fails: it must not hold a slot or stop the others.
    env.patch_spec(names[0], json!({"version": "10.9.0-fail"})).await;
    for n in &names[1..] {
        env.patch_spec(n, json!({"version": "10.9.0"})).await;
    }
    let api: Api<Mattermost> = env.api();
    let mut max_rolling = 0;
    let mut saw_waiting = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let list = api.list(&ListParams::default()).await.unwrap().items;
        let cond = |mm: &Mattermost, reason: &str| {
            mm.status
                .iter()
                .flat_map(|s| s.conditions.iter())
                .any(|c| c.type_ == "Progressing" && c.reason == reason)
        };
        let rolling = list
            .iter()
            .filter(|m| cond(m, "UpdateJobRunning") || cond(m, "RollingOut"))
            .count();
        max_rolling = max_rolling.max(rolling);
        saw_waiting |= list.iter().any(|m| cond(m, "WaitingForRolloutSlot"));
        let done = list.iter().filter(|m| m.name_any() != "mm-0").all(|m| {
            let st = m.status.as_ref();
            st.and_then(|s| s.state.as_deref()) == Some("stable")
                && st.and_then(|s| s.version.as_deref()) == Some("10.9.0")
        });
        if done {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not all upgraded: {list:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("rollout cap 3: at most {max_rolling} installations rolled at once");
    assert!(max_rolling <= 3, "{max_rolling} installations rolled at once");
    assert!(saw_waiting, "no installation ever waited for a slot");
    env.wait_condition("mm-0", "Degraded", "True", Some("UpdateJobFailed"))
        .await;
    env.cleanup().await;
}

/// A version changed while the operator was down: when it starts again its first reconciles
/// may come before the child caches are filled, and must not take the live installation for a
/// fresh one (which needs no update Job). Each restart must run the update Job first.
#[tokio::test]
async fn a_version_changed_while_the_operator_was_down_still_runs_the_update_job() {
    let mut env = env("mm-upgrade-restart").await;
    env.apply(SECRETS).await;
    env.apply(&manifest(NAME, 1, "9.11.0", json!({}))).await;
    env.wait_state(NAME, "stable").await;
    let audit = testenv::AuditLog::new();
    for (i, version) in ["9.11.1", "9.11.2", "9.11.3"].into_iter().enumerate() {
        env.stop_operator();
        env.patch_spec(NAME, json!({ "version": version })).await;
        let mark = audit.mark().unwrap();
        env.start_operator();
        let mm = env.wait_state(NAME, "stable").await;
        assert_eq!(mm.status.unwrap().version.as_deref(), Some(version));
        // The update Job is deleted once the rollout is done: find its creation (a server-side
        // apply) in the audit log instead.
        let applied: BTreeSet<String> = audit
            .since(mark)
            .unwrap()
            .into_iter()
            .filter(|e| (e.verb == "create" || e.verb == "patch") && e.resource() == "jobs")
            .filter_map(|e| e.object_ref)
            .filter(|o| o.namespace.as_deref() == Some(env.name()))
            .filter_map(|o| o.name)
            // The verification Job after the rollout is not what this test is about.
            .filter(|n| n.contains("-update-"))
            .collect();
        assert_eq!(
            applied.len(),
            1,
            "restart {i}: update Jobs for {version}: {applied:?}"
        );
    }
    env.cleanup().await;
}
