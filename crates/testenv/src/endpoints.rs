//! Records the number of ready endpoints of one Service at every change of its EndpointSlices.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt};
use tokio::task::JoinHandle;

/// One observation: the total of ready endpoints across the Service's EndpointSlices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointSample {
    /// When the change was seen.
    pub at: Instant,
    /// Ready endpoints at that moment.
    pub ready: usize,
}

/// Watches the EndpointSlices of a Service (label `kubernetes.io/service-name`) and records the
/// ready-endpoint count at every change. A zero-downtime test starts it before the change, then
/// asserts [`EndpointWatcher::min_ready`] never dropped below the expected count.
pub struct EndpointWatcher {
    samples: Arc<Mutex<Vec<EndpointSample>>>,
    task: JoinHandle<()>,
}

impl EndpointWatcher {
    /// Starts watching `service` in `namespace`. Returns once the initial list has been seen, so
    /// the first sample is the state before anything the test does next.
    pub async fn start(client: &Client, namespace: &str, service: &str) -> crate::Result<Self> {
        let api: Api<EndpointSlice> = Api::namespaced(client.clone(), namespace);
        let cfg = watcher::Config::default().labels(&format!("kubernetes.io/service-name={service}"));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
        let recorded = samples.clone();
        let task = tokio::spawn(async move {
            let mut slices: BTreeMap<String, usize> = BTreeMap::new();
            let mut init: BTreeMap<String, usize> = BTreeMap::new();
            let mut ready_tx = Some(ready_tx);
            // Short retries that reset on success, so the record resumes within seconds after an
            // API server restart; errors are skipped, not the end of the record.
            let stream = watcher::watcher(api, cfg).backoff(crate::restart::short_backoff());
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                let Ok(event) = event else { continue };
                match event {
                    Event::Init => init.clear(),
                    Event::InitApply(s) => {
                        init.insert(s.name_any(), ready_count(&s));
                    }
                    Event::InitDone => {
                        slices = std::mem::take(&mut init);
                        record(&recorded, &slices);
                        if let Some(tx) = ready_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Event::Apply(s) => {
                        slices.insert(s.name_any(), ready_count(&s));
                        record(&recorded, &slices);
                    }
                    Event::Delete(s) => {
                        slices.remove(&s.name_any());
                        record(&recorded, &slices);
                    }
                }
            }
        });
        ready_rx
            .await
            .map_err(|_| crate::Error::Manifest("endpoint watch ended before its initial list".into()))?;
        Ok(Self { samples, task })
    }

    /// Every sample so far, oldest first.
    pub fn samples(&self) -> Vec<EndpointSample> {
        self.samples.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The latest ready count (0 before the first sample).
    pub fn current(&self) -> usize {
        self.samples().last().map_or(0, |s| s.ready)
    }

    /// Lowest ready count in force at any moment from `since` on (the count at `since` is the
    /// last one seen before it).
    pub fn min_ready_since(&self, since: Instant) -> usize {
        let samples = self.samples();
        let before = samples.iter().rev().find(|s| s.at <= since).map(|s| s.ready);
        let after = samples.iter().filter(|s| s.at > since).map(|s| s.ready);
        before.into_iter().chain(after).min().unwrap_or(0)
    }

    /// The lowest ready count seen since the watcher started.
    pub fn min_ready(&self) -> usize {
        self.samples().iter().map(|s| s.ready).min().unwrap_or(0)
    }

    /// The ready counts as a compact list, for assertion messages.
    pub fn history(&self) -> Vec<usize> {
        self.samples().iter().map(|s| s.ready).collect()
    }

    /// Stops watching and returns every sample.
    pub fn stop(self) -> Vec<EndpointSample> {
        self.task.abort();
        self.samples()
    }
}

impl Drop for EndpointWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn record(samples: &Mutex<Vec<EndpointSample>>, slices: &BTreeMap<String, usize>) {
    let ready = slices.values().sum();
    if let Ok(mut s) = samples.lock() {
        // Keep only changes, so the history reads as a timeline of transitions.
        if s.last().is_none_or(|last| last.ready != ready) {
            s.push(EndpointSample {
                at: Instant::now(),
                ready,
            });
        }
    }
}

/// Endpoints whose `conditions.ready` is true. A missing value means "unknown", which the
/// EndpointSlice API asks consumers to treat as ready.
pub fn ready_count(slice: &EndpointSlice) -> usize {
    slice
        .endpoints
        .iter()
        .flatten()
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
        .count()
}
