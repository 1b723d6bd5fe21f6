//! The `Mattermost` reconciler against the local control plane (real apiserver, controllers and
//! scheduler, kwok nodes).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{SECRETS, TIMEOUT, env};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, ResourceExt};
use mattermost_api::v1beta1::Mattermost;
use serde_json::json;
use testenv::{AuditLog, wait_until};

const FULL: &str = include_str!("fixtures/mattermost-external.yaml");
const NAME: &str = "mm-example-full";

fn env_names(dep: &Deployment) -> Vec<String> {
    let spec = dep.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let c = spec.containers.iter().find(|c| c.name == "mattermost").unwrap();
    c.env.iter().flatten().map(|e| e.name.clone()).collect()
}

async fn warning_reasons(env: &common::Env) -> BTreeSet<String> {
    let events: Api<Event> = env.api();
    let list = events.list(&ListParams::default()).await.unwrap();
    list.items
        .into_iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .filter_map(|e| e.reason)
        .collect()
}

#[tokio::test]
async fn external_db_and_s3_reach_stable_with_go_compatible_children_and_idle_reconciles_write_nothing() {
    let env = env("mm-life").await;
    env.apply(SECRETS).await;
    env.apply(FULL).await;
    let mms: Api<Mattermost> = env.api();
    let spec_before = serde_json::to_value(&mms.get(NAME).await.unwrap().spec).unwrap();

    let mm = env.wait_state(NAME, "stable").await;
    let status = mm.status.clone().unwrap();
    assert_eq!(status.observed_generation, mm.metadata.generation);
    assert_eq!(
        mm.metadata.generation,
        Some(1),
        "the operator never writes the spec"
    );
    assert_eq!(serde_json::to_value(&mm.spec).unwrap(), spec_before);
    assert_eq!(
        (status.replicas, status.updated_replicas),
        (Some(2), Some(2)),
        "1000users preset: 2 replicas"
    );
    assert_eq!(status.version.as_deref(), Some("9.11.0"));
    assert_eq!(
        status.image.as_deref(),
        Some("mattermost/mattermost-enterprise-edition")
    );
    assert_eq!(status.endpoint.as_deref(), Some("example.mattermost-example.com"));
    for c in ["Ready", "DatabaseConfigured", "FileStoreConfigured"] {
        let cond = status.conditions.iter().find(|x| x.type_ == c).unwrap();
        assert_eq!(cond.status, "True", "{c}");
    }

    let dep: Deployment = env.api().get(NAME).await.unwrap();
    let selector = dep.spec.as_ref().unwrap().selector.match_labels.clone().unwrap();
    assert_eq!(selector.len(), 3);
    assert_eq!(selector["app"], "mattermost");
    assert_eq!(selector["installation.mattermost.com/installation"], NAME);
    assert_eq!(selector["installation.mattermost.com/resource"], NAME);
    let names = env_names(&dep);
    assert_eq!(
        &names[..3],
        [
            "MM_CONFIG",
            "MM_SQLSETTINGS_DATASOURCE",
            "MM_FILESETTINGS_DRIVERNAME"
        ]
    );
    assert!(names.ends_with(&[
        "MM_FILESETTINGS_AMAZONS3SSE".to_owned(),
        "MM_FILESETTINGS_AMAZONS3SIGNV2".to_owned()
    ]));
    let owner = &dep.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("Mattermost", Some(true))
    );

    let svc: Service = env.api().get(NAME).await.unwrap();
    assert_ne!(
        svc.spec.as_ref().unwrap().publish_not_ready_addresses,
        Some(true),
        "ready pods only"
    );
    let peers: Service = env.api().get(&format!("{NAME}-peers")).await.unwrap();
    assert_eq!(peers.spec.as_ref().unwrap().cluster_ip.as_deref(), Some("None"));
    let ing: Ingress = env.api().get(NAME).await.unwrap();
    assert_eq!(
        ing.spec.unwrap().rules.unwrap()[0].host.as_deref(),
        Some("example.mattermost-example.com")
    );
    let _: ServiceAccount = env.api().get(NAME).await.unwrap();

    // No secret value anywhere in status or events.
    let events: Api<Event> = env.api();
    let dump = format!(
        "{:?}{:?}",
        mm.status,
        events.list(&ListParams::default()).await.unwrap().items
    );
    assert!(!dump.contains("s3cr3t"), "secret value leaked");

    // Idle reconciles (triggered by touching a referenced secret and an annotation) write nothing.
    let audit = AuditLog::new();
    let mark = audit.mark().unwrap();
    let secrets: Api<Secret> = env.api();
    secrets
        .patch(
            "db-credentials",
            &Default::default(),
            &kube::api::Patch::Merge(json!({"metadata": {"labels": {"touched": "1"}}})),
        )
        .await
        .unwrap();
    mms.patch(
        NAME,
        &Default::default(),
        &kube::api::Patch::Merge(json!({"metadata": {"annotations": {"touched": "1"}}})),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let ns = env.name().to_owned();
    let writes: Vec<_> = audit
        .since(mark)
        .unwrap()
        .into_iter()
        .filter(|e| {
            e.is_write() && e.object_ref.as_ref().and_then(|o| o.namespace.as_deref()) == Some(ns.as_str())
        })
        // kube-rs clients (the operator, this test) send no user agent; the cluster's own
        // controllers (endpoint slices, kwok) do.
        .filter(|e| e.user_agent.is_empty() || e.user_agent.starts_with("kube-rs"))
        .filter(|e| {
            let r = e.resource();
            !(r == "secrets" || r == "mattermosts") // the test's own two writes
        })
        .collect();
    let reads = audit
        .since(mark)
        .unwrap()
        .into_iter()
        .filter(|e| {
            !e.is_write() && e.object_ref.as_ref().and_then(|o| o.namespace.as_deref()) == Some(ns.as_str())
        })
        .count();
    println!("idle reconcile: {} writes, {} reads", writes.len(), reads);
    assert!(writes.is_empty(), "idle reconcile wrote: {writes:#?}");
    env.cleanup().await;
}

#[tokio::test]
async fn bad_inputs_yield_conditions_and_events_and_heal_without_restart() {
    let env = env("mm-bad").await;
    env.apply(FULL).await; // secrets missing
    let mm = env
        .wait_condition(NAME, "DatabaseConfigured", "False", Some("SecretNotFound"))
        .await;
    assert_eq!(mm.status.as_ref().unwrap().state.as_deref(), Some("reconciling"));
    wait_until("warning event", TIMEOUT, || async {
        warning_reasons(&env)
            .await
            .contains("SecretNotFound")
            .then_some(())
    })
    .await
    .unwrap();
    let deps: Api<Deployment> = env.api();
    assert!(
        deps.get_opt(NAME).await.unwrap().is_none(),
        "nothing rolled out with a broken config"
    );

    // Malformed: a DB check URL with a scheme not allowed for postgres.
    env.apply(
        r#"apiVersion: v1
kind: Secret
metadata: {name: db-credentials}
stringData:
  DB_CONNECTION_STRING: postgres://u:p@db/mm
  DB_CONNECTION_CHECK_URL: ftp://db/mm
"#,
    )
    .await;
    env.wait_condition(NAME, "DatabaseConfigured", "False", Some("InvalidDatabaseURL"))
        .await;
    // Fix both secrets: heals promptly through the Secret watch.
    let secrets: Api<Secret> = env.api();
    secrets
        .delete("db-credentials", &DeleteParams::default())
        .await
        .unwrap();
    env.apply(SECRETS).await;
    env.wait_state(NAME, "stable").await;

    // Operator-managed file store is accepted by the schema but reported as unsupported.
    env.patch_spec(
        NAME,
        json!({"fileStore": {"external": null, "operatorManaged": {"storageSize": "10Gi"}}}),
    )
    .await;
    env.wait_condition(
        NAME,
        "FileStoreConfigured",
        "False",
        Some("UnsupportedConfiguration"),
    )
    .await;
    assert!(
        deps.get_opt(NAME).await.unwrap().is_some(),
        "the running Deployment is never deleted"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn scale_ingress_job_server_and_extra_labels_each_reach_stable() {
    let env = env("mm-changes").await;
    env.apply(SECRETS).await;
    env.apply(FULL).await;
    env.wait_state(NAME, "stable").await;

    env.patch_spec(NAME, json!({"size": null, "replicas": 1})).await;
    let mm = env.wait_state(NAME, "stable").await;
    assert_eq!(mm.status.unwrap().replicas, Some(1));
    env.patch_spec(NAME, json!({"replicas": 3})).await;
    assert_eq!(
        env.wait_state(NAME, "stable")
            .await
            .status
            .unwrap()
            .updated_replicas,
        Some(3)
    );
    env.patch_spec(NAME, json!({"replicas": 0})).await;
    assert_eq!(
        env.wait_state(NAME, "stable").await.status.unwrap().replicas,
        Some(0),
        "hibernated"
    );
    env.patch_spec(NAME, json!({"replicas": 2})).await;
    env.wait_state(NAME, "stable").await;

    env.patch_spec(NAME, json!({"ingress": {"enabled": false}})).await;
    env.wait_state(NAME, "stable").await;
    let ings: Api<Ingress> = env.api();
    wait_until("ingress deleted", TIMEOUT, || async {
        ings.get_opt(NAME).await.unwrap().is_none().then_some(())
    })
    .await
    .unwrap();
    env.patch_spec(
        NAME,
        json!({"ingress": {"enabled": true, "host": "chat.example.test"}}),
    )
    .await;
    assert_eq!(
        env.wait_state(NAME, "stable")
            .await
            .status
            .unwrap()
            .endpoint
            .as_deref(),
        Some("chat.example.test")
    );

    env.patch_spec(NAME, json!({"jobServer": {"dedicatedJobServer": true}}))
        .await;
    env.wait_state(NAME, "stable").await;
    let deps: Api<Deployment> = env.api();
    let js = deps.get(&format!("{NAME}-jobserver")).await.unwrap();
    assert_eq!(
        js.spec.unwrap().selector.match_labels.unwrap()["app"],
        "mattermost-jobserver"
    );
    assert!(env_names(&deps.get(NAME).await.unwrap()).contains(&"MM_JOBSETTINGS_RUNJOBS".to_owned()));
    env.patch_spec(NAME, json!({"resourceLabels": {"team": "chat"}}))
        .await;
    env.wait_state(NAME, "stable").await; // no immutable-selector error on the job server
    env.patch_spec(NAME, json!({"jobServer": {"dedicatedJobServer": false}}))
        .await;
    env.wait_state(NAME, "stable").await;
    wait_until("job server deleted", TIMEOUT, || async {
        deps.get_opt(&format!("{NAME}-jobserver"))
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await
    .unwrap();

    env.patch_spec(NAME, json!({"podTemplate": {"extraLabels": {"tier": "web"}}, "mattermostEnv": [{"name": "X", "value": "1"}]})).await;
    env.wait_state(NAME, "stable").await;
    let pods: Api<Pod> = env.api();
    let list = pods
        .list(&ListParams::default().labels("tier=web"))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 2);
    env.cleanup().await;
}

#[tokio::test]
async fn foreign_objects_with_colliding_names_are_never_touched() {
    let env = env("mm-foreign").await;
    env.apply(SECRETS).await;
    let ing: Ingress = serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": NAME, "labels": {"installation.mattermost.com/installation": NAME}},
        "spec": {"rules": [{"host": "foreign.example.test"}]}
    }))
    .unwrap();
    let ings: Api<Ingress> = env.api();
    let created = ings.create(&PostParams::default(), &ing).await.unwrap();
    // A cluster-scoped object with the installation's name is never touched either.
    let classes: Api<k8s_openapi::api::networking::v1::IngressClass> = Api::all(env.client.clone());
    // Named like the installation, as the Go operator's ALB IngressClass was (G15).
    let class_name = NAME.to_owned();
    let _ = classes.delete(&class_name, &DeleteParams::default()).await;
    let class: k8s_openapi::api::networking::v1::IngressClass = serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
        "metadata": {"name": class_name}, "spec": {"controller": "example.com/foreign"}
    }))
    .unwrap();
    let class = classes.create(&PostParams::default(), &class).await.unwrap();
    env.apply(FULL).await;
    let mm = env
        .wait_condition(NAME, "Degraded", "True", Some("ChildNameConflict"))
        .await;
    assert!(
        mm.status
            .unwrap()
            .error
            .unwrap()
            .contains("not owned by this installation")
    );
    // Disabling the ingress does not delete the foreign one either.
    env.patch_spec(NAME, json!({"ingress": {"enabled": false}})).await;
    env.wait_state(NAME, "stable").await;
    let after = ings.get(NAME).await.unwrap();
    assert_eq!(
        after.metadata.resource_version, created.metadata.resource_version,
        "foreign Ingress untouched"
    );
    let class_after = classes.get(&class_name).await.unwrap();
    assert_eq!(
        class_after.metadata.resource_version,
        class.metadata.resource_version
    );
    classes
        .delete(&class_name, &DeleteParams::default())
        .await
        .unwrap();
    env.cleanup().await;
}

#[tokio::test]
async fn version_change_runs_the_update_job_first_and_a_failed_job_blocks_the_rollout() {
    let env = env("mm-upgrade").await;
    env.apply(SECRETS).await;
    env.apply(FULL).await;
    env.wait_state(NAME, "stable").await;
    let deps: Api<Deployment> = env.api();
    let jobs: Api<Job> = env.api();
    let gen_before = deps.get(NAME).await.unwrap().metadata.generation;

    env.patch_spec(NAME, json!({"version": "9.11.1"})).await;
    let job = wait_until("update job", TIMEOUT, || async {
        jobs.list(&ListParams::default().labels("app=mattermost-update-check"))
            .await
            .unwrap()
            .items
            .into_iter()
            .next()
    })
    .await
    .unwrap();
    let c = &job
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0];
    assert_eq!(
        c.args.as_deref(),
        Some(&["db".to_owned(), "migrate".to_owned()][..])
    );
    assert!(c.image.as_deref().unwrap().ends_with(":9.11.1"));
    assert_eq!(
        deps.get(NAME).await.unwrap().metadata.generation,
        gen_before,
        "Deployment untouched while the Job runs"
    );
    let mm = env.wait_state(NAME, "stable").await;
    assert_eq!(mm.status.unwrap().version.as_deref(), Some("9.11.1"));
    let rs: Api<ReplicaSet> = env.api();
    assert!(rs.list(&ListParams::default()).await.unwrap().items.len() >= 2);

    // A failing migration (image tag containing "fail") blocks the rollout with the reason.
    let watcher = testenv::EndpointWatcher::start(&env.client, env.name(), NAME)
        .await
        .unwrap();
    wait_until("2 ready endpoints", TIMEOUT, || async {
        (watcher.current() == 2).then_some(())
    })
    .await
    .unwrap();
    let gen_before = deps.get(NAME).await.unwrap().metadata.generation;
    let t0 = std::time::Instant::now();
    env.patch_spec(NAME, json!({"version": "9.12.0-fail"})).await;
    let mm = env
        .wait_condition(NAME, "UpdateJobSucceeded", "False", Some("UpdateJobFailed"))
        .await;
    let st = mm.status.unwrap();
    assert_eq!(st.state.as_deref(), Some("reconciling"));
    assert_eq!(st.version.as_deref(), Some("9.11.1"), "old pods keep serving");
    assert!(
        st.error.unwrap().contains("injected failure"),
        "termination message surfaces"
    );
    assert_eq!(deps.get(NAME).await.unwrap().metadata.generation, gen_before);
    wait_until("warning event", TIMEOUT, || async {
        warning_reasons(&env)
            .await
            .contains("UpdateJobFailed")
            .then_some(())
    })
    .await
    .unwrap();
    // No relaunch loop: still one Job for that image a while later; old pods served throughout.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let failing: Vec<Job> = jobs
        .list(&ListParams::default().labels("app=mattermost-update-check"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|j| {
            j.annotations()
                .get("installation.mattermost.com/update-image")
                .is_some_and(|i| i.ends_with("-fail"))
        })
        .collect();
    assert_eq!(failing.len(), 1);
    assert_eq!(
        failing[0].status.as_ref().and_then(|s| s.failed),
        Some(1),
        "failed at the first non-zero exit"
    );
    assert!(
        watcher.min_ready_since(t0) >= 2,
        "ready endpoints dropped: {:?}",
        watcher.history()
    );
    println!(
        "failed update Job: min ready endpoints {}",
        watcher.min_ready_since(t0)
    );
    // Setting the version back recovers.
    env.patch_spec(NAME, json!({"version": "9.11.1"})).await;
    env.wait_state(NAME, "stable").await;
    env.cleanup().await;
}

#[tokio::test]
async fn local_file_store_claim_survives_deletion_of_the_installation() {
    let env = env("mm-pvc").await;
    env.apply(SECRETS).await;
    env.apply(
        r#"apiVersion: installation.mattermost.com/v1beta1
kind: Mattermost
metadata: {name: local}
spec:
  replicas: 1
  ingressName: local.example.test
  database: {external: {secret: db-credentials}}
  fileStore: {local: {enabled: true, storageSize: 1Gi, accessModes: [ReadWriteOnce]}}
"#,
    )
    .await;
    env.wait_state("local", "stable").await;
    let pvcs: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> = env.api();
    let pvc = pvcs.get("local").await.unwrap();
    assert!(pvc.owner_references().is_empty(), "retained: no owner reference");
    let dep: Deployment = env.api().get("local").await.unwrap();
    let vols = dep.spec.unwrap().template.spec.unwrap().volumes.unwrap();
    assert_eq!(
        vols[0].persistent_volume_claim.as_ref().unwrap().claim_name,
        "local"
    );

    let mms: Api<Mattermost> = env.api();
    mms.delete("local", &DeleteParams::foreground()).await.unwrap();
    let deps: Api<Deployment> = env.api();
    wait_until("deployment collected", TIMEOUT, || async {
        deps.get_opt("local").await.unwrap().is_none().then_some(())
    })
    .await
    .unwrap();
    let after = pvcs.get("local").await.unwrap();
    assert_eq!(after.uid(), pvc.uid(), "the data survives");
    assert!(after.metadata.deletion_timestamp.is_none());
    env.cleanup().await;
}
