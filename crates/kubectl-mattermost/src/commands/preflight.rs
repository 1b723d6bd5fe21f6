//! `preflight`: the operator's checks for each installation plus the upgrade guide's checklist
//! items that the cluster can answer (operator running and leading, CRD current, nodes).

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{Api, ResourceExt};
use serde::Serialize;

use crate::cli::Output;
use crate::commands::upgrade::Facts;
use crate::error::Error;
use crate::fleet::{self, Health};
use crate::kube_ctx::{Ctx, key, main_image};
use crate::output::{structured, table};

/// One check.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked.
    pub check: String,
    /// Of what.
    pub subject: String,
    /// pass, warn or fail.
    pub result: String,
    /// Why.
    pub reason: String,
}

fn check(check: &str, subject: &str, ok: bool, reason: impl Into<String>) -> Check {
    Check {
        check: check.into(),
        subject: subject.into(),
        result: if ok { "pass" } else { "fail" }.into(),
        reason: reason.into(),
    }
}

/// Runs every check; exit 1 when one fails.
pub async fn run(ctx: &Ctx, name: Option<String>, version: &str, output: Output) -> Result<u8, Error> {
    let names: Vec<String> = name.into_iter().collect();
    let mms = ctx.mattermosts(&names).await?;
    let facts = Facts::read(ctx, &mms).await?;
    let mut checks = Vec::new();

    // The operator: running, which version, and who leads.
    let operators = ctx.operators().await?;
    match operators.first() {
        Some(d) => {
            let ready = d.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
            let image = d
                .spec
                .as_ref()
                .map(|s| main_image(&s.template))
                .unwrap_or_default();
            checks.push(check(
                "operator",
                &key(d),
                ready > 0,
                format!("{ready} ready, image {image}"),
            ));
            let leases: Api<Lease> = Api::namespaced(ctx.client.clone(), &d.namespace().unwrap_or_default());
            let lease = leases
                .get_opt(mattermost_operator::leader::DEFAULT_LEASE_NAME)
                .await?;
            let holder = lease
                .and_then(|l| l.spec)
                .and_then(|s| s.holder_identity)
                .filter(|h| !h.is_empty());
            checks.push(check(
                "leader",
                &key(d),
                holder.is_some(),
                holder.map_or("no process holds the leader Lease".into(), |h| {
                    format!("held by {h}")
                }),
            ));
        }
        None => checks.push(Check {
            check: "operator".into(),
            subject: "-".into(),
            result: "warn".into(),
            reason: format!(
                "no Deployment labelled {} found",
                crate::kube_ctx::OPERATOR_SELECTOR
            ),
        }),
    }
    // The CRD: served, and this operator's version of it (spec.upgrade exists).
    let crds: Api<CustomResourceDefinition> = Api::all(ctx.client.clone());
    let crd = crds.get_opt("mattermosts.installation.mattermost.com").await?;
    let current = crd.as_ref().is_some_and(|c| {
        c.spec.versions.iter().any(|v| {
            v.name == "v1beta1"
                && v.served
                && v.schema
                    .as_ref()
                    .and_then(|s| s.open_api_v3_schema.as_ref())
                    .and_then(|s| s.properties.as_ref())
                    .and_then(|p| p.get("spec"))
                    .and_then(|s| s.properties.as_ref())
                    .is_some_and(|p| p.contains_key("upgrade"))
        })
    });
    checks.push(check(
        "crd",
        "mattermosts.installation.mattermost.com",
        current,
        if current {
            "v1beta1 served, current schema"
        } else {
            "missing or older than this operator: kubectl apply --server-side -f deploy/crds/"
        },
    ));
    let nodes = facts.schedulable_nodes();
    checks.push(check(
        "nodes",
        "cluster",
        nodes > 0,
        format!("{nodes} Ready, schedulable nodes"),
    ));

    for mm in &mms {
        let k = key(mm);
        let h = fleet::health(mm);
        checks.push(check(
            "state",
            &k,
            !matches!(h, Health::Blocked | Health::Degraded),
            match fleet::row(mm).condition {
                Some(c) => format!("{} ({c})", h.as_str()),
                None => h.as_str().to_owned(),
            },
        ));
        let problems = facts.problems(mm, version);
        checks.push(check(
            "preflight",
            &k,
            problems.is_empty(),
            if problems.is_empty() {
                format!(
                    "{} → {version}: downgrade, secrets and capacity pass",
                    mm.spec.version()
                )
            } else {
                problems.join("; ")
            },
        ));
    }
    let code = u8::from(checks.iter().any(|c| c.result == "fail"));
    if structured(output, &checks)? {
        return Ok(code);
    }
    let mut t = table(&["CHECK", "SUBJECT", "RESULT", "REASON"]);
    for c in &checks {
        t.add_row(vec![
            c.check.clone(),
            c.subject.clone(),
            c.result.clone(),
            c.reason.clone(),
        ]);
    }
    outln!("{t}");
    let failed = checks.iter().filter(|c| c.result == "fail").count();
    outln!("{} checks, {failed} failed", checks.len());
    Ok(code)
}
