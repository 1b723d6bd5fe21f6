//! The backup Job before an update Job: an init container dumps the database into a scratch
//! volume (`pg_dump --format=custom`, or `mysqldump`), the main container uploads the dump to
//! S3-compatible storage with the AWS CLI and keeps the newest `keep` dumps under the prefix.
//! The connection string and the storage keys come from the existing Secrets through
//! `secretKeyRef`: no credential is ever in the spec, the Job or the operator's memory.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Container, EmptyDirVolumeSource, PodSpec, Volume, VolumeMount};
use kube::ResourceExt;
use mattermost_api::v1beta1::{FileStoreKind, Mattermost};

use super::deployment::placement;
use super::env::{from_secret, value};
use super::job::{JobPod, RETRY_ANNOTATION, job};
use super::labels::{self, APP_BACKUP_JOB};
use super::meta::child_meta;
use super::names::Names;
use super::{DbType, Inputs, security};

/// Default image with `pg_dump` (a newer client dumps older servers).
pub const POSTGRES_IMAGE: &str = "docker.io/library/postgres:17-alpine";
/// Default image with `mysqldump`.
pub const MYSQL_IMAGE: &str = "docker.io/library/mysql:8.4";
/// Default image with the AWS CLI (uploads and retention).
pub const UPLOAD_IMAGE: &str = "docker.io/amazon/aws-cli:2.22.35";
/// Dumps kept under the prefix by default.
pub const DEFAULT_KEEP: i32 = 5;
/// Annotation of the Job recording where its dump goes (read back into `status.lastBackup`).
pub const LOCATION_ANNOTATION: &str = "installation.mattermost.com/backup-location";
/// Annotation of the Job recording the version the dump holds.
pub const VERSION_ANNOTATION: &str = "installation.mattermost.com/backup-version";
/// Name of the container that uploads (its exit code decides the Job).
pub const UPLOAD_CONTAINER: &str = "upload";
/// Name of the init container that dumps.
pub const DUMP_CONTAINER: &str = "dump";
const SCRATCH: &str = "/backup";
const BACKOFF_LIMIT: i32 = 1;
const DEADLINE_SECONDS: i64 = 3600;

/// Why no backup Job can be built; the upgrade is blocked with this reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackupError {
    /// Only an external database (`database.external.secret`) of a known type can be dumped.
    #[error(
        "backups need an external Postgres or MySQL database (database.external.secret with a postgres:// or mysql:// DB_CONNECTION_STRING)"
    )]
    UnsupportedDatabase,
    /// Neither the backup policy nor an external file store says where to upload.
    #[error(
        "backups need a destination: set upgrade.backup.url, bucket and secret, or use an external S3 file store"
    )]
    NoDestination,
}

impl BackupError {
    /// Stable reason (condition, event, metrics).
    pub fn reason(&self) -> &'static str {
        match self {
            BackupError::UnsupportedDatabase => "BackupUnsupportedDatabase",
            BackupError::NoDestination => "BackupNoDestination",
        }
    }
}

/// Where dumps go, from the backup policy and, for what it leaves out, the external file store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// S3 endpoint.
    pub url: String,
    /// Bucket.
    pub bucket: String,
    /// Key prefix, without a trailing `/`.
    pub prefix: String,
    /// Secret with `accesskey` and `secretkey`; `None` uses the installation's ServiceAccount
    /// (the file store's IAM role).
    pub secret: Option<String>,
}

/// The destination of `mm`'s dumps.
pub fn destination(mm: &Mattermost, names: &Names) -> Result<Destination, BackupError> {
    let policy = mm.spec.backup().cloned().unwrap_or_default();
    let store = match mm.spec.file_store_kind() {
        FileStoreKind::External(ext) => Some(ext),
        _ => None,
    };
    let non_empty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
    let url = non_empty(&policy.url).or_else(|| store.map(|s| s.url.clone()));
    let bucket = non_empty(&policy.bucket).or_else(|| store.map(|s| s.bucket.clone()));
    let secret = non_empty(&policy.secret).or_else(|| {
        store
            .filter(|s| !s.use_service_account.unwrap_or(false))
            .and_then(|s| non_empty(&s.secret))
    });
    let uses_role = store.is_some_and(|s| s.use_service_account.unwrap_or(false));
    match (url.filter(|u| !u.is_empty()), bucket.filter(|b| !b.is_empty())) {
        (Some(url), Some(bucket)) if secret.is_some() || uses_role => Ok(Destination {
            url,
            bucket,
            prefix: non_empty(&policy.prefix)
                .map(|p| p.trim_matches('/').to_owned())
                .unwrap_or_else(|| format!("mattermost-backups/{}", names.app)),
            secret,
        }),
        _ => Err(BackupError::NoDestination),
    }
}

/// `s3://bucket/prefix/object` of the dump taken at `from_version` before the upgrade to `image`.
pub fn location(dest: &Destination, names: &Names, db: DbType, from_version: &str, image: &str) -> String {
    let object = names.backup_object(from_version, image, extension(db));
    format!("s3://{}/{}/{object}", dest.bucket, dest.prefix)
}

fn extension(db: DbType) -> &'static str {
    match db {
        DbType::MySql => "sql",
        _ => "pgdump",
    }
}

/// Dumps with the libpq URI Mattermost uses (`postgres://user:pass@host/db?sslmode=...`).
const PG_DUMP: &str = r#"pg_dump --format=custom --no-owner --file=/backup/dump "$DB_CONNECTION_STRING""#;

/// Splits Mattermost's MySQL DSN (`mysql://user:pass@tcp(host:port)/db?params`) for mysqldump;
/// the password goes through `MYSQL_PWD`, never the command line.
const MYSQLDUMP: &str = r#"dsn="${DB_CONNECTION_STRING#mysql://}"
creds="${dsn%%@tcp(*}"; rest="${dsn#*@tcp(}"
hostport="${rest%%)*}"; db="${rest#*)/}"; db="${db%%\?*}"
export MYSQL_PWD="${creds#*:}"
mysqldump --single-transaction --routines --host="${hostport%:*}" --port="${hostport##*:}" --user="${creds%%:*}" --result-file=/backup/dump "$db""#;

/// Uploads the dump, then deletes all but the newest `BACKUP_KEEP` objects under the prefix.
const UPLOAD: &str = r#"case "$BACKUP_URL" in http://*|https://*) endpoint="$BACKUP_URL" ;; *) endpoint="https://$BACKUP_URL" ;; esac
aws --endpoint-url "$endpoint" s3 cp /backup/dump "$BACKUP_LOCATION"
aws --endpoint-url "$endpoint" s3api list-objects-v2 --bucket "$BACKUP_BUCKET" --prefix "$BACKUP_PREFIX/" \
  --query 'sort_by(Contents,&LastModified)[].Key' --output text | tr '\t' '\n' | grep -v '^None$' | grep -v '^$' \
  | head -n -"$BACKUP_KEEP" | while read -r key; do
    aws --endpoint-url "$endpoint" s3 rm "s3://$BACKUP_BUCKET/$key"
  done
echo "backup stored at $BACKUP_LOCATION""#;

/// The backup Job before the upgrade to `image`; `from_version` is the version now serving.
pub fn backup_job(
    mm: &Mattermost,
    names: &Names,
    inputs: &Inputs,
    image: &str,
    from_version: &str,
) -> Result<Job, BackupError> {
    let db = inputs
        .database
        .as_ref()
        .filter(|d| d.db_type != DbType::Unknown)
        .ok_or(BackupError::UnsupportedDatabase)?;
    let dest = destination(mm, names)?;
    let policy = mm.spec.backup().cloned().unwrap_or_default();
    let location = location(&dest, names, db.db_type, from_version, image);
    let (default_image, script) = match db.db_type {
        DbType::MySql => (MYSQL_IMAGE, MYSQLDUMP),
        _ => (POSTGRES_IMAGE, PG_DUMP),
    };
    let scratch = vec![
        VolumeMount {
            name: "backup".to_owned(),
            mount_path: SCRATCH.to_owned(),
            ..Default::default()
        },
        VolumeMount {
            name: "tmp".to_owned(),
            mount_path: "/tmp".to_owned(),
            ..Default::default()
        },
    ];
    let shell = |script: &str| Some(vec!["/bin/sh".to_owned(), "-ec".to_owned(), script.to_owned()]);
    let dump = Container {
        name: DUMP_CONTAINER.to_owned(),
        image: Some(policy.image.clone().unwrap_or_else(|| default_image.to_owned())),
        command: shell(script),
        env: Some(vec![
            from_secret("DB_CONNECTION_STRING", &db.name, "DB_CONNECTION_STRING"),
            value("HOME", "/tmp"),
        ]),
        volume_mounts: Some(scratch.clone()),
        security_context: Some(security::helper_container()),
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        ..Default::default()
    };
    let mut env = vec![
        value("BACKUP_URL", dest.url.clone()),
        value("BACKUP_BUCKET", dest.bucket.clone()),
        value("BACKUP_PREFIX", dest.prefix.clone()),
        value("BACKUP_LOCATION", location.clone()),
        value(
            "BACKUP_KEEP",
            policy.keep.unwrap_or(DEFAULT_KEEP).max(1).to_string(),
        ),
        value("AWS_DEFAULT_REGION", "us-east-1"),
        value("HOME", "/tmp"),
    ];
    if let Some(secret) = &dest.secret {
        env.push(from_secret("AWS_ACCESS_KEY_ID", secret, "accesskey"));
        env.push(from_secret("AWS_SECRET_ACCESS_KEY", secret, "secretkey"));
    }
    let upload = Container {
        name: UPLOAD_CONTAINER.to_owned(),
        image: Some(
            policy
                .upload_image
                .clone()
                .unwrap_or_else(|| UPLOAD_IMAGE.to_owned()),
        ),
        command: shell(UPLOAD),
        env: Some(env),
        volume_mounts: Some(scratch),
        security_context: Some(security::helper_container()),
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        ..Default::default()
    };
    let empty = |name: &str| Volume {
        name: name.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    };
    let spec = &mm.spec;
    let pod = PodSpec {
        // Without keys the upload uses the file store's IAM role, bound to this ServiceAccount.
        service_account_name: dest.secret.is_none().then(|| names.app.clone()),
        automount_service_account_token: Some(dest.secret.is_none()),
        image_pull_secrets: spec.image_pull_secrets.clone().filter(|s| !s.is_empty()),
        volumes: Some(vec![empty("backup"), empty("tmp")]),
        security_context: Some(security::helper_pod()),
        init_containers: Some(vec![dump]),
        containers: vec![upload],
        ..placement(mm)
    };
    let mut meta = child_meta(
        mm,
        names,
        &names.backup_job(image),
        labels::object_labels(mm, names, APP_BACKUP_JOB),
    );
    meta.annotations = Some(BTreeMap::from([
        (LOCATION_ANNOTATION.to_owned(), location),
        (VERSION_ANNOTATION.to_owned(), from_version.to_owned()),
    ]));
    let mut pod_labels = spec.resource_labels.clone().unwrap_or_default();
    pod_labels.extend(labels::selector(names, APP_BACKUP_JOB));
    Ok(job(
        meta,
        mm.annotations().get(RETRY_ANNOTATION),
        JobPod {
            labels: pod_labels,
            annotations: policy.extra_annotations.clone(),
            spec: pod,
            main_container: UPLOAD_CONTAINER.to_owned(),
            backoff_limit: BACKOFF_LIMIT,
            active_deadline_seconds: DEADLINE_SECONDS,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::DatabaseSecret;
    use crate::desired::security::tests::restricted;
    use mattermost_api::v1beta1::MattermostSpec;

    fn mm(spec: serde_json::Value) -> Mattermost {
        let spec: MattermostSpec = serde_json::from_value(spec).unwrap();
        let mut mm = Mattermost::new("chat", spec);
        mm.metadata.namespace = Some("ns".into());
        mm.metadata.uid = Some("u".into());
        mm
    }

    fn inputs(db_type: DbType) -> Inputs {
        Inputs {
            database: Some(DatabaseSecret {
                name: "db-credentials".into(),
                db_type,
                ..Default::default()
            }),
        }
    }

    fn s3_spec() -> serde_json::Value {
        serde_json::json!({
            "version": "10.8.1",
            "database": {"external": {"secret": "db-credentials"}},
            "fileStore": {"external": {"url": "s3.example.test", "bucket": "files", "secret": "file-store-credentials"}},
            "upgrade": {"backup": {"enabled": true, "keep": 3}},
        })
    }

    #[test]
    fn postgres_dump_to_the_file_store_bucket_with_credentials_from_secrets() {
        let m = mm(s3_spec());
        let names = Names::of(&m);
        let job = backup_job(&m, &names, &inputs(DbType::Postgres), "mm:10.9.0", "10.8.1").unwrap();
        assert_eq!(job.metadata.name, Some(names.backup_job("mm:10.9.0")));
        let location = &job.metadata.annotations.as_ref().unwrap()[LOCATION_ANNOTATION];
        assert!(
            location.starts_with("s3://files/mattermost-backups/chat/chat-10.8.1-")
                && location.ends_with(".pgdump"),
            "{location}"
        );
        let spec = job.spec.unwrap();
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        assert_eq!(pod.automount_service_account_token, Some(false));
        let dump = &pod.init_containers.as_ref().unwrap()[0];
        assert_eq!(dump.image.as_deref(), Some(POSTGRES_IMAGE));
        assert!(dump.command.as_ref().unwrap()[2].contains("pg_dump --format=custom"));
        let upload = &pod.containers[0];
        assert!(upload.command.as_ref().unwrap()[2].contains("aws --endpoint-url"));
        // Credentials only by reference; every literal value is public.
        for c in [dump, upload] {
            for e in c.env.as_ref().unwrap() {
                let secret_ref = e.value_from.as_ref().and_then(|v| v.secret_key_ref.as_ref());
                match e.name.as_str() {
                    "DB_CONNECTION_STRING" => {
                        assert_eq!(
                            secret_ref.map(|r| (r.name.as_str(), r.key.as_str())),
                            Some(("db-credentials", "DB_CONNECTION_STRING"))
                        );
                        assert!(e.value.is_none());
                    }
                    "AWS_ACCESS_KEY_ID" | "AWS_SECRET_ACCESS_KEY" => {
                        assert_eq!(
                            secret_ref.map(|r| r.name.as_str()),
                            Some("file-store-credentials")
                        );
                        assert!(e.value.is_none());
                    }
                    _ => assert!(e.value.is_some(), "{}", e.name),
                }
            }
            assert!(restricted(
                pod.security_context.as_ref().unwrap(),
                c.security_context.as_ref().unwrap()
            ));
        }
        let keep = upload
            .env
            .as_ref()
            .unwrap()
            .iter()
            .find(|e| e.name == "BACKUP_KEEP");
        assert_eq!(keep.and_then(|e| e.value.as_deref()), Some("3"));
        let rule = &spec.pod_failure_policy.unwrap().rules[0];
        assert_eq!(
            rule.on_exit_codes.as_ref().unwrap().container_name.as_deref(),
            Some(UPLOAD_CONTAINER)
        );
    }

    #[test]
    fn mysql_uses_mysqldump_with_the_password_in_the_environment() {
        let m = mm(s3_spec());
        let job = backup_job(&m, &Names::of(&m), &inputs(DbType::MySql), "mm:10.9.0", "10.8.1").unwrap();
        let pod = job.spec.unwrap().template.spec.unwrap();
        let dump = &pod.init_containers.unwrap()[0];
        let script = &dump.command.as_ref().unwrap()[2];
        assert!(
            script.contains("mysqldump") && script.contains("MYSQL_PWD") && !script.contains("--password")
        );
        assert_eq!(dump.image.as_deref(), Some(MYSQL_IMAGE));
    }

    #[test]
    fn own_bucket_and_refusals() {
        let mut spec = s3_spec();
        spec["upgrade"]["backup"] = serde_json::json!({"enabled": true, "url": "minio:9000", "bucket": "dumps", "prefix": "/x/", "secret": "backup-keys", "image": "pg:16"});
        let m = mm(spec);
        let names = Names::of(&m);
        let dest = destination(&m, &names).unwrap();
        assert_eq!(
            (dest.bucket.as_str(), dest.prefix.as_str(), dest.secret.as_deref()),
            ("dumps", "x", Some("backup-keys"))
        );
        let job = backup_job(&m, &names, &inputs(DbType::Postgres), "mm:2", "1").unwrap();
        let pod = job.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.init_containers.unwrap()[0].image.as_deref(), Some("pg:16"));

        let local = mm(serde_json::json!({"version": "1", "upgrade": {"backup": {"enabled": true}}}));
        assert_eq!(
            destination(&local, &Names::of(&local)),
            Err(BackupError::NoDestination)
        );
        assert_eq!(
            backup_job(&m, &names, &Inputs::default(), "mm:2", "1").unwrap_err(),
            BackupError::UnsupportedDatabase
        );
    }
}
