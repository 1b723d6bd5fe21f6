//! `kubectl mattermost migrate` against the local control plane: a fleet of `ClusterInstallation`s
//! migrated and reverted by the built binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use kube::Api;
use kube::api::PostParams;
use mattermost_api::v1alpha1::ClusterInstallation;
use mattermost_api::v1beta1::Mattermost;
use serde_json::json;

/// `migrate -A --wait` over 20 ClusterInstallations with a cap of 5, never more than 5 in flight;
/// a missing name refused; `migrate --revert` of an unfinished migration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_a_fleet_of_cluster_installations() {
    let fleet = Fleet::new("mm-cli-mig", 2, 0, 5).await;
    let ci_yaml = include_str!("../../mattermost-operator/tests/fixtures/clusterinstallation.yaml");
    let mut ci: ClusterInstallation = serde_saphyr::from_str(ci_yaml).unwrap();
    ci.metadata.labels = Some([("fleet".to_owned(), fleet.label.clone())].into());
    ci.spec.replicas = Some(1);
    ci.spec.resources =
        Some(serde_json::from_value(json!({"requests": {"cpu": "10m", "memory": "32Mi"}})).unwrap());
    for ns in &fleet.namespaces {
        let api: Api<ClusterInstallation> = Api::namespaced(fleet.client.clone(), &ns.name);
        for i in 0..10 {
            let mut c = ci.clone();
            c.metadata.name = Some(format!("legacy-{i:02}"));
            api.create(&PostParams::default(), &c).await.unwrap();
        }
    }
    let sel = fleet.selector();
    testenv::wait_until("legacy installations stable", TIMEOUT, || async {
        let list = Api::<ClusterInstallation>::all(fleet.client.clone())
            .list(&kube::api::ListParams::default().labels(&sel))
            .await
            .unwrap();
        let stable = list
            .items
            .iter()
            .filter(|c| c.status.as_ref().and_then(|s| s.state.as_deref()) == Some("stable"))
            .count();
        (stable == 20).then_some(())
    })
    .await
    .unwrap();
    let cis_api = Api::<ClusterInstallation>::all(fleet.client.clone());
    let list_cis = || async {
        cis_api
            .list(&kube::api::ListParams::default().labels(&sel))
            .await
            .unwrap()
            .items
    };

    // A name that is not there is an error (exit 2, as `status NAME`), and changes nothing.
    for args in [
        &["migrate", "legacy-99"][..],
        &["migrate", "--revert", "legacy-99"],
    ] {
        let out = fleet.cli(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}{err}", stdout(&out));
        assert!(err.contains("ClusterInstallation legacy-99 not found"), "{err}");
    }
    assert!(list_cis().await.iter().all(|c| c.spec.migrate.is_none()));

    // --revert before completion: once the Mattermost exists (the latest point before the
    // migration completes), `migrate --revert` returns it to the legacy installation.
    let (ns0, reverted) = (fleet.ns(0).to_owned(), "legacy-00");
    let out = cli(&["-n", &ns0, "migrate", reverted]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains(&format!("{ns0}/{reverted}: migrate set to true")));
    let mms_ns0: Api<Mattermost> = Api::namespaced(fleet.client.clone(), &ns0);
    testenv::wait_until("the migration created the Mattermost", TIMEOUT, || async {
        mms_ns0.get_opt(reverted).await.unwrap().map(|_| ())
    })
    .await
    .unwrap();
    let out = cli(&["-n", &ns0, "migrate", "--revert", "--wait", reverted]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    for line in [
        format!("{ns0}/{reverted}: migrate set to false"),
        format!("{ns0}/{reverted}: reverted: ClusterInstallation stable"),
        "reverted 1/1".to_owned(),
    ] {
        assert!(stdout(&out).contains(&line), "{line} not in {}", stdout(&out));
    }
    let cis_ns0: Api<ClusterInstallation> = Api::namespaced(fleet.client.clone(), &ns0);
    let deps_ns0: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(fleet.client.clone(), &ns0);
    // `--wait` returned once it was: no further wait.
    testenv::wait_until("the migration reverted", Duration::from_secs(2), || async {
        let ci = cis_ns0.get(reverted).await.unwrap();
        let status = ci.status.clone().unwrap_or_default();
        let legacy_selector = deps_ns0.get_opt(reverted).await.unwrap().is_some_and(|d| {
            d.spec
                .and_then(|s| s.selector.match_labels)
                .is_some_and(|l| l.contains_key("v1alpha1.mattermost.com/installation"))
        });
        (ci.spec.migrate == Some(false)
            && status.migration.is_none()
            && status.state.as_deref() == Some("stable")
            && legacy_selector
            && mms_ns0.get_opt(reverted).await.unwrap().is_none())
        .then_some(())
    })
    .await
    .unwrap();
    assert_eq!(
        list_cis().await.len(),
        20,
        "the reverted one is a ClusterInstallation again"
    );

    // The whole fleet (the reverted one again too), sampling all along how many migrations are
    // in flight: never more than the operator's cap of 5.
    let in_flight_steps = [
        "OrphaningDeployment",
        "WaitingForNewPods",
        "WaitingForMattermost",
        "CleaningUp",
    ];
    let max_in_flight = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (api, sel, max) = (cis_api.clone(), sel.clone(), max_in_flight.clone());
        tokio::spawn(async move {
            loop {
                let list = api
                    .list(&kube::api::ListParams::default().labels(&sel))
                    .await
                    .unwrap();
                let n = list
                    .items
                    .iter()
                    .filter(|c| {
                        c.status
                            .as_ref()
                            .and_then(|s| s.migration.as_ref())
                            .and_then(|m| m.status.as_deref())
                            .is_some_and(|s| in_flight_steps.contains(&s))
                    })
                    .count();
                max.fetch_max(n, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let out = {
        let sel = sel.clone();
        tokio::task::spawn_blocking(move || cli(&["-A", "-l", &sel, "migrate", "--wait"]))
            .await
            .unwrap()
    };
    sampler.abort();
    let text = stdout(&out);
    println!("{text}");
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("migrated 20/20"), "{text}");
    let max = max_in_flight.load(Ordering::SeqCst);
    println!("at most {max} migrations in flight (cap 5)");
    assert!(
        (1..=5).contains(&max),
        "{max} migrations in flight at once, cap 5"
    );
    assert!(
        text.lines()
            .filter(|l| l.contains("done: Mattermost stable"))
            .count()
            == 20
    );
    assert!(list_cis().await.is_empty());
    // The migrated installations carry the label, so the fleet commands see them.
    let out = fleet.cli(&["status"]);
    assert!(
        stdout(&out).contains("20 installations: 20 stable"),
        "{}",
        stdout(&out)
    );
    fleet.cleanup().await;
}
