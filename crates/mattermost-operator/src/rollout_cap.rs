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

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, watch};

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
    /// How long a waiting installation waits before asking again (when no freed slot woke it).
    pub retry_after: Duration,
    held: Mutex<HashMap<Slot, Instant>>,
    /// Who asked and got none, first come first served: a freed slot wakes the first of them at
    /// once rather than at its next poll.
    waiting: Mutex<VecDeque<Slot>>,
    wake: broadcast::Sender<Slot>,
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
            waiting: Mutex::default(),
            wake: broadcast::channel(1024).0,
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
        let mut waiting = self
            .waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if held.contains_key(slot) {
            return true;
        }
        // First come, first served: a free slot goes to the longest waiter that asks for it.
        let free = if self.max == 0 {
            usize::MAX
        } else {
            self.max.saturating_sub(held.len())
        };
        let ahead = waiting.iter().take_while(|w| *w != slot).count();
        if ahead < free {
            held.insert(slot.clone(), Instant::now());
            waiting.retain(|w| w != slot);
            return true;
        }
        if !waiting.contains(slot) {
            waiting.push_back(slot.clone());
        }
        false
    }

    /// Wakes as many waiters as there are free slots.
    fn wake_waiters(&self, held: usize) {
        let free = if self.max == 0 {
            usize::MAX
        } else {
            self.max.saturating_sub(held)
        };
        if let Ok(waiting) = self.waiting.lock() {
            for slot in waiting.iter().take(free) {
                let _ = self.wake.send(slot.clone());
            }
        }
    }

    /// The waiters woken by freed slots, as `pick` maps them (`None`: another controller's).
    pub fn woken<T>(
        &self,
        pick: impl Fn(Slot) -> Option<T> + Send + 'static,
    ) -> impl futures::Stream<Item = T> + Send + 'static
    where
        T: Send + 'static,
    {
        futures::stream::unfold((self.wake.subscribe(), pick), |(mut rx, pick)| async move {
            loop {
                match rx.recv().await {
                    Ok(slot) => {
                        if let Some(t) = pick(slot) {
                            return Some((t, (rx, pick)));
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
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

    /// Gives the slot back (and stops waiting for one); returns how long it was held.
    pub fn release(&self, slot: &Slot) -> Option<Duration> {
        if let Ok(mut waiting) = self.waiting.lock() {
            waiting.retain(|w| w != slot);
        }
        let (held_for, left) = {
            let mut held = self.held.lock().ok()?;
            (held.remove(slot).map(|t| t.elapsed()), held.len())
        };
        if held_for.is_some() {
            self.wake_waiters(left);
        }
        held_for
    }

    /// Gives back the slots in `namespace` (every namespace when `None`) whose holder `exists`
    /// no longer (deleted objects get no reconcile to release them).
    pub fn release_gone(&self, namespace: Option<&str>, exists: impl Fn(&Slot) -> bool) {
        let keep = |slot: &Slot| namespace.is_some_and(|ns| ns != slot.namespace()) || exists(slot);
        if let Ok(mut waiting) = self.waiting.lock() {
            waiting.retain(|w| keep(w));
        }
        let (before, left) = match self.held.lock() {
            Ok(mut held) => {
                let before = held.len();
                held.retain(|slot, _| keep(slot));
                (before, held.len())
            }
            Err(_) => return,
        };
        if left < before {
            self.wake_waiters(left);
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
    async fn a_freed_slot_wakes_the_longest_waiter_and_is_kept_for_it() {
        use futures::StreamExt;
        let slots = RolloutSlots::new(1, Duration::from_secs(20), 0);
        let mut woken = std::pin::pin!(slots.woken(Some));
        assert!(slots.acquire(&rollout("a")).await);
        assert!(!slots.acquire(&rollout("b")).await);
        assert!(!slots.acquire(&rollout("c")).await);
        slots.release(&rollout("a"));
        assert_eq!(woken.next().await, Some(rollout("b")), "first come, first woken");
        assert!(!slots.acquire(&rollout("c")).await, "b is ahead");
        assert!(slots.acquire(&rollout("b")).await);
        slots.release(&rollout("b"));
        assert_eq!(woken.next().await, Some(rollout("c")));
        assert!(slots.acquire(&rollout("c")).await);
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
