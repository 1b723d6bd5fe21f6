//! Connection and selection: one client, the namespaces and label selector the user asked for,
//! and the reads every command shares (one LIST per kind, never one GET per installation).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, PodTemplateSpec};
use kube::api::ListParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config, ResourceExt};
use mattermost_api::v1alpha1::ClusterInstallation;
use mattermost_api::v1beta1::Mattermost;

use crate::cli::Global;
use crate::error::Error;

/// Label of the operator's Deployment (chart and `deploy/operator.yaml`).
pub const OPERATOR_SELECTOR: &str = "app.kubernetes.io/name=mattermost-operator";

/// Client and selection.
pub struct Ctx {
    /// API client.
    pub client: Client,
    /// `None` for every namespace.
    pub namespace: Option<String>,
    /// Label selector.
    pub selector: Option<String>,
}

impl Ctx {
    /// Connects as kubectl would: `--kubeconfig`/KUBECONFIG, `--context`, `-n`/`-A`.
    pub async fn connect(g: &Global) -> Result<Self, Error> {
        let options = KubeConfigOptions {
            context: g.context.clone(),
            ..Default::default()
        };
        let mut config = match &g.kubeconfig {
            Some(path) => {
                let kc = Kubeconfig::read_from(path).map_err(|e| Error::Connect(e.to_string()))?;
                Config::from_custom_kubeconfig(kc, &options).await
            }
            None => Config::from_kubeconfig(&options).await,
        }
        .map_err(|e| Error::Connect(e.to_string()))?;
        config.headers.push((
            http::header::USER_AGENT,
            http::HeaderValue::from_static(concat!("kubectl-mattermost/", env!("CARGO_PKG_VERSION"))),
        ));
        let default_ns = config.default_namespace.clone();
        let client = Client::try_from(config).map_err(|e| Error::Connect(e.to_string()))?;
        let namespace = if g.all_namespaces {
            None
        } else {
            Some(g.namespace.clone().unwrap_or(default_ns))
        };
        Ok(Self {
            client,
            namespace,
            selector: g.selector.clone(),
        })
    }

    /// A namespaced API in the selection (all namespaces with `-A`).
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        match &self.namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        }
    }

    fn list_params(&self) -> ListParams {
        match &self.selector {
            Some(s) => ListParams::default().labels(s),
            None => ListParams::default(),
        }
    }

    /// The selected installations (one LIST), ordered by namespace and name; `names` narrows
    /// them further.
    pub async fn mattermosts(&self, names: &[String]) -> Result<Vec<Mattermost>, Error> {
        let mut items = self.api::<Mattermost>().list(&self.list_params()).await?.items;
        if !names.is_empty() {
            items.retain(|m| names.contains(&m.name_any()));
            for n in names {
                if !items.iter().any(|m| &m.name_any() == n) {
                    return Err(Error::NotFound(format!("Mattermost {n}")));
                }
            }
        }
        items.sort_by_key(|m| (m.namespace(), m.name_any()));
        Ok(items)
    }

    /// The selected ClusterInstallations (one LIST); `names` narrows them further, and a name
    /// that is not there is an error (as for [`Ctx::mattermosts`]).
    pub async fn cluster_installations(&self, names: &[String]) -> Result<Vec<ClusterInstallation>, Error> {
        let mut items = self
            .api::<ClusterInstallation>()
            .list(&self.list_params())
            .await?
            .items;
        if !names.is_empty() {
            items.retain(|c| names.contains(&c.name_any()));
            for n in names {
                if !items.iter().any(|c| &c.name_any() == n) {
                    return Err(Error::NotFound(format!("ClusterInstallation {n}")));
                }
            }
        }
        items.sort_by_key(|c| (c.namespace(), c.name_any()));
        Ok(items)
    }

    /// The operator's Deployments, in any namespace (one LIST by label).
    pub async fn operators(&self) -> Result<Vec<Deployment>, Error> {
        Ok(Api::<Deployment>::all(self.client.clone())
            .list(&ListParams::default().labels(OPERATOR_SELECTOR))
            .await?
            .items)
    }
}

/// The first container of a pod template: the operator's or Mattermost's own.
pub fn main_container(template: &PodTemplateSpec) -> Option<&Container> {
    template.spec.as_ref()?.containers.first()
}

/// The image of [`main_container`], empty when unset.
pub fn main_image(template: &PodTemplateSpec) -> String {
    main_container(template)
        .and_then(|c| c.image.clone())
        .unwrap_or_default()
}

/// The operator's rollout cap, from its Deployment's `MAX_RECONCILING_INSTALLATIONS` (20 when
/// unset, as the operator's default).
pub fn rollout_cap(operators: &[Deployment]) -> Option<u32> {
    let container = main_container(&operators.first()?.spec.as_ref()?.template)?;
    let value = container
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "MAX_RECONCILING_INSTALLATIONS")
        .and_then(|e| e.value.clone());
    Some(value.and_then(|v| v.parse().ok()).unwrap_or(20))
}

/// `namespace/name`.
pub fn key<K: ResourceExt>(o: &K) -> String {
    format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any())
}
