//! Wiring: watches (the `Mattermost`s, every child kind through label-selected reflectors, and the
//! metadata of referenced Secrets) and the kube-runtime `Controller`.
//!
//! Every change of a child triggers a reconcile of its installation, deletions included. Each
//! watch retries on its own with a short backoff and reports its liveness to [`Health`] (see
//! [`crate::watch`]), so one failing watch never stalls the others and `/readyz` can tell.

use std::sync::Arc;
use std::time::Duration;

use crate::recorder::Recorder;
use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::PartialObjectMeta;
use kube::runtime::controller::Config as ControllerConfig;
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use mattermost_api::v1beta1::Mattermost;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch as signal;
use tracing::info;

use crate::cache::Cached;
use crate::capacity::Capacity;
use crate::cli::Scope;
use crate::client::Clients;
use crate::desired::labels::INSTALLATION_LABEL;
use crate::fleet::Fleet;
use crate::metrics::Metrics;
use crate::reconcile::{self, Context, Stores, UpdateJobSettings};
use crate::rollout_cap::{RolloutSlots, Slot};
use crate::trim::Trim;
use crate::watch::{self, Health};

/// Settings of the controller.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Namespaces to watch.
    pub scope: Scope,
    /// Reconciles running at once.
    pub concurrency: u16,
    /// Update Job settings.
    pub update_job: UpdateJobSettings,
    /// Image of the verification Jobs (the operator's own).
    pub operator_image: String,
    /// Installations rolling out at once (0 = no limit).
    pub max_rollouts: usize,
    /// Wait before an installation waiting for a slot asks again.
    pub requeue_on_limit_delay: Duration,
    /// Whether the capacity preflight may list Nodes (false when RBAC allows no cluster reads,
    /// e.g. the chart's namespace-scoped mode).
    pub capacity_check: bool,
    /// How often a stable installation is reconciled again although nothing changed (a safety
    /// net for missed events; from caches, no request). Zero turns it off.
    pub resync_period: Duration,
    /// How long a migration step may take before it is reported `Stalled` and gives its slot back.
    pub migration_step_deadline: Duration,
}

impl Settings {
    /// Settings from the command line; `capacity_check` is decided by asking the API server.
    pub fn from_args(args: &crate::cli::RunArgs) -> Result<Self, String> {
        Ok(Self {
            scope: args.scope()?,
            concurrency: args.max_reconcile_concurrency,
            update_job: UpdateJobSettings {
                backoff_limit: args.update_job_backoff_limit,
                active_deadline_seconds: args.update_job_deadline_seconds,
            },
            operator_image: args.operator_image.clone(),
            max_rollouts: usize::try_from(args.max_reconciling_installations).unwrap_or(usize::MAX),
            requeue_on_limit_delay: args.requeue_on_limit_delay,
            capacity_check: true,
            resync_period: args.resync_period,
            migration_step_deadline: args.migration_step_deadline,
        })
    }
}

/// Tells the controllers to stop taking work. Cloned into each controller.
#[derive(Clone, Debug)]
pub struct Shutdown(Option<signal::Receiver<bool>>);

impl Shutdown {
    /// Never fires (tests stop the controllers by aborting them).
    pub fn never() -> Self {
        Self(None)
    }

    /// A trigger (send `true`) and the signal it fires.
    pub fn channel() -> (signal::Sender<bool>, Self) {
        let (tx, rx) = signal::channel(false);
        (tx, Self(Some(rx)))
    }

    /// Completes once triggered (or when the trigger is gone).
    pub async fn wait(self) {
        match self.0 {
            Some(mut rx) => {
                let _ = rx.wait_for(|stop| *stop).await;
            }
            None => std::future::pending().await,
        }
    }
}

/// Whether this service account may watch Nodes and Pods in every namespace (the capacity
/// preflight's cache needs both). A few SelfSubjectAccessReviews at start.
pub async fn can_watch_capacity(client: &Client) -> bool {
    for resource in ["nodes", "pods"] {
        for verb in ["list", "watch"] {
            if !allowed(client, verb, resource).await {
                return false;
            }
        }
    }
    true
}

async fn allowed(client: &Client, verb: &str, resource: &str) -> bool {
    use k8s_openapi::api::authorization::v1::{
        ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
    };
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                resource: Some(resource.into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    match api.create(&Default::default(), &review).await {
        Ok(r) => r.status.is_some_and(|s| s.allowed),
        Err(e) => {
            tracing::warn!(error = %e, verb, resource, "asking for a permission; assuming not granted");
            false
        }
    }
}

fn api<K>(client: &Client, ns: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = ()>,
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// The name of a watch in logs and `/readyz`: kind and scope.
fn watch_name<K: Resource<DynamicType = ()>>(ns: Option<&str>) -> String {
    match ns {
        Some(ns) => format!("{} in {ns}", K::kind(&())),
        None => format!("{} in all namespaces", K::kind(&())),
    }
}

/// A cache of one child kind, selected by the installation label, each object trimmed and kept
/// compact ([`Cached`]). The stream yields every touched object, deleted ones included, so a
/// deleted child is recreated.
fn reflect<K>(
    client: &Client,
    ns: Option<&str>,
    health: &Health,
) -> (
    Store<Cached<K>>,
    impl Stream<Item = Result<Cached<K>, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Serialize
        + DeserializeOwned
        + Trim
        + 'static,
{
    let (reader, writer) = reflector::store();
    let wc = watch::config().labels(INSTALLATION_LABEL);
    let events = watcher(api::<Cached<K>>(client, ns), wc).reflect(writer);
    let stream = watch::guarded(watch_name::<K>(ns), events, health).touched_objects();
    (reader, stream)
}

/// Counts each child event as a queue entry of the installation that owns it (workqueue depth
/// and wait); the controller maps it to its owner the same way.
fn queued_owners<K, S>(children: S, metrics: Arc<Metrics>) -> impl Stream<Item = S::Item> + Send + 'static
where
    K: Resource,
    S: Stream<Item = Result<K, watcher::Error>> + Send + 'static,
{
    children.inspect(move |child| {
        if let Ok(child) = child {
            let ns = child.meta().namespace.as_deref().unwrap_or_default();
            for owner in child.owner_references().iter().filter(|o| o.kind == "Mattermost") {
                metrics.enqueued(reconcile::CONTROLLER, format!("{ns}/{}", owner.name));
            }
        }
    })
}

/// Pod changes worth a reconcile: a pod that shows a problem. Recoveries also change the
/// Deployment's status, which triggers a reconcile on its own; healthy pods' changes would only
/// add work.
fn pod_triggers<S>(pods: S) -> impl futures::Stream<Item = S::Item> + Send + 'static
where
    S: futures::Stream<Item = Result<Cached<Pod>, watcher::Error>> + Send + 'static,
{
    use futures::StreamExt;
    pods.filter(|p| {
        let problem = p.as_ref().map_or(true, |p| {
            p.object()
                .is_some_and(|p| crate::status::pods::pod_problem(&p).is_some())
        });
        futures::future::ready(problem)
    })
}

/// The installation a pod belongs to (its installation label, in its namespace).
fn installation_of(pod: &impl kube::Resource) -> Option<ObjectRef<Installation>> {
    let meta = pod.meta();
    let name = meta
        .labels
        .as_ref()?
        .get(crate::desired::labels::INSTALLATION_LABEL)?;
    Some(ObjectRef::new(name).within(meta.namespace.as_deref()?))
}

/// How the controller holds an installation: compact, like the children (see [`Cached`]).
type Installation = Cached<Mattermost>;

/// The queue key of an object (`namespace/name`), as the reconcile reports it.
fn queue_key<K: Resource>(obj: &ObjectRef<K>) -> String {
    format!("{}/{}", obj.namespace.as_deref().unwrap_or_default(), obj.name)
}

/// Runs the controllers until the task is aborted. `on_ready` is called once every cache synced.
pub async fn run(
    clients: impl Into<Clients>,
    settings: Settings,
    metrics: Arc<Metrics>,
    on_ready: impl FnOnce() + Send + 'static,
) {
    run_until(
        clients.into(),
        settings,
        metrics,
        Health::new(),
        on_ready,
        Shutdown::never(),
    )
    .await;
}

/// Runs the `Mattermost` and `ClusterInstallation` controllers, one set of watches per watched
/// namespace (or one for all), sharing the rollout cap. On `shutdown` they take no new work and
/// return once in-flight reconciles finished.
pub async fn run_until(
    clients: Clients,
    settings: Settings,
    metrics: Arc<Metrics>,
    health: Health,
    on_ready: impl FnOnce() + Send + 'static,
    shutdown: Shutdown,
) {
    // One cap for rollouts and migrations: both double an installation's pods for a while.
    let slots = Arc::new(RolloutSlots::new(
        settings.max_rollouts,
        settings.requeue_on_limit_delay,
        // Each scope's two controllers rebuild their slots before a new rollout starts.
        2 * settings.scope.watches().len(),
    ));
    let capacity = settings
        .capacity_check
        .then(|| Capacity::start(&clients.watches, &health));
    let mut mm_stores = Vec::new();
    let mut ready = Vec::new();
    let mut controllers = Vec::new();
    for ns in settings.scope.watches() {
        let scoped = run_scope(
            clients.clone(),
            &health,
            ns,
            &settings,
            Fleet {
                slots: slots.clone(),
                capacity: capacity.clone(),
                metrics: metrics.clone(),
            },
            shutdown.clone(),
        );
        mm_stores.push(scoped.mattermosts);
        ready.push(scoped.synced);
        controllers.push(scoped.controllers);
    }
    tokio::spawn(async move {
        futures::future::join_all(ready).await;
        info!("caches synced");
        on_ready();
    });
    tokio::spawn(count_states(mm_stores, metrics));
    futures::future::join_all(controllers).await;
}

/// The installations-by-state gauge, from the caches (no API traffic).
async fn count_states(stores: Vec<Store<Installation>>, metrics: Arc<Metrics>) {
    loop {
        let mut counts: Vec<(String, i64)> = Vec::new();
        // One decoded at a time: the fleet is never held whole in memory.
        for mm in stores.iter().flat_map(|s| s.state()).filter_map(|c| c.object()) {
            let state = mm
                .status
                .as_ref()
                .and_then(|s| s.state.clone())
                .unwrap_or_default();
            match counts.iter_mut().find(|(s, _)| *s == state) {
                Some((_, n)) => *n += 1,
                None => counts.push((state, 1)),
            }
        }
        metrics.set_installations_by_state(&counts);
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}

/// Forgets installations that no longer exist: what was read for them (it may hold Secret
/// values), and their rollout slot (a deleted object gets no reconcile that would release it).
async fn forget_deleted(store: Store<Installation>, ctx: Arc<Context>, namespace: Option<String>) {
    loop {
        tokio::time::sleep(Duration::from_secs(10)).await;
        let live: std::collections::HashSet<String> =
            store.state().iter().filter_map(|mm| mm.uid()).collect();
        ctx.observed.retain(|uid| live.contains(uid));
        ctx.status_pace.retain(|uid| live.contains(uid));
        ctx.published.retain(|uid| live.contains(uid));
        ctx.written.retain(|uid| live.contains(uid));
        // Triggered (or blocked) but deleted since (other scopes' entries are theirs).
        let keep = |key: &str| {
            key.split_once('/').is_none_or(|(ns, name)| {
                namespace.as_deref().is_some_and(|scope| scope != ns)
                    || store.get(&ObjectRef::new(name).within(ns)).is_some()
            })
        };
        ctx.metrics.forget_queued(reconcile::CONTROLLER, keep);
        ctx.metrics.forget_blocked(keep);
        let referenced: std::collections::HashSet<(String, String)> = store
            .state()
            .iter()
            .filter_map(|c| c.object())
            .flat_map(|mm| {
                let ns = mm.namespace().unwrap_or_default();
                mm.spec
                    .referenced_secrets()
                    .into_iter()
                    .map(|s| (ns.clone(), s.to_owned()))
                    .collect::<Vec<_>>()
            })
            .collect();
        ctx.secret_reads
            .retain(|ns, name| referenced.contains(&(ns.to_owned(), name.to_owned())));
        ctx.slots.release_gone(namespace.as_deref(), |slot| match slot {
            Slot::Rollout { namespace, name } => store
                .get(&ObjectRef::new(name).within(namespace))
                .is_some_and(|mm| mm.meta().deletion_timestamp.is_none()),
            Slot::Migration { .. } => true,
        });
    }
}

/// The controllers of one watch scope.
struct Scoped {
    mattermosts: Store<Installation>,
    synced: futures::future::BoxFuture<'static, ()>,
    controllers: futures::future::BoxFuture<'static, ()>,
}

fn run_scope(
    clients: Clients,
    health: &Health,
    ns: Option<String>,
    settings: &Settings,
    fleet: Fleet,
    shutdown: Shutdown,
) -> Scoped {
    let Fleet {
        slots,
        capacity,
        metrics,
    } = fleet.clone();
    let ns_ref = ns.as_deref();
    let client = clients.requests.clone();
    let w = &clients.watches;
    let (deployments, dep_stream) = reflect::<Deployment>(w, ns_ref, health);
    let (replica_sets, rs_stream) = reflect::<ReplicaSet>(w, ns_ref, health);
    let (services, svc_stream) = reflect::<Service>(w, ns_ref, health);
    let (ingresses, ing_stream) = reflect::<Ingress>(w, ns_ref, health);
    let (service_accounts, sa_stream) = reflect::<ServiceAccount>(w, ns_ref, health);
    let (jobs, job_stream) = reflect::<Job>(w, ns_ref, health);
    let (pvcs, pvc_stream) = reflect::<PersistentVolumeClaim>(w, ns_ref, health);
    let (pdbs, pdb_stream) = reflect::<PodDisruptionBudget>(w, ns_ref, health);
    let (pods, pod_stream) = reflect::<Pod>(w, ns_ref, health);
    let stores = Stores {
        deployments,
        replica_sets,
        services,
        ingresses,
        service_accounts,
        jobs,
        pvcs,
        pdbs,
        pods,
    };

    // ReplicaSets feed rollout status only; Deployment status changes trigger the reconcile.
    tokio::spawn(rs_stream.for_each(|_| futures::future::ready(())));
    // Metadata only: resourceVersions key the shared Secret reads, and a change triggers the
    // installations that reference the Secret.
    let secret_reads = Arc::new(crate::observe::SecretReads::default());
    let seen = secret_reads.clone();
    let secrets = watch::guarded(
        format!(
            "Secret metadata{}",
            watch_name::<Secret>(ns_ref).trim_start_matches("Secret")
        ),
        watcher(api::<PartialObjectMeta<Secret>>(w, ns_ref), watch::config()),
        health,
    )
    .filter_map(move |event| {
        let secret = match event {
            Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)) => {
                seen.seen(
                    &s.namespace().unwrap_or_default(),
                    &s.name_any(),
                    s.resource_version(),
                );
                Some(Ok(s))
            }
            Ok(watcher::Event::Delete(s)) => {
                seen.deleted(&s.namespace().unwrap_or_default(), &s.name_any());
                Some(Ok(s))
            }
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        };
        futures::future::ready(secret)
    });

    let reporter = Reporter {
        controller: "mattermost-operator".into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    // Reconciles wait for every cache of this scope: an empty Deployment cache would make an
    // upgrade look like a fresh install and skip the update Job.
    let (synced_tx, synced_rx) = tokio::sync::watch::channel(false);
    let ctx = Arc::new(Context {
        synced: synced_rx,
        client: client.clone(),
        stores: stores.clone(),
        recorder: Recorder::new(client.clone(), reporter),
        metrics: metrics.clone(),
        update_job: settings.update_job,
        operator_image: settings.operator_image.clone(),
        slots: slots.clone(),
        capacity: capacity.clone(),
        backoff: Default::default(),
        resync: reconcile::Resync::every(settings.resync_period),
        observed: Default::default(),
        status_pace: Default::default(),
        published: Default::default(),
        written: Default::default(),
        deleted: Default::default(),
        secret_reads,
    });

    let (mm_store, mm_writer) = reflector::store();
    let mm_stream = watch::guarded(
        watch_name::<Mattermost>(ns_ref),
        watcher(api::<Installation>(w, ns_ref), watch::config()).reflect(mm_writer),
        health,
    )
    .applied_objects()
    .inspect({
        let metrics = metrics.clone();
        move |mm| {
            if let Ok(mm) = mm {
                metrics.enqueued(reconcile::CONTROLLER, queue_key(&ObjectRef::from_obj(mm)));
            }
        }
    });
    let scope = ns.clone();
    let woken_metrics = metrics.clone();
    let woken = slots.woken(move |slot| match slot {
        Slot::Rollout { namespace, name } if scope.as_ref().is_none_or(|s| *s == namespace) => {
            let obj = ObjectRef::<Installation>::new(&name).within(&namespace);
            woken_metrics.enqueued(reconcile::CONTROLLER, queue_key(&obj));
            Some(obj)
        }
        _ => None,
    });
    let controller = Controller::for_stream(mm_stream, mm_store.clone())
        .reconcile_on(woken)
        .with_config(ControllerConfig::default().concurrency(settings.concurrency))
        // Errors never reach the trigger streams (each watch backs off on its own); short anyway.
        .trigger_backoff(watch::backoff());
    tokio::spawn(forget_deleted(mm_store.clone(), ctx.clone(), ns.clone()));
    let s = stores.clone();
    let mm_ready = mm_store.clone();
    let capacity_ready = capacity.clone();
    let seed_slots = slots.clone();
    let synced_all = async move {
        let all = [
            watch::wait_synced(&mm_ready).boxed(),
            watch::wait_synced(&s.deployments).boxed(),
            watch::wait_synced(&s.replica_sets).boxed(),
            watch::wait_synced(&s.services).boxed(),
            watch::wait_synced(&s.ingresses).boxed(),
            watch::wait_synced(&s.service_accounts).boxed(),
            watch::wait_synced(&s.jobs).boxed(),
            watch::wait_synced(&s.pvcs).boxed(),
            watch::wait_synced(&s.pdbs).boxed(),
            watch::wait_synced(&s.pods).boxed(),
        ];
        futures::future::join_all(all).await;
        if let Some(c) = &capacity_ready {
            c.synced().await;
        }
        seed_slots.seed(reconcile::under_way(
            mm_ready.state().iter().filter_map(|mm| mm.object()),
            &s.deployments,
        ));
        let _ = synced_tx.send(true);
    }
    .boxed();

    let secret_store = mm_store.clone();
    let secret_ctx = ctx.clone();
    let m = &metrics;
    let pod_metrics = metrics.clone();
    let mattermost = controller
        .owns_stream(queued_owners(dep_stream, m.clone()))
        .owns_stream(queued_owners(svc_stream, m.clone()))
        .owns_stream(queued_owners(ing_stream, m.clone()))
        .owns_stream(queued_owners(sa_stream, m.clone()))
        .owns_stream(queued_owners(job_stream, m.clone()))
        .owns_stream(queued_owners(pvc_stream, m.clone()))
        .owns_stream(queued_owners(pdb_stream, m.clone()))
        .watches_stream(pod_triggers(pod_stream), move |pod| {
            let obj = installation_of(&pod)?;
            pod_metrics.enqueued(reconcile::CONTROLLER, queue_key(&obj));
            Some(obj)
        })
        .watches_stream(secrets, move |secret: PartialObjectMeta<Secret>| {
            let ns = secret.namespace();
            let name = secret.name_any();
            let referencing: Vec<_> = secret_store
                .state()
                .into_iter()
                .filter(|mm| mm.namespace() == ns)
                .filter(|mm| {
                    mm.object()
                        .is_some_and(|mm| mm.spec.referenced_secrets().contains(&name.as_str()))
                })
                .collect();
            // What was read from the Secret is stale now: the next reconcile reads it again.
            for mm in &referencing {
                secret_ctx.observed.invalidate(&mm.uid().unwrap_or_default());
            }
            referencing
                .iter()
                .map(|mm| {
                    let obj = ObjectRef::from_obj(&**mm);
                    secret_ctx
                        .metrics
                        .enqueued(reconcile::CONTROLLER, queue_key(&obj));
                    obj
                })
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(shutdown.clone().wait())
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "controller event");
            }
        });
    let legacy = crate::legacy::run(
        clients,
        health.clone(),
        ns,
        crate::legacy::Settings {
            concurrency: settings.concurrency,
            step_deadline: settings.migration_step_deadline,
        },
        fleet,
        shutdown.wait(),
    );
    Scoped {
        mattermosts: mm_store,
        synced: synced_all,
        controllers: async move {
            futures::future::join(mattermost, legacy).await;
        }
        .boxed(),
    }
}
