//! Events without kube's recorder cache. kube's `Recorder` keeps every event it published for six
//! minutes to count repeats into a series; across a fleet upgrade that is thousands of events held
//! in memory. The reconcile already publishes an event once per transition (and suppresses
//! repeats, see `reconcile::Published`), so each event is written fresh.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, Reporter};

/// Publishes events as the operator's reporter.
#[derive(Clone)]
pub struct Recorder {
    client: Client,
    reporter: Reporter,
}

impl Recorder {
    /// Events by `reporter` through `client`.
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Self { client, reporter }
    }

    /// Publishes `event` about `reference`.
    pub async fn publish(&self, event: &Event, reference: &ObjectReference) -> Result<(), kube::Error> {
        kube::runtime::events::Recorder::new(self.client.clone(), self.reporter.clone())
            .publish(event, reference)
            .await
    }
}
