//! The shipped dashboard and alerts (`deploy/monitoring/`): checked and unit-tested by promtool
//! (built by `hack/tools.sh`), every alert has a firing and a quiet test case, and the copies in
//! the Helm chart and the PrometheusRule are the same as `deploy/monitoring/`. That every metric
//! they query exists in a real operator's `/metrics` is checked in `tests/observability.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;

use common::promql::{Exposed, check_exposition, metric_names, monitoring_dir, referenced_metrics};

fn yaml(path: &str) -> serde_json::Value {
    serde_saphyr::from_str(&std::fs::read_to_string(monitoring_dir().join(path)).unwrap()).unwrap()
}

async fn promtool(args: &[&str]) -> String {
    let (_, bin) = common::tools::paths().await;
    let out = std::process::Command::new(bin)
        .args(args)
        .current_dir(monitoring_dir())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[tokio::test]
async fn promtool_checks_the_rules_and_passes_their_unit_tests() {
    let checked = promtool(&["check", "rules", "rules.yaml"]).await;
    assert!(checked.contains("SUCCESS: 6 rules found"), "{checked}");
    let tested = promtool(&["test", "rules", "rules_test.yaml"]).await;
    assert!(tested.contains("SUCCESS"), "{tested}");
}

#[test]
fn every_alert_has_a_firing_and_a_quiet_test_case() {
    let alerts: BTreeSet<String> = yaml("rules.yaml")["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .filter_map(|r| r["alert"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(alerts.len(), 6);
    let (mut fires, mut quiet) = (BTreeSet::new(), BTreeSet::new());
    for test in yaml("rules_test.yaml")["tests"].as_array().unwrap() {
        for case in test["alert_rule_test"].as_array().unwrap() {
            let name = case["alertname"].as_str().unwrap().to_owned();
            let expected = case["exp_alerts"].as_array().map_or(0, Vec::len);
            if expected > 0 {
                fires.insert(name);
            } else {
                quiet.insert(name);
            }
        }
    }
    assert_eq!(fires, alerts, "alerts without a firing case");
    assert_eq!(quiet, alerts, "alerts without a quiet case");
}

#[test]
fn chart_and_prometheusrule_carry_deploy_monitoring() {
    let chart = testenv::repo_root().join("charts/mattermost-operator/files");
    for file in ["dashboard.json", "rules.yaml"] {
        assert_eq!(
            std::fs::read_to_string(chart.join(file)).unwrap(),
            std::fs::read_to_string(monitoring_dir().join(file)).unwrap(),
            "charts/mattermost-operator/files/{file} differs from deploy/monitoring/{file}: copy it"
        );
    }
    let rule = yaml("prometheusrule.yaml");
    assert_eq!(rule["kind"], "PrometheusRule");
    assert_eq!(
        rule["spec"],
        yaml("rules.yaml"),
        "prometheusrule.yaml's spec differs from rules.yaml"
    );
}

#[test]
fn metric_names_come_from_the_promql_syntax_tree() {
    let names = metric_names(
        r#"histogram_quantile(0.9, sum by (le) (rate(a_seconds_bucket{x=~"b|c"}[5m])))
           / on (instance) group_left b_info + {__name__="c_total"} offset 5m
           - count_over_time(d[10m:1m]) > bool 0 unless absent(e{le="f"})"#,
    );
    let want: BTreeSet<String> = ["a_seconds_bucket", "b_info", "c_total", "d", "e"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(names, want);
    // Label names, function names and `by (...)` labels are not metrics.
    let referenced = referenced_metrics();
    for not_a_metric in ["le", "rate", "reason", "histogram_quantile", "instance"] {
        assert!(!referenced.contains_key(not_a_metric), "{not_a_metric}");
    }
    for metric in [
        "mattermost_operator_blocked_upgrades_by_reason",
        "mattermost_operator_upgrade_duration_seconds_bucket",
        "controller_runtime_reconcile_errors_total",
        "leader_election_master_status",
        "rest_client_requests_total",
        "process_resident_memory_bytes",
    ] {
        assert!(
            referenced.contains_key(metric),
            "{metric} not found: {referenced:?}"
        );
    }
}

#[test]
fn suffixes_must_match_the_family_type() {
    let exposition = "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n\
                      # TYPE g_count gauge\ng_count 2\n# TYPE c counter\nc_total 3\n\
                      # TYPE x gauge\nx_total 1\n# TYPE e counter\n";
    let names: Vec<String> = [
        "h_bucket", "h_sum", "h_count", "g_count", "c_total", "x_total", "h", "c", "e_total", "y",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(
        check_exposition(&names, exposition),
        Exposed {
            problems: vec![
                "x_total: suffix does not match its family's # TYPE".to_owned(),
                // The family exists, but Prometheus stores no sample under its bare name.
                "h: suffix does not match its family's # TYPE".to_owned(),
                "c: suffix does not match its family's # TYPE".to_owned(),
                "y: no such metric".to_owned(),
            ],
            declared_only: vec!["e_total".to_owned()],
        }
    );
}
