//! The `ClusterInstallation` controller: keeps a legacy installation running as the Go operator
//! did, reverts an unfinished migration, and hands `spec.migrate: true` to the state machine.

use std::sync::Arc;
use std::time::Duration;

use crate::recorder::Recorder;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::DeleteParams;
use kube::runtime::controller::{Action, Config as ControllerConfig};
use kube::runtime::events::EventType;
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use mattermost_api::v1alpha1::{ClusterInstallation, MigrationStatus};
use mattermost_api::v1beta1::Mattermost;
use tracing::warn;

use super::children::{as_mattermost, available, is_legacy, legacy_children};
use super::context::Settings;
use super::context::{CONTROLLER, Ctx, Error, REQUEUE};
use super::migration::{
    migrate, migrated_from, migration_slot, move_owners, release_finalizer, step, under_way,
};
use super::report::{event, set_kstatus, set_reconciled, write_status};
use crate::apply;
use crate::observe;
use crate::rollout_cap::Slot;
use kube::runtime::reflector::ObjectRef;

/// The queue key of a `ClusterInstallation` in the workqueue metrics.
fn queue_key(namespace: Option<&str>, name: &str) -> String {
    format!("{}/{name}", namespace.unwrap_or_default())
}

/// Entry point for the controller: one reconcile, measured.
async fn reconcile(ci: Arc<ClusterInstallation>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let key = queue_key(ci.namespace().as_deref(), &ci.name_any());
    let timer = ctx.metrics.reconcile_started(CONTROLLER, &key);
    let result = reconcile_inner(ci, &ctx).await;
    timer.finish(crate::metrics::ReconcileOutcome::of(&result, Error::reason));
    result
}

#[tracing::instrument(skip_all, fields(controller = CONTROLLER, object = %ci.name_any(), namespace = ci.namespace().unwrap_or_default()))]
async fn reconcile_inner(ci: Arc<ClusterInstallation>, ctx: &Arc<Ctx>) -> Result<Action, Error> {
    let ctx = ctx.clone();
    let ns = ci.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    if ci.meta().deletion_timestamp.is_some() || !ci.spec.migrate.unwrap_or(false) {
        // Deleted or reverted: a migration's slot goes back at once.
        ctx.slots.release(&migration_slot(&ns, &ci.name_any()));
    }
    if ci.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let api: Api<ClusterInstallation> = Api::namespaced(ctx.client.clone(), &ns);
    let mut status = ci.status.clone().unwrap_or_default();
    let mm = match as_mattermost(&ci) {
        Ok(mm) => mm,
        Err(e) => {
            // Not something this operator runs (blue-green, canary, operator-managed backends).
            ctx.slots.release(&migration_slot(&ns, &ci.name_any()));
            let refused = MigrationStatus {
                status: Some(step::REFUSED.to_owned()),
                error: Some(e.to_string()),
                since: None,
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
    let observed = observe::observe(&ctx.client, &ns, &mm.spec, None).await;
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
        apply::ensure_uncached(&ctx.client, sa, &uid).await?;
    }
    apply::ensure_uncached(&ctx.client, svc, &uid).await?;
    if let Some(ing) = ing {
        apply::ensure_uncached(&ctx.client, ing, &uid).await?;
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
    apply::ensure_uncached(&ctx.client, dep, &uid).await?;
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

fn error_policy(ci: Arc<ClusterInstallation>, err: &Error, _ctx: Arc<Ctx>) -> Action {
    warn!(controller = CONTROLLER, object = %ci.name_any(), namespace = ci.namespace().unwrap_or_default(), reason = err.reason(), error = %err, "legacy reconcile failed");
    Action::requeue(Duration::from_secs(10))
}

/// Runs the ClusterInstallation controller until shutdown.
pub async fn run(
    clients: crate::client::Clients,
    health: crate::watch::Health,
    namespace: Option<String>,
    settings: Settings,
    fleet: crate::fleet::Fleet,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
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
        watcher(api, crate::watch::config()).reflect(writer),
        &health,
    )
    .applied_objects()
    .inspect({
        let metrics = fleet.metrics.clone();
        move |ci| {
            if let Ok(ci) = ci {
                metrics.enqueued(CONTROLLER, queue_key(ci.namespace().as_deref(), &ci.name_any()));
            }
        }
    });
    let reporter = kube::runtime::events::Reporter {
        controller: "mattermost-operator".into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let ctx = Arc::new(Ctx {
        metrics: fleet.metrics,
        client: client.clone(),
        recorder: Recorder::new(client.clone(), reporter),
        slots: fleet.slots,
        capacity: fleet.capacity,
        step_deadline: settings.step_deadline,
    });
    let seeding = tokio::spawn({
        let (store, slots) = (store.clone(), ctx.slots.clone());
        async move {
            crate::watch::wait_synced(&store).await;
            slots.seed(under_way(store.state().iter().map(|ci| &**ci)));
        }
    });
    let counting = tokio::spawn(count_migrations(store.clone(), ctx.clone(), namespace.clone()));
    let scope = namespace.clone();
    let woken_metrics = ctx.metrics.clone();
    let woken = ctx.slots.woken(move |slot| match slot {
        Slot::Migration { namespace, name } if scope.as_ref().is_none_or(|s| *s == namespace) => {
            woken_metrics.enqueued(CONTROLLER, queue_key(Some(&namespace), &name));
            Some(ObjectRef::<ClusterInstallation>::new(&name).within(&namespace))
        }
        _ => None,
    });
    Controller::for_stream(stream, store)
        .reconcile_on(woken)
        .trigger_backoff(crate::watch::backoff())
        .with_config(ControllerConfig::default().concurrency(settings.concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
    counting.abort();
    seeding.abort();
}

/// The migrations-by-step gauge, from the cache every 10 s (a deleted `ClusterInstallation`
/// leaves the cache, so a finished migration drops out on its own); and the slots of migrations
/// whose `ClusterInstallation` is gone or no longer migrating go back.
async fn count_migrations(
    store: kube::runtime::reflector::Store<ClusterInstallation>,
    ctx: Arc<Ctx>,
    namespace: Option<String>,
) {
    let metrics = ctx.metrics.clone();
    loop {
        ctx.slots.release_gone(namespace.as_deref(), |slot| match slot {
            Slot::Migration { namespace, name } => store
                .get(&ObjectRef::new(name).within(namespace))
                .is_some_and(|ci| ci.spec.migrate.unwrap_or(false)),
            Slot::Rollout { .. } => true,
        });
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
        metrics.set_migrations_by_step(namespace.as_deref().unwrap_or_default(), &counts);
        // Triggered but deleted before their reconcile (other scopes' entries are theirs).
        metrics.forget_queued(CONTROLLER, |key| {
            key.split_once('/').is_none_or(|(ns, name)| {
                namespace.as_deref().is_some_and(|scope| scope != ns)
                    || store.get(&ObjectRef::new(name).within(ns)).is_some()
            })
        });
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}
