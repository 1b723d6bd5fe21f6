//! One installation's life under an operator, used to prove that a set of permissions (RBAC of
//! the chart, namespace-scoped Roles) is enough: install, upgrade, a failed update Job and its
//! recovery, a broken secret, and a ClusterInstallation migration.

use kube::Api;
use kube::api::Patch;
use mattermost_api::v1alpha1::ClusterInstallation;
use serde_json::json;

use super::{Env, SECRETS, TIMEOUT};

/// Install, upgrade, failed update Job, recovery, missing license secret.
pub async fn install_upgrade_fail_recover(env: &Env) {
    env.apply(SECRETS).await;
    env.apply(include_str!("../fixtures/mattermost-external.yaml"))
        .await;
    env.wait_state("mm-example-full", "stable").await;
    env.patch_spec("mm-example-full", json!({"version": "9.11.1", "replicas": 3}))
        .await;
    let mm = env.wait_state("mm-example-full", "stable").await;
    assert_eq!(mm.status.unwrap().version.as_deref(), Some("9.11.1"));
    // An image whose update Job fails (kwok: a tag containing "fail").
    env.patch_spec("mm-example-full", json!({"version": "9.11.2-fail"}))
        .await;
    env.wait_condition(
        "mm-example-full",
        "UpdateJobSucceeded",
        "False",
        Some("UpdateJobFailed"),
    )
    .await;
    env.patch_spec("mm-example-full", json!({"version": "9.11.1"}))
        .await;
    env.wait_state("mm-example-full", "stable").await;
    env.patch_spec("mm-example-full", json!({"licenseSecret": "missing"}))
        .await;
    env.wait_condition(
        "mm-example-full",
        "LicenseConfigured",
        "False",
        Some("SecretNotFound"),
    )
    .await;
}

/// A legacy ClusterInstallation that reaches stable and migrates to a Mattermost.
pub async fn migrate_cluster_installation(env: &Env) {
    env.apply(SECRETS).await;
    env.apply(include_str!("../fixtures/clusterinstallation.yaml"))
        .await;
    let cis: Api<ClusterInstallation> = env.api();
    testenv::wait_for_object(&cis, "mm-legacy", TIMEOUT, |ci: &ClusterInstallation| {
        ci.status.as_ref().and_then(|s| s.state.as_deref()) == Some("stable")
    })
    .await
    .unwrap();
    cis.patch(
        "mm-legacy",
        &Default::default(),
        &Patch::Merge(json!({"spec": {"migrate": true}})),
    )
    .await
    .unwrap();
    testenv::wait_until("migrated", TIMEOUT, || async {
        cis.get_opt("mm-legacy").await.unwrap().is_none().then_some(())
    })
    .await
    .unwrap();
    env.wait_state("mm-legacy", "stable").await;
}

/// Requests of `user` the API server refused (403) since `mark`, cluster-scoped or in one of
/// `namespaces`. (An operator watching every namespace also meets namespaces other tests are
/// deleting, where every write is refused with 403 `NamespaceTerminating`: not an RBAC gap.)
pub fn denied(
    audit: &testenv::AuditLog,
    mark: testenv::AuditMark,
    user: &str,
    namespaces: &[&str],
) -> Vec<testenv::AuditEvent> {
    audit
        .since(mark)
        .unwrap()
        .into_iter()
        .filter(|e| e.user.username == user && e.response_status.as_ref().map(|r| r.code) == Some(403))
        .filter(|e| {
            e.object_ref
                .as_ref()
                .and_then(|o| o.namespace.as_deref())
                .is_none_or(|ns| namespaces.contains(&ns))
        })
        .collect()
}

/// ServiceAccount `operator` in the test namespace, bound to (a copy of) the ClusterRole of
/// `deploy/operator.yaml` and nothing else, with a kubeconfig holding its token.
pub struct ChartRole {
    /// Kubeconfig of the ServiceAccount.
    pub kubeconfig: std::path::PathBuf,
    /// `system:serviceaccount:<ns>:operator`.
    pub user: String,
    name: String,
    client: kube::Client,
}

impl ChartRole {
    /// Creates the role, the account and the binding.
    pub async fn bind(env: &Env) -> Self {
        use k8s_openapi::api::core::v1::ServiceAccount;
        use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
        use kube::api::{PatchParams, PostParams};
        let manifests = include_str!("../../../../deploy/operator.yaml");
        let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(manifests).unwrap();
        let role = docs
            .iter()
            .find(|d| d["kind"] == "ClusterRole")
            .expect("a ClusterRole in deploy/operator.yaml");
        let mut role: ClusterRole = serde_json::from_value(role.clone()).unwrap();
        let name = format!("mattermost-operator-{}", env.name());
        role.metadata.name = Some(name.clone());
        let pp = PatchParams::apply("testenv").force();
        Api::<ClusterRole>::all(env.client.clone())
            .patch(&name, &pp, &Patch::Apply(&role))
            .await
            .unwrap();
        let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "operator"}})).unwrap();
        env.api::<ServiceAccount>()
            .create(&PostParams::default(), &sa)
            .await
            .unwrap();
        let binding: ClusterRoleBinding = serde_json::from_value(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": "operator", "namespace": env.name()}]
        }))
        .unwrap();
        Api::<ClusterRoleBinding>::all(env.client.clone())
            .patch(&name, &pp, &Patch::Apply(&binding))
            .await
            .unwrap();
        let kubeconfig =
            super::process::service_account_kubeconfig(&env.client, env.name(), "operator").await;
        Self {
            kubeconfig,
            user: format!("system:serviceaccount:{}:operator", env.name()),
            name,
            client: env.client.clone(),
        }
    }

    /// Removes the role, the binding and the kubeconfig file.
    pub async fn remove(self) {
        use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
        Api::<ClusterRoleBinding>::all(self.client.clone())
            .delete(&self.name, &Default::default())
            .await
            .unwrap();
        Api::<ClusterRole>::all(self.client)
            .delete(&self.name, &Default::default())
            .await
            .unwrap();
        let _ = std::fs::remove_file(self.kubeconfig);
    }
}
