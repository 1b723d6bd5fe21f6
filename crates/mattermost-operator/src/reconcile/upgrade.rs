//! The upgrade gate: whether an image change may roll (preflight, a slot under the cap, the backup
//! and update Jobs), and giving the slot back when the rollout ends.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use mattermost_api::v1beta1::{Mattermost, MattermostStatus, RunningState, image_reference};

use super::context::{Context, cached};
use super::jobs;
use super::outcome::ChildrenOutcome;
use crate::apply::ApplyError;
use crate::desired::Inputs;
use crate::desired::names::Names;
use crate::preflight;
use crate::rollout_cap::Slot;
use crate::status::conditions::find;
use crate::status::{DEGRADED, Gate, PROGRESSING};

/// Image references of the last two stable versions, from status.
#[derive(Debug, Default)]
pub(super) struct StableHistory {
    pub(super) last: Option<String>,
    pub(super) previous: Option<String>,
}

impl StableHistory {
    pub(super) fn of(mm: &Mattermost) -> Self {
        let st = mm.status.as_ref();
        let r = |img: Option<&String>, ver: Option<&String>| Some(image_reference(img?, ver?));
        Self {
            last: st.and_then(|s| r(s.last_stable_image.as_ref(), s.last_stable_version.as_ref())),
            previous: st.and_then(|s| {
                r(
                    s.previous_stable_image.as_ref(),
                    s.previous_stable_version.as_ref(),
                )
            }),
        }
    }

    /// True for an image that served against the current schema (rolling back to it needs no
    /// migration).
    pub(super) fn knows(&self, image: &str) -> bool {
        self.last.as_deref() == Some(image) || self.previous.as_deref() == Some(image)
    }
}

/// Decides whether the image change may proceed: preflight checks, a rollout slot, then the
/// backup and update Jobs (skipped when going back to a known stable image).
#[allow(clippy::too_many_arguments)]
pub(super) async fn upgrade_gate(
    ctx: &Context,
    mm: &Mattermost,
    names: &Names,
    uid: &str,
    inputs: &Inputs,
    image: &str,
    history: &StableHistory,
    rolled_back: bool,
    out: &mut ChildrenOutcome,
) -> Result<Gate, ApplyError> {
    let known = rolled_back || history.knows(image);
    let wants_capacity = !mm.spec.skip_capacity_check() && !mm.spec.recreate_strategy();
    out.capacity_check_skipped = wants_capacity && ctx.capacity.is_none();
    let job_exists = jobs::upgrade_started(ctx, names, image);
    if !known && !job_exists {
        let status = mm.status.as_ref();
        let last = status.and_then(|s| s.last_stable_version.as_deref());
        let previous = status.and_then(|s| s.previous_stable_version.as_deref());
        if let Err(b) =
            preflight::check_downgrade(mm.spec.version(), last, previous, mm.spec.allow_downgrade())
        {
            return Ok(Gate::Blocked {
                reason: b.reason,
                message: b.message,
            });
        }
        if let Err(b) = preflight::check_recent_backup(mm, k8s_openapi::jiff::Timestamp::now()) {
            return Ok(Gate::Blocked {
                reason: b.reason,
                message: b.message,
            });
        }
        if wants_capacity
            && let Some(capacity) = &ctx.capacity
            && let Err(b) = capacity.check(mm, 1)
        {
            return Ok(Gate::Blocked {
                reason: b.reason,
                message: b.message,
            });
        }
    }
    if !ctx.slots.acquire(&rollout_slot(names)).await {
        // An upgrade whose Job failed gave its slot back; it keeps reporting the failure until a
        // retry is asked for (only the new attempt waits for a slot).
        if job_exists && let Some(failed) = jobs::failed_upgrade(ctx, mm, names, image) {
            // Its Jobs are kept, like any failed Job: the cleanup must not take the report.
            out.jobs_in_use
                .extend([names.backup_job(image), names.update_job(image)]);
            return Ok(failed);
        }
        return Ok(Gate::Waiting);
    }
    // Going back to a known stable version needs neither a backup nor a migration.
    if known {
        return Ok(Gate::Open);
    }
    jobs::upgrade_jobs(ctx, mm, names, uid, inputs, image, out).await
}

/// The slot of an installation's rollout.
pub(super) fn rollout_slot(names: &Names) -> Slot {
    Slot::Rollout {
        namespace: names.namespace.clone(),
        name: names.app.clone(),
    }
}

/// A change of the pod template that is not an image change (an operator release or a spec
/// field): it rolls every pod too, so it waits for a slot like an upgrade.
pub(super) async fn config_gate(ctx: &Context, names: &Names) -> Gate {
    if ctx.slots.acquire(&rollout_slot(names)).await {
        Gate::Open
    } else {
        Gate::Waiting
    }
}

/// `Progressing` reasons of an upgrade that holds a rollout slot: its Jobs and the rollout.
const ROLLING_REASONS: [&str; 4] = [
    "BackupRunning",
    "UpdateJobRunning",
    "RollingOut",
    "VerificationRunning",
];

/// The rollouts a controller's caches show under way, oldest first (to rebuild the slots after a
/// restart): installations whose last status says they were running the update Job or rolling,
/// and those whose Deployment is still rolling (its status may not have been written).
pub fn under_way(
    mms: impl IntoIterator<Item = Mattermost>,
    deployments: &kube::runtime::reflector::Store<crate::cache::Cached<Deployment>>,
) -> Vec<Slot> {
    let mut v: Vec<(Option<Time>, Slot)> = mms
        .into_iter()
        .filter_map(|mm| {
            let ns = mm.namespace().unwrap_or_default();
            let progressing = mm
                .status
                .as_ref()
                .and_then(|s| find(&s.conditions, PROGRESSING))
                .filter(|c| c.status == "True");
            let said_so = progressing.is_some_and(|c| ROLLING_REASONS.contains(&c.reason.as_str()));
            let rolling =
                cached(deployments, &Names::of(&mm).app, &ns).is_some_and(|d| deployment_rolling(&d));
            (said_so || rolling).then(|| {
                let slot = Slot::Rollout {
                    namespace: ns,
                    name: mm.name_any(),
                };
                let since = progressing.map(|c| c.last_transition_time.clone());
                (since, slot)
            })
        })
        .collect();
    v.sort_by(|a, b| a.0.as_ref().map(|t| t.0).cmp(&b.0.as_ref().map(|t| t.0)));
    v.into_iter().map(|(_, s)| s).collect()
}

/// True while `dep` has not finished rolling to its current template.
fn deployment_rolling(dep: &Deployment) -> bool {
    let want = dep.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let Some(st) = dep.status.as_ref() else {
        return true;
    };
    st.observed_generation.unwrap_or(0) < dep.metadata.generation.unwrap_or(0)
        || st.updated_replicas.unwrap_or(0) != want
        || st.replicas.unwrap_or(0) != want
}

/// Gives rollout slots back and keeps the upgrade metrics.
pub(super) fn track_rollout(ctx: &Context, names: &Names, status: &MattermostStatus, gate: &Gate) {
    let slot = rollout_slot(names);
    let key = format!("{}/{}", names.namespace, names.app);
    let stable = status.state.as_deref() == Some(RunningState::Stable.as_str());
    let blocked = status
        .conditions
        .iter()
        .find(|c| {
            c.type_ == DEGRADED
                && c.status == "True"
                && crate::metrics::BLOCKING_REASONS.contains(&c.reason.as_str())
        })
        .map(|c| c.reason.clone())
        .or_else(|| match gate {
            Gate::Blocked { reason, .. } => Some((*reason).to_owned()),
            _ => None,
        });
    let problem = status
        .conditions
        .iter()
        .any(|c| c.type_ == DEGRADED && c.status == "True");
    if (stable || problem)
        && let Some(held) = ctx.slots.release(&slot)
        && stable
    {
        ctx.metrics.upgrade_duration.observe(held.as_secs_f64());
    }
    ctx.metrics.set_blocked(&key, blocked.as_deref());
    ctx.metrics
        .rollouts_in_progress
        .set(i64::try_from(ctx.slots.in_use()).unwrap_or(i64::MAX));
}
