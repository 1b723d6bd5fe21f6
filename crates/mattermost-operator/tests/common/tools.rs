//! Go-built test tools (`hack/tools.sh`): built into the version-keyed cache on first use.

use std::path::PathBuf;
use std::process::Command;

use tokio::sync::OnceCell;

static BUILT: OnceCell<(PathBuf, PathBuf)> = OnceCell::const_new();

/// Paths of (kstatus, promtool), building them if the cache is cold.
pub async fn paths() -> &'static (PathBuf, PathBuf) {
    BUILT
        .get_or_init(|| async {
            let script = testenv::repo_root().join("hack/tools.sh");
            let st = tokio::process::Command::new("bash")
                .arg(&script)
                .status()
                .await
                .expect("run hack/tools.sh");
            assert!(st.success(), "hack/tools.sh failed");
            let out = Command::new("bash").arg(&script).arg("env").output().unwrap();
            let text = String::from_utf8(out.stdout).unwrap();
            let get = |k: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(&format!("{k}=")))
                    .map(PathBuf::from)
                    .unwrap_or_else(|| panic!("{k} not in hack/tools.sh env"))
            };
            (get("KSTATUS"), get("PROMTOOL"))
        })
        .await
}

/// kstatus' verdict (status, message) for one object, computed by sigs.k8s.io/cli-utils.
pub async fn kstatus(obj: &impl serde::Serialize) -> (String, String) {
    use tokio::io::AsyncWriteExt;
    let (bin, _) = paths().await;
    let mut child = tokio::process::Command::new(bin)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start kstatus");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&serde_json::to_vec(obj).unwrap()).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "kstatus failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        v["status"].as_str().unwrap().to_owned(),
        v["message"].as_str().unwrap().to_owned(),
    )
}
