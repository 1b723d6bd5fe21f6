//! What the controllers of every watched namespace share: the rollout cap, the capacity view and
//! the metrics.

use std::sync::Arc;

use crate::capacity::Capacity;
use crate::metrics::Metrics;
use crate::rollout_cap::RolloutSlots;

/// Operator-wide state, cloned into each controller.
#[derive(Clone)]
pub struct Fleet {
    /// The cap on installations rolling pods at once (upgrades and migrations).
    pub slots: Arc<RolloutSlots>,
    /// The capacity preflight's view; `None` when the operator may not watch Nodes and Pods.
    pub capacity: Option<Arc<Capacity>>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}
