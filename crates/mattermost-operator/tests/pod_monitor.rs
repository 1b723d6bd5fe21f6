//! `spec.monitoring` against the real API server, under exactly the chart's ClusterRole: without
//! the Prometheus Operator CRD the installation says why nothing was created and still reaches
//! stable (no error loop, no Warning events); once the upstream PodMonitor CRD is installed the
//! periodic resync creates a PodMonitor that the real CRD schema accepts and that selects the
//! installation's pods on their metrics port; turned off, our PodMonitor is deleted, while one
//! that is not ours is never touched.
//!
//! Installing a CRD is cluster-wide: the "absent" half runs first in this one test, and the CRD is
//! left installed at the end (no other test depends on it either way).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::scenario::ChartRole;
use common::{SECRETS, TIMEOUT, env_without_operator};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use mattermost_api::v1beta1::Mattermost;
use mattermost_operator::desired::pod_monitor::PodMonitor;
use mattermost_operator::monitoring::pod_monitor_crd_installed;
use serde_json::json;

const CRD: &str = include_str!("fixtures/monitoring.coreos.com_podmonitors.yaml");
const CRD_NAME: &str = "podmonitors.monitoring.coreos.com";
const NAME: &str = "mm-example-full";
const MONITORING: &str = "MonitoringConfigured";

fn counter(env: &common::Env, result: &str) -> u64 {
    let text = env.metrics.as_ref().unwrap().encode().unwrap();
    let prefix =
        format!(r#"controller_runtime_reconcile_total{{controller="mattermost",result="{result}"}}"#);
    text.lines()
        .find(|l| l.starts_with(&prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn monitoring_condition(mm: &Mattermost) -> Option<(String, String)> {
    mm.status
        .iter()
        .flat_map(|s| s.conditions.iter())
        .find(|c| c.type_ == MONITORING)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

#[tokio::test]
async fn pod_monitor_follows_the_crd_and_the_spec() {
    let mut env = env_without_operator("mm-podmon").await;
    let crds: Api<CustomResourceDefinition> = Api::all(env.client.clone());
    // A previous run left the CRD installed: remove it for the "absent" half.
    if crds.get_opt(CRD_NAME).await.unwrap().is_some() {
        crds.delete(CRD_NAME, &Default::default()).await.unwrap();
        let client = env.client.clone();
        wait_until("PodMonitor CRD gone", || {
            let client = client.clone();
            async move { !pod_monitor_crd_installed(&client).await.unwrap() }
        })
        .await;
    }

    // The operator runs as a ServiceAccount bound to the chart's ClusterRole only.
    let role = ChartRole::bind(&env).await;
    let audit = testenv::AuditLog::new();
    let mark = audit.mark().unwrap();
    let client = testenv::client_from(&role.kubeconfig).await.unwrap();
    // The CRD is found by the periodic resync, without any change to the installation.
    env.resync_period = Duration::from_secs(3);
    env.start_operator_as(Client::clone(&client));

    // 1. CRD absent: the condition says why, the installation is stable anyway.
    env.apply(SECRETS).await;
    let mut mm: serde_json::Value =
        serde_saphyr::from_str(include_str!("fixtures/mattermost-external.yaml")).unwrap();
    mm["spec"]["monitoring"] =
        json!({"enabled": true, "interval": "30s", "labels": {"release": "prometheus"}});
    env.apply(&serde_json::to_string(&mm).unwrap()).await;
    let mm = env
        .wait_condition(NAME, MONITORING, "False", Some("CRDNotInstalled"))
        .await;
    let c = mm
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == MONITORING)
        .unwrap();
    assert!(
        c.message.contains("install the Prometheus Operator CRDs"),
        "{}",
        c.message
    );
    env.wait_state(NAME, "stable").await;
    let pods: Api<Pod> = env.api();
    let monitors: Api<PodMonitor> = env.api();

    // No error loop: only resyncs (every 3 s) while the CRD is absent, and no failure.
    let (ok, errors) = (counter(&env, "success"), counter(&env, "error"));
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(
        counter(&env, "error"),
        errors,
        "no failed reconcile while the CRD is absent"
    );
    let resyncs = counter(&env, "success") - ok;
    assert!(
        resyncs <= 4,
        "{resyncs} reconciles in 7 s: a retry loop, not the resync"
    );
    let mm = env.wait_state(NAME, "stable").await;
    assert_eq!(
        monitoring_condition(&mm),
        Some(("False".to_owned(), "CRDNotInstalled".to_owned()))
    );

    // 2. Install the upstream CRD: the resync creates the PodMonitor.
    let crd: CustomResourceDefinition = serde_saphyr::from_str(CRD).unwrap();
    crds.patch(
        CRD_NAME,
        &PatchParams::apply("testenv").force(),
        &Patch::Apply(&crd),
    )
    .await
    .unwrap();
    testenv::wait_for_object(&crds, CRD_NAME, TIMEOUT, |c: &CustomResourceDefinition| {
        c.status
            .iter()
            .flat_map(|s| s.conditions.iter().flatten())
            .any(|c| c.type_ == "Established" && c.status == "True")
    })
    .await
    .unwrap();
    let mm = env
        .wait_condition(NAME, MONITORING, "True", Some("PodMonitorCreated"))
        .await;
    // Read back through the real CRD schema: misnamed fields would have been pruned.
    let pm = monitors.get(NAME).await.unwrap();
    let owner = &pm.owner_references()[0];
    assert_eq!(owner.uid, mm.uid().unwrap());
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("Mattermost", Some(true))
    );
    assert_eq!(pm.labels()["release"], "prometheus");
    let endpoints = &pm.spec.pod_metrics_endpoints;
    assert_eq!(endpoints.len(), 1);
    assert_eq!(endpoints[0].port.as_deref(), Some("metrics"));
    assert_eq!(endpoints[0].path.as_deref(), Some("/metrics"));
    assert_eq!(endpoints[0].interval.as_deref(), Some("30s"));
    let selector = pm.spec.selector.match_labels.clone().unwrap();
    let selector = selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let selected = pods.list(&ListParams::default().labels(&selector)).await.unwrap();
    let want = mm.spec.effective_replicas();
    let running: Vec<&Pod> = selected
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    assert_eq!(
        running.len(),
        usize::try_from(want).unwrap(),
        "selects the Mattermost pods"
    );
    for pod in running {
        assert_eq!(
            pod.labels()["app"],
            "mattermost",
            "not an update-Job or job-server pod"
        );
        let ports = pod.spec.as_ref().unwrap().containers[0].ports.clone().unwrap();
        assert!(
            ports
                .iter()
                .any(|p| p.name.as_deref() == Some("metrics") && p.container_port == 8067),
            "{} exposes the metrics port",
            pod.name_any()
        );
    }
    env.wait_state(NAME, "stable").await;

    // 3. Monitoring off: our PodMonitor is deleted and the condition goes away.
    env.patch_spec(NAME, json!({"monitoring": {"enabled": false}}))
        .await;
    let api: Api<Mattermost> = env.api();
    testenv::wait_for_object(&api, NAME, TIMEOUT, |mm: &Mattermost| {
        monitoring_condition(mm).is_none()
            && mm.status.as_ref().and_then(|s| s.observed_generation) == mm.metadata.generation
    })
    .await
    .unwrap();
    assert!(
        monitors.get_opt(NAME).await.unwrap().is_none(),
        "PodMonitor pruned"
    );

    // 4. A PodMonitor that is not ours is reported, never changed or deleted.
    let foreign: PodMonitor = serde_json::from_value(json!({
        "apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor",
        "metadata": {"name": NAME},
        "spec": {"selector": {"matchLabels": {"app": "other"}}, "podMetricsEndpoints": [{"port": "web"}]}
    }))
    .unwrap();
    monitors.create(&PostParams::default(), &foreign).await.unwrap();
    env.patch_spec(NAME, json!({"monitoring": {"enabled": true}}))
        .await;
    env.wait_condition(NAME, MONITORING, "False", Some("ChildNameConflict"))
        .await;
    env.wait_state(NAME, "stable").await;
    env.patch_spec(NAME, json!({"monitoring": {"enabled": false}}))
        .await;
    testenv::wait_for_object(&api, NAME, TIMEOUT, |mm: &Mattermost| {
        monitoring_condition(mm).is_none()
    })
    .await
    .unwrap();
    let kept = monitors.get(NAME).await.unwrap();
    assert!(kept.owner_references().is_empty());
    assert_eq!(kept.spec.pod_metrics_endpoints[0].port.as_deref(), Some("web"));

    // Nothing about monitoring was ever a Warning event, and every request was allowed.
    let events: Api<Event> = env.api();
    let warnings: Vec<String> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .filter_map(|e| e.reason)
        .filter(|r| ["CRDNotInstalled", "ChildNameConflict", "DiscoveryFailed"].contains(&r.as_str()))
        .collect();
    assert!(warnings.is_empty(), "monitoring warnings: {warnings:?}");
    let denied = common::scenario::denied(&audit, mark, &role.user, &[env.name()]);
    assert!(
        denied.is_empty(),
        "requests the ClusterRole does not allow: {denied:#?}"
    );

    role.remove().await;
    env.cleanup().await;
}
