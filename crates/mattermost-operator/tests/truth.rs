//! Issue 14 "never blind, never silent", on the local control plane: the status tells the truth
//! about pods (Pod Security rejections, unschedulable pods, nothing serving), defaults run in a
//! restricted namespace, 63-character names work, scale-ups pass the capacity preflight, mutable
//! tags are flagged, and no credential from a pod reaches status or events.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{SECRETS, TIMEOUT, env};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Namespace, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use mattermost_api::v1beta1::Mattermost;
use serde_json::json;
use testenv::wait_until;

const FULL: &str = include_str!("fixtures/mattermost-external.yaml");
const NAME: &str = "mm-example-full";

fn condition(mm: &Mattermost, type_: &str) -> (String, String, String) {
    let c = mm
        .status
        .iter()
        .flat_map(|s| s.conditions.iter())
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no condition {type_}"));
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

/// Every event of the namespace as (type, reason, message/note, kind of the object).
async fn all_events(env: &common::Env) -> Vec<(String, String, String, String)> {
    let events: Api<Event> = env.api();
    events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|e| {
            (
                e.type_.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.message.unwrap_or_default(),
                e.involved_object.kind.unwrap_or_default(),
            )
        })
        .collect()
}

/// Events the operator published about installations: (type, reason, note).
async fn event_texts(env: &common::Env) -> Vec<(String, String, String)> {
    all_events(env)
        .await
        .into_iter()
        .filter(|e| e.3 == "Mattermost")
        .map(|(t, r, m, _)| (t, r, m))
        .collect()
}

async fn wait_event(env: &common::Env, reason: &str) -> String {
    wait_until(&format!("event {reason}"), TIMEOUT, || async {
        event_texts(env)
            .await
            .into_iter()
            .find(|(_, r, _)| r == reason)
            .map(|(_, _, m)| m)
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn restricted_namespace_runs_the_defaults_and_reports_a_rejected_pod_spec() {
    let env = env("mm-psa").await;
    let namespaces: Api<Namespace> = Api::all(env.client.clone());
    let labels = json!({"metadata": {"labels": {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
    }}});
    namespaces
        .patch(env.name(), &PatchParams::default(), &Patch::Merge(&labels))
        .await
        .unwrap();
    env.apply(SECRETS).await;
    env.apply(FULL).await;
    let mm = env.wait_state(NAME, "stable").await;
    assert_eq!(mm.status.as_ref().unwrap().version.as_deref(), Some("9.11.0"));
    let dep: Deployment = env.api().get(NAME).await.unwrap();
    let pod = dep.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.security_context.unwrap().run_as_user, Some(2000));

    // A container security context that restricted rejects, through podTemplate.
    env.patch_spec(
        NAME,
        json!({"podTemplate": {"containerSecurityContext": {"privileged": true}}}),
    )
    .await;
    let mm = env
        .wait_condition(NAME, "Degraded", "True", Some("FailedCreate"))
        .await;
    let (_, _, message) = condition(&mm, "Degraded");
    println!("Degraded message: {message}");
    assert!(message.contains("violates PodSecurity"), "{message}");
    assert!(message.len() <= 512, "short: {} bytes", message.len());
    let st = mm.status.unwrap();
    assert_ne!(st.state.as_deref(), Some("stable"));
    assert_eq!(st.version.as_deref(), Some("9.11.0"), "the old pods still serve");
    let note = wait_event(&env, "FailedCreate").await;
    assert!(note.contains("violates PodSecurity"));
    // Taking the override back heals.
    env.patch_spec(NAME, json!({"podTemplate": null})).await;
    env.wait_state(NAME, "stable").await;
    env.cleanup().await;
}

#[tokio::test]
async fn unschedulable_pods_degrade_and_no_version_is_reported_while_nothing_serves() {
    let env = env("mm-unsched").await;
    env.apply(SECRETS).await;
    env.apply(&FULL.replace(
        "version: 9.11.0",
        "version: latest\n  scheduling: {nodeSelector: {testenv.invalid/no-such: node}}",
    ))
    .await;
    let mm = env
        .wait_condition(NAME, "Degraded", "True", Some("Unschedulable"))
        .await;
    let (_, _, message) = condition(&mm, "Degraded");
    assert!(message.contains("nodes are available"), "{message}");
    let st = mm.status.clone().unwrap();
    assert_eq!(st.state.as_deref(), Some("reconciling"));
    assert_eq!((st.version, st.image), (None, None), "nothing serves");
    assert_eq!(condition(&mm, "ImagePinned").1, "MutableTag");
    wait_event(&env, "MutableTag").await;
    wait_event(&env, "Unschedulable").await;

    env.patch_spec(NAME, json!({"version": "9.11.0", "scheduling": null}))
        .await;
    let mm = env.wait_state(NAME, "stable").await;
    assert_eq!(mm.status.as_ref().unwrap().version.as_deref(), Some("9.11.0"));
    assert_eq!(condition(&mm, "ImagePinned").0, "True");
    env.cleanup().await;
}

#[tokio::test]
async fn image_pull_errors_and_crash_loops_degrade_with_the_kubelets_reason() {
    let env = env("mm-podfail").await;
    env.apply(SECRETS).await;
    for (name, version, reason, says) in [
        (
            "mm-pull",
            "9.11.0-pull-error",
            "ImagePullBackOff",
            "Back-off pulling image",
        ),
        (
            "mm-crash",
            "9.11.0-crash-loop",
            "CrashLoopBackOff",
            "restarting failed container",
        ),
    ] {
        env.apply(
            &FULL
                .replace(NAME, name)
                .replace("version: 9.11.0", &format!("version: {version}")),
        )
        .await;
        let mm = env.wait_condition(name, "Degraded", "True", Some(reason)).await;
        let (_, _, message) = condition(&mm, "Degraded");
        assert!(message.contains(says), "{name}: {message}");
        let st = mm.status.clone().unwrap();
        assert_ne!(st.state.as_deref(), Some("stable"), "{name}");
        assert_eq!((st.version, st.image), (None, None), "{name}: nothing serves");
        assert_eq!(condition(&mm, "Stalled").0, "True", "{name}: a person has to act");
        wait_event(&env, reason).await;
        // A good version heals it.
        env.patch_spec(name, json!({"version": "9.11.0"})).await;
        let mm = env.wait_state(name, "stable").await;
        assert_eq!(condition(&mm, "Degraded").0, "False", "{name}");
    }
    env.cleanup().await;
}

/// 63 characters: the longest name the Go operator accepts.
const LONG: &str = "mattermost-installation-with-a-name-of-exactly-sixty-three-char";

#[tokio::test]
async fn a_63_character_name_reaches_stable_with_valid_children() {
    assert_eq!(LONG.len(), 63);
    let env = env("mm-long").await;
    env.apply(SECRETS).await;
    env.apply(&FULL.replace(NAME, LONG)).await;
    env.patch_spec(LONG, json!({"jobServer": {"dedicatedJobServer": true}}))
        .await;
    let mm = env.wait_state(LONG, "stable").await;
    let (status, _, _) = condition(&mm, "Degraded");
    assert_eq!(status, "False");
    // Go names where they fit; the peer Service (a DNS label) shortened with a hash.
    let deps: Api<Deployment> = env.api();
    deps.get(LONG).await.unwrap();
    deps.get(&format!("{LONG}-jobserver")).await.unwrap();
    env.api::<ServiceAccount>().get(LONG).await.unwrap();
    env.api::<Ingress>().get(LONG).await.unwrap();
    let services: Vec<String> = env
        .api::<Service>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|s| s.name_any())
        .collect();
    assert_eq!(services.len(), 2, "{services:?}");
    assert!(services.contains(&LONG.to_owned()));
    let peers = services.iter().find(|s| s.as_str() != LONG).unwrap();
    assert!(peers.len() <= 63 && peers.ends_with("-peers"), "{peers}");
    let warnings: Vec<_> = event_texts(&env)
        .await
        .into_iter()
        .filter(|(t, _, _)| t == "Warning")
        .collect();
    assert!(warnings.is_empty(), "{warnings:?}");
    env.cleanup().await;
}

#[tokio::test]
async fn a_scale_up_without_room_is_refused_by_the_capacity_preflight() {
    let env = env("mm-scale").await;
    env.apply(SECRETS).await;
    env.apply(&FULL.replace(
        "size: 1000users",
        "replicas: 1\n  scheduling: {resources: {requests: {cpu: \"4\"}}}",
    ))
    .await;
    env.wait_state(NAME, "stable").await;
    // 3 nodes of 8 CPUs: one pod of 4 runs, room for 5 more, not for 7.
    env.patch_spec(NAME, json!({"replicas": 8})).await;
    let mm = env
        .wait_condition(NAME, "Degraded", "True", Some("InsufficientCapacity"))
        .await;
    let (_, _, message) = condition(&mm, "Degraded");
    assert!(message.contains("scale-up from 1 to 8"), "{message}");
    let dep: Deployment = env.api().get(NAME).await.unwrap();
    assert_eq!(
        dep.spec.unwrap().replicas,
        Some(1),
        "the Deployment was not scaled"
    );
    env.patch_spec(NAME, json!({"replicas": 3})).await;
    let mm = env.wait_state(NAME, "stable").await;
    assert_eq!(mm.status.unwrap().replicas, Some(3));
    env.cleanup().await;
}

#[tokio::test]
async fn credentials_in_a_failed_update_job_message_reach_neither_status_nor_events() {
    let env = env("mm-redact").await;
    env.apply(SECRETS).await;
    env.apply(FULL).await;
    env.wait_state(NAME, "stable").await;
    // The migration "logs" the connection string, the bare password and the S3 key (values of
    // tests/fixtures/secrets.yaml); kwok makes that the termination message.
    let leak = "pq: connecting to postgres://mmuser:s3cr3t-db-pass@db.example.test:5432/mattermost?sslmode=disable \
                failed\nretrying with password s3cr3t-db-pass and s3 key s3cr3t-s3-key\nmigration failed";
    env.patch_spec(
        NAME,
        json!({
            "version": "9.12.0-fail",
            "updateJob": {"extraAnnotations": {"testenv.invalid/termination-message": leak}},
        }),
    )
    .await;
    let mm = env
        .wait_condition(NAME, "UpdateJobSucceeded", "False", Some("UpdateJobFailed"))
        .await;
    wait_event(&env, "UpdateJobFailed").await;
    let status = serde_json::to_string(&mm.status).unwrap();
    let error = mm.status.as_ref().unwrap().error.clone().unwrap();
    println!("status.error: {error}");
    assert!(
        error.contains("migration failed"),
        "the message still says why: {error}"
    );
    assert!(error.contains("[redacted]"), "{error}");
    let events = format!("{:?}", all_events(&env).await);
    for secret in ["s3cr3t-db-pass", "s3cr3t-s3-key", "mmuser:", "postgres://mmuser"] {
        assert!(!status.contains(secret), "status leaks {secret}: {status}");
        assert!(!events.contains(secret), "events leak {secret}: {events}");
    }
    env.cleanup().await;
}
