//! Output into a closed pipe (`kubectl mattermost completion bash | head`): the process ends
//! quietly, as kubectl does on SIGPIPE, instead of panicking. No cluster needed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};

fn completion(stdout: Stdio) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kubectl-mattermost"))
        .args(["completion", "bash"])
        .stdout(stdout)
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

#[test]
fn completion_into_a_closed_pipe_exits_quietly() {
    // The reading end is closed before the process starts, so its first write fails with EPIPE.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = completion(writer.into());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.is_empty(), "quiet: {stderr}");
    assert_eq!(
        out.status.code(),
        Some(141),
        "128 + SIGPIPE, as a shell reports for kubectl"
    );
}

#[test]
fn completion_into_an_open_pipe_is_the_whole_script() {
    let out = completion(Stdio::piped());
    assert_eq!(out.status.code(), Some(0));
    let script = String::from_utf8(out.stdout).unwrap();
    assert!(script.contains("kubectl-mattermost"), "{script}");
    assert!(script.contains("complete "), "a bash completion script");
}
