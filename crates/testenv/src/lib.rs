//! Test harness for the local Kubernetes control plane of `hack/testenv` (real kube-apiserver,
//! controller-manager and scheduler, kwok nodes). Tests get a [`kube::Client`] from [`client`], a
//! fresh namespace from [`TestNamespace::create`], polling helpers ([`wait_until`],
//! [`wait_for_object`]), an [`EndpointWatcher`] that records ready endpoints of a Service at every
//! change (the instrument for zero-downtime proofs) and an [`AuditLog`] reader that counts API
//! requests by verb, resource and user agent.
//!
//! The control plane is started once per test run when `.testenv/kubeconfig` is not live, and
//! reused otherwise; `make cluster-down` (or `make test`, which brought it up) stops it.

mod audit;
mod endpoints;
mod restart;

pub use audit::{AuditEvent, AuditLog, AuditMark};
pub use endpoints::{EndpointSample, EndpointWatcher};
pub use restart::{Restart, restart_apiserver, short_backoff};

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{DynamicObject, GroupVersionKind};
use kube::discovery::{ApiCapabilities, ApiResource, Discovery, Scope};
use kube::{Api, Client, Config, Resource, ResourceExt};
use serde::de::DeserializeOwned;

/// Field manager the harness uses for objects it applies.
pub const FIELD_MANAGER: &str = "testenv";

/// Errors of the harness. Tests usually `expect()` them.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `hack/testenv/up.sh` failed or could not be started.
    #[error("starting the control plane failed: {0}")]
    ClusterUp(String),
    /// The kubeconfig could not be read.
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    /// A Kubernetes API call failed.
    #[error("kube: {0}")]
    Kube(#[from] kube::Error),
    /// A wait ran out of time.
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, String),
    /// A manifest could not be parsed or mapped to an API resource.
    #[error("manifest: {0}")]
    Manifest(String),
    /// Restarting a control-plane process failed.
    #[error("restart: {0}")]
    Restart(String),
    /// Reading a file failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// Result alias of the harness.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The repository root (two levels above this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
}

/// The state directory of the control plane (`TESTENV_DIR`, default `<repo>/.testenv`).
pub fn state_dir() -> PathBuf {
    std::env::var_os("TESTENV_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".testenv"))
}

/// Path of the admin kubeconfig written by `cluster-up`.
pub fn kubeconfig_path() -> PathBuf {
    state_dir().join("kubeconfig")
}

/// Path of the `kubectl` built with the control plane.
pub fn kubectl_path() -> PathBuf {
    state_dir().join("bin/kubectl")
}

/// The state directory of a second control plane, for tests of several clusters at once (one per
/// site): `TESTENV_DIR_B`, default `<state_dir>-b`. `hack/test.sh` starts and stops it.
pub fn second_state_dir() -> PathBuf {
    std::env::var_os("TESTENV_DIR_B")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let mut dir = state_dir().into_os_string();
            dir.push("-b");
            PathBuf::from(dir)
        })
}

static UP: Mutex<()> = Mutex::new(());

/// Runs `hack/testenv/up.sh` (idempotent: a live control plane is reused). Serialised within the
/// test process; the script itself is safe to run twice.
pub fn ensure_cluster_up() -> Result<()> {
    ensure_cluster_up_at(&state_dir())
}

/// [`ensure_cluster_up`] for the control plane whose state directory is `dir`.
pub fn ensure_cluster_up_at(dir: &Path) -> Result<()> {
    let _guard = UP.lock().unwrap_or_else(|p| p.into_inner());
    let script = repo_root().join("hack/testenv/up.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .env("TESTENV_DIR", dir)
        .output()
        .map_err(|e| Error::ClusterUp(format!("{}: {e}", script.display())))?;
    if !out.status.success() {
        return Err(Error::ClusterUp(
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ));
    }
    Ok(())
}

/// A client for the local control plane, starting it first when it is not up.
pub async fn client() -> Result<Client> {
    client_at(&state_dir()).await
}

/// A client for the control plane whose state directory is `dir` (its kubeconfig is
/// `dir/kubeconfig`), starting it first when it is not up.
pub async fn client_at(dir: &Path) -> Result<Client> {
    let path = dir.join("kubeconfig");
    if let Some(c) = live_client(&path).await {
        return Ok(c);
    }
    let owned = dir.to_path_buf();
    tokio::task::spawn_blocking(move || ensure_cluster_up_at(&owned))
        .await
        .map_err(|e| Error::ClusterUp(e.to_string()))??;
    client_from(&path).await
}

async fn live_client(path: &Path) -> Option<Client> {
    if !path.exists() {
        return None;
    }
    let client = client_from(path).await.ok()?;
    let ready = tokio::time::timeout(Duration::from_secs(5), client.apiserver_version()).await;
    matches!(ready, Ok(Ok(_))).then_some(client)
}

/// A client for the kubeconfig at `path`.
pub async fn client_from(path: &Path) -> Result<Client> {
    let kc = Kubeconfig::read_from(path)?;
    let mut config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    // Tests create bursts of objects; the defaults are fine for the apiserver, which has APF off.
    config.read_timeout = Some(Duration::from_secs(60));
    Ok(Client::try_from(config)?)
}

/// A namespace created for one test. Deleted by [`TestNamespace::delete`]; a failing test leaves
/// it behind for inspection (`make cluster-down` removes everything).
pub struct TestNamespace {
    /// The namespace name.
    pub name: String,
    client: Client,
}

impl TestNamespace {
    /// Creates `<prefix>-<random suffix>`, labelled `testenv=true`.
    pub async fn create(client: &Client, prefix: &str) -> Result<Self> {
        let name = format!("{}-{}", sanitize(prefix), random_suffix());
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([("testenv".to_owned(), "true".to_owned())].into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await?;
        Ok(Self {
            name,
            client: client.clone(),
        })
    }

    /// A typed API for this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Deletes the namespace (background; does not wait for its content to go).
    pub async fn delete(self) -> Result<()> {
        Api::<Namespace>::all(self.client.clone())
            .delete(&self.name, &DeleteParams::background())
            .await?;
        Ok(())
    }
}

fn sanitize(prefix: &str) -> String {
    let s: String = prefix
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(40)
        .collect();
    s.trim_matches('-').to_owned()
}

fn random_suffix() -> String {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("{:06x}", h.finish() & 0xff_ffff)
}

/// Polls `check` every 200 ms until it returns `Some`, or fails after `timeout`.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Timeout(timeout, what.to_owned()));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the object `name` exists and satisfies `cond`; returns it.
pub async fn wait_for_object<K>(
    api: &Api<K>,
    name: &str,
    timeout: Duration,
    cond: impl Fn(&K) -> bool,
) -> Result<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let what = format!(
        "{} {name}",
        std::any::type_name::<K>().rsplit("::").next().unwrap_or("object")
    );
    wait_until(&what, timeout, || async {
        match api.get_opt(name).await {
            Ok(Some(obj)) if cond(&obj) => Some(obj),
            _ => None,
        }
    })
    .await
}

/// Server-side applies every document of a multi-document YAML manifest. Namespaced objects
/// without a namespace go to `namespace`. Returns the applied objects.
pub async fn apply_yaml(client: &Client, namespace: &str, yaml: &str) -> Result<Vec<DynamicObject>> {
    let discovery = Discovery::new(client.clone()).run().await?;
    let docs: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(yaml).map_err(|e| Error::Manifest(e.to_string()))?;
    let mut applied = Vec::new();
    for doc in docs.into_iter().filter(|d| !d.is_null()) {
        let obj: DynamicObject = serde_json::from_value(doc).map_err(|e| Error::Manifest(e.to_string()))?;
        let tm = obj
            .types
            .clone()
            .ok_or_else(|| Error::Manifest("document without apiVersion/kind".into()))?;
        let gvk = GroupVersionKind::try_from(&tm).map_err(|e| Error::Manifest(e.to_string()))?;
        let (ar, caps): (ApiResource, ApiCapabilities) = discovery
            .resolve_gvk(&gvk)
            .ok_or_else(|| Error::Manifest(format!("unknown kind {gvk:?}")))?;
        let api: Api<DynamicObject> = match caps.scope {
            Scope::Namespaced => Api::namespaced_with(
                client.clone(),
                obj.namespace().as_deref().unwrap_or(namespace),
                &ar,
            ),
            Scope::Cluster => Api::all_with(client.clone(), &ar),
        };
        let params = PatchParams::apply(FIELD_MANAGER).force();
        applied.push(api.patch(&obj.name_any(), &params, &Patch::Apply(&obj)).await?);
    }
    Ok(applied)
}
