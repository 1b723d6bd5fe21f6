//! Self-healing: every child of a stable installation that is deleted comes back within seconds,
//! the installation is never `stable` while a child is missing, and the periodic resync of a
//! stable installation costs no request at all.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fmt::Debug;
use std::time::{Duration, Instant};

use common::{SECRETS, env_without_operator, operator_clients, reconciles};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use mattermost_api::v1beta1::Mattermost;
use serde::de::DeserializeOwned;
use serde_json::json;
use testenv::{AuditLog, wait_until};

const FULL: &str = include_str!("fixtures/mattermost-external.yaml");
const NAME: &str = "mm-example-full";
const HEAL_WITHIN: Duration = Duration::from_secs(10);
const HOLD: &str = "test.invalid/hold";

/// Waits until `name` exists again with another uid than `old`; returns how long that took.
async fn recreated<K>(api: &Api<K>, name: &str, old: &str, since: Instant) -> Duration
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    wait_until(&format!("{name} recreated"), HEAL_WITHIN, || async {
        let obj = api.get_opt(name).await.unwrap()?;
        (obj.uid().as_deref() != Some(old) && obj.meta().deletion_timestamp.is_none()).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{}: {e}", K::kind(&())));
    since.elapsed()
}

/// Deletes the child and measures how long until it is back.
async fn delete_and_time<K>(env: &common::Env, name: &str) -> Duration
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let api: Api<K> = env.api();
    let uid = api.get(name).await.unwrap().uid().unwrap();
    api.delete(name, &DeleteParams::default()).await.unwrap();
    let took = recreated(&api, name, &uid, Instant::now()).await;
    env.wait_state(NAME, "stable").await;
    took
}

/// Holds the child in deletion with a finalizer: the installation must leave `stable` and say
/// which child is missing; released, the child is recreated and the installation is stable again.
async fn held_in_deletion<K>(env: &common::Env, name: &str) -> Duration
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let kind = K::kind(&()).into_owned();
    let api: Api<K> = env.api();
    let uid = api.get(name).await.unwrap().uid().unwrap();
    let hold = json!({"metadata": {"finalizers": [HOLD]}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&hold))
        .await
        .unwrap();
    api.delete(name, &DeleteParams::default()).await.unwrap();
    let mm = env
        .wait_condition(NAME, "Ready", "False", Some("ChildrenMissing"))
        .await;
    let status = mm.status.unwrap();
    assert_ne!(status.state.as_deref(), Some("stable"), "{kind} missing");
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert!(
        ready.message.contains(&format!("{kind} {name}")),
        "{}",
        ready.message
    );
    // Still missing a while later (a resync ran meanwhile): never stable.
    let mms: Api<Mattermost> = env.api();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mm = mms.get(NAME).await.unwrap();
    assert_ne!(
        mm.status.unwrap().state.as_deref(),
        Some("stable"),
        "{kind} still held"
    );

    let release = json!({"metadata": {"finalizers": null}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&release))
        .await
        .unwrap();
    let took = recreated(&api, name, &uid, Instant::now()).await;
    env.wait_state(NAME, "stable").await;
    took
}

#[tokio::test]
async fn deleted_children_are_recreated_within_seconds_and_never_hidden_behind_stable() {
    let mut env = env_without_operator("heal").await;
    env.resync_period = Duration::from_secs(2);
    env.start_operator_as(operator_clients().await);
    env.apply(SECRETS).await;
    env.apply(FULL).await;
    env.wait_state(NAME, "stable").await;
    let peers = format!("{NAME}-peers");

    let mut times = vec![
        ("Service", delete_and_time::<Service>(&env, NAME).await),
        ("Service -peers", delete_and_time::<Service>(&env, &peers).await),
        (
            "ServiceAccount",
            delete_and_time::<ServiceAccount>(&env, NAME).await,
        ),
        ("Ingress", delete_and_time::<Ingress>(&env, NAME).await),
        (
            "PodDisruptionBudget",
            delete_and_time::<PodDisruptionBudget>(&env, NAME).await,
        ),
        ("Deployment", delete_and_time::<Deployment>(&env, NAME).await),
    ];
    eprintln!("recreated after delete: {times:?}");

    times = vec![
        ("Service", held_in_deletion::<Service>(&env, NAME).await),
        ("Service -peers", held_in_deletion::<Service>(&env, &peers).await),
        (
            "ServiceAccount",
            held_in_deletion::<ServiceAccount>(&env, NAME).await,
        ),
        ("Ingress", held_in_deletion::<Ingress>(&env, NAME).await),
        (
            "PodDisruptionBudget",
            held_in_deletion::<PodDisruptionBudget>(&env, NAME).await,
        ),
        ("Deployment", held_in_deletion::<Deployment>(&env, NAME).await),
    ];
    eprintln!("recreated after release of a held deletion: {times:?}");
    env.cleanup().await;
}

#[tokio::test]
async fn the_resync_of_a_stable_installation_sends_no_request() {
    let mut env = env_without_operator("resync").await;
    env.resync_period = Duration::from_secs(2);
    env.start_operator_as(operator_clients().await);
    env.apply(SECRETS).await;
    env.apply(FULL).await;
    env.wait_state(NAME, "stable").await;
    // One reconcile after `stable` may still settle the status (the write that follows the
    // observation): count from the first resync on.
    let settled = reconciles(&env);
    wait_until("a first resync", Duration::from_secs(30), || async {
        (reconciles(&env) > settled).then_some(())
    })
    .await
    .unwrap();
    let audit = AuditLog::new();
    let mark = audit.mark().unwrap();
    let before = reconciles(&env);
    wait_until("five resyncs", Duration::from_secs(30), || async {
        (reconciles(&env) >= before + 5).then_some(())
    })
    .await
    .unwrap();
    let ns = env.name().to_owned();
    let requests: Vec<String> = audit
        .since(mark)
        .unwrap()
        .into_iter()
        .filter(|e| e.user_agent.starts_with("mattermost-operator"))
        .filter(|e| e.object_ref.as_ref().and_then(|o| o.namespace.as_deref()) == Some(ns.as_str()))
        .filter(|e| e.verb != "watch")
        .map(|e| format!("{} {}", e.verb, e.resource()))
        .collect();
    assert!(
        requests.is_empty(),
        "{} reconciles sent requests: {requests:?}",
        reconciles(&env) - before
    );
    let mm = Api::<Mattermost>::namespaced(env.client.clone(), &ns)
        .get(NAME)
        .await
        .unwrap();
    assert_eq!(mm.status.unwrap().state.as_deref(), Some("stable"));
    env.cleanup().await;
}
