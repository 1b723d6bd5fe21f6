//! The only module that writes children: server-side apply with one field manager, and deletes
//! of children this installation owns.
//!
//! A reconcile with nothing to change must send no write at all, so every apply is skipped when
//! the live object already matches: it carries the hash of the same desired object (catches fields
//! we stopped setting) and every field we set has the same value live (catches drift by others).

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// The one field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "mattermost-operator";
/// Annotation the Go operator's object matcher left on every child it wrote.
pub const GO_LAST_APPLIED: &str = "mattermost.com/last-applied";
/// Hash of the desired object last applied; a different hash means the desired state changed.
pub const HASH_ANNOTATION: &str = "installation.mattermost.com/applied-hash";

/// Why writing a child failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The API server refused the apply or delete.
    #[error("{verb} {kind} {name}: {}", crate::redact::api_message(.source))]
    Api {
        /// `apply`, `delete` or `get`.
        verb: &'static str,
        /// Kind of the child.
        kind: String,
        /// Name of the child.
        name: String,
        /// The API error.
        #[source]
        source: Box<kube::Error>,
    },
    /// An object with the child's name exists and belongs to someone else; it is never touched.
    #[error("{kind} {name} already exists and is not owned by this installation; it is left untouched")]
    Conflict {
        /// Kind of the object.
        kind: String,
        /// Name of the object.
        name: String,
    },
    /// The desired object could not be serialised (a bug).
    #[error("serialising {kind}: {source}")]
    Serialize {
        /// Kind of the child.
        kind: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
}

impl ApplyError {
    /// Stable reason for conditions, events and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            ApplyError::Api { .. } => "ApplyFailed",
            ApplyError::Conflict { .. } => "ChildNameConflict",
            ApplyError::Serialize { .. } => "InternalError",
        }
    }
}

/// What an apply or delete did.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied<K> {
    /// The live object already matched (or there was nothing to delete); no request was sent.
    Unchanged,
    /// The object was created, changed or deleted; for applies, the API server's answer.
    Written(Option<K>),
}

impl<K> Applied<K> {
    /// True when a request was sent.
    pub fn written(&self) -> bool {
        matches!(self, Applied::Written(_))
    }
}

/// True when `obj` has a controller owner reference to the owner with `owner_uid`.
pub fn is_owned_by<K: Resource>(obj: &K, owner_uid: &str) -> bool {
    obj.owner_references()
        .iter()
        .any(|r| r.uid == owner_uid && r.controller == Some(true))
}

/// Applies `desired` unless `live` (from the label-selected cache) already matches. `None` means
/// the cache has no such object: it is created with a precondition that fails when one exists
/// after all (a lagging cache, or a foreign object with our name), which is then read and checked,
/// so a create costs one request and no GET. Refuses to touch an existing object that is not
/// controlled by `owner_uid`.
pub async fn ensure<K>(
    client: &Client,
    live: Option<K>,
    desired: K,
    owner_uid: &str,
) -> Result<Applied<K>, ApplyError>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    ensure_with(client, live, desired, |k: &K| is_owned_by(k, owner_uid)).await
}

/// Like [`ensure`] for a child no cache holds: reads it first (one GET), so that an existing
/// child costs no write.
pub async fn ensure_uncached<K>(
    client: &Client,
    desired: K,
    owner_uid: &str,
) -> Result<Applied<K>, ApplyError>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), &desired.namespace().unwrap_or_default());
    let live = fetch(&api, &desired.name_any()).await?;
    ensure(client, live, desired, owner_uid).await
}

/// Like [`ensure`], with the ownership test given by the caller (for children that carry no
/// owner reference on purpose, such as a retained volume claim).
pub async fn ensure_with<K>(
    client: &Client,
    live: Option<K>,
    mut desired: K,
    is_ours: impl Fn(&K) -> bool,
) -> Result<Applied<K>, ApplyError>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let kind = K::kind(&()).into_owned();
    let name = desired.name_any();
    let ns = desired.namespace().unwrap_or_default();
    let api: Api<K> = Api::namespaced(client.clone(), &ns);
    let hash = hash_of(&desired).map_err(|source| ApplyError::Serialize {
        kind: kind.clone(),
        source,
    })?;
    desired
        .annotations_mut()
        .insert(HASH_ANNOTATION.to_owned(), hash.clone());
    let api_error = |verb: &'static str, source: kube::Error| ApplyError::Api {
        verb,
        kind: kind.clone(),
        name: name.clone(),
        source: Box::new(source),
    };
    let params = PatchParams::apply(FIELD_MANAGER).force();

    let live = match live {
        Some(l) => Some(l),
        None => {
            // A resourceVersion in an apply is a precondition: no live object can have "1", and
            // an absent one is created. 409 = it exists after all.
            let mut create = desired.clone();
            create.meta_mut().resource_version = Some(CREATE_ONLY.to_owned());
            match api.patch(&name, &params, &Patch::Apply(&create)).await {
                Ok(created) => return Ok(Applied::Written(Some(created))),
                Err(kube::Error::Api(e)) if e.code == 409 => fetch(&api, &name).await?,
                Err(e) => return Err(api_error("apply", e)),
            }
        }
    };
    if let Some(live) = &live {
        if !is_ours(live) {
            return Err(ApplyError::Conflict { kind, name });
        }
        if live.annotations().contains_key(GO_LAST_APPLIED) {
            // Adopted from the Go operator: its object-matcher state is stale from now on.
            let patch = serde_json::json!({"metadata": {"annotations": {GO_LAST_APPLIED: null}}});
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|e| api_error("patch", e))?;
        }
        if live.annotations().get(HASH_ANNOTATION) == Some(&hash) && matches(&desired, live)? {
            return Ok(Applied::Unchanged);
        }
    }
    let written = api
        .patch(&name, &params, &Patch::Apply(&desired))
        .await
        .map_err(|e| api_error("apply", e))?;
    Ok(Applied::Written(Some(written)))
}

/// The resourceVersion precondition of a create-only apply.
const CREATE_ONLY: &str = "1";

async fn fetch<K>(api: &Api<K>, name: &str) -> Result<Option<K>, ApplyError>
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned,
{
    api.get_opt(name).await.map_err(|source| ApplyError::Api {
        verb: "get",
        kind: K::kind(&()).into_owned(),
        name: name.to_owned(),
        source: Box::new(source),
    })
}

/// Deletes the child `name` if it exists and is controlled by `owner_uid`; anything else is left
/// alone. `live` is the cached object, fetched when `None`.
pub async fn delete_owned<K>(
    client: &Client,
    ns: &str,
    name: &str,
    live: Option<K>,
    owner_uid: &str,
    params: &DeleteParams,
) -> Result<Applied<K>, ApplyError>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + Debug + DeserializeOwned,
{
    let kind = K::kind(&()).into_owned();
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let live = match live {
        Some(l) => Some(l),
        None => api.get_opt(name).await.map_err(|source| ApplyError::Api {
            verb: "get",
            kind: kind.clone(),
            name: name.to_owned(),
            source: Box::new(source),
        })?,
    };
    match live {
        Some(obj) if is_owned_by(&obj, owner_uid) && obj.meta().deletion_timestamp.is_none() => {
            match api.delete(name, params).await {
                Ok(_) => Ok(Applied::Written(None)),
                // Already gone (the cache had not seen it go yet): nothing left to do.
                Err(kube::Error::Api(e)) if e.code == 404 => Ok(Applied::Unchanged),
                Err(source) => Err(ApplyError::Api {
                    verb: "delete",
                    kind,
                    name: name.to_owned(),
                    source: Box::new(source),
                }),
            }
        }
        _ => Ok(Applied::Unchanged),
    }
}

/// True when every field of the pod template of `desired` has the same value in `live`'s: applying
/// `desired` would not roll the pods.
pub fn same_pod_template(
    desired: &k8s_openapi::api::apps::v1::Deployment,
    live: &k8s_openapi::api::apps::v1::Deployment,
) -> bool {
    let template = |d: &k8s_openapi::api::apps::v1::Deployment| {
        d.spec
            .as_ref()
            .and_then(|s| serde_json::to_value(&s.template).ok())
            .unwrap_or_default()
    };
    is_subset(&template(desired), &template(live))
}

fn matches<K: Serialize>(desired: &K, live: &K) -> Result<bool, ApplyError> {
    let ser = |o: &K| {
        serde_json::to_value(o).map_err(|source| ApplyError::Serialize {
            kind: std::any::type_name::<K>().to_owned(),
            source,
        })
    };
    Ok(is_subset(&ser(desired)?, &ser(live)?))
}

/// Stable 64-bit FNV-1a hash of the serialised object, hex encoded.
pub fn hash_of<K: Serialize>(obj: &K) -> Result<String, serde_json::Error> {
    let bytes = serde_json::to_vec(obj)?;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    Ok(format!("{h:016x}"))
}

/// True when every field set in `desired` has the same value in `live`. Lists must have the same
/// length and match element by element; quantities compare by value ("1000m" == "1").
pub fn is_subset(desired: &Value, live: &Value) -> bool {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => d.iter().all(|(k, dv)| match l.get(k) {
            Some(lv) => is_subset(dv, lv),
            None => is_empty(dv),
        }),
        (Value::Array(d), Value::Array(l)) => {
            d.len() == l.len() && d.iter().zip(l).all(|(a, b)| is_subset(a, b))
        }
        (Value::Array(d), Value::Null) => d.is_empty(),
        (Value::String(d), Value::String(l)) => d == l || quantity_eq(d, l),
        (Value::Number(d), Value::Number(l)) => d.as_f64() == l.as_f64(),
        (d, l) => d == l,
    }
}

/// The API server drops empty maps, lists and nulls we send; treat them as present.
fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.values().all(is_empty),
        Value::Array(a) => a.is_empty(),
        Value::Bool(b) => !b,
        _ => false,
    }
}

fn quantity_eq(a: &str, b: &str) -> bool {
    match (parse_quantity(a), parse_quantity(b)) {
        (Some(x), Some(y)) => (x - y).abs() <= f64::EPSILON * x.abs().max(y.abs()).max(1.0),
        _ => false,
    }
}

/// Parses a Kubernetes quantity ("500m", "1.5Gi", "2e3") into its value; `None` if it is not one.
pub fn parse_quantity(s: &str) -> Option<f64> {
    const SUFFIXES: [(&str, f64); 14] = [
        ("Ki", 1024.0),
        ("Mi", 1_048_576.0),
        ("Gi", 1_073_741_824.0),
        ("Ti", 1_099_511_627_776.0),
        ("Pi", 1_125_899_906_842_624.0),
        ("Ei", 1_152_921_504_606_846_976.0),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
    ];
    let s = s.trim();
    if s.is_empty() || !s.starts_with(|c: char| c.is_ascii_digit() || c == '.' || c == '+' || c == '-') {
        return None;
    }
    for (suffix, mult) in SUFFIXES.iter().chain(std::iter::once(&("E", 1e18))) {
        if let Some(num) = s.strip_suffix(suffix) {
            return num.parse::<f64>().ok().map(|n| n * mult);
        }
    }
    s.parse::<f64>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subset_ignores_server_defaults_and_compares_quantities_by_value() {
        let desired =
            json!({"spec": {"replicas": 2, "resources": {"cpu": "1000m", "memory": "1Gi"}, "tags": []}});
        let live = json!({"spec": {"replicas": 2, "progressDeadlineSeconds": 600,
            "resources": {"cpu": "1", "memory": "1Gi"}}, "status": {}});
        assert!(is_subset(&desired, &live));
    }

    #[test]
    fn subset_detects_changed_values_and_list_lengths() {
        assert!(!is_subset(&json!({"a": 1}), &json!({"a": 2})));
        assert!(!is_subset(&json!({"a": "x"}), &json!({})));
        assert!(!is_subset(&json!({"l": [1, 2]}), &json!({"l": [1]})));
        assert!(!is_subset(
            &json!({"l": [{"name": "a", "value": "1"}]}),
            &json!({"l": [{"name": "a", "value": "2"}]})
        ));
        assert!(!is_subset(&json!({"b": true}), &json!({"b": false})));
    }

    #[test]
    fn quantities_parse() {
        assert_eq!(parse_quantity("500m"), Some(0.5));
        assert_eq!(parse_quantity("2Gi"), Some(2.0 * 1_073_741_824.0));
        assert_eq!(parse_quantity("1e3"), Some(1000.0));
        assert_eq!(parse_quantity("1E"), Some(1e18));
        assert_eq!(parse_quantity("mattermost"), None);
        assert!(quantity_eq("0.5", "500m"));
        assert!(!quantity_eq("Mi", "Mi2"));
    }

    #[test]
    fn hash_is_stable_and_sensitive() {
        let a = hash_of(&json!({"a": 1})).unwrap();
        assert_eq!(a, hash_of(&json!({"a": 1})).unwrap());
        assert_ne!(a, hash_of(&json!({"a": 2})).unwrap());
        assert_eq!(a.len(), 16);
    }
}
