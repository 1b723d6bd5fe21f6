//! The upgrade guide's checklist on the real control plane: a backup before the update Job, a
//! verification after the rollout, and the restricted Pod Security of their pods. kwok "runs"
//! the Jobs: their pods complete, or fail through the testenv annotations the spec's
//! `extraAnnotations` put on them (docs/testenv.md).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Env, SECRETS, TIMEOUT, env, env_without_operator};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Namespace, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use mattermost_api::v1beta1::Mattermost;
use mattermost_operator::desired::names::Names;
use mattermost_operator::desired::{self, DatabaseSecret, DbType, Inputs};
use serde_json::json;
use testenv::{EndpointWatcher, wait_until};

fn manifest(name: &str, replicas: i32, upgrade: serde_json::Value) -> String {
    serde_json::to_string(&json!({
        "apiVersion": "installation.mattermost.com/v1beta1", "kind": "Mattermost",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "version": "10.8.1",
            "ingress": {"enabled": false},
            "database": {"external": {"secret": "db-credentials"}},
            "fileStore": {"external": {"url": "s3.example.test", "bucket": "b", "secret": "file-store-credentials"}},
            "scheduling": {"resources": {"requests": {"cpu": "10m", "memory": "32Mi"}}},
            "upgrade": upgrade,
        }
    }))
    .unwrap()
}

fn image(dep: &Deployment) -> String {
    let pod = dep.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    pod.containers[0].image.clone().unwrap()
}

/// Every Job seen in the namespace, last version of each (they are deleted once `stable`; a
/// watch also sees the state they were deleted in).
fn record_jobs(env: &Env) -> (Arc<Mutex<BTreeMap<String, Job>>>, tokio::task::JoinHandle<()>) {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    let seen = Arc::new(Mutex::new(BTreeMap::new()));
    let api: Api<Job> = env.api();
    let sink = seen.clone();
    let task = tokio::spawn(async move {
        let mut jobs = watcher(api, watcher::Config::default()).touched_objects().boxed();
        while let Some(event) = jobs.next().await {
            if let Ok(job) = event {
                sink.lock().unwrap().insert(job.name_any(), job);
            }
        }
    });
    (seen, task)
}

/// The first time since `since` each event reason was emitted for the installation `name`. A
/// repeated event is a series with its first and last time; a reconcile that starts from a
/// cached status older than the last write can repeat an event, so the earliest counts.
async fn event_times(env: &Env, name: &str, since: Timestamp) -> BTreeMap<String, Timestamp> {
    let events: Api<Event> = env.api();
    let mut times: BTreeMap<String, Timestamp> = BTreeMap::new();
    for e in events.list(&ListParams::default()).await.unwrap().items {
        if e.involved_object.kind.as_deref() != Some("Mattermost")
            || e.involved_object.name.as_deref() != Some(name)
        {
            continue;
        }
        let first = e.event_time.map(|t| t.0).or(e.last_timestamp.map(|t| t.0));
        let last = e
            .series
            .as_ref()
            .and_then(|s| s.last_observed_time.as_ref().map(|t| t.0));
        let Some(reason) = e.reason else { continue };
        for when in [first, last].into_iter().flatten().filter(|t| *t >= since) {
            let entry = times.entry(reason.clone()).or_insert(when);
            *entry = (*entry).min(when);
        }
    }
    times
}

fn condition_message(mm: &Mattermost, type_: &str) -> String {
    let st = mm.status.as_ref().unwrap();
    let c = st.conditions.iter().find(|c| c.type_ == type_).unwrap();
    c.message.clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn backup_then_update_then_rollout_then_verify_and_a_failed_backup_blocks_until_retried() {
    let env = env("bv-order").await;
    env.apply(SECRETS).await;
    let name = "chat";
    env.apply(&manifest(
        name,
        2,
        json!({"backup": {"enabled": true, "keep": 3}}),
    ))
    .await;
    env.wait_state(name, "stable").await;
    let watcher = EndpointWatcher::start(&env.client, env.name(), name)
        .await
        .unwrap();
    wait_until("2 ready endpoints", TIMEOUT, || async {
        (watcher.current() == 2).then_some(())
    })
    .await
    .unwrap();
    let (jobs_seen, recorder) = record_jobs(&env);
    let t0 = std::time::Instant::now();

    // A failing backup: nothing else is created, the old pods keep serving.
    env.patch_spec(
        name,
        json!({"version": "10.9.0", "upgrade": {"backup": {"extraAnnotations": {
            "testenv.invalid/fail": "true",
            "testenv.invalid/termination-message": "pg_dump: error: connection to server failed"
        }}}}),
    )
    .await;
    let mm = env
        .wait_condition(name, "Degraded", "True", Some("BackupFailed"))
        .await;
    let message = condition_message(&mm, "Degraded");
    assert!(message.contains("connection to server failed"), "{message}");
    assert_eq!(mm.status.as_ref().unwrap().state.as_deref(), Some("reconciling"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let names: Vec<String> = jobs_seen.lock().unwrap().keys().cloned().collect();
    assert!(
        names.len() == 1 && names[0].starts_with("chat-backup-"),
        "only the backup Job: {names:?}"
    );
    let deps: Api<Deployment> = env.api();
    assert!(image(&deps.get(name).await.unwrap()).ends_with(":10.8.1"));
    assert!(
        event_times(&env, name, Timestamp::UNIX_EPOCH)
            .await
            .contains_key("BackupFailed"),
        "Warning event"
    );

    // Fixed and retried: backup → update → rollout → verification → stable.
    env.patch_spec(name, json!({"upgrade": {"backup": {"extraAnnotations": null}}}))
        .await;
    let mms: Api<Mattermost> = env.api();
    let retried_at = Timestamp::now();
    let retry = json!({"metadata": {"annotations": {"installation.mattermost.com/retry-update-job": "1"}}});
    mms.patch(name, &PatchParams::default(), &Patch::Merge(&retry))
        .await
        .unwrap();
    let mm = env.wait_state(name, "stable").await;
    let st = mm.status.clone().unwrap();
    assert_eq!(st.version.as_deref(), Some("10.9.0"));
    let backup = st.last_backup.expect("status.lastBackup");
    assert_eq!(backup.version, "10.8.1");
    assert!(
        backup
            .location
            .starts_with("s3://b/mattermost-backups/chat/chat-10.8.1-"),
        "{}",
        backup.location
    );
    assert!(
        watcher.min_ready_since(t0) >= 2,
        "ready endpoints dropped: {:?}",
        watcher.history()
    );

    let times = event_times(&env, name, retried_at).await;
    let order = [
        "BackupStarted",
        "BackupSucceeded",
        "UpdateJobStarted",
        "UpdateJobSucceeded",
        "RolloutStarted",
        "VerificationStarted",
        "VerificationSucceeded",
        "Stable",
    ];
    let at: Vec<Timestamp> = order
        .iter()
        .map(|r| *times.get(*r).unwrap_or_else(|| panic!("no {r} event: {times:?}")))
        .collect();
    for (i, pair) in at.windows(2).enumerate() {
        assert!(
            pair[0] <= pair[1],
            "{} after {}: {times:?}",
            order[i],
            order[i + 1]
        );
    }

    // The Jobs: each created after the previous one completed, and the verification after
    // the new pods.
    recorder.abort();
    let jobs = jobs_seen.lock().unwrap().clone();
    let find = |infix: &str| {
        jobs.values()
            .find(|j| j.name_any().contains(infix))
            .unwrap_or_else(|| panic!("no {infix} Job: {:?}", jobs.keys()))
    };
    let created = |j: &Job| j.metadata.creation_timestamp.as_ref().unwrap().0;
    // Success as the Job controller first reports it (`completionTime` waits for the pods).
    let completed = |j: &Job| {
        let conds = j.status.as_ref().and_then(|s| s.conditions.as_ref());
        conds
            .into_iter()
            .flatten()
            .filter(|c| (c.type_ == "SuccessCriteriaMet" || c.type_ == "Complete") && c.status == "True")
            .filter_map(|c| c.last_transition_time.as_ref().map(|t| t.0))
            .min()
            .unwrap_or_else(|| panic!("{} not completed", j.name_any()))
    };
    let (backup, update, verify) = (find("-backup-"), find("-update-"), find("-verify-"));
    assert!(
        completed(backup) <= created(update),
        "update Job before the backup completed"
    );
    assert!(
        completed(update) <= created(verify),
        "verification before the update Job completed"
    );
    assert!(
        times["RolloutStarted"] <= created(verify).checked_add(jiff_second()).unwrap(),
        "verification before the rollout"
    );
    let pod = verify.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert_eq!(
        pod.containers[0].args.as_ref().unwrap()[1],
        format!("--url=http://chat.{}.svc:8065", env.name())
    );
    println!(
        "upgrade with backup: events {:?}",
        order
            .iter()
            .zip(&at)
            .map(|(r, t)| format!("{r} {t}"))
            .collect::<Vec<_>>()
    );

    // Once stable, the Jobs are gone.
    let api: Api<Job> = env.api();
    wait_until("Jobs cleaned up", TIMEOUT, || async {
        api.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
            .then_some(())
    })
    .await
    .unwrap();
    env.cleanup().await;
}

fn jiff_second() -> k8s_openapi::jiff::SignedDuration {
    k8s_openapi::jiff::SignedDuration::from_secs(1)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_verification_degrades_and_the_previous_version_serves_again_with_rollback() {
    let env = env("bv-verify").await;
    env.apply(SECRETS).await;
    env.apply(&manifest("rb", 2, json!({"automaticRollback": true})))
        .await;
    env.apply(&manifest("keep", 1, json!({}))).await;
    env.wait_state("rb", "stable").await;
    env.wait_state("keep", "stable").await;
    let watcher = EndpointWatcher::start(&env.client, env.name(), "rb")
        .await
        .unwrap();
    wait_until("2 ready endpoints", TIMEOUT, || async {
        (watcher.current() == 2).then_some(())
    })
    .await
    .unwrap();
    let t0 = std::time::Instant::now();
    let unhealthy = json!({"version": "10.9.0", "upgrade": {"verify": {"extraAnnotations": {
        "testenv.invalid/fail": "true",
        "testenv.invalid/termination-message": "ServerUnhealthy: server unhealthy: status UNHEALTHY, database UNHEALTHY, file store OK"
    }}}});
    env.patch_spec("rb", unhealthy.clone()).await;
    env.patch_spec("keep", unhealthy).await;

    // Without automatic rollback: the new version runs, reported Degraded, never stable.
    let mm = env
        .wait_condition("keep", "Degraded", "True", Some("VerificationFailed"))
        .await;
    let message = condition_message(&mm, "Degraded");
    assert!(message.contains("database UNHEALTHY"), "{message}");
    assert_ne!(mm.status.as_ref().unwrap().state.as_deref(), Some("stable"));
    let deps: Api<Deployment> = env.api();
    assert!(image(&deps.get("keep").await.unwrap()).ends_with(":10.9.0"));

    // With automatic rollback: the last stable version serves again.
    env.wait_condition("rb", "Degraded", "True", Some("VerificationFailed"))
        .await;
    let mms: Api<Mattermost> = env.api();
    let mm = testenv::wait_for_object(&mms, "rb", TIMEOUT, |mm: &Mattermost| {
        let st = mm.status.as_ref();
        st.and_then(|s| s.version.as_deref()) == Some("10.8.1")
            && st.and_then(|s| s.rolled_back_from.as_deref()).is_some()
            && st.and_then(|s| s.updated_replicas) == Some(2)
    })
    .await
    .expect("rolled back");
    assert!(image(&deps.get("rb").await.unwrap()).ends_with(":10.8.1"));
    let st = mm.status.unwrap();
    let degraded = st.conditions.iter().find(|c| c.type_ == "Degraded").unwrap();
    assert_eq!(degraded.reason, "VerificationFailed", "{degraded:?}");
    let since = Timestamp::UNIX_EPOCH;
    assert!(event_times(&env, "rb", since).await.contains_key("RollingBack"));
    wait_until("old pods serve again", TIMEOUT, || async {
        (watcher.current() == 2).then_some(())
    })
    .await
    .unwrap();
    assert!(
        watcher.min_ready_since(t0) >= 2,
        "ready endpoints dropped: {:?}",
        watcher.history()
    );
    println!("verification rollback: endpoint history {:?}", watcher.history());

    // A fixed version moves on and is verified.
    env.patch_spec(
        "rb",
        json!({"version": "10.9.1", "upgrade": {"verify": {"extraAnnotations": null}}}),
    )
    .await;
    let mm = env.wait_state("rb", "stable").await;
    let st = mm.status.unwrap();
    assert_eq!(
        (st.version.as_deref(), st.rolled_back_from),
        (Some("10.9.1"), None)
    );
    let verified = st.conditions.iter().find(|c| c.type_ == "VerificationSucceeded");
    assert!(
        verified.is_some_and(|c| c.status == "True"),
        "{:?}",
        st.conditions
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn backup_and_verification_pods_pass_restricted_pod_security() {
    let env = env_without_operator("bv-psa").await;
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> = env.api();
    wait_until("default ServiceAccount", TIMEOUT, || async {
        accounts.get_opt("default").await.unwrap().map(|_| ())
    })
    .await
    .unwrap();
    let namespaces: Api<Namespace> = Api::all(env.client.clone());
    let label = json!({"metadata": {"labels": {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest"
    }}});
    namespaces
        .patch(env.name(), &PatchParams::default(), &Patch::Merge(&label))
        .await
        .unwrap();
    let spec = json!({
        "version": "10.9.0",
        "database": {"external": {"secret": "db-credentials"}},
        "fileStore": {"external": {"url": "s3.example.test", "bucket": "b", "secret": "file-store-credentials"}},
        "upgrade": {"backup": {"enabled": true}},
    });
    let mut mm = Mattermost::new("chat", serde_json::from_value(spec).unwrap());
    mm.metadata.namespace = Some(env.name().to_owned());
    let names = Names::of(&mm);
    let inputs = |db_type| Inputs {
        database: Some(DatabaseSecret {
            name: "db-credentials".into(),
            db_type,
            ..Default::default()
        }),
    };
    let image = "mattermost/mattermost-enterprise-edition:10.9.0";
    let jobs = [
        desired::backup_job::backup_job(&mm, &names, &inputs(DbType::Postgres), image, "10.8.1").unwrap(),
        desired::backup_job::backup_job(&mm, &names, &inputs(DbType::MySql), image, "10.8.1").unwrap(),
        desired::verify_job::verify_job(&mm, &names, image, "op:1"),
    ];
    let pods: Api<Pod> = env.api();
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    for job in jobs {
        let template = job.spec.unwrap().template;
        let pod = Pod {
            metadata: kube::api::ObjectMeta {
                name: job.metadata.name.clone(),
                ..Default::default()
            },
            spec: template.spec,
            ..Default::default()
        };
        pods.create(&dry_run, &pod)
            .await
            .unwrap_or_else(|e| panic!("{:?} refused by restricted Pod Security: {e}", job.metadata.name));
    }
    // The check bites: a privileged pod is refused in this namespace.
    let mut bad = Pod::default();
    bad.metadata.name = Some("privileged".into());
    bad.spec = Some(k8s_openapi::api::core::v1::PodSpec {
        containers: vec![k8s_openapi::api::core::v1::Container {
            name: "c".into(),
            image: Some("x".into()),
            ..Default::default()
        }],
        ..Default::default()
    });
    assert!(
        pods.create(&dry_run, &bad).await.is_err(),
        "restricted is enforced"
    );
    env.cleanup().await;
}
