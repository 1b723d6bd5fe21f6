//! placeholder
use mattermost_api::v1beta1::PatchStatus;
#[derive(Debug, Clone, Copy)]
pub enum PatchTarget {
    Service,
    Deployment,
}
pub fn apply_json_patch<K: Clone>(
    obj: &K,
    _p: Option<&mattermost_api::v1beta1::Patch>,
) -> (K, Option<PatchStatus>) {
    (obj.clone(), None)
}
pub fn forbidden_patch_path(_t: PatchTarget, _p: &str) -> Option<String> {
    None
}
