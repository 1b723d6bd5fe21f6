//! `migrate`: sets `spec.migrate` on ClusterInstallations (the operator migrates them under its
//! rollout cap) and follows each through its steps; `--revert` sets it back.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use mattermost_api::v1alpha1::ClusterInstallation;
use mattermost_api::v1beta1::Mattermost;
use serde_json::json;

use crate::error::Error;
use crate::fleet::{self, Health};
use crate::kube_ctx::{Ctx, key};

/// Starts (or reverts) migrations; with `wait`, prints each step until every one finished.
pub async fn run(
    ctx: &Ctx,
    names: &[String],
    wait: bool,
    revert: bool,
    timeout: Duration,
) -> Result<u8, Error> {
    let cis = ctx.cluster_installations(names).await?;
    if cis.is_empty() {
        outln!("no ClusterInstallation selected");
        return Ok(0);
    }
    let pp = PatchParams {
        field_manager: Some("kubectl-mattermost".into()),
        ..Default::default()
    };
    let mut started = Vec::new();
    for ci in &cis {
        let wanted = !revert;
        if ci.spec.migrate == Some(wanted) || (revert && ci.spec.migrate.is_none()) {
            outln!("{}: migrate is already {wanted}", key(ci));
        } else {
            let api: Api<ClusterInstallation> =
                Api::namespaced(ctx.client.clone(), &ci.namespace().unwrap_or_default());
            api.patch(
                &ci.name_any(),
                &pp,
                &Patch::Merge(json!({"spec": {"migrate": wanted}})),
            )
            .await?;
            outln!("{}: migrate set to {wanted}", key(ci));
        }
        started.push(key(ci));
    }
    if !wait {
        return Ok(0);
    }
    if revert {
        return wait_reverted(ctx, &started, timeout).await;
    }
    let deadline = Instant::now() + timeout;
    let mut steps: BTreeMap<String, String> = BTreeMap::new();
    loop {
        let current = cluster_installations_by_key(ctx).await?;
        let mms: BTreeMap<String, Mattermost> = ctx
            .mattermosts(&[])
            .await?
            .into_iter()
            .map(|m| (key(&m), m))
            .collect();
        let mut done = 0;
        let mut failed = Vec::new();
        for k in &started {
            let step = match current.get(k) {
                Some(ci) => {
                    let m = ci
                        .status
                        .as_ref()
                        .and_then(|s| s.migration.clone())
                        .unwrap_or_default();
                    if let Some(err) = m.error.filter(|e| !e.is_empty()) {
                        failed.push(format!("{k}: {err}"));
                    }
                    m.status.unwrap_or_else(|| "waiting for the operator".into())
                }
                None if mms.get(k).is_some_and(|m| fleet::health(m) == Health::Stable) => {
                    done += 1;
                    "done: Mattermost stable".into()
                }
                None => "ClusterInstallation removed; Mattermost converging".into(),
            };
            print_if_changed(&mut steps, k, step);
        }
        if done == started.len() {
            outln!("migrated {done}/{}", started.len());
            return Ok(0);
        }
        if !failed.is_empty() || Instant::now() > deadline {
            for f in &failed {
                outln!("{f}");
            }
            outln!(
                "migrated {done}/{}; stopped ({}). Revert one with: kubectl mattermost migrate --revert -n <namespace> <name>",
                started.len(),
                if failed.is_empty() {
                    "timeout"
                } else {
                    "a migration failed"
                }
            );
            return Ok(1);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Follows reverted migrations until each is a stable legacy installation again: `migrate`
/// false, no migration status, no `Mattermost` of that name.
async fn wait_reverted(ctx: &Ctx, started: &[String], timeout: Duration) -> Result<u8, Error> {
    let deadline = Instant::now() + timeout;
    let mut steps: BTreeMap<String, String> = BTreeMap::new();
    loop {
        let current = cluster_installations_by_key(ctx).await?;
        let mms: Vec<String> = ctx.mattermosts(&[]).await?.iter().map(key).collect();
        let mut done = 0;
        for k in started {
            let step = match current.get(k) {
                None => "ClusterInstallation gone: nothing to revert to".to_owned(),
                Some(ci) => {
                    let status = ci.status.clone().unwrap_or_default();
                    match status.migration.and_then(|m| m.status) {
                        Some(step) => format!("reverting ({step})"),
                        None if mms.contains(k) => "reverting (Mattermost being removed)".into(),
                        None if status.state.as_deref() == Some("stable") => {
                            done += 1;
                            "reverted: ClusterInstallation stable".into()
                        }
                        None => "reverted; ClusterInstallation converging".into(),
                    }
                }
            };
            print_if_changed(&mut steps, k, step);
        }
        if done == started.len() {
            outln!("reverted {done}/{}", started.len());
            return Ok(0);
        }
        if Instant::now() > deadline {
            outln!("reverted {done}/{}; stopped (timeout)", started.len());
            return Ok(1);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Every selected ClusterInstallation by `namespace/name` (one LIST per poll).
async fn cluster_installations_by_key(ctx: &Ctx) -> Result<BTreeMap<String, ClusterInstallation>, Error> {
    Ok(ctx
        .cluster_installations(&[])
        .await?
        .into_iter()
        .map(|c| (key(&c), c))
        .collect())
}

/// Prints an installation's step when it differs from the last one printed.
fn print_if_changed(steps: &mut BTreeMap<String, String>, k: &str, step: String) {
    if steps.get(k) != Some(&step) {
        outln!("{k}: {step}");
        steps.insert(k.to_owned(), step);
    }
}
