//! The legacy `ClusterInstallation` (v1alpha1): keeps existing installations running (Service,
//! Ingress, ServiceAccount, Deployment with the v1alpha1 labels and selector) and migrates them to
//! `Mattermost` when `spec.migrate: true`, with zero downtime.
//!
//! Migration is a resumable state machine recorded in `status.migration.status`; every step is
//! derived from what exists, so an operator restart at any point resumes it:
//! orphan-delete the old Deployment (its ReplicaSet keeps serving) → create the new Deployment
//! (same name, v1beta1 selector) → wait until its pods are Ready → create the `Mattermost` and hand
//! it every child (owner references, secrets included, so garbage collection deletes nothing) →
//! wait until it is `stable` (its Service now selects the new pods) → delete the old ReplicaSets
//! and the `ClusterInstallation`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::runtime::controller::{Action, Config as ControllerConfig};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use mattermost_api::v1alpha1::{ClusterInstallation, ClusterInstallationStatus, MigrationStatus};
use mattermost_api::v1beta1::Mattermost;
use serde_json::json;
use tracing::{info, warn};

use crate::apply::{self, FIELD_MANAGER};
use crate::convert::convert;
use crate::desired::labels::{INSTALLATION_LABEL, RESOURCE_LABEL};
use crate::desired::names::Names;
use crate::desired::{self, Inputs};
use crate::observe;
use crate::reconcile::RolloutSlots;

/// v1alpha1 label naming the installation.
pub const LEGACY_INSTALLATION_LABEL: &str = "v1alpha1.mattermost.com/installation";
/// v1alpha1 label naming the resource.
pub const LEGACY_RESOURCE_LABEL: &str = "v1alpha1.mattermost.com/resource";
const REQUEUE: Duration = Duration::from_secs(5);
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

fn migrated_from(mm: &Mattermost) -> Option<&str> {
    mm.annotations().get(MIGRATED_FROM).map(String::as_str)
}

/// Migration steps, as recorded in `status.migration.status`.
pub mod step {
    /// The old Deployment is being deleted with orphan propagation.
    pub const ORPHANING: &str = "OrphaningDeployment";
    /// The new Deployment's pods are starting.
    pub const NEW_DEPLOYMENT: &str = "WaitingForNewPods";
    /// The `Mattermost` exists and takes over.
    pub const HANDOVER: &str = "WaitingForMattermost";
    /// Old ReplicaSets and the `ClusterInstallation` are being deleted.
    pub const CLEANUP: &str = "CleaningUp";
    /// Refused; see `migration.error`.
    pub const REFUSED: &str = "Refused";
    /// Waiting for a slot under `MAX_RECONCILING_INSTALLATIONS`.
    pub const WAITING: &str = "WaitingForSlot";
    /// Every step, for the `step` label of `mattermost_operator_migrations`.
    pub const ALL: &[&str] = &[WAITING, ORPHANING, NEW_DEPLOYMENT, HANDOVER, CLEANUP, REFUSED];
}

/// Name of this controller in metrics (`controller` label).
pub const CONTROLLER: &str = "clusterinstallation";

/// Errors of the legacy controller; retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error("{0}")]
    Kube(#[from] kube::Error),
    /// Applying a child failed.
    #[error(transparent)]
    Apply(#[from] apply::ApplyError),
    /// The object has no namespace/uid.
    #[error("object without {0}")]
    MissingMetadata(&'static str),
}

impl Error {
    /// Stable reason, as in metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(_) => "KubeApiError",
            Error::Apply(e) => e.reason(),
            Error::MissingMetadata(_) => "InternalError",
        }
    }
}

struct Ctx {
    metrics: Arc<crate::metrics::Metrics>,
    client: Client,
    recorder: Recorder,
    slots: Arc<RolloutSlots>,
}

/// Rewrites the v1beta1 label keys to the v1alpha1 ones (selectors included).
fn relabel(labels: &mut BTreeMap<String, String>) {
    for (from, to) in [
        (INSTALLATION_LABEL, LEGACY_INSTALLATION_LABEL),
        (RESOURCE_LABEL, LEGACY_RESOURCE_LABEL),
    ] {
        if let Some(v) = labels.remove(from) {
            labels.insert(to.to_owned(), v);
        }
    }
}

fn ci_owner(ci: &ClusterInstallation) -> Option<Vec<OwnerReference>> {
    ci.controller_owner_ref(&()).map(|r| vec![r])
}

/// The `Mattermost` equivalent of `ci` (same name, namespace and uid, for building children).
fn as_mattermost(ci: &ClusterInstallation) -> Result<Mattermost, crate::convert::ConversionError> {
    let mut mm = Mattermost::new(&ci.name_any(), convert(&ci.spec)?);
    mm.metadata.namespace = ci.namespace();
    mm.metadata.uid = ci.uid();
    Ok(mm)
}

/// The legacy children: Service, ServiceAccount, Ingress, Deployment with v1alpha1 labels.
fn legacy_children(
    ci: &ClusterInstallation,
    mm: &Mattermost,
    inputs: &Inputs,
) -> (Service, Option<ServiceAccount>, Option<Ingress>, Deployment) {
    let names = Names::of(mm);
    let owner = ci_owner(ci);
    let mut svc = desired::service::app_service(mm, &names);
    let mut sa = desired::service_account::service_account(mm, &names);
    let mut ing = desired::ingress::ingress(mm, &names);
    let mut dep = desired::deployment::deployment(mm, &names, inputs);
    for meta in [&mut svc.metadata, &mut dep.metadata]
        .into_iter()
        .chain(sa.as_mut().map(|s| &mut s.metadata))
        .chain(ing.as_mut().map(|i| &mut i.metadata))
    {
        meta.owner_references = owner.clone();
        if let Some(l) = meta.labels.as_mut() {
            relabel(l);
        }
    }
    if let Some(sel) = svc.spec.as_mut().and_then(|s| s.selector.as_mut()) {
        relabel(sel);
    }
    if let Some(spec) = dep.spec.as_mut() {
        if let Some(l) = spec.selector.match_labels.as_mut() {
            relabel(l);
        }
        if let Some(l) = spec.template.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
            relabel(l);
        }
        if let Some(p) = spec.template.spec.as_mut() {
            p.topology_spread_constraints = None;
        }
    }
    (svc, sa, ing, dep)
}

/// The `Reconciled` condition (transition time kept unless the status flips).
fn set_reconciled(
    status: &mut ClusterInstallationStatus,
    generation: Option<i64>,
    result: Result<(), (&str, String)>,
) {
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
    let c = match result {
        Ok(()) => {
            crate::status::conditions::condition("Reconciled", true, "Reconciled", "", generation, &now)
        }
        Err((reason, message)) => {
            crate::status::conditions::condition("Reconciled", false, reason, message, generation, &now)
        }
    };
    crate::status::conditions::upsert(&mut status.conditions, c);
}

/// kstatus' `Reconciling`/`Stalled` pair (see `status::conditions::set_kstatus`).
fn set_kstatus(
    status: &mut ClusterInstallationStatus,
    generation: Option<i64>,
    reconciling: Option<(&str, String)>,
    stalled: Option<(&str, String)>,
) {
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
    crate::status::conditions::set_kstatus(&mut status.conditions, reconciling, stalled, generation, &now);
}

fn is_legacy(dep: &Deployment) -> bool {
    let sel = dep.spec.as_ref().and_then(|s| s.selector.match_labels.as_ref());
    sel.is_some_and(|l| l.contains_key(LEGACY_INSTALLATION_LABEL))
}

fn available(dep: &Deployment) -> i32 {
    dep.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

async fn write_status(
    api: &Api<ClusterInstallation>,
    ci: &ClusterInstallation,
    status: ClusterInstallationStatus,
) -> Result<(), Error> {
    if ci.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let body =
        json!({"apiVersion": "mattermost.com/v1alpha1", "kind": "ClusterInstallation", "status": status});
    api.patch_status(
        &ci.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    Ok(())
}

async fn event(ctx: &Ctx, ci: &ClusterInstallation, type_: EventType, reason: &str, note: String) {
    let ev = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: "Migrate".to_owned(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &ci.object_ref(&())).await {
        warn!(error = %e, "publishing event failed");
    }
}

/// Entry point for the controller: one reconcile, measured.
async fn reconcile(ci: Arc<ClusterInstallation>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let timer = ctx.metrics.reconcile_started(CONTROLLER);
    let result = reconcile_inner(ci, &ctx).await;
    timer.finish(crate::metrics::ReconcileOutcome::of(&result, Error::reason));
    result
}

#[tracing::instrument(skip_all, fields(name = %ci.name_any(), namespace = ci.namespace().unwrap_or_default()))]
async fn reconcile_inner(ci: Arc<ClusterInstallation>, ctx: &Arc<Ctx>) -> Result<Action, Error> {
    let ctx = ctx.clone();
    if ci.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = ci.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let api: Api<ClusterInstallation> = Api::namespaced(ctx.client.clone(), &ns);
    let mut status = ci.status.clone().unwrap_or_default();
    let mm = match as_mattermost(&ci) {
        Ok(mm) => mm,
        Err(e) => {
            // Not something this operator runs (blue-green, canary, operator-managed backends).
            let refused = MigrationStatus {
                status: Some(step::REFUSED.to_owned()),
                error: Some(e.to_string()),
            };
            if ci.spec.migrate.unwrap_or(false) && status.migration.as_ref() != Some(&refused) {
                event(&ctx, &ci, EventType::Warning, "MigrationRefused", e.to_string()).await;
            }
            status.migration = ci.spec.migrate.unwrap_or(false).then_some(refused);
            status.state = Some("reconciling".to_owned());
            set_reconciled(
                &mut status,
                ci.metadata.generation,
                Err(("NotSupported", e.to_string())),
            );
            set_kstatus(
                &mut status,
                ci.metadata.generation,
                None,
                Some(("NotSupported", e.to_string())),
            );
            write_status(&api, &ci, status).await?;
            return Ok(Action::await_change());
        }
    };
    let observed = observe::observe(&ctx.client, &ns, &mm.spec).await;
    if ci.spec.migrate.unwrap_or(false) {
        return migrate(&ci, &mm, &observed.inputs, &ctx, &api, status).await;
    }
    if let Some(e) = observed.first_error() {
        status.state = Some("reconciling".to_owned());
        status.migration = None;
        set_reconciled(
            &mut status,
            ci.metadata.generation,
            Err((e.reason(), e.to_string())),
        );
        set_kstatus(
            &mut status,
            ci.metadata.generation,
            None,
            Some((e.reason(), e.to_string())),
        );
        warn!(error = %e, "legacy installation not reconciled");
        write_status(&api, &ci, status).await?;
        return Ok(Action::requeue(Duration::from_secs(60)));
    }
    let uid = ci.uid().ok_or(Error::MissingMetadata("uid"))?;
    // Revert of an unfinished migration: take every child back from the Mattermost this
    // migration created before deleting it, so garbage collection removes nothing that serves.
    let mms: Api<Mattermost> = Api::namespaced(ctx.client.clone(), &ns);
    if let Some(created) = mms
        .get_opt(&ci.name_any())
        .await?
        .filter(|m| migrated_from(m) == Some(uid.as_str()))
    {
        if let (Some(mm_uid), Some(ci_ref)) = (created.uid(), ci.controller_owner_ref(&())) {
            move_owners(&ctx.client, &ns, &mm_uid, &ci_ref).await?;
        }
        release_finalizer(&ctx.client, &created).await?;
        mms.delete(&ci.name_any(), &DeleteParams::background()).await?;
        event(
            &ctx,
            &ci,
            EventType::Normal,
            "MigrationReverted",
            "the Mattermost created by the migration was removed".to_owned(),
        )
        .await;
    }
    let (svc, sa, ing, dep) = legacy_children(&ci, &mm, &observed.inputs);
    if let Some(sa) = sa {
        apply::ensure(&ctx.client, None, sa, &uid).await?;
    }
    apply::ensure(&ctx.client, None, svc, &uid).await?;
    if let Some(ing) = ing {
        apply::ensure(&ctx.client, None, ing, &uid).await?;
    }
    let live = Api::<Deployment>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&ci.name_any())
        .await?;
    if let Some(d) = live.filter(|d| !is_legacy(d)) {
        // The new Deployment of a reverted migration: the Service selects the old pods again, so
        // it can go; the legacy Deployment then re-adopts the orphaned ReplicaSet.
        if d.meta().deletion_timestamp.is_none() && apply::is_owned_by(&d, &uid) {
            Api::<Deployment>::namespaced(ctx.client.clone(), &ns)
                .delete(&d.name_any(), &DeleteParams::background())
                .await?;
        }
        return Ok(Action::requeue(REQUEUE));
    }
    apply::ensure(&ctx.client, None, dep, &uid).await?;
    let live = Api::<Deployment>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&ci.name_any())
        .await?;
    let want = mm.spec.effective_replicas();
    let ready = live.as_ref().map(available).unwrap_or(0);
    status.state = Some(if ready == want { "stable" } else { "reconciling" }.to_owned());
    status.replicas = live.as_ref().and_then(|d| d.status.as_ref()?.replicas);
    status.updated_replicas = live.as_ref().and_then(|d| d.status.as_ref()?.updated_replicas);
    status.image = Some(mm.spec.image().to_owned());
    status.version = Some(mm.spec.version().to_owned());
    status.endpoint = Some(mm.spec.ingress_host().unwrap_or("not available").to_owned());
    status.migration = None;
    crate::status::conditions::remove(&mut status.conditions, "Migrating");
    set_reconciled(&mut status, ci.metadata.generation, Ok(()));
    let rolling = (ready != want).then(|| ("RollingOut", format!("{ready}/{want} pods available")));
    set_kstatus(&mut status, ci.metadata.generation, rolling, None);
    tracing::debug!(ready, want, "legacy installation reconciled");
    write_status(&api, &ci, status).await?;
    Ok(if ready == want {
        Action::requeue(Duration::from_secs(300))
    } else {
        Action::requeue(REQUEUE)
    })
}

/// One pass of the migration state machine.
async fn migrate(
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
    let set_step = |status: &mut ClusterInstallationStatus, step: &str| {
        status.migration = Some(MigrationStatus {
            status: Some(step.to_owned()),
            error: None,
        });
    };
    let before = status.migration.as_ref().and_then(|m| m.status.clone());
    // Migrations share the rollout cap; one already under way (e.g. before a restart) keeps going.
    let slot = format!("migration:{ns}/{name}");
    let under_way = before
        .as_deref()
        .is_some_and(|s| s != step::WAITING && s != step::REFUSED);
    if !ctx.slots.acquire(&slot, under_way) {
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
    if before.as_deref() != Some(step) {
        info!(name, step, "migration step");
        event(ctx, ci, EventType::Normal, "MigrationStep", step.to_owned()).await;
    }
    set_step(&mut status, step);
    status.state = Some("reconciling".to_owned());
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
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
    set_kstatus(&mut status, ci.metadata.generation, Some((step, msg)), None);
    write_status(api, ci, status).await?;
    Ok(Action::requeue(REQUEUE))
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
    async fn move_kind<K>(api: Api<K>, from_uid: &str, to: &OwnerReference) -> Result<(), Error>
    where
        K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        for obj in api.list(&ListParams::default()).await?.items {
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
            api.patch(&obj.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
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

fn error_policy(ci: Arc<ClusterInstallation>, err: &Error, _ctx: Arc<Ctx>) -> Action {
    warn!(name = %ci.name_any(), namespace = ci.namespace().unwrap_or_default(), reason = err.reason(), error = %err, "legacy reconcile failed");
    Action::requeue(Duration::from_secs(10))
}

/// Runs the ClusterInstallation controller until shutdown.
pub async fn run(
    clients: crate::client::Clients,
    health: crate::watch::Health,
    namespace: Option<String>,
    concurrency: u16,
    slots: Arc<RolloutSlots>,
    metrics: Arc<crate::metrics::Metrics>,
    shutdown: crate::controller::Shutdown,
) {
    let client = clients.requests;
    let api: Api<ClusterInstallation> = match &namespace {
        Some(ns) => Api::namespaced(clients.watches.clone(), ns),
        None => Api::all(clients.watches.clone()),
    };
    let name = match &namespace {
        Some(ns) => format!("ClusterInstallation in {ns}"),
        None => "ClusterInstallation in all namespaces".to_owned(),
    };
    let (store, writer) = kube::runtime::reflector::store();
    let stream = crate::watch::guarded(
        name,
        watcher(api, watcher::Config::default().any_semantic()).reflect(writer),
        &health,
    )
    .applied_objects();
    let reporter = kube::runtime::events::Reporter {
        controller: "mattermost-operator".into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let ctx = Arc::new(Ctx {
        metrics,
        client: client.clone(),
        recorder: Recorder::new(client.clone(), reporter),
        slots,
    });
    let counting = tokio::spawn(count_migrations(store.clone(), ctx.metrics.clone()));
    Controller::for_stream(stream, store)
        .trigger_backoff(crate::watch::backoff())
        .with_config(ControllerConfig::default().concurrency(concurrency))
        .graceful_shutdown_on(shutdown.wait())
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
    counting.abort();
}

/// The migrations-by-step gauge, from the cache every 10 s (a deleted `ClusterInstallation`
/// leaves the cache, so a finished migration drops out on its own).
async fn count_migrations(
    store: kube::runtime::reflector::Store<ClusterInstallation>,
    metrics: Arc<crate::metrics::Metrics>,
) {
    loop {
        let mut counts: Vec<(String, i64)> = Vec::new();
        for ci in store.state() {
            let Some(step) = ci
                .status
                .as_ref()
                .and_then(|s| s.migration.as_ref())
                .and_then(|m| m.status.clone())
            else {
                continue;
            };
            match counts.iter_mut().find(|(s, _)| *s == step) {
                Some((_, n)) => *n += 1,
                None => counts.push((step, 1)),
            }
        }
        metrics.set_migrations_by_step(&counts);
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}
