//! The upgrade gate: whether an image change may roll (preflight, a slot under the cap, the backup
//! and update Jobs), and giving the slot back when the rollout ends.

use mattermost_api::v1beta1::{Mattermost, MattermostStatus, RunningState, image_reference};

use super::context::Context;
use super::jobs;
use super::outcome::ChildrenOutcome;
use crate::apply::ApplyError;
use crate::desired::Inputs;
use crate::desired::names::Names;
use crate::preflight;
use crate::status::{DEGRADED, Gate};

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
    out.capacity_check_skipped = wants_capacity && !ctx.capacity_check;
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
            && ctx.capacity_check
            && let Err(b) = preflight::check_capacity(&ctx.client, mm, 1).await
        {
            return Ok(Gate::Blocked {
                reason: b.reason,
                message: b.message,
            });
        }
    }
    if !ctx.slots.acquire(&slot_key(names), job_exists) {
        return Ok(Gate::Waiting);
    }
    // Going back to a known stable version needs neither a backup nor a migration.
    if known {
        return Ok(Gate::Open);
    }
    jobs::upgrade_jobs(ctx, mm, names, uid, inputs, image, out).await
}

fn slot_key(names: &Names) -> String {
    format!("{}/{}", names.namespace, names.app)
}

/// Gives rollout slots back and keeps the upgrade metrics.
pub(super) fn track_rollout(ctx: &Context, names: &Names, status: &MattermostStatus, gate: &Gate) {
    let key = slot_key(names);
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
        && let Some(held) = ctx.slots.release(&key)
        && stable
    {
        ctx.metrics.upgrade_duration.observe(held.as_secs_f64());
    }
    if let Ok(mut set) = ctx.blocked.lock() {
        match blocked {
            Some(reason) => set.insert(key, reason),
            None => set.remove(&key),
        };
        ctx.metrics.set_blocked_upgrades(set.values().map(String::as_str));
    }
    ctx.metrics
        .rollouts_in_progress
        .set(i64::try_from(ctx.slots.in_use()).unwrap_or(i64::MAX));
}
