#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on failure by design
//! Smoke tests of the local control plane: the Kubernetes behaviour every operator test relies on
//! (Deployments, Jobs, orphan deletion and adoption, EndpointSlices, rolling updates, PVCs,
//! failure injection, the audit log).

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, PersistentVolumeClaim, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use testenv::{AuditLog, EndpointWatcher, TestNamespace, wait_for_object, wait_until};

const TIMEOUT: Duration = Duration::from_secs(90);

fn deployment(name: &str, app: &str, replicas: i32, image: &str) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": app, "deploy": name}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": {"app": app, "deploy": name}},
                "spec": {"containers": [{"name": "app", "image": image, "ports": [{"name": "http", "containerPort": 8065}]}]}
            }
        }
    }))
    .expect("valid deployment")
}

fn job(name: &str, image: &str) -> Job {
    serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "job", "image": image}]}}
        }
    }))
    .expect("valid job")
}

async fn create<K>(api: &Api<K>, obj: &K) -> K
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.create(&PostParams::default(), obj).await.expect("create")
}

fn available(d: &Deployment, n: i32) -> bool {
    let s = d.status.clone().unwrap_or_default();
    d.metadata.generation == s.observed_generation
        && s.updated_replicas == Some(n)
        && s.available_replicas == Some(n)
        && s.replicas == Some(n)
}

async fn ready_pods(client: &Client, ns: &str, selector: &str) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let list = pods
        .list(&ListParams::default().labels(selector))
        .await
        .expect("list pods");
    list.items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .collect()
}

#[tokio::test]
async fn three_ready_nodes_in_distinct_zones() {
    let client = testenv::client().await.expect("control plane");
    let nodes = Api::<Node>::all(client)
        .list(&ListParams::default().labels("type=kwok"))
        .await
        .expect("nodes");
    let zones: BTreeSet<String> = nodes
        .items
        .iter()
        .filter(|n| {
            n.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .filter_map(|n| n.labels().get("topology.kubernetes.io/zone").cloned())
        .collect();
    assert_eq!(zones.len(), 3, "3 Ready nodes in 3 zones, got {zones:?}");
    for n in &nodes.items {
        let addrs = n
            .status
            .as_ref()
            .and_then(|s| s.addresses.clone())
            .unwrap_or_default();
        assert!(
            addrs
                .iter()
                .filter(|a| a.type_ == "InternalIP")
                .all(|a| a.address == "127.0.0.1"),
            "fake nodes advertise loopback only: {addrs:?}"
        );
    }
}

#[tokio::test]
async fn deployment_reaches_three_ready_pods() {
    let client = testenv::client().await.expect("control plane");
    let ns = TestNamespace::create(&client, "smoke-deploy")
        .await
        .expect("namespace");
    let deploys: Api<Deployment> = ns.api();
    create(&deploys, &deployment("web", "web", 3, "example.invalid/web:1")).await;
    wait_for_object(&deploys, "web", TIMEOUT, |d| available(d, 3))
        .await
        .expect("3 available");
    assert_eq!(ready_pods(&client, &ns.name, "app=web").await.len(), 3);
    ns.delete().await.expect("cleanup");
}

#[tokio::test]
async fn job_completes_and_failing_image_job_fails_with_message() {
    let client = testenv::client().await.expect("control plane");
    let ns = TestNamespace::create(&client, "smoke-job")
        .await
        .expect("namespace");
    let jobs: Api<Job> = ns.api();
    create(&jobs, &job("ok", "example.invalid/migrate:1")).await;
    create(&jobs, &job("bad", "example.invalid/migrate:1-fail")).await;
    let has = |j: &Job, t: &str| {
        j.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == t && c.status == "True"))
    };
    wait_for_object(&jobs, "ok", TIMEOUT, |j| has(j, "Complete"))
        .await
        .expect("ok completes");
    wait_for_object(&jobs, "bad", TIMEOUT, |j| has(j, "Failed"))
        .await
        .expect("bad fails");
    let pods: Api<Pod> = ns.api();
    let failed = pods
        .list(&ListParams::default().labels("job-name=bad"))
        .await
        .expect("pods");
    let msg = failed.items[0]
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs[0].state.as_ref())
        .and_then(|s| s.terminated.as_ref())
        .and_then(|t| t.message.clone());
    assert_eq!(
        msg.as_deref(),
        Some("testenv: injected failure (image tag contains 'fail')")
    );
    ns.delete().await.expect("cleanup");
}

#[tokio::test]
async fn orphaned_replicaset_keeps_serving_and_is_adopted_by_new_deployment() {
    let client = testenv::client().await.expect("control plane");
    let ns = TestNamespace::create(&client, "smoke-orphan")
        .await
        .expect("namespace");
    let deploys: Api<Deployment> = ns.api();
    let rss: Api<ReplicaSet> = ns.api();
    let pods: Api<Pod> = ns.api();
    let old = create(&deploys, &deployment("app", "app", 2, "example.invalid/app:1")).await;
    wait_for_object(&deploys, "app", TIMEOUT, |d| available(d, 2))
        .await
        .expect("available");
    let pod_uids = |list: Vec<Pod>| list.iter().filter_map(|p| p.uid()).collect::<BTreeSet<_>>();
    let before = pod_uids(ready_pods(&client, &ns.name, "app=app").await);

    deploys
        .delete("app", &DeleteParams::orphan())
        .await
        .expect("orphan delete");
    wait_until("deployment gone", TIMEOUT, || async {
        deploys.get_opt("app").await.ok()?.is_none().then_some(())
    })
    .await
    .expect("deleted");
    let rs = wait_until("orphaned replicaset", TIMEOUT, || async {
        let list = rss.list(&ListParams::default().labels("app=app")).await.ok()?;
        let rs = list.items.into_iter().next()?;
        rs.metadata
            .owner_references
            .as_ref()
            .is_none_or(|o| o.is_empty())
            .then_some(rs)
    })
    .await
    .expect("replicaset orphaned");
    assert_eq!(
        pod_uids(ready_pods(&client, &ns.name, "app=app").await),
        before,
        "pods keep running"
    );

    // Same name, same selector and template: the new Deployment adopts the ReplicaSet.
    let new = create(&deploys, &deployment("app", "app", 2, "example.invalid/app:1")).await;
    assert_ne!(new.uid(), old.uid());
    wait_for_object(&deploys, "app", TIMEOUT, |d| available(d, 2))
        .await
        .expect("available again");
    let adopted = wait_for_object(&rss, &rs.name_any(), TIMEOUT, |r| {
        r.owner_references()
            .iter()
            .any(|o| Some(&o.uid) == new.uid().as_ref())
    })
    .await
    .expect("adopted");
    assert_eq!(adopted.uid(), rs.uid(), "no new ReplicaSet");
    let all = pods
        .list(&ListParams::default().labels("app=app"))
        .await
        .expect("pods");
    assert_eq!(pod_uids(all.items), before, "no pod was replaced");
    ns.delete().await.expect("cleanup");
}

#[tokio::test]
async fn endpointslices_list_exactly_the_ready_pods() {
    let client = testenv::client().await.expect("control plane");
    let ns = TestNamespace::create(&client, "smoke-eps")
        .await
        .expect("namespace");
    let svc: k8s_openapi::api::core::v1::Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "app"},
        "spec": {"selector": {"app": "app"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}
    }))
    .expect("service");
    create(&ns.api(), &svc).await;
    let deploys: Api<Deployment> = ns.api();
    create(&deploys, &deployment("good", "app", 2, "example.invalid/app:1")).await;
    create(
        &deploys,
        &deployment("bad", "app", 1, "example.invalid/app:1-never-ready"),
    )
    .await;
    let slices: Api<EndpointSlice> = ns.api();
    let ready_ips = wait_until("2 ready of 3 endpoints", TIMEOUT, || async {
        let list = slices
            .list(&ListParams::default().labels("kubernetes.io/service-name=app"))
            .await
            .ok()?;
        let eps: Vec<_> = list
            .items
            .into_iter()
            .flat_map(|s| s.endpoints.into_iter().flatten())
            .collect();
        let ready: BTreeSet<String> = eps
            .iter()
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
            .flat_map(|e| e.addresses.clone())
            .collect();
        (eps.len() == 3 && ready.len() == 2).then_some(ready)
    })
    .await
    .expect("endpoints");
    let pod_ips: BTreeSet<String> = ready_pods(&client, &ns.name, "app=app")
        .await
        .iter()
        .filter_map(|p| p.status.as_ref()?.pod_ip.clone())
        .collect();
    assert_eq!(ready_ips, pod_ips, "ready endpoints are exactly the Ready pods");
    ns.delete().await.expect("cleanup");
}

#[tokio::test]
async fn rolling_update_with_max_unavailable_zero_never_drops_ready_endpoints() {
    let client = testenv::client().await.expect("control plane");
    let ns = TestNamespace::create(&client, "smoke-rollout")
        .await
        .expect("namespace");
    let svc: k8s_openapi::api::core::v1::Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}
    }))
    .expect("service");
    create(&ns.api(), &svc).await;
    let deploys: Api<Deployment> = ns.api();
    create(&deploys, &deployment("web", "web", 3, "example.invalid/web:1")).await;
    wait_for_object(&deploys, "web", TIMEOUT, |d| available(d, 3))
        .await
        .expect("available");
    let watcher = EndpointWatcher::start(&client, &ns.name, "web")
        .await
        .expect("watcher");
    wait_until("3 ready endpoints", TIMEOUT, || async {
        (watcher.current() == 3).then_some(())
    })
    .await
    .expect("3 endpoints before the rollout");

    // New pods take 2 s to become Ready, so a rollout that did not wait for them would dip.
    // Measured from the change on: the watcher's first samples may predate the third endpoint.
    let t0 = std::time::Instant::now();
    let patch = json!({"spec": {"template": {
        "metadata": {"annotations": {"testenv.invalid/ready-after": "2s"}},
        "spec": {"containers": [{"name": "app", "image": "example.invalid/web:2"}]}
    }}});
    deploys
        .patch("web", &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .expect("patch");
    wait_for_object(&deploys, "web", TIMEOUT, |d| {
        available(d, 3) && d.status.as_ref().and_then(|s| s.ready_replicas) == Some(3)
    })
    .await
    .expect("rollout done");
    // old pods terminate with their grace period; wait until only the new ones serve
    wait_until("only new pods", TIMEOUT, || async {
        let pods = ready_pods(&client, &ns.name, "app=web").await;
        (pods.len() == 3).then_some(())
    })
    .await
    .expect("settled");
    let history = watcher.history();
    assert!(
        watcher.min_ready_since(t0) >= 3,
        "ready endpoints dropped below 3: {history:?}"
    );
    assert!(
        history.iter().any(|&n| n > 3),
        "the surge pod was observed: {history:?}"
    );
    ns.delete().await.expect("cleanup");
}

#[tokio::test]
async fn persistent_volume_claims_bind() {
    let client = testenv::client().await.expect("control plane");
    let ns = TestNamespace::create(&client, "smoke-pvc")
        .await
        .expect("namespace");
    let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}}
    }))
    .expect("pvc");
    let pvcs: Api<PersistentVolumeClaim> = ns.api();
    create(&pvcs, &pvc).await;
    wait_for_object(&pvcs, "data", TIMEOUT, |p| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")
    })
    .await
    .expect("bound");
    ns.delete().await.expect("cleanup");
}

#[tokio::test]
async fn audit_log_counts_requests_by_verb_resource_and_user() {
    let client = testenv::client().await.expect("control plane");
    let ns = TestNamespace::create(&client, "smoke-audit")
        .await
        .expect("namespace");
    let audit = AuditLog::new();
    let mark = audit.mark().expect("mark");
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = ns.api();
    let cm =
        serde_json::from_value(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}))
            .expect("cm");
    create(&cms, &cm).await;
    cms.get("c").await.expect("get");
    let events = wait_until("audit events", TIMEOUT, || async {
        let ev = audit.since(mark).ok()?;
        let mine: Vec<_> = ev
            .into_iter()
            .filter(|e| e.object_ref.as_ref().and_then(|o| o.namespace.as_deref()) == Some(ns.name.as_str()))
            .filter(|e| e.resource() == "configmaps")
            .collect();
        (mine.len() >= 2).then_some(mine)
    })
    .await
    .expect("events");
    assert!(
        events
            .iter()
            .any(|e| e.verb == "create" && e.is_write() && e.user.username == "testenv-admin")
    );
    assert!(events.iter().any(|e| e.verb == "get" && !e.is_write()));
    ns.delete().await.expect("cleanup");
}
