//! The migration state machine (see the module docs of `legacy`), its revert, and the hand-over
//! of children between the two owners.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Client, Resource, ResourceExt};
use mattermost_api::v1alpha1::{ClusterInstallation, ClusterInstallationStatus, MigrationStatus};
use mattermost_api::v1beta1::Mattermost;
use serde_json::json;
use tracing::{info, warn};

use crate::rollout_cap::Slot;

use super::children::{available, ci_owner, is_legacy};
use super::context::{Ctx, Error, LEGACY_INSTALLATION_LABEL, REQUEUE};
use super::report::{event, set_kstatus, write_status};
pub use mattermost_api::v1alpha1::step;

use crate::apply::FIELD_MANAGER;
use crate::desired::names::Names;
use crate::desired::{self, Inputs};

/// Annotation on a `Mattermost` created by a migration: the uid of its `ClusterInstallation`.
pub const MIGRATED_FROM: &str = "installation.mattermost.com/migrated-from";
/// Finalizer on a `Mattermost` while its migration is unfinished: deleting it then reverts the
/// migration (children go back to the `ClusterInstallation`) instead of garbage-collecting them.
pub const MIGRATION_FINALIZER: &str = "installation.mattermost.com/migration";

/// Removes the migration finalizer from `mm`.
pub(crate) async fn release_finalizer(client: &Client, mm: &Mattermost) -> Result<(), Error> {
    if !mm.finalizers().iter().any(|f| f == MIGRATION_FINALIZER) {
        return Ok(());
    }
    let rest: Vec<&String> = mm
        .finalizers()
        .iter()
        .filter(|f| *f != MIGRATION_FINALIZER)
        .collect();
    let api: Api<Mattermost> = Api::namespaced(client.clone(), &mm.namespace().unwrap_or_default());
    let patch = json!({"metadata": {"finalizers": rest, "resourceVersion": mm.resource_version()}});
    api.patch(&mm.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// A `Mattermost` created by an unfinished migration is being deleted: hand its children back to
/// the `ClusterInstallation` and stop the migration, then let the deletion proceed.
pub async fn revert_on_delete(client: &Client, mm: &Mattermost) -> Result<(), Error> {
    let ns = mm.namespace().unwrap_or_default();
    let cis: Api<ClusterInstallation> = Api::namespaced(client.clone(), &ns);
    if let Some(ci) = cis
        .get_opt(&mm.name_any())
        .await?
        .filter(|c| c.uid().as_deref() == migrated_from(mm))
    {
        // Stop the migration first, so that it does not hand the children over again.
        let patch = json!({"spec": {"migrate": false}});
        cis.patch(&ci.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        if let (Some(mm_uid), Some(ci_ref)) = (mm.uid(), ci.controller_owner_ref(&())) {
            move_owners(client, &ns, &mm_uid, &ci_ref).await?;
        }
    }
    release_finalizer(client, mm).await
}

/// The uid of the `ClusterInstallation` that `mm` was migrated from.
pub(super) fn migrated_from(mm: &Mattermost) -> Option<&str> {
    mm.annotations().get(MIGRATED_FROM).map(String::as_str)
}

/// One pass of the migration state machine.
pub(super) async fn migrate(
    ci: &ClusterInstallation,
    mm: &Mattermost,
    inputs: &Inputs,
    ctx: &Ctx,
    api: &Api<ClusterInstallation>,
    mut status: ClusterInstallationStatus,
) -> Result<Action, Error> {
    let ns = ci.namespace().unwrap_or_default();
    let name = ci.name_any();
    let client = &ctx.client;
    let deps: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let mms: Api<Mattermost> = Api::namespaced(client.clone(), &ns);
    let before = status.migration.clone().unwrap_or_default();
    let before_step = before.status.clone();
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    // The step's start is kept while the step does not change; the deadline counts from it.
    let set_step = |status: &mut ClusterInstallationStatus, step: &str| {
        let same = before_step.as_deref() == Some(step);
        status.migration = Some(MigrationStatus {
            status: Some(step.to_owned()),
            error: None,
            since: if same {
                before.since.clone()
            } else {
                Some(now.clone())
            },
        });
    };
    let slot = migration_slot(&ns, &name);
    let under_way = before_step
        .as_deref()
        .is_some_and(|s| step::UNDER_WAY.contains(&s));
    if !under_way {
        // Nothing changed yet: the new pods must fit before the old Deployment is touched.
        if let Some(Err(b)) = ctx
            .capacity
            .as_ref()
            .filter(|_| !mm.spec.skip_capacity_check())
            .map(|c| c.check(mm, u32::try_from(mm.spec.effective_replicas()).unwrap_or(0)))
        {
            ctx.slots.release(&slot);
            if before_step.as_deref() != Some(step::NO_CAPACITY) {
                event(ctx, ci, EventType::Warning, b.reason, b.message.clone()).await;
            }
            set_step(&mut status, step::NO_CAPACITY);
            status.state = Some("reconciling".to_owned());
            let message = format!("migration waits for room for the new pods: {}", b.message);
            set_kstatus(
                &mut status,
                ci.metadata.generation,
                None,
                Some((b.reason, message)),
            );
            write_status(api, ci, status).await?;
            return Ok(Action::requeue(STALLED_RECHECK));
        }
    }
    // A step past its deadline gave its slot back; it is retried without one (its pods already
    // exist) and takes one again once it moves on.
    let stalled = before.error.is_some() && under_way;
    if !stalled && !ctx.slots.acquire(&slot).await {
        set_step(&mut status, step::WAITING);
        status.state = Some("reconciling".to_owned());
        set_kstatus(
            &mut status,
            ci.metadata.generation,
            Some((
                step::WAITING,
                "migration waits for a rollout slot (MAX_RECONCILING_INSTALLATIONS)".to_owned(),
            )),
            None,
        );
        write_status(api, ci, status).await?;
        return Ok(Action::requeue(ctx.slots.retry_after));
    }

    let live_mm = mms.get_opt(&name).await?;
    let live_dep = deps.get_opt(&name).await?;
    if live_mm
        .as_ref()
        .is_some_and(|m| m.meta().deletion_timestamp.is_some())
    {
        // The Mattermost is being deleted: that is a revert, handled by its finalizer.
        return Ok(Action::requeue(REQUEUE));
    }
    let step = if let Some(mm_live) = &live_mm {
        let st = mm_live.status.as_ref();
        let stable = st.and_then(|s| s.state.as_deref()) == Some("stable")
            && st.and_then(|s| s.observed_generation) == mm_live.metadata.generation;
        if stable {
            // Cleanup: old ReplicaSets (orphans with the v1alpha1 labels), then the ClusterInstallation.
            let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns);
            let lp = ListParams::default().labels(&format!("{LEGACY_INSTALLATION_LABEL}={name}"));
            for rs in sets
                .list(&lp)
                .await?
                .items
                .into_iter()
                .filter(|r| r.owner_references().is_empty())
            {
                sets.delete(&rs.name_any(), &DeleteParams::background()).await?;
            }
            set_step(&mut status, step::CLEANUP);
            set_kstatus(
                &mut status,
                ci.metadata.generation,
                Some((
                    step::CLEANUP,
                    format!("migrated to Mattermost {name}; cleaning up"),
                )),
                None,
            );
            write_status(api, ci, status).await?;
            release_finalizer(client, mm_live).await?;
            api.delete(&name, &DeleteParams::background()).await?;
            ctx.slots.release(&slot);
            info!(name, "migration complete");
            event(
                ctx,
                ci,
                EventType::Normal,
                "Migrated",
                format!("migrated to Mattermost {name}"),
            )
            .await;
            return Ok(Action::await_change());
        }
        hand_over(ci, mm_live, client, &ns).await?;
        step::HANDOVER
    } else {
        match &live_dep {
            Some(d) if is_legacy(d) => {
                if d.meta().deletion_timestamp.is_none() {
                    deps.delete(
                        &name,
                        &DeleteParams {
                            propagation_policy: Some(PropagationPolicy::Orphan),
                            ..Default::default()
                        },
                    )
                    .await?;
                }
                step::ORPHANING
            }
            None => {
                // The new Deployment: same name, v1beta1 selector and labels, built exactly as the
                // Mattermost controller will, so adopting it later changes nothing.
                let names = Names::of(mm);
                let mut dep = desired::deployment::deployment(mm, &names, inputs);
                dep.metadata.owner_references = ci_owner(ci);
                deps.patch(
                    &name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&dep),
                )
                .await?;
                step::NEW_DEPLOYMENT
            }
            Some(d) if d.meta().deletion_timestamp.is_some() => step::ORPHANING,
            Some(d) => {
                let want = mm.spec.effective_replicas();
                if available(d) >= want {
                    let mut new_mm = Mattermost::new(&name, mm.spec.clone());
                    new_mm.metadata.labels = ci.metadata.labels.clone();
                    new_mm.metadata.finalizers = Some(vec![MIGRATION_FINALIZER.to_owned()]);
                    new_mm.metadata.annotations = Some(BTreeMap::from([(
                        MIGRATED_FROM.to_owned(),
                        ci.uid().unwrap_or_default(),
                    )]));
                    let created = mms.create(&PostParams::default(), &new_mm).await?;
                    hand_over(ci, &created, client, &ns).await?;
                    event(
                        ctx,
                        ci,
                        EventType::Normal,
                        "MattermostCreated",
                        format!("created Mattermost {name}"),
                    )
                    .await;
                    step::HANDOVER
                } else {
                    step::NEW_DEPLOYMENT
                }
            }
        }
    };
    if before_step.as_deref() != Some(step) {
        info!(name, step, "migration step");
        event(ctx, ci, EventType::Normal, "MigrationStep", step.to_owned()).await;
    }
    set_step(&mut status, step);
    status.state = Some("reconciling".to_owned());
    let msg = format!("migrating to Mattermost {name}: {step}");
    crate::status::conditions::upsert(
        &mut status.conditions,
        crate::status::conditions::condition(
            "Migrating",
            true,
            step,
            msg.clone(),
            ci.metadata.generation,
            &now,
        ),
    );
    let since = status.migration.as_ref().and_then(|m| m.since.as_ref());
    if let Some(late) = since.and_then(|t| overdue(t, &now, ctx.step_deadline)) {
        // Stuck: say so, and let the others have the slot. Nothing is undone; a fix or a
        // revert (`spec.migrate: false`) moves it on.
        let message = format!(
            "migration step {step} has not completed for {} (deadline {}); the rollout slot was released. Fix the \
             cause (see the new Deployment's pods) or revert with spec.migrate: false",
            humantime(late),
            humantime(ctx.step_deadline)
        );
        if !stalled {
            warn!(name, step, "migration step deadline exceeded");
            event(
                ctx,
                ci,
                EventType::Warning,
                STEP_DEADLINE_EXCEEDED,
                message.clone(),
            )
            .await;
        }
        ctx.slots.release(&slot);
        if let Some(m) = status.migration.as_mut() {
            m.error = Some(message.clone());
        }
        set_kstatus(
            &mut status,
            ci.metadata.generation,
            None,
            Some((STEP_DEADLINE_EXCEEDED, message)),
        );
        write_status(api, ci, status).await?;
        return Ok(Action::requeue(STALLED_RECHECK));
    }
    set_kstatus(&mut status, ci.metadata.generation, Some((step, msg)), None);
    write_status(api, ci, status).await?;
    Ok(Action::requeue(REQUEUE))
}

/// Reason of a migration step past its deadline.
pub const STEP_DEADLINE_EXCEEDED: &str = "MigrationStepDeadlineExceeded";
/// How often a stalled or capacity-blocked migration is looked at again.
const STALLED_RECHECK: std::time::Duration = std::time::Duration::from_secs(30);

/// How long the step that started at `since` has run, when that is past `deadline`.
fn overdue(since: &Time, now: &Time, deadline: std::time::Duration) -> Option<std::time::Duration> {
    let ran = now.0.duration_since(since.0);
    let ran = std::time::Duration::try_from(ran).ok()?;
    (ran > deadline).then_some(ran)
}

fn humantime(d: std::time::Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m{}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// The slot of a migration.
pub(super) fn migration_slot(namespace: &str, name: &str) -> Slot {
    Slot::Migration {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    }
}

/// The migrations a controller's cache shows under way, oldest step first (to rebuild the slots
/// after a restart); stalled ones gave theirs back.
pub(super) fn under_way<'a>(cis: impl IntoIterator<Item = &'a ClusterInstallation>) -> Vec<Slot> {
    let mut v: Vec<(Option<Time>, Slot)> = cis
        .into_iter()
        .filter(|ci| ci.spec.migrate.unwrap_or(false))
        .filter_map(|ci| {
            let m = ci.status.as_ref()?.migration.as_ref()?;
            let rolling = m.error.is_none() && step::UNDER_WAY.contains(&m.status.as_deref()?);
            rolling.then(|| {
                let slot = migration_slot(&ci.namespace().unwrap_or_default(), &ci.name_any());
                (m.since.clone(), slot)
            })
        })
        .collect();
    v.sort_by(|a, b| a.0.as_ref().map(|t| t.0).cmp(&b.0.as_ref().map(|t| t.0)));
    v.into_iter().map(|(_, s)| s).collect()
}

/// Moves every object the ClusterInstallation controls to the Mattermost: the new Deployment,
/// Service, Ingress, ServiceAccount and Secrets (so garbage collection of the old resource deletes
/// none of them).
async fn hand_over(
    ci: &ClusterInstallation,
    mm: &Mattermost,
    client: &Client,
    ns: &str,
) -> Result<(), Error> {
    match (ci.uid(), mm.controller_owner_ref(&())) {
        (Some(ci_uid), Some(mm_ref)) => move_owners(client, ns, &ci_uid, &mm_ref).await,
        _ => Ok(()),
    }
}

/// Replaces the controller reference to `from_uid` by `to` on every child kind and on Secrets.
pub(crate) async fn move_owners(
    client: &Client,
    ns: &str,
    from_uid: &str,
    to: &OwnerReference,
) -> Result<(), Error> {
    // Metadata only: the hand-over never reads (or answers with) Secret values.
    async fn move_kind<K>(api: Api<K>, from_uid: &str, to: &OwnerReference) -> Result<(), Error>
    where
        K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        for obj in api.list_metadata(&ListParams::default()).await?.items {
            if !obj.owner_references().iter().any(|o| o.uid == from_uid) {
                continue;
            }
            let mut refs: Vec<OwnerReference> = obj
                .owner_references()
                .iter()
                .filter(|o| o.uid != from_uid)
                .cloned()
                .collect();
            refs.push(to.clone());
            let patch = json!({"metadata": {"ownerReferences": refs}});
            api.patch_metadata(&obj.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
        }
        Ok(())
    }
    move_kind(Api::<Deployment>::namespaced(client.clone(), ns), from_uid, to).await?;
    move_kind(Api::<Service>::namespaced(client.clone(), ns), from_uid, to).await?;
    move_kind(Api::<Ingress>::namespaced(client.clone(), ns), from_uid, to).await?;
    move_kind(
        Api::<ServiceAccount>::namespaced(client.clone(), ns),
        from_uid,
        to,
    )
    .await?;
    move_kind(Api::<Secret>::namespaced(client.clone(), ns), from_uid, to).await?;
    move_kind(
        Api::<k8s_openapi::api::policy::v1::PodDisruptionBudget>::namespaced(client.clone(), ns),
        from_uid,
        to,
    )
    .await
}
