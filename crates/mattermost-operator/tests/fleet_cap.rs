//! The rollout cap holds everything that rolls pods (config-only template changes, migrations),
//! across a restart, and every slot comes back (revert, deletion, step deadline); referenced
//! Secrets are read again only when they changed. On the real control plane.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{SECRETS, TIMEOUT};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use mattermost_api::v1alpha1::ClusterInstallation;
use serde_json::json;
use testenv::{wait_for_object, wait_until};

const LEGACY: &str = include_str!("fixtures/clusterinstallation.yaml");

fn installation(name: &str) -> String {
    format!(
        "apiVersion: installation.mattermost.com/v1beta1\nkind: Mattermost\nmetadata:\n  name: {name}\nspec:\n  \
         replicas: 1\n  version: 9.11.0\n  ingress: {{enabled: false}}\n  database: {{external: {{secret: \
         db-credentials}}}}\n  fileStore: {{external: {{url: s3.amazonaws.com, bucket: b, secret: \
         file-store-credentials}}}}\n  scheduling: {{resources: {{requests: {{cpu: 10m, memory: 32Mi}}}}}}\n"
    )
}

fn rolling(dep: &Deployment) -> bool {
    let want = dep.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let Some(st) = dep.status.as_ref() else {
        return true;
    };
    st.observed_generation.unwrap_or(0) < dep.metadata.generation.unwrap_or(0)
        || st.updated_replicas.unwrap_or(0) != want
        || st.replicas.unwrap_or(0) != want
}

fn cpu_request(dep: &Deployment) -> String {
    let c = &dep
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0];
    c.resources.as_ref().unwrap().requests.as_ref().unwrap()["cpu"]
        .0
        .clone()
}

/// Counts the Deployments of `ns` rolling at once, every 50 ms, until aborted.
fn sample_rolling(deps: Api<Deployment>, max: Arc<AtomicUsize>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if let Ok(list) = deps.list(&ListParams::default()).await {
                let n = list.items.iter().filter(|d| rolling(d)).count();
                max.fetch_max(n, Ordering::SeqCst);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_template_change_of_every_installation_rolls_at_most_the_cap_even_across_a_restart() {
    let mut env = common::env_without_operator("cap-template").await;
    env.max_rollouts = 3;
    env.start_operator();
    env.apply(SECRETS).await;
    let names: Vec<String> = (0..12).map(|i| format!("mm-{i:02}")).collect();
    let all: Vec<String> = names.iter().map(|n| installation(n)).collect();
    env.apply(&all.join("---\n")).await;
    for n in &names {
        env.wait_state(n, "stable").await;
    }

    // What an operator release with another default does: the live template of every
    // installation differs from what the (restarted) operator wants. Made while it is down.
    env.stop_operator();
    let deps: Api<Deployment> = env.api();
    let other = json!([{"op": "replace", "path": "/spec/template/spec/containers/0/resources/requests/cpu", "value": "11m"}]);
    for n in &names {
        deps.patch(
            n,
            &PatchParams::default(),
            &Patch::<()>::Json(serde_json::from_value(other.clone()).unwrap()),
        )
        .await
        .unwrap();
    }
    wait_until("the edited templates rolled out", TIMEOUT, || async {
        let list = deps.list(&ListParams::default()).await.unwrap().items;
        list.iter()
            .all(|d| !rolling(d) && cpu_request(d) == "11m")
            .then_some(())
    })
    .await
    .unwrap();

    let max = Arc::new(AtomicUsize::new(0));
    let sampler = sample_rolling(deps.clone(), max.clone());
    env.start_operator();
    let reverted = || async {
        let list = deps.list(&ListParams::default()).await.unwrap().items;
        list.iter().filter(|d| cpu_request(d) == "10m").count()
    };
    wait_until("the first wave", TIMEOUT, || async {
        (reverted().await >= 2).then_some(())
    })
    .await
    .unwrap();
    // A restart in the middle of a wave: the new process rebuilds the slots first.
    env.start_operator();
    wait_until(
        "every template back to the operator's",
        Duration::from_secs(300),
        || async {
            let list = deps.list(&ListParams::default()).await.unwrap().items;
            list.iter()
                .all(|d| !rolling(d) && cpu_request(d) == "10m")
                .then_some(())
        },
    )
    .await
    .unwrap();
    sampler.abort();
    let max = max.load(Ordering::SeqCst);
    assert!(max <= 3, "{max} Deployments rolled at once with a cap of 3");
    assert!(max >= 2, "the cap was used ({max})");
    for n in &names {
        env.wait_state(n, "stable").await;
    }
    env.cleanup().await;
}

fn legacy(name: &str) -> String {
    LEGACY
        .replace("name: mm-legacy", &format!("name: {name}"))
        .replace(
            "size: 1000users",
            "replicas: 1\n  resources: {requests: {cpu: 10m, memory: 32Mi}}",
        )
        .replace("legacy.example.com", &format!("{name}.example.com"))
}

fn step(ci: &ClusterInstallation) -> Option<String> {
    ci.status.as_ref()?.migration.as_ref()?.status.clone()
}

const UNDER_WAY: &[&str] = &[
    "OrphaningDeployment",
    "WaitingForNewPods",
    "WaitingForMattermost",
    "CleaningUp",
];

#[tokio::test(flavor = "multi_thread")]
async fn stalled_reverted_and_deleted_migrations_give_their_slot_back() {
    let mut env = common::env_without_operator("cap-migrate").await;
    env.max_rollouts = 1;
    env.migration_step_deadline = Duration::from_secs(15);
    env.start_operator();
    env.apply(SECRETS).await;
    let cis: Api<ClusterInstallation> = env.api();
    let names = ["stuck", "reverted", "deleted", "healthy"];
    let all: Vec<String> = names.iter().map(|n| legacy(n)).collect();
    env.apply(&all.join("---\n")).await;
    for n in names {
        wait_for_object(&cis, n, TIMEOUT, |ci: &ClusterInstallation| {
            ci.status.as_ref().and_then(|s| s.state.as_deref()) == Some("stable")
        })
        .await
        .unwrap();
    }
    // Migrating to a version whose pods never become Ready: it stays under way.
    let migrate = |name: &'static str, version: &'static str| {
        let cis = cis.clone();
        async move {
            let patch = json!({"spec": {"migrate": true, "version": version}});
            cis.patch(name, &PatchParams::default(), &Patch::Merge(patch))
                .await
                .unwrap();
        }
    };
    let under_way = |name: &'static str| {
        let cis = cis.clone();
        async move {
            wait_for_object(&cis, name, TIMEOUT, |ci: &ClusterInstallation| {
                step(ci).is_some_and(|s| UNDER_WAY.contains(&s.as_str()))
                    && ci
                        .status
                        .as_ref()
                        .and_then(|s| s.migration.as_ref())
                        .and_then(|m| m.error.as_ref())
                        .is_none()
            })
            .await
            .unwrap_or_else(|e| panic!("{name} never got the slot: {e}"));
        }
    };

    // Its new pods never become Ready: past the step deadline it is Stalled and lets go.
    migrate("stuck", "9.11.0-never-ready").await;
    under_way("stuck").await;
    let stalled = wait_for_object(&cis, "stuck", TIMEOUT, |ci: &ClusterInstallation| {
        ci.status.iter().flat_map(|s| s.conditions.iter()).any(|c| {
            c.type_ == "Stalled" && c.status == "True" && c.reason == "MigrationStepDeadlineExceeded"
        })
    })
    .await
    .unwrap();
    let message = stalled.status.unwrap().migration.unwrap().error.unwrap();
    assert!(message.contains("WaitingForNewPods"), "{message}");

    // Reverted while under way.
    migrate("reverted", "9.11.0-never-ready").await;
    under_way("reverted").await;
    cis.patch(
        "reverted",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"migrate": false}})),
    )
    .await
    .unwrap();

    // Deleted while under way.
    migrate("deleted", "9.11.0-never-ready").await;
    under_way("deleted").await;
    cis.delete("deleted", &DeleteParams::background()).await.unwrap();

    // And one that works still gets the slot and finishes.
    migrate("healthy", "9.11.0").await;
    let finished = wait_until("the healthy migration finished", TIMEOUT, || async {
        cis.get_opt("healthy").await.unwrap().is_none().then_some(())
    })
    .await;
    if finished.is_err() {
        for ci in cis.list(&ListParams::default()).await.unwrap() {
            eprintln!("{}: {:?}", ci.name_any(), ci.status);
        }
        panic!("the healthy migration did not finish");
    }
    env.wait_state("healthy", "stable").await;
    let stuck = cis.get("stuck").await.unwrap();
    assert_eq!(
        step(&stuck).as_deref(),
        Some("WaitingForNewPods"),
        "nothing was undone"
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_secret_is_read_again_and_status_follows() {
    let mut env = common::env_without_operator("secret-reads").await;
    // The operator's own clients: its requests carry its User-Agent in the audit log.
    env.start_operator_as(common::operator_clients().await);
    env.apply(SECRETS).await;
    env.apply(&installation("mm-a")).await;
    env.wait_state("mm-a", "stable").await;
    let audit = testenv::AuditLog::new();
    let ns = env.name().to_owned();
    let secret_gets = |mark| {
        audit
            .since(mark)
            .unwrap()
            .into_iter()
            .filter(|e| e.user_agent.starts_with("mattermost-operator/") && e.verb == "get")
            .filter_map(|e| e.object_ref)
            .filter(|o| o.resource == "secrets" && o.namespace.as_deref() == Some(ns.as_str()))
            .filter_map(|o| o.name)
            .collect::<Vec<_>>()
    };
    let unchanged = audit.mark().unwrap();
    // An upgrade and a scale change the spec but no Secret (the installation stays stable).
    env.patch_spec("mm-a", json!({"version": "9.11.1", "replicas": 2}))
        .await;
    wait_for_object(
        &env.api::<mattermost_api::v1beta1::Mattermost>(),
        "mm-a",
        TIMEOUT,
        |mm| {
            let st = mm.status.as_ref();
            st.and_then(|s| s.state.as_deref()) == Some("stable")
                && st.and_then(|s| s.version.as_deref()) == Some("9.11.1")
        },
    )
    .await
    .unwrap();

    // Unchanged Secrets were not fetched again by the reconciles of the upgrade and the scale.
    let got = secret_gets(unchanged);
    assert!(got.is_empty(), "unchanged Secrets fetched again: {got:?}");

    // The file-store Secret rotated to something unusable: read again, and status follows.
    let rotated = audit.mark().unwrap();
    let secrets: Api<Secret> = env.api();
    secrets
        .patch(
            "file-store-credentials",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"secretkey": ""}})),
        )
        .await
        .unwrap();
    env.wait_condition("mm-a", "FileStoreConfigured", "False", Some("SecretKeyMissing"))
        .await;

    // Rotated to a new value: read again, and the installation is stable again.
    secrets
        .patch(
            "file-store-credentials",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"secretkey": "rotated-secret-key"}})),
        )
        .await
        .unwrap();
    env.wait_condition("mm-a", "FileStoreConfigured", "True", None)
        .await;
    env.wait_state("mm-a", "stable").await;
    // Only the rotated Secret was read again (once per new resourceVersion, at most a few).
    let got = secret_gets(rotated);
    assert!(
        !got.is_empty() && got.iter().all(|n| n == "file-store-credentials"),
        "Secret reads after the rotation: {got:?}"
    );
    env.cleanup().await;
}
