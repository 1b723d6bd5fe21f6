//! `spec.monitoring`: the PodMonitor of the Mattermost pods, only where the Prometheus Operator's
//! CRD is installed. Installations without monitoring cost no request: the CRD is looked up only
//! when monitoring is on, and a prune is tried only when the `MonitoringConfigured` condition
//! shows this operator dealt with monitoring before.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::DeleteParams;
use kube::{Client, Resource};
use mattermost_api::v1beta1::Mattermost;
use tracing::{info, warn};

use crate::apply::{self, Applied, ApplyError};
use crate::desired::names::Names;
use crate::desired::pod_monitor::{self, PodMonitor};
use crate::status::MONITORING;
use crate::status::conditions::{condition, find, remove, upsert};

/// Condition reason while the PodMonitor CRD is absent.
pub const CRD_NOT_INSTALLED: &str = "CRDNotInstalled";
/// Condition reason once the PodMonitor exists.
pub const POD_MONITOR_CREATED: &str = "PodMonitorCreated";
/// Condition reason when the API discovery of the CRD failed.
pub const DISCOVERY_FAILED: &str = "DiscoveryFailed";

/// What this reconcile did about monitoring; turned into the condition by [`set_condition`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Monitoring is off and nothing of ours is left: no condition.
    Off,
    /// The PodMonitor exists as desired.
    Created {
        /// Its name.
        name: String,
    },
    /// The Prometheus Operator CRDs are not installed; nothing was created.
    CrdNotInstalled,
    /// Creating or deleting the PodMonitor failed; tried again on the next reconcile.
    Failed {
        /// Stable reason.
        reason: &'static str,
        /// For humans.
        message: String,
    },
}

/// Whether `monitoring.coreos.com/v1` serves `podmonitors`: one discovery request, which every
/// authenticated client may make (no RBAC rule needed).
pub async fn pod_monitor_crd_installed(client: &Client) -> Result<bool, kube::Error> {
    let api_version = PodMonitor::api_version(&());
    match client.list_api_group_resources(&api_version).await {
        Ok(list) => Ok(list.resources.iter().any(|r| r.name == PodMonitor::plural(&()))),
        // An absent group is a plain-text "404 page not found", which kube turns into a Status
        // without the NotFound reason: the code is what to test.
        Err(kube::Error::Api(status)) if status.code == 404 || status.is_not_found() => Ok(false),
        Err(e) => Err(e),
    }
}

/// Creates, updates or prunes the PodMonitor of `mm`. Never fails the reconcile: monitoring is an
/// add-on, its problems show in the condition only.
pub async fn reconcile(client: &Client, mm: &Mattermost, names: &Names, uid: &str) -> Outcome {
    let Some(desired) = pod_monitor::pod_monitor(mm, names) else {
        return prune(client, mm, names, uid).await;
    };
    match pod_monitor_crd_installed(client).await {
        Ok(true) => {}
        Ok(false) => return Outcome::CrdNotInstalled,
        Err(e) => {
            warn!(error = %crate::redact::api_message(&e), "discovery of the PodMonitor CRD failed");
            return Outcome::Failed {
                reason: DISCOVERY_FAILED,
                message: format!(
                    "looking up {} in API discovery failed: {}",
                    PodMonitor::api_version(&()),
                    crate::redact::api_message(&e)
                ),
            };
        }
    }
    match apply::ensure_uncached(client, desired, uid).await {
        Ok(applied) => {
            if applied.written() {
                info!(pod_monitor = %names.app, "PodMonitor applied");
            }
            Outcome::Created {
                name: names.app.clone(),
            }
        }
        Err(e) => failed(&e),
    }
}

/// Deletes our PodMonitor after monitoring was turned off, only when the condition shows we had
/// been managing monitoring (so installations that never enabled it send nothing).
async fn prune(client: &Client, mm: &Mattermost, names: &Names, uid: &str) -> Outcome {
    let had_monitoring = mm
        .status
        .as_ref()
        .is_some_and(|s| find(&s.conditions, MONITORING).is_some());
    if !had_monitoring {
        return Outcome::Off;
    }
    let deleted = apply::delete_owned::<PodMonitor>(
        client,
        &names.namespace,
        &names.app,
        None,
        uid,
        &DeleteParams::default(),
    )
    .await;
    match deleted {
        Ok(Applied::Written(_)) => {
            info!(pod_monitor = %names.app, "PodMonitor deleted: monitoring is off");
            Outcome::Off
        }
        Ok(Applied::Unchanged) => Outcome::Off,
        Err(e) => failed(&e),
    }
}

fn failed(e: &ApplyError) -> Outcome {
    warn!(reason = e.reason(), error = %e, "PodMonitor not reconciled");
    Outcome::Failed {
        reason: e.reason(),
        message: e.to_string(),
    }
}

/// Sets (or, when off, removes) the `MonitoringConfigured` condition.
pub fn set_condition(conds: &mut Vec<Condition>, outcome: &Outcome, generation: Option<i64>, now: &Time) {
    let c = match outcome {
        Outcome::Off => return remove(conds, MONITORING),
        Outcome::Created { name } => condition(
            MONITORING,
            true,
            POD_MONITOR_CREATED,
            format!("PodMonitor {name} scrapes port metrics (8067) of the Mattermost pods"),
            generation,
            now,
        ),
        Outcome::CrdNotInstalled => condition(
            MONITORING,
            false,
            CRD_NOT_INSTALLED,
            format!(
                "no PodMonitor created: the API server does not serve {} podmonitors; install the Prometheus Operator CRDs (monitoring.coreos.com_podmonitors.yaml) and the PodMonitor is created on the next reconcile",
                PodMonitor::api_version(&())
            ),
            generation,
            now,
        ),
        Outcome::Failed { reason, message } => {
            condition(MONITORING, false, reason, message.clone(), generation, now)
        }
    };
    upsert(conds, c);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Time {
        Time("2026-01-01T00:00:00Z".parse().unwrap())
    }

    #[test]
    fn condition_says_why_nothing_was_created_and_goes_away_when_off() {
        let mut conds = vec![];
        set_condition(&mut conds, &Outcome::CrdNotInstalled, Some(1), &now());
        let c = find(&conds, MONITORING).unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", CRD_NOT_INSTALLED)
        );
        assert!(
            c.message.contains("install the Prometheus Operator CRDs"),
            "{}",
            c.message
        );

        let created = Outcome::Created {
            name: "chat".to_owned(),
        };
        set_condition(&mut conds, &created, Some(2), &now());
        let c = find(&conds, MONITORING).unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", POD_MONITOR_CREATED)
        );
        assert!(c.message.contains("PodMonitor chat"));

        let failed = Outcome::Failed {
            reason: "ChildNameConflict",
            message: "taken".to_owned(),
        };
        set_condition(&mut conds, &failed, Some(2), &now());
        assert_eq!(find(&conds, MONITORING).unwrap().reason, "ChildNameConflict");

        set_condition(&mut conds, &Outcome::Off, Some(3), &now());
        assert!(conds.is_empty());
    }
}
