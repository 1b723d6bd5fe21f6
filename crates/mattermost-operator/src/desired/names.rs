//! Child names, computed once per reconcile; builders only read them. They match the Go operator
//! so existing installations are adopted by name.

use kube::ResourceExt;
use mattermost_api::v1beta1::Mattermost;

/// Name of the Mattermost container (Go operator compatible).
pub const MAIN_CONTAINER: &str = "mattermost";
/// Name of the job-server container (Go operator compatible).
pub const JOB_SERVER_CONTAINER: &str = "mattermost-jobserver";

/// Names of every child of one installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// Installation name: Deployment, Service, Ingress, ServiceAccount, Role, RoleBinding, PVC.
    pub app: String,
    /// Headless Service for cluster-peer discovery (includes not-ready pods).
    pub peers: String,
    /// Dedicated job-server Deployment.
    pub job_server: String,
    /// Namespace of the installation.
    pub namespace: String,
}

impl Names {
    /// Names of `mm`'s children.
    pub fn of(mm: &Mattermost) -> Self {
        let app = mm.name_any();
        Self {
            peers: format!("{app}-peers"),
            job_server: format!("{app}-jobserver"),
            namespace: mm.namespace().unwrap_or_default(),
            app,
        }
    }

    /// Update Job for `image`: one per installation and image (the Go operator used one fixed
    /// name per namespace). Kept within the 63-character label limit Job names need.
    pub fn update_job(&self, image: &str) -> String {
        let hash = short_hash(image);
        let prefix: String = self
            .app
            .chars()
            .take(63 - "-update-".len() - hash.len())
            .collect();
        format!("{}-update-{hash}", prefix.trim_end_matches('-'))
    }
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
    }
}
