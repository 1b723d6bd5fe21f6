//! Pure builders of the desired children. No I/O: everything they need is in the `Mattermost`,
//! the `Names` and the `Inputs` read beforehand by the reconciler.

pub mod backup_job;
pub mod deferred;
pub mod deployment;
pub mod env;
pub mod ingress;
pub mod job;
pub mod labels;
pub mod meta;
pub mod names;
pub mod patch;
pub mod pdb;
pub mod pod_monitor;
pub mod pvc;
pub mod security;
pub mod service;
pub mod service_account;
pub mod update_job;
pub mod verify_job;

/// Kind of database, inferred from the scheme of `DB_CONNECTION_STRING`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DbType {
    /// `mysql://…`
    MySql,
    /// `postgres://…` or `postgresql://…`
    Postgres,
    /// Anything else.
    #[default]
    Unknown,
}

/// What the builders need to know about the external database Secret. Values are never kept,
/// only which keys exist and the database type.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DatabaseSecret {
    /// Secret name.
    pub name: String,
    /// Database type.
    pub db_type: DbType,
    /// The Secret has `MM_SQLSETTINGS_DATASOURCE`.
    pub has_datasource: bool,
    /// The Secret has `MM_SQLSETTINGS_DATASOURCEREPLICAS`.
    pub has_datasource_replicas: bool,
    /// The Secret has `DB_CONNECTION_CHECK_URL`.
    pub has_check_url: bool,
}

/// Facts about the cluster the builders depend on, read by the reconciler before building.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Inputs {
    /// The external database Secret, when the database is external and the Secret is valid.
    pub database: Option<DatabaseSecret>,
}
