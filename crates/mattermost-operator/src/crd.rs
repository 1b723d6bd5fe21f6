//! CRD manifests as YAML: printed by `mattermost-operator crd`, committed under `deploy/crds/`
//! (one file per CRD), and compared with the committed files by a test so they never drift.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

/// Committed location of each CRD, relative to the repository root.
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("deploy/crds/{}_{}.yaml", crd.spec.group, crd.spec.names.plural)
}

/// One CRD as YAML.
pub fn to_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_saphyr::ser::Error> {
    serde_saphyr::to_string(crd)
}

/// Every CRD as one multi-document YAML stream.
pub fn all_yaml() -> Result<String, serde_saphyr::ser::Error> {
    serde_saphyr::to_string_multiple(&mattermost_api::crds())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Regenerate with `cargo run -- crd-files` style: `UPDATE_CRDS=1 cargo test -p mattermost-operator crd`.
    #[test]
    fn committed_crds_match_the_types() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        for crd in mattermost_api::crds() {
            let path = root.join(file_name(&crd));
            let want = to_yaml(&crd).unwrap();
            if std::env::var_os("UPDATE_CRDS").is_some() {
                std::fs::write(&path, &want).unwrap();
            }
            let have = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                have == want,
                "{} is out of date: run `UPDATE_CRDS=1 cargo test -p mattermost-operator crd` and commit it",
                path.display()
            );
        }
    }

    #[test]
    fn yaml_round_trips() {
        let docs: Vec<CustomResourceDefinition> = serde_saphyr::from_multiple(&all_yaml().unwrap()).unwrap();
        assert_eq!(docs, mattermost_api::crds());
    }
}
