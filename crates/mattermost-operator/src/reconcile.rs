//! The `Mattermost` reconcile: observe → pure build → apply → pure status → one status write.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, Patch, PatchParams, PropagationPolicy};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, Resource, ResourceExt};
use mattermost_api::v1beta1::{Mattermost, MattermostStatus, RunningState, image_reference};
use serde_json::json;
use tracing::{info, instrument, warn};

use crate::apply::{self, Applied, ApplyError, FIELD_MANAGER};
use crate::desired::labels::{APP_UPDATE_JOB, INSTALLATION_LABEL};
use crate::desired::names::{MAIN_CONTAINER, Names};
use crate::desired::{self, Inputs, patch::apply_json_patch};
use crate::metrics::{Metrics, ReconcileOutcome};
use crate::observe::{self, ConfigError};
use crate::preflight;
use crate::status::conditions::find;
use crate::status::{self, DEGRADED, Failure, Gate, Observation, READY, UPDATE_JOB};

/// Controller name in metrics and logs.
pub const CONTROLLER: &str = "mattermost";
const REQUEUE_PROGRESS: Duration = Duration::from_secs(10);
/// Retry delay while the child caches are still loading (right after start or a leader change).
const CACHES_SYNCING: Duration = Duration::from_millis(500);
const REQUEUE_BLOCKED: Duration = Duration::from_secs(300);

/// Caches of the children, filled by label-selected watches (see `controller`).
#[derive(Clone)]
pub struct Stores {
    /// Deployments of installations.
    pub deployments: Store<Deployment>,
    /// ReplicaSets of installations (for rollout progress).
    pub replica_sets: Store<ReplicaSet>,
    /// Services of installations.
    pub services: Store<Service>,
    /// Ingresses of installations.
    pub ingresses: Store<Ingress>,
    /// ServiceAccounts of installations.
    pub service_accounts: Store<ServiceAccount>,
    /// Update Jobs of installations.
    pub jobs: Store<Job>,
    /// Volume claims of installations.
    pub pvcs: Store<PersistentVolumeClaim>,
    /// Disruption budgets of installations.
    pub pdbs: Store<PodDisruptionBudget>,
    /// Pods of installations (why new pods do not run; failed update-Job pods).
    pub pods: Store<Pod>,
}

/// The cluster-wide cap on installations rolling out a new image at once. Only rollouts hold a
/// slot; a slot is given back when the installation is stable or blocked, so broken installations
/// never starve the others.
pub struct RolloutSlots {
    max: usize,
    /// How long a waiting installation waits before asking again.
    pub retry_after: Duration,
    held: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
}

impl RolloutSlots {
    /// At most `max` rollouts at once (0 = no limit).
    pub fn new(max: usize, retry_after: Duration) -> Self {
        Self {
            max,
            retry_after,
            held: Default::default(),
        }
    }

    /// Takes (or keeps) a slot for `key`; `force` takes one even when full (a rollout that was
    /// already under way when the operator restarted).
    pub fn acquire(&self, key: &str, force: bool) -> bool {
        let Ok(mut held) = self.held.lock() else {
            return true;
        };
        if held.contains_key(key) {
            return true;
        }
        if force || self.max == 0 || held.len() < self.max {
            held.insert(key.to_owned(), std::time::Instant::now());
            return true;
        }
        false
    }

    /// Gives the slot back; returns how long it was held.
    pub fn release(&self, key: &str) -> Option<Duration> {
        self.held.lock().ok()?.remove(key).map(|t| t.elapsed())
    }

    /// Rollouts in progress.
    pub fn in_use(&self) -> usize {
        self.held.lock().map(|h| h.len()).unwrap_or(0)
    }
}

/// Settings of the update Job.
#[derive(Debug, Clone, Copy)]
pub struct UpdateJobSettings {
    /// Pod retries before the Job fails.
    pub backoff_limit: i32,
    /// Seconds before a running Job is failed.
    pub active_deadline_seconds: i64,
}

impl Default for UpdateJobSettings {
    fn default() -> Self {
        Self {
            backoff_limit: 2,
            active_deadline_seconds: 600,
        }
    }
}

/// Shared state of every reconcile.
pub struct Context {
    /// True once every child cache of this watch scope has its initial list.
    pub synced: tokio::sync::watch::Receiver<bool>,
    /// API client.
    pub client: Client,
    /// Child caches.
    pub stores: Stores,
    /// Event recorder.
    pub recorder: Recorder,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Update Job settings.
    pub update_job: UpdateJobSettings,
    /// Rollout cap.
    pub slots: Arc<RolloutSlots>,
    /// Installations whose upgrade is blocked or failed, with the blocking reason (for the metrics).
    pub blocked: std::sync::Mutex<std::collections::HashMap<String, String>>,
    /// Whether the capacity preflight may list Nodes; without it the check is skipped and the
    /// RolloutStarted event says so.
    pub capacity_check: bool,
    /// Retry delays of failing installations.
    pub backoff: Backoff,
    /// When stable installations are reconciled again without a trigger.
    pub resync: Resync,
    /// What was read from referenced Secrets, per installation.
    pub observed: observe::Memo,
}

/// The periodic resync of stable installations: a safety net for a missed event. A resync
/// reconciles from the caches (and [`observe::Memo`]), so when nothing drifted it sends no request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Resync(Option<Duration>);

impl Resync {
    /// Every `period` (plus jitter); zero turns it off.
    pub fn every(period: Duration) -> Self {
        Self((!period.is_zero()).then_some(period))
    }

    /// What a stable installation waits for: the next resync, or only a change when off.
    pub fn action(&self) -> Action {
        match self.0 {
            Some(period) => Action::requeue(jittered(period, random())),
            None => Action::await_change(),
        }
    }
}

/// `period` plus up to 10 % of it, picked by `random`, so a fleet does not resync in lockstep.
pub fn jittered(period: Duration, random: u64) -> Duration {
    let per_mille = u32::try_from(random % 101).unwrap_or(0);
    period + period * per_mille / 1000
}

/// A random number from the standard library's per-process hash keys (no RNG crate needed).
fn random() -> u64 {
    use std::hash::BuildHasher;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    std::hash::RandomState::new().hash_one(nanos)
}

/// Per-installation retry delays for failures: 5 s doubling up to 5 min, with jitter so a fleet
/// does not retry in lockstep; reset by a reconcile without failure.
#[derive(Debug, Default)]
pub struct Backoff(std::sync::Mutex<std::collections::HashMap<String, u32>>);

impl Backoff {
    /// The delay before the next attempt for `key`, counting this failure.
    pub fn next(&self, key: &str) -> Duration {
        let attempt = match self.0.lock() {
            Ok(mut m) => {
                let n = m.entry(key.to_owned()).or_insert(0);
                *n = n.saturating_add(1);
                *n
            }
            Err(_) => 1,
        };
        retry_delay(attempt, key)
    }

    /// Forgets the failures of `key`.
    pub fn reset(&self, key: &str) {
        if let Ok(mut m) = self.0.lock() {
            m.remove(key);
        }
    }
}

/// Delay before attempt `attempt` (1-based): 5 s · 2^(attempt-1), at most 5 min, plus up to 10 %
/// jitter derived from `seed` and the attempt.
pub fn retry_delay(attempt: u32, seed: &str) -> Duration {
    const BASE: u64 = 5;
    const MAX: u64 = 300;
    let secs = BASE
        .saturating_mul(1u64 << attempt.saturating_sub(1).min(16))
        .min(MAX);
    let hash =
        u64::from_str_radix(&desired::names::short_hash(&format!("{seed}/{attempt}")), 16).unwrap_or(0);
    let jitter_ms = hash % (secs * 100).max(1);
    Duration::from_secs(secs) + Duration::from_millis(jitter_ms)
}

/// Errors that end a reconcile early and are retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object has no namespace or uid (never happens for a stored object).
    #[error("object without {0}")]
    MissingMetadata(&'static str),
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
            Error::MissingMetadata(_) => "InternalError",
            Error::Config(e) => e.reason(),
            Error::Status(_) => "StatusWriteFailed",
            Error::Migration(_) => "MigrationRevertFailed",
        }
    }
}

fn cached<K>(store: &Store<K>, name: &str, ns: &str) -> Option<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    store.get(&ObjectRef::new(name).within(ns)).map(|k| (*k).clone())
}

/// Entry point for the controller.
pub async fn reconcile(mm: Arc<Mattermost>, ctx: Arc<Context>) -> Result<Action, Error> {
    let timer = ctx.metrics.reconcile_started(CONTROLLER);
    let result = reconcile_inner(&mm, &ctx).await;
    timer.finish(ReconcileOutcome::of(&result, Error::reason));
    result
}

/// Transient failures: retry with a growing delay (see [`Backoff`]).
pub fn error_policy(mm: Arc<Mattermost>, err: &Error, ctx: Arc<Context>) -> Action {
    warn!(name = %mm.name_any(), namespace = mm.namespace().unwrap_or_default(), reason = err.reason(), error = %err, "reconcile failed");
    Action::requeue(ctx.backoff.next(&mm.uid().unwrap_or_else(|| mm.name_any())))
}

#[instrument(skip_all, fields(name = %mm.name_any(), namespace = mm.namespace().unwrap_or_default()))]
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
    let observed = match ctx.observed.get(&uid, generation) {
        Some(o) => o,
        None => {
            let epoch = ctx.observed.epoch(&uid);
            let o = observe::observe(&ctx.client, &ns, &mm.spec).await;
            ctx.observed.keep(&uid, generation, epoch, &mm.spec, &o);
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
    let failure = failure
        .or_else(|| outcome.scale_blocked.clone())
        .or_else(|| outcome.job_pod_problem.clone());

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
    let replica_sets: Vec<ReplicaSet> = ctx
        .stores
        .replica_sets
        .state()
        .iter()
        .filter(|rs| rs.namespace().as_deref() == Some(&ns))
        .filter(|rs| rs.labels().get(INSTALLATION_LABEL) == Some(&names.app))
        .map(|rs| (**rs).clone())
        .collect();
    let pods: Vec<Pod> = ctx
        .stores
        .pods
        .state()
        .iter()
        .filter(|p| p.namespace().as_deref() == Some(&ns))
        .filter(|p| p.labels().get(INSTALLATION_LABEL) == Some(&names.app))
        .map(|p| (**p).clone())
        .collect();
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
    if mm.status.as_ref() != Some(&new_status) {
        write_status(&ctx.client, mm, &ns, &new_status).await?;
    }

    let state = new_status.state.as_deref().and_then(RunningState::parse);
    if failure.is_some() {
        return Ok(Action::requeue(ctx.backoff.next(&uid)));
    }
    ctx.backoff.reset(&uid);
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

/// What applying the children produced, for status and events.
#[derive(Debug, Default)]
struct ChildrenOutcome {
    gate: Gate,
    deployment: Option<Deployment>,
    job_server: Option<Deployment>,
    resource_patch: Option<mattermost_api::v1beta1::ResourcePatchStatus>,
    job_created: Option<String>,
    rollout_started: bool,
    capacity_check_skipped: bool,
    rolled_back_from: Option<String>,
    rollback_started: bool,
    /// A scale-up the capacity preflight refused (the live replica count was kept).
    scale_blocked: Option<Failure>,
    /// Why the running update Job's pod does not run (unschedulable, image pull...).
    job_pod_problem: Option<Failure>,
    /// Wanted children absent from the caches or being deleted (`Kind name`).
    missing: Vec<String>,
}

/// Notes `desired` as missing when its cached counterpart is absent or being deleted.
fn note_missing<K: Resource<DynamicType = ()>>(missing: &mut Vec<String>, live: Option<&K>, desired: &K) {
    if live.is_none_or(|l| l.meta().deletion_timestamp.is_some()) {
        missing.push(format!("{} {}", K::kind(&()), desired.name_any()));
    }
}

async fn apply_children(
    mm: &Mattermost,
    ctx: &Context,
    names: &Names,
    uid: &str,
    inputs: &Inputs,
    out: &mut ChildrenOutcome,
) -> Result<(), ApplyError> {
    let client = &ctx.client;
    let ns = names.namespace.as_str();
    let s = &ctx.stores;
    let patches = mm.spec.resource_patch.as_ref();

    let missing = &mut out.missing;
    if let Some(sa) = desired::service_account::service_account(mm, names) {
        let live = cached(&s.service_accounts, &names.app, ns);
        note_missing(missing, live.as_ref(), &sa);
        apply::ensure(client, live, sa, uid).await?;
    }
    let (svc, svc_patch) = apply_json_patch(
        &desired::service::app_service(mm, names),
        patches.and_then(|p| p.service.as_ref()),
    );
    let live = cached(&s.services, &names.app, ns);
    note_missing(missing, live.as_ref(), &svc);
    apply::ensure(client, live, svc, uid).await?;
    let peers = desired::service::peer_service(mm, names);
    let live = cached(&s.services, &names.peers, ns);
    note_missing(missing, live.as_ref(), &peers);
    apply::ensure(client, live, peers, uid).await?;
    match desired::ingress::ingress(mm, names) {
        Some(ing) => {
            let live = cached(&s.ingresses, &names.app, ns);
            note_missing(missing, live.as_ref(), &ing);
            apply::ensure(client, live, ing, uid).await?;
        }
        None => {
            let live = cached(&s.ingresses, &names.app, ns);
            if live.is_some() {
                apply::delete_owned(client, ns, &names.app, live, uid, &DeleteParams::default()).await?;
            }
        }
    }
    if let Some(pvc) = desired::pvc::local_file_store(mm, names) {
        ensure_pvc(ctx, names, uid, pvc).await?;
    }

    match desired::pdb::pod_disruption_budget(mm, names) {
        Some(pdb) => {
            let live = cached(&s.pdbs, &names.app, ns);
            note_missing(&mut out.missing, live.as_ref(), &pdb);
            apply::ensure(client, live, pdb, uid).await?;
        }
        None => {
            if let Some(live) = cached(&s.pdbs, &names.app, ns) {
                apply::delete_owned(client, ns, &names.app, Some(live), uid, &DeleteParams::default())
                    .await?;
            }
        }
    }

    let (mut dep, dep_patch) = apply_json_patch(
        &desired::deployment::deployment(mm, names, inputs),
        patches.and_then(|p| p.deployment.as_ref()),
    );
    if svc_patch.is_some() || dep_patch.is_some() {
        out.resource_patch = Some(mattermost_api::v1beta1::ResourcePatchStatus {
            service_patch: svc_patch,
            deployment_patch: dep_patch,
        });
    }
    let live = cached(&s.deployments, &names.app, ns);
    note_missing(&mut out.missing, live.as_ref(), &dep);
    let live_image = live.as_ref().and_then(main_image);
    let history = StableHistory::of(mm);
    let spec_image = main_image(&dep);

    // Automatic rollback: the spec's image stopped progressing; run the last stable one instead
    // for as long as the spec asks for the failed image.
    let status = mm.status.as_ref();
    let mut rolled_back =
        spec_image.is_some() && status.and_then(|s| s.rolled_back_from.as_ref()) == spec_image.as_ref();
    if !rolled_back
        && mm.spec.automatic_rollback()
        && live.as_ref().and_then(status::deadline_exceeded).is_some()
        && live_image == spec_image
        && history.last.is_some()
        && history.last != spec_image
    {
        rolled_back = true;
        out.rollback_started = true;
    }
    if rolled_back && let Some(last) = &history.last {
        set_main_image(&mut dep, last);
        out.rolled_back_from = spec_image.clone();
    }

    let new_image = main_image(&dep);
    let image_change = live.is_some() && live_image != new_image;
    desired::deferred::defer_pod_defaults(mm, &mut dep, live.as_ref());

    out.gate = match new_image.as_deref() {
        Some(image) if image_change => {
            upgrade_gate(ctx, mm, names, uid, inputs, image, &history, rolled_back, out).await?
        }
        _ => Gate::Open,
    };
    if matches!(out.gate, Gate::Open | Gate::Passed { .. }) {
        out.scale_blocked = scale_up_preflight(ctx, mm, &mut dep, live.as_ref()).await;
        if let Applied::Written(obj) = apply::ensure(client, live, dep, uid).await? {
            out.rollout_started = image_change;
            out.deployment = obj;
        }
        if mm.spec.dedicated_job_server() {
            let mut js = desired::deployment::job_server_deployment(mm, names, inputs);
            let live = cached(&s.deployments, &names.job_server, ns);
            note_missing(&mut out.missing, live.as_ref(), &js);
            if let Some(last) = history.last.as_ref().filter(|_| rolled_back) {
                set_container_image(&mut js, desired::names::JOB_SERVER_CONTAINER, last);
            }
            desired::deferred::defer_pod_defaults(mm, &mut js, live.as_ref());
            if let Applied::Written(obj) = apply::ensure(client, live, js, uid).await? {
                out.job_server = obj;
            }
        } else if let Some(live) = cached(&s.deployments, &names.job_server, ns) {
            apply::delete_owned(
                client,
                ns,
                &names.job_server,
                Some(live),
                uid,
                &DeleteParams::default(),
            )
            .await?;
        }
    }
    cleanup_update_jobs(ctx, names, uid, &out.gate).await
}

/// A scale-up passes the same capacity preflight as an upgrade: refused, the Deployment keeps its
/// live replica count and the installation reports why.
async fn scale_up_preflight(
    ctx: &Context,
    mm: &Mattermost,
    desired: &mut Deployment,
    live: Option<&Deployment>,
) -> Option<Failure> {
    let have = live.and_then(|d| d.spec.as_ref()?.replicas)?;
    let spec = desired.spec.as_mut()?;
    let want = spec.replicas?;
    if want <= have || mm.spec.skip_capacity_check() {
        return None;
    }
    let more = u32::try_from(want - have).unwrap_or(u32::MAX);
    let blocked = preflight::check_capacity(&ctx.client, mm, more).await.err()?;
    spec.replicas = Some(have);
    Some(Failure {
        reason: blocked.reason,
        message: format!(
            "scale-up from {have} to {want} replicas blocked: {}",
            blocked.message
        ),
    })
}

/// Image references of the last two stable versions, from status.
#[derive(Debug, Default)]
struct StableHistory {
    last: Option<String>,
    previous: Option<String>,
}

impl StableHistory {
    fn of(mm: &Mattermost) -> Self {
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
    fn knows(&self, image: &str) -> bool {
        self.last.as_deref() == Some(image) || self.previous.as_deref() == Some(image)
    }
}

/// Decides whether the image change may proceed: preflight checks, a rollout slot, then the
/// update Job (skipped when disabled or when going back to a known stable image).
#[allow(clippy::too_many_arguments)]
async fn upgrade_gate(
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
    let job_exists = cached(&ctx.stores.jobs, &names.update_job(image), &names.namespace).is_some();
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
    if known || mm.spec.update_job_disabled() {
        return Ok(Gate::Open);
    }
    update_job_gate(ctx, mm, names, uid, inputs, image, out).await
}

fn slot_key(names: &Names) -> String {
    format!("{}/{}", names.namespace, names.app)
}

fn set_container_image(dep: &mut Deployment, container: &str, image: &str) {
    let spec = dep.spec.as_mut().and_then(|s| s.template.spec.as_mut());
    if let Some(c) = spec.and_then(|p| p.containers.iter_mut().find(|c| c.name == container)) {
        c.image = Some(image.to_owned());
    }
}

fn set_main_image(dep: &mut Deployment, image: &str) {
    set_container_image(dep, MAIN_CONTAINER, image);
}

fn main_image(dep: &Deployment) -> Option<String> {
    let spec = dep.spec.as_ref()?.template.spec.as_ref()?;
    spec.containers
        .iter()
        .find(|c| c.name == MAIN_CONTAINER)
        .and_then(|c| c.image.clone())
}

fn job_condition(job: &Job, type_: &str) -> Option<String> {
    let conds = job.status.as_ref()?.conditions.as_ref()?;
    conds
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
        .map(|c| {
            c.message
                .clone()
                .filter(|m| !m.is_empty())
                .or(c.reason.clone())
                .unwrap_or_default()
        })
}

/// Runs the update Job for `image` and reports where it stands. The Deployment is only changed
/// once it succeeded. A failed Job is kept (no relaunch loop) until the spec changes.
async fn update_job_gate(
    ctx: &Context,
    mm: &Mattermost,
    names: &Names,
    uid: &str,
    inputs: &Inputs,
    image: &str,
    out: &mut ChildrenOutcome,
) -> Result<Gate, ApplyError> {
    let ns = names.namespace.as_str();
    let job_name = names.update_job(image);
    let Some(job) = cached(&ctx.stores.jobs, &job_name, ns) else {
        let settings = ctx.update_job;
        let job = desired::update_job::update_job(
            mm,
            names,
            inputs,
            image,
            settings.backoff_limit,
            settings.active_deadline_seconds,
        );
        apply::ensure(&ctx.client, None, job, uid).await?;
        info!(job = %job_name, image, "update Job started");
        out.job_created = Some(job_name.clone());
        return Ok(Gate::Running { job: job_name });
    };
    if !apply::is_owned_by(&job, uid) {
        return Err(ApplyError::Conflict {
            kind: "Job".to_owned(),
            name: job_name,
        });
    }
    if job_condition(&job, "Complete").is_some() || job_condition(&job, "SuccessCriteriaMet").is_some() {
        return Ok(Gate::Passed { job: job_name });
    }
    let failed = job_condition(&job, "Failed").or_else(|| job_condition(&job, "FailureTarget"));
    match failed {
        Some(_) if retry_requested(mm, &job) => {
            let params = DeleteParams {
                propagation_policy: Some(PropagationPolicy::Background),
                ..Default::default()
            };
            apply::delete_owned(&ctx.client, ns, &job_name, Some(job), uid, &params).await?;
            info!(job = %job_name, "retrying the update Job on request");
            Ok(Gate::Running { job: job_name })
        }
        Some(reason) => {
            let message = failed_pod_message(&ctx.stores.pods, ns, &job_name).unwrap_or(reason);
            Ok(Gate::Failed {
                job: job_name,
                message,
            })
        }
        None => {
            out.job_pod_problem = job_pod_problem(&ctx.stores.pods, ns, &job_name);
            Ok(Gate::Running { job: job_name })
        }
    }
}

/// True when the user asked for another attempt: the retry annotation of the installation differs
/// from the one the failed Job was created with.
fn retry_requested(mm: &Mattermost, job: &Job) -> bool {
    let want = mm.annotations().get(desired::update_job::RETRY_ANNOTATION);
    want.is_some() && want != job.annotations().get(desired::update_job::RETRY_ANNOTATION)
}

/// The problem the pod of a running update Job shows, if any (otherwise the upgrade would wait
/// for it silently until the Job's deadline).
fn job_pod_problem(pods: &Store<Pod>, ns: &str, job: &str) -> Option<Failure> {
    let mut pods: Vec<Arc<Pod>> = pods
        .state()
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(ns))
        .filter(|p| p.labels().get("job-name").map(String::as_str) == Some(job))
        .collect();
    pods.sort_by_key(|p| p.name_any());
    pods.iter().find_map(|p| {
        let problem = status::pods::pod_problem(p)?;
        Some(Failure {
            reason: problem.reason,
            message: crate::redact::truncate(
                &format!("update Job pod {}: {}", p.name_any(), problem.message),
                crate::redact::MAX_STATUS_MESSAGE,
            ),
        })
    })
}

/// Termination message of the Job's failed pod (the Go operator never looked), from the pod
/// cache: scrubbed, and cut to its end (with `FallbackToLogsOnError` it is the log tail).
fn failed_pod_message(pods: &Store<Pod>, ns: &str, job: &str) -> Option<String> {
    let pods: Vec<Arc<Pod>> = pods
        .state()
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(ns))
        .filter(|p| p.labels().get("job-name").map(String::as_str) == Some(job))
        .collect();
    pods.iter().find_map(|p| {
        let statuses = p.status.as_ref()?.container_statuses.as_ref()?;
        let terminated = statuses
            .iter()
            .find(|c| c.name == MAIN_CONTAINER)?
            .state
            .as_ref()?
            .terminated
            .as_ref()?;
        (terminated.exit_code != 0).then(|| {
            let msg = terminated.message.as_deref().unwrap_or_default();
            format!(
                "exit code {}: {}",
                terminated.exit_code,
                crate::redact::message_tail(msg)
            )
        })
    })
}

/// Deletes this installation's update Jobs that are no longer needed: every one when the gate is
/// open, every one but the current otherwise.
async fn cleanup_update_jobs(ctx: &Context, names: &Names, uid: &str, gate: &Gate) -> Result<(), ApplyError> {
    let keep = match gate {
        Gate::Open | Gate::Blocked { .. } | Gate::Waiting => None,
        Gate::Running { job } | Gate::Failed { job, .. } | Gate::Passed { job } => Some(job.as_str()),
    };
    let ns = names.namespace.as_str();
    let stale: Vec<Arc<Job>> = ctx
        .stores
        .jobs
        .state()
        .into_iter()
        .filter(|j| j.namespace().as_deref() == Some(ns))
        .filter(|j| j.labels().get("app").map(String::as_str) == Some(APP_UPDATE_JOB))
        .filter(|j| j.labels().get(INSTALLATION_LABEL) == Some(&names.app))
        .filter(|j| Some(j.name_any().as_str()) != keep)
        .collect();
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..Default::default()
    };
    for job in stale {
        apply::delete_owned(
            &ctx.client,
            ns,
            &job.name_any(),
            Some((*job).clone()),
            uid,
            &params,
        )
        .await?;
    }
    Ok(())
}

/// The local-filestore claim: created once; afterwards only its size follows the spec (access
/// modes are immutable). A retained claim carries no owner reference, so ours is recognised by
/// its labels; a claim the Go operator created with an owner reference loses it.
async fn ensure_pvc(
    ctx: &Context,
    names: &Names,
    uid: &str,
    mut pvc: PersistentVolumeClaim,
) -> Result<(), ApplyError> {
    let ns = names.namespace.as_str();
    let live = cached(&ctx.stores.pvcs, &names.app, ns);
    let retain = pvc.metadata.owner_references.is_none();
    let is_ours = |p: &PersistentVolumeClaim| {
        apply::is_owned_by(p, uid)
            || (p.labels().get(INSTALLATION_LABEL) == Some(&names.app)
                && !p.owner_references().iter().any(|o| o.controller == Some(true)))
    };
    if let Some(live) = &live {
        if let (Some(spec), Some(live_spec)) = (pvc.spec.as_mut(), live.spec.as_ref()) {
            spec.access_modes = live_spec.access_modes.clone();
        }
        if retain && apply::is_owned_by(live, uid) {
            let refs: Vec<_> = live
                .owner_references()
                .iter()
                .filter(|o| o.uid != uid)
                .cloned()
                .collect();
            let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
            let patch = json!({"metadata": {"ownerReferences": refs}});
            api.patch(&names.app, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|source| ApplyError::Api {
                    verb: "patch",
                    kind: "PersistentVolumeClaim".to_owned(),
                    name: names.app.clone(),
                    source: Box::new(source),
                })?;
            info!("local file-store claim is now retained when the installation is deleted");
            return Ok(());
        }
    }
    apply::ensure_with(&ctx.client, live, pvc, is_ours)
        .await
        .map(|_| ())
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

/// Gives rollout slots back and keeps the upgrade metrics.
fn track_rollout(ctx: &Context, names: &Names, status: &MattermostStatus, gate: &Gate) {
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

/// Events on meaningful transitions only, never one per write.
async fn publish_events(
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
    if let Some(job) = &outcome.job_created {
        events.push((
            EventType::Normal,
            "UpdateJobStarted".to_owned(),
            format!("started update Job {job}"),
            "Upgrade",
        ));
    }
    if let Some(c) = changed(UPDATE_JOB) {
        if c.status == "True" {
            ctx.metrics.update_job_finished("succeeded");
            events.push((EventType::Normal, c.reason.clone(), c.message.clone(), "Upgrade"));
        } else if c.reason == "UpdateJobFailed" {
            ctx.metrics.update_job_finished("failed");
        }
    }
    if outcome.rollback_started {
        let msg = format!(
            "rollout of {} exceeded its progress deadline; restoring the last stable version",
            mm.spec.image_reference()
        );
        events.push((EventType::Warning, "RollingBack".to_owned(), msg, "Upgrade"));
    }
    if outcome.rollout_started {
        let mut msg = format!("rolling out {}", mm.spec.image_reference());
        if outcome.capacity_check_skipped {
            msg.push_str(
                " (capacity preflight skipped: the operator may not list nodes in namespace-scoped mode)",
            );
        }
        events.push((EventType::Normal, "RolloutStarted".to_owned(), msg, "Upgrade"));
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
    for (type_, reason, note, action) in events {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resyncs_are_jittered_within_ten_percent_and_can_be_off() {
        let period = Duration::from_secs(300);
        assert_eq!(jittered(period, 0), period);
        assert_eq!(jittered(period, 100), Duration::from_secs(330));
        let spread: std::collections::BTreeSet<Duration> =
            (0..20).map(|_| jittered(period, random())).collect();
        assert!(spread.len() > 1, "not in lockstep: {spread:?}");
        assert!(
            spread
                .iter()
                .all(|d| *d >= period && *d <= Duration::from_secs(330))
        );
        assert_eq!(Resync::every(Duration::ZERO).action(), Action::await_change());
        assert_ne!(Resync::every(period).action(), Action::await_change());
    }
}
