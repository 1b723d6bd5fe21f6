use super::*;

#[test]
fn blocked_upgrades_by_reason_migrations_and_the_rollout_cap() {
    let m = Metrics::new(&["mattermost"], 1);
    let text = m.encode().unwrap();
    for reason in BLOCKING_REASONS {
        assert!(text.contains(&format!(
            "mattermost_operator_blocked_upgrades_by_reason{{reason=\"{reason}\"}} 0"
        )));
    }
    assert!(text.contains(r#"mattermost_operator_migrations{step="WaitingForNewPods"} 0"#));
    m.set_rollout_cap(20);
    m.set_blocked("a/mm-1", Some("UpdateJobFailed"));
    m.set_blocked("b/mm-1", Some("UpdateJobFailed"));
    m.set_blocked("a/mm-2", Some("NewReason"));
    m.set_blocked("a/mm-3", Some("RolledBack"));
    m.set_blocked("a/mm-3", None);
    // Two watched namespaces: the gauge is their sum.
    m.set_migrations_by_step("a", &[("CleaningUp".into(), 2)]);
    m.set_migrations_by_step("b", &[("CleaningUp".into(), 1)]);
    let text = m.encode().unwrap();
    for series in [
        "mattermost_operator_max_reconciling_installations 20",
        "mattermost_operator_blocked_upgrades 3",
        r#"mattermost_operator_blocked_upgrades_by_reason{reason="UpdateJobFailed"} 2"#,
        r#"mattermost_operator_blocked_upgrades_by_reason{reason="NewReason"} 1"#,
        r#"mattermost_operator_blocked_upgrades_by_reason{reason="RolledBack"} 0"#,
        r#"mattermost_operator_migrations{step="CleaningUp"} 3"#,
    ] {
        assert!(text.contains(series), "missing {series} in\n{text}");
    }
    // Cleared blocks and finished migrations read 0 again, including unlisted reasons.
    // Deleted installations are forgotten; the other scope's migrations are still counted.
    m.forget_blocked(|key| key == "a/mm-2");
    m.set_blocked("a/mm-2", None);
    m.set_blocked("a/mm-4", Some("RolledBack"));
    m.set_migrations_by_step("a", &[]);
    let text = m.encode().unwrap();
    for series in [
        "mattermost_operator_blocked_upgrades 1",
        r#"mattermost_operator_blocked_upgrades_by_reason{reason="UpdateJobFailed"} 0"#,
        r#"mattermost_operator_blocked_upgrades_by_reason{reason="NewReason"} 0"#,
        r#"mattermost_operator_blocked_upgrades_by_reason{reason="RolledBack"} 1"#,
        r#"mattermost_operator_migrations{step="CleaningUp"} 1"#,
    ] {
        assert!(text.contains(series), "missing {series} in\n{text}");
    }
}

#[test]
fn the_queue_counts_waiting_objects_once_and_their_wait() {
    let m = Metrics::new(&["mattermost"], 1);
    m.enqueued("mattermost", "ns/a".into());
    m.enqueued("mattermost", "ns/b".into());
    m.enqueued("mattermost", "ns/a".into());
    let text = m.encode().unwrap();
    for series in [
        r#"workqueue_adds_total{name="mattermost",controller="mattermost"} 2"#,
        r#"workqueue_depth{name="mattermost",controller="mattermost"} 2"#,
    ] {
        assert!(text.contains(series), "missing {series} in\n{text}");
    }
    std::thread::sleep(Duration::from_millis(20));
    m.reconcile_started("mattermost", "ns/a")
        .finish(ReconcileOutcome::Success);
    // Its own requeue timer: an add dispatched at once.
    m.reconcile_started("mattermost", "ns/c")
        .finish(ReconcileOutcome::Success);
    // Deleted before its reconcile: never dispatched, dropped from the queue.
    m.forget_queued("mattermost", |key| key != "ns/b");
    let text = m.encode().unwrap();
    for series in [
        r#"workqueue_adds_total{name="mattermost",controller="mattermost"} 3"#,
        r#"workqueue_depth{name="mattermost",controller="mattermost"} 0"#,
        r#"workqueue_queue_duration_seconds_count{name="mattermost",controller="mattermost"} 2"#,
    ] {
        assert!(text.contains(series), "missing {series} in\n{text}");
    }
    let sum: f64 = text
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                r#"workqueue_queue_duration_seconds_sum{name="mattermost",controller="mattermost"} "#,
            )
        })
        .unwrap()
        .parse()
        .unwrap();
    assert!(sum >= 0.02, "waited {sum} s");
}

#[test]
fn encodes_our_series_and_controller_runtime_names() {
    let m = Metrics::new(&["mattermost", "clusterinstallation"], 10);
    m.reconcile_started("mattermost", "ns/a")
        .finish(ReconcileOutcome::Success);
    m.reconcile_started("mattermost", "ns/a")
        .finish(ReconcileOutcome::Error("SecretNotFound"));
    let ok: Result<Action, ()> = Ok(Action::requeue(Duration::from_secs(5)));
    m.reconcile_started("mattermost", "ns/a")
        .finish(ReconcileOutcome::of(&ok, |_| "never"));
    let running = m.reconcile_started("clusterinstallation", "ns/b");
    std::thread::sleep(Duration::from_millis(20));
    m.set_installations_by_state(&[("stable".into(), 3)]);
    m.set_leader("b78a986e.mattermost.com", true);
    let text = m.encode().unwrap();
    for series in [
        r#"mattermost_operator_reconcile_total{controller="mattermost"} 3"#,
        r#"controller_runtime_reconcile_total{controller="mattermost",result="requeue_after"} 1"#,
        r#"controller_runtime_reconcile_total{controller="mattermost",result="error"} 1"#,
        r#"workqueue_adds_total{name="mattermost",controller="mattermost"} 3"#,
        r#"workqueue_retries_total{name="mattermost",controller="mattermost"} 1"#,
        r#"workqueue_work_duration_seconds_count{name="mattermost",controller="mattermost"} 3"#,
        r#"workqueue_unfinished_work_seconds{name="mattermost",controller="mattermost"} 0.0"#,
        r#"controller_runtime_active_workers{controller="clusterinstallation"} 1"#,
        r#"mattermost_operator_build_info{version=""#,
        "process_resident_memory_bytes ",
        r#"mattermost_operator_reconcile_errors_total{controller="mattermost",reason="SecretNotFound"} 1"#,
        r#"mattermost_operator_installations{state="stable"} 3"#,
        r#"controller_runtime_reconcile_total{controller="mattermost",result="success"} 1"#,
        r#"controller_runtime_reconcile_total{controller="mattermost",result="requeue"} 0"#,
        r#"controller_runtime_max_concurrent_reconciles{controller="mattermost"} 10"#,
        r#"controller_runtime_active_workers{controller="mattermost"} 0"#,
        "mattermost_operator_reconcile_duration_seconds_count",
        r#"leader_election_master_status{name="b78a986e.mattermost.com"} 1"#,
    ] {
        assert!(text.contains(series), "missing {series} in\n{text}");
    }
    let unfinished = text
        .lines()
        .find_map(|l| {
            l.strip_prefix(r#"workqueue_unfinished_work_seconds{name="clusterinstallation",controller="clusterinstallation"} "#)
        })
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no unfinished work of the running reconcile in\n{text}"));
    assert!(unfinished >= 0.02, "{unfinished}");
    drop(running);
    let text = m.encode().unwrap();
    assert!(text.contains(r#"workqueue_unfinished_work_seconds{name="clusterinstallation",controller="clusterinstallation"} 0.0"#));
}
