//! The Helm chart, with the real helm: lint, schema, the rendered `deploy/operator.yaml`, and an
//! install into the local control plane in both modes, with the operator binary started with
//! exactly the rendered container's args and env under the chart's ServiceAccount.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use common::process::{Operator, service_account_kubeconfig};
use common::{env_without_operator, scenario};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::rbac::v1::{ClusterRole, Role};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client};
use mattermost_api::v1beta1::Mattermost;
use serde_json::json;

fn chart() -> PathBuf {
    testenv::repo_root().join("charts/mattermost-operator")
}

fn helm(args: &[&str]) -> Output {
    testenv::ensure_cluster_up().expect("control plane");
    std::process::Command::new(testenv::state_dir().join("bin/helm"))
        .args(args)
        .env("KUBECONFIG", testenv::kubeconfig_path())
        .output()
        .expect("run helm")
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "helm failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `deploy/operator.yaml`: the chart rendered with its defaults in namespace
/// `mattermost-operator`, for `kubectl apply` users; the Namespace is on its own in
/// `deploy/namespace.yaml`, so that `kubectl delete -f deploy/operator.yaml` (the documented
/// uninstall) cannot delete the namespace and whatever else lives in it. `make chart-manifests`
/// rewrites both.
#[test]
fn rendered_manifests_match_deploy_operator_yaml() {
    let chart = chart();
    let rendered = ok(helm(&[
        "template",
        "mattermost-operator",
        chart.to_str().unwrap(),
        "--namespace",
        "mattermost-operator",
    ]));
    let install = "# Install: kubectl apply --server-side -f deploy/crds/ && kubectl apply -f deploy/namespace.yaml \
                   && kubectl apply -f deploy/operator.yaml\n\
                   # Uninstall: kubectl delete -f deploy/operator.yaml (the namespace, the CRDs and the \
                   installations stay)\n";
    let operator = format!(
        "# Generated from charts/mattermost-operator with its default values (`make chart-manifests`).\n\
         {install}{rendered}"
    );
    let namespace = format!(
        "# The operator's namespace, for deploy/operator.yaml (`make chart-manifests`).\n\
         {install}\
         apiVersion: v1\nkind: Namespace\nmetadata:\n  name: mattermost-operator\n"
    );
    for (file, want) in [
        ("deploy/operator.yaml", &operator),
        ("deploy/namespace.yaml", &namespace),
    ] {
        let path = testenv::repo_root().join(file);
        if std::env::var_os("UPDATE_MANIFESTS").is_some() {
            std::fs::write(&path, want).unwrap();
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == *want,
            "{file} is out of date: run `make chart-manifests` and commit it"
        );
    }
    // Deleting deploy/operator.yaml never deletes a namespace.
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&operator).unwrap();
    assert!(
        docs.iter().all(|d| d["kind"] != "Namespace"),
        "a Namespace in deploy/operator.yaml"
    );
    assert!(
        docs.iter()
            .filter(|d| !d.is_null())
            .all(|d| d["metadata"]["namespace"] == "mattermost-operator"
                || d["kind"].as_str().is_some_and(|k| k.starts_with("Cluster"))),
        "every namespaced object of deploy/operator.yaml is in namespace mattermost-operator"
    );
    // The chart ships the same CRDs as deploy/crds.
    for crd in mattermost_api::crds() {
        let file = mattermost_operator::crd::file_name(&crd);
        let name = file.rsplit('/').next().unwrap();
        let in_chart = std::fs::read_to_string(chart.join("crds").join(name)).unwrap_or_default();
        let committed = std::fs::read_to_string(testenv::repo_root().join(&file)).unwrap();
        assert!(
            in_chart == committed,
            "charts/mattermost-operator/crds/{name} differs from {file}: copy it"
        );
    }
}

/// The optional monitoring templates (off by default): the ServiceMonitor selects the metrics
/// Service's port, the PrometheusRule's spec is `deploy/monitoring/rules.yaml` and the dashboard
/// ConfigMap holds `deploy/monitoring/dashboard.json`, labelled for Grafana's sidecar.
#[test]
fn rendered_monitoring_templates_carry_deploy_monitoring() {
    let chart = chart();
    let chart = chart.to_str().unwrap();
    let defaults = ok(helm(&["template", "m", chart]));
    for kind in [
        "kind: ServiceMonitor",
        "kind: PrometheusRule",
        "grafana_dashboard",
    ] {
        assert!(!defaults.contains(kind), "{kind} rendered by default");
    }
    let rendered = ok(helm(&[
        "template",
        "m",
        chart,
        "--namespace",
        "ops",
        "--set",
        "monitoring.serviceMonitor.enabled=true,monitoring.serviceMonitor.interval=30s,\
         monitoring.serviceMonitor.labels.release=kps,monitoring.prometheusRule.enabled=true,\
         monitoring.dashboard.enabled=true,monitoring.dashboard.namespace=grafana",
    ]));
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&rendered).unwrap();
    let find = |kind: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} in\n{rendered}"))
    };
    let monitoring = testenv::repo_root().join("deploy/monitoring");
    let read = |f: &str| std::fs::read_to_string(monitoring.join(f)).unwrap();

    let sm = find("ServiceMonitor");
    let service = docs.iter().find(|d| d["kind"] == "Service").unwrap();
    assert_eq!(sm["metadata"]["labels"]["release"], "kps");
    assert_eq!(
        sm["spec"]["endpoints"][0]["port"],
        service["spec"]["ports"][0]["name"]
    );
    assert_eq!(sm["spec"]["endpoints"][0]["path"], "/metrics");
    assert_eq!(sm["spec"]["endpoints"][0]["interval"], "30s");
    assert_eq!(sm["spec"]["namespaceSelector"]["matchNames"][0], "ops");
    for (k, v) in sm["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&service["metadata"]["labels"][k], v, "the Service lacks {k}");
    }

    let rule = find("PrometheusRule");
    let rules: serde_json::Value = serde_saphyr::from_str(&read("rules.yaml")).unwrap();
    assert_eq!(rule["spec"], rules);

    let cm = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["labels"]["grafana_dashboard"] == "1")
        .unwrap_or_else(|| panic!("no dashboard ConfigMap in\n{rendered}"));
    assert_eq!(cm["metadata"]["namespace"], "grafana");
    let json = cm["data"]["mattermost-operator.json"].as_str().unwrap();
    assert_eq!(json.trim_end(), read("dashboard.json").trim_end());
}

#[test]
fn lint_and_the_schema_refuse_wrong_values_by_name() {
    let chart = chart();
    let chart = chart.to_str().unwrap();
    ok(helm(&["lint", "--strict", chart]));
    // The Go chart's values file, unchanged, renders.
    let go_values =
        testenv::repo_root().join("crates/mattermost-operator/tests/fixtures/go-chart-values.yaml");
    let out = ok(helm(&["template", "m", chart, "-f", go_values.to_str().unwrap()]));
    assert!(out.contains("- --enable-leader-election"), "{out}");
    assert!(out.contains("kind: Mattermost"), "mattermostCR renders");
    for (set, field) in [
        ("mattermostOperator.replicas=two", "replicas"),
        (
            "mattermostOperator.env.requeuOnLimitDelay=soon",
            "requeuOnLimitDelay",
        ),
        ("mattermostOperator.image.pullPolicy=Sometimes", "pullPolicy"),
        ("mattermostOperator.imag.tag=x", "imag"),
        ("watchNamespaces[0]=Not_A_Namespace", "watchNamespaces"),
    ] {
        let out = helm(&["template", "m", chart, "--set", set]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{set} was accepted");
        assert!(
            err.contains(field),
            "{set}: the error does not name {field}: {err}"
        );
    }
    let out = helm(&["template", "m", chart, "--set", "mysqlOperator.enabled=true"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("mysqlOperator"));
}

/// Container args and env of the chart's Deployment, as the kubelet would pass them to the
/// process (downward API fields resolved from a pod of that Deployment).
async fn container_command(client: &Client, ns: &str, name: &str) -> (Vec<String>, Vec<(String, String)>) {
    let dep = Api::<Deployment>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .unwrap();
    let pod_spec = dep.spec.unwrap().template.spec.unwrap();
    let c = &pod_spec.containers[0];
    assert_eq!(
        c.command.as_deref(),
        Some(&["/mattermost-operator".to_owned()][..])
    );
    let pods = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels("app.kubernetes.io/name=mattermost-operator"))
        .await
        .unwrap();
    let pod = pods.items.first().expect("a pod of the operator Deployment");
    let mut env = Vec::new();
    for e in c.env.iter().flatten() {
        let value = match (&e.value, e.value_from.as_ref().and_then(|v| v.field_ref.as_ref())) {
            (Some(v), _) => v.clone(),
            (None, Some(f)) if f.field_path == "metadata.name" => pod.metadata.name.clone().unwrap(),
            (None, Some(f)) if f.field_path == "metadata.namespace" => ns.to_owned(),
            _ => panic!("unexpected env {e:?}"),
        };
        env.push((e.name.clone(), value));
    }
    (c.args.clone().unwrap_or_default(), env)
}

/// `helm install` in a namespace that enforces the `restricted` Pod Security Standard (the
/// operator's pods must be admitted), then the binary with the Deployment's exact args and env
/// under the chart's ServiceAccount: every request allowed, in cluster mode (ClusterRole) and after
/// `helm upgrade` to namespace-scoped mode (Roles only). Uninstalling keeps the installations.
#[tokio::test]
async fn chart_installs_and_the_operator_runs_under_its_service_account() {
    let ops = env_without_operator("mm-chart-ops").await;
    let client = ops.client.clone();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .patch(
            ops.name(),
            &PatchParams::apply("testenv"),
            &Patch::Apply(json!({
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": ops.name(), "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}
            })),
        )
        .await
        .unwrap();
    let release = format!("op-{}", ops.name());
    let chart = chart();
    ok(helm(&[
        "install",
        &release,
        chart.to_str().unwrap(),
        "-n",
        ops.name(),
        "--wait",
        "--timeout",
        "120s",
    ]));
    let fullname = format!("{release}-mattermost-operator");
    let deploy: Api<Deployment> = ops.api();
    let dep = deploy.get(&fullname).await.unwrap();
    assert_eq!(
        dep.status.and_then(|s| s.ready_replicas),
        Some(2),
        "2 replicas admitted under restricted"
    );

    // Cluster mode.
    let (args, env) = container_command(&client, ops.name(), &fullname).await;
    assert_eq!(args, ["--enable-leader-election", "--metrics-addr=0.0.0.0:8383"]);
    let kubeconfig = service_account_kubeconfig(&client, ops.name(), &fullname).await;
    let user = format!("system:serviceaccount:{}:{fullname}", ops.name());
    let audit = testenv::AuditLog::new();
    let mark = audit.mark().unwrap();
    let mut operator = Operator::spawn(&args, &env, &kubeconfig, 8383);
    operator.wait_healthy().await;
    operator.wait_leader(Duration::from_secs(30)).await;
    let workload = env_without_operator("mm-chart-a").await;
    scenario::install_upgrade_fail_recover(&workload).await;
    scenario::migrate_cluster_installation(&workload).await;
    let denied = scenario::denied(&audit, mark, &user, &[ops.name(), workload.name()]);
    assert!(denied.is_empty(), "denied in cluster mode: {denied:#?}");
    let ours: Vec<_> = audit
        .since(mark)
        .unwrap()
        .into_iter()
        .filter(|e| e.user.username == user)
        .collect();
    assert!(!ours.is_empty());
    assert!(
        ours.iter()
            .all(|e| e.user_agent == mattermost_operator::client::USER_AGENT_VALUE),
        "every request names the operator in its User-Agent"
    );
    assert_eq!(operator.terminate().await, Some(0), "SIGTERM exits 0");

    // helm upgrade to namespace-scoped mode: Roles in two namespaces, no ClusterRole.
    let b = env_without_operator("mm-chart-b").await;
    let c = env_without_operator("mm-chart-c").await;
    let watch = format!("watchNamespaces={{{},{}}}", b.name(), c.name());
    ok(helm(&[
        "upgrade",
        &release,
        chart.to_str().unwrap(),
        "-n",
        ops.name(),
        "--set",
        &watch,
        "--wait",
        "--timeout",
        "120s",
    ]));
    let cluster_roles: Api<ClusterRole> = Api::all(client.clone());
    assert!(
        cluster_roles.get_opt(&fullname).await.unwrap().is_none(),
        "no ClusterRole"
    );
    for ns in [b.name(), c.name()] {
        assert!(
            Api::<Role>::namespaced(client.clone(), ns)
                .get_opt(&fullname)
                .await
                .unwrap()
                .is_some()
        );
    }
    let (args, env) = container_command(&client, ops.name(), &fullname).await;
    assert!(
        env.iter()
            .any(|(k, v)| k == "WATCH_NAMESPACE" && *v == format!("{},{}", b.name(), c.name()))
    );
    let mark = audit.mark().unwrap();
    let mut operator = Operator::spawn(&args, &env, &kubeconfig, 8383);
    operator.wait_healthy().await;
    operator.wait_leader(Duration::from_secs(30)).await;
    scenario::install_upgrade_fail_recover(&b).await;
    scenario::migrate_cluster_installation(&c).await;
    let denied = scenario::denied(&audit, mark, &user, &[ops.name(), b.name(), c.name()]);
    assert!(denied.is_empty(), "denied in namespace mode: {denied:#?}");
    // Without node access the capacity preflight is skipped, and the rollout event says so.
    let events: Api<k8s_openapi::api::events::v1::Event> = b.api();
    let skipped = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .any(|e| e.note.unwrap_or_default().contains("capacity preflight skipped"));
    assert!(
        skipped,
        "a RolloutStarted event names the skipped capacity preflight"
    );
    assert_eq!(operator.terminate().await, Some(0));

    // Uninstalling the operator leaves the installations (and the CRDs) in place.
    ok(helm(&["uninstall", &release, "-n", ops.name(), "--wait"]));
    let mms: Api<Mattermost> = b.api();
    assert!(mms.get_opt("mm-example-full").await.unwrap().is_some());
    let _ = std::fs::remove_file(kubeconfig);
    for env in [workload, b, c, ops] {
        env.cleanup().await;
    }
}
