//! ServiceAccount `<name>` of the Mattermost pods. Not created in IRSA mode, where the user
//! provides it with the IAM role annotation.

use k8s_openapi::api::core::v1::ServiceAccount;
use mattermost_api::v1beta1::Mattermost;

use super::labels::{self, APP_MATTERMOST};
use super::meta::child_meta;
use super::names::Names;

/// The ServiceAccount, or `None` when the user owns it (S3 through the ServiceAccount's role).
pub fn service_account(mm: &Mattermost, names: &Names) -> Option<ServiceAccount> {
    (!mm.spec.uses_service_account_for_s3()).then(|| ServiceAccount {
        metadata: child_meta(
            mm,
            names,
            &names.app,
            labels::object_labels(mm, names, APP_MATTERMOST),
        ),
        ..Default::default()
    })
}
