//! `ClusterInstallation` (`mattermost.com/v1alpha1`), the legacy resource kept for migration.
