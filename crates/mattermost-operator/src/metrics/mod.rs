//! Prometheus metrics: our domain metrics (`mattermost_operator_*`) and the controller-runtime
//! names that existing Grafana dashboards query.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kube::runtime::controller::Action;

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

/// controller-runtime's workqueue labels: `name` (and `controller`, as since v0.19) = controller.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    name: String,
    controller: String,
}

/// client-go's `rest_client_requests_total` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// HTTP status code, or `<error>` when no response came back.
    pub code: String,
    /// HTTP method.
    pub method: String,
    /// API server host (and port).
    pub host: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
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
struct BlockedLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    step: String,
}

/// Condition reasons that count as a blocked upgrade (`Degraded=True` with one of these, or a
/// preflight gate); the `reason` label of `blocked_upgrades_by_reason`, pre-initialised to 0 so
/// alerts and panels have a series before anything is blocked.
pub const BLOCKING_REASONS: &[&str] = &[
    "UpdateJobFailed",
    "BackupFailed",
    "VerificationFailed",
    "ProgressDeadlineExceeded",
    "RolledBack",
    "InsufficientCapacity",
    "NoSchedulableNodes",
    "DowngradeNotAllowed",
    "BackupTooOld",
    "PreflightFailed",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

/// How a reconcile ended, in controller-runtime's `result` terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReconcileOutcome {
    /// Finished without error and without asking to run again (`await_change`).
    Success,
    /// Finished and asked to run again at once (`requeue(0)`).
    Requeue,
    /// Finished and asked to run again after a delay (`requeue(d)`, d > 0).
    RequeueAfter,
    /// Failed with this stable reason.
    Error(&'static str),
}

impl ReconcileOutcome {
    /// The outcome of a reconcile that returned `result`; `reason` names its error.
    pub fn of<E>(result: &Result<Action, E>, reason: impl Fn(&E) -> &'static str) -> Self {
        match result {
            Err(e) => Self::Error(reason(e)),
            Ok(a) if *a == Action::await_change() => Self::Success,
            Ok(a) if *a == Action::requeue(Duration::ZERO) => Self::Requeue,
            Ok(_) => Self::RequeueAfter,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Requeue => "requeue",
            Self::RequeueAfter => "requeue_after",
            Self::Error(_) => "error",
        }
    }
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
    blocked_upgrades: Gauge,
    blocked_by_reason: Family<BlockedLabels, Gauge>,
    rollout_cap: Gauge,
    migrations: Family<StepLabels, Gauge>,
    leader: Family<LeaseLabels, Gauge>,
    wq_adds: Family<QueueLabels, Counter>,
    wq_retries: Family<QueueLabels, Counter>,
    wq_work: Family<QueueLabels, Histogram, fn() -> Histogram>,
    wq_unfinished: Family<QueueLabels, Gauge<f64, AtomicU64>>,
    wq_longest: Family<QueueLabels, Gauge<f64, AtomicU64>>,
    wq_depth: Family<QueueLabels, Gauge>,
    wq_queue: Family<QueueLabels, Histogram, fn() -> Histogram>,
    /// Objects triggered and not yet reconciled: (controller, namespace/name) -> first trigger
    /// (client-go's dirty set: a trigger for an object already waiting adds nothing).
    queued: Mutex<HashMap<(String, String), Instant>>,
    /// Reconciles running now: id -> (controller, start), for the unfinished-work gauges.
    in_flight: Mutex<HashMap<u64, (String, Instant)>>,
    /// Blocking reasons outside `BLOCKING_REASONS` seen so far (reset to 0 when they clear).
    blocked_seen: Mutex<Vec<String>>,
    /// Installations whose upgrade is blocked now (`namespace/name` -> reason), from every
    /// watched namespace's controller.
    blocked: Mutex<HashMap<String, String>>,
    /// Migrations by step, per watched namespace (each scope's controller counts its own cache).
    migrations_by_scope: Mutex<HashMap<String, Vec<(String, i64)>>>,
    next_id: AtomicU64,
    rest_requests: Family<RequestLabels, Counter>,
    build_info: Family<BuildLabels, Gauge>,
    resident_memory: Gauge<f64, AtomicU64>,
    controllers: Vec<String>,
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
            blocked_by_reason: Family::default(),
            rollout_cap: Gauge::default(),
            migrations: Family::default(),
            leader: Family::default(),
            wq_adds: Family::default(),
            wq_retries: Family::default(),
            wq_work: Family::new_with_constructor(duration_histogram),
            wq_depth: Family::default(),
            wq_queue: Family::new_with_constructor(duration_histogram),
            queued: Mutex::default(),
            wq_unfinished: Family::default(),
            wq_longest: Family::default(),
            in_flight: Mutex::default(),
            blocked_seen: Mutex::default(),
            blocked: Mutex::default(),
            migrations_by_scope: Mutex::default(),
            next_id: AtomicU64::new(0),
            rest_requests: Family::default(),
            build_info: Family::default(),
            resident_memory: Gauge::default(),
            controllers: controllers.iter().map(|c| (*c).to_owned()).collect(),
            registry: Registry::default(),
        };
        registry.register(
            "rest_client_requests",
            "Requests to the API server by status code, method and host (client-go's name)",
            m.rest_requests.clone(),
        );
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory of this process (from /proc/self/status)",
            m.resident_memory.clone(),
        );
        let wq = registry.sub_registry_with_prefix("workqueue");
        wq.register(
            "adds",
            "Objects added to the controller's queue (a trigger for an object already waiting is not an add)",
            m.wq_adds.clone(),
        );
        wq.register(
            "depth",
            "Objects triggered and waiting for their reconcile",
            m.wq_depth.clone(),
        );
        wq.register(
            "queue_duration_seconds",
            "How long an object waits from its first trigger until its reconcile starts",
            m.wq_queue.clone(),
        );
        wq.register(
            "retries",
            "Reconciles that failed and were queued again with backoff",
            m.wq_retries.clone(),
        );
        wq.register(
            "work_duration_seconds",
            "How long processing an item (one reconcile) takes",
            m.wq_work.clone(),
        );
        wq.register(
            "unfinished_work_seconds",
            "Seconds of work in progress not yet observed by work_duration (sum over running reconciles)",
            m.wq_unfinished.clone(),
        );
        wq.register(
            "longest_running_processor_seconds",
            "Seconds the longest running reconcile has been running",
            m.wq_longest.clone(),
        );
        registry.register(
            "leader_election_master_status",
            "1 while this process holds the leader Lease, 0 otherwise (controller-runtime's name)",
            m.leader.clone(),
        );
        let ours = registry.sub_registry_with_prefix("mattermost_operator");
        ours.register(
            "build_info",
            "1, labelled with the operator's version",
            m.build_info.clone(),
        );
        m.build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_owned(),
            })
            .set(1);
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
        ours.register(
            "blocked_upgrades_by_reason",
            "Installations with a blocked upgrade, by the blocking condition's reason",
            m.blocked_by_reason.clone(),
        );
        ours.register(
            "max_reconciling_installations",
            "Rollout slots (MAX_RECONCILING_INSTALLATIONS; 0 = no limit)",
            m.rollout_cap.clone(),
        );
        ours.register(
            "migrations",
            "ClusterInstallation migrations by step (status.migration.status)",
            m.migrations.clone(),
        );
        for reason in BLOCKING_REASONS {
            m.blocked_by_reason
                .get_or_create(&BlockedLabels {
                    reason: (*reason).to_owned(),
                })
                .set(0);
        }
        for step in mattermost_api::v1alpha1::step::ALL {
            m.migrations
                .get_or_create(&StepLabels {
                    step: (*step).to_owned(),
                })
                .set(0);
        }
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
            let q = QueueLabels {
                name: (*c).to_owned(),
                controller: (*c).to_owned(),
            };
            m.wq_adds.get_or_create(&q).inc_by(0);
            m.wq_retries.get_or_create(&q).inc_by(0);
            m.wq_unfinished.get_or_create(&q).set(0.0);
            m.wq_longest.get_or_create(&q).set(0.0);
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

    /// A trigger (watch event, slot wake-up) for the object `key` (`namespace/name`) of
    /// `controller`: an add unless the object is already waiting.
    pub fn enqueued(&self, controller: &str, key: String) {
        let Ok(mut queued) = self.queued.lock() else {
            return;
        };
        if let std::collections::hash_map::Entry::Vacant(e) = queued.entry((controller.to_owned(), key)) {
            e.insert(Instant::now());
            self.wq_adds.get_or_create(&queue_labels(controller)).inc();
        }
    }

    /// Drops the queue entries of `controller` whose key `keep` refuses (objects deleted before
    /// their reconcile: the controller never dispatches them).
    pub fn forget_queued(&self, controller: &str, keep: impl Fn(&str) -> bool) {
        if let Ok(mut queued) = self.queued.lock() {
            queued.retain(|(c, key), _| c != controller || keep(key));
        }
    }

    /// Starts timing a reconcile of the object `key` of `controller`; its time in the queue ends.
    /// A reconcile nobody triggered (its own requeue or retry timer) counts as an add dispatched
    /// at once, as client-go's delayed adds are.
    pub fn reconcile_started(&self, controller: &str, key: &str) -> ReconcileTimer<'_> {
        let labels = ControllerLabels {
            controller: controller.to_owned(),
        };
        self.reconciles.get_or_create(&labels).inc();
        self.cr_active.get_or_create(&labels).inc();
        let q = queue_labels(controller);
        let since = self
            .queued
            .lock()
            .ok()
            .and_then(|mut queued| queued.remove(&(controller.to_owned(), key.to_owned())));
        match since {
            Some(t) => self.wq_queue.get_or_create(&q).observe(t.elapsed().as_secs_f64()),
            None => {
                self.wq_adds.get_or_create(&q).inc();
                self.wq_queue.get_or_create(&q).observe(0.0);
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let start = Instant::now();
        if let Ok(mut running) = self.in_flight.lock() {
            running.insert(id, (controller.to_owned(), start));
        }
        ReconcileTimer {
            metrics: self,
            labels,
            start,
            id,
        }
    }

    /// Counts one request to the API server (`code` is the status, or `<error>`).
    pub fn rest_request(&self, labels: &RequestLabels) {
        self.rest_requests.get_or_create(labels).inc();
    }

    /// Refreshes the gauges computed at scrape time: unfinished work and process memory.
    fn refresh(&self) {
        let now = Instant::now();
        let mut per: HashMap<String, (f64, f64)> = HashMap::new();
        if let Ok(running) = self.in_flight.lock() {
            for (controller, start) in running.values() {
                let secs = now.duration_since(*start).as_secs_f64();
                let e = per.entry(controller.clone()).or_default();
                e.0 += secs;
                e.1 = e.1.max(secs);
            }
        }
        let mut depth: HashMap<String, i64> = HashMap::new();
        if let Ok(queued) = self.queued.lock() {
            for (controller, _) in queued.keys() {
                *depth.entry(controller.clone()).or_default() += 1;
            }
        }
        // Controllers with nothing running or waiting drop back to 0.
        let mut known: std::collections::BTreeSet<String> = self.controllers.iter().cloned().collect();
        known.extend(per.keys().chain(depth.keys()).cloned());
        for c in known {
            let (sum, longest) = per.get(&c).copied().unwrap_or_default();
            let q = queue_labels(&c);
            self.wq_unfinished.get_or_create(&q).set(sum);
            self.wq_longest.get_or_create(&q).set(longest);
            self.wq_depth
                .get_or_create(&q)
                .set(depth.get(&c).copied().unwrap_or_default());
        }
        if let Some(bytes) = resident_memory_bytes() {
            self.resident_memory.set(bytes);
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

    /// Records whether installation `key` (`namespace/name`) is blocked now, and why.
    pub fn set_blocked(&self, key: &str, reason: Option<&str>) {
        self.update_blocked(|set| match reason {
            Some(r) => {
                set.insert(key.to_owned(), r.to_owned());
            }
            None => {
                set.remove(key);
            }
        });
    }

    /// Forgets the blocked installations `keep` says no longer exist.
    pub fn forget_blocked(&self, keep: impl Fn(&str) -> bool) {
        self.update_blocked(|set| set.retain(|key, _| keep(key)));
    }

    fn update_blocked(&self, change: impl FnOnce(&mut HashMap<String, String>)) {
        let reasons: Vec<String> = match self.blocked.lock() {
            Ok(mut set) => {
                change(&mut set);
                set.values().cloned().collect()
            }
            Err(_) => return,
        };
        self.set_blocked_upgrades(reasons.iter().map(String::as_str));
    }

    /// Sets the blocked-upgrade gauges from the reasons of the installations blocked now (one
    /// entry per installation); reasons no longer present drop to 0.
    fn set_blocked_upgrades<'a>(&self, reasons: impl IntoIterator<Item = &'a str>) {
        let mut counts: HashMap<&str, i64> = HashMap::new();
        for r in reasons {
            *counts.entry(r).or_default() += 1;
        }
        self.blocked_upgrades.set(counts.values().sum());
        // Reasons seen before (pre-initialised or not) are reset, so a cleared block reads 0.
        let mut known: Vec<String> = BLOCKING_REASONS.iter().map(|r| (*r).to_owned()).collect();
        if let Ok(seen) = self.blocked_seen.lock() {
            known.extend(seen.iter().cloned());
        }
        for reason in &known {
            let n = counts.get(reason.as_str()).copied().unwrap_or(0);
            self.blocked_by_reason
                .get_or_create(&BlockedLabels {
                    reason: reason.clone(),
                })
                .set(n);
        }
        if let Ok(mut seen) = self.blocked_seen.lock() {
            for r in counts.keys().filter(|r| !known.iter().any(|k| k == *r)) {
                self.blocked_by_reason
                    .get_or_create(&BlockedLabels {
                        reason: (*r).to_owned(),
                    })
                    .set(counts[r]);
                seen.push((*r).to_owned());
            }
        }
    }

    /// Sets the rollout cap (`MAX_RECONCILING_INSTALLATIONS`, 0 = no limit).
    pub fn set_rollout_cap(&self, cap: u32) {
        self.rollout_cap.set(i64::from(cap));
    }

    /// Sets the migrations-by-step counts of one watch scope (its namespace, or "" for all);
    /// the gauge is their sum, and steps not listed drop to 0.
    pub fn set_migrations_by_step(&self, scope: &str, counts: &[(String, i64)]) {
        let Ok(mut by_scope) = self.migrations_by_scope.lock() else {
            return;
        };
        by_scope.insert(scope.to_owned(), counts.to_vec());
        for step in mattermost_api::v1alpha1::step::ALL {
            let n: i64 = by_scope
                .values()
                .flatten()
                .filter(|(s, _)| s == step)
                .map(|(_, n)| *n)
                .sum();
            self.migrations
                .get_or_create(&StepLabels {
                    step: (*step).to_owned(),
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
        self.refresh();
        let mut out = String::new();
        encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

fn queue_labels(controller: &str) -> QueueLabels {
    QueueLabels {
        name: controller.to_owned(),
        controller: controller.to_owned(),
    }
}

/// `VmRSS` of /proc/self/status in bytes (Linux; `None` elsewhere).
fn resident_memory_bytes() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024.0)
}

/// Records one reconcile when finished; dropping it unfinished only releases the worker gauge.
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    labels: ControllerLabels,
    start: Instant,
    id: u64,
}

impl ReconcileTimer<'_> {
    /// Records duration and outcome.
    pub fn finish(self, outcome: ReconcileOutcome) {
        let m = self.metrics;
        let secs = self.start.elapsed().as_secs_f64();
        m.duration.get_or_create(&self.labels).observe(secs);
        m.cr_time.get_or_create(&self.labels).observe(secs);
        m.wq_work
            .get_or_create(&queue_labels(&self.labels.controller))
            .observe(secs);
        if let ReconcileOutcome::Error(reason) = outcome {
            let labels = ReasonLabels {
                controller: self.labels.controller.clone(),
                reason: reason.to_owned(),
            };
            m.failures.get_or_create(&labels).inc();
            m.cr_errors.get_or_create(&self.labels).inc();
            m.wq_retries
                .get_or_create(&queue_labels(&self.labels.controller))
                .inc();
        }
        let labels = ResultLabels {
            controller: self.labels.controller.clone(),
            result: outcome.label().to_owned(),
        };
        m.cr_total.get_or_create(&labels).inc();
    }
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics.cr_active.get_or_create(&self.labels).dec();
        if let Ok(mut running) = self.metrics.in_flight.lock() {
            running.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests;
