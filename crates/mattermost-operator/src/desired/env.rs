//! Environment of the Mattermost container, in the Go operator's order: database, file store,
//! Elasticsearch, general, then `mattermostEnv` merged by name. The order matters: a different
//! order changes the pod template and would restart every pod of an adopted installation.

use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, SecretKeySelector};
use mattermost_api::v1beta1::{FileStoreKind, Mattermost};

use super::Inputs;

/// Directory of the local file store.
pub const DATA_DIR: &str = "/mattermost/data";
/// Directory where the license secret is mounted.
pub const LICENSE_DIR: &str = "/mattermost-license";

/// A literal variable.
pub fn value(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.into()),
        value_from: None,
    }
}

/// A variable read from a secret key.
pub fn from_secret(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.to_owned(),
                key: key.to_owned(),
                optional: None,
            }),
            ..Default::default()
        }),
    }
}

/// Database variables (external database only).
pub fn database_env(inputs: &Inputs) -> Vec<EnvVar> {
    let Some(db) = &inputs.database else { return vec![] };
    let datasource_key = if db.has_datasource {
        "MM_SQLSETTINGS_DATASOURCE"
    } else {
        "DB_CONNECTION_STRING"
    };
    let mut env = vec![
        from_secret("MM_CONFIG", &db.name, "DB_CONNECTION_STRING"),
        from_secret("MM_SQLSETTINGS_DATASOURCE", &db.name, datasource_key),
    ];
    if db.has_datasource_replicas {
        env.push(from_secret(
            "MM_SQLSETTINGS_DATASOURCEREPLICAS",
            &db.name,
            "MM_SQLSETTINGS_DATASOURCEREPLICAS",
        ));
    }
    env
}

fn file_store_env(mm: &Mattermost) -> Vec<EnvVar> {
    match mm.spec.file_store_kind() {
        FileStoreKind::External(ext) => {
            let mut env = vec![
                value("MM_FILESETTINGS_DRIVERNAME", "amazons3"),
                value("MM_FILESETTINGS_AMAZONS3BUCKET", ext.bucket.clone()),
                value("MM_FILESETTINGS_AMAZONS3ENDPOINT", ext.url.clone()),
                value("MM_FILESETTINGS_AMAZONS3SSL", "true"),
            ];
            if !ext.use_service_account.unwrap_or(false) {
                let secret = ext.secret.as_deref().unwrap_or_default();
                env.push(from_secret(
                    "MM_FILESETTINGS_AMAZONS3ACCESSKEYID",
                    secret,
                    "accesskey",
                ));
                env.push(from_secret(
                    "MM_FILESETTINGS_AMAZONS3SECRETACCESSKEY",
                    secret,
                    "secretkey",
                ));
            }
            env
        }
        FileStoreKind::ExternalVolume(_) | FileStoreKind::Local => vec![
            value("MM_FILESETTINGS_DRIVERNAME", "local"),
            value("MM_FILESETTINGS_DIRECTORY", DATA_DIR),
        ],
        FileStoreKind::OperatorManaged => vec![],
    }
}

fn elasticsearch_env(mm: &Mattermost) -> Vec<EnvVar> {
    let Some(es) = mm
        .spec
        .elastic_search
        .as_ref()
        .filter(|e| e.host.as_deref().is_some_and(|h| !h.is_empty()))
    else {
        return vec![];
    };
    vec![
        value("MM_ELASTICSEARCHSETTINGS_ENABLEINDEXING", "true"),
        value("MM_ELASTICSEARCHSETTINGS_ENABLESEARCHING", "true"),
        value(
            "MM_ELASTICSEARCHSETTINGS_CONNECTIONURL",
            es.host.clone().unwrap_or_default(),
        ),
        value(
            "MM_ELASTICSEARCHSETTINGS_USERNAME",
            es.user_name.clone().unwrap_or_default(),
        ),
        value(
            "MM_ELASTICSEARCHSETTINGS_PASSWORD",
            es.password.clone().unwrap_or_default(),
        ),
    ]
}

fn general_env(mm: &Mattermost) -> Vec<EnvVar> {
    let spec = &mm.spec;
    let mut env = vec![
        value("MM_PLUGINSETTINGS_ENABLEUPLOADS", "true"),
        value("MM_METRICSSETTINGS_ENABLE", "true"),
        value("MM_METRICSSETTINGS_LISTENADDRESS", ":8067"),
        value("MM_CLUSTERSETTINGS_ENABLE", "true"),
        value("MM_CLUSTERSETTINGS_CLUSTERNAME", "production"),
        value("MM_INSTALL_TYPE", "kubernetes-operator"),
    ];
    let alb_host = || {
        let alb = spec.aws_load_balancer_controller.as_ref().filter(|a| a.enabled)?;
        alb.hosts
            .iter()
            .flatten()
            .find_map(|h| h.host_name.clone().filter(|h| !h.is_empty()))
    };
    let host = if spec.alb_enabled() {
        alb_host()
    } else {
        spec.ingress_host().map(str::to_owned)
    };
    if let Some(host) = host {
        env.push(value("MM_SERVICESETTINGS_SITEURL", format!("https://{host}")));
    }
    if let Some(size) = spec.max_file_size() {
        env.push(value("MM_FILESETTINGS_MAXFILESIZE", size.to_string()));
    }
    if spec.dedicated_job_server() {
        env.push(value("MM_JOBSETTINGS_RUNJOBS", "false"));
    }
    if spec.license_secret.as_deref().is_some_and(|s| !s.is_empty()) {
        env.push(value(
            "MM_SERVICESETTINGS_LICENSEFILELOCATION",
            format!("{LICENSE_DIR}/license"),
        ));
    }
    env
}

/// Replaces variables of the same name in place and appends new ones.
pub fn merge(mut env: Vec<EnvVar>, overrides: &[EnvVar]) -> Vec<EnvVar> {
    for o in overrides {
        match env.iter_mut().find(|e| e.name == o.name) {
            Some(existing) => *existing = o.clone(),
            None => env.push(o.clone()),
        }
    }
    env
}

/// The full environment of the Mattermost container.
pub fn mattermost_env(mm: &Mattermost, inputs: &Inputs) -> Vec<EnvVar> {
    let mut env = database_env(inputs);
    env.extend(file_store_env(mm));
    env.extend(elasticsearch_env(mm));
    env.extend(general_env(mm));
    merge(env, mm.spec.mattermost_env.as_deref().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{DatabaseSecret, DbType};
    use mattermost_api::v1beta1::{
        Database, ExternalDatabase, ExternalFileStore, FileStore, Ingress, MattermostSpec,
    };

    /// The worked example of the reference (§6).
    pub(crate) fn worked_example() -> (Mattermost, Inputs) {
        let spec = MattermostSpec {
            ingress: Some(Ingress {
                enabled: true,
                host: Some("chat.example.com".into()),
                ..Default::default()
            }),
            database: Some(Database {
                external: Some(ExternalDatabase { secret: "db".into() }),
                ..Default::default()
            }),
            file_store: Some(FileStore {
                external: Some(ExternalFileStore {
                    url: "s3.amazonaws.com".into(),
                    bucket: "b".into(),
                    secret: Some("s3".into()),
                    use_service_account: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let inputs = Inputs {
            database: Some(DatabaseSecret {
                name: "db".into(),
                db_type: DbType::Postgres,
                ..Default::default()
            }),
        };
        (Mattermost::new("mm", spec), inputs)
    }

    #[test]
    fn worked_example_env_in_go_order() {
        let (mm, inputs) = worked_example();
        let env = mattermost_env(&mm, &inputs);
        let names: Vec<&str> = env.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "MM_CONFIG",
                "MM_SQLSETTINGS_DATASOURCE",
                "MM_FILESETTINGS_DRIVERNAME",
                "MM_FILESETTINGS_AMAZONS3BUCKET",
                "MM_FILESETTINGS_AMAZONS3ENDPOINT",
                "MM_FILESETTINGS_AMAZONS3SSL",
                "MM_FILESETTINGS_AMAZONS3ACCESSKEYID",
                "MM_FILESETTINGS_AMAZONS3SECRETACCESSKEY",
                "MM_PLUGINSETTINGS_ENABLEUPLOADS",
                "MM_METRICSSETTINGS_ENABLE",
                "MM_METRICSSETTINGS_LISTENADDRESS",
                "MM_CLUSTERSETTINGS_ENABLE",
                "MM_CLUSTERSETTINGS_CLUSTERNAME",
                "MM_INSTALL_TYPE",
                "MM_SERVICESETTINGS_SITEURL",
                "MM_FILESETTINGS_MAXFILESIZE",
            ]
        );
        assert_eq!(env[0], from_secret("MM_CONFIG", "db", "DB_CONNECTION_STRING"));
        assert_eq!(env[14].value.as_deref(), Some("https://chat.example.com"));
        assert_eq!(env[15].value.as_deref(), Some("1048576000"));
    }

    #[test]
    fn user_env_overrides_in_place_and_appends() {
        let (mut mm, inputs) = worked_example();
        mm.spec.mattermost_env = Some(vec![
            value("MM_CLUSTERSETTINGS_CLUSTERNAME", "chat"),
            value("X", "1"),
        ]);
        let env = mattermost_env(&mm, &inputs);
        assert_eq!(env[12], value("MM_CLUSTERSETTINGS_CLUSTERNAME", "chat"));
        assert_eq!(env.last(), Some(&value("X", "1")));
    }

    #[test]
    fn datasource_key_and_replicas_follow_the_secret() {
        let inputs = Inputs {
            database: Some(DatabaseSecret {
                name: "db".into(),
                has_datasource: true,
                has_datasource_replicas: true,
                ..Default::default()
            }),
        };
        let env = database_env(&inputs);
        assert_eq!(
            env[1],
            from_secret("MM_SQLSETTINGS_DATASOURCE", "db", "MM_SQLSETTINGS_DATASOURCE")
        );
        assert_eq!(env[2].name, "MM_SQLSETTINGS_DATASOURCEREPLICAS");
    }
}
