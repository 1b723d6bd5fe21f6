//! The operator binary as users run it takes a `Mattermost` through an upgrade and a
//! `ClusterInstallation` to stable; then its `/metrics` carries the families existing dashboards
//! query (controller-runtime's for both controllers, `workqueue_*`, `rest_client_requests_total`,
//! build info, memory, our domain metrics), and its JSON log names the object of every reconcile
//! line and contains none of the secret values it used. Every metric that the shipped dashboard
//! and alerts query (parsed as PromQL) is in that `/metrics`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::process::{Operator, free_port};
use common::{SECRETS, TIMEOUT, env_without_operator};
use kube::Api;
use mattermost_api::v1alpha1::ClusterInstallation;
use serde_json::json;

/// Value of the series `name{labels...}` whose labels include every `want` pair.
fn value(metrics: &str, name: &str, want: &[(&str, &str)]) -> Option<f64> {
    metrics.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (series, v) = l.rsplit_once(' ')?;
        let (n, labels) = series.split_once('{').unwrap_or((series, "}"));
        let ok = n == name
            && want
                .iter()
                .all(|(k, val)| labels.contains(&format!("{k}=\"{val}\"")));
        ok.then(|| v.parse().ok()).flatten()
    })
}

const SECRET_VALUES: &[&str] = &[
    "s3cr3t-db-pass",
    "s3cr3t-s3-key",
    "AKIAEXAMPLE",
    "postgres://mmuser",
];

#[tokio::test]
async fn metrics_and_logs_of_an_operator_that_upgraded_an_installation() {
    let env = env_without_operator("obs").await;
    env.apply(SECRETS).await;
    let port = free_port();
    // With leader election, as the chart and the Go operator's manifests run it.
    let args = vec![
        format!("--metrics-addr=127.0.0.1:{port}"),
        "--enable-leader-election".to_owned(),
    ];
    let vars = vec![
        ("WATCH_NAMESPACE".to_owned(), env.name().to_owned()),
        ("POD_NAMESPACE".to_owned(), env.name().to_owned()),
        ("LOG_FORMAT".to_owned(), "json".to_owned()),
        (
            "LOG_LEVEL".to_owned(),
            "info,mattermost_operator=debug".to_owned(),
        ),
    ];
    let mut op = Operator::spawn(&args, &vars, &testenv::kubeconfig_path(), port);
    op.wait_healthy().await;

    env.apply(include_str!("fixtures/mattermost-external.yaml")).await;
    env.apply(include_str!("fixtures/clusterinstallation.yaml")).await;
    env.wait_state("mm-example-full", "stable").await;
    env.patch_spec("mm-example-full", json!({"version": "9.11.1"}))
        .await;
    env.wait_state("mm-example-full", "stable").await;
    let cis: Api<ClusterInstallation> = env.api();
    testenv::wait_for_object(&cis, "mm-legacy", TIMEOUT, |ci: &ClusterInstallation| {
        ci.status.as_ref().and_then(|s| s.state.as_deref()) == Some("stable")
    })
    .await
    .unwrap();

    // The installations-by-state gauge is refreshed from the cache every 10 s.
    let text = testenv::wait_until("installations gauge", TIMEOUT, || async {
        let (code, text) = op.get("/metrics").await?;
        (code == 200
            && value(&text, "mattermost_operator_installations", &[("state", "stable")])
                .is_some_and(|v| v >= 1.0))
        .then_some(text)
    })
    .await
    .unwrap();
    std::fs::write(
        std::env::temp_dir().join(format!("mm-op-metrics-{}.txt", std::process::id())),
        &text,
    )
    .unwrap();
    let positive = |name: &str, labels: &[(&str, &str)]| {
        let v = value(&text, name, labels).unwrap_or_else(|| panic!("no {name}{labels:?} in\n{text}"));
        assert!(v > 0.0, "{name}{labels:?} = {v}");
    };
    for c in ["mattermost", "clusterinstallation"] {
        positive(
            "controller_runtime_reconcile_total",
            &[("controller", c), ("result", "requeue_after")],
        );
        positive(
            "controller_runtime_reconcile_time_seconds_count",
            &[("controller", c)],
        );
        positive(
            "controller_runtime_max_concurrent_reconciles",
            &[("controller", c)],
        );
        positive("workqueue_adds_total", &[("name", c)]);
        positive("workqueue_work_duration_seconds_count", &[("name", c)]);
        assert!(value(&text, "workqueue_retries_total", &[("name", c)]).is_some());
        assert!(value(&text, "workqueue_unfinished_work_seconds", &[("name", c)]).is_some());
        positive("workqueue_queue_duration_seconds_count", &[("name", c)]);
        assert!(value(&text, "workqueue_depth", &[("name", c)]).is_some());
    }
    // Triggers were waited for, and once everything is settled nothing stays queued.
    positive("workqueue_queue_duration_seconds_sum", &[("name", "mattermost")]);
    testenv::wait_until("an empty queue once settled", TIMEOUT, || async {
        let (_, text) = op.get("/metrics").await?;
        ["mattermost", "clusterinstallation"]
            .iter()
            .all(|c| value(&text, "workqueue_depth", &[("name", c)]) == Some(0.0))
            .then_some(())
    })
    .await
    .unwrap();
    positive(
        "rest_client_requests_total",
        &[("code", "200"), ("method", "GET")],
    );
    positive(
        "rest_client_requests_total",
        &[("code", "200"), ("method", "PATCH")],
    );
    positive("mattermost_operator_upgrade_duration_seconds_count", &[]);
    positive(
        "mattermost_operator_update_jobs_total",
        &[("outcome", "succeeded")],
    );
    positive("mattermost_operator_installations", &[("state", "stable")]);
    assert_eq!(
        value(
            &text,
            "mattermost_operator_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    positive("process_resident_memory_bytes", &[]);
    positive("leader_election_master_status", &[]);
    // Every metric the shipped dashboard and alerts query (deploy/monitoring/) is exported.
    let referenced = common::promql::referenced_metrics();
    let exposed = common::promql::check_exposition(referenced.keys(), &text);
    // The one exception: the error counter labelled by reason has no series before the first
    // failed reconcile, and prometheus-client encodes nothing (not even `# TYPE`) for a family
    // without series. None failed in this run; the unit test
    // `metrics::tests::encodes_our_series_and_controller_runtime_names` shows its series after one.
    let unexpected: Vec<&String> = exposed
        .problems
        .iter()
        .filter(|p| *p != "mattermost_operator_reconcile_errors_total: no such metric")
        .collect();
    assert!(
        unexpected.is_empty() && exposed.declared_only.is_empty(),
        "queried by the dashboard or the alerts but not in /metrics: {exposed:?}\nqueried by: {referenced:?}\n{text}"
    );
    for family in [
        "mattermost_operator_blocked_upgrades_by_reason",
        "mattermost_operator_migrations",
    ] {
        assert!(value(&text, family, &[]).is_some(), "no {family}");
    }
    assert_eq!(
        value(&text, "mattermost_operator_max_reconciling_installations", &[]),
        Some(20.0)
    );

    op.terminate().await;
    let log = op.log_text();
    for secret in SECRET_VALUES {
        assert!(
            !log.contains(secret),
            "the log contains a secret value ({secret})"
        );
    }
    // Every line is JSON; every line logged inside a reconcile names its object: the reconcile
    // span's fields `controller`, `object` and `namespace` (keys a JSON parser keeps; the span's
    // own name is its `name`), for both controllers.
    let mut named = std::collections::BTreeSet::new();
    let mut reconcile_lines = 0;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        // The reconcile span, whether it is the current span or encloses it.
        let Some(span) = v["spans"]
            .as_array()
            .and_then(|spans| spans.iter().find(|s| s["name"] == "reconcile_inner"))
        else {
            continue;
        };
        reconcile_lines += 1;
        assert_eq!(span["namespace"], env.name(), "{line}");
        let object = span["object"]
            .as_str()
            .unwrap_or_else(|| panic!("a reconcile line without its object: {line}"));
        let controller = span["controller"]
            .as_str()
            .unwrap_or_else(|| panic!("a reconcile line without its controller: {line}"));
        let expected = match controller {
            "mattermost" => "mm-example-full",
            "clusterinstallation" => "mm-legacy",
            other => panic!("unknown controller {other}: {line}"),
        };
        assert_eq!(object, expected, "{line}");
        named.insert((controller.to_owned(), object.to_owned()));
    }
    assert_eq!(
        named.len(),
        2,
        "reconcile lines of both controllers name their object ({reconcile_lines} reconcile lines: {named:?}):\n{log}"
    );
    env.cleanup().await;
}
