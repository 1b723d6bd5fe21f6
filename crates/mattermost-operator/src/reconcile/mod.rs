//! The `Mattermost` reconcile: observe → pure build → apply → pure status → one status write.
//!
//! One stage per file: [`context`] (what every reconcile shares), [`children`] (build and apply
//! the children), [`upgrade`] (the gate an image change passes, the rollout cap), [`jobs`] (the
//! gate of the backup, update and verification Jobs), [`verify`] (after the rollout), `status`
//! (pure, crate level) and [`events`]; [`retry`] decides when to come back.

mod children;
mod context;
mod events;
mod jobs;
mod outcome;
mod pace;
mod retry;
mod upgrade;
mod verify;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, Client, Resource, ResourceExt};
use mattermost_api::v1beta1::{Mattermost, MattermostStatus, RunningState};
use serde_json::json;
use tracing::{instrument, warn};

pub use context::UpdateJobSettings;
pub use context::{Context, Stores};
pub use pace::{Pace, Published};
pub use retry::{Backoff, Resync, jittered, retry_delay};
pub use upgrade::under_way;

use crate::apply::FIELD_MANAGER;
use crate::cache::Cached;
use crate::desired::names::Names;
use crate::metrics::ReconcileOutcome;
use crate::observe::{self, ConfigError};
use crate::status::{self, Failure, Gate, Observation};
use children::apply_children;
use context::{cached, cached_of};
use events::publish_events;
use outcome::ChildrenOutcome;
use upgrade::track_rollout;
/// Controller name in metrics and logs.
pub const CONTROLLER: &str = "mattermost";
const REQUEUE_PROGRESS: Duration = Duration::from_secs(10);
/// Retry delay while the child caches are still loading (right after start or a leader change).
const CACHES_SYNCING: Duration = Duration::from_millis(500);
const REQUEUE_BLOCKED: Duration = Duration::from_secs(300);

/// Errors that end a reconcile early and are retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object has no namespace or uid (never happens for a stored object).
    #[error("object without {0}")]
    MissingMetadata(&'static str),
    /// The cached object does not decode (a bug: the cache encoded it; logged by the cache).
    #[error("the cached object does not decode")]
    Undecodable,
    /// Reading a dependency failed.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Writing the status failed.
    #[error("writing status: {}", crate::redact::api_message(.0))]
    Status(#[source] Box<kube::Error>),
    /// Handing children back during a migration revert failed.
    #[error("migration revert: {0}")]
    Migration(String),
}

impl Error {
    /// Stable reason for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::MissingMetadata(_) | Error::Undecodable => "InternalError",
            Error::Config(e) => e.reason(),
            Error::Status(_) => "StatusWriteFailed",
            Error::Migration(_) => "MigrationRevertFailed",
        }
    }
}

/// Entry point for the controller.
pub async fn reconcile(cached: Arc<Cached<Mattermost>>, ctx: Arc<Context>) -> Result<Action, Error> {
    let key = format!("{}/{}", cached.namespace().unwrap_or_default(), cached.name_any());
    let timer = ctx.metrics.reconcile_started(CONTROLLER, &key);
    let result = match cached.object() {
        Some(mut mm) => {
            // Our last status write, when the cache has not shown it yet: every stage reads it.
            if let Some(status) = mm
                .uid()
                .and_then(|uid| ctx.written.ahead_of_cache(&uid, mm.resource_version().as_deref()))
            {
                mm.status = Some(status);
            }
            reconcile_inner(&mm, &ctx).await
        }
        None => Err(Error::Undecodable),
    };
    timer.finish(ReconcileOutcome::of(&result, Error::reason));
    result
}

/// Transient failures: retry with a growing delay (see [`Backoff`]).
pub fn error_policy(mm: Arc<Cached<Mattermost>>, err: &Error, ctx: Arc<Context>) -> Action {
    warn!(controller = CONTROLLER, object = %mm.name_any(), namespace = mm.namespace().unwrap_or_default(), reason = err.reason(), error = %err, "reconcile failed");
    Action::requeue(ctx.backoff.next(&mm.uid().unwrap_or_else(|| mm.name_any())))
}

#[instrument(skip_all, fields(controller = CONTROLLER, object = %mm.name_any(), namespace = mm.namespace().unwrap_or_default()))]
async fn reconcile_inner(mm: &Mattermost, ctx: &Context) -> Result<Action, Error> {
    if !*ctx.synced.borrow() {
        return Ok(Action::requeue(CACHES_SYNCING));
    }
    if mm.meta().deletion_timestamp.is_some() {
        if mm
            .finalizers()
            .iter()
            .any(|f| f == crate::legacy::MIGRATION_FINALIZER)
        {
            crate::legacy::revert_on_delete(&ctx.client, mm)
                .await
                .map_err(|e| Error::Migration(e.to_string()))?;
        }
        return Ok(Action::await_change());
    }
    let ns = mm.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let uid = mm.uid().ok_or(Error::MissingMetadata("uid"))?;
    let names = Names::of(mm);
    let generation = mm.metadata.generation;
    let memo_key = observe::memo_key(&mm.spec);
    let observed = match ctx.observed.get(&uid, memo_key) {
        Some(o) => o,
        None => {
            let epoch = ctx.observed.epoch(&uid);
            let o = observe::observe(&ctx.client, &ns, &mm.spec, Some(&ctx.secret_reads)).await;
            ctx.observed.keep(&uid, memo_key, epoch, &mm.spec, &o);
            o
        }
    };
    if let Some(e) = observed.first_error().filter(|e| e.is_transient()) {
        return Err(Error::Config(e.clone()));
    }

    let mut outcome = ChildrenOutcome::default();
    let mut failure = None;
    if observed.first_error().is_none()
        && let Err(e) = apply_children(mm, ctx, &names, &uid, &observed.inputs, &mut outcome).await
    {
        let message = observed.secrets.scrub(&e.to_string());
        warn!(reason = e.reason(), error = %message, "applying children failed");
        failure = Some(Failure {
            reason: e.reason(),
            message,
        });
    }
    let monitoring = crate::monitoring::reconcile(&ctx.client, mm, &names, &uid).await;

    let deployment = outcome
        .deployment
        .clone()
        .or_else(|| cached(&ctx.stores.deployments, &names.app, &ns));
    let job_server = mm.spec.dedicated_job_server().then(|| {
        outcome
            .job_server
            .clone()
            .or_else(|| cached(&ctx.stores.deployments, &names.job_server, &ns))
    });
    let replica_sets: Vec<ReplicaSet> = cached_of(&ctx.stores.replica_sets, &ns, &names.app);
    if failure.is_none()
        && observed.first_error().is_none()
        && let Err(e) = verify::verify_and_clean_up(
            ctx,
            mm,
            &names,
            &uid,
            deployment.as_ref(),
            &replica_sets,
            &mut outcome,
        )
        .await
    {
        let message = observed.secrets.scrub(&e.to_string());
        warn!(reason = e.reason(), error = %message, "verifying the rollout failed");
        failure = Some(Failure {
            reason: e.reason(),
            message,
        });
    }
    let failure = failure
        .or_else(|| outcome.scale_blocked.clone())
        .or_else(|| outcome.job_pod_problem.clone());
    let pods: Vec<Pod> = cached_of(&ctx.stores.pods, &ns, &names.app);
    let service = cached(&ctx.stores.services, &names.app, &ns);
    let ingress = cached(&ctx.stores.ingresses, &names.app, &ns);
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let mut new_status = status::compute(
        &Observation {
            mm,
            checks: &observed.checks,
            failure: failure.as_ref(),
            gate: &outcome.gate,
            deployment: deployment.as_ref(),
            replica_sets: &replica_sets,
            pods: &pods,
            job_server: job_server.as_ref().map(Option::as_ref),
            service: service.as_ref(),
            ingress: ingress
                .as_ref()
                .filter(|_| mm.spec.ingress_enabled() || mm.spec.alb_enabled()),
            resource_patch: outcome.resource_patch.clone(),
            rolled_back_from: outcome.rolled_back_from.clone(),
            verification: outcome.verification.as_ref(),
            last_backup: outcome.last_backup.as_ref(),
            missing: &outcome.missing,
        },
        mm.status.as_ref(),
        &now,
    );
    crate::monitoring::set_condition(&mut new_status.conditions, &monitoring, generation, &now);
    // Text from pods and the API may carry credentials; the Secret values are known only now.
    observed.secrets.scrub_status(&mut new_status);
    publish_events(ctx, mm, mm.status.as_ref(), &new_status, &outcome).await;
    track_rollout(ctx, &names, &new_status, &outcome.gate);
    let mut progress_wait = None;
    if mm.status.as_ref() != Some(&new_status) {
        progress_wait = ctx.status_pace.hold(&uid, mm.status.as_ref(), &new_status);
        if progress_wait.is_none() {
            write_status(&ctx.client, mm, &ns, &new_status).await?;
            ctx.status_pace.wrote(&uid);
            ctx.written
                .wrote(&uid, mm.resource_version().as_deref(), &new_status);
        }
    }

    let state = new_status.state.as_deref().and_then(RunningState::parse);
    if failure.is_some() {
        return Ok(Action::requeue(ctx.backoff.next(&uid)));
    }
    ctx.backoff.reset(&uid);
    if let Some(wait) = progress_wait {
        return Ok(Action::requeue(wait));
    }
    Ok(match state {
        Some(RunningState::Stable) => ctx.resync.action(),
        _ if matches!(outcome.gate, Gate::Waiting) => Action::requeue(ctx.slots.retry_after),
        _ if matches!(outcome.gate, Gate::Blocked { .. }) => Action::requeue(Duration::from_secs(30)),
        _ if observed.first_error().is_some() || matches!(outcome.gate, Gate::Failed { .. }) => {
            Action::requeue(REQUEUE_BLOCKED)
        }
        _ => Action::requeue(REQUEUE_PROGRESS),
    })
}

async fn write_status(
    client: &Client,
    mm: &Mattermost,
    ns: &str,
    status: &MattermostStatus,
) -> Result<(), Error> {
    let api: Api<Mattermost> = Api::namespaced(client.clone(), ns);
    let body = json!({
        "apiVersion": Mattermost::api_version(&()),
        "kind": Mattermost::kind(&()),
        "status": status,
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch_status(&mm.name_any(), &params, &Patch::Apply(&body))
        .await
        .map(|_| ())
        .map_err(|e| Error::Status(Box::new(e)))
}
