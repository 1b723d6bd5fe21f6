//! Defaults that change pods wait for a rollout of a new image: adopting an installation (from
//! the Go operator or an older version of this one) or reconciling it never restarts its pods by
//! itself. While the images stay the same, a default the user did not set keeps its live value
//! (the spread) or its live absence (the security contexts: a value the user just removed is
//! replaced at once, as the user's edit asks); the next upgrade brings the defaults in.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, PodSecurityContext, PodSpec, SecurityContext};
use mattermost_api::v1beta1::Mattermost;

use super::deployment::{DATABASE_CHECK_CONTAINER, user_topology_spread};
use super::names::{JOB_SERVER_CONTAINER, MAIN_CONTAINER};
use super::security;

fn pod_spec(dep: &Deployment) -> Option<&PodSpec> {
    dep.spec.as_ref()?.template.spec.as_ref()
}

fn images(dep: &Deployment) -> Option<Vec<Option<String>>> {
    pod_spec(dep).map(|p| p.containers.iter().map(|c| c.image.clone()).collect())
}

/// Keeps the live topology spread and security contexts in `desired` where they are operator
/// defaults and the images do not change.
pub fn defer_pod_defaults(mm: &Mattermost, desired: &mut Deployment, live: Option<&Deployment>) {
    let Some(live) = live else { return };
    if images(live) != images(desired) {
        return;
    }
    let Some(live_pod) = pod_spec(live).cloned() else {
        return;
    };
    let Some(pod) = desired.spec.as_mut().and_then(|s| s.template.spec.as_mut()) else {
        return;
    };
    if !user_topology_spread(mm) {
        pod.topology_spread_constraints = live_pod.topology_spread_constraints.clone();
    }
    // The API server stores an absent pod security context as `{}`.
    let unset_pod = live_pod
        .security_context
        .as_ref()
        .is_none_or(|sc| *sc == PodSecurityContext::default());
    if !security::user_pod(mm) && unset_pod {
        pod.security_context = live_pod.security_context.clone();
    }
    let keep_live = |containers: &mut [Container], live: &[Container]| {
        for c in containers.iter_mut() {
            let ours = match c.name.as_str() {
                MAIN_CONTAINER | JOB_SERVER_CONTAINER => !security::user_container(mm),
                DATABASE_CHECK_CONTAINER => true,
                _ => false,
            };
            let live_sc = live
                .iter()
                .find(|l| l.name == c.name)
                .and_then(|l| l.security_context.clone());
            if ours
                && live_sc
                    .as_ref()
                    .is_none_or(|sc| *sc == SecurityContext::default())
            {
                c.security_context = live_sc;
            }
        }
    };
    keep_live(&mut pod.containers, &live_pod.containers);
    if let Some(init) = pod.init_containers.as_mut() {
        keep_live(init, live_pod.init_containers.as_deref().unwrap_or_default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::deployment::deployment;
    use crate::desired::names::Names;
    use crate::desired::{DatabaseSecret, DbType, Inputs};
    use mattermost_api::v1beta1::{MattermostSpec, PodTemplate};

    fn mm(spec: MattermostSpec) -> Mattermost {
        let mut mm = Mattermost::new("chat", spec);
        mm.metadata.namespace = Some("ns".into());
        mm
    }

    fn inputs() -> Inputs {
        Inputs {
            database: Some(DatabaseSecret {
                name: "db".into(),
                db_type: DbType::Postgres,
                has_check_url: true,
                ..Default::default()
            }),
        }
    }

    /// A Deployment as the Go operator wrote it: no spread, no security contexts.
    fn go_style(m: &Mattermost) -> Deployment {
        let mut d = deployment(m, &Names::of(m), &inputs());
        let pod = d.spec.as_mut().unwrap().template.spec.as_mut().unwrap();
        pod.topology_spread_constraints = None;
        pod.security_context = None;
        for c in pod
            .containers
            .iter_mut()
            .chain(pod.init_containers.iter_mut().flatten())
        {
            c.security_context = None;
        }
        d
    }

    fn pod(d: &Deployment) -> &PodSpec {
        d.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
    }

    #[test]
    fn adopted_pods_keep_their_template_until_the_image_changes() {
        let m = mm(MattermostSpec::default());
        let live = go_style(&m);
        let mut desired = deployment(&m, &Names::of(&m), &inputs());
        defer_pod_defaults(&m, &mut desired, Some(&live));
        assert_eq!(pod(&desired), pod(&live), "no pod restart on takeover");

        let newer = mm(MattermostSpec {
            version: Some("10.9.0".into()),
            ..Default::default()
        });
        let mut desired = deployment(&newer, &Names::of(&newer), &inputs());
        defer_pod_defaults(&newer, &mut desired, Some(&live));
        let p = pod(&desired);
        assert!(p.security_context.is_some() && p.topology_spread_constraints.is_some());
        assert!(p.containers[0].security_context.is_some());
        assert!(p.init_containers.as_ref().unwrap()[0].security_context.is_some());
    }

    #[test]
    fn user_values_apply_at_once() {
        let m = mm(MattermostSpec {
            pod_template: Some(PodTemplate {
                container_security_context: Some(SecurityContext {
                    read_only_root_filesystem: Some(true),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        let live = go_style(&m);
        let mut desired = deployment(&m, &Names::of(&m), &inputs());
        defer_pod_defaults(&m, &mut desired, Some(&live));
        let p = pod(&desired);
        assert_eq!(
            p.containers[0]
                .security_context
                .as_ref()
                .unwrap()
                .read_only_root_filesystem,
            Some(true)
        );
        assert!(p.security_context.is_none(), "pod default still deferred");
        // The user takes the value back: the default replaces it at once, not the old value.
        let with_user_value = deployment(&m, &Names::of(&m), &inputs());
        let plain = mm(MattermostSpec::default());
        let mut desired = deployment(&plain, &Names::of(&plain), &inputs());
        defer_pod_defaults(&plain, &mut desired, Some(&with_user_value));
        assert_eq!(
            pod(&desired).containers[0].security_context,
            Some(crate::desired::security::default_container())
        );
        let mut fresh = deployment(&m, &Names::of(&m), &inputs());
        defer_pod_defaults(&m, &mut fresh, None);
        assert!(
            pod(&fresh).security_context.is_some(),
            "new installations get the defaults"
        );
    }
}
