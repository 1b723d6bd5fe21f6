//! Runs a site plan: connect to every site, decide, preflight, lock, then each site in turn.

use std::time::{Duration, Instant};

use kube::{Api, Client};
use mattermost_api::v1beta1::Mattermost;

use super::gate;
use super::hook::{self, HookEnv};
use super::plan::{Site, SitePlan, WriteGuard};
use super::progress::{self, Lock, Mode, Phase, Progress};
use super::steps::{self, Action, Decision};
use super::switch;
use crate::cli::{Global, SitesArgs};
use crate::commands::upgrade::Facts;
use crate::error::Error;
use crate::fleet::{self, Health};
use crate::kube_ctx::{Ctx, key};
use crate::output::{structured, table};

/// One site, connected.
struct Conn {
    ctx: Ctx,
    api: Api<Mattermost>,
}

impl Conn {
    fn client(&self) -> &Client {
        &self.ctx.client
    }
}

/// Why a run stopped with a site left as it is: printed, exit code 1.
struct Stop(String);

/// `sites plan | upgrade | rollback`; `mode` `None` is `plan` (upgrade steps, changing nothing).
pub async fn run(global: &Global, args: &SitesArgs, mode: Option<Mode>) -> Result<u8, Error> {
    let plan = SitePlan::load(&args.file)?;
    let mut conns = Vec::new();
    for site in &plan.sites {
        let g = Global {
            kubeconfig: site.kubeconfig.clone().or_else(|| global.kubeconfig.clone()),
            context: site.context.clone().or_else(|| global.context.clone()),
            namespace: Some(site.mattermost.namespace.clone()),
            all_namespaces: false,
            selector: None,
        };
        let ctx = Ctx::connect(&g)
            .await
            .map_err(|e| Error::Connect(format!("site {}: {e}", site.name)))?;
        let api = ctx.api::<Mattermost>();
        conns.push(Conn { ctx, api });
    }
    let run_mode = mode.unwrap_or(Mode::Upgrade);
    let decisions = decide_all(&plan, run_mode, &conns).await?;
    let Some(mode) = mode else {
        let lines = steps::steps(&plan, run_mode, &decisions);
        if !structured(args.output, &lines)? {
            let mut t = table(&["#", "SITE", "STEP", "DETAIL"]);
            for (i, s) in lines.iter().enumerate() {
                t.add_row(vec![
                    (i + 1).to_string(),
                    s.site.clone(),
                    s.action.clone(),
                    s.detail.clone(),
                ]);
            }
            outln!("{t}");
            outln!(
                "nothing was changed; run `kubectl mattermost sites upgrade -f {}` to do it",
                args.file.display()
            );
        }
        return Ok(0);
    };
    if decisions.iter().all(|d| d.progress().is_none()) {
        for (site, d) in plan.sites.iter().zip(&decisions) {
            if let Decision::Skip(why) = d {
                outln!("site {}: {why}", site.name);
            }
        }
        outln!("nothing to do");
        return Ok(0);
    }
    let owner = args
        .owner
        .clone()
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "unknown".into());
    let lock = Lock::mine(&owner, plan.lock_ttl.0);
    let mut taken = Vec::new();
    for (site, conn) in plan.sites.iter().zip(&conns) {
        if let Err(e) = progress::take_lock(&conn.api, &site.mattermost.name, &lock, args.break_lock).await {
            release(&plan, &conns, &taken, &lock).await;
            return Err(e);
        }
        taken.push(site.name.clone());
    }
    let renew = renew_task(&plan, &conns, &lock);
    let result = run_locked(&plan, args, mode, &conns, &decisions).await;
    renew.abort();
    release(&plan, &conns, &taken, &lock).await;
    match result {
        Ok(()) => {
            outln!(
                "{} done: every site of the plan is stable and serving",
                mode.as_str()
            );
            Ok(0)
        }
        Err(Ok(Stop(message))) => {
            outln!("{message}");
            Ok(1)
        }
        Err(Err(e)) => Err(e),
    }
}

async fn decide_all(plan: &SitePlan, mode: Mode, conns: &[Conn]) -> Result<Vec<Decision>, Error> {
    let mut decisions = Vec::new();
    let mut problems = Vec::new();
    for (i, (site, conn)) in plan.sites.iter().zip(conns).enumerate() {
        let mm = get(site, conn).await?;
        match steps::decide(plan, mode, i, &mm, progress::Progress::of(&mm)?) {
            Ok(d) => decisions.push(d),
            Err(p) => problems.push(p),
        }
    }
    let in_flight: Vec<&str> = plan
        .sites
        .iter()
        .zip(&decisions)
        .filter(|(_, d)| matches!(d, Decision::Resume(_)))
        .map(|(s, _)| s.name.as_str())
        .collect();
    if in_flight.len() > 1 {
        problems.push(format!(
            "sites {} are all recorded mid-step; only one site is ever worked on at a time, so check them by hand before running again",
            in_flight.join(" and ")
        ));
    }
    if problems.is_empty() {
        Ok(decisions)
    } else {
        Err(Error::Usage(format!(
            "refused, nothing was changed:\n  - {}",
            problems.join("\n  - ")
        )))
    }
}

async fn get(site: &Site, conn: &Conn) -> Result<Mattermost, Error> {
    conn.api.get_opt(&site.mattermost.name).await?.ok_or_else(|| {
        Error::NotFound(format!(
            "site {}: Mattermost {}/{}",
            site.name, site.mattermost.namespace, site.mattermost.name
        ))
    })
}

/// Renews the lock at a third of its lifetime while the run goes on.
fn renew_task(plan: &SitePlan, conns: &[Conn], lock: &Lock) -> tokio::task::JoinHandle<()> {
    let ttl = plan.lock_ttl.0;
    let targets: Vec<(Api<Mattermost>, String)> = plan
        .sites
        .iter()
        .zip(conns)
        .map(|(s, c)| (c.api.clone(), s.mattermost.name.clone()))
        .collect();
    let owner = lock.owner.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(ttl / 3).await;
            let renewed = Lock::mine(&owner, ttl);
            for (api, name) in &targets {
                if let Err(e) = progress::take_lock(api, name, &renewed, false).await {
                    eprintln!("warning: renewing the lock on {name}: {e}");
                }
            }
        }
    })
}

async fn release(plan: &SitePlan, conns: &[Conn], taken: &[String], lock: &Lock) {
    for (site, conn) in plan.sites.iter().zip(conns) {
        if taken.contains(&site.name)
            && let Err(e) = progress::release_lock(&conn.api, &site.mattermost.name, lock).await
        {
            eprintln!("warning: releasing the lock on site {}: {e}", site.name);
        }
    }
}

type RunResult = Result<(), Result<Stop, Error>>;

fn stop<T>(message: String) -> Result<T, Result<Stop, Error>> {
    Err(Ok(Stop(message)))
}

async fn run_locked(
    plan: &SitePlan,
    args: &SitesArgs,
    mode: Mode,
    conns: &[Conn],
    decisions: &[Decision],
) -> RunResult {
    let file = args.file.display().to_string();
    preflight(plan, mode, conns, decisions).await?;
    let resuming = decisions.iter().any(|d| matches!(d, Decision::Resume(_)));
    if !resuming {
        gates(plan, &env(None, "", "gate-before"), "before the first site")
            .await
            .map_err(|m| {
                Ok(Stop(format!(
                    "stopped before any site was touched: {m}\n  what to do: fix replication, then run `kubectl mattermost sites {} -f {file}` again",
                    mode.as_str()
                )))
            })?;
    }
    for i in steps::order(mode, decisions) {
        let site = &plan.sites[i];
        match &decisions[i] {
            Decision::Skip(why) => outln!("site {}: skipped: {why}", site.name),
            Decision::Fresh(p) | Decision::Resume(p) => {
                let phase = matches!(decisions[i], Decision::Resume(_)).then_some(p.phase);
                run_site(plan, mode, &file, conns, i, p.clone(), phase).await?;
            }
        }
    }
    Ok(())
}

/// The environment of hooks for `site` at `step`.
fn env(site: Option<(&Site, &str)>, writer: &str, step: &str) -> HookEnv {
    let mut e = HookEnv {
        step: step.to_owned(),
        writer: writer.to_owned(),
        ..HookEnv::default()
    };
    if let Some((s, version)) = site {
        e.site = s.name.clone();
        e.context = s.context.clone().unwrap_or_default();
        e.namespace = s.mattermost.namespace.clone();
        e.name = s.mattermost.name.clone();
        e.version = version.to_owned();
    }
    e
}

/// Every gate in order; `Err` names the first that failed.
async fn gates(plan: &SitePlan, env: &HookEnv, when: &str) -> Result<(), String> {
    for g in &plan.gates {
        match gate::evaluate(g, env).await {
            Ok(detail) => outln!(
                "  gate {} passed {when}{}",
                g.name,
                if detail.is_empty() {
                    String::new()
                } else {
                    format!(" ({detail})")
                }
            ),
            Err(why) => return Err(format!("gate {} failed {when}: {why}", g.name)),
        }
    }
    Ok(())
}

/// Checks every site before anything changes: reachable (done), stable, versions, secrets,
/// capacity, switch usable, and no site drained that this plan did not drain.
async fn preflight(plan: &SitePlan, mode: Mode, conns: &[Conn], decisions: &[Decision]) -> RunResult {
    let mut problems = Vec::new();
    for ((site, conn), d) in plan.sites.iter().zip(conns).zip(decisions) {
        let mm = get(site, conn).await.map_err(Err)?;
        if matches!(d, Decision::Resume(_)) {
            continue;
        }
        let serving = switch::serving(conn.client(), site).await.map_err(Err)?;
        if serving == Some(false) {
            problems.push(format!(
                "site {}: drained ({}) but no plan run drained it; give it its traffic back first, so that one site always serves",
                site.name,
                switch::describe(site)
            ));
        }
        let Decision::Fresh(p) = d else { continue };
        let health = fleet::health(&mm);
        if health != Health::Stable {
            let row = fleet::row(&mm);
            problems.push(format!(
                "site {}: {} is {} ({}); wait until `kubectl mattermost status` says stable",
                site.name,
                key(&mm),
                health.as_str(),
                row.condition.unwrap_or_default()
            ));
        }
        if mode == Mode::Upgrade {
            let facts = Facts::read(&conn.ctx, std::slice::from_ref(&mm))
                .await
                .map_err(Err)?;
            for problem in facts.problems(&mm, &p.version) {
                problems.push(format!("site {}: {problem}", site.name));
            }
        }
        for problem in switch::preflight(conn.client(), site, &mm).await.map_err(Err)? {
            problems.push(format!("site {}: {problem}", site.name));
        }
    }
    if problems.is_empty() {
        outln!("preflight passed on {} sites", plan.sites.len());
        Ok(())
    } else {
        stop(format!(
            "preflight failed, nothing was changed:\n  - {}",
            problems.join("\n  - ")
        ))
    }
}

/// Runs the actions of site `i` left after `phase`, recording each phase once done.
async fn run_site(
    plan: &SitePlan,
    mode: Mode,
    file: &str,
    conns: &[Conn],
    i: usize,
    mut p: Progress,
    phase: Option<Phase>,
) -> RunResult {
    let site = &plan.sites[i];
    let conn = &conns[i];
    let name = site.mattermost.name.as_str();
    let writer = plan.writer_of(site).map(|w| w.name.clone()).unwrap_or_default();
    let hook_env = |step: &str| env(Some((site, &p.version)), &writer, step);
    let others = || {
        plan.sites
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, s)| s.name.clone())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let save = |p: &Progress| {
        let api = conn.api.clone();
        let p = p.clone();
        async move { progress::save(&api, name, &p).await.map_err(Err) }
    };
    if let Some(phase) = phase {
        outln!(
            "site {}: resuming the {} to {} at phase {}",
            site.name,
            mode.as_str(),
            p.version,
            phase.as_str()
        );
    }
    for action in steps::remaining(phase) {
        match action {
            Action::Drain => {
                // Never two sites drained at once: every other site must serve before this one
                // stops serving.
                for (j, other) in plan.sites.iter().enumerate() {
                    if j != i && switch::serving(conns[j].client(), other).await.map_err(Err)? == Some(false)
                    {
                        return stop(format!(
                            "stopped before draining site {}: site {} serves no traffic ({}); give it its traffic back first",
                            site.name,
                            other.name,
                            switch::describe(other)
                        ));
                    }
                }
                if p.restore.is_none() {
                    p.restore = switch::saved_state(conn.client(), site).await.map_err(Err)?;
                }
                p.phase = Phase::Draining;
                save(&p).await?;
                switch::drain(conn.client(), site, &hook_env("drain"))
                    .await
                    .map_err(Err)?;
                let wait = plan.drain_wait(site);
                outln!(
                    "site {}: drained ({}), waiting {wait:?}",
                    site.name,
                    switch::describe(site)
                );
                tokio::time::sleep(wait).await;
                p.phase = Phase::Drained;
            }
            Action::Guard => {
                match &plan.write_guard {
                    WriteGuard::Drained => {}
                    WriteGuard::Command(c) => {
                        hook::run(c, &hook_env("guard")).await.map_err(|e| {
                            Ok(Stop(format!(
                                "stopped: the write guard failed for site {}: {e}\n  site {} is drained and unchanged otherwise; fix the hook and run `kubectl mattermost sites {} -f {file}` again",
                                site.name,
                                site.name,
                                mode.as_str()
                            )))
                        })?;
                    }
                }
                outln!("site {}: writes go to site {writer} only", site.name);
                p.phase = Phase::Guarded;
            }
            Action::Move => {
                progress::patch_spec(&conn.api, name, &p.spec)
                    .await
                    .map_err(Err)?;
                outln!(
                    "site {}: {} {} → {}{}",
                    site.name,
                    mode.as_str(),
                    p.from.as_deref().unwrap_or("?"),
                    p.version,
                    if p.spec["updateJob"]["disabled"] == true {
                        " (update Job skipped: shared database)"
                    } else {
                        ""
                    }
                );
                p.phase = Phase::Upgrading;
            }
            Action::WaitStable => {
                wait_stable(plan, mode, file, site, conn, &p, &others()).await?;
                if let Some(after) = &p.after_stable {
                    // A new generation: wait until the operator has seen it (no rollout follows,
                    // the image is the stable one).
                    progress::patch_spec(&conn.api, name, after).await.map_err(Err)?;
                    wait_stable(plan, mode, file, site, conn, &p, &others()).await?;
                }
                outln!("site {}: stable at {}", site.name, p.version);
                p.phase = Phase::Stable;
            }
            Action::Verify => {
                let mm = get(site, conn).await.map_err(Err)?;
                if !fleet::upgraded(&mm, &p.version) {
                    return stop(format!(
                        "stopped: site {} is no longer stable at {} ({}); it stays drained. Check `kubectl mattermost status -n {} {name}`, then run `kubectl mattermost sites {} -f {file}` again",
                        site.name,
                        p.version,
                        fleet::health(&mm).as_str(),
                        site.mattermost.namespace,
                        mode.as_str()
                    ));
                }
                gates(plan, &hook_env("gate-verify"), &format!("before traffic returns to site {}", site.name))
                    .await
                    .map_err(|m| {
                        let back = rollback_hint(mode, file, site);
                        Ok(Stop(format!(
                            "stopped: {m}\n  site {} is stable at {} and stays drained (no user traffic); the other sites ({}) are untouched by this step and serve.\n  what to do:\n  - fix replication, then run `kubectl mattermost sites {} -f {file}` again: it resumes at site {} (gates, then traffic back){back}",
                            site.name,
                            p.version,
                            others(),
                            mode.as_str(),
                            site.name
                        )))
                    })?;
                p.phase = Phase::Verified;
            }
            Action::Restore => {
                switch::restore(conn.client(), site, &hook_env("restore"), p.restore.as_ref())
                    .await
                    .map_err(Err)?;
                outln!(
                    "site {}: traffic restored ({})",
                    site.name,
                    switch::describe(site)
                );
                p.phase = Phase::Restored;
            }
            Action::Finish => {
                if let WriteGuard::Command(c) = &plan.write_guard {
                    hook::run(c, &hook_env("unguard")).await.map_err(|e| {
                        Ok(Stop(format!(
                            "stopped: lifting the write guard failed after site {}: {e}\n  site {} serves again; fix the hook and run `kubectl mattermost sites {} -f {file}` again",
                            site.name,
                            site.name,
                            mode.as_str()
                        )))
                    })?;
                }
                gates(plan, &hook_env("gate-after"), &format!("after traffic returned to site {}", site.name))
                    .await
                    .map_err(|m| {
                        Ok(Stop(format!(
                            "stopped: {m}\n  site {} serves again at {}; no further site was touched.\n  what to do: fix replication, then run `kubectl mattermost sites {} -f {file}` again (it re-checks the gates, then continues)",
                            site.name,
                            p.version,
                            mode.as_str()
                        )))
                    })?;
                outln!("site {}: done", site.name);
                p.phase = Phase::Done;
            }
        }
        save(&p).await?;
    }
    Ok(())
}

/// The way back offered when an upgrade stops on `site` (none when a rollback stops).
fn rollback_hint(mode: Mode, file: &str, site: &Site) -> String {
    match mode {
        Mode::Upgrade => format!(
            "\n  - or go back: `kubectl mattermost sites rollback -f {file}` returns site {} to its last stable version, then gives its traffic back",
            site.name
        ),
        Mode::Rollback => String::new(),
    }
}

/// Waits until the site is stable at `p.version`; stops on a blocked upgrade or the timeout.
async fn wait_stable(
    plan: &SitePlan,
    mode: Mode,
    file: &str,
    site: &Site,
    conn: &Conn,
    p: &Progress,
    others: &str,
) -> RunResult {
    let deadline = Instant::now() + plan.stable_timeout.0;
    let mut last = String::new();
    loop {
        let mm = get(site, conn).await.map_err(Err)?;
        if fleet::upgraded(&mm, &p.version) {
            return Ok(());
        }
        let row = fleet::row(&mm);
        let why = match (
            row.health.is_failure() && mm.spec.version() == p.version,
            Instant::now() > deadline,
        ) {
            (true, _) => Some(format!(
                "is {} ({}: {})",
                row.health.as_str(),
                row.condition.clone().unwrap_or_default(),
                row.message.clone().unwrap_or_default()
            )),
            (false, true) => Some(format!(
                "is not stable at {} after {:?}",
                p.version, plan.stable_timeout.0
            )),
            _ => None,
        };
        if let Some(why) = why {
            let back = rollback_hint(mode, file, site);
            return stop(format!(
                "stopped: site {} {why}\n  site {} stays drained (no user traffic); the other sites ({others}) are untouched by this step and serve.\n  what to do:\n  - inspect: `kubectl mattermost status -n {} {}`\n  - fix the cause, then run `kubectl mattermost sites {} -f {file}` again: it resumes waiting{back}",
                site.name,
                site.name,
                site.mattermost.namespace,
                site.mattermost.name,
                mode.as_str()
            ));
        }
        let now = format!("{} {}/{}", row.health.as_str(), row.ready, row.replicas);
        if now != last {
            outln!("site {}: {now}", site.name);
            last = now;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
