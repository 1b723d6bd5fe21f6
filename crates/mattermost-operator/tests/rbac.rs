//! `deploy/rbac.yaml` is enough: the operator runs under a ServiceAccount bound to that ClusterRole
//! (and nothing else) and takes an installation through install, upgrade and a broken secret.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{SECRETS, env_without_operator};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Patch, PatchParams, PostParams};
use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde_json::json;

const RBAC: &str = include_str!("../../../deploy/rbac.yaml");

#[tokio::test]
async fn the_operator_runs_with_exactly_the_documented_rbac() {
    let mut env = env_without_operator("mm-rbac").await;
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(RBAC).unwrap();
    let mut role: ClusterRole = serde_json::from_value(docs[0].clone()).unwrap();
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

    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..Default::default()
        }),
        ..Default::default()
    };
    let token = sas
        .create_token_request("operator", &PostParams::default(), &request)
        .await
        .unwrap();
    let token = token.status.unwrap().token;
    let kc = Kubeconfig::read_from(testenv::kubeconfig_path()).unwrap();
    let mut config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    config.auth_info = serde_json::from_value::<AuthInfo>(json!({ "token": token })).unwrap();
    let audit = testenv::AuditLog::new();
    let mark = audit.mark().unwrap();
    env.start_operator_as(Client::try_from(config).unwrap());

    env.apply(SECRETS).await;
    env.apply(include_str!("fixtures/mattermost-external.yaml")).await;
    env.wait_state("mm-example-full", "stable").await;
    env.patch_spec("mm-example-full", json!({"version": "9.11.1", "replicas": 3}))
        .await;
    let mm = env.wait_state("mm-example-full", "stable").await;
    assert_eq!(mm.status.unwrap().version.as_deref(), Some("9.11.1"));
    env.patch_spec("mm-example-full", json!({"licenseSecret": "missing"}))
        .await;
    env.wait_condition(
        "mm-example-full",
        "LicenseConfigured",
        "False",
        Some("SecretNotFound"),
    )
    .await;

    // A legacy installation, migrated under the same role.
    env.apply(include_str!("fixtures/clusterinstallation.yaml")).await;
    let cis: Api<mattermost_api::v1alpha1::ClusterInstallation> = env.api();
    testenv::wait_for_object(
        &cis,
        "mm-legacy",
        common::TIMEOUT,
        |ci: &mattermost_api::v1alpha1::ClusterInstallation| {
            ci.status.as_ref().and_then(|s| s.state.as_deref()) == Some("stable")
        },
    )
    .await
    .unwrap();
    cis.patch(
        "mm-legacy",
        &Default::default(),
        &Patch::Merge(json!({"spec": {"migrate": true}})),
    )
    .await
    .unwrap();
    testenv::wait_until("migrated", common::TIMEOUT, || async {
        cis.get_opt("mm-legacy").await.unwrap().is_none().then_some(())
    })
    .await
    .unwrap();
    env.wait_state("mm-legacy", "stable").await;

    let user = format!("system:serviceaccount:{}:operator", env.name());
    let denied: Vec<_> = audit
        .since(mark)
        .unwrap()
        .into_iter()
        .filter(|e| e.user.username == user && e.response_status.as_ref().map(|r| r.code) == Some(403))
        .collect();
    assert!(
        denied.is_empty(),
        "requests the ClusterRole does not allow: {denied:#?}"
    );

    bindings.delete(&role_name, &Default::default()).await.unwrap();
    roles.delete(&role_name, &Default::default()).await.unwrap();
    env.cleanup().await;
}
