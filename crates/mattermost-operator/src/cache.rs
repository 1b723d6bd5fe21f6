//! How the child caches hold an object: its metadata as a struct (keys, labels and owners are read
//! on every event and lookup) and everything else as the compact JSON it was trimmed to, decoded
//! only when a reconcile reads that object. A k8s-openapi struct's inline size is most of a cached
//! child's memory (a `Deployment` is about 16 KiB in memory and 4 KB as JSON), and a reconcile
//! reads a handful of its own children, so the fleet's caches cost a fraction of whole structs.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};
use serde::de::{DeserializeOwned, Deserializer, Error as _};
use serde::{Deserialize, Serialize};
use tracing::error;

use crate::trim::Trim;

/// A cached child: metadata plus the rest of the trimmed object as JSON.
pub struct Cached<K> {
    metadata: ObjectMeta,
    body: Box<str>,
    kind: PhantomData<fn() -> K>,
}

impl<K> Cached<K>
where
    K: Resource<DynamicType = ()> + Serialize + DeserializeOwned + Trim,
{
    /// Trims `obj` (managed fields, `kubectl apply`'s copy, what its kind never reads) and encodes
    /// all but its metadata.
    pub fn new(mut obj: K) -> Result<Self, serde_json::Error> {
        obj.managed_fields_mut().clear();
        crate::trim::last_applied(&mut obj);
        obj.trim();
        let mut metadata = std::mem::take(obj.meta_mut());
        metadata.managed_fields = None;
        Ok(Self {
            metadata,
            body: serde_json::to_string(&obj)?.into_boxed_str(),
            kind: PhantomData,
        })
    }

    /// The object as trimmed. `None` only if what was encoded cannot be decoded again, which
    /// would be a bug: it is logged, and the object reads as absent from the cache.
    pub fn object(&self) -> Option<K> {
        match serde_json::from_str::<K>(&self.body) {
            Ok(mut obj) => {
                *obj.meta_mut() = self.metadata.clone();
                Some(obj)
            }
            Err(e) => {
                error!(kind = %K::kind(&()), name = ?self.metadata.name, error = %e, "a cached object does not decode");
                None
            }
        }
    }
}

impl<'de, K> Deserialize<'de> for Cached<K>
where
    K: Resource<DynamicType = ()> + Serialize + DeserializeOwned + Trim,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::new(K::deserialize(d)?).map_err(D::Error::custom)
    }
}

impl<K> Clone for Cached<K> {
    fn clone(&self) -> Self {
        Self {
            metadata: self.metadata.clone(),
            body: self.body.clone(),
            kind: PhantomData,
        }
    }
}

impl<K: Resource<DynamicType = ()>> fmt::Debug for Cached<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cached")
            .field("kind", &K::kind(&()))
            .field("namespace", &self.metadata.namespace)
            .field("name", &self.metadata.name)
            .field("resource_version", &self.metadata.resource_version)
            .finish_non_exhaustive()
    }
}

impl<K: Resource<DynamicType = ()>> Resource for Cached<K> {
    type DynamicType = ();
    type Scope = K::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        K::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        K::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        K::version(dt)
    }
    fn api_version(dt: &()) -> Cow<'_, str> {
        K::api_version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        K::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStatus};
    use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, PodStatus, PodTemplateSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
    use kube::ResourceExt;
    use serde_json::json;

    fn deployment() -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                name: Some("mm".into()),
                namespace: Some("ns".into()),
                labels: Some([("app".to_owned(), "mattermost".to_owned())].into()),
                annotations: Some(
                    [(
                        "kubectl.kubernetes.io/last-applied-configuration".to_owned(),
                        "{}".to_owned(),
                    )]
                    .into(),
                ),
                managed_fields: Some(vec![ManagedFieldsEntry::default()]),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(2),
                template: PodTemplateSpec {
                    spec: Some(PodSpec {
                        containers: vec![Container {
                            name: "mattermost".into(),
                            image: Some("mattermost/mattermost-enterprise-edition:10.8.1".into()),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                ..Default::default()
            }),
            status: Some(DeploymentStatus {
                ready_replicas: Some(2),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn an_object_reads_back_as_it_was_minus_what_no_one_reads() {
        let d = deployment();
        let cached = Cached::new(d.clone()).unwrap();
        assert_eq!(cached.name_any(), "mm");
        assert_eq!(cached.labels().get("app").map(String::as_str), Some("mattermost"));
        let back = cached.object().unwrap();
        assert_eq!(back.spec, d.spec);
        assert_eq!(back.status, d.status);
        assert!(back.managed_fields().is_empty());
        assert!(back.annotations().is_empty());
        assert_eq!(back.metadata.labels, d.metadata.labels);
    }

    #[test]
    fn a_watch_event_decodes_straight_into_the_cache_and_is_trimmed() {
        let raw = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "ns", "labels": {"job-name": "j"}},
            "spec": {"containers": [{"name": "c", "image": "i", "env": [{"name": "A", "value": "secret"}]}]},
            "status": {"phase": "Running", "podIP": "10.0.0.1"},
        });
        let cached: Cached<Pod> = serde_json::from_value(raw).unwrap();
        let pod = cached.object().unwrap();
        assert!(pod.spec.is_none(), "the Pod cache keeps no spec");
        assert_eq!(
            pod.status,
            Some(PodStatus {
                phase: Some("Running".into()),
                ..Default::default()
            })
        );
        assert_eq!(pod.labels().get("job-name").map(String::as_str), Some("j"));
        assert!(
            !cached.body.contains("metadata\":{\""),
            "metadata is not kept twice"
        );
    }

    #[test]
    fn the_cache_is_much_smaller_than_the_struct() {
        let d = deployment();
        let cached = Cached::new(d).unwrap();
        assert!(cached.body.len() < std::mem::size_of::<Deployment>());
    }
}
