//! Effective values: defaults and size presets applied in memory. The operator never writes them
//! back into the user's spec.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;

use super::size::SizePreset;
use super::spec::{ExternalFileStore, MattermostSpec};
use super::upgrade::BackupPolicy;

/// Image repository used when `spec.image` is empty.
pub const DEFAULT_IMAGE: &str = "mattermost/mattermost-enterprise-edition";
/// Version used when `spec.version` is empty.
pub const DEFAULT_VERSION: &str = "10.8.1";
/// Tags that move; using one only produces a warning.
pub const MUTABLE_TAGS: [&str; 5] = ["latest", "master", "main", "nightly", "edge"];
const PROXY_BODY_SIZE: &str = "nginx.ingress.kubernetes.io/proxy-body-size";

/// Where the installation keeps its files, in the Go operator's order of precedence.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FileStoreKind<'a> {
    /// External S3-compatible store (`external.url` set).
    External(&'a ExternalFileStore),
    /// A user-provided PersistentVolumeClaim.
    ExternalVolume(&'a str),
    /// A PersistentVolumeClaim managed by the operator.
    Local,
    /// Operator-managed MinIO, explicitly or because nothing else is set (unsupported).
    OperatorManaged,
}

/// Where the installation's database is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseKind<'a> {
    /// An external database described by this Secret.
    External(&'a str),
    /// Operator-managed MySQL, explicitly or because no secret is set (unsupported).
    OperatorManaged,
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

impl MattermostSpec {
    /// Image repository.
    pub fn image(&self) -> &str {
        non_empty(&self.image).unwrap_or(DEFAULT_IMAGE)
    }

    /// Version: tag or `sha256:` digest.
    pub fn version(&self) -> &str {
        non_empty(&self.version).unwrap_or(DEFAULT_VERSION)
    }

    /// Full image reference: `image@sha256:…` for digests, `image:tag` otherwise.
    pub fn image_reference(&self) -> String {
        image_reference(self.image(), self.version())
    }

    /// True when the version is a tag that moves (latest, master, …).
    pub fn has_mutable_tag(&self) -> bool {
        MUTABLE_TAGS.contains(&self.version())
    }

    /// The size preset in force: the named one, or the default when `size` is empty. `Err` with
    /// the unknown name otherwise.
    pub fn size_preset(&self) -> Result<SizePreset, String> {
        match non_empty(&self.size) {
            None => Ok(SizePreset::default_preset()),
            Some(name) => SizePreset::named(name).ok_or_else(|| name.to_owned()),
        }
    }

    fn explicit_size(&self) -> Option<SizePreset> {
        non_empty(&self.size).and_then(SizePreset::named)
    }

    /// Replicas: a named size wins (as in the Go operator); then `replicas`; then the default.
    pub fn effective_replicas(&self) -> i32 {
        match (self.explicit_size(), self.replicas) {
            (Some(p), _) => p.replicas,
            (None, Some(r)) => r.max(0),
            (None, None) => SizePreset::default_preset().replicas,
        }
    }

    /// Container resources: a named size wins; then `scheduling.resources`; then the default.
    pub fn effective_resources(&self) -> ResourceRequirements {
        let explicit = self.scheduling.as_ref().and_then(|s| s.resources.clone());
        match (self.explicit_size(), explicit) {
            (Some(p), _) => p.resources(),
            (None, Some(r)) => r,
            (None, None) => SizePreset::default_preset().resources(),
        }
    }

    /// True when a LoadBalancer Service replaces the Ingress.
    pub fn use_service_load_balancer(&self) -> bool {
        self.use_service_load_balancer.unwrap_or(false)
    }

    /// True in AWS Load Balancer Controller mode.
    pub fn alb_enabled(&self) -> bool {
        self.aws_load_balancer_controller
            .as_ref()
            .is_some_and(|a| a.enabled)
    }

    /// True when a (non-ALB) Ingress is created. Without `spec.ingress` the deprecated fields
    /// enable it, as in the Go operator.
    pub fn ingress_enabled(&self) -> bool {
        let enabled = self.ingress.as_ref().map(|i| i.enabled).unwrap_or(true);
        enabled && !self.use_service_load_balancer() && !self.alb_enabled()
    }

    /// Primary host: `ingress.host` (or the first of `ingress.hosts`), else `ingressName`.
    pub fn ingress_host(&self) -> Option<&str> {
        match &self.ingress {
            Some(i) => {
                non_empty(&i.host).or_else(|| i.hosts.iter().flatten().find_map(|h| non_empty(&h.host_name)))
            }
            None => non_empty(&self.ingress_name),
        }
    }

    /// All Ingress hosts, primary first, without duplicates.
    pub fn ingress_hosts(&self) -> Vec<String> {
        let mut hosts: Vec<String> = self.ingress_host().map(str::to_owned).into_iter().collect();
        let extra = self.ingress.as_ref().and_then(|i| i.hosts.as_ref());
        for h in extra
            .into_iter()
            .flatten()
            .filter_map(|h| non_empty(&h.host_name))
        {
            if !hosts.iter().any(|x| x == h) {
                hosts.push(h.to_owned());
            }
        }
        hosts
    }

    /// User annotations of the Ingress, sanitised: keys containing `snippet` and values with line
    /// breaks are dropped (configuration-injection risk).
    pub fn ingress_annotations(&self) -> BTreeMap<String, String> {
        let raw = match &self.ingress {
            Some(i) => i.annotations.clone(),
            None => self.ingress_annotations.clone(),
        };
        raw.unwrap_or_default()
            .into_iter()
            .filter(|(k, v)| !k.contains("snippet") && !v.contains(['\r', '\n']))
            .collect()
    }

    /// TLS secret of the Ingress: `ingress.tlsSecret`, or with the deprecated `useIngressTLS`
    /// the host with dots replaced by dashes plus `-tls-cert`.
    pub fn ingress_tls_secret(&self) -> Option<String> {
        match &self.ingress {
            Some(i) => non_empty(&i.tls_secret).map(str::to_owned),
            None if self.use_ingress_tls.unwrap_or(false) => self
                .ingress_host()
                .map(|h| format!("{}-tls-cert", h.replace('.', "-"))),
            None => None,
        }
    }

    /// Maximum file size in bytes derived from the proxy-body-size annotation (default 1000M), as
    /// the Go operator does: `M` × 1048576, `G` × 1048576000. `None` with a LoadBalancer Service.
    pub fn max_file_size(&self) -> Option<u64> {
        if self.use_service_load_balancer() {
            return None;
        }
        let annotations = self.ingress_annotations();
        let size = annotations
            .get(PROXY_BODY_SIZE)
            .map(String::as_str)
            .unwrap_or("1000M");
        let parse = |num: &str, mult: u64| num.parse::<u64>().ok().map(|n| n * mult);
        let parsed = if let Some(n) = size.strip_suffix(['M', 'm']) {
            parse(n, 1_048_576)
        } else if let Some(n) = size.strip_suffix(['G', 'g']) {
            parse(n, 1_048_576_000)
        } else {
            None
        };
        Some(parsed.unwrap_or(1_048_576_000))
    }

    /// Names of the Secrets the installation references (database, file store, license).
    pub fn referenced_secrets(&self) -> Vec<&str> {
        let db = self
            .database
            .as_ref()
            .and_then(|d| d.external.as_ref())
            .map(|e| e.secret.as_str());
        let fs = self
            .file_store
            .as_ref()
            .and_then(|f| f.external.as_ref())
            .and_then(|e| e.secret.as_deref());
        [db, fs, self.license_secret.as_deref()]
            .into_iter()
            .flatten()
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// The database in use.
    pub fn database_kind(&self) -> DatabaseKind<'_> {
        let external = self.database.as_ref().and_then(|d| d.external.as_ref());
        match external.map(|e| e.secret.as_str()).filter(|s| !s.is_empty()) {
            Some(secret) => DatabaseKind::External(secret),
            None => DatabaseKind::OperatorManaged,
        }
    }

    /// The file store in use, in the Go operator's order of precedence.
    pub fn file_store_kind(&self) -> FileStoreKind<'_> {
        let Some(fs) = &self.file_store else {
            return FileStoreKind::OperatorManaged;
        };
        if let Some(ext) = fs.external.as_ref().filter(|e| !e.url.is_empty()) {
            return FileStoreKind::External(ext);
        }
        if let Some(v) = fs
            .external_volume
            .as_ref()
            .filter(|v| !v.volume_claim_name.is_empty())
        {
            return FileStoreKind::ExternalVolume(&v.volume_claim_name);
        }
        if fs.local.as_ref().is_some_and(|l| l.enabled) {
            return FileStoreKind::Local;
        }
        FileStoreKind::OperatorManaged
    }

    /// True when the local-filestore claim is deleted with the installation (retainPolicy Delete).
    pub fn local_file_store_deleted_with_installation(&self) -> bool {
        let local = self.file_store.as_ref().and_then(|f| f.local.as_ref());
        local.and_then(|l| l.retain_policy.as_deref()) == Some("Delete")
    }

    /// True when the dedicated job server is on.
    pub fn dedicated_job_server(&self) -> bool {
        self.job_server
            .as_ref()
            .and_then(|j| j.dedicated_job_server)
            .unwrap_or(false)
    }

    /// True when new images roll out without the update Job.
    pub fn update_job_disabled(&self) -> bool {
        self.update_job.as_ref().and_then(|u| u.disabled).unwrap_or(false)
    }

    /// `maxUnavailable` of the PodDisruptionBudget, or `None` when there should be none (disabled,
    /// or at most one replica).
    pub fn pdb_max_unavailable(&self) -> Option<i32> {
        let pdb = self.pod_disruption_budget.as_ref();
        let disabled = pdb.and_then(|p| p.disabled).unwrap_or(false);
        (!disabled && self.effective_replicas() > 1).then(|| pdb.and_then(|p| p.max_unavailable).unwrap_or(1))
    }

    /// True when the Mattermost pods' metrics should be scraped through a PodMonitor.
    pub fn monitoring_enabled(&self) -> bool {
        self.monitoring.as_ref().and_then(|m| m.enabled).unwrap_or(false)
    }

    /// Progress deadline of rollouts in seconds (default 600, the Deployment default).
    pub fn progress_deadline_seconds(&self) -> i32 {
        self.upgrade
            .as_ref()
            .and_then(|u| u.progress_deadline_seconds)
            .unwrap_or(600)
    }

    /// True when a rollout past its deadline is rolled back to the last stable version.
    pub fn automatic_rollback(&self) -> bool {
        self.upgrade
            .as_ref()
            .and_then(|u| u.automatic_rollback)
            .unwrap_or(false)
    }

    /// True when versions older than the last stable one are allowed.
    pub fn allow_downgrade(&self) -> bool {
        self.upgrade
            .as_ref()
            .and_then(|u| u.allow_downgrade)
            .unwrap_or(false)
    }

    /// The backup policy when backups before upgrades are enabled.
    pub fn backup(&self) -> Option<&BackupPolicy> {
        let upgrade = self.upgrade.as_ref()?;
        upgrade.backup.as_ref().filter(|b| b.enabled.unwrap_or(false))
    }

    /// True when a new version is verified by the server itself before it is `stable`.
    pub fn verify_enabled(&self) -> bool {
        let verify = self.upgrade.as_ref().and_then(|u| u.verify.as_ref());
        verify.and_then(|v| v.enabled).unwrap_or(true)
    }

    /// Seconds the verification may take (default 120).
    pub fn verify_timeout_seconds(&self) -> i32 {
        let verify = self.upgrade.as_ref().and_then(|u| u.verify.as_ref());
        verify.and_then(|v| v.timeout_seconds).unwrap_or(120)
    }

    /// True when the capacity preflight check is skipped.
    pub fn skip_capacity_check(&self) -> bool {
        self.upgrade
            .as_ref()
            .and_then(|u| u.skip_capacity_check)
            .unwrap_or(false)
    }

    /// True with the `Recreate` strategy (no surge pod).
    pub fn recreate_strategy(&self) -> bool {
        self.deployment_template
            .as_ref()
            .and_then(|d| d.deployment_strategy_type.as_deref())
            == Some("Recreate")
    }

    /// True when the S3 store authenticates through the ServiceAccount's IAM role (IRSA).
    pub fn uses_service_account_for_s3(&self) -> bool {
        matches!(self.file_store_kind(), FileStoreKind::External(e) if e.use_service_account.unwrap_or(false))
    }
}

/// `image@sha256:…` for digests, `image:tag` otherwise.
pub fn image_reference(image: &str, version: &str) -> String {
    if version.starts_with("sha256:") {
        format!("{image}@{version}")
    } else {
        format!("{image}:{version}")
    }
}

/// Splits an image reference into repository and version (tag or digest); the inverse of
/// [`image_reference`]. A reference without tag has version `latest`.
pub fn split_image_reference(reference: &str) -> (String, String) {
    if let Some((repo, digest)) = reference.split_once('@') {
        return (repo.to_owned(), digest.to_owned());
    }
    match reference.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo.to_owned(), tag.to_owned()),
        _ => (reference.to_owned(), "latest".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1beta1::{Ingress, IngressHost};

    #[test]
    fn defaults_and_presets() {
        let mut spec = MattermostSpec::default();
        assert_eq!(
            spec.image_reference(),
            "mattermost/mattermost-enterprise-edition:10.8.1"
        );
        assert_eq!(spec.effective_replicas(), 2);
        spec.replicas = Some(5);
        assert_eq!(spec.effective_replicas(), 5);
        spec.size = Some("100users".into());
        assert_eq!(
            spec.effective_replicas(),
            1,
            "a named size wins, as in the Go operator"
        );
        spec.size = Some("bogus".into());
        assert_eq!(spec.size_preset(), Err("bogus".to_owned()));
        assert_eq!(spec.effective_replicas(), 5);
        spec.version = Some("sha256:abc".into());
        assert_eq!(
            spec.image_reference(),
            "mattermost/mattermost-enterprise-edition@sha256:abc"
        );
    }

    #[test]
    fn deprecated_ingress_fields() {
        let spec = MattermostSpec {
            ingress_name: Some("chat.example.com".into()),
            use_ingress_tls: Some(true),
            ingress_annotations: Some(BTreeMap::from([
                ("a-snippet".into(), "x".into()),
                (PROXY_BODY_SIZE.into(), "100M".into()),
            ])),
            ..Default::default()
        };
        assert!(spec.ingress_enabled());
        assert_eq!(spec.ingress_host(), Some("chat.example.com"));
        assert_eq!(
            spec.ingress_tls_secret().as_deref(),
            Some("chat-example-com-tls-cert")
        );
        assert_eq!(spec.ingress_annotations().len(), 1);
        assert_eq!(spec.max_file_size(), Some(104_857_600));
    }

    #[test]
    fn ingress_hosts_are_deduplicated() {
        let spec = MattermostSpec {
            ingress: Some(Ingress {
                enabled: true,
                host: Some("a".into()),
                hosts: Some(vec![
                    IngressHost {
                        host_name: Some("a".into()),
                    },
                    IngressHost {
                        host_name: Some("b".into()),
                    },
                ]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(spec.ingress_hosts(), vec!["a", "b"]);
        assert_eq!(spec.max_file_size(), Some(1_048_576_000));
    }

    #[test]
    fn image_references_round_trip() {
        for (img, ver) in [
            ("mattermost/mm", "10.5.1"),
            ("reg:5000/mm", "1.0"),
            ("mm", "sha256:abc"),
        ] {
            assert_eq!(
                split_image_reference(&image_reference(img, ver)),
                (img.to_owned(), ver.to_owned())
            );
        }
        assert_eq!(
            split_image_reference("reg:5000/mm"),
            ("reg:5000/mm".to_owned(), "latest".to_owned())
        );
    }
}
