//! Recovery from kube-apiserver restarts: the operator binary keeps running while the API server
//! is killed and started again 15 s later; `/readyz` reports the outage, and a change made after
//! the restart reaches the Deployment within 30 s — three times in a row, then once more in the
//! middle of an upgrade that completes without ready endpoints ever dropping below the replicas.
//!
//! The control plane's node-monitor grace period (2 min, `hack/testenv/up.sh`) keeps kwok's nodes
//! Ready through the outage, so every endpoint dip would be the operator's.
//!
//! A restart disturbs every client of the control plane, so this file holds one test that runs
//! the scenarios in order; cargo runs test binaries one after another, so no other test sees it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::process::{Operator, free_port};
use common::{SECRETS, TIMEOUT, env_without_operator};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;

use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::json;
use testenv::{EndpointWatcher, restart_apiserver, wait_until};

const FULL: &str = include_str!("fixtures/mattermost-external.yaml");
const NAME: &str = "mm-example-full";
/// How long the API server stays down (as in the report).
const DOWN: Duration = Duration::from_secs(15);
/// A change made after the restart must reach the Deployment within this.
const CHANGE_WITHIN: Duration = Duration::from_secs(30);

async fn readyz(op: &Operator) -> Option<u16> {
    op.get("/readyz").await.map(|(code, _)| code)
}

/// Restarts the API server and checks that the operator's `/readyz` went 503 during the outage.
async fn outage(op: &Operator) -> testenv::Restart {
    let unready = async {
        wait_until("/readyz 503 while the API server is down", DOWN, || async {
            (readyz(op).await == Some(503)).then_some(())
        })
        .await
    };
    let (restart, unready) = tokio::join!(restart_apiserver(DOWN), unready);
    unready.unwrap_or_else(|e| panic!("{e}; log:\n{}", op.log_text()));
    restart.expect("restart kube-apiserver")
}

/// Waits until the operator's `/readyz` answers 200.
async fn ready(op: &Operator) {
    wait_until("/readyz 200", Duration::from_secs(30), || async {
        (readyz(op).await == Some(200)).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}; log:\n{}", op.log_text()));
}

/// Waits until the Deployment asks for `replicas`; returns how long since `since`.
async fn deployment_replicas(
    deployments: &Api<Deployment>,
    replicas: i32,
    since: Instant,
    op: &Operator,
) -> Duration {
    wait_until(
        &format!("Deployment at {replicas} replicas"),
        CHANGE_WITHIN,
        || async {
            let d = deployments.get(NAME).await.ok()?;
            (d.spec?.replicas == Some(replicas)).then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}; log:\n{}", op.log_text()));
    since.elapsed()
}

#[tokio::test]
async fn changes_reach_the_deployment_within_seconds_after_api_server_restarts() {
    let env = env_without_operator("restart").await;
    env.apply(SECRETS).await;
    env.apply(FULL).await;
    let port = free_port();
    let op = Operator::spawn(
        &[format!("--metrics-addr=127.0.0.1:{port}")],
        &[
            ("WATCH_NAMESPACE".to_owned(), env.name().to_owned()),
            ("LOG_LEVEL".to_owned(), "info".to_owned()),
        ],
        &testenv::kubeconfig_path(),
        port,
    );
    op.wait_healthy().await;
    env.wait_state(NAME, "stable").await;
    // A named size decides the replicas; drop it so that `replicas` does.
    env.patch_spec(NAME, json!({"size": null, "replicas": 2})).await;
    env.wait_state(NAME, "stable").await;
    ready(&op).await;

    let mut figures = Vec::new();
    for (run, replicas) in [(1, 3), (2, 2), (3, 3)] {
        let restart = outage(&op).await;
        // A fresh client: nothing of the test's own connections from before the restart.
        let client = testenv::client_from(&testenv::kubeconfig_path()).await.unwrap();
        let mms: Api<mattermost_api::v1beta1::Mattermost> = Api::namespaced(client.clone(), env.name());
        let changed = Instant::now();
        mms.patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": replicas}})),
        )
        .await
        .unwrap();
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), env.name());
        let reached = deployment_replicas(&deployments, replicas, changed, &op).await;
        ready(&op).await;
        let ready = restart.ready_at.elapsed();
        env.wait_state(NAME, "stable").await;
        eprintln!(
            "run {run}: change reached the Deployment after {reached:?}; /readyz 200 {ready:?} after the API server"
        );
        figures.push(reached);
    }

    // Once more in the middle of an upgrade.
    let client = testenv::client_from(&testenv::kubeconfig_path()).await.unwrap();
    let endpoints = EndpointWatcher::start(&client, env.name(), NAME).await.unwrap();
    wait_until("3 ready endpoints", TIMEOUT, || async {
        (endpoints.current() == 3).then_some(())
    })
    .await
    .unwrap();
    let since = Instant::now();
    env.patch_spec(NAME, json!({"version": "9.11.1"})).await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), env.name());
    wait_until("the update Job", TIMEOUT, || async {
        let list = jobs.list(&ListParams::default()).await.ok()?;
        (!list.items.is_empty()).then_some(())
    })
    .await
    .unwrap();
    let restart = outage(&op).await;
    let client = testenv::client_from(&testenv::kubeconfig_path()).await.unwrap();
    let mms: Api<mattermost_api::v1beta1::Mattermost> = Api::namespaced(client.clone(), env.name());
    // Longer than TIMEOUT: after an outage kube-controller-manager's Job and Deployment
    // controllers take up to a minute or more to act again (409s on the Job's status in the audit
    // log); the operator patches the Deployment within milliseconds of the Job's completion.
    let mm = testenv::wait_for_object(
        &mms,
        NAME,
        Duration::from_secs(240),
        |mm: &mattermost_api::v1beta1::Mattermost| {
            let st = mm.status.as_ref();
            st.and_then(|s| s.state.as_deref()) == Some("stable")
                && st.and_then(|s| s.version.as_deref()) == Some("9.11.1")
                && st.and_then(|s| s.observed_generation) == mm.metadata.generation
        },
    )
    .await
    .unwrap_or_else(|e| panic!("upgrade after the restart: {e}; log:\n{}", op.log_text()));
    let done = restart.ready_at.elapsed();
    assert_eq!(mm.status.unwrap().replicas, Some(3));
    assert!(
        endpoints.min_ready_since(since) >= 3,
        "ready endpoints dipped during the upgrade: {:?}",
        endpoints.history()
    );
    eprintln!(
        "upgrade across a restart: stable at 9.11.1 {done:?} after the API server; endpoints {:?}",
        endpoints.history()
    );
    assert!(figures.iter().all(|d| *d <= CHANGE_WITHIN), "{figures:?}");
    drop(op);
    env.cleanup().await;
}
