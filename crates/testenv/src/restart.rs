//! Restarting a control-plane process the way an outage does: SIGKILL, a pause, then the very
//! same command line (same port, flags, certificates and etcd data). `hack/testenv/up.sh` saves
//! each command line to `cmdlines/<name>`; for a control plane started before it did, the command
//! line is read from `/proc/<pid>/cmdline` before the kill.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Error, Result, state_dir};

/// Retries of a watch in the harness: 200 ms doubling to 1 s (plus jitter), reset on success, so
/// a record resumes within seconds after an API server restart.
pub fn short_backoff() -> kube::runtime::watcher::ExponentialBackoff {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(1))
        .with_jitter()
        .without_max_times()
        .into()
}

/// When a restart happened.
#[derive(Debug, Clone, Copy)]
pub struct Restart {
    /// The process got SIGKILL.
    pub killed_at: Instant,
    /// The new process was started.
    pub started_at: Instant,
    /// The API server answered `/readyz` again.
    pub ready_at: Instant,
}

/// Kills kube-apiserver (SIGKILL), waits `down`, starts it again with its exact command line and
/// waits until it answers `/readyz`. Every client of the control plane sees the outage: run
/// tests that use this alone (their own test binary, one scenario at a time).
pub async fn restart_apiserver(down: Duration) -> Result<Restart> {
    let d = state_dir();
    let name = "kube-apiserver";
    let pid_file = d.join("pids").join(name);
    let pid: u32 = std::fs::read_to_string(&pid_file)?
        .trim()
        .parse()
        .map_err(|e| Error::Restart(format!("{}: {e}", pid_file.display())))?;
    let args = command_line(&d, name, pid)?;
    let port = api_port(&d)?;

    let killed_at = Instant::now();
    let status = Command::new("kill").args(["-KILL", &pid.to_string()]).status()?;
    if !status.success() {
        return Err(Error::Restart(format!("kill -KILL {pid} failed")));
    }
    crate::wait_until(
        &format!("{name} ({pid}) gone"),
        Duration::from_secs(10),
        || async { (!alive(pid)).then_some(()) },
    )
    .await?;
    tokio::time::sleep(down.saturating_sub(killed_at.elapsed())).await;

    let log = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(d.join("logs").join(format!("{name}.log")))?;
    let started_at = Instant::now();
    let mut child = Command::new("setsid")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    std::fs::write(&pid_file, format!("{}\n", child.id()))?;
    // Reap it whenever it exits, so that a later kill does not leave a zombie that looks alive.
    std::thread::spawn(move || child.wait());

    let certs = d.join("certs");
    let url = format!("https://127.0.0.1:{port}/readyz");
    crate::wait_until(
        &format!("{name} ready again"),
        Duration::from_secs(90),
        || async {
            let ok = tokio::process::Command::new("curl")
                .args(["-sf", "--max-time", "2", "--cacert"])
                .arg(certs.join("ca.crt"))
                .arg("--cert")
                .arg(certs.join("admin.crt"))
                .arg("--key")
                .arg(certs.join("admin.key"))
                .arg(&url)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await
                .is_ok_and(|s| s.success());
            ok.then_some(())
        },
    )
    .await?;
    Ok(Restart {
        killed_at,
        started_at,
        ready_at: Instant::now(),
    })
}

/// The saved command line of `name`, or the running process's.
fn command_line(d: &Path, name: &str, pid: u32) -> Result<Vec<String>> {
    let raw = match std::fs::read(d.join("cmdlines").join(name)) {
        Ok(raw) => raw,
        Err(_) => std::fs::read(format!("/proc/{pid}/cmdline"))?,
    };
    let args: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    if args.is_empty() {
        return Err(Error::Restart(format!("no command line for {name}")));
    }
    Ok(args)
}

/// `API_PORT` from the `ports` file.
fn api_port(d: &Path) -> Result<u16> {
    let ports = std::fs::read_to_string(d.join("ports"))?;
    ports
        .lines()
        .find_map(|l| l.strip_prefix("API_PORT="))
        .and_then(|p| p.trim().parse().ok())
        .ok_or_else(|| Error::Restart("API_PORT not in the ports file".into()))
}

/// True while `pid` runs (a zombie counts as gone).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_process_is_alive_and_a_free_pid_is_not() {
        assert!(alive(std::process::id()));
        assert!(!alive(u32::MAX));
    }

    #[test]
    fn command_lines_are_nul_separated() {
        let d = std::env::temp_dir().join(format!("testenv-cmdline-{}", std::process::id()));
        std::fs::create_dir_all(d.join("cmdlines")).unwrap();
        std::fs::write(d.join("cmdlines/x"), b"/bin/x\0--a=b c\0--d\0").unwrap();
        assert_eq!(
            command_line(&d, "x", 0).unwrap(),
            vec!["/bin/x", "--a=b c", "--d"]
        );
        std::fs::write(d.join("ports"), "API_PORT=26544\nETCD_PORT=1\n").unwrap();
        assert_eq!(api_port(&d).unwrap(), 26544);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
