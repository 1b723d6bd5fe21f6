//! The verification Job after a rollout: the operator's own image runs `mattermost-operator
//! verify`, which asks the installation's Service whether the server is healthy (database, file
//! store) and runs the version that was asked for (see `crate::verify`).

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Container, PodSpec};
use kube::ResourceExt;
use mattermost_api::v1beta1::{Mattermost, split_image_reference};

use super::deployment::placement;
use super::env::from_secret;
use super::job::{JobPod, RETRY_ANNOTATION, job};
use super::labels::{self, APP_VERIFY_JOB};
use super::meta::child_meta;
use super::names::Names;
use super::security;
use super::service::APP_PORT;

/// Name of the container that verifies.
pub const VERIFY_CONTAINER: &str = "verify";
/// Seconds the Job may outlive the check's own timeout (pull, start).
const DEADLINE_MARGIN: i64 = 120;

/// URL of the installation's Service, as pods in the cluster reach it.
pub fn service_url(names: &Names) -> String {
    format!("http://{}.{}.svc:{APP_PORT}", names.app, names.namespace)
}

/// The Job verifying the rollout of `image`, run with `operator_image`.
pub fn verify_job(mm: &Mattermost, names: &Names, image: &str, operator_image: &str) -> Job {
    let (_, version) = split_image_reference(image);
    let timeout = mm.spec.verify_timeout_seconds();
    let policy = mm.spec.upgrade.as_ref().and_then(|u| u.verify.as_ref());
    // The smoke test's token only by reference: it is read by the pod, never by the operator.
    let smoke = policy
        .and_then(|v| v.smoke_test_secret.as_deref())
        .filter(|s| !s.is_empty())
        .map(|secret| {
            vec![
                from_secret("VERIFY_SMOKE_TOKEN", secret, "token"),
                from_secret("VERIFY_SMOKE_CHANNEL", secret, "channelId"),
            ]
        });
    let container = Container {
        name: VERIFY_CONTAINER.to_owned(),
        image: Some(operator_image.to_owned()),
        args: Some(vec![
            "verify".to_owned(),
            format!("--url={}", service_url(names)),
            format!("--expect-version={version}"),
            format!("--timeout={timeout}s"),
        ]),
        env: smoke,
        security_context: Some(security::helper_container()),
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        ..Default::default()
    };
    let spec = &mm.spec;
    let pod = PodSpec {
        automount_service_account_token: Some(false),
        dns_config: spec.dns_config.clone(),
        security_context: Some(security::helper_pod()),
        containers: vec![container],
        ..placement(mm)
    };
    let meta = child_meta(
        mm,
        names,
        &names.verify_job(image),
        labels::object_labels(mm, names, APP_VERIFY_JOB),
    );
    let mut pod_labels = spec.resource_labels.clone().unwrap_or_default();
    pod_labels.extend(labels::selector(names, APP_VERIFY_JOB));
    job(
        meta,
        mm.annotations().get(RETRY_ANNOTATION),
        JobPod {
            labels: pod_labels,
            annotations: policy.and_then(|v| v.extra_annotations.clone()),
            spec: pod,
            main_container: VERIFY_CONTAINER.to_owned(),
            // The check retries by itself until its timeout; a second pod would only repeat it.
            backoff_limit: 0,
            active_deadline_seconds: i64::from(timeout) + DEADLINE_MARGIN,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::security::tests::restricted;
    use mattermost_api::v1beta1::MattermostSpec;

    #[test]
    fn operator_image_asks_the_service_for_the_new_version_in_a_restricted_pod() {
        let spec: MattermostSpec = serde_json::from_value(serde_json::json!({
            "version": "10.9.0",
            "upgrade": {"verify": {"timeoutSeconds": 30, "extraAnnotations": {"a": "b"}}},
        }))
        .unwrap();
        let mut mm = Mattermost::new("chat", spec);
        mm.metadata.namespace = Some("ns".into());
        let names = Names::of(&mm);
        let job = verify_job(
            &mm,
            &names,
            "mattermost/mattermost-enterprise-edition:10.9.0",
            "op:1",
        );
        assert_eq!(
            job.metadata.name,
            Some(names.verify_job("mattermost/mattermost-enterprise-edition:10.9.0"))
        );
        let spec = job.spec.unwrap();
        assert_eq!(
            (spec.backoff_limit, spec.active_deadline_seconds),
            (Some(0), Some(150))
        );
        let template = spec.template;
        assert_eq!(template.metadata.unwrap().annotations.unwrap()["a"], "b");
        let pod = template.spec.unwrap();
        assert_eq!(pod.automount_service_account_token, Some(false));
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some("op:1"));
        assert_eq!(
            c.args.as_deref().unwrap(),
            [
                "verify",
                "--url=http://chat.ns.svc:8065",
                "--expect-version=10.9.0",
                "--timeout=30s"
            ]
        );
        assert!(c.env.is_none(), "no environment, no secret");
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert!(restricted(pod.security_context.as_ref().unwrap(), sc));

        mm.spec
            .upgrade
            .as_mut()
            .unwrap()
            .verify
            .as_mut()
            .unwrap()
            .smoke_test_secret = Some("bot".into());
        let job = verify_job(&mm, &names, "mm:10.9.0", "op:1");
        let env = job.spec.unwrap().template.spec.unwrap().containers[0]
            .env
            .clone()
            .unwrap();
        let refs: Vec<(&str, &str, &str)> = env
            .iter()
            .map(|e| {
                assert!(e.value.is_none(), "{} only by reference", e.name);
                let r = e.value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap();
                (e.name.as_str(), r.name.as_str(), r.key.as_str())
            })
            .collect();
        assert_eq!(
            refs,
            [
                ("VERIFY_SMOKE_TOKEN", "bot", "token"),
                ("VERIFY_SMOKE_CHANNEL", "bot", "channelId")
            ]
        );
    }
}
