//! Labels and selectors. The selector labels are the Go operator's and immutable on existing
//! Deployments: changing them would prevent adopting live installations.

use std::collections::BTreeMap;

use mattermost_api::v1beta1::Mattermost;

use super::names::Names;

/// Go operator label naming the installation.
pub const INSTALLATION_LABEL: &str = "installation.mattermost.com/installation";
/// Go operator label naming the resource.
pub const RESOURCE_LABEL: &str = "installation.mattermost.com/resource";
/// `app` label value of Mattermost pods.
pub const APP_MATTERMOST: &str = "mattermost";
/// `app` label value of job-server pods.
pub const APP_JOB_SERVER: &str = "mattermost-jobserver";
/// `app` label value of update-Job pods.
pub const APP_UPDATE_JOB: &str = "mattermost-update-check";
/// `app` label value of backup-Job pods.
pub const APP_BACKUP_JOB: &str = "mattermost-backup";
/// `app` label value of verification-Job pods.
pub const APP_VERIFY_JOB: &str = "mattermost-verify";
/// Recommended label, not part of any selector.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";

type Labels = BTreeMap<String, String>;

/// Selector of pods with `app` = `app_value` of the installation (Go operator compatible).
pub fn selector(names: &Names, app_value: &str) -> Labels {
    BTreeMap::from([
        (RESOURCE_LABEL.to_owned(), names.app.clone()),
        (INSTALLATION_LABEL.to_owned(), names.app.clone()),
        ("app".to_owned(), app_value.to_owned()),
    ])
}

/// Labels of the installation's objects: `resourceLabels`, then the selector labels (which win).
pub fn object_labels(mm: &Mattermost, names: &Names, app_value: &str) -> Labels {
    let mut labels = mm.spec.resource_labels.clone().unwrap_or_default();
    labels.extend(selector(names, app_value));
    labels
}

/// Labels of pods: `resourceLabels` and `podTemplate.extraLabels`, then the selector labels.
pub fn pod_labels(mm: &Mattermost, names: &Names, app_value: &str) -> Labels {
    let mut labels = mm.spec.resource_labels.clone().unwrap_or_default();
    if let Some(extra) = mm
        .spec
        .pod_template
        .as_ref()
        .and_then(|p| p.extra_labels.as_ref())
    {
        labels.extend(extra.clone());
    }
    labels.extend(selector(names, app_value));
    labels
}
