//! Watches that recover on their own within seconds, and a record of whether each one is live.
//!
//! kube-runtime's `default_backoff()` grows to 30 s and resets only after 120 s without errors,
//! and a `Controller` pauses *all* its trigger streams while any one of them backs off. Here every
//! watch gets its own short backoff (250 ms doubling to 2 s, plus up to 100 % jitter, so at most
//! 4 s) that resets on the first event after an error, and its errors are recorded and dropped
//! before the controller sees them, so one failing watch never stalls the others.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use tracing::{info, warn};

/// First retry delay of a failing watch.
const MIN_DELAY: Duration = Duration::from_millis(250);
/// Longest retry delay before jitter (jitter adds up to as much again).
const MAX_DELAY: Duration = Duration::from_secs(2);

/// A failing watch retries at least this often: the longest delay with jitter, plus the time a
/// request may take to connect ([`crate::client::CONNECT_TIMEOUT`]), plus a margin. A watch whose
/// last error is older than this has reconnected: a resumed watch emits nothing until something
/// changes, so silence after the retry is the only sign of success it gives.
pub const RECOVERED_AFTER: Duration = Duration::from_secs(12);

/// How long the API server keeps one of our watches open before it is re-established. kube's
/// default (290 s) costs every watch a request each five minutes while nothing changes; the API
/// server's bookmarks (about once a minute) and the watch client's read timeout
/// ([`crate::client::WATCH_READ_TIMEOUT`]) already catch a dead connection, so a healthy watch is
/// kept for half an hour (the API server's own default when a client sets no timeout is 30–60
/// minutes). The watches start together, so they are re-established together.
pub const WATCH_TIMEOUT_SECS: u32 = 1800;

/// What every watch of the operator's caches starts from: the long timeout, and any
/// resourceVersion for lists (served from the API server's watch cache, not etcd).
pub fn config() -> watcher::Config {
    watcher::Config::default()
        .timeout(WATCH_TIMEOUT_SECS)
        .any_semantic()
}

/// The retry policy of every watch.
pub fn backoff() -> watcher::ExponentialBackoff {
    backon::ExponentialBuilder::default()
        .with_min_delay(MIN_DELAY)
        .with_max_delay(MAX_DELAY)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .into()
}

#[derive(Debug, Clone, Default)]
struct State {
    last_error: Option<(Instant, String)>,
    last_event: Option<Instant>,
}

impl State {
    fn failing(&self, now: Instant) -> Option<(Duration, &str)> {
        let (at, message) = self.last_error.as_ref()?;
        let recovered = self.last_event.is_some_and(|ok| ok > *at)
            || now.saturating_duration_since(*at) >= RECOVERED_AFTER;
        (!recovered).then(|| (now.saturating_duration_since(*at), message.as_str()))
    }
}

/// Liveness of every watch of the process, by name (e.g. `Deployment (all namespaces)`).
#[derive(Debug, Clone, Default)]
pub struct Health(Arc<Mutex<BTreeMap<String, State>>>);

impl Health {
    /// A fresh registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn update(&self, name: &str, f: impl FnOnce(&mut State)) {
        if let Ok(mut m) = self.0.lock() {
            f(m.entry(name.to_owned()).or_default());
        }
    }

    /// Watches that failed and have not recovered yet: `(name, failing for, last error)`.
    pub fn failing(&self) -> Vec<(String, Duration, String)> {
        let now = Instant::now();
        let Ok(m) = self.0.lock() else {
            return Vec::new();
        };
        m.iter()
            .filter_map(|(name, s)| s.failing(now).map(|(d, msg)| (name.clone(), d, msg.to_owned())))
            .collect()
    }

    /// Forgets every watch (the controllers stopped, e.g. after losing the Lease).
    pub fn clear(&self) {
        if let Ok(mut m) = self.0.lock() {
            m.clear();
        }
    }
}

/// Waits until `store` has its initial list. Polls, because a store's readiness signal wakes
/// only one of several waiters (a controller also waits on its main store).
pub async fn wait_synced<K>(store: &kube::runtime::reflector::Store<K>)
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    while tokio::time::timeout(Duration::from_millis(500), store.wait_until_ready())
        .await
        .is_err()
    {}
}

/// Applies the short backoff to `stream`, records its errors and events in `health` under
/// `name`, and drops the errors (they are logged once per outage).
pub fn guarded<S, T>(
    name: String,
    stream: S,
    health: &Health,
) -> impl Stream<Item = Result<T, watcher::Error>> + Send + 'static
where
    S: Stream<Item = Result<T, watcher::Error>> + Send + 'static,
    T: Send + 'static,
{
    let health = health.clone();
    health.update(&name, |_| {});
    stream.backoff(backoff()).filter_map(move |item| {
        let out = match item {
            Ok(v) => {
                let mut was_failing = false;
                health.update(&name, |s| {
                    was_failing = s.last_error.is_some();
                    s.last_error = None;
                    s.last_event = Some(Instant::now());
                });
                if was_failing {
                    info!(watch = %name, "watch recovered");
                }
                Some(Ok(v))
            }
            Err(e) => {
                let message = crate::redact::truncate(&e.to_string(), 300);
                let mut first = false;
                health.update(&name, |s| {
                    first = s.last_error.is_none();
                    s.last_error = Some((Instant::now(), message.clone()));
                });
                if first {
                    warn!(watch = %name, error = %message, "watch failed; retrying");
                } else {
                    tracing::debug!(watch = %name, error = %message, "watch still failing");
                }
                None
            }
        };
        futures::future::ready(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::utils::Backoff;

    #[test]
    fn backoff_is_short_bounded_and_resets() {
        let mut b = backoff();
        let delays: Vec<Duration> = (&mut b).take(10).collect();
        assert!(delays[0] >= MIN_DELAY && delays[0] <= MIN_DELAY * 2, "{delays:?}");
        assert!(delays.iter().all(|d| *d <= MAX_DELAY * 2), "{delays:?}");
        assert!(delays[9] >= MAX_DELAY, "{delays:?}");
        b.reset();
        let first = b.next().unwrap();
        assert!(first <= MIN_DELAY * 2, "{first:?}");
        // A failing watch retries (delay + connect timeout) well within RECOVERED_AFTER.
        assert!(MAX_DELAY * 2 + crate::client::CONNECT_TIMEOUT < RECOVERED_AFTER);
    }

    #[test]
    fn a_watch_fails_until_an_event_or_a_quiet_retry() {
        let now = Instant::now();
        let mut s = State::default();
        assert!(s.failing(now).is_none());
        s.last_error = Some((now, "connection refused".into()));
        assert_eq!(s.failing(now).map(|(_, m)| m), Some("connection refused"));
        assert!(s.failing(now + RECOVERED_AFTER).is_none());
        s.last_event = Some(now + Duration::from_millis(1));
        assert!(s.failing(now + Duration::from_millis(2)).is_none());
    }

    #[tokio::test]
    async fn errors_are_recorded_and_dropped() {
        let health = Health::new();
        let items: Vec<Result<u8, watcher::Error>> =
            vec![Ok(1), Err(watcher::Error::NoResourceVersion), Ok(2)];
        let out: Vec<u8> = guarded("test".into(), futures::stream::iter(items), &health)
            .filter_map(|r| futures::future::ready(r.ok()))
            .collect()
            .await;
        assert_eq!(out, vec![1, 2]);
        assert!(health.failing().is_empty());
        let bad: Vec<Result<u8, watcher::Error>> = vec![Err(watcher::Error::NoResourceVersion)];
        let _ = guarded("bad".into(), futures::stream::iter(bad), &health)
            .collect::<Vec<_>>()
            .await;
        let failing = health.failing();
        assert_eq!(failing.len(), 1);
        assert_eq!(failing[0].0, "bad");
    }
}
