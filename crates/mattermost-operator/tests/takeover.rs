//! Takeover: objects laid out exactly as the Go operator creates them are adopted without a new
//! ReplicaSet and without restarting a pod.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;

use common::{SECRETS, TIMEOUT, env_without_operator};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Pod, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{ListParams, PostParams};
use kube::{Api, ResourceExt};
use mattermost_api::v1beta1::Mattermost;
use serde::de::DeserializeOwned;
use testenv::wait_for_object;

const FULL: &str = include_str!("fixtures/mattermost-external.yaml");
const GO_CHILDREN: &str = include_str!("fixtures/go-operator-children.yaml");
const NAME: &str = "mm-example-full";

/// Creates the object with a plain POST under the Go operator's manager, as its client did.
async fn create<K>(api: &Api<K>, doc: &serde_json::Value)
where
    K: kube::Resource + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let obj: K = serde_json::from_value(doc.clone()).unwrap();
    let pp = PostParams {
        field_manager: Some("manager".into()),
        ..Default::default()
    };
    api.create(&pp, &obj).await.unwrap();
}

#[tokio::test]
async fn go_operator_installation_is_adopted_without_new_replicaset_or_pod_restart() {
    adopt("mm-takeover", NAME).await;
}

/// The longest name the Go operator accepts: its children keep their Go names.
#[tokio::test]
async fn go_operator_installation_with_a_63_character_name_is_adopted_without_pod_restart() {
    adopt(
        "mm-takeover-long",
        "mattermost-installation-with-a-name-of-exactly-sixty-three-char",
    )
    .await;
}

async fn adopt(prefix: &str, name: &str) {
    let mut env = env_without_operator(prefix).await;
    env.apply(SECRETS).await;
    env.apply(&FULL.replace(NAME, name)).await;
    let mms: Api<Mattermost> = env.api();
    let uid = mms.get(name).await.unwrap().uid().unwrap();
    let docs: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(&GO_CHILDREN.replace("OWNER_UID", &uid).replace(NAME, name)).unwrap();
    for doc in docs.iter().filter(|d| !d.is_null()) {
        match doc["kind"].as_str().unwrap() {
            "ServiceAccount" => create::<ServiceAccount>(&env.api(), doc).await,
            "Service" => create::<Service>(&env.api(), doc).await,
            "Ingress" => create::<Ingress>(&env.api(), doc).await,
            "Deployment" => create::<Deployment>(&env.api(), doc).await,
            other => panic!("unexpected {other}"),
        }
    }
    let deps: Api<Deployment> = env.api();
    let before = wait_for_object(&deps, name, TIMEOUT, |d: &Deployment| {
        d.status.as_ref().and_then(|s| s.available_replicas) == Some(2)
    })
    .await
    .unwrap();
    let rs: Api<ReplicaSet> = env.api();
    let pods: Api<Pod> = env.api();
    let rs_names = |l: Vec<ReplicaSet>| l.iter().map(|r| r.name_any()).collect::<BTreeSet<_>>();
    let pod_uids = |l: Vec<Pod>| l.iter().filter_map(|p| p.uid()).collect::<BTreeSet<_>>();
    let rs_before = rs_names(rs.list(&ListParams::default()).await.unwrap().items);
    let pods_before = pod_uids(pods.list(&ListParams::default()).await.unwrap().items);
    assert_eq!((rs_before.len(), pods_before.len()), (1, 2));

    env.start_operator();
    let mm = env.wait_state(name, "stable").await;
    assert_eq!(mm.status.as_ref().unwrap().version.as_deref(), Some("9.11.0"));
    // Give a wrongly changed template time to show up as a new ReplicaSet.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let after = deps.get(name).await.unwrap();
    // (The generation may move once: Deployments count annotation changes, and ours is new.)
    let template = |d: &Deployment| serde_json::to_value(&d.spec.as_ref().unwrap().template).unwrap();
    assert_eq!(template(&after), template(&before), "pod template unchanged");
    assert_eq!(
        rs_names(rs.list(&ListParams::default()).await.unwrap().items),
        rs_before,
        "no new ReplicaSet"
    );
    assert_eq!(
        pod_uids(pods.list(&ListParams::default()).await.unwrap().items),
        pods_before,
        "no pod restarted"
    );
    assert!(
        after
            .annotations()
            .contains_key("installation.mattermost.com/applied-hash"),
        "now applied by us"
    );
    assert!(
        !after.annotations().contains_key("mattermost.com/last-applied"),
        "stale Go annotation removed"
    );
    let svc: Service = env.api().get(name).await.unwrap();
    assert!(!svc.annotations().contains_key("mattermost.com/last-applied"));
    let spec = svc.spec.unwrap();
    assert_eq!(spec.cluster_ip.as_deref(), Some("None"), "immutable field kept");
    assert_ne!(
        spec.publish_not_ready_addresses,
        Some(true),
        "traffic only to ready pods from now on"
    );
    env.cleanup().await;
}
