//! `kubectl mattermost status`, `plan`, `preflight` and `report` against the local control plane, run
//! as a user runs them: the built binary with the kubeconfig, over a mixed fleet reconciled by an
//! in-process operator.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use common::*;
use kube::api::PostParams;
use kube::{Api, ResourceExt};
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
