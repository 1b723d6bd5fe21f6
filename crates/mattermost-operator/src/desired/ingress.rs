//! Ingress `<name>`: nginx-style (Go operator defaults) or AWS ALB.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule, IngressServiceBackend,
    IngressSpec, IngressTLS, ServiceBackendPort,
};
use mattermost_api::v1beta1::Mattermost;

use super::labels::{self, APP_MATTERMOST};
use super::meta::child_meta;
use super::names::Names;
use super::service::APP_PORT;

/// IngressClass used in ALB mode when `ingressClassName` is unset: the class the AWS Load
/// Balancer Controller's chart installs (the Go operator created a cluster-scoped class per
/// installation, which garbage collection cannot clean up).
pub const DEFAULT_ALB_CLASS: &str = "alb";

fn rules(names: &Names, hosts: &[String]) -> Vec<IngressRule> {
    hosts
        .iter()
        .map(|host| IngressRule {
            host: Some(host.clone()),
            http: Some(HTTPIngressRuleValue {
                paths: vec![HTTPIngressPath {
                    path: Some("/".to_owned()),
                    path_type: "Prefix".to_owned(),
                    backend: IngressBackend {
                        service: Some(IngressServiceBackend {
                            name: names.app.clone(),
                            port: Some(ServiceBackendPort {
                                number: Some(APP_PORT),
                                ..Default::default()
                            }),
                        }),
                        ..Default::default()
                    },
                }],
            }),
        })
        .collect()
}

/// The Ingress when one is wanted: ALB mode, or the regular Ingress when enabled.
pub fn ingress(mm: &Mattermost, names: &Names) -> Option<Ingress> {
    let spec = &mm.spec;
    if spec.use_service_load_balancer() {
        return None;
    }
    let meta = child_meta(
        mm,
        names,
        &names.app,
        labels::object_labels(mm, names, APP_MATTERMOST),
    );
    if let Some(alb) = spec.aws_load_balancer_controller.as_ref().filter(|a| a.enabled) {
        let hosts: Vec<String> = alb
            .hosts
            .iter()
            .flatten()
            .filter_map(|h| h.host_name.clone())
            .collect();
        let scheme = if alb.internet_facing.unwrap_or(false) {
            "internet-facing"
        } else {
            "internal"
        };
        let mut annotations =
            BTreeMap::from([("alb.ingress.kubernetes.io/scheme".to_owned(), scheme.to_owned())]);
        match alb.certificate_arn.as_deref().filter(|a| !a.is_empty()) {
            Some(arn) => annotations.extend([
                (
                    "alb.ingress.kubernetes.io/certificate-arn".to_owned(),
                    arn.to_owned(),
                ),
                (
                    "alb.ingress.kubernetes.io/ssl-redirect".to_owned(),
                    "443".to_owned(),
                ),
                (
                    "alb.ingress.kubernetes.io/listen-ports".to_owned(),
                    r#"[{"HTTP":80},{"HTTPS":443}]"#.to_owned(),
                ),
            ]),
            None => {
                annotations.insert(
                    "alb.ingress.kubernetes.io/listen-ports".to_owned(),
                    r#"[{"HTTP": 8065}]"#.to_owned(),
                );
            }
        }
        annotations.extend(alb.annotations.clone().unwrap_or_default());
        let class = alb.ingress_class_name.clone().filter(|c| !c.is_empty());
        return Some(Ingress {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                annotations: Some(annotations),
                ..meta
            },
            spec: Some(IngressSpec {
                ingress_class_name: Some(class.unwrap_or(DEFAULT_ALB_CLASS.to_owned())),
                rules: Some(rules(names, &hosts)),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    if !spec.ingress_enabled() {
        return None;
    }
    let hosts = spec.ingress_hosts();
    let class = spec
        .ingress
        .as_ref()
        .and_then(|i| i.ingress_class.clone())
        .filter(|c| !c.is_empty());
    let mut annotations = BTreeMap::from([(
        "nginx.ingress.kubernetes.io/proxy-body-size".to_owned(),
        "1000M".to_owned(),
    )]);
    if class.is_none() {
        annotations.insert("kubernetes.io/ingress.class".to_owned(), "nginx".to_owned());
    }
    annotations.extend(spec.ingress_annotations());
    let tls = spec.ingress_tls_secret().map(|secret| {
        vec![IngressTLS {
            hosts: Some(hosts.clone()),
            secret_name: Some(secret),
        }]
    });
    Some(Ingress {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            annotations: Some(annotations),
            ..meta
        },
        spec: Some(IngressSpec {
            ingress_class_name: class,
            rules: Some(rules(names, &hosts)),
            tls,
            ..Default::default()
        }),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mattermost_api::v1beta1::{AwsLoadBalancerController, IngressHost, MattermostSpec};

    fn build(spec: MattermostSpec) -> Option<Ingress> {
        let mm = Mattermost::new("mm", spec);
        ingress(&mm, &Names::of(&mm))
    }

    #[test]
    fn go_defaults_for_the_worked_example() {
        let ing = build(MattermostSpec {
            ingress: Some(mattermost_api::v1beta1::Ingress {
                enabled: true,
                host: Some("chat.example.com".into()),
                ..Default::default()
            }),
            ..Default::default()
        })
        .unwrap();
        let ann = ing.metadata.annotations.unwrap();
        assert_eq!(ann["kubernetes.io/ingress.class"], "nginx");
        assert_eq!(ann["nginx.ingress.kubernetes.io/proxy-body-size"], "1000M");
        let spec = ing.spec.unwrap();
        let rule = &spec.rules.unwrap()[0];
        assert_eq!(rule.host.as_deref(), Some("chat.example.com"));
        let backend = rule.http.as_ref().unwrap().paths[0]
            .backend
            .service
            .as_ref()
            .unwrap();
        assert_eq!(
            (backend.name.as_str(), backend.port.as_ref().unwrap().number),
            ("mm", Some(8065))
        );
        assert!(spec.tls.is_none());
    }

    #[test]
    fn disabled_or_load_balancer_means_no_ingress() {
        let off = mattermost_api::v1beta1::Ingress {
            enabled: false,
            ..Default::default()
        };
        assert!(
            build(MattermostSpec {
                ingress: Some(off),
                ..Default::default()
            })
            .is_none()
        );
        let lb = MattermostSpec {
            ingress_name: Some("h".into()),
            use_service_load_balancer: Some(true),
            ..Default::default()
        };
        assert!(build(lb).is_none());
    }

    #[test]
    fn ingress_class_replaces_the_annotation_and_tls_covers_all_hosts() {
        let ing = build(MattermostSpec {
            ingress: Some(mattermost_api::v1beta1::Ingress {
                enabled: true,
                host: Some("a".into()),
                hosts: Some(vec![IngressHost {
                    host_name: Some("b".into()),
                }]),
                tls_secret: Some("tls".into()),
                ingress_class: Some("traefik".into()),
                ..Default::default()
            }),
            ..Default::default()
        })
        .unwrap();
        assert!(
            !ing.metadata
                .annotations
                .unwrap()
                .contains_key("kubernetes.io/ingress.class")
        );
        let spec = ing.spec.unwrap();
        assert_eq!(spec.ingress_class_name.as_deref(), Some("traefik"));
        assert_eq!(
            spec.tls.unwrap()[0].hosts.as_ref().unwrap(),
            &vec!["a".to_owned(), "b".to_owned()]
        );
    }

    #[test]
    fn alb_mode() {
        let ing = build(MattermostSpec {
            aws_load_balancer_controller: Some(AwsLoadBalancerController {
                enabled: true,
                certificate_arn: Some("arn:x".into()),
                internet_facing: Some(true),
                hosts: Some(vec![IngressHost {
                    host_name: Some("a".into()),
                }]),
                ..Default::default()
            }),
            ..Default::default()
        })
        .unwrap();
        let ann = ing.metadata.annotations.unwrap();
        assert_eq!(ann["alb.ingress.kubernetes.io/scheme"], "internet-facing");
        assert_eq!(ann["alb.ingress.kubernetes.io/ssl-redirect"], "443");
        assert_eq!(ing.spec.unwrap().ingress_class_name.as_deref(), Some("alb"));
    }
}
