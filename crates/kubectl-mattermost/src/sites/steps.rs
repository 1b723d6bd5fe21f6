//! The pure step planner: from the plan and what each site's `Mattermost` says (version, status,
//! recorded progress), what is left to do, in order. `sites plan` prints it; `sites upgrade` and
//! `sites rollback` run it.

use mattermost_api::v1beta1::Mattermost;
use serde::Serialize;
use serde_json::json;

use super::plan::{SitePlan, WriteGuard};
use super::progress::{Mode, Phase, Progress};
use super::switch;
use crate::fleet;

/// The actions of one site, in order, each with the phase recorded once it is done.
pub const ACTIONS: [(Action, Phase); 7] = [
    (Action::Drain, Phase::Drained),
    (Action::Guard, Phase::Guarded),
    (Action::Move, Phase::Upgrading),
    (Action::WaitStable, Phase::Stable),
    (Action::Verify, Phase::Verified),
    (Action::Restore, Phase::Restored),
    (Action::Finish, Phase::Done),
];

/// One action on a site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Record the switch's state, drain, wait.
    Drain,
    /// Make another site the only writer.
    Guard,
    /// Patch `spec` (version, and the update Job setting with a shared database).
    Move,
    /// Wait until stable at the version, then undo temporary spec settings.
    WaitStable,
    /// The gates, before traffic returns.
    Verify,
    /// Give the traffic back.
    Restore,
    /// Lift the write guard and run the gates again.
    Finish,
}

/// The actions left after `phase` (all of them for a fresh site).
pub fn remaining(phase: Option<Phase>) -> Vec<Action> {
    ACTIONS
        .iter()
        // A site recorded as `draining` drains again: the restore value is already saved.
        .filter(|(_, done)| phase.is_none_or(|p| *done > p))
        .map(|(a, _)| *a)
        .collect()
}

/// What to do with one site.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Nothing: already there (or, for a rollback, not upgraded by this plan).
    Skip(String),
    /// Start from the beginning with this progress (phase not yet recorded).
    Fresh(Progress),
    /// Continue the recorded progress.
    Resume(Progress),
}

impl Decision {
    /// The progress to run, if any.
    pub fn progress(&self) -> Option<&Progress> {
        match self {
            Decision::Skip(_) => None,
            Decision::Fresh(p) | Decision::Resume(p) => Some(p),
        }
    }
}

/// Decides what `mode` does with site `index` of `plan`, whose Mattermost is `mm` with recorded
/// `progress`. `Err` when the site is mid-way through the other command.
pub fn decide(
    plan: &SitePlan,
    mode: Mode,
    index: usize,
    mm: &Mattermost,
    progress: Option<Progress>,
) -> Result<Decision, String> {
    let site = &plan.sites[index];
    let serving_version = mm.status.as_ref().and_then(|s| s.version.clone());
    match (mode, progress.filter(Progress::in_flight)) {
        (Mode::Upgrade, Some(p)) if p.mode == Mode::Upgrade && p.version == plan.version => {
            Ok(Decision::Resume(p))
        }
        (Mode::Rollback, Some(p)) if p.mode == Mode::Rollback => Ok(Decision::Resume(p)),
        (Mode::Upgrade, Some(p)) => Err(format!(
            "site {}: an unfinished {} to {} is recorded (phase {}); finish it first with `kubectl mattermost sites {}`",
            site.name,
            p.mode.as_str(),
            p.version,
            p.phase.as_str(),
            p.mode.as_str()
        )),
        (Mode::Rollback, Some(p)) => {
            // An upgrade stopped mid-way: roll back from where it stands, keeping the drain.
            let Some((version, spec)) = fleet::rollback_spec(mm) else {
                return Err(format!(
                    "site {}: an upgrade is in flight but there is no stable version to go back to",
                    site.name
                ));
            };
            let phase = if p.phase >= Phase::Restored {
                None
            } else {
                Some(p.phase.min(Phase::Guarded))
            };
            let rollback = Progress {
                mode: Mode::Rollback,
                version,
                from: serving_version,
                phase: phase.unwrap_or(Phase::Draining),
                restore: p.restore.filter(|_| phase.is_some()),
                spec,
                after_stable: p.after_stable,
            };
            Ok(match phase {
                Some(_) => Decision::Resume(rollback),
                None => Decision::Fresh(rollback),
            })
        }
        (Mode::Upgrade, None) => {
            if fleet::upgraded(mm, &plan.version) {
                return Ok(Decision::Skip(format!("already stable at {}", plan.version)));
            }
            let mut spec = json!({ "version": plan.version });
            let mut after_stable = None;
            let disabled = mm.spec.update_job.as_ref().and_then(|u| u.disabled);
            if plan.shared_database && index > 0 && disabled != Some(true) {
                // The first site migrated the shared schema; this one only rolls its pods.
                spec["updateJob"] = json!({ "disabled": true });
                after_stable = Some(json!({ "updateJob": { "disabled": disabled } }));
            }
            Ok(Decision::Fresh(Progress {
                mode: Mode::Upgrade,
                version: plan.version.clone(),
                from: serving_version,
                phase: Phase::Draining,
                restore: None,
                spec,
                after_stable,
            }))
        }
        (Mode::Rollback, None) => {
            if mm.spec.version() != plan.version {
                return Ok(Decision::Skip(format!(
                    "not upgraded to {} (asks for {})",
                    plan.version,
                    mm.spec.version()
                )));
            }
            let Some((version, spec)) = fleet::rollback_spec(mm) else {
                return Ok(Decision::Skip("no stable version to go back to".into()));
            };
            Ok(Decision::Fresh(Progress {
                mode: Mode::Rollback,
                version,
                from: serving_version,
                phase: Phase::Draining,
                restore: None,
                spec,
                after_stable: None,
            }))
        }
    }
}

/// Order in which `mode` visits the sites: a site mid-way first, then plan order (upgrade) or
/// reverse plan order (rollback: the last upgraded goes back first).
pub fn order(mode: Mode, decisions: &[Decision]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..decisions.len()).collect();
    if mode == Mode::Rollback {
        idx.reverse();
    }
    idx.sort_by_key(|i| !matches!(decisions[*i], Decision::Resume(_)));
    idx
}

/// One line of `sites plan`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    /// The site, or `*` for plan-wide steps.
    pub site: String,
    /// What happens.
    pub action: String,
    /// Details: versions, switch, writer, gates.
    pub detail: String,
}

fn gate_names(plan: &SitePlan) -> String {
    if plan.gates.is_empty() {
        "none configured".to_owned()
    } else {
        plan.gates
            .iter()
            .map(|g| g.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Every step `mode` takes over `decisions` (one per site, plan order), in execution order.
pub fn steps(plan: &SitePlan, mode: Mode, decisions: &[Decision]) -> Vec<Step> {
    let step = |site: &str, action: &str, detail: String| Step {
        site: site.to_owned(),
        action: action.to_owned(),
        detail,
    };
    let mut out = vec![step(
        "*",
        "preflight",
        "every site: reachable, stable, versions, secrets, capacity, switch".into(),
    )];
    let resuming = decisions.iter().any(|d| matches!(d, Decision::Resume(_)));
    if !resuming && decisions.iter().any(|d| d.progress().is_some()) {
        out.push(step(
            "*",
            "gates",
            format!("before the first site: {}", gate_names(plan)),
        ));
    }
    for i in order(mode, decisions) {
        let site = &plan.sites[i];
        let name = site.name.as_str();
        let p = match &decisions[i] {
            Decision::Skip(why) => {
                out.push(step(name, "skip", why.clone()));
                continue;
            }
            Decision::Fresh(p) | Decision::Resume(p) => p,
        };
        let phase = matches!(decisions[i], Decision::Resume(_)).then_some(p.phase);
        if let Some(phase) = phase {
            out.push(step(
                name,
                "resume",
                format!("{} recorded at phase {}", mode.as_str(), phase.as_str()),
            ));
        }
        let writer = plan.writer_of(site).map(|w| w.name.clone()).unwrap_or_default();
        let from = p.from.as_deref().unwrap_or("?");
        for a in remaining(phase) {
            let (action, detail) = match a {
                Action::Drain => (
                    "drain",
                    format!(
                        "{} to 0, then wait {:?}",
                        switch::describe(site),
                        plan.drain_wait(site)
                    ),
                ),
                Action::Guard => (
                    "guard writes",
                    match &plan.write_guard {
                        WriteGuard::Drained => {
                            format!("{writer} is the only writer (built-in: a drained site takes no writes)")
                        }
                        WriteGuard::Command(c) => format!("`{c}` with WRITER={writer}"),
                    },
                ),
                Action::Move => (
                    mode.as_str(),
                    format!(
                        "{from} → {}{}",
                        p.version,
                        if p.spec["updateJob"]["disabled"] == true {
                            " (update Job skipped: shared database, migrated by the first site)"
                        } else if mode == Mode::Rollback {
                            " (no update Job: a known stable version)"
                        } else {
                            " (update Job runs the migration)"
                        }
                    ),
                ),
                Action::WaitStable => (
                    "wait stable",
                    format!(
                        "status stable at {} (timeout {:?})",
                        p.version, plan.stable_timeout.0
                    ),
                ),
                Action::Verify => ("gates", format!("before traffic returns: {}", gate_names(plan))),
                Action::Restore => (
                    "restore",
                    format!("{} back to its previous value", switch::describe(site)),
                ),
                Action::Finish => (
                    "gates",
                    format!(
                        "{}after traffic returned: {}",
                        if matches!(plan.write_guard, WriteGuard::Command(_)) {
                            "lift the write guard; "
                        } else {
                            ""
                        },
                        gate_names(plan)
                    ),
                ),
            };
            out.push(step(name, action, detail));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mattermost_api::v1beta1::MattermostStatus;

    fn plan() -> SitePlan {
        SitePlan::parse(
            r#"
version: 9.11.1
sharedDatabase: true
drainWait: 2s
gates: [{name: lag, command: "true"}]
sites:
  - {name: a, mattermost: {namespace: n, name: mm}, switch: {externalDns: {kind: Service, name: mm}}}
  - {name: b, context: b, mattermost: {namespace: n, name: mm}, switch: {externalDns: {kind: Service, name: mm}}}
"#,
        )
        .unwrap()
    }

    fn mm(spec_version: &str, serving: &str, state: &str) -> Mattermost {
        let mut mm: Mattermost = serde_json::from_value(json!({
            "apiVersion": "installation.mattermost.com/v1beta1", "kind": "Mattermost",
            "metadata": {"name": "mm", "namespace": "n", "generation": 1},
            "spec": {"version": spec_version},
        }))
        .unwrap();
        mm.status = Some(MattermostStatus {
            state: Some(state.into()),
            version: Some(serving.into()),
            observed_generation: Some(1),
            last_stable_version: Some(serving.into()),
            previous_stable_version: Some("9.11.0".into()),
            ..Default::default()
        });
        mm
    }

    #[test]
    fn only_the_first_site_runs_the_update_job_with_a_shared_database() {
        let plan = plan();
        let old = mm("9.11.0", "9.11.0", "stable");
        let a = decide(&plan, Mode::Upgrade, 0, &old, None).unwrap();
        let b = decide(&plan, Mode::Upgrade, 1, &old, None).unwrap();
        assert_eq!(a.progress().unwrap().spec, json!({"version": "9.11.1"}));
        assert_eq!(
            b.progress().unwrap().spec,
            json!({"version": "9.11.1", "updateJob": {"disabled": true}})
        );
        assert_eq!(
            b.progress().unwrap().after_stable,
            Some(json!({"updateJob": {"disabled": null}}))
        );
        let mut separate = plan.clone();
        separate.shared_database = false;
        let b = decide(&separate, Mode::Upgrade, 1, &old, None).unwrap();
        assert_eq!(b.progress().unwrap().spec, json!({"version": "9.11.1"}));
    }

    #[test]
    fn the_planner_lists_every_step_in_order_and_skips_done_sites() {
        let plan = plan();
        let old = mm("9.11.0", "9.11.0", "stable");
        let d: Vec<Decision> = (0..2)
            .map(|i| decide(&plan, Mode::Upgrade, i, &old, None).unwrap())
            .collect();
        let s = steps(&plan, Mode::Upgrade, &d);
        let lines: Vec<String> = s.iter().map(|s| format!("{} {}", s.site, s.action)).collect();
        assert_eq!(
            lines,
            [
                "* preflight",
                "* gates",
                "a drain",
                "a guard writes",
                "a upgrade",
                "a wait stable",
                "a gates",
                "a restore",
                "a gates",
                "b drain",
                "b guard writes",
                "b upgrade",
                "b wait stable",
                "b gates",
                "b restore",
                "b gates",
            ]
        );
        assert!(s[3].detail.contains("b is the only writer"), "{:?}", s[3]);
        assert!(s[11].detail.contains("update Job skipped"), "{:?}", s[11]);
        // Site a done, b recorded mid-way: b first, from its phase; no plan-wide gate again.
        let new = mm("9.11.1", "9.11.1", "stable");
        let mut p = d[1].progress().unwrap().clone();
        p.phase = Phase::Upgrading;
        let d = vec![
            decide(&plan, Mode::Upgrade, 0, &new, None).unwrap(),
            decide(&plan, Mode::Upgrade, 1, &old, Some(p)).unwrap(),
        ];
        let lines: Vec<String> = steps(&plan, Mode::Upgrade, &d)
            .iter()
            .map(|s| format!("{} {}", s.site, s.action))
            .collect();
        assert_eq!(
            lines,
            [
                "* preflight",
                "b resume",
                "b wait stable",
                "b gates",
                "b restore",
                "b gates",
                "a skip"
            ]
        );
    }

    #[test]
    fn a_rollback_takes_over_a_stopped_upgrade_without_draining_again() {
        let plan = plan();
        let upgraded = mm("9.11.1", "9.11.1", "stable");
        let mut stopped = decide(&plan, Mode::Upgrade, 0, &mm("9.11.0", "9.11.0", "stable"), None)
            .unwrap()
            .progress()
            .unwrap()
            .clone();
        stopped.phase = Phase::Stable;
        stopped.restore = Some(json!("100"));
        // The upgrade cannot start over it...
        assert!(
            decide(
                &plan,
                Mode::Upgrade,
                0,
                &upgraded,
                Some(Progress {
                    mode: Mode::Rollback,
                    ..stopped.clone()
                })
            )
            .is_err()
        );
        // ...the rollback resumes it: still drained and guarded, back to 9.11.0, same weight.
        let Decision::Resume(r) = decide(&plan, Mode::Rollback, 0, &upgraded, Some(stopped)).unwrap() else {
            panic!()
        };
        assert_eq!(
            (r.mode, r.phase, r.version.as_str()),
            (Mode::Rollback, Phase::Guarded, "9.11.0")
        );
        assert_eq!(r.restore, Some(json!("100")));
        assert_eq!(remaining(Some(r.phase))[0], Action::Move);
        // A site the plan did not upgrade is left alone.
        let other = decide(&plan, Mode::Rollback, 1, &mm("9.11.0", "9.11.0", "stable"), None).unwrap();
        assert!(matches!(other, Decision::Skip(_)));
        assert_eq!(order(Mode::Rollback, &[other.clone(), other]), [1, 0]);
    }

    #[test]
    fn remaining_actions_follow_the_recorded_phase() {
        assert_eq!(remaining(None).len(), 7);
        assert_eq!(remaining(Some(Phase::Draining))[0], Action::Drain);
        assert_eq!(remaining(Some(Phase::Upgrading))[0], Action::WaitStable);
        assert!(remaining(Some(Phase::Done)).is_empty());
    }
}
