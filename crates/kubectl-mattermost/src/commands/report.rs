//! `report`: a support bundle (zip) of the selected installations, their children, events and
//! ClusterInstallations, the operator's Deployment, its pods' logs when the API server can fetch
//! them (a file says why when it cannot), and versions. Secret values are never written:
//! Secrets appear as names and keys only, sensitive environment values are replaced, and all text
//! is scrubbed of credentials in URLs and of the referenced Secrets' values.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{ListParams, LogParams};
use kube::{Api, ResourceExt};
use mattermost_operator::desired::labels::INSTALLATION_LABEL;
use mattermost_operator::redact::{self, Secrets};
use serde::Serialize;
use serde_json::Value;

use crate::error::Error;
use crate::kube_ctx::{Ctx, OPERATOR_SELECTOR, key, main_image};

/// Lines of log kept per operator pod (the most recent).
const LOG_TAIL_LINES: i64 = 2000;

const SENSITIVE: &[&str] = &[
    "PASSWORD",
    "SECRET",
    "TOKEN",
    "KEY",
    "DATASOURCE",
    "DSN",
    "CREDENTIAL",
];

/// Strips what a bundle must not carry: managed fields, last-applied copies and sensitive
/// environment values.
fn sanitize(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(Value::Object(meta)) = map.get_mut("metadata") {
                meta.remove("managedFields");
                if let Some(Value::Object(ann)) = meta.get_mut("annotations") {
                    ann.remove("kubectl.kubernetes.io/last-applied-configuration");
                    ann.remove("mattermost.com/last-applied");
                }
            }
            if let Some(Value::Array(env)) = map.get_mut("env") {
                for e in env.iter_mut() {
                    let name = e
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_uppercase();
                    if SENSITIVE.iter().any(|s| name.contains(s))
                        && let Some(v) = e.get_mut("value")
                    {
                        *v = Value::String(redact::MARKER.into());
                    }
                }
            }
            map.values_mut().for_each(sanitize);
        }
        Value::Array(items) => items.iter_mut().for_each(sanitize),
        _ => {}
    }
}

struct Bundle {
    zip: zip::ZipWriter<std::fs::File>,
    secrets: Secrets,
    files: usize,
}

impl Bundle {
    fn text(&mut self, name: &str, text: &str) -> Result<(), Error> {
        let clean = self.secrets.scrub(&redact::scrub(text));
        let opts =
            zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        self.zip.start_file(name, opts)?;
        self.zip.write_all(clean.as_bytes())?;
        self.files += 1;
        Ok(())
    }

    fn objects<T: Serialize>(&mut self, name: &str, objects: &[T]) -> Result<(), Error> {
        if objects.is_empty() {
            return Ok(());
        }
        let mut docs = Vec::new();
        for o in objects {
            let mut v = serde_json::to_value(o).map_err(|e| Error::Encode(e.to_string()))?;
            sanitize(&mut v);
            docs.push(serde_saphyr::to_string(&v).map_err(|e| Error::Encode(e.to_string()))?);
        }
        self.text(name, &docs.join("---\n"))
    }
}

async fn children<K>(ctx: &Ctx, ns: &str, name: &str) -> Result<Vec<K>, Error>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let lp = ListParams::default().labels(&format!("{INSTALLATION_LABEL}={name}"));
    Ok(Api::<K>::namespaced(ctx.client.clone(), ns)
        .list(&lp)
        .await?
        .items)
}

/// The operator's logs, best effort: the pods labelled like the chart's (in `namespace`, or in
/// every namespace), each pod's log fetched through the API server (`pods/log`, never the pod
/// itself), last [`LOG_TAIL_LINES`] lines of every container, redacted like the rest of the
/// bundle. Whatever cannot be fetched is recorded with the reason, never an error.
async fn operator_logs(ctx: &Ctx, b: &mut Bundle, namespace: Option<&str>) -> Result<(), Error> {
    let scope = namespace.map_or("any namespace".to_owned(), |ns| format!("namespace {ns}"));
    let pods: Api<Pod> = match namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    let pods = match pods.list(&ListParams::default().labels(OPERATOR_SELECTOR)).await {
        Ok(list) => list.items,
        Err(e) => {
            return b.text(
                "operator/logs/UNAVAILABLE.txt",
                &format!(
                    "operator logs not collected: listing pods labelled {OPERATOR_SELECTOR} in {scope} failed: {}
",
                    redact::api_message(&e)
                ),
            );
        }
    };
    if pods.is_empty() {
        return b.text(
            "operator/logs/UNAVAILABLE.txt",
            &format!(
                "operator logs not collected: no pod labelled {OPERATOR_SELECTOR} in {scope} \
                 (an operator run outside the cluster logs where it runs; --operator-namespace narrows the search)\n"
            ),
        );
    }
    for pod in &pods {
        let ns = pod.namespace().unwrap_or_default();
        let name = pod.name_any();
        let containers: Vec<String> = pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter().map(|c| c.name.clone()))
            .collect();
        let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
        for container in containers {
            let lp = LogParams {
                container: Some(container.clone()),
                tail_lines: Some(LOG_TAIL_LINES),
                timestamps: true,
                ..LogParams::default()
            };
            let file = format!("operator/logs/{ns}/{name}/{container}");
            match api.logs(&name, &lp).await {
                Ok(log) => b.text(&format!("{file}.log"), &log)?,
                Err(e) => b.text(
                    &format!("{file}.UNAVAILABLE.txt"),
                    &format!(
                        "log of container {container} of pod {ns}/{name} not collected: {}\n",
                        redact::api_message(&e)
                    ),
                )?,
            }
        }
    }
    Ok(())
}

/// Writes the bundle to `path`; `operator_namespace` narrows the search for the operator's pods.
pub async fn run(
    ctx: &Ctx,
    name: Option<String>,
    path: &Path,
    operator_namespace: Option<&str>,
) -> Result<u8, Error> {
    let names: Vec<String> = name.into_iter().collect();
    let mms = ctx.mattermosts(&names).await?;
    // Values of the referenced secrets: only to scrub them from the text, never written.
    let mut secrets = Secrets::default();
    let mut secret_meta: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for mm in &mms {
        let ns = mm.namespace().unwrap_or_default();
        let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
        for s in mm.spec.referenced_secrets() {
            let entry = match api.get_opt(s).await? {
                Some(secret) => {
                    secrets.add_secret(&secret);
                    let keys: Vec<String> = secret.data.iter().flat_map(|d| d.keys().cloned()).collect();
                    serde_json::json!({"name": s, "type": secret.type_, "keys": keys})
                }
                None => serde_json::json!({"name": s, "missing": true}),
            };
            secret_meta.entry(key(mm)).or_default().push(entry);
        }
    }
    let file = std::fs::File::create(path)?;
    let mut b = Bundle {
        zip: zip::ZipWriter::new(file),
        secrets,
        files: 0,
    };
    let server = ctx
        .client
        .apiserver_version()
        .await
        .map(|v| v.git_version)
        .unwrap_or_else(|e| format!("unknown ({e})"));
    let operators = ctx.operators().await?;
    let images: Vec<String> = operators
        .iter()
        .filter_map(|d| d.spec.as_ref().map(|s| main_image(&s.template)))
        .collect();
    b.text(
        "versions.txt",
        &format!(
            "kubectl-mattermost {}\nkubernetes {server}\noperator images {images:?}\ninstallations {}\n",
            env!("CARGO_PKG_VERSION"),
            mms.len()
        ),
    )?;
    b.text(
        "README.txt",
        "Support bundle written by kubectl mattermost report. Secrets appear as names and keys only;\n\
         environment values whose names look sensitive and credentials in URLs are replaced by [redacted].\n\
         operator/logs/ holds the last 2000 lines of each operator pod's containers, redacted the same way,\n\
         or a file saying why they could not be fetched.\n",
    )?;
    b.objects("operator/deployments.yaml", &operators)?;
    operator_logs(ctx, &mut b, operator_namespace).await?;
    b.objects(
        "clusterinstallations.yaml",
        &ctx.cluster_installations(&[]).await?,
    )?;
    let mut events_by_ns: BTreeMap<String, Vec<Event>> = BTreeMap::new();
    for mm in &mms {
        let ns = mm.namespace().unwrap_or_default();
        let name = mm.name_any();
        let dir = format!("{ns}/{name}");
        b.objects(&format!("{dir}/mattermost.yaml"), std::slice::from_ref(mm))?;
        b.objects(
            &format!("{dir}/deployments.yaml"),
            &children::<Deployment>(ctx, &ns, &name).await?,
        )?;
        b.objects(
            &format!("{dir}/replicasets.yaml"),
            &children::<ReplicaSet>(ctx, &ns, &name).await?,
        )?;
        b.objects(
            &format!("{dir}/pods.yaml"),
            &children::<Pod>(ctx, &ns, &name).await?,
        )?;
        b.objects(
            &format!("{dir}/services.yaml"),
            &children::<Service>(ctx, &ns, &name).await?,
        )?;
        b.objects(
            &format!("{dir}/ingresses.yaml"),
            &children::<Ingress>(ctx, &ns, &name).await?,
        )?;
        b.objects(
            &format!("{dir}/jobs.yaml"),
            &children::<Job>(ctx, &ns, &name).await?,
        )?;
        b.objects(
            &format!("{dir}/pdbs.yaml"),
            &children::<PodDisruptionBudget>(ctx, &ns, &name).await?,
        )?;
        b.objects(
            &format!("{dir}/serviceaccounts.yaml"),
            &children::<ServiceAccount>(ctx, &ns, &name).await?,
        )?;
        b.objects(
            &format!("{dir}/pvcs.yaml"),
            &children::<PersistentVolumeClaim>(ctx, &ns, &name).await?,
        )?;
        if let Some(meta) = secret_meta.get(&key(mm)) {
            b.objects(&format!("{dir}/secrets.yaml"), meta)?;
        }
        if !events_by_ns.contains_key(&ns) {
            let list = Api::<Event>::namespaced(ctx.client.clone(), &ns)
                .list(&ListParams::default())
                .await?;
            events_by_ns.insert(ns.clone(), list.items);
        }
        let events: Vec<&Event> = events_by_ns[&ns]
            .iter()
            .filter(|e| {
                e.regarding
                    .as_ref()
                    .and_then(|r| r.name.as_deref())
                    .is_some_and(|n| n.starts_with(&name))
            })
            .collect();
        b.objects(&format!("{dir}/events.yaml"), &events)?;
    }
    let files = b.files;
    b.zip.finish()?;
    outln!(
        "wrote {} ({files} files, {} installations)",
        path.display(),
        mms.len()
    );
    Ok(0)
}
