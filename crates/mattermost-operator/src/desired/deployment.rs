//! The Mattermost Deployment `<name>` and the job-server Deployment `<name>-jobserver`.
//!
//! The pod template reproduces the Go operator's field for field (labels, env order, ports,
//! probes, init containers): an installation created by the Go operator is then adopted without a
//! new ReplicaSet. Anything new goes outside the pod template.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, HTTPGetAction, PersistentVolumeClaimVolumeSource, PodSpec, PodTemplateSpec,
    Probe, SecretVolumeSource, TopologySpreadConstraint, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use mattermost_api::v1beta1::{FileStoreKind, Mattermost};

use super::env::{self, DATA_DIR, LICENSE_DIR, from_secret};
use super::labels::{self, APP_JOB_SERVER, APP_MATTERMOST};
use super::meta::child_meta;
use super::names::{JOB_SERVER_CONTAINER, MAIN_CONTAINER, Names};
use super::security;
use super::service::{APP_PORT, METRICS_PORT};
use super::{DbType, Inputs};

/// Path both probes call.
pub const PING_PATH: &str = "/api/v4/system/ping";
const DATA_VOLUME: &str = "mattermost-data";
const LICENSE_VOLUME: &str = "mattermost-license";
const DEFAULT_REVISION_HISTORY: i32 = 5;

/// Command of the Mattermost container: `podTemplate.command` or `["mattermost"]`.
pub fn command(mm: &Mattermost) -> Vec<String> {
    let custom = mm
        .spec
        .pod_template
        .as_ref()
        .and_then(|p| p.command.clone())
        .filter(|c| !c.is_empty());
    custom.unwrap_or_else(|| vec!["mattermost".to_owned()])
}

/// Volumes of the pod: the user's, then the file store's, then the license.
pub fn volumes(mm: &Mattermost, names: &Names) -> Vec<Volume> {
    let mut volumes = mm.spec.volumes.clone().unwrap_or_default();
    let claim = match mm.spec.file_store_kind() {
        FileStoreKind::Local => Some(names.app.clone()),
        FileStoreKind::ExternalVolume(claim) => Some(claim.to_owned()),
        _ => None,
    };
    if let Some(claim_name) = claim {
        volumes.push(Volume {
            name: DATA_VOLUME.to_owned(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name,
                read_only: None,
            }),
            ..Default::default()
        });
    }
    if let Some(secret) = license_secret(mm) {
        volumes.push(Volume {
            name: LICENSE_VOLUME.to_owned(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.to_owned()),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    volumes
}

/// Mounts of the Mattermost container, matching [`volumes`].
pub fn volume_mounts(mm: &Mattermost) -> Vec<VolumeMount> {
    let mut mounts = mm.spec.volume_mounts.clone().unwrap_or_default();
    if matches!(
        mm.spec.file_store_kind(),
        FileStoreKind::Local | FileStoreKind::ExternalVolume(_)
    ) {
        mounts.push(VolumeMount {
            name: DATA_VOLUME.to_owned(),
            mount_path: DATA_DIR.to_owned(),
            ..Default::default()
        });
    }
    if license_secret(mm).is_some() {
        mounts.push(VolumeMount {
            name: LICENSE_VOLUME.to_owned(),
            mount_path: LICENSE_DIR.to_owned(),
            read_only: Some(true),
            ..Default::default()
        });
    }
    mounts
}

fn license_secret(mm: &Mattermost) -> Option<&str> {
    mm.spec.license_secret.as_deref().filter(|s| !s.is_empty())
}

fn default_probe(period: i32, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(PING_PATH.to_owned()),
            port: IntOrString::Int(APP_PORT),
            ..Default::default()
        }),
        initial_delay_seconds: Some(10),
        period_seconds: Some(period),
        failure_threshold: Some(failure_threshold),
        ..Default::default()
    }
}

/// The default probe with the user's override: a handler replaces ours, each non-zero number
/// replaces the default (Go operator semantics).
pub fn probe(default: Probe, user: Option<&Probe>) -> Probe {
    let Some(user) = user else { return default };
    let mut p = default;
    if user.http_get.is_some() || user.exec.is_some() || user.tcp_socket.is_some() || user.grpc.is_some() {
        p.http_get = user.http_get.clone();
        p.exec = user.exec.clone();
        p.tcp_socket = user.tcp_socket.clone();
        p.grpc = user.grpc.clone();
    }
    let set = |dst: &mut Option<i32>, src: Option<i32>| {
        if let Some(v) = src.filter(|v| *v != 0) {
            *dst = Some(v);
        }
    };
    set(&mut p.initial_delay_seconds, user.initial_delay_seconds);
    set(&mut p.period_seconds, user.period_seconds);
    set(&mut p.failure_threshold, user.failure_threshold);
    set(&mut p.success_threshold, user.success_threshold);
    set(&mut p.timeout_seconds, user.timeout_seconds);
    p
}

/// Name of the database readiness init container.
pub const DATABASE_CHECK_CONTAINER: &str = "init-check-database";

/// The database readiness init container, if the configuration calls for one.
pub fn database_check(mm: &Mattermost, inputs: &Inputs) -> Option<Container> {
    let db_spec = mm.spec.database.as_ref();
    if db_spec.and_then(|d| d.disable_readiness_check).unwrap_or(false) {
        return None;
    }
    let db = inputs.database.as_ref()?;
    let check = db_spec.and_then(|d| d.readiness_check.as_ref());
    if check.and_then(|c| c.mode.as_deref()) == Some("builtin") {
        let timeout = check
            .and_then(|c| c.timeout.clone())
            .filter(|t| !t.is_empty())
            .unwrap_or("5m".to_owned());
        return Some(Container {
            name: DATABASE_CHECK_CONTAINER.to_owned(),
            image: Some(mm.spec.image_reference()),
            image_pull_policy: Some(pull_policy(mm)),
            command: Some(vec![
                "/mattermost/bin/mattermost".to_owned(),
                "db".to_owned(),
                "ping".to_owned(),
                format!("--timeout={timeout}"),
            ]),
            env: Some(env::database_env(inputs)),
            security_context: Some(security::default_container()),
            ..Default::default()
        });
    }
    if !db.has_check_url {
        return None;
    }
    let (image, script) = match db.db_type {
        DbType::MySql => (
            "appropriate/curl:latest",
            "until curl --max-time 5 $DB_CONNECTION_CHECK_URL; do echo waiting for database; sleep 5; done;",
        ),
        DbType::Postgres => (
            "postgres:13",
            "until pg_isready --dbname=\"$DB_CONNECTION_CHECK_URL\"; do echo waiting for database; sleep 5; done;",
        ),
        DbType::Unknown => return None,
    };
    Some(Container {
        name: DATABASE_CHECK_CONTAINER.to_owned(),
        image: Some(image.to_owned()),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        command: Some(vec!["sh".to_owned(), "-c".to_owned(), script.to_owned()]),
        env: Some(vec![from_secret(
            "DB_CONNECTION_CHECK_URL",
            &db.name,
            "DB_CONNECTION_CHECK_URL",
        )]),
        security_context: Some(security::default_container()),
        ..Default::default()
    })
}

fn pull_policy(mm: &Mattermost) -> String {
    mm.spec
        .image_pull_policy
        .clone()
        .filter(|p| !p.is_empty())
        .unwrap_or("IfNotPresent".to_owned())
}

fn port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_owned()),
        container_port: port,
        // Server-side apply needs the list key; TCP is also the API default.
        protocol: Some("TCP".to_owned()),
        ..Default::default()
    }
}

/// The Mattermost container.
pub fn mattermost_container(mm: &Mattermost, inputs: &Inputs) -> Container {
    let spec = &mm.spec;
    let mut ports = vec![port("app", APP_PORT), port("metrics", METRICS_PORT)];
    let extra = spec
        .pod_extensions
        .as_ref()
        .and_then(|p| p.container_ports.clone())
        .unwrap_or_default();
    ports.extend(extra.into_iter().map(|mut p| {
        p.protocol.get_or_insert_with(|| "TCP".to_owned());
        p
    }));
    let probes = spec.probes.as_ref();
    Container {
        name: MAIN_CONTAINER.to_owned(),
        image: Some(spec.image_reference()),
        image_pull_policy: Some(pull_policy(mm)),
        command: Some(command(mm)),
        ports: Some(ports),
        env: Some(env::mattermost_env(mm, inputs)),
        resources: Some(spec.effective_resources()),
        volume_mounts: Some(volume_mounts(mm)).filter(|m| !m.is_empty()),
        liveness_probe: Some(probe(
            default_probe(10, 3),
            probes.and_then(|p| p.liveness_probe.as_ref()),
        )),
        readiness_probe: Some(probe(
            default_probe(5, 6),
            probes.and_then(|p| p.readiness_probe.as_ref()),
        )),
        security_context: Some(security::container(mm)),
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        ..Default::default()
    }
}

/// Pod spec shared by the app and job-server Deployments (without containers).
fn pod_spec(mm: &Mattermost, names: &Names) -> PodSpec {
    let spec = &mm.spec;
    let scheduling = spec.scheduling.as_ref();
    PodSpec {
        service_account_name: Some(names.app.clone()),
        image_pull_secrets: spec.image_pull_secrets.clone().filter(|s| !s.is_empty()),
        volumes: Some(volumes(mm, names)).filter(|v| !v.is_empty()),
        dns_config: spec.dns_config.clone(),
        dns_policy: spec.dns_policy.clone().filter(|p| !p.is_empty()),
        affinity: scheduling.and_then(|s| s.affinity.clone()),
        security_context: Some(security::pod(mm)),
        topology_spread_constraints: topology_spread(mm, names),
        ..placement(mm)
    }
}

/// True when the user set the topology spread (also to an empty list).
pub fn user_topology_spread(mm: &Mattermost) -> bool {
    mm.spec
        .scheduling
        .as_ref()
        .is_some_and(|s| s.topology_spread_constraints.is_some())
}

/// The user's spread, or by default an even spread across zones and nodes when possible.
fn topology_spread(mm: &Mattermost, names: &Names) -> Option<Vec<TopologySpreadConstraint>> {
    if user_topology_spread(mm) {
        let user = mm
            .spec
            .scheduling
            .as_ref()
            .and_then(|s| s.topology_spread_constraints.clone());
        return user.filter(|t| !t.is_empty());
    }
    let spread = |key: &str| TopologySpreadConstraint {
        max_skew: 1,
        topology_key: key.to_owned(),
        when_unsatisfiable: "ScheduleAnyway".to_owned(),
        label_selector: Some(LabelSelector {
            match_labels: Some(labels::selector(names, APP_MATTERMOST)),
            match_expressions: None,
        }),
        ..Default::default()
    };
    Some(vec![
        spread("topology.kubernetes.io/zone"),
        spread("kubernetes.io/hostname"),
    ])
}

fn pod_annotations(mm: &Mattermost) -> Option<BTreeMap<String, String>> {
    let mut annotations = mm
        .spec
        .pod_template
        .as_ref()
        .and_then(|p| p.extra_annotations.clone())
        .unwrap_or_default();
    if license_secret(mm).is_some() {
        annotations.insert("prometheus.io/scrape".to_owned(), "true".to_owned());
        annotations.insert("prometheus.io/path".to_owned(), "/metrics".to_owned());
        annotations.insert("prometheus.io/port".to_owned(), METRICS_PORT.to_string());
    }
    Some(annotations).filter(|a| !a.is_empty())
}

fn strategy(mm: &Mattermost) -> DeploymentStrategy {
    let template = mm.spec.deployment_template.as_ref();
    if template.and_then(|t| t.deployment_strategy_type.as_deref()) == Some("Recreate") {
        return DeploymentStrategy {
            type_: Some("Recreate".to_owned()),
            rolling_update: None,
        };
    }
    DeploymentStrategy {
        type_: Some("RollingUpdate".to_owned()),
        rolling_update: Some(RollingUpdateDeployment {
            max_unavailable: Some(IntOrString::Int(0)),
            max_surge: Some(IntOrString::Int(1)),
        }),
    }
}

fn deployment_with(
    mm: &Mattermost,
    names: &Names,
    name: &str,
    app: &str,
    replicas: i32,
    pod: PodSpec,
) -> Deployment {
    let history = mm
        .spec
        .deployment_template
        .as_ref()
        .and_then(|t| t.revision_history_limit);
    Deployment {
        metadata: child_meta(mm, names, name, labels::object_labels(mm, names, app)),
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(labels::selector(names, app)),
                match_expressions: None,
            },
            strategy: Some(strategy(mm)),
            revision_history_limit: Some(history.unwrap_or(DEFAULT_REVISION_HISTORY)),
            progress_deadline_seconds: Some(mm.spec.progress_deadline_seconds()),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels::pod_labels(mm, names, app)),
                    annotations: pod_annotations(mm),
                    ..Default::default()
                }),
                spec: Some(pod),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The Mattermost Deployment `<name>`.
pub fn deployment(mm: &Mattermost, names: &Names, inputs: &Inputs) -> Deployment {
    let mut init: Vec<Container> = database_check(mm, inputs).into_iter().collect();
    let extensions = mm.spec.pod_extensions.as_ref();
    init.extend(
        extensions
            .and_then(|e| e.init_containers.clone())
            .unwrap_or_default(),
    );
    let mut containers = vec![mattermost_container(mm, inputs)];
    containers.extend(
        extensions
            .and_then(|e| e.sidecar_containers.clone())
            .unwrap_or_default(),
    );
    let pod = PodSpec {
        init_containers: Some(init).filter(|i| !i.is_empty()),
        containers,
        ..pod_spec(mm, names)
    };
    deployment_with(
        mm,
        names,
        &names.app,
        APP_MATTERMOST,
        mm.spec.effective_replicas(),
        pod,
    )
}

/// The job-server Deployment `<name>-jobserver`: one pod running `mattermost jobserver`, with a
/// selector that never changes (the Go operator's included mutable labels).
pub fn job_server_deployment(mm: &Mattermost, names: &Names, inputs: &Inputs) -> Deployment {
    let main = mattermost_container(mm, inputs);
    let container = Container {
        name: JOB_SERVER_CONTAINER.to_owned(),
        command: Some(vec!["mattermost".to_owned(), "jobserver".to_owned()]),
        ports: None,
        liveness_probe: None,
        readiness_probe: None,
        ..main
    };
    let pod = PodSpec {
        containers: vec![container],
        ..pod_spec(mm, names)
    };
    deployment_with(mm, names, &names.job_server, APP_JOB_SERVER, 1, pod)
}

/// Where the pods of an installation may run (its node selector and tolerations), for the
/// Deployments and the Jobs.
pub fn placement(mm: &Mattermost) -> PodSpec {
    let scheduling = mm.spec.scheduling.as_ref();
    PodSpec {
        node_selector: scheduling
            .and_then(|s| s.node_selector.clone())
            .filter(|n| !n.is_empty()),
        tolerations: scheduling
            .and_then(|s| s.tolerations.clone())
            .filter(|t| !t.is_empty()),
        ..Default::default()
    }
}

/// Sets the image of `container` in the pod template.
pub fn set_container_image(dep: &mut Deployment, container: &str, image: &str) {
    let spec = dep.spec.as_mut().and_then(|s| s.template.spec.as_mut());
    if let Some(c) = spec.and_then(|p| p.containers.iter_mut().find(|c| c.name == container)) {
        c.image = Some(image.to_owned());
    }
}

/// Sets the image of the main container.
pub fn set_main_image(dep: &mut Deployment, image: &str) {
    set_container_image(dep, MAIN_CONTAINER, image);
}

/// The image of the main container.
pub fn main_image(dep: &Deployment) -> Option<String> {
    let spec = dep.spec.as_ref()?.template.spec.as_ref()?;
    spec.containers
        .iter()
        .find(|c| c.name == MAIN_CONTAINER)
        .and_then(|c| c.image.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::DatabaseSecret;
    use mattermost_api::v1beta1::{MattermostSpec, PodExtensions, PodTemplate, Probes};

    fn mm(spec: MattermostSpec) -> Mattermost {
        let mut mm = Mattermost::new("chat", spec);
        mm.metadata.namespace = Some("ns".into());
        mm.metadata.uid = Some("u".into());
        mm
    }

    fn pg(check: bool) -> Inputs {
        Inputs {
            database: Some(DatabaseSecret {
                name: "db".into(),
                db_type: DbType::Postgres,
                has_check_url: check,
                ..Default::default()
            }),
        }
    }

    #[test]
    fn go_compatible_selector_labels_strategy_and_container() {
        let m = mm(MattermostSpec {
            resource_labels: Some(BTreeMap::from([
                ("team".into(), "a".into()),
                ("app".into(), "x".into()),
            ])),
            pod_template: Some(PodTemplate {
                extra_labels: Some(BTreeMap::from([("tier".into(), "web".into())])),
                ..Default::default()
            }),
            ..Default::default()
        });
        let d = deployment(&m, &Names::of(&m), &pg(false));
        let spec = d.spec.unwrap();
        let sel = spec.selector.match_labels.unwrap();
        assert_eq!(sel.len(), 3);
        assert_eq!(sel["app"], "mattermost");
        let pod_labels = spec.template.metadata.unwrap().labels.unwrap();
        assert_eq!(
            (
                pod_labels["app"].as_str(),
                pod_labels["tier"].as_str(),
                pod_labels["team"].as_str()
            ),
            ("mattermost", "web", "a")
        );
        let ru = spec.strategy.unwrap().rolling_update.unwrap();
        assert_eq!(
            (ru.max_unavailable, ru.max_surge),
            (Some(IntOrString::Int(0)), Some(IntOrString::Int(1)))
        );
        assert_eq!(spec.revision_history_limit, Some(5));
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.service_account_name.as_deref(), Some("chat"));
        let c = &pod.containers[0];
        assert_eq!(c.name, "mattermost");
        assert_eq!(
            c.image.as_deref(),
            Some("mattermost/mattermost-enterprise-edition:10.8.1")
        );
        assert_eq!(c.command.as_deref(), Some(&["mattermost".to_owned()][..]));
        let ports: Vec<_> = c
            .ports
            .iter()
            .flatten()
            .map(|p| (p.name.clone().unwrap(), p.container_port))
            .collect();
        assert_eq!(
            ports,
            vec![("app".to_owned(), 8065), ("metrics".to_owned(), 8067)]
        );
        let live = c.liveness_probe.as_ref().unwrap();
        assert_eq!((live.period_seconds, live.failure_threshold), (Some(10), Some(3)));
        assert_eq!(c.readiness_probe.as_ref().unwrap().failure_threshold, Some(6));
        assert!(pod.init_containers.is_none());
        assert_eq!(spec.replicas, Some(2));
    }

    #[test]
    fn probe_overrides_are_field_by_field() {
        let user = Probe {
            period_seconds: Some(30),
            initial_delay_seconds: Some(0),
            ..Default::default()
        };
        let m = mm(MattermostSpec {
            probes: Some(Probes {
                readiness_probe: Some(user),
                liveness_probe: None,
            }),
            ..Default::default()
        });
        let c = mattermost_container(&m, &pg(false));
        let r = c.readiness_probe.unwrap();
        assert_eq!(
            (r.period_seconds, r.initial_delay_seconds, r.failure_threshold),
            (Some(30), Some(10), Some(6))
        );
        assert_eq!(r.http_get.unwrap().path.as_deref(), Some(PING_PATH));
    }

    #[test]
    fn init_container_per_database_type() {
        let m = mm(MattermostSpec::default());
        let c = database_check(&m, &pg(true)).unwrap();
        assert_eq!(
            (c.name.as_str(), c.image.as_deref()),
            ("init-check-database", Some("postgres:13"))
        );
        assert!(database_check(&m, &pg(false)).is_none());
        let mut mysql = pg(true);
        if let Some(db) = mysql.database.as_mut() {
            db.db_type = DbType::MySql;
        }
        assert_eq!(
            database_check(&m, &mysql).unwrap().image.as_deref(),
            Some("appropriate/curl:latest")
        );
        let builtin: MattermostSpec = serde_json::from_value(serde_json::json!({
            "database": {"readinessCheck": {"mode": "builtin", "timeout": "2m"}}
        }))
        .unwrap();
        let c = database_check(&mm(builtin), &pg(false)).unwrap();
        assert_eq!(
            c.command.unwrap().last().map(String::as_str),
            Some("--timeout=2m")
        );
    }

    #[test]
    fn license_mounts_and_scrape_annotations() {
        let m = mm(MattermostSpec {
            license_secret: Some("lic".into()),
            ..Default::default()
        });
        let d = deployment(&m, &Names::of(&m), &pg(false));
        let t = d.spec.unwrap().template;
        assert_eq!(
            t.metadata.unwrap().annotations.unwrap()["prometheus.io/port"],
            "8067"
        );
        let pod = t.spec.unwrap();
        assert_eq!(pod.volumes.unwrap()[0].name, "mattermost-license");
        assert_eq!(
            pod.containers[0].volume_mounts.as_ref().unwrap()[0].mount_path,
            "/mattermost-license"
        );
    }

    #[test]
    fn job_server_has_a_fixed_selector_and_sidecars_stay_in_the_app_pod() {
        let m = mm(MattermostSpec {
            resource_labels: Some(BTreeMap::from([("team".into(), "a".into())])),
            pod_extensions: Some(PodExtensions {
                sidecar_containers: Some(vec![Container {
                    name: "proxy".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        });
        let js = job_server_deployment(&m, &Names::of(&m), &pg(false));
        let spec = js.spec.unwrap();
        assert_eq!(spec.selector.match_labels.unwrap().len(), 3);
        assert_eq!(spec.replicas, Some(1));
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.containers.len(), 1);
        assert_eq!(pod.containers[0].name, "mattermost-jobserver");
        assert!(pod.containers[0].readiness_probe.is_none());
        let app = deployment(&m, &Names::of(&m), &pg(false));
        assert_eq!(
            app.spec.unwrap().template.spec.unwrap().containers[1].name,
            "proxy"
        );
    }
}
