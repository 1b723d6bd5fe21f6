//! Pure fleet logic: how an installation is doing (read from its status the way the operator
//! writes it), the fleet summary, upgrade waves and rollback targets. No I/O.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;
use mattermost_api::v1beta1::Mattermost;
use mattermost_operator::status::conditions::find;
use mattermost_operator::status::{DEGRADED, PREFLIGHT, PROGRESSING, UPDATE_JOB};
use serde::Serialize;

/// How an installation is doing, worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// An upgrade is blocked: failed update Job, failed preflight, progress deadline.
    Blocked,
    /// Something else is wrong (a secret, pods that cannot start, ...).
    Degraded,
    /// Waiting for a rollout slot (the operator's cap).
    Waiting,
    /// Rolling out (update Job or new pods) or converging.
    Rolling,
    /// No status yet (the operator has not seen it).
    Pending,
    /// Every replica runs the current spec.
    Stable,
}

impl Health {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Blocked => "blocked",
            Health::Degraded => "degraded",
            Health::Waiting => "waiting",
            Health::Rolling => "rolling",
            Health::Pending => "pending",
            Health::Stable => "stable",
        }
    }

    /// Needs a person.
    pub fn is_failure(self) -> bool {
        matches!(self, Health::Blocked | Health::Degraded)
    }
}

/// Reasons of `Degraded=True` that mean an upgrade is blocked (the operator's preflight and gate
/// reasons).
const BLOCKING: &[&str] = &[
    "UpdateJobFailed",
    "ProgressDeadlineExceeded",
    "DowngradeNotAllowed",
    "InsufficientCapacity",
    "NoSchedulableNodes",
    "PreflightFailed",
];

fn is(conds: &[Condition], type_: &str, status: &str) -> Option<Condition> {
    find(conds, type_).filter(|c| c.status == status).cloned()
}

/// One installation, as `status` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Classification.
    pub health: Health,
    /// The operator's state (reconciling / ready / stable).
    pub state: String,
    /// Version the pods serve.
    pub serving: Option<String>,
    /// Version the spec asks for.
    pub desired: String,
    /// Pods of the current revision available.
    pub ready: i32,
    /// Pods wanted.
    pub replicas: i32,
    /// The condition that explains the health (`type/reason`): what is wrong, or what is going on.
    pub condition: Option<String>,
    /// Its message.
    pub message: Option<String>,
    /// When that condition (or, when stable, Ready) last changed.
    pub since: Option<String>,
}

/// A gate condition that blocks the upgrade: the update Job failed (while it runs the condition is
/// also False, with reason `UpdateJobRunning`), or the preflight failed.
fn blocking_gate(conds: &[Condition]) -> Option<Condition> {
    is(conds, UPDATE_JOB, "False")
        .filter(|c| c.reason == "UpdateJobFailed")
        .or_else(|| is(conds, PREFLIGHT, "False"))
}

/// The condition that explains `health`: what is wrong, or what is going on.
fn explanation(conds: &[Condition], health: Health) -> Option<Condition> {
    match health {
        Health::Blocked => is(conds, DEGRADED, "True").or_else(|| blocking_gate(conds)),
        Health::Degraded => is(conds, DEGRADED, "True"),
        Health::Waiting | Health::Rolling => find(conds, PROGRESSING).cloned(),
        Health::Pending | Health::Stable => None,
    }
}

/// Classifies `mm` from its status.
pub fn health(mm: &Mattermost) -> Health {
    let Some(status) = mm.status.as_ref() else {
        return Health::Pending;
    };
    let conds = status.conditions.as_slice();
    let blocked_gate = blocking_gate(conds).is_some();
    if let Some(d) = is(conds, DEGRADED, "True") {
        let blocking = BLOCKING.contains(&d.reason.as_str());
        return if blocking || blocked_gate {
            Health::Blocked
        } else {
            Health::Degraded
        };
    }
    if blocked_gate {
        return Health::Blocked;
    }
    match is(conds, PROGRESSING, "True") {
        Some(c) if c.reason == "WaitingForRolloutSlot" => return Health::Waiting,
        Some(_) => return Health::Rolling,
        None => {}
    }
    let current =
        status.observed_generation.is_some() && status.observed_generation == mm.metadata.generation;
    if current && status.state.as_deref() == Some("stable") {
        Health::Stable
    } else {
        Health::Rolling
    }
}

/// The row of `mm`.
pub fn row(mm: &Mattermost) -> Row {
    let health = health(mm);
    let status = mm.status.clone().unwrap_or_default();
    let failing = explanation(&status.conditions, health);
    let since = failing
        .as_ref()
        .or_else(|| find(&status.conditions, "Ready"))
        .map(|c| c.last_transition_time.0.to_string());
    Row {
        namespace: mm.namespace().unwrap_or_default(),
        name: mm.name_any(),
        health,
        state: status.state.clone().unwrap_or_default(),
        serving: status.version.clone(),
        desired: mm.spec.version().to_owned(),
        ready: status.updated_replicas.unwrap_or(0),
        replicas: mm.spec.effective_replicas(),
        condition: failing.as_ref().map(|c| format!("{}/{}", c.type_, c.reason)),
        message: failing.map(|c| c.message).filter(|m| !m.is_empty()),
        since,
    }
}

/// Counts for the summary line.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Installations.
    pub total: usize,
    /// Count per health.
    pub by_health: BTreeMap<String, usize>,
    /// Installations holding a rollout slot (update Job or new pods rolling).
    pub rollouts_in_flight: usize,
    /// The operator's cap (MAX_RECONCILING_INSTALLATIONS), when it could be read.
    pub rollout_cap: Option<u32>,
}

/// The fleet summary of `rows`; `in_flight` counts installations holding a rollout slot.
pub fn summary(rows: &[Row], in_flight: usize, cap: Option<u32>) -> Summary {
    let mut by_health = BTreeMap::new();
    for r in rows {
        *by_health.entry(r.health.as_str().to_owned()).or_insert(0) += 1;
    }
    Summary {
        total: rows.len(),
        by_health,
        rollouts_in_flight: in_flight,
        rollout_cap: cap,
    }
}

/// True while `mm` holds one of the operator's rollout slots.
pub fn holds_slot(mm: &Mattermost) -> bool {
    let conds = mm
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    is(conds, PROGRESSING, "True").is_some_and(|c| c.reason == "RollingOut" || c.reason == "UpdateJobRunning")
}

/// Exit code of `status`: 0 all stable, 1 any blocked or degraded, 3 otherwise (converging).
pub fn exit_code(rows: &[Row]) -> u8 {
    if rows.iter().any(|r| r.health.is_failure()) {
        1
    } else if rows.iter().all(|r| r.health == Health::Stable) {
        0
    } else {
        3
    }
}

/// Splits `items` into waves: the first `canary` alone, then groups of `wave_size`. The split
/// depends only on the ordered list, so a re-run finds the same waves.
pub fn waves<T: Clone>(items: &[T], canary: usize, wave_size: usize) -> Vec<Vec<T>> {
    let wave_size = wave_size.max(1);
    let canary = canary.min(items.len());
    let mut out = Vec::new();
    if canary > 0 {
        out.push(items[..canary].to_vec());
    }
    out.extend(items[canary..].chunks(wave_size).map(<[T]>::to_vec));
    out
}

/// Where a rollback goes: the last stable version when the spec asks for something else (a
/// blocked or unfinished upgrade), else the previous stable version. `None` when there is none.
pub fn rollback_target(mm: &Mattermost) -> Option<String> {
    let status = mm.status.as_ref()?;
    let desired = mm.spec.version();
    match status.last_stable_version.as_deref() {
        Some(last) if last != desired => Some(last.to_owned()),
        _ => status.previous_stable_version.clone().filter(|p| p != desired),
    }
}

/// The rollback of `mm`: its target version and the merge patch of `spec` that goes there (the
/// version, and the image it ran when it differs from the spec's). `None` when there is no stable
/// version to go back to.
pub fn rollback_spec(mm: &Mattermost) -> Option<(String, serde_json::Value)> {
    let version = rollback_target(mm)?;
    let status = mm.status.clone().unwrap_or_default();
    let image = if Some(&version) == status.last_stable_version.as_ref() {
        status.last_stable_image
    } else {
        status.previous_stable_image
    };
    let mut spec = serde_json::json!({ "version": version });
    if let Some(image) = image.filter(|i| i != mm.spec.image()) {
        spec["image"] = image.into();
    }
    Some((version, spec))
}

/// Done with an upgrade to `version`: stable at it, for the current generation.
pub fn upgraded(mm: &Mattermost, version: &str) -> bool {
    health(mm) == Health::Stable
        && mm.spec.version() == version
        && mm.status.as_ref().and_then(|s| s.version.as_deref()) == Some(version)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use mattermost_api::v1beta1::MattermostStatus;

    fn mm(version: &str, status: Option<MattermostStatus>) -> Mattermost {
        let mut mm: Mattermost = serde_json::from_value(serde_json::json!({
            "apiVersion": "installation.mattermost.com/v1beta1", "kind": "Mattermost",
            "metadata": {"name": "chat", "namespace": "team", "generation": 2},
            "spec": {"version": version, "replicas": 2}
        }))
        .unwrap();
        mm.status = status;
        mm
    }

    fn cond(type_: &str, status: &str, reason: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: format!("{reason} message"),
            last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
            observed_generation: Some(2),
        }
    }

    fn status(state: &str, conditions: Vec<Condition>) -> MattermostStatus {
        MattermostStatus {
            state: Some(state.into()),
            version: Some("10.0.0".into()),
            observed_generation: Some(2),
            updated_replicas: Some(2),
            last_stable_version: Some("10.0.0".into()),
            previous_stable_version: Some("9.11.0".into()),
            conditions,
            ..Default::default()
        }
    }

    #[test]
    fn classification_follows_the_operators_conditions() {
        assert_eq!(health(&mm("10.0.0", None)), Health::Pending);
        let stable = status("stable", vec![cond("Ready", "True", "Stable")]);
        assert_eq!(health(&mm("10.0.0", Some(stable.clone()))), Health::Stable);
        let mut old = stable.clone();
        old.observed_generation = Some(1);
        assert_eq!(health(&mm("10.0.0", Some(old))), Health::Rolling);
        let job = status(
            "stable",
            vec![
                cond("Degraded", "True", "UpdateJobFailed"),
                cond("UpdateJobSucceeded", "False", "UpdateJobFailed"),
            ],
        );
        let blocked = mm("10.1.0", Some(job));
        assert_eq!(health(&blocked), Health::Blocked);
        assert_eq!(
            row(&blocked).condition.as_deref(),
            Some("Degraded/UpdateJobFailed")
        );
        let secret = status("stable", vec![cond("Degraded", "True", "SecretNotFound")]);
        assert_eq!(health(&mm("10.0.0", Some(secret))), Health::Degraded);
        let waiting = status(
            "stable",
            vec![cond("Progressing", "True", "WaitingForRolloutSlot")],
        );
        assert_eq!(health(&mm("10.1.0", Some(waiting))), Health::Waiting);
        let rolling = status("ready", vec![cond("Progressing", "True", "RollingOut")]);
        assert!(holds_slot(&mm("10.1.0", Some(rolling))));
        // A running update Job is progress, not a block.
        let running = status(
            "stable",
            vec![
                cond("UpdateJobSucceeded", "False", "UpdateJobRunning"),
                cond("Progressing", "True", "UpdateJobRunning"),
            ],
        );
        let running = mm("10.1.0", Some(running));
        assert_eq!(health(&running), Health::Rolling);
        assert_eq!(
            row(&running).condition.as_deref(),
            Some("Progressing/UpdateJobRunning")
        );
    }

    #[test]
    fn exit_codes_gate_ci() {
        let stable = row(&mm("10.0.0", Some(status("stable", vec![]))));
        let pending = row(&mm("10.0.0", None));
        let blocked = row(&mm(
            "10.1.0",
            Some(status(
                "stable",
                vec![cond("Degraded", "True", "UpdateJobFailed")],
            )),
        ));
        assert_eq!(exit_code(std::slice::from_ref(&stable)), 0);
        assert_eq!(exit_code(&[stable.clone(), pending.clone()]), 3);
        assert_eq!(exit_code(&[stable, pending, blocked]), 1);
    }

    #[test]
    fn waves_put_the_canary_first_and_are_stable_across_runs() {
        let items: Vec<u32> = (1..=23).collect();
        let w = waves(&items, 1, 10);
        assert_eq!(w.iter().map(Vec::len).collect::<Vec<_>>(), [1, 10, 10, 2]);
        assert_eq!(w[0], [1]);
        assert_eq!(waves(&items, 0, 30).len(), 1);
        assert_eq!(waves::<u32>(&[], 1, 10).len(), 0);
    }

    #[test]
    fn rollback_goes_to_the_last_then_the_previous_stable_version() {
        let s = status("stable", vec![]);
        assert_eq!(
            rollback_target(&mm("10.1.0", Some(s.clone()))).as_deref(),
            Some("10.0.0")
        );
        assert_eq!(rollback_target(&mm("10.0.0", Some(s))).as_deref(), Some("9.11.0"));
        assert_eq!(rollback_target(&mm("10.0.0", None)), None);
    }
}
