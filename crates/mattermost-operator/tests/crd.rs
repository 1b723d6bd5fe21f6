//! The CRD on the real API server: Go-docs-style manifests are accepted unchanged; invalid ones
//! are rejected at admission by the CEL rules with a clear message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use kube::Api;
use kube::api::PostParams;
use mattermost_api::v1beta1::Mattermost;
use serde_json::json;

#[tokio::test]
async fn go_style_manifests_are_accepted_and_invalid_ones_rejected_with_a_message() {
    let env = common::env_without_operator("mm-crd").await;
    env.apply(include_str!("fixtures/go-docs-examples.yaml")).await;
    env.apply(include_str!("fixtures/mattermost-external.yaml")).await;
    env.apply(include_str!("fixtures/clusterinstallation.yaml")).await;

    let api: Api<Mattermost> = env.api();
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let cases = [
        (
            json!({"size": "250000users", "ingressName": "h"}),
            "size must be one of",
        ),
        (json!({}), "an ingress host is required"),
        (json!({"ingress": {"enabled": true}}), "ingress.host is required"),
        (
            json!({"ingressName": "h", "fileStore": {"local": {"enabled": true, "storageSize": "lots"}}}),
            "storageSize must be a quantity",
        ),
        (
            json!({"ingressName": "h", "fileStore": {"local": {"enabled": true}, "external": {"url": "u", "bucket": "b", "secret": "s"}}}),
            "set at most one of external, externalVolume, local",
        ),
        (
            json!({"ingressName": "h", "volumes": [{"name": "h", "hostPath": {"path": "/"}}]}),
            "volumes may only use",
        ),
        (
            json!({"ingressName": "h", "resourcePatch": {"deployment": {"patch": "[{\"op\":\"add\",\"path\":\"/spec/template/spec/hostNetwork\",\"value\":true}]"}}}),
            "resourcePatch.deployment may not patch",
        ),
        (
            json!({"awsLoadBalancerController": {"enabled": true}}),
            "awsLoadBalancerController.hosts is required",
        ),
        (
            json!({"ingressName": "h", "replicas": -1}),
            "replicas must not be negative",
        ),
        (
            json!({"ingressName": "h", "replicas": 100000}),
            "replicas must be at most 1000",
        ),
        (
            json!({"ingressName": "h", "image": "mattermost/mattermost enterprise"}),
            "image must be an image repository without tag or spaces",
        ),
        (
            json!({"ingressName": "h", "image": "mattermost/mattermost-enterprise-edition:10.8.1"}),
            "image must be an image repository without tag or spaces",
        ),
        (
            json!({"ingressName": "h", "database": {"readinessCheck": {"mode": "x"}}}),
            "readinessCheck.mode must be external or builtin",
        ),
        (
            json!({"ingressName": "h", "deploymentTemplate": {"deploymentStrategyType": "BlueGreen"}}),
            "deploymentStrategyType must be",
        ),
        (
            json!({"ingressName": "h", "fileStore": {"external": {"url": "u", "bucket": "b"}}}),
            "fileStore.external.secret is required",
        ),
    ];
    // Registries with ports, nested paths and the 1000-replica limit itself are fine.
    for spec in [
        json!({"ingressName": "h", "image": "registry.example.com:5000/team/mattermost-enterprise-edition"}),
        json!({"ingressName": "h", "image": "localhost/mm", "replicas": 1000}),
    ] {
        let mm: Mattermost = serde_json::from_value(json!({
            "apiVersion": "installation.mattermost.com/v1beta1", "kind": "Mattermost",
            "metadata": {"name": "good"}, "spec": spec
        }))
        .unwrap();
        api.create(&dry, &mm)
            .await
            .unwrap_or_else(|e| panic!("{spec}: {e}"));
    }
    for (spec, message) in cases {
        let mm: Mattermost = serde_json::from_value(json!({
            "apiVersion": "installation.mattermost.com/v1beta1", "kind": "Mattermost",
            "metadata": {"name": "bad"}, "spec": spec
        }))
        .unwrap();
        let err = api
            .create(&dry, &mm)
            .await
            .expect_err(&format!("accepted: {spec}"));
        assert!(
            err.to_string().contains(message),
            "{spec}: expected {message:?}, got {err}"
        );
    }
    env.cleanup().await;
}
