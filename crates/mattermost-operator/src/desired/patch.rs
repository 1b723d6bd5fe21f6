//! `spec.resourcePatch`: RFC 6902 patches applied to the generated Service and Deployment before
//! they are applied, with the Go operator's denylist enforced again here (the CRD's CEL rule may be
//! missing on an older CRD).

use mattermost_api::v1beta1::{Patch, PatchStatus};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Which object a patch targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchTarget {
    /// The app Service.
    Service,
    /// The app Deployment.
    Deployment,
}

const DEPLOYMENT_DENIED: [&str; 9] = [
    "/spec/template/spec/hostNetwork",
    "/spec/template/spec/hostPID",
    "/spec/template/spec/hostIPC",
    "/spec/template/spec/volumes",
    "/spec/template/spec/serviceAccountName",
    "/spec/template/spec/serviceAccount",
    "/spec/template/spec/nodeSelector",
    "/spec/template/spec/nodeName",
    "/spec/template/spec/initContainers",
];
const SECURITY_DENIED: [&str; 4] = [
    "privileged",
    "allowPrivilegeEscalation",
    "runAsUser",
    "capabilities",
];
const SERVICE_DENIED: [&str; 3] = ["/spec/selector", "/spec/externalIPs", "/spec/externalName"];

fn denied(target: PatchTarget, path: &str) -> bool {
    match target {
        PatchTarget::Service => SERVICE_DENIED.iter().any(|p| path.starts_with(p)),
        PatchTarget::Deployment => {
            DEPLOYMENT_DENIED.iter().any(|p| path.starts_with(p))
                || SECURITY_DENIED
                    .iter()
                    .any(|f| path.contains(&format!("/securityContext/{f}")))
        }
    }
}

/// The first forbidden path of `patch`, if any (unparsable patches are reported when applied).
pub fn forbidden_patch_path(target: PatchTarget, patch: &str) -> Option<String> {
    let ops: json_patch::Patch = serde_json::from_str(patch).ok()?;
    ops.0
        .iter()
        .map(|op| op.path().to_string())
        .find(|p| denied(target, p))
}

/// Applies `patch` to `obj`. Returns the object unchanged when the patch is absent, disabled,
/// unparsable or does not apply, with the reason in the status.
pub fn apply_json_patch<K: Serialize + DeserializeOwned + Clone>(
    obj: &K,
    patch: Option<&Patch>,
) -> (K, Option<PatchStatus>) {
    let Some(text) = patch
        .filter(|p| !p.disable.unwrap_or(false))
        .and_then(|p| p.patch.as_deref())
    else {
        return (obj.clone(), None);
    };
    let failed = |error: String| {
        (
            obj.clone(),
            Some(PatchStatus {
                applied: false,
                error: Some(error),
            }),
        )
    };
    let ops: json_patch::Patch = match serde_json::from_str(text) {
        Ok(ops) => ops,
        Err(e) => return failed(format!("invalid JSON patch: {e}")),
    };
    let mut doc = match serde_json::to_value(obj) {
        Ok(v) => v,
        Err(e) => return failed(e.to_string()),
    };
    if let Err(e) = json_patch::patch(&mut doc, &ops) {
        return failed(format!("patch does not apply: {e}"));
    }
    match serde_json::from_value(doc) {
        Ok(patched) => (
            patched,
            Some(PatchStatus {
                applied: true,
                error: None,
            }),
        ),
        Err(e) => failed(format!("patched object is invalid: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Service, ServiceSpec};

    fn patch(text: &str) -> Patch {
        Patch {
            disable: None,
            patch: Some(text.to_owned()),
        }
    }

    #[test]
    fn applies_and_reports() {
        let svc = Service {
            spec: Some(ServiceSpec::default()),
            ..Default::default()
        };
        let p = patch(r#"[{"op":"add","path":"/spec/type","value":"NodePort"}]"#);
        let (out, st) = apply_json_patch(&svc, Some(&p));
        assert_eq!(out.spec.unwrap().type_.as_deref(), Some("NodePort"));
        assert!(st.unwrap().applied);
        let (out, st) = apply_json_patch(&svc, Some(&patch(r#"[{"op":"remove","path":"/spec/nope"}]"#)));
        assert_eq!(out, svc);
        assert!(!st.unwrap().applied);
        let (_, st) = apply_json_patch(&svc, Some(&patch("not json")));
        assert!(st.unwrap().error.unwrap().contains("invalid JSON patch"));
        let disabled = Patch {
            disable: Some(true),
            ..patch("[]")
        };
        assert_eq!(apply_json_patch(&svc, Some(&disabled)).1, None);
    }

    #[test]
    fn denylist() {
        let d = PatchTarget::Deployment;
        assert_eq!(
            forbidden_patch_path(
                d,
                r#"[{"op":"add","path":"/spec/template/spec/hostNetwork","value":true}]"#
            ),
            Some("/spec/template/spec/hostNetwork".to_owned())
        );
        let sc = r#"[{"op":"add","path":"/spec/template/spec/containers/0/securityContext/privileged","value":true}]"#;
        assert!(forbidden_patch_path(d, sc).is_some());
        assert!(forbidden_patch_path(d, r#"[{"op":"add","path":"/spec/replicas","value":3}]"#).is_none());
        assert!(
            forbidden_patch_path(
                PatchTarget::Service,
                r#"[{"op":"add","path":"/spec/selector/a","value":"b"}]"#
            )
            .is_some()
        );
    }
}
