//! The cluster-wide cap on installations rolling pods at once (`MAX_RECONCILING_INSTALLATIONS`),
//! shared by the `Mattermost` upgrades and the `ClusterInstallation` migrations.

use std::time::Duration;

/// The cluster-wide cap on installations rolling out a new image at once. Only rollouts hold a
/// slot; a slot is given back when the installation is stable or blocked, so broken installations
/// never starve the others.
pub struct RolloutSlots {
    max: usize,
    /// How long a waiting installation waits before asking again.
    pub retry_after: Duration,
    held: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
}

impl RolloutSlots {
    /// At most `max` rollouts at once (0 = no limit).
    pub fn new(max: usize, retry_after: Duration) -> Self {
        Self {
            max,
            retry_after,
            held: Default::default(),
        }
    }

    /// Takes (or keeps) a slot for `key`; `force` takes one even when full (a rollout that was
    /// already under way when the operator restarted).
    pub fn acquire(&self, key: &str, force: bool) -> bool {
        let Ok(mut held) = self.held.lock() else {
            return true;
        };
        if held.contains_key(key) {
            return true;
        }
        if force || self.max == 0 || held.len() < self.max {
            held.insert(key.to_owned(), std::time::Instant::now());
            return true;
        }
        false
    }

    /// Gives the slot back; returns how long it was held.
    pub fn release(&self, key: &str) -> Option<Duration> {
        self.held.lock().ok()?.remove(key).map(|t| t.elapsed())
    }

    /// Rollouts in progress.
    pub fn in_use(&self) -> usize {
        self.held.lock().map(|h| h.len()).unwrap_or(0)
    }
}
