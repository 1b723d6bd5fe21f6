//! `kubectl mattermost upgrade` and `rollback` against the local control plane, run as a user runs
//! them: waves, the failure budget, resuming, and Ctrl-C.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use mattermost_api::v1beta1::Mattermost;
use serde_json::json;

/// Waves in order, never more in flight than a wave, a failure that stops the run with the later
/// waves untouched, and a run killed half-way that continues without patching anyone twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_in_waves_stops_on_failure_and_resumes() {
    let fleet = Fleet::new("mm-cli-up", 3, 10, 20).await;
    fleet.wait_all_stable().await;
    let audit = testenv::AuditLog::new();
    let mark = audit.mark().unwrap();

    // Sample how many installations are patched but not yet upgraded, all along.
    let max_in_flight = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (client, sel, max) = (fleet.client.clone(), fleet.selector(), max_in_flight.clone());
        tokio::spawn(async move {
            loop {
                let list = Api::<Mattermost>::all(client.clone())
                    .list(&kube::api::ListParams::default().labels(&sel))
                    .await
                    .unwrap();
                let n = list
                    .items
                    .iter()
                    .filter(|m| {
                        m.spec.version() == "9.11.1"
                            && m.status.as_ref().and_then(|s| s.version.as_deref()) != Some("9.11.1")
                    })
                    .count();
                max.fetch_max(n, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let out = fleet.cli(&[
        "upgrade",
        "--version",
        "9.11.1",
        "--canary",
        "1",
        "--wave-size",
        "10",
        "--wait",
    ]);
    sampler.abort();
    let text = stdout(&out);
    println!("{text}");
    assert_eq!(out.status.code(), Some(0), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("wave 1/4 (canary): "), "{text}");
    assert!(lines[1].starts_with("wave 1/4 (canary): 1 stable"), "{text}");
    assert!(lines[2].starts_with("wave 2/4: "), "{text}");
    assert!(text.contains("upgraded 30/30 to 9.11.1"));
    let max = max_in_flight.load(Ordering::SeqCst);
    assert!((1..=10).contains(&max), "{max} in flight at once");

    // A failing update Job in wave 3: stop after wave 3, wave 4 untouched.
    let failing = (fleet.ns(1).to_owned(), "mm-05");
    fleet
        .patch(
            &failing.0,
            failing.1,
            json!({"updateJob": {"extraAnnotations": {"testenv.invalid/fail": "true"}}}),
        )
        .await;
    let out = fleet.cli(&[
        "upgrade",
        "--version",
        "9.11.2",
        "--canary",
        "1",
        "--wave-size",
        "10",
    ]);
    let text = stdout(&out);
    println!("{text}");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text.contains("stopped after wave 3/4: 1 failed (budget 0)"),
        "{text}"
    );
    assert!(text.contains(&format!("{}/mm-05", fleet.ns(1))));
    for i in 0..10 {
        let mm = fleet.get(fleet.ns(2), &format!("mm-{i:02}")).await;
        let want = if i == 0 { "9.11.2" } else { "9.11.1" };
        assert_eq!(mm.spec.version(), want, "{}/mm-{i:02}", fleet.ns(2));
    }
    // Fix it, retry its update Job, and continue: only wave 4 gets patched now.
    fleet
        .patch(
            &failing.0,
            failing.1,
            json!({"updateJob": {"extraAnnotations": null}}),
        )
        .await;
    Api::<Mattermost>::namespaced(fleet.client.clone(), &failing.0)
        .patch(
            failing.1,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"installation.mattermost.com/retry-update-job": "1"}}}),
            ),
        )
        .await
        .unwrap();

    let sel = fleet.selector();
    testenv::wait_until("the fixed installation upgraded", TIMEOUT, || async {
        let mm = fleet.get(&failing.0, failing.1).await;
        (mm.status.as_ref().and_then(|s| s.version.as_deref()) == Some("9.11.2")
            && mm.status.as_ref().and_then(|s| s.state.as_deref()) == Some("stable"))
        .then_some(())
    })
    .await
    .unwrap();

    // Interrupted half-way (Ctrl-C), then run again. Small waves and `--wait` keep the run busy
    // until every installation is stable, so the signal always lands before it could finish.
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubectl-mattermost"))
        .args([
            "-A",
            "-l",
            &fleet.selector(),
            "upgrade",
            "--version",
            "9.11.2",
            "--wave-size",
            "3",
            "--wait",
        ])
        .env("KUBECONFIG", testenv::kubeconfig_path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    testenv::wait_until("some of wave 4 patched", TIMEOUT, || async {
        let list = Api::<Mattermost>::all(fleet.client.clone())
            .list(&kube::api::ListParams::default().labels(&sel))
            .await
            .unwrap();
        let n = list.items.iter().filter(|m| m.spec.version() == "9.11.2").count();
        (n > 21).then_some(())
    })
    .await
    .unwrap();
    let pid = child.id().unwrap().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    let interrupted = child.wait_with_output().await.unwrap();
    let said = String::from_utf8_lossy(&interrupted.stdout).into_owned();
    println!("{said}");
    assert_eq!(interrupted.status.code(), Some(130), "{said}");
    assert!(said.contains("none half-patched"), "{said}");
    let out = fleet.cli(&["upgrade", "--version", "9.11.2", "--wave-size", "10", "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("upgraded 30/30 to 9.11.2"),
        "{}",
        stdout(&out)
    );
    fleet.wait_all_stable().await;
    let patches: Vec<_> = audit
        .since(mark)
        .unwrap()
        .into_iter()
        .filter(|e| {
            // Not the attempts refused as too many (429: kube's client retries those).
            e.verb == "patch"
                && e.user_agent.starts_with("kubectl-mattermost/")
                && e.resource() == "mattermosts"
                && e.response_status.as_ref().is_none_or(|r| r.code != 429)
        })
        .collect();
    let mut per: BTreeMap<String, usize> = BTreeMap::new();
    for e in &patches {
        let o = e.object_ref.clone().unwrap();
        *per.entry(format!(
            "{}/{}",
            o.namespace.unwrap_or_default(),
            o.name.unwrap_or_default()
        ))
        .or_default() += 1;
    }
    // Two upgrades (9.11.1, then 9.11.2 over three runs): each installation patched exactly
    // twice (Ctrl-C lets the patch in flight finish and starts no other).
    assert_eq!(per.len(), 30);
    assert!(
        per.values().all(|n| *n == 2),
        "patched more than once per version: {per:?}"
    );
    for i in 0..30 {
        let (ns, name) = (fleet.ns(i / 10), format!("mm-{:02}", i % 10));
        assert_eq!(fleet.get(ns, &name).await.spec.version(), "9.11.2", "{ns}/{name}");
    }

    // Rollback of one installation goes back to its last stable version without an update Job.
    let out = cli(&["rollback", "-n", fleet.ns(0), "mm-03", "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_eq!(fleet.get(fleet.ns(0), "mm-03").await.spec.version(), "9.11.1");

    // rollback -l SELECTOR: only the selected installations go back (to their previous stable
    // version, 9.11.1, as the spec already asks for the last one); the others are untouched.
    let picked = [
        (fleet.ns(1).to_owned(), "mm-02"),
        (fleet.ns(2).to_owned(), "mm-07"),
    ];
    for (ns, name) in &picked {
        Api::<Mattermost>::namespaced(fleet.client.clone(), ns)
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"pick": "yes"}}})),
            )
            .await
            .unwrap();
    }
    let is_picked = |m: &Mattermost| {
        picked
            .iter()
            .any(|(ns, n)| m.namespace().as_deref() == Some(ns.as_str()) && m.name_any() == *n)
    };
    let picked_sel = format!("{},pick=yes", fleet.selector());
    let out = cli(&["-A", "-l", &picked_sel, "rollback", "--wait"]);
    let text = stdout(&out);
    println!("{text}");
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("rolled back 2 installations"), "{text}");
    for mm in fleet.mattermosts().await {
        let want = if is_picked(&mm)
            || (mm.namespace().as_deref() == Some(fleet.ns(0)) && mm.name_any() == "mm-03")
        {
            "9.11.1"
        } else {
            "9.11.2"
        };
        assert_eq!(mm.spec.version(), want, "{}", mm.name_any());
        if is_picked(&mm) {
            assert!(
                fleet_upgraded(&mm, "9.11.1"),
                "{} not stable at 9.11.1",
                mm.name_any()
            );
        }
    }

    // Without --wait the last wave is patched and not waited for: the command returns while the
    // update Jobs still run, and says how to follow them.
    let out = cli(&[
        "-A",
        "-l",
        &picked_sel,
        "upgrade",
        "--version",
        "9.11.3",
        "--canary",
        "0",
    ]);
    let text = stdout(&out);
    println!("{text}");
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("wave 1/1: 2 patched to 9.11.3; not waiting for it to be stable (no --wait)"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "follow progress: kubectl mattermost status -A -l {picked_sel}"
        )),
        "{text}"
    );
    assert!(!text.contains("upgraded 2/2"), "{text}");
    let serving_new = fleet
        .mattermosts()
        .await
        .iter()
        .filter(|m| is_picked(m) && m.status.as_ref().and_then(|s| s.version.as_deref()) == Some("9.11.3"))
        .count();
    assert!(serving_new < 2, "returned only after both were upgraded");
    testenv::wait_until(
        "the picked installations upgraded by the operator",
        TIMEOUT,
        || async {
            let mms = fleet.mattermosts().await;
            (mms.iter()
                .filter(|m| is_picked(m) && fleet_upgraded(m, "9.11.3"))
                .count()
                == 2)
                .then_some(())
        },
    )
    .await
    .unwrap();
    fleet.cleanup().await;
}

/// Stable at `version` for the current generation (what `upgrade --wait` waits for).
fn fleet_upgraded(mm: &Mattermost, version: &str) -> bool {
    let status = mm.status.as_ref();
    mm.spec.version() == version
        && status.and_then(|s| s.version.as_deref()) == Some(version)
        && status.and_then(|s| s.state.as_deref()) == Some("stable")
        && status.and_then(|s| s.observed_generation) == mm.metadata.generation
}
