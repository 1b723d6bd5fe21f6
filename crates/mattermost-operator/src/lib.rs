//! The Mattermost operator: reconcilers for `Mattermost` (and later `ClusterInstallation`).
