//! Command hooks: any CLI (cloud DNS, a global load balancer, a replication check) run with
//! `sh -c`, told which site and step it is for through environment variables.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

/// How long one hook may run before it counts as failed.
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(300);

/// What a hook is run for; each field becomes an environment variable.
#[derive(Debug, Clone, Default)]
pub struct HookEnv {
    /// `SITE`: the site's name in the plan (empty for plan-wide gates before the first site).
    pub site: String,
    /// `CONTEXT`: its kubeconfig context (empty for the current one).
    pub context: String,
    /// `NAMESPACE` of its Mattermost.
    pub namespace: String,
    /// `NAME` of its Mattermost.
    pub name: String,
    /// `VERSION` this step moves the site to.
    pub version: String,
    /// `STEP`: drain, restore, guard, unguard, gate-before, gate-verify, gate-after.
    pub step: String,
    /// `WRITER`: the site that takes writes meanwhile (guard hooks).
    pub writer: String,
}

/// Why a hook failed.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// `sh` could not be started.
    #[error("could not run `{command}`: {source}")]
    Spawn {
        /// The command.
        command: String,
        /// The cause.
        source: std::io::Error,
    },
    /// It exited non-zero.
    #[error("`{command}` exited with {code}: {tail}")]
    Failed {
        /// The command.
        command: String,
        /// Exit code (-1 when killed by a signal).
        code: i32,
        /// The last lines of its stderr (stdout when stderr is empty).
        tail: String,
    },
    /// It ran longer than [`HOOK_TIMEOUT`].
    #[error("`{command}` did not finish within {0:?}", HOOK_TIMEOUT)]
    Timeout {
        /// The command.
        command: String,
    },
}

/// Runs `command` with `sh -c`; returns its trimmed stdout.
pub async fn run(command: &str, env: &HookEnv) -> Result<String, HookError> {
    let child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .env("SITE", &env.site)
        .env("CONTEXT", &env.context)
        .env("NAMESPACE", &env.namespace)
        .env("NAME", &env.name)
        .env("VERSION", &env.version)
        .env("STEP", &env.step)
        .env("WRITER", &env.writer)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| HookError::Spawn {
            command: command.to_owned(),
            source,
        })?;
    let out = match tokio::time::timeout(HOOK_TIMEOUT, child.wait_with_output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(source)) => {
            return Err(HookError::Spawn {
                command: command.to_owned(),
                source,
            });
        }
        Err(_) => {
            return Err(HookError::Timeout {
                command: command.to_owned(),
            });
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if out.status.success() {
        return Ok(stdout);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let text = if stderr.trim().is_empty() {
        stdout.as_str()
    } else {
        stderr.trim()
    };
    Err(HookError::Failed {
        command: command.to_owned(),
        code: out.status.code().unwrap_or(-1),
        tail: tail(text, 5),
    })
}

/// The last `n` lines of `text`, joined with ` | ` so the message stays on one line.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hook_sees_its_site_and_step_and_fails_with_its_stderr_tail() {
        let env = HookEnv {
            site: "a".into(),
            step: "drain".into(),
            version: "10.5.0".into(),
            ..HookEnv::default()
        };
        let out = run("echo $SITE-$STEP-$VERSION", &env).await.unwrap();
        assert_eq!(out, "a-drain-10.5.0");
        let err = run("echo one >&2; echo two >&2; exit 3", &env).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "`echo one >&2; echo two >&2; exit 3` exited with 3: one | two"
        );
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("1\n2\n\n3\n", 2), "2 | 3");
        assert_eq!(tail("", 2), "");
    }
}
