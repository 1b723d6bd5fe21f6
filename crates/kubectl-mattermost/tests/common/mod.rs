//! Harness of the CLI tests: a fleet of installations in fresh namespaces, reconciled by an
//! in-process operator, and the built `kubectl-mattermost` binary.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use mattermost_api::v1beta1::Mattermost;
use mattermost_operator::cli::Scope;
use mattermost_operator::controller::{self, Settings};
use mattermost_operator::metrics::Metrics;
use mattermost_operator::reconcile::UpdateJobSettings;
use serde_json::{Value, json};
use testenv::TestNamespace;

pub const SECRETS: &str = include_str!("../../../mattermost-operator/tests/fixtures/secrets.yaml");
pub const DB: &str = "postgres://mmuser:s3cr3t-db-pass@db.example.test:5432/mattermost?sslmode=disable";
pub const TIMEOUT: Duration = Duration::from_secs(180);

pub struct Fleet {
    pub client: Client,
    pub namespaces: Vec<TestNamespace>,
    pub label: String,
    operator: tokio::task::JoinHandle<()>,
}

impl Fleet {
    /// `per_ns` installations (1 replica, external DB and S3) in each of `n_ns` new namespaces,
    /// labelled `fleet=<prefix>`, reconciled by an operator with a rollout cap of `cap`.
    pub async fn new(prefix: &str, n_ns: usize, per_ns: usize, cap: usize) -> Self {
        Self::on(testenv::client().await.unwrap(), prefix, n_ns, per_ns, cap).await
    }

    /// [`Fleet::new`] on the cluster of `client` (the second control plane for two-site tests).
    pub async fn on(client: Client, prefix: &str, n_ns: usize, per_ns: usize, cap: usize) -> Self {
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        for crd in mattermost_api::crds() {
            let name = crd.name_any();
            crds.patch(&name, &PatchParams::apply("testenv").force(), &Patch::Apply(&crd))
                .await
                .unwrap();
            testenv::wait_for_object(&crds, &name, TIMEOUT, |c: &CustomResourceDefinition| {
                c.status
                    .iter()
                    .flat_map(|s| s.conditions.iter().flatten())
                    .any(|c| c.type_ == "Established" && c.status == "True")
            })
            .await
            .unwrap();
        }
        let mut namespaces = Vec::new();
        for _ in 0..n_ns {
            let ns = TestNamespace::create(&client, prefix).await.unwrap();
            testenv::apply_yaml(&client, &ns.name, SECRETS).await.unwrap();
            namespaces.push(ns);
        }
        // Sorted, so that the fleet's order (namespace, name) follows the indexes.
        namespaces.sort_by(|a, b| a.name.cmp(&b.name));
        let label = namespaces[0].name.clone();
        let mut fleet = Self {
            client,
            namespaces,
            label,
            operator: tokio::spawn(async {}),
        };
        fleet.start_operator(cap);
        for ns in &fleet.namespaces {
            for i in 0..per_ns {
                fleet.create(&ns.name, &format!("mm-{i:02}"), json!({})).await;
            }
        }
        fleet
    }

    /// (Re)starts the operator for the fleet's namespaces with a rollout cap of `cap`.
    pub fn start_operator(&mut self, cap: usize) {
        self.operator.abort();
        let settings = Settings {
            scope: Scope::Namespaces(self.namespaces.iter().map(|n| n.name.clone()).collect()),
            concurrency: 8,
            update_job: UpdateJobSettings::default(),
            operator_image: mattermost_operator::cli::default_operator_image(),
            max_rollouts: cap,
            requeue_on_limit_delay: Duration::from_secs(2),
            capacity_check: true,
            resync_period: Duration::from_secs(300),
            migration_step_deadline: Duration::from_secs(600),
        };
        let metrics = Arc::new(Metrics::new(&["mattermost"], 8));
        self.operator = tokio::spawn(controller::run(
            mattermost_operator::client::Clients::from(self.client.clone()),
            settings,
            metrics,
            || {},
        ));
    }

    pub fn ns(&self, i: usize) -> &str {
        &self.namespaces[i].name
    }

    pub async fn create(&self, ns: &str, name: &str, extra: Value) {
        let mut spec = json!({
            "version": "9.11.0",
            "replicas": 1,
            "ingress": {"enabled": false},
            // Small requests: 80 installations of three tests share 3 fake nodes.
            "scheduling": {"resources": {"requests": {"cpu": "10m", "memory": "32Mi"}}},
            "database": {"external": {"secret": "db-credentials"}},
            "fileStore": {"external": {"url": "s3.amazonaws.com", "bucket": "b", "secret": "file-store-credentials"}},
        });
        json_merge(&mut spec, extra);
        let mm: Mattermost = serde_json::from_value(json!({
            "apiVersion": "installation.mattermost.com/v1beta1", "kind": "Mattermost",
            "metadata": {"name": name, "labels": {"fleet": self.label}},
            "spec": spec,
        }))
        .unwrap();
        Api::<Mattermost>::namespaced(self.client.clone(), ns)
            .create(&PostParams::default(), &mm)
            .await
            .unwrap();
    }

    pub async fn patch(&self, ns: &str, name: &str, spec: Value) {
        Api::<Mattermost>::namespaced(self.client.clone(), ns)
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": spec })),
            )
            .await
            .unwrap();
    }

    pub async fn get(&self, ns: &str, name: &str) -> Mattermost {
        Api::<Mattermost>::namespaced(self.client.clone(), ns)
            .get(name)
            .await
            .unwrap()
    }

    /// The fleet's installations (one LIST by its label).
    pub async fn mattermosts(&self) -> Vec<Mattermost> {
        Api::<Mattermost>::all(self.client.clone())
            .list(&kube::api::ListParams::default().labels(&self.selector()))
            .await
            .unwrap()
            .items
    }

    pub fn selector(&self) -> String {
        format!("fleet={}", self.label)
    }

    /// Runs the CLI over this fleet (`-A -l fleet=...` prepended to `args`).
    pub fn cli(&self, args: &[&str]) -> Output {
        let sel = self.selector();
        let mut all = vec!["-A", "-l", sel.as_str()];
        all.extend_from_slice(args);
        cli(&all)
    }

    /// Waits until `status` says every installation is stable (exit code 0).
    pub async fn wait_all_stable(&self) {
        testenv::wait_until("fleet stable", TIMEOUT, || async {
            (self.cli(&["status", "-o", "json"]).status.code() == Some(0)).then_some(())
        })
        .await
        .unwrap();
    }

    pub async fn cleanup(self) {
        self.operator.abort();
        for ns in self.namespaces {
            ns.delete().await.unwrap();
        }
    }
}

pub fn json_merge(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                json_merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

pub fn cli(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_kubectl-mattermost"))
        .args(args)
        .env("KUBECONFIG", testenv::kubeconfig_path())
        .output()
        .unwrap()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn condition_reason(mm: &Mattermost, type_: &str) -> Option<String> {
    mm.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.reason.clone())
}

pub async fn wait_reason(fleet: &Fleet, ns: &str, name: &str, type_: &str, reason: &str) {
    testenv::wait_until(&format!("{name} {type_}={reason}"), TIMEOUT, || async {
        (condition_reason(&fleet.get(ns, name).await, type_).as_deref() == Some(reason)).then_some(())
    })
    .await
    .unwrap();
}
