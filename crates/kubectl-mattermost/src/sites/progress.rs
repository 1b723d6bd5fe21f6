//! What `sites` records on each site's `Mattermost`: the progress of the site's step (so a re-run
//! resumes where a killed one stopped) and the lock (so two people cannot run a plan at once).

use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use mattermost_api::v1beta1::Mattermost;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::Error;

/// Progress of the site's current step (JSON).
pub const PROGRESS_ANNOTATION: &str = "sites.installation.mattermost.com/progress";
/// The lock: owner, host, pid and expiry (JSON).
pub const LOCK_ANNOTATION: &str = "sites.installation.mattermost.com/lock";
/// Field manager of every write `sites` makes.
pub const FIELD_MANAGER: &str = "kubectl-mattermost-sites";

/// Where a site is in its step, in order. Each phase is recorded once its action is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// The switch's state to restore is recorded; draining has begun.
    Draining,
    /// Traffic is away and the drain wait is over.
    Drained,
    /// The write guard ran: another site is the only writer.
    Guarded,
    /// `spec.version` is patched; the operator is upgrading.
    Upgrading,
    /// Stable at the new version (and the temporary spec settings are undone).
    Stable,
    /// The gates passed before traffic returns.
    Verified,
    /// Traffic is back.
    Restored,
    /// The write guard is lifted and the gates passed again: the site is done.
    Done,
}

impl Phase {
    /// The kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Draining => "draining",
            Phase::Drained => "drained",
            Phase::Guarded => "guarded",
            Phase::Upgrading => "upgrading",
            Phase::Stable => "stable",
            Phase::Verified => "verified",
            Phase::Restored => "restored",
            Phase::Done => "done",
        }
    }
}

/// Upgrade to the plan's version, or rollback to the last stable one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// `sites upgrade`.
    Upgrade,
    /// `sites rollback`.
    Rollback,
}

impl Mode {
    /// The command's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Upgrade => "upgrade",
            Mode::Rollback => "rollback",
        }
    }
}

/// The progress annotation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// Upgrade or rollback.
    pub mode: Mode,
    /// Version the step moves the site to.
    pub version: String,
    /// Version it served before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Last phase done.
    pub phase: Phase,
    /// The switch's state before draining, to give back (a weight, route weights).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<Value>,
    /// Merge patch of `spec` that moves the site (version; image; `updateJob.disabled` when the
    /// schema is migrated by another site).
    pub spec: Value,
    /// Merge patch of `spec` applied once stable, undoing the temporary settings of `spec`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_stable: Option<Value>,
}

impl Progress {
    /// The progress recorded on `mm`, if any.
    pub fn of(mm: &Mattermost) -> Result<Option<Self>, Error> {
        mm.annotations()
            .get(PROGRESS_ANNOTATION)
            .map(|text| {
                serde_json::from_str(text).map_err(|e| {
                    Error::Usage(format!(
                        "{}: annotation {PROGRESS_ANNOTATION} is not readable ({e}); remove it once you know where the site stands",
                        crate::kube_ctx::key(mm)
                    ))
                })
            })
            .transpose()
    }

    /// True while the site is drained or being worked on.
    pub fn in_flight(&self) -> bool {
        self.phase != Phase::Done
    }
}

fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    }
}

/// Records `progress` on the Mattermost `name`.
pub async fn save(api: &Api<Mattermost>, name: &str, progress: &Progress) -> Result<(), Error> {
    let text = serde_json::to_string(progress).map_err(|e| Error::Encode(e.to_string()))?;
    let patch = json!({"metadata": {"annotations": {PROGRESS_ANNOTATION: text}}});
    api.patch(name, &patch_params(), &Patch::Merge(&patch)).await?;
    Ok(())
}

/// A merge patch of `spec` on the Mattermost `name`.
pub async fn patch_spec(api: &Api<Mattermost>, name: &str, spec: &Value) -> Result<(), Error> {
    api.patch(name, &patch_params(), &Patch::Merge(&json!({ "spec": spec })))
        .await?;
    Ok(())
}

/// Who holds the lock of a site, and until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lock {
    /// The person (`--owner`, default `$USER`).
    pub owner: String,
    /// The machine the run is on.
    pub host: String,
    /// The run's process id on that machine.
    pub pid: u32,
    /// RFC 3339; the lock is free after it.
    pub expires: String,
}

impl Lock {
    /// This process's lock for `owner`, expiring `ttl` from now.
    pub fn mine(owner: &str, ttl: std::time::Duration) -> Self {
        let expires = jiff::Timestamp::now()
            .checked_add(jiff::SignedDuration::try_from(ttl).unwrap_or(jiff::SignedDuration::from_secs(600)))
            .unwrap_or_else(|_| jiff::Timestamp::now());
        Self {
            owner: owner.to_owned(),
            host: host(),
            pid: std::process::id(),
            expires: expires.to_string(),
        }
    }

    /// Same run (host and pid): taking it again renews it.
    pub fn same_run(&self, other: &Lock) -> bool {
        self.host == other.host && self.pid == other.pid
    }

    /// `owner (pid P on HOST) until T`.
    pub fn describe(&self) -> String {
        format!(
            "{} (pid {} on {}) until {}",
            self.owner, self.pid, self.host, self.expires
        )
    }
}

/// Whether `me` may take a lock currently held by `held`: free, expired, ours, or left by a run
/// on this machine whose process is gone (a killed run, re-run by hand). `pid_alive` tells.
pub fn may_take(
    held: Option<&Lock>,
    me: &Lock,
    now: jiff::Timestamp,
    pid_alive: impl Fn(u32) -> bool,
) -> Result<(), String> {
    let Some(held) = held else { return Ok(()) };
    if held.same_run(me) {
        return Ok(());
    }
    let expired = held.expires.parse::<jiff::Timestamp>().map_or(true, |t| t <= now);
    if expired {
        return Ok(());
    }
    if held.host == me.host && !pid_alive(held.pid) {
        return Ok(());
    }
    Err(format!("locked by {}", held.describe()))
}

/// The machine's name.
fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".to_owned())
}

/// True when a process `pid` runs on this machine.
pub fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Conflicts tolerated while taking or releasing a lock: the operator writes the status of the
/// same object, which changes its resourceVersion too.
const LOCK_ATTEMPTS: usize = 5;

fn held_lock(mm: &Mattermost) -> Option<Lock> {
    mm.annotations()
        .get(LOCK_ANNOTATION)
        .and_then(|t| serde_json::from_str(t).ok())
}

/// Takes (or renews) the lock on the Mattermost `name`: read, check, then a patch that carries
/// the resourceVersion read, so that of two runs racing for it exactly one wins. A conflict means
/// the object changed since the read: read and check again.
pub async fn take_lock(api: &Api<Mattermost>, name: &str, me: &Lock, break_lock: bool) -> Result<(), Error> {
    let text = serde_json::to_string(me).map_err(|e| Error::Encode(e.to_string()))?;
    for _ in 0..LOCK_ATTEMPTS {
        let mm = api.get(name).await?;
        if !break_lock {
            may_take(held_lock(&mm).as_ref(), me, jiff::Timestamp::now(), pid_alive)
                .map_err(|why| Error::Locked(format!("{}: {why}", crate::kube_ctx::key(&mm))))?;
        }
        let patch = json!({"metadata": {
            "resourceVersion": mm.resource_version(),
            "annotations": {LOCK_ANNOTATION: text},
        }});
        match api.patch(name, &patch_params(), &Patch::Merge(&patch)).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Locked(format!(
        "{name}: changed at every attempt to take the lock; try again"
    )))
}

/// Removes the lock from the Mattermost `name` when this run holds it.
pub async fn release_lock(api: &Api<Mattermost>, name: &str, me: &Lock) -> Result<(), Error> {
    for _ in 0..LOCK_ATTEMPTS {
        let mm = api.get(name).await?;
        if !held_lock(&mm).is_some_and(|h| h.same_run(me)) {
            return Ok(());
        }
        let patch = json!({"metadata": {
            "resourceVersion": mm.resource_version(),
            "annotations": {LOCK_ANNOTATION: null},
        }});
        match api.patch(name, &patch_params(), &Patch::Merge(&patch)).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Locked(format!(
        "{name}: changed at every attempt to release the lock"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock(host: &str, pid: u32, expires: &str) -> Lock {
        Lock {
            owner: "alice".into(),
            host: host.into(),
            pid,
            expires: expires.into(),
        }
    }

    #[test]
    fn the_lock_is_free_when_absent_expired_ours_or_left_by_a_dead_run_here() {
        let now: jiff::Timestamp = "2030-01-01T12:00:00Z".parse().unwrap();
        let me = lock("here", 10, "2030-01-01T12:10:00Z");
        let alive = |_| true;
        assert_eq!(may_take(None, &me, now, alive), Ok(()));
        assert_eq!(may_take(Some(&me), &me, now, alive), Ok(()));
        let expired = lock("there", 7, "2030-01-01T11:59:59Z");
        assert_eq!(may_take(Some(&expired), &me, now, alive), Ok(()));
        let other = lock("there", 7, "2030-01-01T12:05:00Z");
        assert_eq!(
            may_take(Some(&other), &me, now, alive),
            Err("locked by alice (pid 7 on there) until 2030-01-01T12:05:00Z".into())
        );
        // A live run on this machine holds it; a dead one does not.
        let here = lock("here", 11, "2030-01-01T12:05:00Z");
        assert!(may_take(Some(&here), &me, now, alive).is_err());
        assert_eq!(may_take(Some(&here), &me, now, |_| false), Ok(()));
        // A run elsewhere cannot be checked: only expiry frees it.
        assert!(may_take(Some(&other), &me, now, |_| false).is_err());
    }

    #[test]
    fn progress_round_trips_and_phases_are_ordered() {
        let p = Progress {
            mode: Mode::Upgrade,
            version: "10.5.1".into(),
            from: Some("10.5.0".into()),
            phase: Phase::Guarded,
            restore: Some(json!("100")),
            spec: json!({"version": "10.5.1", "updateJob": {"disabled": true}}),
            after_stable: Some(json!({"updateJob": {"disabled": null}})),
        };
        let text = serde_json::to_string(&p).unwrap();
        assert!(text.contains(r#""phase":"guarded""#), "{text}");
        assert_eq!(serde_json::from_str::<Progress>(&text).unwrap(), p);
        assert!(Phase::Draining < Phase::Upgrading && Phase::Verified < Phase::Done);
    }
}
