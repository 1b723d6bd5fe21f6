//! `plan upgrade`, `upgrade` and `rollback`.
//!
//! An upgrade is a merge patch of `spec.version` per installation: atomic, so Ctrl-C never leaves
//! one half-patched. Waves are computed from the ordered selection alone and progress is read back
//! from the installations (patched = `spec.version` is the target), so running the same command
//! again continues where it stopped and patches nobody twice.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use k8s_openapi::api::core::v1::{Node, Pod, Secret};
use kube::api::{ListParams, PartialObjectMeta, Patch, PatchParams};
use kube::{Api, ResourceExt};
use mattermost_api::v1beta1::Mattermost;
use mattermost_operator::preflight;
use serde::Serialize;
use serde_json::json;

use crate::cli::{PlanArgs, UpgradeArgs};
use crate::error::Error;
use crate::fleet::{self, Health};
use crate::kube_ctx::{Ctx, key};
use crate::output::{structured, table};

const FIELD_MANAGER: &str = "kubectl-mattermost";

/// One installation in a plan.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanLine {
    /// 1-based wave.
    pub wave: usize,
    /// namespace/name.
    pub installation: String,
    /// Version it runs now.
    pub from: String,
    /// `upgrade`, `patched` (already asked for the target) or `upgraded`.
    pub action: String,
    /// Preflight verdicts that failed (empty: all passed).
    pub problems: Vec<String>,
}

/// What the cluster tells us once, for every installation of a plan.
pub struct Facts {
    cluster: preflight::ClusterView,
    secrets: BTreeMap<String, Vec<String>>,
}

impl Facts {
    /// One LIST of nodes, of pods and of secret metadata per namespace involved.
    pub async fn read(ctx: &Ctx, mms: &[Mattermost]) -> Result<Self, Error> {
        let nodes = Api::<Node>::all(ctx.client.clone())
            .list(&ListParams::default())
            .await?
            .items;
        let lp = ListParams::default().fields("status.phase!=Succeeded,status.phase!=Failed");
        let pods = Api::<Pod>::all(ctx.client.clone()).list(&lp).await?.items;
        let mut secrets = BTreeMap::new();
        let namespaces: std::collections::BTreeSet<String> =
            mms.iter().filter_map(|m| m.namespace()).collect();
        for ns in namespaces {
            let list = Api::<PartialObjectMeta<Secret>>::namespaced(ctx.client.clone(), &ns)
                .list_metadata(&ListParams::default())
                .await?;
            secrets.insert(ns, list.items.iter().map(ResourceExt::name_any).collect());
        }
        Ok(Self {
            cluster: preflight::ClusterView::from_lists(&nodes, &pods),
            secrets,
        })
    }

    /// Failed checks of upgrading `mm` to `version`: downgrade, secrets, capacity for one more pod.
    pub fn problems(&self, mm: &Mattermost, version: &str) -> Vec<String> {
        let mut out = Vec::new();
        let status = mm.status.as_ref();
        if let Err(b) = preflight::check_downgrade(
            version,
            status.and_then(|s| s.last_stable_version.as_deref()),
            status.and_then(|s| s.previous_stable_version.as_deref()),
            mm.spec.allow_downgrade(),
        ) {
            out.push(format!("{}: {}", b.reason, b.message));
        }
        let present = mm
            .namespace()
            .and_then(|ns| self.secrets.get(&ns))
            .cloned()
            .unwrap_or_default();
        for s in mm.spec.referenced_secrets() {
            if !present.iter().any(|p| p == s) {
                out.push(format!("SecretNotFound: secret {s} does not exist"));
            }
        }
        if !mm.spec.skip_capacity_check()
            && !mm.spec.recreate_strategy()
            && let Err(b) = preflight::installation_fits(&self.cluster, mm, 1)
        {
            out.push(format!("{}: {}", b.reason, b.message));
        }
        out
    }

    /// Nodes that are Ready and schedulable.
    pub fn schedulable_nodes(&self) -> usize {
        self.cluster.nodes.values().filter(|n| n.schedulable).count()
    }
}

fn action(mm: &Mattermost, version: &str) -> &'static str {
    if fleet::upgraded(mm, version) {
        "upgraded"
    } else if mm.spec.version() == version {
        "patched"
    } else {
        "upgrade"
    }
}

/// The plan: every selected installation with its wave, in order.
pub fn plan(mms: &[Mattermost], facts: &Facts, args: &PlanArgs) -> Vec<PlanLine> {
    fleet::waves(mms, args.canary, args.wave_size)
        .into_iter()
        .enumerate()
        .flat_map(|(i, wave)| {
            wave.into_iter().map(move |mm| PlanLine {
                wave: i + 1,
                installation: key(&mm),
                from: mm
                    .status
                    .as_ref()
                    .and_then(|s| s.version.clone())
                    .unwrap_or_else(|| mm.spec.version().to_owned()),
                action: action(&mm, &args.version).into(),
                problems: if action(&mm, &args.version) == "upgrade" {
                    facts.problems(&mm, &args.version)
                } else {
                    Vec::new()
                },
            })
        })
        .collect()
}

/// `plan upgrade`: changes nothing; exit 1 when a preflight check fails.
pub async fn run_plan(ctx: &Ctx, args: &PlanArgs) -> Result<u8, Error> {
    let mms = ctx.mattermosts(&[]).await?;
    let facts = Facts::read(ctx, &mms).await?;
    let lines = plan(&mms, &facts, args);
    let code = u8::from(lines.iter().any(|l| !l.problems.is_empty()));
    if structured(args.output, &lines)? {
        return Ok(code);
    }
    let waves = lines.iter().map(|l| l.wave).max().unwrap_or(0);
    let mut t = table(&["WAVE", "INSTALLATION", "FROM", "TO", "ACTION", "PREFLIGHT"]);
    for l in &lines {
        t.add_row(vec![
            if l.wave == 1 && args.canary > 0 {
                "1 (canary)".to_owned()
            } else {
                l.wave.to_string()
            },
            l.installation.clone(),
            l.from.clone(),
            args.version.clone(),
            l.action.clone(),
            if l.problems.is_empty() {
                "ok".to_owned()
            } else {
                l.problems.join("; ")
            },
        ]);
    }
    outln!("{t}");
    let todo = lines.iter().filter(|l| l.action == "upgrade").count();
    let blocked = lines.iter().filter(|l| !l.problems.is_empty()).count();
    outln!(
        "{todo} of {} installations to upgrade to {} in {waves} waves (canary {}, then {} per wave); {blocked} fail the preflight",
        lines.len(),
        args.version,
        args.canary,
        args.wave_size
    );
    Ok(code)
}

/// Progress on a terminal, plain lines otherwise.
struct Progress {
    bar: ProgressBar,
    plain: bool,
}

impl Progress {
    fn new(total: u64) -> Self {
        let plain = !std::io::stderr().is_terminal();
        let bar = if plain {
            ProgressBar::hidden()
        } else {
            let bar = ProgressBar::new(total);
            if let Ok(style) = ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} {msg}") {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        };
        Self { bar, plain }
    }

    fn line(&self, text: &str) {
        if self.plain {
            outln!("{text}");
        } else {
            self.bar.println(text);
        }
    }
}

/// `upgrade`: waves, canary first, each wave stable before the next is patched; the last wave is
/// waited for only with `--wait`. Exit 1 when the failure budget is spent, 130 on Ctrl-C.
pub async fn run_upgrade(ctx: &Ctx, args: &UpgradeArgs) -> Result<u8, Error> {
    let version = args.plan.version.clone();
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = interrupted.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            flag.store(true, Ordering::SeqCst);
        }
    });
    let mms = ctx.mattermosts(&[]).await?;
    let keys: Vec<String> = mms.iter().map(key).collect();
    let waves = fleet::waves(&keys, args.plan.canary, args.plan.wave_size);
    let progress = Progress::new(keys.len() as u64);
    let patch = Patch::Merge(json!({"spec": {"version": version}}));
    let pp = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    let mut failed: Vec<(String, String)> = Vec::new();
    let mut patched_now = 0usize;
    for (i, wave) in waves.iter().enumerate() {
        let label = if i == 0 && args.plan.canary > 0 {
            " (canary)"
        } else {
            ""
        };
        let current = by_key(ctx.mattermosts(&[]).await?);
        for k in wave {
            let Some(mm) = current.get(k) else { continue };
            if mm.spec.version() == version {
                continue;
            }
            if interrupted.load(Ordering::SeqCst) {
                return Ok(stopped(&progress, i + 1, patched_now));
            }
            let api: Api<Mattermost> =
                Api::namespaced(ctx.client.clone(), &mm.namespace().unwrap_or_default());
            api.patch(&mm.name_any(), &pp, &patch).await?;
            patched_now += 1;
            progress.line(&format!(
                "wave {}/{}{label}: {k} {} → {version}",
                i + 1,
                waves.len(),
                mm.spec.version()
            ));
        }
        if i + 1 == waves.len() && !args.wait {
            // Earlier waves were waited for; the last one is left to the operator.
            progress.bar.finish_and_clear();
            outln!(
                "wave {}/{}{label}: {} patched to {version}; not waiting for it to be stable (no --wait)",
                i + 1,
                waves.len(),
                wave.iter().filter(|k| current.contains_key(*k)).count()
            );
            outln!("follow progress: {}", follow_command(ctx));
            if !failed.is_empty() {
                outln!(
                    "{} failed in earlier waves (within the budget {}):",
                    failed.len(),
                    args.max_failures
                );
                for (k, why) in &failed {
                    outln!("  {k}: {why}");
                }
            }
            return Ok(u8::from(!failed.is_empty()));
        }
        progress
            .bar
            .set_message(format!("wave {}/{}{label}", i + 1, waves.len()));
        let deadline = Instant::now() + args.wave_timeout;
        let wave_failed = loop {
            let current = by_key(ctx.mattermosts(&[]).await?);
            let mut pending = 0;
            let mut done_total = 0;
            let mut wave_failed = Vec::new();
            for (k, mm) in &current {
                if fleet::upgraded(mm, &version) {
                    done_total += 1;
                }
                if !wave.contains(k) {
                    continue;
                }
                let h = fleet::health(mm);
                if fleet::upgraded(mm, &version) {
                } else if h.is_failure() && mm.spec.version() == version {
                    let why = fleet::row(mm).condition.unwrap_or_else(|| h.as_str().into());
                    wave_failed.push((k.clone(), why));
                } else {
                    pending += 1;
                }
            }
            progress.bar.set_position(done_total);
            if pending == 0 {
                break wave_failed;
            }
            if interrupted.load(Ordering::SeqCst) {
                return Ok(stopped(&progress, i + 1, patched_now));
            }
            if Instant::now() > deadline {
                let mut w = wave_failed;
                for (k, mm) in &current {
                    if wave.contains(k)
                        && !fleet::upgraded(mm, &version)
                        && fleet::health(mm) != Health::Blocked
                    {
                        w.push((k.clone(), format!("not stable after {:?}", args.wave_timeout)));
                    }
                }
                break w;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        };
        for (k, why) in &wave_failed {
            progress.line(&format!("wave {}/{}: {k} failed: {why}", i + 1, waves.len()));
        }
        failed.extend(wave_failed);
        if failed.len() > args.max_failures {
            progress.bar.finish_and_clear();
            outln!(
                "stopped after wave {}/{}: {} failed (budget {}). Installations of later waves are untouched.",
                i + 1,
                waves.len(),
                failed.len(),
                args.max_failures
            );
            outln!("  inspect:  kubectl mattermost status -n <namespace> <name>");
            outln!(
                "  roll back: kubectl mattermost rollback -n <namespace> <name>   (last stable version, no update Job)"
            );
            outln!("  or fix the cause and run the same upgrade command again: it continues from here");
            for (k, why) in &failed {
                outln!("  {k}: {why}");
            }
            return Ok(1);
        }
        progress.line(&format!(
            "wave {}/{}{label}: {} stable at {version}",
            i + 1,
            waves.len(),
            wave.len() - wave_failed_len(&failed, wave)
        ));
    }
    progress.bar.finish_and_clear();
    let done = by_key(ctx.mattermosts(&[]).await?)
        .values()
        .filter(|m| fleet::upgraded(m, &version))
        .count();
    outln!(
        "upgraded {done}/{} to {version} ({} failed within the budget)",
        keys.len(),
        failed.len()
    );
    Ok(u8::from(!failed.is_empty()))
}

/// The `status` command over the same selection as this run.
fn follow_command(ctx: &Ctx) -> String {
    let mut cmd = String::from("kubectl mattermost status");
    match &ctx.namespace {
        Some(ns) => cmd.push_str(&format!(" -n {ns}")),
        None => cmd.push_str(" -A"),
    }
    if let Some(sel) = &ctx.selector {
        cmd.push_str(&format!(" -l {sel}"));
    }
    cmd
}

fn wave_failed_len(failed: &[(String, String)], wave: &[String]) -> usize {
    failed.iter().filter(|(k, _)| wave.contains(k)).count()
}

fn stopped(progress: &Progress, wave: usize, patched: usize) -> u8 {
    progress.bar.finish_and_clear();
    outln!(
        "interrupted in wave {wave}: {patched} installations patched by this run, none half-patched; run the same command again to continue"
    );
    130
}

fn by_key(mms: Vec<Mattermost>) -> BTreeMap<String, Mattermost> {
    mms.into_iter().map(|m| (key(&m), m)).collect()
}

/// `rollback`: back to the last stable version (or the previous one when the last is current).
pub async fn run_rollback(ctx: &Ctx, names: &[String], wait: bool, timeout: Duration) -> Result<u8, Error> {
    if names.is_empty() && ctx.selector.is_none() && ctx.namespace.is_some() {
        return Err(Error::Usage(
            "rollback needs NAME..., -l SELECTOR or -A (it never rolls back a whole namespace by accident)"
                .into(),
        ));
    }
    let mms = ctx.mattermosts(names).await?;
    let pp = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    let mut targets = Vec::new();
    for mm in &mms {
        let Some((version, spec)) = fleet::rollback_spec(mm) else {
            outln!("{}: no stable version to go back to; skipped", key(mm));
            continue;
        };
        let api: Api<Mattermost> = Api::namespaced(ctx.client.clone(), &mm.namespace().unwrap_or_default());
        api.patch(&mm.name_any(), &pp, &Patch::Merge(json!({ "spec": spec })))
            .await?;
        outln!("{}: {} → {version}", key(mm), mm.spec.version());
        targets.push((key(mm), version));
    }
    if !wait {
        return Ok(0);
    }
    let deadline = Instant::now() + timeout;
    loop {
        let current = by_key(ctx.mattermosts(names).await?);
        let pending: Vec<&String> = targets
            .iter()
            .filter(|(k, v)| !current.get(k).is_some_and(|m| fleet::upgraded(m, v)))
            .map(|(k, _)| k)
            .collect();
        if pending.is_empty() {
            outln!("rolled back {} installations", targets.len());
            return Ok(0);
        }
        if Instant::now() > deadline {
            outln!("not stable after {timeout:?}: {pending:?}");
            return Ok(1);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
