//! Child names, computed once per reconcile; builders only read them. They match the Go operator
//! so existing installations are adopted by name. Names that must be DNS labels (Services, Jobs:
//! at most 63 characters) and would be longer get a cut prefix and a stable hash instead, so
//! every installation name the Go operator accepts (up to 63 characters) has valid children.

use kube::ResourceExt;
use mattermost_api::v1beta1::Mattermost;

/// Name of the Mattermost container (Go operator compatible).
pub const MAIN_CONTAINER: &str = "mattermost";
/// Name of the job-server container (Go operator compatible).
pub const JOB_SERVER_CONTAINER: &str = "mattermost-jobserver";

/// Longest DNS label (Service and Job names, label values).
pub const MAX_LABEL: usize = 63;
/// Longest DNS subdomain (Deployment, ServiceAccount, Ingress, claim names).
pub const MAX_SUBDOMAIN: usize = 253;

/// Names of every child of one installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// Installation name: Deployment, Service, Ingress, ServiceAccount, Role, RoleBinding, PVC.
    pub app: String,
    /// Headless Service for cluster-peer discovery (includes not-ready pods).
    pub peers: String,
    /// Dedicated job-server Deployment (a DNS subdomain, so the Go name always fits).
    pub job_server: String,
    /// Namespace of the installation.
    pub namespace: String,
}

impl Names {
    /// Names of `mm`'s children.
    pub fn of(mm: &Mattermost) -> Self {
        let app = mm.name_any();
        Self {
            peers: fit(&app, "-peers", MAX_LABEL),
            job_server: fit(&app, "-jobserver", MAX_SUBDOMAIN),
            namespace: mm.namespace().unwrap_or_default(),
            app,
        }
    }

    /// Update Job for `image`: one per installation and image (the Go operator used one fixed
    /// name per namespace). Kept within the 63-character label limit Job names need.
    pub fn update_job(&self, image: &str) -> String {
        self.job("-update-", image)
    }

    /// Backup Job before the update Job for `image` (one per installation and target image).
    pub fn backup_job(&self, image: &str) -> String {
        self.job("-backup-", image)
    }

    /// Verification Job of the rollout of `image`.
    pub fn verify_job(&self, image: &str) -> String {
        self.job("-verify-", image)
    }

    /// Object name of the dump taken at `from_version` before the upgrade to `image`: readable
    /// (installation and version) and unique per target image.
    pub fn backup_object(&self, from_version: &str, image: &str, extension: &str) -> String {
        let version: String = from_version
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        format!("{}-{version}-{}.{extension}", self.app, short_hash(image))
    }

    /// `<app><infix><hash of image>`, within the 63 characters a Job name may have.
    fn job(&self, infix: &str, image: &str) -> String {
        let hash = short_hash(image);
        let prefix: String = self
            .app
            .chars()
            .take(MAX_LABEL - infix.len() - hash.len())
            .collect();
        format!("{}{infix}{hash}", prefix.trim_end_matches('-'))
    }
}

/// `{base}{suffix}` when it has at most `max` characters (the Go operator's name); otherwise
/// `base` cut short, `-`, the hash of the full name and `suffix`: unique, stable and valid.
pub fn fit(base: &str, suffix: &str, max: usize) -> String {
    let full = format!("{base}{suffix}");
    if full.len() <= max {
        return full;
    }
    let hash = short_hash(&full);
    let keep = max.saturating_sub(suffix.len() + hash.len() + 1);
    let prefix: String = base.chars().take(keep).collect();
    format!("{}-{hash}{suffix}", prefix.trim_end_matches(['-', '.']))
}

/// True when `name` is a valid DNS label (RFC 1123): what Service and Job names must be.
pub fn is_dns_label(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_LABEL
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// True when `name` is a valid DNS subdomain as Kubernetes checks it (labels of any length, at
/// most 253 characters in all): what Deployment and most other names must be.
pub fn is_dns_subdomain(name: &str) -> bool {
    let label = |l: &str| {
        let b = l.as_bytes();
        !b.is_empty()
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-'
    };
    name.len() <= MAX_SUBDOMAIN && name.split('.').all(label)
}

/// First 8 hex digits of the FNV-1a hash of `s`: stable across processes and versions.
pub fn short_hash(s: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("{h:08x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_go_operator_and_fit_limits() {
        let mut mm = Mattermost::new("chat", Default::default());
        mm.metadata.namespace = Some("ns".into());
        let n = Names::of(&mm);
        assert_eq!(
            (n.app.as_str(), n.job_server.as_str()),
            ("chat", "chat-jobserver")
        );
        assert_eq!(n.update_job("a:1"), n.update_job("a:1"));
        assert_ne!(n.update_job("a:1"), n.update_job("a:2"));
        let long = Mattermost::new(&"x".repeat(63), Default::default());
        assert!(Names::of(&long).update_job("a").len() <= 63);
        assert!(n.backup_job("a:1").starts_with("chat-backup-"));
        assert!(n.verify_job("a:1").starts_with("chat-verify-"));
        let object = n.backup_object("sha256:ab", "a:1", "pgdump");
        assert!(object.starts_with("chat-sha256-ab-") && object.ends_with(".pgdump"));
    }

    #[test]
    fn go_names_are_kept_where_they_fit() {
        let n = Names::of(&Mattermost::new(&"a".repeat(57), Default::default()));
        assert_eq!(n.peers, format!("{}-peers", "a".repeat(57)));
        let n = Names::of(&Mattermost::new(&"a".repeat(63), Default::default()));
        assert_eq!(
            n.job_server,
            format!("{}-jobserver", "a".repeat(63)),
            "Go name of takeovers"
        );
        assert_eq!(n.peers.len(), 63);
        assert!(n.peers.ends_with("-peers"));
    }

    proptest::proptest! {
        /// Every name the Go operator accepts (a DNS label) yields valid, distinct children.
        #[test]
        fn every_child_name_is_valid(name in "[a-z]([a-z0-9-]{0,61}[a-z0-9])?", image in "[a-z/:.0-9]{1,40}") {
            let n = Names::of(&Mattermost::new(&name, Default::default()));
            proptest::prop_assert!(is_dns_label(&n.app));
            proptest::prop_assert!(is_dns_label(&n.peers), "{}", n.peers);
            proptest::prop_assert!(is_dns_subdomain(&n.job_server), "{}", n.job_server);
            for job in [n.update_job(&image), n.backup_job(&image), n.verify_job(&image)] {
                proptest::prop_assert!(is_dns_label(&job), "{}", job);
            }
            proptest::prop_assert!(n.backup_job(&image) != n.update_job(&image) && n.verify_job(&image) != n.update_job(&image));
            proptest::prop_assert!(n.peers != n.app && n.job_server != n.app && n.peers != n.job_server);
        }

        /// Cut names stay distinct for distinct installations.
        #[test]
        fn cut_names_differ_for_different_installations(a in "[a-z]{58,63}", b in "[a-z]{58,63}") {
            proptest::prop_assume!(a != b);
            let (na, nb) = (
                Names::of(&Mattermost::new(&a, Default::default())),
                Names::of(&Mattermost::new(&b, Default::default())),
            );
            proptest::prop_assert_ne!(na.peers, nb.peers);
        }
    }
}
