//! Prometheus metrics: our domain metrics (`mattermost_operator_*`) and the controller-runtime
//! names that existing Grafana dashboards query.

use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabels {
    controller: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    controller: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    controller: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LeaseLabels {
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

/// How a reconcile ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReconcileOutcome {
    /// Finished without error.
    Success,
    /// Failed with this stable reason.
    Error(&'static str),
}

/// Every metric of the operator, registered in one registry. Shared as `Arc<Metrics>`.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ControllerLabels, Counter>,
    failures: Family<ReasonLabels, Counter>,
    duration: Family<ControllerLabels, Histogram, fn() -> Histogram>,
    installations: Family<StateLabels, Gauge>,
    cr_total: Family<ResultLabels, Counter>,
    cr_errors: Family<ControllerLabels, Counter>,
    cr_time: Family<ControllerLabels, Histogram, fn() -> Histogram>,
    cr_max: Family<ControllerLabels, Gauge>,
    cr_active: Family<ControllerLabels, Gauge>,
    /// Rollouts in progress (update Job running or new pods rolling).
    pub rollouts_in_progress: Gauge,
    update_jobs: Family<OutcomeLabels, Counter>,
    /// Seconds from a version change to `stable`.
    pub upgrade_duration: Histogram,
    /// Installations whose upgrade is blocked.
    pub blocked_upgrades: Gauge,
    leader: Family<LeaseLabels, Gauge>,
}

impl Metrics {
    /// Registers every metric; `controllers` get their controller-runtime series pre-initialised.
    pub fn new(controllers: &[&str], max_concurrency: i64) -> Self {
        let mut registry = Registry::default();
        let m = Self {
            reconciles: Family::default(),
            failures: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            installations: Family::default(),
            cr_total: Family::default(),
            cr_errors: Family::default(),
            cr_time: Family::new_with_constructor(duration_histogram),
            cr_max: Family::default(),
            cr_active: Family::default(),
            rollouts_in_progress: Gauge::default(),
            update_jobs: Family::default(),
            upgrade_duration: Histogram::new(exponential_buckets(5.0, 2.0, 12)),
            blocked_upgrades: Gauge::default(),
            leader: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "leader_election_master_status",
            "1 while this process holds the leader Lease, 0 otherwise (controller-runtime's name)",
            m.leader.clone(),
        );
        let ours = registry.sub_registry_with_prefix("mattermost_operator");
        ours.register("reconcile", "Reconciles started", m.reconciles.clone());
        ours.register(
            "reconcile_errors",
            "Reconciles failed, by reason",
            m.failures.clone(),
        );
        ours.register(
            "reconcile_duration_seconds",
            "Reconcile duration",
            m.duration.clone(),
        );
        ours.register("installations", "Installations by state", m.installations.clone());
        ours.register(
            "rollouts_in_progress",
            "Rollouts in progress",
            m.rollouts_in_progress.clone(),
        );
        ours.register(
            "update_jobs",
            "Finished update Jobs by outcome",
            m.update_jobs.clone(),
        );
        ours.register(
            "upgrade_duration_seconds",
            "Version change to stable",
            m.upgrade_duration.clone(),
        );
        ours.register(
            "blocked_upgrades",
            "Installations with a blocked upgrade",
            m.blocked_upgrades.clone(),
        );
        let cr = registry.sub_registry_with_prefix("controller_runtime");
        cr.register(
            "reconcile",
            "Total reconciles per controller and result",
            m.cr_total.clone(),
        );
        cr.register(
            "reconcile_errors",
            "Total reconcile errors per controller",
            m.cr_errors.clone(),
        );
        cr.register(
            "reconcile_time_seconds",
            "Length of time per reconcile",
            m.cr_time.clone(),
        );
        cr.register(
            "max_concurrent_reconciles",
            "Maximum concurrent reconciles",
            m.cr_max.clone(),
        );
        cr.register("active_workers", "Reconciles running now", m.cr_active.clone());
        for c in controllers {
            let l = ControllerLabels {
                controller: (*c).to_owned(),
            };
            m.cr_max.get_or_create(&l).set(max_concurrency);
            m.cr_active.get_or_create(&l).set(0);
            m.cr_errors.get_or_create(&l).inc_by(0);
            m.reconciles.get_or_create(&l).inc_by(0);
            for result in ["success", "error", "requeue", "requeue_after"] {
                m.cr_total
                    .get_or_create(&ResultLabels {
                        controller: (*c).to_owned(),
                        result: result.to_owned(),
                    })
                    .inc_by(0);
            }
        }
        for state in ["reconciling", "ready", "stable"] {
            m.installations
                .get_or_create(&StateLabels {
                    state: state.to_owned(),
                })
                .set(0);
        }
        Self { registry, ..m }
    }

    /// Starts timing a reconcile of `controller`.
    pub fn reconcile_started(&self, controller: &str) -> ReconcileTimer<'_> {
        let labels = ControllerLabels {
            controller: controller.to_owned(),
        };
        self.reconciles.get_or_create(&labels).inc();
        self.cr_active.get_or_create(&labels).inc();
        ReconcileTimer {
            metrics: self,
            labels,
            start: Instant::now(),
        }
    }

    /// Sets the installations-by-state gauge; states not listed drop to 0.
    pub fn set_installations_by_state(&self, counts: &[(String, i64)]) {
        for state in ["reconciling", "ready", "stable"] {
            let n = counts.iter().find(|(s, _)| s == state).map_or(0, |(_, n)| *n);
            self.installations
                .get_or_create(&StateLabels {
                    state: state.to_owned(),
                })
                .set(n);
        }
    }

    /// Records whether this process holds the leader Lease `lease`.
    pub fn set_leader(&self, lease: &str, leader: bool) {
        self.leader
            .get_or_create(&LeaseLabels {
                name: lease.to_owned(),
            })
            .set(i64::from(leader));
    }

    /// Counts a finished update Job (`succeeded` or `failed`).
    pub fn update_job_finished(&self, outcome: &str) {
        self.update_jobs
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// OpenMetrics text.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Records one reconcile when finished; dropping it unfinished only releases the worker gauge.
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    labels: ControllerLabels,
    start: Instant,
}

impl ReconcileTimer<'_> {
    /// Records duration and outcome.
    pub fn finish(self, outcome: ReconcileOutcome) {
        let m = self.metrics;
        let secs = self.start.elapsed().as_secs_f64();
        m.duration.get_or_create(&self.labels).observe(secs);
        m.cr_time.get_or_create(&self.labels).observe(secs);
        let result = match outcome {
            ReconcileOutcome::Success => "success",
            ReconcileOutcome::Error(reason) => {
                let labels = ReasonLabels {
                    controller: self.labels.controller.clone(),
                    reason: reason.to_owned(),
                };
                m.failures.get_or_create(&labels).inc();
                m.cr_errors.get_or_create(&self.labels).inc();
                "error"
            }
        };
        let labels = ResultLabels {
            controller: self.labels.controller.clone(),
            result: result.to_owned(),
        };
        m.cr_total.get_or_create(&labels).inc();
    }
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics.cr_active.get_or_create(&self.labels).dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_our_series_and_controller_runtime_names() {
        let m = Metrics::new(&["mattermost"], 10);
        m.reconcile_started("mattermost")
            .finish(ReconcileOutcome::Success);
        m.reconcile_started("mattermost")
            .finish(ReconcileOutcome::Error("SecretNotFound"));
        m.set_installations_by_state(&[("stable".into(), 3)]);
        m.set_leader("b78a986e.mattermost.com", true);
        let text = m.encode().unwrap();
        for series in [
            r#"mattermost_operator_reconcile_total{controller="mattermost"} 2"#,
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
    }
}
