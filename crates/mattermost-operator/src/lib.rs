//! The Mattermost operator: reconcilers for `Mattermost` (and later `ClusterInstallation`).
pub mod apply;
pub mod status;
pub mod crd;
