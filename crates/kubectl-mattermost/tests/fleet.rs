//! `kubectl mattermost` against the local control plane, run as a user runs it: the built binary
//! with the kubeconfig, over fleets reconciled by an in-process operator.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use mattermost_api::v1alpha1::ClusterInstallation;
use mattermost_api::v1beta1::Mattermost;
use serde_json::{Value, json};

/// 30 installations in 3 namespaces: 2 blocked (failed update Job), 1 degraded (missing license
/// secret), 1 rolling and holding the only rollout slot, 2 waiting for it, 24 stable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_plan_preflight_and_report_over_a_mixed_fleet() {
    let mut fleet = Fleet::new("mm-cli-mix", 3, 10, 20).await;
    // A connection string in a literal env value: the report must not carry it.
    fleet
        .patch(
            fleet.ns(2),
            "mm-09",
            json!({"mattermostEnv": [{"name": "MM_SQLSETTINGS_DATASOURCE", "value": DB}]}),
        )
        .await;
    fleet.wait_all_stable().await;
    let out = fleet.cli(&["status"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("30 installations: 30 stable"),
        "{}",
        stdout(&out)
    );
    // One rollout slot from now on.
    fleet.start_operator(1);

    fleet
        .patch(fleet.ns(0), "mm-00", json!({"version": "9.11.1-fail"}))
        .await;
    fleet
        .patch(fleet.ns(1), "mm-01", json!({"version": "9.11.1-fail"}))
        .await;
    wait_reason(
        &fleet,
        fleet.ns(0),
        "mm-00",
        "UpdateJobSucceeded",
        "UpdateJobFailed",
    )
    .await;
    wait_reason(
        &fleet,
        fleet.ns(1),
        "mm-01",
        "UpdateJobSucceeded",
        "UpdateJobFailed",
    )
    .await;
    fleet
        .patch(fleet.ns(1), "mm-05", json!({"licenseSecret": "missing-license"}))
        .await;
    fleet
        .patch(fleet.ns(2), "mm-02", json!({"version": "9.11.1-never-ready"}))
        .await;
    wait_reason(&fleet, fleet.ns(2), "mm-02", "Progressing", "UpdateJobRunning").await;
    fleet
        .patch(fleet.ns(2), "mm-03", json!({"version": "9.11.1"}))
        .await;
    fleet
        .patch(fleet.ns(2), "mm-04", json!({"version": "9.11.1"}))
        .await;
    wait_reason(
        &fleet,
        fleet.ns(2),
        "mm-04",
        "Progressing",
        "WaitingForRolloutSlot",
    )
    .await;
    wait_reason(
        &fleet,
        fleet.ns(2),
        "mm-03",
        "Progressing",
        "WaitingForRolloutSlot",
    )
    .await;
    wait_reason(
        &fleet,
        fleet.ns(1),
        "mm-05",
        "LicenseConfigured",
        "SecretNotFound",
    )
    .await;

    // status: lines, summary, exit code 1; JSON that matches.
    let out = fleet.cli(&["status"]);
    let text = stdout(&out);
    println!("{text}");
    assert_eq!(
        out.status.code(),
        Some(1),
        "blocked installations give exit code 1"
    );
    assert!(
        text.contains(
            "30 installations: 2 blocked, 1 degraded, 1 rolling, 24 stable, 2 waiting · rollouts in flight 1/"
        ),
        "{text}"
    );
    let line = |ns: &str, name: &str| {
        text.lines()
            .find(|l| l.split_whitespace().take(2).eq([ns, name]))
            .unwrap_or_else(|| panic!("no line for {ns}/{name} in\n{text}"))
            .to_owned()
    };
    assert!(line(fleet.ns(0), "mm-00").contains("blocked"));
    assert!(line(fleet.ns(0), "mm-00").contains("Degraded/UpdateJobFailed"));
    assert!(line(fleet.ns(0), "mm-00").contains("9.11.0 → 9.11.1-fail"));
    assert!(line(fleet.ns(2), "mm-03").contains("waiting"));
    assert!(line(fleet.ns(1), "mm-05").contains("degraded"));
    assert!(line(fleet.ns(0), "mm-07").contains("stable"));
    let json: Value = serde_json::from_slice(&fleet.cli(&["status", "-o", "json"]).stdout).unwrap();
    assert_eq!(json["items"].as_array().unwrap().len(), 30);
    assert_eq!(
        json["summary"]["byHealth"],
        json!({"blocked": 2, "degraded": 1, "rolling": 1, "stable": 24, "waiting": 2})
    );
    assert_eq!(json["summary"]["rolloutsInFlight"], 1);
    let blocked: Vec<&str> = json["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["health"] == "blocked")
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(blocked, ["mm-00", "mm-01"]);
    let yaml = stdout(&fleet.cli(&["status", "-o", "yaml"]));
    assert!(yaml.contains("rolloutsInFlight: 1"), "{yaml}");
    // The detailed view.
    let out = cli(&["status", "-n", fleet.ns(0), "mm-00"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1));
    for want in [
        "Health:     blocked",
        "UpdateJobFailed",
        "Update Jobs:",
        "failed",
        "last stable 9.11.0",
        "Events:",
    ] {
        assert!(text.contains(want), "{want} missing in\n{text}");
    }
    // A fleet that is all stable exits 0 (one namespace's stable subset via a name).
    assert_eq!(
        cli(&["status", "-n", fleet.ns(0), "mm-07"]).status.code(),
        Some(0)
    );

    // plan: nothing changes; waves 1 + 10 + 10 + 9; a downgrade is refused by the preflight.
    let before: Vec<String> = fleet
        .mattermosts()
        .await
        .iter()
        .map(|m| m.resource_version().unwrap_or_default())
        .collect();
    let out = fleet.cli(&["plan", "upgrade", "--version", "9.11.2", "-o", "json"]);
    let plan: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan.len(), 30);
    let mut waves: BTreeMap<u64, usize> = BTreeMap::new();
    for l in &plan {
        *waves.entry(l["wave"].as_u64().unwrap()).or_default() += 1;
    }
    assert_eq!(waves.values().copied().collect::<Vec<_>>(), [1, 10, 10, 9]);
    assert_eq!(plan[0]["installation"], format!("{}/mm-00", fleet.ns(0)));
    let missing = plan
        .iter()
        .find(|l| l["installation"] == format!("{}/mm-05", fleet.ns(1)))
        .unwrap();
    assert!(
        missing["problems"][0]
            .as_str()
            .unwrap()
            .contains("missing-license")
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failing preflight gives exit code 1"
    );
    let table = stdout(&fleet.cli(&["plan", "upgrade", "--version", "9.10.0"]));
    assert!(table.contains("DowngradeNotAllowed"), "{table}");
    assert!(table.contains("in 4 waves"), "{table}");
    let after: Vec<String> = fleet
        .mattermosts()
        .await
        .iter()
        .map(|m| m.resource_version().unwrap_or_default())
        .collect();
    assert_eq!(before, after, "plan changed nothing");

    // preflight: cluster checks and one verdict per installation.
    let out = fleet.cli(&["preflight", "--version", "9.11.2", "-o", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let checks: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let result = |check: &str, subject: &str| {
        checks
            .iter()
            .find(|c| c["check"] == check && c["subject"] == subject)
            .map(|c| c["result"].as_str().unwrap().to_owned())
    };
    assert_eq!(
        result("crd", "mattermosts.installation.mattermost.com").as_deref(),
        Some("pass")
    );
    assert_eq!(result("nodes", "cluster").as_deref(), Some("pass"));
    assert_eq!(
        result("state", &format!("{}/mm-00", fleet.ns(0))).as_deref(),
        Some("fail")
    );
    assert_eq!(
        result("preflight", &format!("{}/mm-05", fleet.ns(1))).as_deref(),
        Some("fail")
    );
    assert_eq!(
        result("preflight", &format!("{}/mm-07", fleet.ns(0))).as_deref(),
        Some("pass")
    );
    assert_eq!(checks.iter().filter(|c| c["check"] == "preflight").count(), 30);

    // report: every installation, no secret value anywhere. The operator runs in this process,
    // so a pod labelled as the chart labels the operator's stands in for it: its log is asked of
    // the API server, which cannot reach a kwok node's kubelet, and the bundle says so.
    let fake_operator: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "mattermost-operator-0", "labels": {"app.kubernetes.io/name": "mattermost-operator"}},
        "spec": {"containers": [{"name": "operator", "image": "example.invalid/mattermost-operator:0"}]},
    }))
    .unwrap();
    Api::<k8s_openapi::api::core::v1::Pod>::namespaced(fleet.client.clone(), fleet.ns(0))
        .create(&PostParams::default(), &fake_operator)
        .await
        .unwrap();
    let file = std::env::temp_dir().join(format!("mm-report-{}.zip", fleet.label));
    let out = fleet.cli(&[
        "report",
        "-o",
        file.to_str().unwrap(),
        "--operator-namespace",
        fleet.ns(0),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut zip = zip::ZipArchive::new(std::fs::File::open(&file).unwrap()).unwrap();
    let mut names = Vec::new();
    let mut files = BTreeMap::new();
    for i in 0..zip.len() {
        let mut f = zip.by_index(i).unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut f, &mut text).unwrap();
        for secret in [DB, "s3cr3t-db-pass", "s3cr3t-s3-key", "AKIAEXAMPLE"] {
            assert!(!text.contains(secret), "{} contains {secret}", f.name());
        }
        names.push(f.name().to_owned());
        files.insert(f.name().to_owned(), text);
    }
    let why = &files
        .get(&format!(
            "operator/logs/{}/mattermost-operator-0/operator.UNAVAILABLE.txt",
            fleet.ns(0)
        ))
        .unwrap_or_else(|| panic!("no operator log entry in {names:?}"));
    println!("{why}");
    assert!(
        why.starts_with(&format!(
            "log of container operator of pod {}/mattermost-operator-0 not collected: ",
            fleet.ns(0)
        )),
        "{why}"
    );
    let reason = why.split_once("not collected: ").unwrap().1.trim();
    assert!(!reason.is_empty(), "the reason is given: {why}");
    // No operator pod where it is asked to look: the bundle says that, and the command succeeds.
    let out = cli(&[
        "report",
        "-n",
        fleet.ns(1),
        "mm-07",
        "-o",
        file.to_str().unwrap(),
        "--operator-namespace",
        fleet.ns(1),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut zip = zip::ZipArchive::new(std::fs::File::open(&file).unwrap()).unwrap();
    let mut none = String::new();
    std::io::Read::read_to_string(
        &mut zip.by_name("operator/logs/UNAVAILABLE.txt").unwrap(),
        &mut none,
    )
    .unwrap();
    assert!(
        none.contains(&format!(
            "no pod labelled app.kubernetes.io/name=mattermost-operator in namespace {}",
            fleet.ns(1)
        )),
        "{none}"
    );
    for want in [
        format!("{}/mm-09/mattermost.yaml", fleet.ns(2)),
        format!("{}/mm-09/deployments.yaml", fleet.ns(2)),
        format!("{}/mm-00/jobs.yaml", fleet.ns(0)),
        format!("{}/mm-00/secrets.yaml", fleet.ns(0)),
        "versions.txt".to_owned(),
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    let _ = std::fs::remove_file(file);
    fleet.cleanup().await;
}

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
