//! `report`: a support bundle (zip) of the selected installations, their children, events and
//! ClusterInstallations, the operator's Deployment and versions. Secret values are never written:
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
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use mattermost_operator::desired::labels::INSTALLATION_LABEL;
use mattermost_operator::redact::{self, Secrets};
use serde::Serialize;
use serde_json::Value;

use crate::error::Error;
use crate::kube_ctx::{Ctx, key, main_image};

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

/// Writes the bundle to `path`.
pub async fn run(ctx: &Ctx, name: Option<String>, path: &Path) -> Result<u8, Error> {
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
         environment values whose names look sensitive and credentials in URLs are replaced by [redacted];\n\
         operator logs are not collected (use kubectl logs on the operator pod where it runs).\n",
    )?;
    b.objects("operator/deployments.yaml", &operators)?;
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
