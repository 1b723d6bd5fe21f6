//! How often a rollout's progress is written to status. A transition (state, a condition's status
//! or reason, versions, observedGeneration) is written at once; a change of counters and messages
//! only ("1/2 pods") at most every [`PROGRESS_INTERVAL`], so a fleet upgrade does not write the
//! status once per pod event.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mattermost_api::v1beta1::MattermostStatus;

/// The shortest interval between two progress-only status writes of one installation.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(5);

/// When each installation's status was last written.
#[derive(Debug, Default)]
pub struct Pace(Mutex<HashMap<String, Instant>>);

impl Pace {
    /// `None`: write now. `Some(wait)`: a progress-only change that waits (reconcile again then).
    pub fn hold(
        &self,
        uid: &str,
        old: Option<&MattermostStatus>,
        new: &MattermostStatus,
    ) -> Option<Duration> {
        if !progress_only(old?, new) {
            return None;
        }
        let last = *self.0.lock().ok()?.get(uid)?;
        PROGRESS_INTERVAL
            .checked_sub(last.elapsed())
            .filter(|d| !d.is_zero())
    }

    /// The status of `uid` was just written.
    pub fn wrote(&self, uid: &str) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(uid.to_owned(), Instant::now());
        }
    }

    /// Forgets installations for which `live` is false.
    pub fn retain(&self, live: impl Fn(&str) -> bool) {
        if let Ok(mut m) = self.0.lock() {
            m.retain(|uid, _| live(uid));
        }
    }
}

/// The status this operator last wrote for each installation, kept only until the cache shows that
/// write. A reconcile triggered right after a write (by the Job or Deployment it just changed)
/// starts from a cached object that predates the write; comparing with that would write the same
/// status again (about three duplicate writes per upgrade at N=1,000).
#[derive(Debug, Default)]
pub struct Written(Mutex<HashMap<String, (String, MattermostStatus)>>);

impl Written {
    /// The status last written for `uid` when the cached object (at resourceVersion `rv`) is still
    /// the one that write started from, i.e. the cache has not seen it yet. Once the cache moved
    /// on (to our write or anyone's), `None`, and the memo is dropped.
    pub fn ahead_of_cache(&self, uid: &str, rv: Option<&str>) -> Option<MattermostStatus> {
        let mut m = self.0.lock().ok()?;
        let (from, status) = m.get(uid)?;
        if Some(from.as_str()) == rv {
            return Some(status.clone());
        }
        m.remove(uid);
        None
    }

    /// `status` was written for `uid` over the cached object at resourceVersion `rv`.
    pub fn wrote(&self, uid: &str, rv: Option<&str>, status: &MattermostStatus) {
        if let (Ok(mut m), Some(rv)) = (self.0.lock(), rv) {
            m.insert(uid.to_owned(), (rv.to_owned(), status.clone()));
        }
    }

    /// Forgets installations for which `live` is false.
    pub fn retain(&self, live: impl Fn(&str) -> bool) {
        if let Ok(mut m) = self.0.lock() {
            m.retain(|uid, _| live(uid));
        }
    }
}

/// Objects this operator deleted in the last [`EVENT_REPEAT_WINDOW`], by uid: the cache may still
/// show one for a moment after its delete, and deleting it again only gets a 404 (about one in
/// eight of an upgrade's Job deletes at N=1,000).
#[derive(Debug, Default)]
pub struct Deleted(Mutex<HashMap<String, Instant>>);

impl Deleted {
    /// True when `uid` was deleted within the window.
    pub fn recently(&self, uid: &str) -> bool {
        let Ok(mut m) = self.0.lock() else {
            return false;
        };
        m.retain(|_, t| t.elapsed() < EVENT_REPEAT_WINDOW);
        m.contains_key(uid)
    }

    /// `uid` was just deleted.
    pub fn record(&self, uid: &str) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(uid.to_owned(), Instant::now());
        }
    }
}

/// How long an event of an installation is not repeated (a reconcile that starts from a cached
/// status older than its last write sees the same transition again).
pub const EVENT_REPEAT_WINDOW: Duration = Duration::from_secs(60);

/// The events published recently, per installation.
#[derive(Debug, Default)]
pub struct Published(Mutex<HashMap<String, Vec<(String, Instant)>>>);

impl Published {
    /// True (and remembered) unless `key` was published for `uid` within the window.
    pub fn first(&self, uid: &str, key: &str) -> bool {
        let Ok(mut m) = self.0.lock() else {
            return true;
        };
        let recent = m.entry(uid.to_owned()).or_default();
        recent.retain(|(_, t)| t.elapsed() < EVENT_REPEAT_WINDOW);
        if recent.iter().any(|(k, _)| k == key) {
            return false;
        }
        recent.push((key.to_owned(), Instant::now()));
        true
    }

    /// Forgets installations for which `live` is false, and events past the window (a fleet
    /// upgrade would otherwise keep six per installation until its next event).
    pub fn retain(&self, live: impl Fn(&str) -> bool) {
        if let Ok(mut m) = self.0.lock() {
            m.retain(|uid, recent| {
                recent.retain(|(_, t)| t.elapsed() < EVENT_REPEAT_WINDOW);
                live(uid) && !recent.is_empty()
            });
        }
    }
}

/// True when `old` and `new` differ only in counters and messages ("1/2 pods").
pub fn progress_only(old: &MattermostStatus, new: &MattermostStatus) -> bool {
    let bare = |s: &MattermostStatus| {
        let mut s = s.clone();
        s.replicas = None;
        s.updated_replicas = None;
        for c in &mut s.conditions {
            c.message.clear();
        }
        s
    };
    bare(old) == bare(new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    fn status(state: &str, replicas: i32, reason: &str, message: &str) -> MattermostStatus {
        MattermostStatus {
            state: Some(state.into()),
            replicas: Some(replicas),
            conditions: vec![Condition {
                type_: "Progressing".into(),
                status: "True".into(),
                reason: reason.into(),
                message: message.into(),
                last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
                observed_generation: Some(1),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn an_event_is_not_repeated_within_the_window() {
        let p = Published::default();
        assert!(p.first("u", "Stable/at 10.9.0"));
        assert!(!p.first("u", "Stable/at 10.9.0"));
        assert!(p.first("v", "Stable/at 10.9.0"), "per installation");
        assert!(p.first("u", "UpdateJobStarted/x"));
    }

    #[test]
    fn counters_wait_and_transitions_do_not() {
        let a = status("reconciling", 1, "RollingOut", "1/2 pods");
        let b = status("reconciling", 2, "RollingOut", "2/2 pods");
        assert!(progress_only(&a, &b));
        assert!(!progress_only(
            &a,
            &status("reconciling", 2, "UpdateJobRunning", "")
        ));
        assert!(!progress_only(&a, &status("stable", 2, "RollingOut", "2/2 pods")));
        let mut newer = b.clone();
        newer.observed_generation = Some(2);
        assert!(
            !progress_only(&a, &newer),
            "a new generation is acknowledged at once"
        );
        let mut degraded = b.clone();
        degraded.conditions[0].type_ = "Degraded".into();
        assert!(!progress_only(&a, &degraded), "problems are reported at once");

        let pace = Pace::default();
        assert_eq!(pace.hold("u", Some(&a), &b), None, "never written: write");
        pace.wrote("u");
        assert!(pace.hold("u", Some(&a), &b).is_some(), "just written: wait");
        assert_eq!(pace.hold("u", Some(&a), &status("stable", 2, "Stable", "")), None);
        assert_eq!(pace.hold("u", None, &b), None);
    }

    #[test]
    fn a_write_stands_in_for_the_cache_until_the_cache_moves_on() {
        let w = Written::default();
        let s = status("reconciling", 1, "UpdateJobRunning", "update Job running");
        assert_eq!(w.ahead_of_cache("u", Some("10")), None);
        w.wrote("u", Some("10"), &s);
        // The cache still holds the object the write started from.
        assert_eq!(w.ahead_of_cache("u", Some("10")), Some(s.clone()));
        assert_eq!(w.ahead_of_cache("other", Some("10")), None);
        // The cache shows a newer object (ours or anyone's): it is read again, the memo is gone.
        assert_eq!(w.ahead_of_cache("u", Some("11")), None);
        assert_eq!(w.ahead_of_cache("u", Some("10")), None);
        w.wrote("u", Some("11"), &s);
        w.retain(|uid| uid != "u");
        assert_eq!(w.ahead_of_cache("u", Some("11")), None);
    }

    #[test]
    fn a_deleted_object_is_remembered_by_uid() {
        let d = Deleted::default();
        assert!(!d.recently("job-uid"));
        d.record("job-uid");
        assert!(d.recently("job-uid"));
        assert!(!d.recently("another"));
    }
}
