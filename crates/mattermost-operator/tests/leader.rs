//! Leader election between operator processes (the built binary, each under its own
//! ServiceAccount so the audit log tells them apart): only the leader writes; `kill -9` of the
//! leader mid-upgrade hands over once the lease expires (15 s after the last renewal, + at most
//! 1.5 s) and the upgrade finishes without downtime; SIGTERM hands over in at most 3 s; a Lease
//! held by another identity (a Go operator) keeps ours idle; a leader whose Lease another identity
//! takes over stops writing at once and exits 1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::process::{Operator, free_port, service_account_kubeconfig};
use common::{SECRETS, env_without_operator};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use mattermost_api::v1beta1::Mattermost;
use serde_json::json;

const LEASE: &str = "b78a986e.mattermost.com";

/// A ServiceAccount bound to cluster-admin (RBAC is proven elsewhere; here only identity matters).
async fn operator_account(client: &Client, ns: &str, name: &str) -> std::path::PathBuf {
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    sas.create(&PostParams::default(), &sa).await.unwrap();
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": format!("{ns}-{name}")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns}]
    }))
    .unwrap();
    Api::<ClusterRoleBinding>::all(client.clone())
        .patch(
            &format!("{ns}-{name}"),
            &PatchParams::apply("testenv"),
            &Patch::Apply(&binding),
        )
        .await
        .unwrap();
    service_account_kubeconfig(client, ns, name).await
}

fn spawn(ops_ns: &str, watch_ns: &str, kubeconfig: &std::path::Path, pod: &str) -> Operator {
    let port = free_port();
    let args = vec![
        "--enable-leader-election".to_owned(),
        format!("--metrics-addr=127.0.0.1:{port}"),
    ];
    let env = vec![
        ("POD_NAMESPACE".to_owned(), ops_ns.to_owned()),
        ("POD_NAME".to_owned(), pod.to_owned()),
        ("WATCH_NAMESPACE".to_owned(), watch_ns.to_owned()),
        ("REQUEUE_ON_LIMIT_DELAY".to_owned(), "2s".to_owned()),
        (
            "LOG_LEVEL".to_owned(),
            "info,mattermost_operator=debug".to_owned(),
        ),
    ];
    Operator::spawn(&args, &env, kubeconfig, port)
}

fn writes_by(events: &[testenv::AuditEvent], user: &str, ns: &str) -> usize {
    events
        .iter()
        .filter(|e| {
            e.user.username == user
                && e.is_write()
                && e.object_ref.as_ref().and_then(|o| o.namespace.as_deref()) == Some(ns)
        })
        .count()
}

#[tokio::test]
async fn only_the_leader_works_and_a_follower_takes_over_without_downtime() {
    let ops = env_without_operator("mm-leader-ops").await;
    let work = env_without_operator("mm-leader-work").await;
    let client = ops.client.clone();
    let kc_a = operator_account(&client, ops.name(), "op-a").await;
    let kc_b = operator_account(&client, ops.name(), "op-b").await;
    let user_a = format!("system:serviceaccount:{}:op-a", ops.name());
    let user_b = format!("system:serviceaccount:{}:op-b", ops.name());
    let audit = testenv::AuditLog::new();
    let mark = audit.mark().unwrap();

    let mut a = spawn(ops.name(), work.name(), &kc_a, "op-a");
    a.wait_healthy().await;
    a.wait_leader(Duration::from_secs(30)).await;
    let mut b = spawn(ops.name(), work.name(), &kc_b, "op-b");
    b.wait_healthy().await;
    assert_eq!(b.leader_status().await, Some(0), "the second process follows");
    let (code, body) = b.get("/readyz").await.unwrap();
    assert_eq!(
        (code, body.contains("standby")),
        (200, true),
        "a follower is ready: {body}"
    );

    work.apply(SECRETS).await;
    work.apply(include_str!("fixtures/mattermost-external.yaml"))
        .await;
    work.patch_spec("mm-example-full", json!({"size": null, "replicas": 3}))
        .await;
    work.wait_state("mm-example-full", "stable").await;
    let events = audit.since(mark).unwrap();
    assert!(writes_by(&events, &user_a, work.name()) > 0, "the leader writes");
    assert_eq!(
        writes_by(&events, &user_b, work.name()),
        0,
        "the follower writes nothing"
    );

    // kill -9 of the leader while the upgrade's update Job runs.
    let endpoints = testenv::EndpointWatcher::start(&client, work.name(), "mm-example-full")
        .await
        .unwrap();
    testenv::wait_until("3 ready endpoints", common::TIMEOUT, || async {
        (endpoints.current() == 3).then_some(())
    })
    .await
    .unwrap();
    let upgrade_started = Instant::now();
    work.patch_spec("mm-example-full", json!({"version": "9.11.1"}))
        .await;
    let jobs: Api<Job> = work.api();
    testenv::wait_until("update Job created", common::TIMEOUT, || async {
        let list = jobs.list(&Default::default()).await.unwrap();
        (!list.items.is_empty()).then_some(())
    })
    .await
    .unwrap();
    a.kill9().await;
    let killed = Instant::now();
    let killed_at = Timestamp::now();
    // The dead leader's last renewal: nobody writes the Lease again until it expires.
    let leases: Api<Lease> = ops.api();
    let last_renewal = leases.get(LEASE).await.unwrap().spec.unwrap();
    assert!(
        last_renewal
            .holder_identity
            .as_deref()
            .unwrap()
            .starts_with("op-a_"),
        "{last_renewal:?}"
    );
    let expiry_ms = last_renewal.renew_time.as_ref().unwrap().0.as_millisecond()
        + 1000 * i64::from(last_renewal.lease_duration_seconds.unwrap());
    b.wait_leader(Duration::from_secs(30)).await;
    let takeover_after_kill = killed.elapsed();
    let acquired = leases.get(LEASE).await.unwrap().spec.unwrap();
    assert!(
        acquired.holder_identity.as_deref().unwrap().starts_with("op-b_"),
        "{acquired:?}"
    );
    let acquired_ms = acquired.acquire_time.as_ref().unwrap().0.as_millisecond();
    eprintln!(
        "kill -9 failover: follower leads {:.1?} after the kill (observed), acquired the Lease {} ms \
         after the kill and {} ms after the dead leader's Lease expired",
        takeover_after_kill,
        acquired_ms - killed_at.as_millisecond(),
        acquired_ms - expiry_ms
    );
    // The bound (docs/install.md, "Leader election"): never before the Lease expires (15 s after
    // the dead leader's last renewal), and at most 1 s (kube-lease-manager's randomised wait
    // after clearing an expired Lease, 100-1000 ms) + 0.5 s of API round trips after it. The last
    // renewal was before the kill, so that is at most 16.5 s after the kill.
    assert!(
        acquired_ms > expiry_ms,
        "the follower took a Lease that had not expired: {acquired:?} vs {last_renewal:?}"
    );
    assert!(
        acquired_ms - expiry_ms <= 1500,
        "the follower took the Lease {} ms after it expired (bound: 1500 ms)",
        acquired_ms - expiry_ms
    );
    assert!(
        acquired_ms - killed_at.as_millisecond() <= 16_500,
        "takeover {} ms after the kill (bound: lease 15 s + 1.5 s)",
        acquired_ms - killed_at.as_millisecond()
    );
    let mm = work.wait_state("mm-example-full", "stable").await;
    assert_eq!(mm.status.unwrap().version.as_deref(), Some("9.11.1"));
    let min = endpoints.min_ready_since(upgrade_started);
    assert!(
        min >= 3,
        "ready endpoints dropped to {min} during the failover: {:?}",
        endpoints.history()
    );
    let events = audit.since(mark).unwrap();
    assert!(
        writes_by(&events, &user_b, work.name()) > 0,
        "the new leader finished the upgrade"
    );

    // SIGTERM: the leader releases the Lease and a new follower leads within 3 s.
    let mut c = spawn(ops.name(), work.name(), &kc_a, "op-c");
    c.wait_healthy().await;
    assert_eq!(c.leader_status().await, Some(0));
    let term = Instant::now();
    let code = b.terminate().await;
    c.wait_leader(Duration::from_secs(10)).await;
    let handover = term.elapsed();
    eprintln!("SIGTERM failover: {handover:.1?}");
    assert_eq!(code, Some(0), "SIGTERM exits 0; log:\n{}", b.log_text());
    assert!(
        handover <= Duration::from_secs(3),
        "SIGTERM handover took {handover:?}"
    );
    // The new leader reconciles: a change reaches the Deployment.
    work.patch_spec("mm-example-full", json!({"replicas": 2})).await;
    work.wait_state("mm-example-full", "stable").await;
    assert_eq!(c.terminate().await, Some(0));
    endpoints.stop();

    let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    for n in ["op-a", "op-b"] {
        let _ = bindings
            .delete(&format!("{}-{n}", ops.name()), &Default::default())
            .await;
    }
    work.cleanup().await;
    ops.cleanup().await;
}

/// A Lease held and renewed by another identity, as a running Go operator holds it: ours stays
/// idle (no write, no status), and takes over only once the holder stops renewing.
#[tokio::test]
async fn a_lease_held_by_the_go_operator_keeps_ours_idle() {
    let ops = env_without_operator("mm-leader-go").await;
    let work = env_without_operator("mm-leader-go-work").await;
    let client = ops.client.clone();
    let leases: Api<Lease> = ops.api();
    let renew = |client_leases: Api<Lease>| async move {
        let lease = Lease {
            metadata: kube::api::ObjectMeta {
                name: Some(LEASE.into()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some("mattermost-operator-6d4f9_1a2b3c4d-go".into()),
                lease_duration_seconds: Some(15),
                renew_time: Some(MicroTime(Timestamp::now())),
                ..Default::default()
            }),
        };
        // client-go writes the Lease with Update; a merge patch has the same effect here.
        match client_leases.get_opt(LEASE).await.unwrap() {
            Some(_) => {
                client_leases
                    .patch(LEASE, &PatchParams::default(), &Patch::Merge(&lease))
                    .await
                    .unwrap();
            }
            None => {
                client_leases
                    .create(&PostParams::default(), &lease)
                    .await
                    .unwrap();
            }
        }
    };
    renew(leases.clone()).await;
    let go = tokio::spawn({
        let leases = leases.clone();
        async move {
            loop {
                renew(leases.clone()).await;
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    });
    let kc = operator_account(&client, ops.name(), "rust-op").await;
    let user = format!("system:serviceaccount:{}:rust-op", ops.name());
    let audit = testenv::AuditLog::new();
    let mark = audit.mark().unwrap();
    let op = spawn(ops.name(), work.name(), &kc, "rust-op");
    op.wait_healthy().await;
    work.apply(SECRETS).await;
    work.apply(include_str!("fixtures/mattermost-external.yaml"))
        .await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(op.leader_status().await, Some(0));
    let mms: Api<Mattermost> = work.api();
    assert!(
        mms.get("mm-example-full").await.unwrap().status.is_none(),
        "nothing reconciled"
    );
    let events = audit.since(mark).unwrap();
    assert_eq!(writes_by(&events, &user, work.name()), 0);

    // The Go operator stops (scaled to 0 without releasing): ours takes over after expiry.
    go.abort();
    op.wait_leader(Duration::from_secs(30)).await;
    work.wait_state("mm-example-full", "stable").await;
    drop(op);
    let _ = Api::<ClusterRoleBinding>::all(client.clone())
        .delete(&format!("{}-rust-op", ops.name()), &Default::default())
        .await;
    work.cleanup().await;
    ops.cleanup().await;
}

/// Another identity takes the Lease over while ours leads (as the Go operator does when it finds
/// the Lease expired, e.g. after ours was cut off from the apiserver): ours stops at once. It
/// exits 1 within 2 s, no request of its identity completes after a 1.5 s grace for those in
/// flight, and it never writes the new holder's Lease.
#[tokio::test]
async fn a_leader_that_loses_the_lease_stops_writing_at_once_and_exits_1() {
    const GRACE: Duration = Duration::from_millis(1500);
    let ops = env_without_operator("mm-leader-lost").await;
    let work = env_without_operator("mm-leader-lost-work").await;
    let client = ops.client.clone();
    let leases: Api<Lease> = ops.api();
    let kc = operator_account(&client, ops.name(), "op-lost").await;
    let user = format!("system:serviceaccount:{}:op-lost", ops.name());
    let audit = testenv::AuditLog::new();
    let mut op = spawn(ops.name(), work.name(), &kc, "op-lost");
    op.wait_healthy().await;
    op.wait_leader(Duration::from_secs(30)).await;
    work.apply(SECRETS).await;
    work.apply(include_str!("fixtures/mattermost-external.yaml"))
        .await;
    work.wait_state("mm-example-full", "stable").await;

    // Work in flight at the takeover: an upgrade whose update Job runs.
    let leading = audit.mark().unwrap();
    work.patch_spec("mm-example-full", json!({"version": "9.11.1"}))
        .await;
    let jobs: Api<Job> = work.api();
    testenv::wait_until("update Job created", common::TIMEOUT, || async {
        let list = jobs.list(&Default::default()).await.unwrap();
        (!list.items.is_empty()).then_some(())
    })
    .await
    .unwrap();
    let own_writes = |events: &[testenv::AuditEvent]| -> Vec<String> {
        events
            .iter()
            .filter(|e| e.user.username == user && e.is_write())
            .map(|e| format!("{} {} {} ({})", e.verb, e.request_uri, e.user_agent, e.resource()))
            .collect()
    };
    let before = own_writes(&audit.since(leading).unwrap());
    assert!(!before.is_empty(), "the leader writes while upgrading");
    assert!(
        audit
            .since(leading)
            .unwrap()
            .iter()
            .filter(|e| e.user.username == user)
            .all(|e| e.user_agent.starts_with("mattermost-operator/")),
        "every request of this identity is the operator's"
    );

    // The takeover: a fresh renewTime and a long duration, as a new holder writes it.
    let held = leases.get(LEASE).await.unwrap().spec.unwrap();
    assert!(
        held.holder_identity.as_deref().unwrap().starts_with("op-lost_"),
        "{held:?}"
    );
    // Whole microseconds, as a MicroTime is stored.
    let now = MicroTime(Timestamp::from_microsecond(Timestamp::now().as_microsecond()).unwrap());
    let takeover = json!({"spec": {
        "holderIdentity": "someone-else",
        "acquireTime": now,
        "renewTime": now,
        "leaseDurationSeconds": 3600,
        "leaseTransitions": held.lease_transitions.unwrap_or(0) + 1,
    }});
    leases
        .patch(LEASE, &PatchParams::default(), &Patch::Merge(&takeover))
        .await
        .unwrap();
    let taken = Instant::now();

    let status = tokio::time::timeout(Duration::from_secs(2), op.child.wait())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "still running 2 s after losing the Lease; log:\n{}",
                op.log_text()
            )
        })
        .unwrap();
    let exited_after = taken.elapsed();
    eprintln!("lost the Lease: exited {exited_after:.1?} after the takeover");
    assert_eq!(status.code(), Some(1), "log:\n{}", op.log_text());
    let log = op.log_text();
    assert!(
        log.contains("another identity holds the leader Lease") && log.contains("stopped reconciling"),
        "{log}"
    );

    // Requests in flight at the takeover may complete during the grace; nothing after it, even
    // with a change to reconcile and longer than a renewal interval (5 s).
    tokio::time::sleep(GRACE.saturating_sub(taken.elapsed())).await;
    let after_grace = audit.mark().unwrap();
    work.patch_spec("mm-example-full", json!({"replicas": 2})).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let late = own_writes(&audit.since(after_grace).unwrap());
    assert!(late.is_empty(), "writes after losing the Lease: {late:#?}");
    // The new holder's Lease is as it wrote it: no renewal of ours overwrote it.
    let lease = leases.get(LEASE).await.unwrap().spec.unwrap();
    assert_eq!(lease.holder_identity.as_deref(), Some("someone-else"));
    assert_eq!(lease.lease_duration_seconds, Some(3600));
    assert_eq!(lease.renew_time, Some(now));

    let _ = Api::<ClusterRoleBinding>::all(client.clone())
        .delete(&format!("{}-op-lost", ops.name()), &Default::default())
        .await;
    work.cleanup().await;
    ops.cleanup().await;
}
