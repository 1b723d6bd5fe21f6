//! The legacy `ClusterInstallation` (v1alpha1): keeps existing installations running (Service,
//! Ingress, ServiceAccount, Deployment with the v1alpha1 labels and selector) and migrates them to
//! `Mattermost` when `spec.migrate: true`, with zero downtime.
//!
//! Migration is a resumable state machine recorded in `status.migration.status`; every step is
//! derived from what exists, so an operator restart at any point resumes it:
//! orphan-delete the old Deployment (its ReplicaSet keeps serving) → create the new Deployment
//! (same name, v1beta1 selector) → wait until its pods are Ready → create the `Mattermost` and hand
//! it every child (owner references, secrets included, so garbage collection deletes nothing) →
//! wait until it is `stable` (its Service now selects the new pods) → delete the old ReplicaSets
//! and the `ClusterInstallation`.
//!
//! Files: [`context`] (shared state, errors), [`children`] (the v1alpha1 children), [`report`]
//! (status and events), [`controller`] (keeps legacy installations running), [`migration`] (the
//! state machine).

mod children;
mod context;
mod controller;
mod migration;
mod report;

pub use context::{CONTROLLER, Error, LEGACY_INSTALLATION_LABEL, LEGACY_RESOURCE_LABEL, Settings};
pub use controller::run;
pub use migration::{MIGRATED_FROM, MIGRATION_FINALIZER, STEP_DEADLINE_EXCEEDED, revert_on_delete, step};
