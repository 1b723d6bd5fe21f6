//! When an installation is reconciled again: the jittered resync of stable installations and the
//! per-installation backoff of failures.

use std::time::Duration;

use kube::runtime::controller::Action;

use crate::desired;

/// The periodic resync of stable installations: a safety net for a missed event. A resync
/// reconciles from the caches (and [`observe::Memo`]), so when nothing drifted it sends no request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Resync(Option<Duration>);

impl Resync {
    /// Every `period` (plus jitter); zero turns it off.
    pub fn every(period: Duration) -> Self {
        Self((!period.is_zero()).then_some(period))
    }

    /// What a stable installation waits for: the next resync, or only a change when off.
    pub fn action(&self) -> Action {
        match self.0 {
            Some(period) => Action::requeue(jittered(period, random())),
            None => Action::await_change(),
        }
    }
}

/// `period` plus up to 10 % of it, picked by `random`, so a fleet does not resync in lockstep.
pub fn jittered(period: Duration, random: u64) -> Duration {
    let per_mille = u32::try_from(random % 101).unwrap_or(0);
    period + period * per_mille / 1000
}

/// A random number from the standard library's per-process hash keys (no RNG crate needed).
fn random() -> u64 {
    use std::hash::BuildHasher;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    std::hash::RandomState::new().hash_one(nanos)
}

/// Per-installation retry delays for failures: 5 s doubling up to 5 min, with jitter so a fleet
/// does not retry in lockstep; reset by a reconcile without failure.
#[derive(Debug, Default)]
pub struct Backoff(std::sync::Mutex<std::collections::HashMap<String, u32>>);

impl Backoff {
    /// The delay before the next attempt for `key`, counting this failure.
    pub fn next(&self, key: &str) -> Duration {
        let attempt = match self.0.lock() {
            Ok(mut m) => {
                let n = m.entry(key.to_owned()).or_insert(0);
                *n = n.saturating_add(1);
                *n
            }
            Err(_) => 1,
        };
        retry_delay(attempt, key)
    }

    /// Forgets the failures of `key`.
    pub fn reset(&self, key: &str) {
        if let Ok(mut m) = self.0.lock() {
            m.remove(key);
        }
    }
}

/// Delay before attempt `attempt` (1-based): 5 s · 2^(attempt-1), at most 5 min, plus up to 10 %
/// jitter derived from `seed` and the attempt.
pub fn retry_delay(attempt: u32, seed: &str) -> Duration {
    const BASE: u64 = 5;
    const MAX: u64 = 300;
    let secs = BASE
        .saturating_mul(1u64 << attempt.saturating_sub(1).min(16))
        .min(MAX);
    let hash =
        u64::from_str_radix(&desired::names::short_hash(&format!("{seed}/{attempt}")), 16).unwrap_or(0);
    let jitter_ms = hash % (secs * 100).max(1);
    Duration::from_secs(secs) + Duration::from_millis(jitter_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resyncs_are_jittered_within_ten_percent_and_can_be_off() {
        let period = Duration::from_secs(300);
        assert_eq!(jittered(period, 0), period);
        assert_eq!(jittered(period, 100), Duration::from_secs(330));
        let spread: std::collections::BTreeSet<Duration> =
            (0..20).map(|_| jittered(period, random())).collect();
        assert!(spread.len() > 1, "not in lockstep: {spread:?}");
        assert!(
            spread
                .iter()
                .all(|d| *d >= period && *d <= Duration::from_secs(330))
        );
        assert_eq!(Resync::every(Duration::ZERO).action(), Action::await_change());
        assert_ne!(Resync::every(period).action(), Action::await_change());
    }
}
