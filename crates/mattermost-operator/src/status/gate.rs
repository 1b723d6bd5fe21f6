//! What the upgrade gate and its Jobs report to status: which Job, where it stands, and why an
//! image change may not proceed.

use super::{BACKUP, UPDATE_JOB, VERIFIED};

/// The Jobs of an upgrade, in the order they run: each has a condition and stable reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    /// Database dump before the schema changes.
    Backup,
    /// `mattermost db migrate` with the new image.
    Update,
    /// The server's own health and version after the rollout.
    Verify,
}

impl JobKind {
    /// Condition type of this Job's state.
    pub fn condition(self) -> &'static str {
        match self {
            JobKind::Backup => BACKUP,
            JobKind::Update => UPDATE_JOB,
            JobKind::Verify => VERIFIED,
        }
    }

    /// Reason while it runs.
    pub fn running(self) -> &'static str {
        match self {
            JobKind::Backup => "BackupRunning",
            JobKind::Update => "UpdateJobRunning",
            JobKind::Verify => "VerificationRunning",
        }
    }

    /// Reason when it failed.
    pub fn failed(self) -> &'static str {
        match self {
            JobKind::Backup => "BackupFailed",
            JobKind::Update => "UpdateJobFailed",
            JobKind::Verify => "VerificationFailed",
        }
    }

    /// Reason when it succeeded (the condition type).
    pub fn succeeded(self) -> &'static str {
        self.condition()
    }

    /// Event reason when the operator started it.
    pub fn started(self) -> &'static str {
        match self {
            JobKind::Backup => "BackupStarted",
            JobKind::Update => "UpdateJobStarted",
            JobKind::Verify => "VerificationStarted",
        }
    }

    /// For messages.
    pub fn noun(self) -> &'static str {
        match self {
            JobKind::Backup => "backup Job",
            JobKind::Update => "update Job",
            JobKind::Verify => "verification Job",
        }
    }

    pub(super) fn doing(self) -> &'static str {
        match self {
            JobKind::Backup => "dumps the database to object storage",
            JobKind::Update => "runs `mattermost db migrate`",
            JobKind::Verify => "asks the server for its health and version",
        }
    }
}

/// Where one Job stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    /// Created, not finished.
    Running,
    /// Finished with success.
    Succeeded,
    /// Failed; kept (no relaunch) until the spec changes or a retry is requested.
    Failed {
        /// Why, from the Job condition or the failed pod's termination message.
        message: String,
    },
}

/// One Job of an upgrade and where it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRun {
    /// Which Job.
    pub kind: JobKind,
    /// Job name.
    pub job: String,
    /// Its state.
    pub state: JobState,
}

/// Where the upgrade gate stands (preflight, slot, backup and update Jobs).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Gate {
    /// No image change pending (or the gate is disabled).
    #[default]
    Open,
    /// A Job the new image waits for is running (backup, then update).
    Running {
        /// Which Job.
        kind: JobKind,
        /// Job name.
        job: String,
    },
    /// A Job the new image waits for failed; the Deployment is left alone.
    Failed {
        /// Which Job.
        kind: JobKind,
        /// Job name.
        job: String,
        /// Why, from the Job condition or the failed pod's termination message.
        message: String,
    },
    /// The update Job succeeded and the new image was applied.
    Passed {
        /// Job name.
        job: String,
    },
    /// A preflight check failed; nothing was changed.
    Blocked {
        /// Stable reason.
        reason: &'static str,
        /// For humans.
        message: String,
    },
    /// The rollout waits for a free slot (`MAX_RECONCILING_INSTALLATIONS`).
    Waiting,
}

/// A failure while applying children.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Stable reason.
    pub reason: &'static str,
    /// Message for humans.
    pub message: String,
}
