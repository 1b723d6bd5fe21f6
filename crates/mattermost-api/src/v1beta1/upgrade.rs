//! `spec.upgrade`: how a version change is carried out (downgrade guard, automatic rollback,
//! capacity check, the backup before and the verification after the rollout).

use std::collections::BTreeMap;

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// Upgrade policy.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UpgradePolicy {
    /// Allow a version older than the last stable one (other than the previous stable version,
    /// which is the documented rollback and always allowed). Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_downgrade: Option<bool>,
    /// When a rollout exceeds its progress deadline, restore the last stable version (without
    /// running the update Job again). Default false: the rollout stops, old pods keep serving and
    /// the installation reports Degraded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub automatic_rollback: Option<bool>,
    /// Seconds a rollout may go without progress before it counts as failed (default 600, the
    /// Deployment default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 10").message("progressDeadlineSeconds must be at least 10"))]
    pub progress_deadline_seconds: Option<i32>,
    /// Skip the capacity preflight check (free CPU and memory for one surge pod).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_capacity_check: Option<bool>,
    /// Dump the database to object storage before the update Job (opt-in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupPolicy>,
    /// For teams that back up by other means (Velero, managed snapshots): the preflight blocks an
    /// upgrade unless the annotation `installation.mattermost.com/last-backup-time` (RFC 3339, set
    /// by that tooling) or `status.lastBackup` is younger than this Go duration, e.g. `24h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$')")
        .message("requireBackupWithin must be a Go duration such as 24h or 90m"))]
    pub require_backup_within: Option<String>,
    /// Ask the server itself before calling a new version `stable`: a Job pings
    /// `/api/v4/system/ping?get_server_status=true` through the Service (on by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<VerifyPolicy>,
}

/// The database backup before an upgrade: a Job `<name>-backup-<hash>` dumps the database
/// (`pg_dump --format=custom` or `mysqldump`) and uploads it to S3-compatible storage. Credentials
/// are read from the existing Secrets, never from the spec.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackupPolicy {
    /// Run the backup before each update Job. Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Image with the dump tool (`pg_dump` or `mysqldump`); default a Postgres or MySQL client
    /// image matching the database type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Image with the AWS CLI that uploads the dump and applies the retention (default
    /// `amazon/aws-cli`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_image: Option<String>,
    /// S3 endpoint (default the external file store's `url`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Bucket (default the external file store's bucket).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// Key prefix of the dumps (default `mattermost-backups/<name>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Secret with the keys `accesskey` and `secretkey` (default the file store's secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Dumps kept under the prefix; older ones are deleted after an upload (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1").message("backup.keep must be at least 1"))]
    pub keep: Option<i32>,
    /// Extra annotations of the backup Job's pod (for example to keep a mesh sidecar out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_annotations: Option<BTreeMap<String, String>>,
}

/// The verification after a version change.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VerifyPolicy {
    /// Verify a new version before it is `stable`. Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Seconds the server has to answer healthy with the asked-for version (default 120).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 10").message("verify.timeoutSeconds must be at least 10"))]
    pub timeout_seconds: Option<i32>,
    /// Extra annotations of the verification Job's pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_annotations: Option<BTreeMap<String, String>>,
    /// Secret with a bot's access token (key `token`) and a channel id (key `channelId`): the
    /// verification then also reads the bot's user, uploads a file, posts it to the channel,
    /// reads the file back and deletes the post (the upgrade guide's core functions check).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smoke_test_secret: Option<String>,
}
