//! Default security contexts that pass the Pod Security `restricted` profile, so an installation
//! runs in a restricted namespace out of the box. The Mattermost image runs as uid/gid 2000.
//! `podTemplate.securityContext` and `podTemplate.containerSecurityContext` replace them, as the
//! Go operator's fields did.

use k8s_openapi::api::core::v1::{Capabilities, PodSecurityContext, SeccompProfile, SecurityContext};
use mattermost_api::v1beta1::Mattermost;

/// User and group of the Mattermost image.
pub const MATTERMOST_UID: i64 = 2000;

fn runtime_default() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".to_owned(),
        localhost_profile: None,
    }
}

/// The default pod security context: non-root as the image's user, files owned by its group.
pub fn default_pod() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(MATTERMOST_UID),
        run_as_group: Some(MATTERMOST_UID),
        fs_group: Some(MATTERMOST_UID),
        seccomp_profile: Some(runtime_default()),
        ..Default::default()
    }
}

/// The default container security context: no privilege escalation, no capabilities.
pub fn default_container() -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            add: None,
        }),
        seccomp_profile: Some(runtime_default()),
        ..Default::default()
    }
}

/// User of the helper Jobs' pods (backup, verification): the operator image's `nonroot`.
pub const HELPER_UID: i64 = 65532;

/// Pod security context of the helper Jobs: restricted, as an unprivileged user whose group
/// owns the scratch volumes. Not the user's `podTemplate` one, which is meant for Mattermost.
pub fn helper_pod() -> PodSecurityContext {
    PodSecurityContext {
        run_as_user: Some(HELPER_UID),
        run_as_group: Some(HELPER_UID),
        fs_group: Some(HELPER_UID),
        ..default_pod()
    }
}

/// Container security context of the helper Jobs: restricted, read-only root file system.
pub fn helper_container() -> SecurityContext {
    SecurityContext {
        read_only_root_filesystem: Some(true),
        ..default_container()
    }
}

/// True when the user set the pod security context.
pub fn user_pod(mm: &Mattermost) -> bool {
    mm.spec
        .pod_template
        .as_ref()
        .is_some_and(|p| p.security_context.is_some())
}

/// True when the user set the Mattermost container's security context.
pub fn user_container(mm: &Mattermost) -> bool {
    mm.spec
        .pod_template
        .as_ref()
        .is_some_and(|p| p.container_security_context.is_some())
}

/// The user's pod security context, or the default.
pub fn pod(mm: &Mattermost) -> PodSecurityContext {
    let user = mm
        .spec
        .pod_template
        .as_ref()
        .and_then(|p| p.security_context.clone());
    user.unwrap_or_else(default_pod)
}

/// The user's security context of the Mattermost container, or the default.
pub fn container(mm: &Mattermost) -> SecurityContext {
    let user = mm
        .spec
        .pod_template
        .as_ref()
        .and_then(|p| p.container_security_context.clone());
    user.unwrap_or_else(default_container)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use mattermost_api::v1beta1::{MattermostSpec, PodTemplate};

    /// The checks of the `restricted` profile that concern these fields.
    pub(crate) fn restricted(pod: &PodSecurityContext, c: &SecurityContext) -> bool {
        let non_root = c.run_as_non_root.or(pod.run_as_non_root) == Some(true);
        let uid = c.run_as_user.or(pod.run_as_user) != Some(0);
        let seccomp = c
            .seccomp_profile
            .as_ref()
            .or(pod.seccomp_profile.as_ref())
            .is_some_and(|s| s.type_ == "RuntimeDefault" || s.type_ == "Localhost");
        let caps = c.capabilities.as_ref().is_some_and(|k| {
            k.drop.iter().flatten().any(|d| d == "ALL")
                && k.add.iter().flatten().all(|a| a == "NET_BIND_SERVICE")
        });
        non_root
            && uid
            && seccomp
            && caps
            && c.allow_privilege_escalation == Some(false)
            && c.privileged != Some(true)
    }

    #[test]
    fn defaults_pass_restricted_and_user_values_replace_them() {
        let mm = Mattermost::new("chat", MattermostSpec::default());
        assert!(restricted(&pod(&mm), &container(&mm)));
        assert!(restricted(&helper_pod(), &helper_container()));
        assert_eq!(pod(&mm).fs_group, Some(2000));
        let user = Mattermost::new(
            "chat",
            MattermostSpec {
                pod_template: Some(PodTemplate {
                    container_security_context: Some(SecurityContext {
                        privileged: Some(true),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        assert!(user_container(&user) && !user_pod(&user));
        assert_eq!(container(&user).privileged, Some(true));
        assert!(!restricted(&pod(&user), &container(&user)));
    }
}
