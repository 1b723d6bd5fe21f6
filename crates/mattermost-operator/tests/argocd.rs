//! The Argo CD health checks in Argo CD's upstream layout (`health.lua`, `health_test.yaml`,
//! `testdata/`), run over every case of their `health_test.yaml` as Argo CD's own test does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::argocd::{dir, health};

#[derive(serde::Deserialize)]
struct HealthTests {
    tests: Vec<HealthTest>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct HealthTest {
    health_status: Expected,
    input_path: String,
}

#[derive(serde::Deserialize)]
struct Expected {
    status: String,
    message: String,
}

fn run_cases(group: &str, kind: &str) -> Vec<String> {
    let d = dir(group, kind);
    let spec: HealthTests =
        serde_saphyr::from_str(&std::fs::read_to_string(d.join("health_test.yaml")).unwrap()).unwrap();
    assert!(!spec.tests.is_empty());
    let mut statuses = Vec::new();
    for t in spec.tests {
        let text = std::fs::read_to_string(d.join(&t.input_path)).unwrap();
        let obj: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
        let (status, message) = health(group, kind, &obj);
        assert_eq!(
            (status.as_str(), message.as_str()),
            (t.health_status.status.as_str(), t.health_status.message.as_str()),
            "{group}/{kind} {}",
            t.input_path
        );
        statuses.push(status);
    }
    // Every file in testdata/ is a case.
    let files = std::fs::read_dir(d.join("testdata")).unwrap().count();
    assert_eq!(files, statuses.len(), "testdata files without a case");
    statuses
}

#[test]
fn mattermost_health_check_passes_its_health_tests() {
    let seen = run_cases("installation.mattermost.com", "Mattermost");
    for s in ["Healthy", "Progressing", "Degraded"] {
        assert!(seen.iter().any(|x| x == s), "no {s} case");
    }
}

#[test]
fn cluster_installation_health_check_passes_its_health_tests() {
    let seen = run_cases("mattermost.com", "ClusterInstallation");
    for s in ["Healthy", "Progressing", "Degraded"] {
        assert!(seen.iter().any(|x| x == s), "no {s} case");
    }
}
