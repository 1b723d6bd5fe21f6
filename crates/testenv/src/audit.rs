//! Reads the apiserver audit log (metadata level, JSON lines) written by `hack/testenv/up.sh`,
//! to count requests by verb, resource and user agent — e.g. "a no-op reconcile writes nothing".

use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::PathBuf;

use serde::Deserialize;

/// One audit event (the fields tests count by).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, ...
    pub verb: String,
    /// The user agent of the client.
    #[serde(default)]
    pub user_agent: String,
    /// The request URI.
    #[serde(default)]
    pub request_uri: String,
    /// Resource, namespace, name and subresource.
    #[serde(default)]
    pub object_ref: Option<ObjectRef>,
    /// The authenticated user.
    #[serde(default)]
    pub user: UserInfo,
    /// HTTP status of the response.
    #[serde(default)]
    pub response_status: Option<ResponseStatus>,
}

/// The object a request addressed.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    /// Plural resource name, e.g. `deployments`.
    #[serde(default)]
    pub resource: String,
    /// Namespace, if any.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Object name, if any.
    #[serde(default)]
    pub name: Option<String>,
    /// Subresource, e.g. `status`.
    #[serde(default)]
    pub subresource: Option<String>,
}

/// The user that sent a request.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct UserInfo {
    /// User name.
    #[serde(default)]
    pub username: String,
}

/// The response code of a request.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct ResponseStatus {
    /// HTTP status code.
    #[serde(default)]
    pub code: u16,
}

impl AuditEvent {
    /// True for verbs that change state.
    pub fn is_write(&self) -> bool {
        matches!(
            self.verb.as_str(),
            "create" | "update" | "patch" | "delete" | "deletecollection"
        )
    }

    /// `resource` or `resource/subresource`.
    pub fn resource(&self) -> String {
        match &self.object_ref {
            Some(ObjectRef {
                resource,
                subresource: Some(sub),
                ..
            }) => format!("{resource}/{sub}"),
            Some(r) => r.resource.clone(),
            None => String::new(),
        }
    }
}

/// A position in the audit log; requests after it are read with [`AuditLog::since`].
#[derive(Debug, Clone, Copy)]
pub struct AuditMark(u64);

/// The audit log of the running control plane.
pub struct AuditLog {
    path: PathBuf,
}

impl Default for AuditLog {
    fn default() -> Self {
        Self::new()
    }
}

impl AuditLog {
    /// The audit log of the control plane in [`crate::state_dir`].
    pub fn new() -> Self {
        Self {
            path: crate::state_dir().join("audit.log"),
        }
    }

    /// The current end of the log.
    pub fn mark(&self) -> crate::Result<AuditMark> {
        Ok(AuditMark(std::fs::metadata(&self.path)?.len()))
    }

    /// Every complete event written after `mark`.
    pub fn since(&self, mark: AuditMark) -> crate::Result<Vec<AuditEvent>> {
        let mut f = std::fs::File::open(&self.path)?;
        f.seek(SeekFrom::Start(mark.0))?;
        let mut events = Vec::new();
        for line in BufReader::new(f).lines() {
            let line = line?;
            // A line still being written fails to parse; it belongs to the next read.
            if let Ok(e) = serde_json::from_str::<AuditEvent>(&line) {
                events.push(e);
            }
        }
        Ok(events)
    }
}
