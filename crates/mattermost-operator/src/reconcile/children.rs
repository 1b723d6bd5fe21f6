//! The children of an installation: Service, peers Service, Ingress, ServiceAccount, file-store
//! claim, disruption budget, the Deployments. Each is built by `desired` and written by `apply`;
//! an image change first passes the upgrade gate.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use mattermost_api::v1beta1::Mattermost;
use serde_json::json;
use tracing::info;

use super::context::{Context, cached};
use super::jobs::verification_failed;
use super::outcome::ChildrenOutcome;
use super::upgrade::{StableHistory, config_gate, upgrade_gate};
use crate::apply::{self, Applied, ApplyError};
use crate::desired::deployment::{main_image, set_container_image, set_main_image};
use crate::desired::labels::INSTALLATION_LABEL;
use crate::desired::names::Names;
use crate::desired::{self, Inputs, patch::apply_json_patch};
use crate::status::{self, Failure, Gate};

/// Notes `desired` as missing when its cached counterpart is absent or being deleted.
fn note_missing<K: Resource<DynamicType = ()>>(missing: &mut Vec<String>, live: Option<&K>, desired: &K) {
    if live.is_none_or(|l| l.meta().deletion_timestamp.is_some()) {
        missing.push(format!("{} {}", K::kind(&()), desired.name_any()));
    }
}

pub(super) async fn apply_children(
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

    // Automatic rollback: the spec's image stopped progressing or failed its verification; run
    // the last stable one instead for as long as the spec asks for the failed image.
    let status = mm.status.as_ref();
    let mut rolled_back =
        spec_image.is_some() && status.and_then(|s| s.rolled_back_from.as_ref()) == spec_image.as_ref();
    if !rolled_back
        && mm.spec.automatic_rollback()
        && (live.as_ref().and_then(status::deadline_exceeded).is_some()
            || spec_image
                .as_deref()
                .is_some_and(|i| verification_failed(ctx, names, i)))
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

    let template_change = live.as_ref().is_some_and(|l| !apply::same_pod_template(&dep, l));
    out.gate = match new_image.as_deref() {
        Some(image) if image_change => {
            upgrade_gate(ctx, mm, names, uid, inputs, image, &history, rolled_back, out).await?
        }
        _ if template_change => config_gate(ctx, names).await,
        _ => Gate::Open,
    };
    if matches!(out.gate, Gate::Open | Gate::Passed { .. }) {
        out.scale_blocked = scale_up_preflight(ctx, mm, &mut dep, live.as_ref());
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
    Ok(())
}

/// A scale-up passes the same capacity preflight as an upgrade: refused, the Deployment keeps its
/// live replica count and the installation reports why.
fn scale_up_preflight(
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
    let blocked = ctx.capacity.as_ref()?.check(mm, more).err()?;
    spec.replicas = Some(have);
    Some(Failure {
        reason: blocked.reason,
        message: format!(
            "scale-up from {have} to {want} replicas blocked: {}",
            blocked.message
        ),
    })
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
