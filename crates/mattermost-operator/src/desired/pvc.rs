//! PersistentVolumeClaim `<name>` of the local file store. By default it carries no owner
//! reference, so deleting the `Mattermost` keeps the data (the Go operator deleted it).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimSpec, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use mattermost_api::v1beta1::{FileStoreKind, Mattermost};

use super::labels::{self, APP_MATTERMOST};
use super::meta::child_meta;
use super::names::Names;

/// Size of a new claim when `storageSize` is unset.
pub const DEFAULT_STORAGE_SIZE: &str = "50Gi";

/// The claim, when the local file store is in use.
pub fn local_file_store(mm: &Mattermost, names: &Names) -> Option<PersistentVolumeClaim> {
    if mm.spec.file_store_kind() != FileStoreKind::Local {
        return None;
    }
    let local = mm.spec.file_store.as_ref().and_then(|f| f.local.as_ref())?;
    let mut meta = child_meta(
        mm,
        names,
        &names.app,
        labels::object_labels(mm, names, APP_MATTERMOST),
    );
    if !mm.spec.local_file_store_deleted_with_installation() {
        meta.owner_references = None;
    }
    let size = local
        .storage_size
        .clone()
        .filter(|s| !s.is_empty())
        .unwrap_or(DEFAULT_STORAGE_SIZE.to_owned());
    let modes = local
        .access_modes
        .clone()
        .filter(|m| !m.is_empty())
        .unwrap_or(vec!["ReadWriteMany".to_owned()]);
    Some(PersistentVolumeClaim {
        metadata: meta,
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(modes),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_owned(), Quantity(size))])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mattermost_api::v1beta1::{FileStore, LocalFileStore, MattermostSpec};

    fn mm(retain: Option<&str>) -> Mattermost {
        let mut mm = Mattermost::new(
            "chat",
            MattermostSpec {
                file_store: Some(FileStore {
                    local: Some(LocalFileStore {
                        enabled: true,
                        retain_policy: retain.map(str::to_owned),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        mm.metadata.uid = Some("u".into());
        mm
    }

    #[test]
    fn retained_by_default() {
        let m = mm(None);
        let pvc = local_file_store(&m, &Names::of(&m)).unwrap();
        assert!(pvc.metadata.owner_references.is_none());
        let spec = pvc.spec.unwrap();
        assert_eq!(spec.access_modes.unwrap(), vec!["ReadWriteMany"]);
        assert_eq!(spec.resources.unwrap().requests.unwrap()["storage"].0, "50Gi");
        let m = mm(Some("Delete"));
        assert!(
            local_file_store(&m, &Names::of(&m))
                .unwrap()
                .metadata
                .owner_references
                .is_some()
        );
    }
}
