//! Errors; every one ends the command with exit code 2.

/// Why a command could not do its work.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No usable kubeconfig or context.
    #[error("connecting: {0}")]
    Connect(String),
    /// An API request failed.
    #[error("{}", mattermost_operator::redact::api_message(.0))]
    Api(#[from] kube::Error),
    /// Something named on the command line does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// Bad usage.
    #[error("{0}")]
    Usage(String),
    /// Writing output.
    #[error("writing {0}")]
    Io(#[from] std::io::Error),
    /// Writing the zip file.
    #[error("writing the report: {0}")]
    Zip(#[from] zip::result::ZipError),
    /// The site plan file is unreadable or refused.
    #[error(transparent)]
    Plan(#[from] crate::sites::plan::PlanError),
    /// Another run holds the site lock.
    #[error("{0}")]
    Locked(String),
    /// A command hook failed.
    #[error(transparent)]
    Hook(#[from] crate::sites::hook::HookError),
    /// Encoding output.
    #[error("encoding output: {0}")]
    Encode(String),
}
