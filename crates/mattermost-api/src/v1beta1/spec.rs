//! `MattermostSpec`: every field of the Go operator's `Mattermost` v1beta1 spec, with the same JSON
//! names and meaning. Validation the Go operator only did at reconcile time lives here as CEL
//! rules so that `kubectl apply` fails fast.

// `printcolumn(type_ = ...)` repeats per column inside `#[kube(...)]`, which clippy mistakes for
// a duplicated attribute.
#![allow(clippy::duplicated_attributes)]
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, Container, ContainerPort, EnvVar, LocalObjectReference, PodDNSConfig, PodSecurityContext,
    Probe, ResourceRequirements, SecurityContext, Toleration, TopologySpreadConstraint, Volume, VolumeMount,
};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::status::MattermostStatus;
use super::upgrade::UpgradePolicy;

/// A Mattermost installation: Deployment, Services, Ingress, ServiceAccount and file-store wiring
/// managed by the operator. Field names and semantics follow the Go Mattermost Operator.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "installation.mattermost.com",
    version = "v1beta1",
    kind = "Mattermost",
    plural = "mattermosts",
    shortname = "mm",
    namespaced,
    status = "MattermostStatus",
    derive = "PartialEq",
    derive = "Default",
    cel,
    printcolumn(
        name = "State",
        type_ = "string",
        description = "State of the installation",
        json_path = ".status.state"
    ),
    printcolumn(
        name = "Image",
        type_ = "string",
        description = "Image running",
        json_path = ".status.image"
    ),
    printcolumn(
        name = "Version",
        type_ = "string",
        description = "Version running",
        json_path = ".status.version"
    ),
    printcolumn(
        name = "Endpoint",
        type_ = "string",
        description = "Endpoint",
        json_path = ".status.endpoint"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new(
    "has(self.ingress) || (has(self.ingressName) && self.ingressName != '') || \
     (has(self.useServiceLoadBalancer) && self.useServiceLoadBalancer) || \
     (has(self.awsLoadBalancerController) && self.awsLoadBalancerController.enabled)"
).message("an ingress host is required: set spec.ingress.host (with spec.ingress.enabled: true), or disable the ingress with spec.ingress.enabled: false"))]
#[serde(rename_all = "camelCase")]
pub struct MattermostSpec {
    /// Size preset: 100users, 1000users, 5000users, 10000users, 25000users, cloud10users,
    /// cloud100users, miniSingleton or miniHA. When set it overrides replicas and
    /// scheduling.resources (Go operator semantics); when empty those default to 5000users.
    /// The operator never rewrites the spec; effective values are computed in memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(
        "self in ['', '100users', '1000users', '5000users', '10000users', '25000users', 'cloud10users', 'cloud100users', 'miniSingleton', 'miniHA']"
    ).message("size must be one of 100users, 1000users, 5000users, 10000users, 25000users, cloud10users, cloud100users, miniSingleton, miniHA"))]
    pub size: Option<String>,

    /// Container image repository (default mattermost/mattermost-enterprise-edition), without
    /// tag: `[registry[:port]/]path`, as in `registry.example.com:5000/team/mattermost`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(
        "self == '' || self.matches('^([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\\\\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*(:[0-9]+)?/)?[a-z0-9]+((\\\\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\\\\.|_|__|-+)[a-z0-9]+)*)*$')"
    ).message("image must be an image repository without tag or spaces, such as registry.example.com:5000/mattermost/mattermost-enterprise-edition (the tag goes in version)"))]
    #[schemars(length(max = 255))]
    pub image: Option<String>,

    /// Image tag, or a digest starting with `sha256:` (default 10.8.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == '' || self.matches('^(sha256:[a-f0-9]{64}|[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})$')")
        .message("version must be an image tag or a sha256: digest"))]
    pub version: Option<String>,

    /// Number of Mattermost pods. 0 hibernates the installation. Default from the size preset.
    /// At most 1000: a typo must not create thousands of pods. To allow more, raise the limit in
    /// the installed CRD's rule (docs/mattermost.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0").message("replicas must not be negative"))]
    #[x_kube(validation = Rule::new("self <= 1000").message("replicas must be at most 1000 (the limit is a rule in the CRD; see docs/mattermost.md to raise it)"))]
    pub replicas: Option<i32>,

    /// Extra environment variables for the Mattermost container; they override the operator's
    /// variables of the same name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mattermost_env: Option<Vec<EnvVar>>,

    /// Name of a Secret with the Mattermost license under the key `license`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license_secret: Option<String>,

    /// Deprecated: use ingress.host. Host name of the Ingress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_name: Option<String>,

    /// Deprecated: use ingress.annotations. Annotations of the Ingress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_annotations: Option<BTreeMap<String, String>>,

    /// Deprecated: use ingress.tlsSecret. When true the Ingress uses TLS with the secret
    /// `<host with dots replaced by dashes>-tls-cert`.
    #[serde(rename = "useIngressTLS", default, skip_serializing_if = "Option::is_none")]
    pub use_ingress_tls: Option<bool>,

    /// Expose Mattermost through a Service of type LoadBalancer (ports 80 and 443) instead of an
    /// Ingress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_service_load_balancer: Option<bool>,

    /// Annotations of the Mattermost Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_annotations: Option<BTreeMap<String, String>>,

    /// Labels added to every object the operator creates and to the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_labels: Option<BTreeMap<String, String>>,

    /// Ingress of the installation. When omitted, an Ingress is created from the deprecated
    /// ingressName/ingressAnnotations/useIngressTLS fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<Ingress>,

    /// AWS Load Balancer Controller (ALB) mode: NodePort Service, ALB Ingress and IngressClass.
    #[serde(
        rename = "awsLoadBalancerController",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub aws_load_balancer_controller: Option<AwsLoadBalancerController>,

    /// Extra volumes of the Mattermost pods. Allowed sources: configMap, secret, emptyDir,
    /// persistentVolumeClaim, projected, downwardAPI, csi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new(
        "self.all(v, has(v.configMap) || has(v.secret) || has(v.emptyDir) || has(v.persistentVolumeClaim) || \
         has(v.projected) || has(v.downwardAPI) || has(v.csi))"
    ).message("volumes may only use configMap, secret, emptyDir, persistentVolumeClaim, projected, downwardAPI or csi sources"))]
    pub volumes: Option<Vec<Volume>>,

    /// Extra volume mounts of the Mattermost container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_mounts: Option<Vec<VolumeMount>>,

    /// Image pull policy of the Mattermost container (default IfNotPresent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self in ['', 'Always', 'IfNotPresent', 'Never']")
        .message("imagePullPolicy must be Always, IfNotPresent or Never"))]
    pub image_pull_policy: Option<String>,

    /// Secrets used to pull the Mattermost image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secrets: Option<Vec<LocalObjectReference>>,

    /// DNS configuration of the Mattermost pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_config: Option<PodDNSConfig>,

    /// DNS policy of the Mattermost pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_policy: Option<String>,

    /// Database of the installation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<Database>,

    /// File store of the installation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_store: Option<FileStore>,

    /// Elasticsearch connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elastic_search: Option<ElasticSearch>,

    /// Resources, node selector, affinity and tolerations of the Mattermost pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduling: Option<Scheduling>,

    /// Overrides of the liveness and readiness probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probes: Option<Probes>,

    /// Command, security contexts, annotations and labels of the Mattermost pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template: Option<PodTemplate>,

    /// Strategy and revision history of the Mattermost Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_template: Option<DeploymentTemplate>,

    /// The update Job that runs `mattermost db migrate` with a new image before a rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_job: Option<UpdateJob>,

    /// Dedicated job server Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_server: Option<JobServer>,

    /// Init containers, sidecars and container ports added to the Mattermost pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_extensions: Option<PodExtensions>,

    /// Experimental JSON patches (RFC 6902) applied to the generated Service and Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_patch: Option<ResourcePatch>,

    /// How version changes are checked and rolled out (an addition to the Go operator's API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<UpgradePolicy>,

    /// PodDisruptionBudget of the Mattermost pods, created when more than one replica runs
    /// (an addition to the Go operator's API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_disruption_budget: Option<PodDisruptionBudgetPolicy>,

    /// Scraping of the Mattermost servers' own metrics (port 8067) by the Prometheus Operator:
    /// a PodMonitor, created only when its CRD is installed (an addition to the Go operator's
    /// API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitoring: Option<Monitoring>,
}

/// Prometheus Operator scraping of the Mattermost pods.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Monitoring {
    /// Create a PodMonitor (monitoring.coreos.com/v1) for the `metrics` port of the Mattermost
    /// pods. Default false. Without the Prometheus Operator CRDs nothing is created and the
    /// condition MonitoringConfigured says so; turned off, the PodMonitor is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Labels of the PodMonitor, for the `podMonitorSelector` of a Prometheus (for example
    /// `release: prometheus`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Scrape interval, such as 30s or 1m (default: the Prometheus' own interval).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$')")
        .message("monitoring.interval must be a Prometheus duration such as 30s or 1m"))]
    pub interval: Option<String>,
}

/// PodDisruptionBudget policy.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodDisruptionBudgetPolicy {
    /// Do not manage a PodDisruptionBudget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    /// Pods that may be disrupted at once (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1").message("podDisruptionBudget.maxUnavailable must be at least 1"))]
    pub max_unavailable: Option<i32>,
}

/// Ingress settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new(
    "!self.enabled || (has(self.host) && self.host != '') || (has(self.hosts) && size(self.hosts) > 0)"
).message("ingress.host is required when ingress.enabled is true"))]
#[serde(rename_all = "camelCase")]
pub struct Ingress {
    /// Create an Ingress for the installation.
    pub enabled: bool,
    /// Primary host name; also the site URL (https://host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Additional host names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<IngressHost>>,
    /// Annotations of the Ingress. Keys containing `snippet` and values with line breaks are dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// TLS secret for all hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_secret: Option<String>,
    /// IngressClass name; when unset the annotation `kubernetes.io/ingress.class: nginx` is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_class: Option<String>,
}

/// One additional Ingress host.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IngressHost {
    /// Host name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_name: Option<String>,
}

/// AWS Load Balancer Controller settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new("!self.enabled || (has(self.hosts) && size(self.hosts) > 0)")
    .message("awsLoadBalancerController.hosts is required when awsLoadBalancerController.enabled is true"))]
#[serde(rename_all = "camelCase")]
pub struct AwsLoadBalancerController {
    /// Use an ALB instead of an nginx Ingress.
    #[serde(default)]
    pub enabled: bool,
    /// ACM certificate ARN; enables HTTPS on 443 with a redirect from 80.
    #[serde(rename = "certificateARN", default, skip_serializing_if = "Option::is_none")]
    pub certificate_arn: Option<String>,
    /// Internet-facing instead of internal load balancer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internet_facing: Option<bool>,
    /// Host names of the ALB Ingress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<IngressHost>>,
    /// IngressClass to use; when unset the operator creates one for the installation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_class_name: Option<String>,
    /// Annotations of the ALB Ingress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// Database settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new("!(has(self.external) && has(self.operatorManaged))")
    .message("database: set at most one of external and operatorManaged"))]
#[serde(rename_all = "camelCase")]
pub struct Database {
    /// External database: a Secret with DB_CONNECTION_STRING and optionally
    /// MM_SQLSETTINGS_DATASOURCE, MM_SQLSETTINGS_DATASOURCEREPLICAS, DB_CONNECTION_CHECK_URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalDatabase>,
    /// Operator-managed MySQL. Accepted for compatibility but not supported: the MySQL operator
    /// it relied on is archived; reported as an unsupported configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator_managed: Option<OperatorManagedDatabase>,
    /// Skip the database readiness init container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_readiness_check: Option<bool>,
    /// How the database readiness init container checks the database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_check: Option<ReadinessCheck>,
}

/// External database reference.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExternalDatabase {
    /// Name of the Secret holding the connection settings.
    #[serde(default)]
    pub secret: String,
}

/// Database readiness check.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReadinessCheck {
    /// `external` (curl or pg_isready against DB_CONNECTION_CHECK_URL) or `builtin`
    /// (`mattermost db ping` with the Mattermost image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self in ['external', 'builtin']").message("readinessCheck.mode must be external or builtin"))]
    pub mode: Option<String>,
    /// Timeout of the builtin check, a duration such as 5m (default 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$')")
        .message("readinessCheck.timeout must be a duration such as 30s or 5m"))]
    pub timeout: Option<String>,
}

/// Operator-managed MySQL (not supported by this operator; kept so existing manifests parse).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OperatorManagedDatabase {
    /// Database type (mysql).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Volume size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("isQuantity(self)").message("storageSize must be a quantity such as 50Gi"))]
    pub storage_size: Option<String>,
    /// Database replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Database resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Bucket URL to initialise the database from.
    #[serde(rename = "initBucketURL", default, skip_serializing_if = "Option::is_none")]
    pub init_bucket_url: Option<String>,
    /// Backup schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_schedule: Option<String>,
    /// Backup URL.
    #[serde(rename = "backupURL", default, skip_serializing_if = "Option::is_none")]
    pub backup_url: Option<String>,
    /// Backup remote delete policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_remote_delete_policy: Option<String>,
    /// Backup secret name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_secret_name: Option<String>,
    /// Backup restore secret name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_restore_secret_name: Option<String>,
    /// MySQL version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// File store settings: at most one kind.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new(
    "[has(self.external), has(self.externalVolume), has(self.local), has(self.operatorManaged)].filter(x, x).size() <= 1"
).message("fileStore: set at most one of external, externalVolume, local and operatorManaged"))]
#[serde(rename_all = "camelCase")]
pub struct FileStore {
    /// External S3-compatible store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalFileStore>,
    /// An existing PersistentVolumeClaim mounted at /mattermost/data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_volume: Option<ExternalVolumeFileStore>,
    /// A PersistentVolumeClaim created by the operator and mounted at /mattermost/data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalFileStore>,
    /// Operator-managed MinIO. Accepted for compatibility but not supported: the MinIO operator
    /// it relied on is archived; reported as an unsupported configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator_managed: Option<OperatorManagedMinio>,
}

/// External S3-compatible file store.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new("(has(self.useServiceAccount) && self.useServiceAccount) || (has(self.secret) && self.secret != '')")
    .message("fileStore.external.secret is required unless useServiceAccount is true"))]
#[serde(rename_all = "camelCase")]
pub struct ExternalFileStore {
    /// S3 endpoint, e.g. s3.amazonaws.com.
    #[serde(default)]
    pub url: String,
    /// Bucket name.
    #[serde(default)]
    pub bucket: String,
    /// Secret with the keys `accesskey` and `secretkey`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Use the IAM role of a user-created ServiceAccount named like the installation (IRSA)
    /// instead of access keys; the operator then does not create the ServiceAccount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_service_account: Option<bool>,
}

/// Existing PersistentVolumeClaim used as file store.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExternalVolumeFileStore {
    /// Name of the PersistentVolumeClaim.
    #[serde(default)]
    pub volume_claim_name: String,
}

/// Local file store on a PersistentVolumeClaim created by the operator.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LocalFileStore {
    /// Use the local file store.
    pub enabled: bool,
    /// Size of the claim (default 50Gi).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("isQuantity(self)").message("storageSize must be a quantity such as 50Gi"))]
    pub storage_size: Option<String>,
    /// Access modes of a new claim (default ReadWriteMany); cannot change once created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_modes: Option<Vec<String>>,
    /// What happens to the claim when the Mattermost is deleted: Retain (default) keeps the data,
    /// Delete lets garbage collection remove it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self in ['Retain', 'Delete']").message("retainPolicy must be Retain or Delete"))]
    pub retain_policy: Option<String>,
}

/// Operator-managed MinIO (not supported by this operator; kept so existing manifests parse).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OperatorManagedMinio {
    /// Volume size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("isQuantity(self)").message("storageSize must be a quantity such as 50Gi"))]
    pub storage_size: Option<String>,
    /// MinIO replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// MinIO resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

/// Elasticsearch connection. The password is plain text in the spec, as in the Go operator.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
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

/// Scheduling of the Mattermost pods.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Scheduling {
    /// Resources of the Mattermost container (default from the size preset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Node selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Affinity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Tolerations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// Topology spread of the pods. Default: spread evenly across zones and nodes when possible
    /// (ScheduleAnyway); an empty list turns it off. Applied with the next rollout, never alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,
}

/// Probe overrides: the handler and every non-zero number replace the default.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Probes {
    /// Liveness probe override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<Probe>,
    /// Readiness probe override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<Probe>,
}

/// Pod template settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplate {
    /// Command of the Mattermost container (default ["mattermost"]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Pod security context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<PodSecurityContext>,
    /// Security context of the Mattermost container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_security_context: Option<SecurityContext>,
    /// Extra pod annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_annotations: Option<BTreeMap<String, String>>,
    /// Extra pod labels; they never override the operator's selector labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_labels: Option<BTreeMap<String, String>>,
}

/// Deployment settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentTemplate {
    /// RollingUpdate (default: maxUnavailable 0, maxSurge 1) or Recreate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self in ['', 'RollingUpdate', 'Recreate']")
        .message("deploymentStrategyType must be RollingUpdate or Recreate"))]
    pub deployment_strategy_type: Option<String>,
    /// Old ReplicaSets to keep (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0").message("revisionHistoryLimit must not be negative"))]
    pub revision_history_limit: Option<i32>,
}

/// Update Job settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UpdateJob {
    /// Roll out a new image without running `mattermost db migrate` first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    /// Extra annotations of the Job's pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_annotations: Option<BTreeMap<String, String>>,
    /// Extra labels of the Job's pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_labels: Option<BTreeMap<String, String>>,
}

/// Job server settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JobServer {
    /// Run scheduled jobs in a dedicated single-pod Deployment `<name>-jobserver`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedicated_job_server: Option<bool>,
}

/// Additions to the Mattermost pods.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodExtensions {
    /// Init containers run after the operator's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_containers: Option<Vec<Container>>,
    /// Sidecar containers run next to Mattermost (never in the update Job).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sidecar_containers: Option<Vec<Container>>,
    /// Extra ports of the Mattermost container (e.g. Calls UDP 8443).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_ports: Option<Vec<ContainerPort>>,
}

/// Experimental patches of generated objects.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ResourcePatch {
    /// Patch of the Service. Paths /spec/selector, /spec/externalIPs and /spec/externalName are
    /// forbidden.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(
        "!has(self.patch) || !self.patch.matches('\"path\"\\\\s*:\\\\s*\"/spec/(selector|externalIPs|externalName)')"
    ).message("resourcePatch.service may not patch /spec/selector, /spec/externalIPs or /spec/externalName"))]
    pub service: Option<Patch>,
    /// Patch of the Deployment. Host namespaces, volumes, service account, node selection, init
    /// containers and privilege-related securityContext fields are forbidden.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(
        "!has(self.patch) || (!self.patch.matches('\"path\"\\\\s*:\\\\s*\"/spec/template/spec/(hostNetwork|hostPID|hostIPC|volumes|serviceAccountName|serviceAccount|nodeSelector|nodeName|initContainers)') && \
         !self.patch.matches('\"path\"\\\\s*:\\\\s*\"[^\"]*/securityContext/(privileged|allowPrivilegeEscalation|runAsUser|capabilities)'))"
    ).message("resourcePatch.deployment may not patch host namespaces, volumes, serviceAccount, nodeSelector, nodeName, initContainers or privileged securityContext fields"))]
    pub deployment: Option<Patch>,
}

/// One JSON patch.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Patch {
    /// Ignore this patch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable: Option<bool>,
    /// RFC 6902 JSON patch as a string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    pub patch: Option<String>,
}
