//! Reads what the builders depend on (referenced Secrets and claims) and checks it. Secret values
//! are read only to check keys and the database scheme; they never leave this module.

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret};
use kube::{Api, Client};
use mattermost_api::v1beta1::{DatabaseKind, FileStoreKind, MattermostSpec};

use crate::desired::{DatabaseSecret, DbType, Inputs};

/// Condition type of the database check.
pub const DATABASE_CONFIGURED: &str = "DatabaseConfigured";
/// Condition type of the file-store check.
pub const FILE_STORE_CONFIGURED: &str = "FileStoreConfigured";
/// Condition type of the license check.
pub const LICENSE_CONFIGURED: &str = "LicenseConfigured";
/// Condition type of the remaining spec checks (size, patches).
pub const SPEC_VALID: &str = "SpecValid";

/// A configuration problem the user must fix. Messages name secrets and keys, never values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A referenced Secret does not exist.
    #[error("{purpose} secret {secret:?} not found")]
    SecretNotFound {
        /// What the secret is for.
        purpose: &'static str,
        /// Secret name.
        secret: String,
    },
    /// A referenced Secret lacks a key or the key is empty.
    #[error("{purpose} secret {secret:?} has no non-empty key {key:?}")]
    SecretKeyMissing {
        /// What the secret is for.
        purpose: &'static str,
        /// Secret name.
        secret: String,
        /// Missing key.
        key: &'static str,
    },
    /// DB_CONNECTION_CHECK_URL has a scheme not allowed for the database type.
    #[error(
        "database secret {secret:?}: DB_CONNECTION_CHECK_URL scheme {scheme:?} is not allowed for a {db} database (allowed: {allowed})"
    )]
    InvalidDatabaseUrl {
        /// Secret name.
        secret: String,
        /// Offending scheme.
        scheme: String,
        /// Database type.
        db: &'static str,
        /// Allowed schemes.
        allowed: &'static str,
    },
    /// A configuration this operator does not run (operator-managed MySQL/MinIO).
    #[error("{0}")]
    Unsupported(String),
    /// The external volume claim is missing or unusable.
    #[error("file store volume claim {claim:?} {problem}")]
    VolumeClaim {
        /// Claim name.
        claim: String,
        /// What is wrong.
        problem: String,
    },
    /// Invalid field the CRD schema should have rejected (e.g. an old CRD is installed).
    #[error("{0}")]
    InvalidSpec(String),
    /// The API server could not be read; transient.
    #[error("reading {what}: {message}")]
    Api {
        /// What was read.
        what: String,
        /// Error text.
        message: String,
    },
}

impl ConfigError {
    /// Stable reason for conditions, events and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            ConfigError::SecretNotFound { .. } => "SecretNotFound",
            ConfigError::SecretKeyMissing { .. } => "SecretKeyMissing",
            ConfigError::InvalidDatabaseUrl { .. } => "InvalidDatabaseURL",
            ConfigError::Unsupported(_) => "UnsupportedConfiguration",
            ConfigError::VolumeClaim { .. } => "VolumeClaimNotUsable",
            ConfigError::InvalidSpec(_) => "InvalidSpec",
            ConfigError::Api { .. } => "ApiError",
        }
    }

    /// True when retrying without a change can help.
    pub fn is_transient(&self) -> bool {
        matches!(self, ConfigError::Api { .. })
    }
}

/// Outcome of one dependency check, reported as a condition.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// Condition type.
    pub type_: &'static str,
    /// `Ok` with a reason and message, or the problem.
    pub result: Result<(&'static str, String), ConfigError>,
}

/// Everything read before building.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Observed {
    /// Inputs of the builders.
    pub inputs: Inputs,
    /// One check per dependency.
    pub checks: Vec<Check>,
    /// Values of the referenced Secrets, to scrub foreign text with during this reconcile only.
    pub secrets: crate::redact::Secrets,
}

impl Observed {
    /// The first problem, if any.
    pub fn first_error(&self) -> Option<&ConfigError> {
        self.checks.iter().find_map(|c| c.result.as_ref().err())
    }
}

/// What [`observe`] read, per installation (by uid), kept until a referenced Secret changes (the
/// Secret metadata watch calls [`Memo::invalidate`]) or a part of the spec it depends on does
/// ([`memo_key`]: a version upgrade or a scale reads nothing again). Reconciles
/// triggered by children and periodic resyncs then cost no request. Kept only for results without
/// a problem and without an external volume claim (a claim is not watched). Holds the values of
/// the referenced Secrets (for redaction), as an informer cache of Secrets would, and only those.
#[derive(Debug, Default)]
pub struct Memo(std::sync::Mutex<std::collections::HashMap<String, MemoEntry>>);

#[derive(Debug, Default)]
struct MemoEntry {
    /// Bumped by every invalidation, so that a read that started before one is not kept.
    epoch: u64,
    kept: Option<(u64, Observed)>,
}

impl Memo {
    /// What was read for `uid` under `key` ([`memo_key`]), if still valid.
    pub fn get(&self, uid: &str, key: u64) -> Option<Observed> {
        let m = self.0.lock().ok()?;
        match &m.get(uid)?.kept {
            Some((k, observed)) if *k == key => Some(observed.clone()),
            _ => None,
        }
    }

    /// The invalidation count of `uid`; pass it to [`Memo::keep`] after reading.
    pub fn epoch(&self, uid: &str) -> u64 {
        self.0
            .lock()
            .map(|m| m.get(uid).map_or(0, |e| e.epoch))
            .unwrap_or(0)
    }

    /// Keeps `observed` unless `uid` was invalidated since `epoch` or it must not be kept.
    pub fn keep(&self, uid: &str, key: u64, epoch: u64, spec: &MattermostSpec, observed: &Observed) {
        let keepable = observed.first_error().is_none()
            && !matches!(spec.file_store_kind(), FileStoreKind::ExternalVolume(_));
        if let Ok(mut m) = self.0.lock() {
            let entry = m.entry(uid.to_owned()).or_default();
            if keepable && entry.epoch == epoch {
                entry.kept = Some((key, observed.clone()));
            }
        }
    }

    /// A referenced Secret changed: read again next time.
    pub fn invalidate(&self, uid: &str) {
        if let Ok(mut m) = self.0.lock() {
            let entry = m.entry(uid.to_owned()).or_default();
            entry.epoch += 1;
            entry.kept = None;
        }
    }

    /// Drops the entries of installations for which `live` is false.
    pub fn retain(&self, live: impl Fn(&str) -> bool) {
        if let Ok(mut m) = self.0.lock() {
            m.retain(|uid, _| live(uid));
        }
    }
}

/// The part of `spec` that [`observe`] depends on, hashed: everything but the version, image and
/// replica count.
pub fn memo_key(spec: &MattermostSpec) -> u64 {
    let mut v = serde_json::to_value(spec).unwrap_or_default();
    if let Some(m) = v.as_object_mut() {
        for k in ["version", "image", "replicas"] {
            m.remove(k);
        }
    }
    let hash = crate::apply::hash_of(&v).unwrap_or_default();
    u64::from_str_radix(&hash, 16).unwrap_or_default()
}

/// Referenced Secrets as last read, shared by every installation, each kept while its
/// resourceVersion is the latest the Secret metadata watch reported: installations that reference
/// the same Secret read it once, and a Secret is read again only after it changed. (Values are
/// held as an informer cache of Secrets would, only for referenced Secrets, and never leave this
/// module.)
#[derive(Debug, Default)]
pub struct SecretReads(std::sync::Mutex<std::collections::HashMap<(String, String), SecretRead>>);

#[derive(Debug, Default)]
struct SecretRead {
    /// The latest resourceVersion the watch reported.
    latest: Option<String>,
    read: Option<Secret>,
}

impl SecretReads {
    /// The watch saw `ns/name` at `resource_version`.
    pub fn seen(&self, ns: &str, name: &str, resource_version: Option<String>) {
        if let Ok(mut m) = self.0.lock() {
            m.entry((ns.to_owned(), name.to_owned())).or_default().latest = resource_version;
        }
    }

    /// The watch saw `ns/name` deleted.
    pub fn deleted(&self, ns: &str, name: &str) {
        if let Ok(mut m) = self.0.lock() {
            m.remove(&(ns.to_owned(), name.to_owned()));
        }
    }

    /// Drops the reads for which `referenced` is false.
    pub fn retain(&self, referenced: impl Fn(&str, &str) -> bool) {
        if let Ok(mut m) = self.0.lock() {
            m.retain(|(ns, name), _| referenced(ns, name));
        }
    }

    fn get(&self, ns: &str, name: &str) -> Option<Secret> {
        let m = self.0.lock().ok()?;
        let e = m.get(&(ns.to_owned(), name.to_owned()))?;
        let read = e.read.as_ref()?;
        (e.latest.is_some() && read.metadata.resource_version == e.latest).then(|| read.clone())
    }

    fn keep(&self, ns: &str, name: &str, secret: &Secret) {
        if let Ok(mut m) = self.0.lock() {
            m.entry((ns.to_owned(), name.to_owned())).or_default().read = Some(secret.clone());
        }
    }
}

/// Reads and checks the database, file store and license of `spec` in `ns`; Secrets come from
/// `reads` when they did not change since they were last read.
pub async fn observe(
    client: &Client,
    ns: &str,
    spec: &MattermostSpec,
    reads: Option<&SecretReads>,
) -> Observed {
    let secrets = Secrets {
        api: Api::namespaced(client.clone(), ns),
        ns,
        reads,
    };
    let mut observed = Observed::default();

    let database = match spec.database_kind() {
        DatabaseKind::External(name) => match secrets.get(name, "database").await {
            Ok(secret) => check_database_secret(name, observed.secrets.with(&secret)).map(|db| {
                let msg = format!("external {:?} database from secret {name:?}", db.db_type);
                observed.inputs.database = Some(db);
                ("ExternalDatabase", msg)
            }),
            Err(e) => Err(e),
        },
        DatabaseKind::OperatorManaged => Err(ConfigError::Unsupported(
            "operator-managed databases are not supported (the MySQL operator they relied on is archived): \
             set spec.database.external.secret"
                .to_owned(),
        )),
    };
    observed.checks.push(Check {
        type_: DATABASE_CONFIGURED,
        result: database,
    });

    let file_store = match spec.file_store_kind() {
        FileStoreKind::External(ext) => check_external_file_store(&secrets, ext, &mut observed.secrets).await,
        FileStoreKind::ExternalVolume(claim) => {
            let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
            check_claim(&pvcs, claim).await
        }
        FileStoreKind::Local => Ok((
            "LocalVolume",
            "local volume claim managed by the operator".to_owned(),
        )),
        FileStoreKind::OperatorManaged => Err(ConfigError::Unsupported(
            "operator-managed MinIO is not supported (the MinIO operator it relied on is archived): set \
             spec.fileStore.external, externalVolume or local"
                .to_owned(),
        )),
    };
    observed.checks.push(Check {
        type_: FILE_STORE_CONFIGURED,
        result: file_store,
    });

    if let Some(name) = spec.license_secret.as_deref().filter(|s| !s.is_empty()) {
        let license = match secrets.get(name, "license").await {
            Ok(secret) => require_keys(observed.secrets.with(&secret), name, "license", &["license"])
                .map(|()| ("LicenseFound", format!("license from secret {name:?}"))),
            Err(e) => Err(e),
        };
        observed.checks.push(Check {
            type_: LICENSE_CONFIGURED,
            result: license,
        });
    }

    if let Some(password) = spec.elastic_search.as_ref().and_then(|e| e.password.as_deref()) {
        observed.secrets.add(password.as_bytes());
    }
    observed.checks.push(Check {
        type_: SPEC_VALID,
        result: check_spec(spec),
    });
    observed
}

/// Where [`observe`] reads Secrets from.
struct Secrets<'a> {
    api: Api<Secret>,
    ns: &'a str,
    reads: Option<&'a SecretReads>,
}

impl Secrets<'_> {
    async fn get(&self, name: &str, purpose: &'static str) -> Result<Secret, ConfigError> {
        if let Some(s) = self.reads.and_then(|r| r.get(self.ns, name)) {
            return Ok(s);
        }
        let s = get_secret(&self.api, name, purpose).await?;
        if let Some(r) = self.reads {
            r.keep(self.ns, name, &s);
        }
        Ok(s)
    }
}

async fn get_secret(api: &Api<Secret>, name: &str, purpose: &'static str) -> Result<Secret, ConfigError> {
    match api.get_opt(name).await {
        Ok(Some(s)) => Ok(s),
        Ok(None) => Err(ConfigError::SecretNotFound {
            purpose,
            secret: name.to_owned(),
        }),
        Err(e) => Err(ConfigError::Api {
            what: format!("secret {name:?}"),
            message: crate::redact::api_message(&e),
        }),
    }
}

fn value<'a>(secret: &'a Secret, key: &str) -> Option<&'a [u8]> {
    let from_data = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|v| v.0.as_slice());
    let from_string = secret
        .string_data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|v| v.as_bytes());
    from_data.or(from_string).filter(|v| !v.is_empty())
}

fn require_keys(
    secret: &Secret,
    name: &str,
    purpose: &'static str,
    keys: &[&'static str],
) -> Result<(), ConfigError> {
    match keys.iter().find(|k| value(secret, k).is_none()) {
        Some(key) => Err(ConfigError::SecretKeyMissing {
            purpose,
            secret: name.to_owned(),
            key,
        }),
        None => Ok(()),
    }
}

fn scheme(url: &[u8]) -> String {
    let s = String::from_utf8_lossy(url);
    s.split_once("://")
        .map(|(scheme, _)| scheme.to_ascii_lowercase())
        .unwrap_or_default()
}

/// Checks the external database secret (pure; exposed for tests).
pub fn check_database_secret(name: &str, secret: &Secret) -> Result<DatabaseSecret, ConfigError> {
    require_keys(secret, name, "database", &["DB_CONNECTION_STRING"])?;
    let conn_scheme = value(secret, "DB_CONNECTION_STRING")
        .map(scheme)
        .unwrap_or_default();
    let db_type = match conn_scheme.as_str() {
        s if s.starts_with("mysql") => DbType::MySql,
        s if s.starts_with("postgres") => DbType::Postgres,
        _ => DbType::Unknown,
    };
    if let Some(url) = value(secret, "DB_CONNECTION_CHECK_URL") {
        let (db, allowed): (&'static str, &'static [&str]) = match db_type {
            DbType::MySql => ("mysql", &["http", "https"]),
            DbType::Postgres => ("postgres", &["http", "https", "postgres", "postgresql"]),
            DbType::Unknown => ("unknown", &["http", "https", "postgres", "postgresql", "mysql"]),
        };
        let s = scheme(url);
        if !allowed.contains(&s.as_str()) {
            return Err(ConfigError::InvalidDatabaseUrl {
                secret: name.to_owned(),
                scheme: s,
                db,
                allowed: match db_type {
                    DbType::MySql => "http, https",
                    DbType::Postgres => "http, https, postgres",
                    DbType::Unknown => "http, https, postgres, mysql",
                },
            });
        }
    }
    Ok(DatabaseSecret {
        name: name.to_owned(),
        db_type,
        has_datasource: value(secret, "MM_SQLSETTINGS_DATASOURCE").is_some(),
        has_datasource_replicas: value(secret, "MM_SQLSETTINGS_DATASOURCEREPLICAS").is_some(),
        has_check_url: value(secret, "DB_CONNECTION_CHECK_URL").is_some(),
    })
}

async fn check_external_file_store(
    secrets: &Secrets<'_>,
    ext: &mattermost_api::v1beta1::ExternalFileStore,
    values: &mut crate::redact::Secrets,
) -> Result<(&'static str, String), ConfigError> {
    if ext.bucket.is_empty() {
        return Err(ConfigError::InvalidSpec(
            "fileStore.external.bucket must not be empty".to_owned(),
        ));
    }
    if ext.use_service_account.unwrap_or(false) {
        return Ok((
            "ExternalS3",
            format!("S3 bucket {:?} through the ServiceAccount's IAM role", ext.bucket),
        ));
    }
    let name = ext.secret.as_deref().unwrap_or_default();
    if name.is_empty() {
        return Err(ConfigError::InvalidSpec(
            "fileStore.external.secret must be set".to_owned(),
        ));
    }
    let secret = secrets.get(name, "file store").await?;
    require_keys(
        values.with(&secret),
        name,
        "file store",
        &["accesskey", "secretkey"],
    )?;
    Ok((
        "ExternalS3",
        format!("S3 bucket {:?} with keys from secret {name:?}", ext.bucket),
    ))
}

async fn check_claim(
    api: &Api<PersistentVolumeClaim>,
    claim: &str,
) -> Result<(&'static str, String), ConfigError> {
    let pvc = api.get_opt(claim).await.map_err(|e| ConfigError::Api {
        what: format!("claim {claim:?}"),
        message: crate::redact::api_message(&e),
    })?;
    let phase = pvc.and_then(|p| p.status).and_then(|s| s.phase);
    match phase.as_deref() {
        Some("Bound") | Some("Pending") => Ok(("ExternalVolume", format!("volume claim {claim:?}"))),
        Some(other) => Err(ConfigError::VolumeClaim {
            claim: claim.to_owned(),
            problem: format!("is {other}"),
        }),
        None => Err(ConfigError::VolumeClaim {
            claim: claim.to_owned(),
            problem: "not found".to_owned(),
        }),
    }
}

/// Spec checks the CRD schema also does, repeated in case an older CRD is installed.
fn check_spec(spec: &MattermostSpec) -> Result<(&'static str, String), ConfigError> {
    spec.size_preset()
        .map_err(|name| ConfigError::InvalidSpec(format!("unknown size {name:?}")))?;
    if spec.ingress_enabled() && spec.ingress_host().is_none() {
        return Err(ConfigError::InvalidSpec(
            "ingress.host required, but not set".to_owned(),
        ));
    }
    let patches = spec.resource_patch.as_ref();
    for (target, patch) in [
        (
            crate::desired::patch::PatchTarget::Service,
            patches.and_then(|p| p.service.as_ref()),
        ),
        (
            crate::desired::patch::PatchTarget::Deployment,
            patches.and_then(|p| p.deployment.as_ref()),
        ),
    ] {
        let text = patch
            .filter(|p| !p.disable.unwrap_or(false))
            .and_then(|p| p.patch.as_deref());
        if let Some(path) = text.and_then(|t| crate::desired::patch::forbidden_patch_path(target, t)) {
            return Err(ConfigError::InvalidSpec(format!(
                "resourcePatch may not change {path}"
            )));
        }
    }
    Ok(("Valid", "spec is valid".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use std::collections::BTreeMap;

    fn secret(pairs: &[(&str, &str)]) -> Secret {
        Secret {
            data: Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn database_secret_checks() {
        let ok =
            check_database_secret("db", &secret(&[("DB_CONNECTION_STRING", "postgres://u:p@h/db")])).unwrap();
        assert_eq!(ok.db_type, DbType::Postgres);
        assert!(!ok.has_check_url);
        let missing = check_database_secret("db", &secret(&[])).unwrap_err();
        assert_eq!(missing.reason(), "SecretKeyMissing");
        let bad = check_database_secret(
            "db",
            &secret(&[
                ("DB_CONNECTION_STRING", "mysql://secretpw@h"),
                ("DB_CONNECTION_CHECK_URL", "ftp://x"),
            ]),
        )
        .unwrap_err();
        assert_eq!(bad.reason(), "InvalidDatabaseURL");
        assert!(
            !bad.to_string().contains("secretpw"),
            "no secret value in messages"
        );
    }

    #[test]
    fn string_data_counts_and_empty_values_do_not() {
        let s = Secret {
            string_data: Some(BTreeMap::from([("license".to_owned(), "x".to_owned())])),
            data: Some(BTreeMap::from([("other".to_owned(), ByteString(vec![]))])),
            ..Default::default()
        };
        assert!(require_keys(&s, "l", "license", &["license"]).is_ok());
        assert!(require_keys(&s, "l", "license", &["other"]).is_err());
    }

    #[test]
    fn the_memo_keeps_good_reads_until_invalidated_or_the_spec_changes() {
        let spec: MattermostSpec = serde_json::from_value(serde_json::json!({
            "database": {"external": {"secret": "db"}},
            "fileStore": {"external": {"url": "s3", "bucket": "b", "secret": "fs"}}
        }))
        .unwrap();
        let memo = Memo::default();
        let good = Observed {
            checks: vec![Check {
                type_: DATABASE_CONFIGURED,
                result: Ok(("ExternalDatabase", "db".into())),
            }],
            ..Default::default()
        };
        assert!(memo.get("u", 1).is_none());
        let epoch = memo.epoch("u");
        memo.keep("u", 1, epoch, &spec, &good);
        assert_eq!(memo.get("u", 1), Some(good.clone()));
        assert!(memo.get("u", 2).is_none(), "another key reads again");
        let mut upgraded = spec.clone();
        upgraded.version = Some("10.9.0".into());
        upgraded.replicas = Some(3);
        assert_eq!(
            memo_key(&spec),
            memo_key(&upgraded),
            "an upgrade or a scale reads nothing again"
        );
        upgraded.license_secret = Some("license".into());
        assert_ne!(
            memo_key(&spec),
            memo_key(&upgraded),
            "a new Secret reference does"
        );

        // A Secret changed while a read was in flight: that read is not kept.
        let epoch = memo.epoch("u");
        memo.invalidate("u");
        assert!(memo.get("u", 1).is_none());
        memo.keep("u", 1, epoch, &spec, &good);
        assert!(memo.get("u", 1).is_none());

        // Problems are never kept: they are retried with backoff and read again.
        let bad = Observed {
            checks: vec![Check {
                type_: DATABASE_CONFIGURED,
                result: Err(ConfigError::SecretNotFound {
                    purpose: "database",
                    secret: "db".into(),
                }),
            }],
            ..Default::default()
        };
        let epoch = memo.epoch("u");
        memo.keep("u", 1, epoch, &spec, &bad);
        assert!(memo.get("u", 1).is_none());

        memo.keep("u", 1, epoch, &spec, &good);
        memo.retain(|uid| uid != "u");
        assert!(memo.get("u", 1).is_none());
    }
}
