//! Kubernetes events of an installation, on meaningful transitions only.

use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use mattermost_api::v1beta1::{Mattermost, MattermostStatus};
use tracing::warn;

use super::context::Context;
use super::outcome::ChildrenOutcome;
use crate::status::conditions::find;
use crate::status::{self, BACKUP, DEGRADED, JobKind, READY, UPDATE_JOB, VERIFIED};

/// Events on meaningful transitions only, never one per write.
pub(super) async fn publish_events(
    ctx: &Context,
    mm: &Mattermost,
    old: Option<&MattermostStatus>,
    new: &MattermostStatus,
    outcome: &ChildrenOutcome,
) {
    let mut events = Vec::new();
    let old_conds = old.map(|s| s.conditions.as_slice()).unwrap_or_default();
    let changed = |type_: &str| {
        let before = find(old_conds, type_).map(|c| (c.status.clone(), c.reason.clone()));
        let after = find(&new.conditions, type_).map(|c| (c.status.clone(), c.reason.clone()));
        (before != after).then(|| find(&new.conditions, type_)).flatten()
    };
    if let Some(c) = changed(status::IMAGE_PINNED).filter(|c| c.status == "False") {
        events.push((
            EventType::Warning,
            c.reason.clone(),
            c.message.clone(),
            "Reconcile",
        ));
    }
    if let Some(c) = changed(DEGRADED).filter(|c| c.status == "True") {
        events.push((
            EventType::Warning,
            c.reason.clone(),
            c.message.clone(),
            "Reconcile",
        ));
    }
    // In the order of the upgrade: a Job that succeeded before the next one started.
    for type_ in [BACKUP, UPDATE_JOB] {
        if let Some(c) = changed(type_).filter(|c| c.status == "True") {
            events.push((EventType::Normal, c.reason.clone(), c.message.clone(), "Upgrade"));
        }
    }
    if let Some(c) = changed(UPDATE_JOB) {
        if c.status == "True" {
            ctx.metrics.update_job_finished("succeeded");
        } else if c.reason == JobKind::Update.failed() {
            ctx.metrics.update_job_finished("failed");
        }
    }
    // What this reconcile did (not a transition read from a possibly stale status): always told.
    let mut actions = Vec::new();
    for (kind, job) in &outcome.jobs_created {
        actions.push((
            EventType::Normal,
            kind.started().to_owned(),
            format!("started {} {job}", kind.noun()),
            "Upgrade",
        ));
    }
    if outcome.rollback_started {
        let msg = format!(
            "rollout of {} did not progress or failed its verification; restoring the last stable version",
            mm.spec.image_reference()
        );
        actions.push((EventType::Warning, "RollingBack".to_owned(), msg, "Upgrade"));
    }
    if outcome.rollout_started {
        let mut msg = format!("rolling out {}", mm.spec.image_reference());
        if outcome.capacity_check_skipped {
            msg.push_str(
                " (capacity preflight skipped: the operator may not list nodes in namespace-scoped mode)",
            );
        }
        actions.push((EventType::Normal, "RolloutStarted".to_owned(), msg, "Upgrade"));
    }
    if let Some(c) = changed(VERIFIED).filter(|c| c.status == "True") {
        events.push((EventType::Normal, c.reason.clone(), c.message.clone(), "Upgrade"));
    }
    let was_ready = find(old_conds, READY).is_some_and(|c| c.status == "True");
    if let Some(c) = changed(READY).filter(|c| was_ready && c.reason == status::CHILDREN_MISSING) {
        events.push((
            EventType::Warning,
            c.reason.clone(),
            c.message.clone(),
            "Reconcile",
        ));
    }
    if let Some(c) = changed(READY).filter(|c| c.status == "True") {
        let msg = format!("installation is stable at {}", mm.spec.image_reference());
        events.push((EventType::Normal, c.reason.clone(), msg, "Reconcile"));
    }
    let reference = mm.object_ref(&());
    let uid = mm.uid().unwrap_or_default();
    // Transitions read from a cached status that is older than our last write come again: told
    // once a minute at most.
    let transitions = events
        .into_iter()
        .filter(|(_, reason, note, _)| ctx.published.first(&uid, &format!("{reason}/{note}")));
    let mut all: Vec<_> = transitions.chain(actions).collect();
    all.sort_by_key(|(_, reason, _, _)| order(reason));
    for (type_, reason, note, action) in all {
        let event = Event {
            type_,
            reason,
            // The API refuses longer notes, and the event would be lost.
            note: Some(crate::redact::truncate(&note, crate::redact::MAX_EVENT_NOTE)),
            action: action.to_owned(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&event, &reference).await {
            warn!(error = %e, "publishing event failed");
        }
    }
}

/// Upgrade events in the order the steps happen (a Job's success before the next one starts).
fn order(reason: &str) -> usize {
    const STEPS: [&str; 9] = [
        "BackupStarted",
        "BackupSucceeded",
        "UpdateJobStarted",
        "UpdateJobSucceeded",
        "RollingBack",
        "RolloutStarted",
        "VerificationStarted",
        "VerificationSucceeded",
        "Stable",
    ];
    STEPS.iter().position(|s| *s == reason).unwrap_or(0)
}
