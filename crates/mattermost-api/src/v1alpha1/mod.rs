//! `mattermost.com/v1alpha1`: the legacy `ClusterInstallation`, kept so existing installations
//! can be migrated to `Mattermost`. Field names follow the Go operator.
#![allow(clippy::duplicated_attributes)] // repeated `printcolumn(type_ = ...)` in `#[kube(...)]`

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, EnvVar, Probe, ResourceRequirements};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A legacy Mattermost installation (deprecated: set `spec.migrate: true` to move it to a
/// `Mattermost` resource).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "mattermost.com",
    version = "v1alpha1",
    kind = "ClusterInstallation",
    plural = "clusterinstallations",
    namespaced,
    status = "ClusterInstallationStatus",
    derive = "PartialEq",
    derive = "Default",
    printcolumn(name = "State", type_ = "string", json_path = ".status.state"),
    printcolumn(name = "Image", type_ = "string", json_path = ".status.image"),
    printcolumn(name = "Version", type_ = "string", json_path = ".status.version"),
    printcolumn(name = "Endpoint", type_ = "string", json_path = ".status.endpoint")
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterInstallationSpec {
    /// Image repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Image tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Size preset (same names as `Mattermost`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    /// Pods; 0 means "from the size".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Resources of the Mattermost container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Host name of the Ingress (required).
    pub ingress_name: String,
    /// Annotations of the Ingress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_annotations: Option<BTreeMap<String, String>>,
    /// Use TLS on the Ingress.
    #[serde(rename = "useIngressTLS", default, skip_serializing_if = "Option::is_none")]
    pub use_ingress_tls: Option<bool>,
    /// Service of type LoadBalancer instead of an Ingress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_service_load_balancer: Option<bool>,
    /// Annotations of the Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_annotations: Option<BTreeMap<String, String>>,
    /// Labels added to every object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_labels: Option<BTreeMap<String, String>>,
    /// Image pull policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    /// Node selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Affinity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Secret with the license under the key `license`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mattermost_license_secret: Option<String>,
    /// Extra environment variables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mattermost_env: Option<Vec<EnvVar>>,
    /// Liveness probe override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<Probe>,
    /// Readiness probe override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<Probe>,
    /// MinIO or external S3 file store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minio: Option<Minio>,
    /// Database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<Database>,
    /// Elasticsearch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elastic_search: Option<ElasticSearch>,
    /// Blue-green deployment (not convertible).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blue_green: Option<BlueGreen>,
    /// Canary deployment (not convertible).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<Canary>,
    /// Migrate this installation to a `Mattermost` resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migrate: Option<bool>,
}

/// File store: external S3 when `externalURL` is set, operator-managed MinIO otherwise.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Minio {
    /// Volume size of operator-managed MinIO.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_size: Option<String>,
    /// MinIO replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// MinIO resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// External S3 endpoint.
    #[serde(rename = "externalURL", default, skip_serializing_if = "Option::is_none")]
    pub external_url: Option<String>,
    /// External bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_bucket: Option<String>,
    /// Secret with `accesskey`/`secretkey`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// Database: external when `secret` is set, operator-managed MySQL otherwise.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Database {
    /// Database type.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Secret with `DB_CONNECTION_STRING` (external database).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Volume size (operator-managed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_size: Option<String>,
    /// Replicas (operator-managed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Resources (operator-managed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Bucket URL to initialise from (operator-managed).
    #[serde(rename = "initBucketURL", default, skip_serializing_if = "Option::is_none")]
    pub init_bucket_url: Option<String>,
    /// Backup schedule (operator-managed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_schedule: Option<String>,
    /// Backup URL (operator-managed).
    #[serde(rename = "backupURL", default, skip_serializing_if = "Option::is_none")]
    pub backup_url: Option<String>,
    /// Backup remote delete policy (operator-managed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_remote_delete_policy: Option<String>,
    /// Backup secret (operator-managed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_secret_name: Option<String>,
    /// Restore secret (operator-managed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_restore_secret_name: Option<String>,
    /// Database version (operator-managed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// Elasticsearch connection.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ElasticSearch {
    /// Connection URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// User name.
    #[serde(rename = "username", default, skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
    /// Password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

/// One colour or the canary of a blue-green/canary installation.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppDeployment {
    /// Deployment name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Ingress host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_name: Option<String>,
    /// Image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_labels: Option<BTreeMap<String, String>>,
}

/// Blue-green settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlueGreen {
    /// Enabled.
    #[serde(default)]
    pub enable: bool,
    /// `blue` or `green`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub production_deployment: Option<String>,
    /// Blue deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blue: Option<AppDeployment>,
    /// Green deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub green: Option<AppDeployment>,
}

/// Canary settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Canary {
    /// Enabled.
    #[serde(default)]
    pub enable: bool,
    /// Canary deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<AppDeployment>,
}

/// Observed state of a ClusterInstallation.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterInstallationStatus {
    /// reconciling or stable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Running version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Running image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Pods of the current revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_replicas: Option<i32>,
    /// Blue deployment name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blue_name: Option<String>,
    /// Green deployment name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub green_name: Option<String>,
    /// Migration progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<MigrationStatus>,
    /// Standard conditions (an addition): `Reconciled` says whether this operator runs the
    /// installation and, if not, why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
}

/// Migration progress.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MigrationStatus {
    /// Current step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Why the migration stopped, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the current step started (an addition): the step deadline counts from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
}

/// Migration steps, as recorded in `status.migration.status`.
pub mod step {
    /// The old Deployment is being deleted with orphan propagation.
    pub const ORPHANING: &str = "OrphaningDeployment";
    /// The new Deployment's pods are starting.
    pub const NEW_DEPLOYMENT: &str = "WaitingForNewPods";
    /// The `Mattermost` exists and takes over.
    pub const HANDOVER: &str = "WaitingForMattermost";
    /// Old ReplicaSets and the `ClusterInstallation` are being deleted.
    pub const CLEANUP: &str = "CleaningUp";
    /// Refused; see `migration.error`.
    pub const REFUSED: &str = "Refused";
    /// Waiting for a slot under `MAX_RECONCILING_INSTALLATIONS`.
    pub const WAITING: &str = "WaitingForSlot";
    /// The cluster lacks room for the new pods; nothing was changed yet.
    pub const NO_CAPACITY: &str = "WaitingForCapacity";
    /// Every step, for the `step` label of `mattermost_operator_migrations`.
    pub const ALL: &[&str] = &[
        WAITING,
        NO_CAPACITY,
        ORPHANING,
        NEW_DEPLOYMENT,
        HANDOVER,
        CLEANUP,
        REFUSED,
    ];

    /// Steps during which pods are doubled: they hold a rollout slot.
    pub const UNDER_WAY: &[&str] = &[ORPHANING, NEW_DEPLOYMENT, HANDOVER, CLEANUP];
}
