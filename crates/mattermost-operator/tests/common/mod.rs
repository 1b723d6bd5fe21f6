//! Harness for tests against the local control plane: installs the CRDs once, runs one
//! in-process controller per test scoped to the test's namespace, and waits on installations.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use mattermost_api::v1beta1::Mattermost;
use mattermost_operator::controller::{self, Settings};
use mattermost_operator::metrics::Metrics;
use mattermost_operator::reconcile::UpdateJobSettings;
use testenv::TestNamespace;
use tokio::sync::OnceCell;

pub mod argocd;
pub mod process;
pub mod promql;
pub mod scenario;
pub mod tools;

pub const TIMEOUT: Duration = Duration::from_secs(90);

static CRDS: OnceCell<()> = OnceCell::const_new();

/// A test namespace with its own controller.
pub struct Env {
    pub client: Client,
    pub ns: Option<TestNamespace>,
    name: String,
    operator: Option<tokio::task::JoinHandle<()>>,
    /// Rollout cap of the operator started by `start_operator` (0 = none).
    pub max_rollouts: usize,
    /// Resync period of the operator started by `start_operator` (the default: 5 min).
    pub resync_period: Duration,
    /// Migration step deadline of the operator started by `start_operator` (default 10 min).
    pub migration_step_deadline: Duration,
    /// Metrics of the running operator.
    pub metrics: Option<Arc<Metrics>>,
    /// Image of the verification Jobs of the operator started by `start_operator`.
    pub operator_image: String,
}

impl Env {
    /// Namespace name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Typed API in the test namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Starts (or restarts) the operator for this namespace.
    pub fn start_operator(&mut self) {
        let client = self.client.clone();
        self.start_operator_as(client);
    }

    /// Starts (or restarts) the operator for this namespace with its own client(s) (credentials,
    /// or the operator's request and watch clients with their timeouts).
    pub fn start_operator_as(&mut self, clients: impl Into<mattermost_operator::client::Clients>) {
        self.stop_operator();
        let settings = Settings {
            scope: mattermost_operator::cli::Scope::Namespaces(vec![self.name.clone()]),
            concurrency: 4,
            update_job: UpdateJobSettings::default(),
            operator_image: self.operator_image.clone(),
            max_rollouts: self.max_rollouts,
            requeue_on_limit_delay: Duration::from_secs(2),
            capacity_check: true,
            resync_period: self.resync_period,
            migration_step_deadline: self.migration_step_deadline,
        };
        let metrics = Arc::new(Metrics::new(&["mattermost", "clusterinstallation"], 4));
        self.metrics = Some(metrics.clone());
        self.operator = Some(tokio::spawn(controller::run(
            clients.into(),
            settings,
            metrics,
            || {},
        )));
    }

    /// Stops the operator (like a crash: no cleanup).
    pub fn stop_operator(&mut self) {
        if let Some(h) = self.operator.take() {
            h.abort();
        }
    }

    /// Applies a YAML manifest in the namespace.
    pub async fn apply(&self, yaml: &str) {
        testenv::apply_yaml(&self.client, &self.name, yaml)
            .await
            .expect("apply manifest");
    }

    /// Waits until the installation reports `state` for its current generation.
    pub async fn wait_state(&self, name: &str, state: &str) -> Mattermost {
        let api: Api<Mattermost> = self.api();
        testenv::wait_for_object(&api, name, TIMEOUT, |mm: &Mattermost| {
            let st = mm.status.as_ref();
            st.and_then(|s| s.state.as_deref()) == Some(state)
                && st.and_then(|s| s.observed_generation) == mm.metadata.generation
        })
        .await
        .unwrap_or_else(|e| panic!("{name} never reached {state}: {e}"))
    }

    /// Waits until condition `type_` has `status` and, if given, `reason`.
    pub async fn wait_condition(
        &self,
        name: &str,
        type_: &str,
        status: &str,
        reason: Option<&str>,
    ) -> Mattermost {
        let api: Api<Mattermost> = self.api();
        testenv::wait_for_object(&api, name, TIMEOUT, |mm: &Mattermost| {
            mm.status
                .iter()
                .flat_map(|s| s.conditions.iter())
                .any(|c| c.type_ == type_ && c.status == status && reason.is_none_or(|r| c.reason == r))
        })
        .await
        .unwrap_or_else(|e| panic!("{name}: condition {type_}={status} {reason:?} never seen: {e}"))
    }

    /// Merge-patches the spec of an installation (like `kubectl patch --type merge`).
    pub async fn patch_spec(&self, name: &str, spec: serde_json::Value) {
        let api: Api<Mattermost> = self.api();
        api.patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({ "spec": spec })),
        )
        .await
        .expect("patch spec");
    }

    /// Deletes the namespace and stops the operator.
    pub async fn cleanup(mut self) {
        self.stop_operator();
        if let Some(ns) = self.ns.take() {
            ns.delete().await.expect("delete namespace");
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.stop_operator();
    }
}

async fn install_crds(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in mattermost_api::crds() {
        let name = crd.metadata.name.clone().unwrap();
        api.patch(&name, &PatchParams::apply("testenv").force(), &Patch::Apply(&crd))
            .await
            .expect("install CRD");
        testenv::wait_for_object(&api, &name, TIMEOUT, |c: &CustomResourceDefinition| {
            c.status
                .iter()
                .flat_map(|s| s.conditions.iter().flatten())
                .any(|c| c.type_ == "Established" && c.status == "True")
        })
        .await
        .expect("CRD established");
    }
}

/// Client, CRDs, a fresh namespace; the operator is not started yet.
pub async fn env_without_operator(prefix: &str) -> Env {
    let client = testenv::client().await.expect("control plane");
    CRDS.get_or_init(|| install_crds(&client)).await;
    let ns = TestNamespace::create(&client, prefix).await.expect("namespace");
    let name = ns.name.clone();
    Env {
        client,
        ns: Some(ns),
        name,
        operator: None,
        max_rollouts: 0,
        resync_period: Duration::from_secs(300),
        migration_step_deadline: Duration::from_secs(600),
        metrics: None,
        operator_image: mattermost_operator::cli::default_operator_image(),
    }
}

/// Client, CRDs, a fresh namespace and an operator watching it.
pub async fn env(prefix: &str) -> Env {
    let mut env = env_without_operator(prefix).await;
    env.start_operator();
    env
}

/// The operator's own clients for the local control plane, built as `run` builds them (timeouts,
/// User-Agent `mattermost-operator/<version>`), from the admin kubeconfig.
pub async fn operator_clients() -> mattermost_operator::client::Clients {
    let config = mattermost_operator::client::config(Some(&testenv::kubeconfig_path()))
        .await
        .expect("kubeconfig");
    mattermost_operator::client::Clients::new(config).expect("clients")
}

/// Reconciles started so far, from the operator's metrics.
pub fn reconciles(env: &Env) -> u64 {
    let text = env
        .metrics
        .as_ref()
        .expect("operator started")
        .encode()
        .expect("metrics");
    text.lines()
        .find(|l| {
            // Started reconciles, whatever their result (a resync ends in `requeue_after`).
            l.starts_with(r#"mattermost_operator_reconcile_total{controller="mattermost"}"#)
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Database and S3 secrets used by the fixtures.
pub const SECRETS: &str = include_str!("../fixtures/secrets.yaml");
