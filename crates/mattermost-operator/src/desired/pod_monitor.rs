//! PodMonitor `<name>` (Prometheus Operator, `monitoring.coreos.com/v1`): Prometheus scrapes the
//! `metrics` port of every Mattermost pod of the installation. A typed subset of the upstream
//! kind: only the fields we set, so nothing else is sent or owned; no schema (the CRD is
//! prometheus-operator's, never ours).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use mattermost_api::v1beta1::Mattermost;
use serde::{Deserialize, Serialize};

use super::labels::{self, APP_MATTERMOST};
use super::meta::child_meta;
use super::names::Names;

/// Name of the Mattermost container's metrics port (Go operator compatible).
pub const METRICS_PORT_NAME: &str = "metrics";
/// Path Mattermost serves its metrics on.
pub const METRICS_PATH: &str = "/metrics";

/// The fields of a PodMonitor the operator sets.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "monitoring.coreos.com",
    version = "v1",
    kind = "PodMonitor",
    plural = "podmonitors",
    namespaced,
    schema = "disabled",
    derive = "Default",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct PodMonitorSpec {
    /// Pods to scrape, in the PodMonitor's namespace.
    pub selector: LabelSelector,
    /// How to scrape each selected pod.
    pub pod_metrics_endpoints: Vec<PodMetricsEndpoint>,
}

/// One scrape endpoint of the selected pods.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodMetricsEndpoint {
    /// Name of the container port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
    /// HTTP path of the metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Scrape interval; the Prometheus' own when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
}

/// The PodMonitor, or `None` when monitoring is off.
pub fn pod_monitor(mm: &Mattermost, names: &Names) -> Option<PodMonitor> {
    if !mm.spec.monitoring_enabled() {
        return None;
    }
    let monitoring = mm.spec.monitoring.as_ref();
    // User labels first: the installation's own labels must win so the object stays recognisable.
    let mut object_labels = monitoring.and_then(|m| m.labels.clone()).unwrap_or_default();
    object_labels.extend(labels::object_labels(mm, names, APP_MATTERMOST));
    let interval = monitoring
        .and_then(|m| m.interval.clone())
        .filter(|i| !i.is_empty());
    Some(PodMonitor {
        metadata: child_meta(mm, names, &names.app, object_labels),
        spec: PodMonitorSpec {
            selector: LabelSelector {
                match_labels: Some(labels::selector(names, APP_MATTERMOST)),
                match_expressions: None,
            },
            pod_metrics_endpoints: vec![PodMetricsEndpoint {
                port: Some(METRICS_PORT_NAME.to_owned()),
                path: Some(METRICS_PATH.to_owned()),
                interval,
            }],
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::Resource;
    use mattermost_api::v1beta1::{MattermostSpec, Monitoring};
    use std::collections::BTreeMap;

    fn installation(monitoring: Option<Monitoring>) -> Mattermost {
        let mut mm = Mattermost::new(
            "chat",
            MattermostSpec {
                monitoring,
                resource_labels: Some(BTreeMap::from([("team".to_owned(), "a".to_owned())])),
                ..Default::default()
            },
        );
        mm.metadata.namespace = Some("ns".to_owned());
        mm.metadata.uid = Some("uid-1".to_owned());
        mm
    }

    #[test]
    fn none_unless_enabled() {
        let off = |m| {
            let mm = installation(m);
            pod_monitor(&mm, &Names::of(&mm))
        };
        assert!(off(None).is_none());
        assert!(off(Some(Monitoring::default())).is_none());
        assert!(
            off(Some(Monitoring {
                enabled: Some(false),
                interval: Some("30s".to_owned()),
                ..Default::default()
            }))
            .is_none()
        );
    }

    #[test]
    fn selects_the_mattermost_pods_metrics_port() {
        let mm = installation(Some(Monitoring {
            enabled: Some(true),
            labels: Some(BTreeMap::from([
                ("release".to_owned(), "prometheus".to_owned()),
                ("app".to_owned(), "not-this".to_owned()),
            ])),
            interval: Some("30s".to_owned()),
        }));
        let names = Names::of(&mm);
        let pm = pod_monitor(&mm, &names).unwrap();
        assert_eq!(pm.metadata.name.as_deref(), Some("chat"));
        assert_eq!(pm.metadata.namespace.as_deref(), Some("ns"));
        let owner = &pm.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((owner.uid.as_str(), owner.controller), ("uid-1", Some(true)));
        let labels = pm.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["release"], "prometheus");
        assert_eq!(labels["team"], "a");
        assert_eq!(labels["app"], APP_MATTERMOST, "selector labels win");
        // The same selector as the Deployment's, so it picks exactly the Mattermost pods.
        let dep = crate::desired::deployment::deployment(&mm, &names, &Default::default());
        let dep_selector = dep.spec.unwrap().selector;
        assert_eq!(pm.spec.selector.match_labels, dep_selector.match_labels);
        assert_eq!(
            pm.spec.pod_metrics_endpoints,
            vec![PodMetricsEndpoint {
                port: Some("metrics".to_owned()),
                path: Some("/metrics".to_owned()),
                interval: Some("30s".to_owned()),
            }]
        );
        assert_eq!(PodMonitor::api_version(&()), "monitoring.coreos.com/v1");
        assert_eq!(PodMonitor::plural(&()), "podmonitors");
    }

    #[test]
    fn metrics_port_exists_on_the_mattermost_container() {
        let mm = installation(None);
        let c = crate::desired::deployment::mattermost_container(&mm, &Default::default());
        let port = c
            .ports
            .unwrap_or_default()
            .into_iter()
            .find(|p| p.name.as_deref() == Some(METRICS_PORT_NAME))
            .unwrap();
        assert_eq!(port.container_port, 8067);
    }

    #[test]
    fn serialises_as_the_upstream_kind_without_unset_fields() {
        let mm = installation(Some(Monitoring {
            enabled: Some(true),
            ..Default::default()
        }));
        let pm = pod_monitor(&mm, &Names::of(&mm)).unwrap();
        let v = serde_json::to_value(&pm).unwrap();
        assert_eq!(v["apiVersion"], "monitoring.coreos.com/v1");
        assert_eq!(v["kind"], "PodMonitor");
        assert_eq!(
            v["spec"]["podMetricsEndpoints"],
            serde_json::json!([{"port": "metrics", "path": "/metrics"}])
        );
    }
}
