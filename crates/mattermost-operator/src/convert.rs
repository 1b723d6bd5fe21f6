//! ClusterInstallation (v1alpha1) → Mattermost (v1beta1) spec conversion, following the Go
//! operator's rules. Pure. Nothing is dropped silently: what this operator cannot run (blue-green,
//! canary, operator-managed MySQL or MinIO) refuses the conversion with the field named.

use mattermost_api::v1alpha1::ClusterInstallationSpec;
use mattermost_api::v1beta1::{
    Database, ElasticSearch, ExternalDatabase, ExternalFileStore, FileStore, MattermostSpec, Probes,
    Scheduling,
};

/// Why an installation cannot be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ConversionError {
    /// The field that prevents the conversion.
    pub field: &'static str,
    /// Why.
    pub reason: &'static str,
}

impl ConversionError {
    /// Stable reason for conditions and events.
    pub fn reason_code(&self) -> &'static str {
        "NotConvertible"
    }
}

fn refuse(field: &'static str, reason: &'static str) -> ConversionError {
    ConversionError { field, reason }
}

/// The `Mattermost` spec equivalent to `ci`.
pub fn convert(ci: &ClusterInstallationSpec) -> Result<MattermostSpec, ConversionError> {
    if ci.blue_green.as_ref().is_some_and(|b| b.enable) {
        return Err(refuse(
            "spec.blueGreen",
            "blue-green installations cannot be migrated; disable it first",
        ));
    }
    if ci.canary.as_ref().is_some_and(|c| c.enable) {
        return Err(refuse(
            "spec.canary",
            "canary installations cannot be migrated; disable it first",
        ));
    }
    let db_secret = ci
        .database
        .as_ref()
        .and_then(|d| d.secret.clone())
        .filter(|s| !s.is_empty());
    let Some(db_secret) = db_secret else {
        return Err(refuse(
            "spec.database.secret",
            "operator-managed MySQL is not supported; move to an external database first",
        ));
    };
    let minio = ci.minio.clone().unwrap_or_default();
    let Some(url) = minio.external_url.clone().filter(|u| !u.is_empty()) else {
        return Err(refuse(
            "spec.minio.externalURL",
            "operator-managed MinIO is not supported; move to an external S3 store first",
        ));
    };
    let scheduling = Scheduling {
        resources: ci.resources.clone(),
        node_selector: ci.node_selector.clone(),
        affinity: ci.affinity.clone(),
        ..Default::default()
    };
    let probes = Probes {
        liveness_probe: ci.liveness_probe.clone(),
        readiness_probe: ci.readiness_probe.clone(),
    };
    Ok(MattermostSpec {
        image: ci.image.clone(),
        version: ci.version.clone(),
        size: ci.size.clone(),
        replicas: match ci.replicas {
            Some(r) if r < 0 => Some(0),
            Some(0) | None => None,
            Some(r) => Some(r),
        },
        image_pull_policy: ci.image_pull_policy.clone(),
        mattermost_env: ci.mattermost_env.clone(),
        resource_labels: ci.resource_labels.clone(),
        service_annotations: ci.service_annotations.clone(),
        use_service_load_balancer: ci.use_service_load_balancer,
        use_ingress_tls: ci.use_ingress_tls,
        ingress_name: Some(ci.ingress_name.clone()),
        ingress_annotations: ci.ingress_annotations.clone(),
        license_secret: ci.mattermost_license_secret.clone(),
        scheduling: (scheduling != Scheduling::default()).then_some(scheduling),
        probes: (probes != Probes::default()).then_some(probes),
        database: Some(Database {
            external: Some(ExternalDatabase { secret: db_secret }),
            ..Default::default()
        }),
        file_store: Some(FileStore {
            external: Some(ExternalFileStore {
                url,
                bucket: minio.external_bucket.unwrap_or_default(),
                secret: minio.secret,
                use_service_account: None,
            }),
            ..Default::default()
        }),
        elastic_search: ci.elastic_search.as_ref().map(|e| ElasticSearch {
            host: e.host.clone(),
            user_name: e.user_name.clone(),
            password: e.password.clone(),
        }),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use mattermost_api::v1alpha1::{BlueGreen, Database as CiDatabase, Minio};
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn base() -> ClusterInstallationSpec {
        ClusterInstallationSpec {
            ingress_name: "chat.example.com".into(),
            database: Some(CiDatabase {
                secret: Some("db".into()),
                ..Default::default()
            }),
            minio: Some(Minio {
                external_url: Some("s3.amazonaws.com".into()),
                external_bucket: Some("b".into()),
                secret: Some("s3".into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn refuses_what_cannot_run_naming_the_field() {
        let mut bg = base();
        bg.blue_green = Some(BlueGreen {
            enable: true,
            ..Default::default()
        });
        assert_eq!(convert(&bg).unwrap_err().field, "spec.blueGreen");
        let mut mysql = base();
        mysql.database = Some(CiDatabase::default());
        assert_eq!(convert(&mysql).unwrap_err().field, "spec.database.secret");
        let mut minio = base();
        minio.minio = Some(Minio {
            storage_size: Some("10Gi".into()),
            ..Default::default()
        });
        assert_eq!(convert(&minio).unwrap_err().field, "spec.minio.externalURL");
    }

    #[test]
    fn replicas_follow_the_go_rules() {
        for (ci, mm) in [
            (Some(-1), Some(0)),
            (Some(0), None),
            (None, None),
            (Some(3), Some(3)),
        ] {
            let spec = ClusterInstallationSpec {
                replicas: ci,
                ..base()
            };
            assert_eq!(convert(&spec).unwrap().replicas, mm);
        }
    }

    proptest! {
        #[test]
        fn conversion_keeps_every_setting(
            image in proptest::option::of("[a-z]{1,8}/[a-z]{1,8}"),
            version in proptest::option::of("[0-9]{1,2}\\.[0-9]{1,2}\\.[0-9]{1,2}"),
            replicas in proptest::option::of(1i32..20),
            cpu in "[1-9][0-9]{0,3}m",
            env in proptest::collection::vec(("[A-Z_]{1,12}", "[a-z0-9]{0,8}"), 0..5),
            host in "[a-z]{1,10}\\.example\\.com",
            annotations in proptest::collection::btree_map("[a-z]{1,8}", "[a-z]{0,8}", 0..4),
            db in "[a-z]{1,10}",
            bucket in "[a-z]{1,10}",
        ) {
            let resources = ResourceRequirements {
                requests: Some(BTreeMap::from([("cpu".to_owned(), Quantity(cpu))])),
                ..Default::default()
            };
            let env: Vec<EnvVar> = env.into_iter().map(|(n, v)| EnvVar { name: n, value: Some(v), value_from: None }).collect();
            let ci = ClusterInstallationSpec {
                image: image.clone(),
                version: version.clone(),
                replicas,
                resources: Some(resources.clone()),
                mattermost_env: Some(env.clone()),
                ingress_name: host.clone(),
                ingress_annotations: Some(annotations.clone()),
                database: Some(CiDatabase { secret: Some(db.clone()), ..Default::default() }),
                minio: Some(Minio {
                    external_url: Some("s3.example.com".into()),
                    external_bucket: Some(bucket.clone()),
                    secret: Some("s3".into()),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let mm = convert(&ci).unwrap();
            prop_assert_eq!(mm.image, image);
            prop_assert_eq!(mm.version, version);
            prop_assert_eq!(mm.replicas, replicas);
            prop_assert_eq!(mm.scheduling.and_then(|s| s.resources), Some(resources));
            prop_assert_eq!(mm.mattermost_env, Some(env));
            prop_assert_eq!(mm.ingress_annotations, Some(annotations));
            prop_assert_eq!(mm.ingress_name.as_deref(), Some(host.as_str()));
            prop_assert_eq!(mm.database.and_then(|d| d.external).map(|e| e.secret), Some(db));
            let fs = mm.file_store.and_then(|f| f.external).unwrap();
            prop_assert_eq!((fs.url.as_str(), fs.bucket), ("s3.example.com", bucket));
        }
    }
}
