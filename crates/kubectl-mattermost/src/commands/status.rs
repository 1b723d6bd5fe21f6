//! `status`: the fleet at a glance, or one installation in detail.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::events::v1::Event;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use mattermost_operator::desired::labels::INSTALLATION_LABEL;
use serde::Serialize;

use crate::cli::Output;
use crate::error::Error;
use crate::fleet::{self, Row, Summary};
use crate::kube_ctx::{Ctx, main_image, rollout_cap};
use crate::output::{age, cell, structured, table};

#[derive(Serialize)]
struct Fleet {
    items: Vec<Row>,
    summary: Summary,
}

/// Prints the fleet (or `name`); returns the exit code.
pub async fn run(ctx: &Ctx, name: Option<String>, output: Output) -> Result<u8, Error> {
    if let Some(name) = name {
        return detail(ctx, &name, output).await;
    }
    let mms = ctx.mattermosts(&[]).await?;
    let cap = rollout_cap(&ctx.operators().await?);
    let rows: Vec<Row> = mms.iter().map(fleet::row).collect();
    let in_flight = mms.iter().filter(|m| fleet::holds_slot(m)).count();
    let summary = fleet::summary(&rows, in_flight, cap);
    let code = fleet::exit_code(&rows);
    let fleet = Fleet { items: rows, summary };
    if structured(output, &fleet)? {
        return Ok(code);
    }
    let mut t = table(&[
        "NAMESPACE",
        "NAME",
        "HEALTH",
        "STATE",
        "VERSION",
        "READY",
        "CONDITION",
        "SINCE",
    ]);
    for r in &fleet.items {
        let version = match r.serving.as_deref() {
            Some(s) if s == r.desired => s.to_owned(),
            Some(s) => format!("{s} → {}", r.desired),
            None => format!("- → {}", r.desired),
        };
        t.add_row(vec![
            r.namespace.clone(),
            r.name.clone(),
            r.health.as_str().to_owned(),
            r.state.clone(),
            version,
            format!("{}/{}", r.ready, r.replicas),
            r.condition.clone().unwrap_or_default(),
            age(r.since.as_deref()),
        ]);
    }
    if !fleet.items.is_empty() {
        outln!("{t}");
    }
    outln!("{}", summary_line(&fleet.summary));
    Ok(code)
}

/// `30 installations: 25 stable, 2 blocked, ... · rollouts in flight 1/20`.
pub fn summary_line(s: &Summary) -> String {
    let counts: Vec<String> = s.by_health.iter().map(|(h, n)| format!("{n} {h}")).collect();
    let cap = s.rollout_cap.map_or(
        "?".to_owned(),
        |c| if c == 0 { "∞".into() } else { c.to_string() },
    );
    format!(
        "{} installations: {} · rollouts in flight {}/{}",
        s.total,
        if counts.is_empty() {
            "none".to_owned()
        } else {
            counts.join(", ")
        },
        s.rollouts_in_flight,
        cap
    )
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Detail {
    installation: Row,
    conditions: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
    events: Vec<EventLine>,
    update_jobs: Vec<JobLine>,
    history: History,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EventLine {
    #[serde(rename = "type")]
    type_: String,
    reason: String,
    note: String,
    time: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JobLine {
    name: String,
    image: String,
    outcome: String,
    message: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct History {
    last_stable_version: Option<String>,
    previous_stable_version: Option<String>,
    rolled_back_from: Option<String>,
}

async fn detail(ctx: &Ctx, name: &str, output: Output) -> Result<u8, Error> {
    let Some(ns) = ctx.namespace.clone() else {
        return Err(Error::Usage("status NAME needs a namespace (-n), not -A".into()));
    };
    let mm = Api::<mattermost_api::v1beta1::Mattermost>::namespaced(ctx.client.clone(), &ns)
        .get_opt(name)
        .await?
        .ok_or_else(|| Error::NotFound(format!("Mattermost {ns}/{name}")))?;
    let row = fleet::row(&mm);
    let status = mm.status.clone().unwrap_or_default();
    let events = Api::<Event>::namespaced(ctx.client.clone(), &ns)
        .list(&ListParams::default().fields(&format!("regarding.name={name}")))
        .await?;
    let mut events: Vec<EventLine> = events
        .items
        .into_iter()
        .map(|e| EventLine {
            time: e
                .event_time
                .map(|t| t.0.to_string())
                .or_else(|| e.deprecated_last_timestamp.map(|t| t.0.to_string())),
            type_: e.type_.unwrap_or_default(),
            reason: e.reason.unwrap_or_default(),
            note: e.note.unwrap_or_default(),
        })
        .collect();
    events.sort_by(|a, b| a.time.cmp(&b.time));
    let update_message = status
        .conditions
        .iter()
        .find(|c| c.type_ == "UpdateJobSucceeded" && c.status == "False")
        .map(|c| c.message.clone());
    let jobs = Api::<Job>::namespaced(ctx.client.clone(), &ns)
        .list(&ListParams::default().labels(&format!("{INSTALLATION_LABEL}={name}")))
        .await?;
    let update_jobs = jobs
        .items
        .iter()
        .map(|j| {
            let s = j.status.clone().unwrap_or_default();
            let outcome = if s.succeeded.unwrap_or(0) > 0 {
                "succeeded"
            } else if s.failed.unwrap_or(0) > 0 {
                "failed"
            } else {
                "running"
            };
            let image = j
                .spec
                .as_ref()
                .map(|s| main_image(&s.template))
                .unwrap_or_default();
            JobLine {
                name: j.name_any(),
                image,
                outcome: outcome.into(),
                message: (outcome == "failed").then(|| update_message.clone()).flatten(),
            }
        })
        .collect();
    let detail = Detail {
        installation: row,
        conditions: status.conditions.clone(),
        events,
        update_jobs,
        history: History {
            last_stable_version: status.last_stable_version.clone(),
            previous_stable_version: status.previous_stable_version.clone(),
            rolled_back_from: status.rolled_back_from.clone(),
        },
    };
    let code = fleet::exit_code(std::slice::from_ref(&detail.installation));
    if structured(output, &detail)? {
        return Ok(code);
    }
    let r = &detail.installation;
    outln!("Name:       {}/{}", r.namespace, r.name);
    outln!("Health:     {} (state {})", r.health.as_str(), r.state);
    outln!(
        "Version:    serving {}, desired {}",
        r.serving.as_deref().unwrap_or("-"),
        r.desired
    );
    outln!("Replicas:   {}/{}", r.ready, r.replicas);
    outln!(
        "History:    last stable {}, previous stable {}{}",
        detail.history.last_stable_version.as_deref().unwrap_or("-"),
        detail.history.previous_stable_version.as_deref().unwrap_or("-"),
        detail
            .history
            .rolled_back_from
            .as_deref()
            .map(|v| format!(", rolled back from {v}"))
            .unwrap_or_default()
    );
    outln!("\nConditions:");
    let mut t = table(&["TYPE", "STATUS", "REASON", "SINCE", "MESSAGE"]);
    for c in &detail.conditions {
        t.add_row(vec![
            c.type_.clone(),
            c.status.clone(),
            c.reason.clone(),
            age(Some(&c.last_transition_time.0.to_string())),
            cell(&c.message, 100),
        ]);
    }
    outln!("{t}");
    if !detail.update_jobs.is_empty() {
        outln!("\nUpdate Jobs:");
        let mut t = table(&["NAME", "IMAGE", "OUTCOME", "MESSAGE"]);
        for j in &detail.update_jobs {
            t.add_row(vec![
                j.name.clone(),
                j.image.clone(),
                j.outcome.clone(),
                cell(j.message.as_deref().unwrap_or(""), 100),
            ]);
        }
        outln!("{t}");
    }
    outln!("\nEvents:");
    let mut t = table(&["AGE", "TYPE", "REASON", "NOTE"]);
    for e in detail.events.iter().rev().take(20).rev() {
        t.add_row(vec![
            age(e.time.as_deref()),
            e.type_.clone(),
            e.reason.clone(),
            cell(&e.note, 100),
        ]);
    }
    outln!("{t}");
    Ok(code)
}
