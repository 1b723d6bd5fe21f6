//! The app Service (ready pods only) and the headless peer Service (every pod, for discovery).
//!
//! The Go operator made the app Service headless with `publishNotReadyAddresses: true`, so
//! ingress controllers routed to pods that were still starting. Ours publishes ready pods only;
//! `clusterIP` is left unset so new installations get a virtual IP while adopted headless Services
//! (the field is immutable) keep working.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use mattermost_api::v1beta1::Mattermost;

use super::labels::{self, APP_MATTERMOST};
use super::meta::child_meta;
use super::names::Names;

/// Mattermost HTTP port.
pub const APP_PORT: i32 = 8065;
/// Mattermost metrics port.
pub const METRICS_PORT: i32 = 8067;
/// Mattermost cluster gossip port.
pub const GOSSIP_PORT: i32 = 8074;

fn port(name: &str, port: i32, target: &str, node_port_ok: bool) -> ServicePort {
    ServicePort {
        name: Some(name.to_owned()),
        port,
        protocol: Some("TCP".to_owned()),
        target_port: Some(IntOrString::String(target.to_owned())),
        app_protocol: (!node_port_ok).then(|| "http".to_owned()),
        ..Default::default()
    }
}

/// The app Service `<name>`: ClusterIP (ports app/metrics), LoadBalancer (http/https → app) with
/// `useServiceLoadBalancer`, or NodePort in ALB mode.
pub fn app_service(mm: &Mattermost, names: &Names) -> Service {
    let spec = &mm.spec;
    let (type_, ports) = if spec.use_service_load_balancer() {
        (
            "LoadBalancer",
            vec![port("http", 80, "app", true), port("https", 443, "app", true)],
        )
    } else if spec.alb_enabled() {
        (
            "NodePort",
            vec![
                port("app", APP_PORT, "app", true),
                port("metrics", METRICS_PORT, "metrics", true),
            ],
        )
    } else {
        (
            "ClusterIP",
            vec![
                port("app", APP_PORT, "app", false),
                port("metrics", METRICS_PORT, "metrics", false),
            ],
        )
    };
    let mut meta = child_meta(
        mm,
        names,
        &names.app,
        labels::object_labels(mm, names, APP_MATTERMOST),
    );
    meta.annotations = spec.service_annotations.clone().filter(|a| !a.is_empty());
    Service {
        metadata: meta,
        spec: Some(ServiceSpec {
            type_: Some(type_.to_owned()),
            selector: Some(labels::selector(names, APP_MATTERMOST)),
            ports: Some(ports),
            publish_not_ready_addresses: Some(false),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Headless Service `<name>-peers` listing every pod, ready or not, for cluster-peer discovery.
pub fn peer_service(mm: &Mattermost, names: &Names) -> Service {
    let mut gossip = port("gossip", GOSSIP_PORT, "gossip", true);
    gossip.target_port = Some(IntOrString::Int(GOSSIP_PORT));
    Service {
        metadata: child_meta(
            mm,
            names,
            &names.peers,
            labels::object_labels(mm, names, APP_MATTERMOST),
        ),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            cluster_ip: Some("None".to_owned()),
            selector: Some(labels::selector(names, APP_MATTERMOST)),
            ports: Some(vec![port("app", APP_PORT, "app", false), gossip]),
            publish_not_ready_addresses: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mattermost_api::v1beta1::MattermostSpec;

    fn mm(spec: MattermostSpec) -> Mattermost {
        let mut mm = Mattermost::new("chat", spec);
        mm.metadata.namespace = Some("ns".into());
        mm.metadata.uid = Some("uid-1".into());
        mm
    }

    #[test]
    fn app_service_publishes_ready_pods_only_with_go_port_names() {
        let mm = mm(MattermostSpec::default());
        let svc = app_service(&mm, &Names::of(&mm));
        let spec = svc.spec.unwrap();
        assert_eq!(spec.publish_not_ready_addresses, Some(false));
        assert_eq!(
            spec.cluster_ip, None,
            "left to the API server (immutable on adopted Services)"
        );
        let names: Vec<_> = spec
            .ports
            .unwrap()
            .iter()
            .map(|p| (p.name.clone().unwrap(), p.port))
            .collect();
        assert_eq!(
            names,
            vec![("app".to_owned(), 8065), ("metrics".to_owned(), 8067)]
        );
        assert_eq!(
            spec.selector.unwrap().get("app").map(String::as_str),
            Some("mattermost")
        );
        let owner = &svc.metadata.owner_references.unwrap()[0];
        assert_eq!((owner.controller, owner.uid.as_str()), (Some(true), "uid-1"));
    }

    #[test]
    fn load_balancer_mode() {
        let mm = mm(MattermostSpec {
            use_service_load_balancer: Some(true),
            ..Default::default()
        });
        let spec = app_service(&mm, &Names::of(&mm)).spec.unwrap();
        assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
        assert_eq!(spec.ports.unwrap()[1].port, 443);
    }

    #[test]
    fn peer_service_is_headless_and_includes_unready_pods() {
        let mm = mm(MattermostSpec::default());
        let svc = peer_service(&mm, &Names::of(&mm));
        assert_eq!(svc.metadata.name.as_deref(), Some("chat-peers"));
        let spec = svc.spec.unwrap();
        assert_eq!(
            (spec.cluster_ip.as_deref(), spec.publish_not_ready_addresses),
            (Some("None"), Some(true))
        );
    }
}
