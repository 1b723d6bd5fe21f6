//! `MattermostStatus`: the Go operator's keys (`state`, `image`, `version`, `endpoint`, ...) that
//! fleet tools read, plus standard conditions.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Coarse state with the Go operator's meaning: `reconciling` until at least one pod of the
/// current revision serves, `ready` while the rollout finishes, `stable` when all replicas run
/// the current revision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunningState {
    /// The operator is converging the installation.
    Reconciling,
    /// At least one pod of the current revision serves.
    Ready,
    /// Every replica runs the current revision.
    Stable,
}

impl RunningState {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            RunningState::Reconciling => "reconciling",
            RunningState::Ready => "ready",
            RunningState::Stable => "stable",
        }
    }

    /// Parses the wire value; anything else (e.g. an empty string) is `None`.
    pub fn parse(s: &str) -> Option<Self> {
        [
            RunningState::Reconciling,
            RunningState::Ready,
            RunningState::Stable,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}

/// Observed state of a Mattermost installation.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MattermostStatus {
    /// reconciling, ready or stable (a string so that any value an older operator stored still
    /// parses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Image repository the pods of the current revision run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Version (tag or digest) the pods of the current revision run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Load balancer address or ingress host, or "not available".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Pods of the Deployment (all revisions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Available pods of the current revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_replicas: Option<i32>,
    /// Generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Last error, empty when healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Result of the resource patches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_patch: Option<ResourcePatchStatus>,
    /// Last version that reached `stable`; rolling back to it skips the update Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_stable_version: Option<String>,
    /// Image of the last version that reached `stable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_stable_image: Option<String>,
    /// The stable version before the last one: setting it back is the documented rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_stable_version: Option<String>,
    /// Image of the previous stable version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_stable_image: Option<String>,
    /// Image reference whose rollout was rolled back automatically; while the spec still asks for
    /// it, the last stable version keeps running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back_from: Option<String>,
    /// The last database backup taken before an upgrade (`spec.upgrade.backup`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup: Option<LastBackup>,
    /// Standard conditions: Ready, Progressing, Degraded and one per dependency.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// Result of the resource patches.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourcePatchStatus {
    /// Service patch result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_patch: Option<PatchStatus>,
    /// Deployment patch result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_patch: Option<PatchStatus>,
}

/// Result of one patch.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PatchStatus {
    /// The patch was applied.
    #[serde(default)]
    pub applied: bool,
    /// Why it was not applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A database backup the operator took.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastBackup {
    /// Where the dump is, e.g. `s3://bucket/prefix/chat-10.8.1-1a2b3c4d.pgdump`.
    pub location: String,
    /// When the backup Job completed (RFC 3339).
    pub time: String,
    /// The version whose schema the dump holds.
    pub version: String,
}
