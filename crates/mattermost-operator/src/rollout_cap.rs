//! The cluster-wide cap on installations rolling pods at once (`MAX_RECONCILING_INSTALLATIONS`),
//! shared by everything that rolls pods: image changes, config-only changes of the pod template
//! and migrations.
//!
//! A slot is given back when the rollout completes, is blocked or stalls, and when its object is
//! deleted or the migration reverted, so a broken installation never starves the others. After
//! a restart the slots are rebuilt from the cluster before any new rollout may start: each
//! controller [`seed`](RolloutSlots::seed)s the rollouts its caches show under way (up to the
//! cap), and [`acquire`](RolloutSlots::acquire) waits until every controller did (or
//! [`SEED_TIMEOUT`] passed, e.g. when the `ClusterInstallation` CRD is not installed).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// How long new rollouts wait for every controller to rebuild its slots after a start.
pub const SEED_TIMEOUT: Duration = Duration::from_secs(30);

/// What holds a slot.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Slot {
    /// A `Mattermost` rolling out a new pod template (image or configuration).
    Rollout {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// A `ClusterInstallation` migrating (its pods are doubled for a while).
    Migration {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
}

impl Slot {
    /// The namespace of the holder.
    pub fn namespace(&self) -> &str {
        match self {
            Slot::Rollout { namespace, .. } | Slot::Migration { namespace, .. } => namespace,
        }
    }
}

/// The cap and the slots held.
pub struct RolloutSlots {
    max: usize,
    /// How long a waiting installation waits before asking again.
    pub retry_after: Duration,
    held: Mutex<HashMap<Slot, Instant>>,
    /// Controllers that have not seeded yet; acquire waits for 0.
    unseeded: watch::Sender<usize>,
    started: Instant,
}

impl RolloutSlots {
    /// At most `max` rollouts at once (0 = no limit); `seeders` controllers rebuild their slots
    /// before new rollouts start.
    pub fn new(max: usize, retry_after: Duration, seeders: usize) -> Self {
        Self {
            max,
            retry_after,
            held: Mutex::default(),
            unseeded: watch::channel(seeders).0,
            started: Instant::now(),
        }
    }

    /// Takes (or keeps) a slot for `slot`; false when the cap is reached. Waits until the slots
    /// were rebuilt after a start.
    pub async fn acquire(&self, slot: &Slot) -> bool {
        let mut seeded = self.unseeded.subscribe();
        let left = SEED_TIMEOUT.saturating_sub(self.started.elapsed());
        let _ = tokio::time::timeout(left, seeded.wait_for(|n| *n == 0)).await;
        let Ok(mut held) = self.held.lock() else {
            return false;
        };
        if held.contains_key(slot) {
            return true;
        }
        if self.max == 0 || held.len() < self.max {
            held.insert(slot.clone(), Instant::now());
            return true;
        }
        false
    }

    /// One controller's rollouts under way at start, oldest first; taken up to the cap.
    pub fn seed(&self, under_way: impl IntoIterator<Item = Slot>) {
        if let Ok(mut held) = self.held.lock() {
            for slot in under_way {
                if self.max != 0 && held.len() >= self.max {
                    break;
                }
                held.entry(slot).or_insert_with(Instant::now);
            }
        }
        self.unseeded.send_modify(|n| *n = n.saturating_sub(1));
    }

    /// Gives the slot back; returns how long it was held.
    pub fn release(&self, slot: &Slot) -> Option<Duration> {
        self.held.lock().ok()?.remove(slot).map(|t| t.elapsed())
    }

    /// Gives back the slots in `namespace` (every namespace when `None`) whose holder `exists`
    /// no longer (deleted objects get no reconcile to release them).
    pub fn release_gone(&self, namespace: Option<&str>, exists: impl Fn(&Slot) -> bool) {
        if let Ok(mut held) = self.held.lock() {
            held.retain(|slot, _| namespace.is_some_and(|ns| ns != slot.namespace()) || exists(slot));
        }
    }

    /// Rollouts in progress.
    pub fn in_use(&self) -> usize {
        self.held.lock().map(|h| h.len()).unwrap_or(0)
    }

    /// The slots held (for tests and debugging).
    pub fn held(&self) -> Vec<Slot> {
        let mut v: Vec<Slot> = self
            .held
            .lock()
            .map(|h| h.keys().cloned().collect())
            .unwrap_or_default();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollout(name: &str) -> Slot {
        Slot::Rollout {
            namespace: "ns".into(),
            name: name.into(),
        }
    }

    #[tokio::test]
    async fn seeded_rollouts_count_before_new_ones_and_never_exceed_the_cap() {
        let slots = RolloutSlots::new(2, Duration::from_secs(1), 1);
        slots.seed([rollout("a"), rollout("b"), rollout("c")]);
        assert_eq!(
            slots.held(),
            vec![rollout("a"), rollout("b")],
            "seeded up to the cap"
        );
        assert!(!slots.acquire(&rollout("d")).await, "full");
        assert!(slots.acquire(&rollout("a")).await, "a holder keeps its slot");
        assert!(slots.release(&rollout("a")).is_some());
        assert!(slots.acquire(&rollout("d")).await);
        slots.release_gone(Some("other"), |_| false);
        assert_eq!(slots.in_use(), 2, "other namespaces untouched");
        slots.release_gone(Some("ns"), |s| *s == rollout("d"));
        assert_eq!(slots.held(), vec![rollout("d")]);
    }

    #[tokio::test]
    async fn new_rollouts_wait_for_every_seeder() {
        let slots = std::sync::Arc::new(RolloutSlots::new(1, Duration::from_secs(1), 2));
        let waiting = tokio::spawn({
            let slots = slots.clone();
            async move { slots.acquire(&rollout("new")).await }
        });
        slots.seed([]);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "one seeder left");
        slots.seed([rollout("under-way")]);
        assert!(!waiting.await.unwrap(), "the rollout under way has the only slot");
    }
}
