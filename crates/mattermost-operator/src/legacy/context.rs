//! Shared state and errors of the `ClusterInstallation` controller.

use std::sync::Arc;
use std::time::Duration;

use crate::recorder::Recorder;
use kube::Client;

use crate::apply;
use crate::rollout_cap::RolloutSlots;

/// v1alpha1 label naming the installation.
pub const LEGACY_INSTALLATION_LABEL: &str = "v1alpha1.mattermost.com/installation";
/// v1alpha1 label naming the resource.
pub const LEGACY_RESOURCE_LABEL: &str = "v1alpha1.mattermost.com/resource";
pub(super) const REQUEUE: Duration = Duration::from_secs(5);
/// Name of this controller in metrics (`controller` label).
pub const CONTROLLER: &str = "clusterinstallation";

/// Errors of the legacy controller; retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error("{0}")]
    Kube(#[from] kube::Error),
    /// Applying a child failed.
    #[error(transparent)]
    Apply(#[from] apply::ApplyError),
    /// The object has no namespace/uid.
    #[error("object without {0}")]
    MissingMetadata(&'static str),
}

impl Error {
    /// Stable reason, as in metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(_) => "KubeApiError",
            Error::Apply(e) => e.reason(),
            Error::MissingMetadata(_) => "InternalError",
        }
    }
}

/// What every reconcile of the legacy controller shares.
pub(super) struct Ctx {
    pub(super) metrics: Arc<crate::metrics::Metrics>,
    pub(super) client: Client,
    pub(super) recorder: Recorder,
    pub(super) slots: Arc<RolloutSlots>,
    /// How long a migration step may take before it is reported stalled.
    pub(super) step_deadline: Duration,
    /// The capacity preflight's view (`None`: may not watch Nodes; the check is skipped).
    pub(super) capacity: Option<Arc<crate::capacity::Capacity>>,
}

/// Settings of the `ClusterInstallation` controller.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Reconciles running at once.
    pub concurrency: u16,
    /// How long a migration step may take before it is reported `Stalled` and gives its rollout
    /// slot back.
    pub step_deadline: Duration,
}
