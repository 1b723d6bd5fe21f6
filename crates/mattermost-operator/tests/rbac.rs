//! The ClusterRole of `deploy/operator.yaml` (rendered from the chart) is enough: the operator runs
//! under a ServiceAccount bound to that ClusterRole (and nothing else) and takes installations
//! through install, upgrade, a failed update Job, a broken secret and a migration.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::env_without_operator;
use common::scenario::{self, ChartRole};

#[tokio::test]
async fn the_operator_runs_with_exactly_the_documented_rbac() {
    let mut env = env_without_operator("mm-rbac").await;
    let role = ChartRole::bind(&env).await;
    let audit = testenv::AuditLog::new();
    let mark = audit.mark().unwrap();
    let client = testenv::client_from(&role.kubeconfig).await.unwrap();
    env.start_operator_as(client);

    scenario::install_upgrade_fail_recover(&env).await;
    scenario::migrate_cluster_installation(&env).await;

    let denied = scenario::denied(&audit, mark, &role.user, &[env.name()]);
    assert!(
        denied.is_empty(),
        "requests the ClusterRole does not allow: {denied:#?}"
    );

    role.remove().await;
    env.cleanup().await;
}
