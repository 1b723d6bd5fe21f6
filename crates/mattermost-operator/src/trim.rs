//! What the child caches keep of objects that are only read, never compared before an apply:
//! ReplicaSets (rollout progress and the serving image), Pods (why they do not run) and Jobs
//! (their conditions). Dropping pod templates, env and volumes keeps the operator's memory flat
//! while a fleet upgrade doubles the ReplicaSets.

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, PodTemplateSpec};

/// Keeps only each container's name and image.
fn containers(spec: &mut PodSpec) {
    let slim = |c: &Container| Container {
        name: c.name.clone(),
        image: c.image.clone(),
        ..Default::default()
    };
    *spec = PodSpec {
        containers: spec.containers.iter().map(slim).collect(),
        init_containers: spec
            .init_containers
            .as_ref()
            .map(|cs| cs.iter().map(slim).collect()),
        node_name: spec.node_name.take(),
        ..Default::default()
    };
}

fn template(t: &mut PodTemplateSpec) {
    t.metadata = None;
    if let Some(spec) = t.spec.as_mut() {
        containers(spec);
    }
}

/// A ReplicaSet: metadata, status and its containers' images.
pub fn replica_set(rs: &mut ReplicaSet) {
    if let Some(t) = rs.spec.as_mut().and_then(|s| s.template.as_mut()) {
        template(t);
    }
}

/// A Pod: metadata, status, node and its containers' images.
pub fn pod(pod: &mut Pod) {
    if let Some(spec) = pod.spec.as_mut() {
        containers(spec);
    }
}

/// A Job: metadata, status and its containers' images.
pub fn job(job: &mut Job) {
    if let Some(spec) = job.spec.as_mut() {
        template(&mut spec.template);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::EnvVar;

    #[test]
    fn keeps_names_images_and_node_but_not_env_or_volumes() {
        let mut p = Pod {
            spec: Some(PodSpec {
                node_name: Some("n1".into()),
                containers: vec![Container {
                    name: "mattermost".into(),
                    image: Some("mattermost/mattermost-enterprise-edition:10.8.1".into()),
                    env: Some(vec![EnvVar {
                        name: "MM_CONFIG".into(),
                        value: Some("postgres://u:p@db".into()),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }],
                volumes: Some(vec![Default::default()]),
                ..Default::default()
            }),
            ..Default::default()
        };
        pod(&mut p);
        let spec = p.spec.unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("n1"));
        assert_eq!(spec.containers[0].name, "mattermost");
        assert!(spec.containers[0].image.is_some());
        assert!(spec.containers[0].env.is_none() && spec.volumes.is_none());
    }
}
