//! The operator as users run it: the built binary as a separate process, with a ServiceAccount
//! token for credentials, checked through its HTTP port.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_mattermost-operator");

/// A kubeconfig for ServiceAccount `ns/sa` (server and CA of the local control plane, a token
/// from the TokenRequest API, as `kubectl create token` makes), written to a temporary file.
pub async fn service_account_kubeconfig(client: &Client, ns: &str, sa: &str) -> PathBuf {
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..Default::default()
        }),
        ..Default::default()
    };
    let token = sas
        .create_token_request(sa, &PostParams::default(), &request)
        .await
        .expect("token request")
        .status
        .expect("token")
        .token;
    let admin = std::fs::read_to_string(testenv::kubeconfig_path()).expect("kubeconfig");
    let mut kc: serde_json::Value = serde_saphyr::from_str(&admin).expect("kubeconfig yaml");
    kc["users"] = serde_json::json!([{"name": "sa", "user": {"token": token}}]);
    let contexts = kc["contexts"].as_array_mut().expect("contexts");
    for c in contexts.iter_mut() {
        c["context"]["user"] = "sa".into();
    }
    let path = std::env::temp_dir().join(format!("mm-op-{ns}-{sa}-{}.kubeconfig", std::process::id()));
    std::fs::write(&path, serde_json::to_string(&kc).expect("json")).expect("write kubeconfig");
    path
}

/// A free port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A running operator process; killed when dropped.
pub struct Operator {
    pub child: tokio::process::Child,
    pub port: u16,
    pub log: PathBuf,
}

impl Operator {
    /// Starts the binary with exactly `args` and `env` (plus KUBECONFIG), nothing inherited but
    /// PATH and HOME.
    pub fn spawn(args: &[String], env: &[(String, String)], kubeconfig: &Path, port: u16) -> Self {
        let log = std::env::temp_dir().join(format!("mm-op-{}-{port}.log", std::process::id()));
        let file = std::fs::File::create(&log).expect("log file");
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.args(args)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("KUBECONFIG", kubeconfig)
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stdout(std::process::Stdio::null())
            .stderr(file)
            .kill_on_drop(true);
        let child = cmd.spawn().expect("spawn operator");
        Self { child, port, log }
    }

    /// GET `path` on the operator's port: (status code, body).
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.port, path).await
    }

    /// Waits until `/healthz` answers 200.
    pub async fn wait_healthy(&self) {
        testenv::wait_until("operator /healthz", Duration::from_secs(30), || async {
            matches!(self.get("/healthz").await, Some((200, _))).then_some(())
        })
        .await
        .unwrap_or_else(|e| panic!("{e}; log:\n{}", self.log_text()));
    }

    /// Value of `leader_election_master_status` (None before the first report).
    pub async fn leader_status(&self) -> Option<i64> {
        let (_, body) = self.get("/metrics").await?;
        body.lines()
            .find(|l| l.starts_with("leader_election_master_status{"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    /// Waits until this process holds the Lease; returns how long it took.
    pub async fn wait_leader(&self, timeout: Duration) -> Duration {
        let start = Instant::now();
        testenv::wait_until("operator becomes the leader", timeout, || async {
            (self.leader_status().await == Some(1)).then_some(())
        })
        .await
        .unwrap_or_else(|e| panic!("{e}; log:\n{}", self.log_text()));
        start.elapsed()
    }

    /// SIGTERM, then the exit code.
    pub async fn terminate(&mut self) -> Option<i32> {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("operator exits after SIGTERM")
            .expect("wait");
        status.code()
    }

    /// SIGKILL (a crash: nothing is released).
    pub async fn kill9(&mut self) {
        let _ = self.child.kill().await;
    }

    /// The process's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A minimal HTTP/1.1 GET against 127.0.0.1.
pub async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).await.ok()?;
    let code = out.split(' ').nth(1)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((code, body))
}
