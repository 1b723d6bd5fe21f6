//! Leader election on a `coordination.k8s.io/v1` Lease, with `kube-lease-manager`.
//!
//! The Lease is the Go operator's (`b78a986e.mattermost.com` in the operator's namespace), so a Go
//! and a Rust operator never reconcile at the same time during a cut-over: whoever holds it works,
//! the other waits. A follower also watches the Lease, so a holder that releases it on shutdown is
//! replaced at once instead of after the lease duration.

use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tracing::{debug, info, warn};

/// The Go operator's leader-election ID.
pub const DEFAULT_LEASE_NAME: &str = "b78a986e.mattermost.com";

/// Where the service account's namespace is mounted in a pod.
const SERVICE_ACCOUNT_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// Leader-election settings.
#[derive(Debug, Clone)]
pub struct Election {
    /// Lease name.
    pub lease: String,
    /// Lease namespace.
    pub namespace: String,
    /// This process's identity in `holderIdentity`.
    pub identity: String,
    /// How long the Lease stays valid without renewal (whole seconds, at least 3).
    pub lease_duration: Duration,
}

/// Errors of leader election.
#[derive(Debug, thiserror::Error)]
pub enum ElectionError {
    /// No namespace for the Lease.
    #[error(
        "leader election needs the operator's namespace: set POD_NAMESPACE (the chart does) or \
         --leader-election-namespace"
    )]
    NoNamespace,
    /// The lease duration is too short to renew in time.
    #[error("--leader-election-lease-duration must be at least 3s, got {0:?}")]
    LeaseTooShort(Duration),
}

impl Election {
    /// Settings from the command line and the pod's environment.
    pub fn new(
        lease: &str,
        namespace: Option<&str>,
        lease_duration: Duration,
    ) -> Result<Self, ElectionError> {
        if lease_duration < Duration::from_secs(3) {
            return Err(ElectionError::LeaseTooShort(lease_duration));
        }
        let namespace = namespace
            .map(str::to_owned)
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .or_else(|| std::fs::read_to_string(SERVICE_ACCOUNT_NAMESPACE).ok())
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .ok_or(ElectionError::NoNamespace)?;
        Ok(Self {
            lease: lease.to_owned(),
            namespace,
            identity: identity(),
            lease_duration,
        })
    }

    fn seconds(&self) -> u64 {
        self.lease_duration.as_secs()
    }

    /// The holder renews when a third of the duration has passed, so a failed renewal has two
    /// thirds left for retries before the Lease could expire.
    fn grace(&self) -> u64 {
        self.seconds() * 2 / 3
    }

    async fn manager(&self, client: &Client) -> kube_lease_manager::Result<LeaseManager> {
        LeaseManagerBuilder::new(client.clone(), &self.lease)
            .with_namespace(&self.namespace)
            .with_identity(&self.identity)
            .with_duration(self.seconds())
            .with_grace(self.grace())
            .with_field_manager("mattermost-operator-leader-election")
            .build()
            .await
    }

    /// Waits until this process holds the Lease.
    pub async fn acquire(&self, client: &Client) -> Leader {
        let api: Api<Lease> = Api::namespaced(client.clone(), &self.namespace);
        let mut released = Box::pin(released(api, &self.lease));
        info!(lease = %self.lease, namespace = %self.namespace, identity = %self.identity, "waiting for the leader Lease");
        loop {
            let manager = match self.manager(client).await {
                Ok(m) => m,
                Err(e) => {
                    warn!(error = %e, lease = %self.lease, "reading the leader Lease");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    continue;
                }
            };
            tokio::select! {
                changed = manager.changed() => match changed {
                    Ok(true) => {
                        info!(lease = %self.lease, identity = %self.identity, "became the leader");
                        return Leader {
                            manager,
                            renew_deadline: Duration::from_secs(self.grace().saturating_sub(1)),
                            api: Api::namespaced(client.clone(), &self.namespace),
                            lease: self.lease.clone(),
                            identity: self.identity.clone(),
                        };
                    }
                    Ok(false) => {}
                    Err(e) => {
                        warn!(error = %e, lease = %self.lease, "leader election");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                },
                // A fresh manager reads the Lease again: without this, a follower sleeps until the
                // old holder's lease would have expired even when it was released.
                Some(()) = released.next() => debug!("the leader Lease was released"),
            }
        }
    }
}

/// Yields whenever the Lease has no holder (released on shutdown, or deleted).
fn released(api: Api<Lease>, name: &str) -> impl Stream<Item = ()> + Send + 'static {
    let wc = watcher::Config::default().fields(&format!("metadata.name={name}"));
    watcher(api, wc)
        .backoff(crate::watch::backoff())
        .touched_objects()
        .filter_map(|lease| async move {
            let free = match lease {
                Ok(lease) => lease
                    .spec
                    .and_then(|s| s.holder_identity)
                    .is_none_or(|h| h.is_empty()),
                Err(_) => false,
            };
            free.then_some(())
        })
}

/// Yields the holder whenever the Lease is held by an identity other than `identity`.
fn taken_over(api: Api<Lease>, name: &str, identity: &str) -> impl Stream<Item = String> + Send + 'static {
    let wc = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let identity = identity.to_owned();
    watcher(api, wc)
        .backoff(crate::watch::backoff())
        .touched_objects()
        .filter_map(move |lease| {
            let holder = lease
                .ok()
                .and_then(|l| l.spec)
                .and_then(|s| s.holder_identity)
                .filter(|h| !h.is_empty() && *h != identity);
            async move { holder }
        })
}

/// `<pod or host name>_<random>`, unique per process like controller-runtime's identities.
fn identity() -> String {
    let host = std::env::var("POD_NAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "mattermost-operator".to_owned());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{host}_{:08x}", nanos ^ std::process::id().rotate_left(16))
}

/// This process holds the Lease.
pub struct Leader {
    manager: LeaseManager,
    /// How long renewals may keep failing before we give up, a second before the Lease expires.
    renew_deadline: Duration,
    api: Api<Lease>,
    lease: String,
    identity: String,
}

impl Leader {
    /// Keeps renewing the Lease; returns as soon as it is lost: another holder appears in the
    /// Lease (seen by a watch, at once), or renewals kept failing until just before it would
    /// expire.
    ///
    /// The watch matters: the Lease manager only looks at the Lease when it renews (a third of
    /// the duration after the last renewal), and its renewal is a blind patch of `renewTime`. Left
    /// alone it would go on reconciling for up to that long after another identity took the Lease
    /// over, then overwrite the new holder's `renewTime` once before noticing.
    pub async fn hold(&self) {
        let mut taken = std::pin::pin!(taken_over(self.api.clone(), &self.lease, &self.identity));
        tokio::select! {
            () = self.renew() => {}
            Some(holder) = taken.next() => {
                warn!(lease = %self.lease, %holder, "another identity holds the leader Lease");
            }
        }
    }

    async fn renew(&self) {
        let mut failing_since: Option<Instant> = None;
        loop {
            let call = Instant::now();
            match self.manager.changed().await {
                Ok(true) => failing_since = None,
                Ok(false) => {
                    warn!("lost the leader Lease to another holder");
                    return;
                }
                Err(e) => {
                    // A call that blocked for a while renewed at least once before failing.
                    if call.elapsed() > Duration::from_secs(1) {
                        failing_since = None;
                    }
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= self.renew_deadline {
                        warn!(error = %e, "could not renew the leader Lease before it expires");
                        return;
                    }
                    debug!(error = %e, "renewing the leader Lease failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    /// Gives the Lease up so that a follower takes over at once.
    pub async fn release(self) {
        match self.manager.release().await {
            Ok(()) => info!("released the leader Lease"),
            Err(e) => warn!(error = %e, "releasing the leader Lease"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_need_a_namespace_and_a_usable_duration() {
        let e = Election::new(DEFAULT_LEASE_NAME, Some("ops"), Duration::from_secs(15)).unwrap();
        assert_eq!(e.namespace, "ops");
        assert_eq!(e.seconds(), 15);
        assert_eq!(e.grace(), 10);
        assert!(e.identity.contains('_'));
        assert!(matches!(
            Election::new(DEFAULT_LEASE_NAME, Some("ops"), Duration::from_secs(2)),
            Err(ElectionError::LeaseTooShort(_))
        ));
    }
}
