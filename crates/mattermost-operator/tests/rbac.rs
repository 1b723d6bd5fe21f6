//! The ClusterRole of `deploy/operator.yaml` (rendered from the chart) is enough: the operator runs
//! under a ServiceAccount bound to that ClusterRole (and nothing else) and takes installations
//! through install, upgrade, a failed update Job, a broken secret and a migration.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::env_without_operator;
use common::scenario;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

const MANIFESTS: &str = include_str!("../../../deploy/operator.yaml");

#[tokio::test]
async fn the_operator_runs_with_exactly_the_documented_rbac() {
    let mut env = env_without_operator("mm-rbac").await;
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(MANIFESTS).unwrap();
    let role = docs
        .iter()
        .find(|d| d["kind"] == "ClusterRole")
        .expect("a ClusterRole in deploy/operator.yaml");
    let mut role: ClusterRole = serde_json::from_value(role.clone()).unwrap();
    let role_name = format!("mattermost-operator-{}", env.name());
    role.metadata.name = Some(role_name.clone());
    let pp = PatchParams::apply("testenv").force();
    let roles: Api<ClusterRole> = Api::all(env.client.clone());
    roles.patch(&role_name, &pp, &Patch::Apply(&role)).await.unwrap();
    let sas: Api<ServiceAccount> = env.api();
    let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "operator"}})).unwrap();
    sas.create(&PostParams::default(), &sa).await.unwrap();
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": role_name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role_name},
        "subjects": [{"kind": "ServiceAccount", "name": "operator", "namespace": env.name()}]
    }))
    .unwrap();
    let bindings: Api<ClusterRoleBinding> = Api::all(env.client.clone());
    bindings
        .patch(&role_name, &pp, &Patch::Apply(&binding))
        .await
        .unwrap();

    let kubeconfig = common::process::service_account_kubeconfig(&env.client, env.name(), "operator").await;
    let audit = testenv::AuditLog::new();
    let mark = audit.mark().unwrap();
    let client = testenv::client_from(&kubeconfig).await.unwrap();
    env.start_operator_as(Client::clone(&client));

    scenario::install_upgrade_fail_recover(&env).await;
    scenario::migrate_cluster_installation(&env).await;

    let user = format!("system:serviceaccount:{}:operator", env.name());
    let denied = scenario::denied(&audit, mark, &user, &[env.name()]);
    assert!(
        denied.is_empty(),
        "requests the ClusterRole does not allow: {denied:#?}"
    );

    bindings.delete(&role_name, &Default::default()).await.unwrap();
    roles.delete(&role_name, &Default::default()).await.unwrap();
    let _ = std::fs::remove_file(kubeconfig);
    env.cleanup().await;
}
