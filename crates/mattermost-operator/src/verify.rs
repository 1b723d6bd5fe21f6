//! `mattermost-operator verify`: what the upgrade guide's validation step asks, answered by the
//! server itself. It calls `/api/v4/system/ping?get_server_status=true` on the installation's
//! Service and checks that the server, its database and its file store are healthy and that it
//! runs the version that was asked for. It runs in the verification Job after a rollout; plain
//! code so tests call it against a local server.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Mattermost's health value.
const OK: &str = "OK";
/// Response header with `<version>.<build>.<config hash>.<licensed>`.
pub const VERSION_HEADER: &str = "x-version-id";
/// Path and query of the health check.
pub const PING_PATH: &str = "/api/v4/system/ping?get_server_status=true";
/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the server did not pass; the message ends up in the Job's termination message and the
/// installation's `Degraded` condition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// No HTTP answer.
    #[error("no answer from {url}: {message}")]
    Unreachable {
        /// What was called.
        url: String,
        /// The client's error.
        message: String,
    },
    /// An answer that is not Mattermost's ping.
    #[error("unexpected answer from {url}: {message}")]
    BadResponse {
        /// What was called.
        url: String,
        /// What was wrong.
        message: String,
    },
    /// The server reports a problem.
    #[error("server unhealthy: status {status}, database {database}, file store {filestore}")]
    Unhealthy {
        /// `status`.
        status: String,
        /// `database_status`.
        database: String,
        /// `filestore_status`.
        filestore: String,
    },
    /// The server runs another version (the old pods still serve, or the image lies).
    #[error("server reports version {reported}, expected {expected}")]
    WrongVersion {
        /// The asked-for version.
        expected: String,
        /// What the server reports (`unknown` without a version header).
        reported: String,
    },
}

impl VerifyError {
    /// Stable reason.
    pub fn reason(&self) -> &'static str {
        match self {
            VerifyError::Unreachable { .. } => "ServerUnreachable",
            VerifyError::BadResponse { .. } => "BadResponse",
            VerifyError::Unhealthy { .. } => "ServerUnhealthy",
            VerifyError::WrongVersion { .. } => "WrongVersion",
        }
    }
}

/// What a healthy server reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerReport {
    /// The server version (`x.y.z`), when reported.
    pub version: Option<String>,
}

/// `x.y.z` at the start of `s` (a Mattermost version, a tag such as `10.9.0-rc1`, or the
/// `X-Version-Id` header `10.9.0.12345.hash.true`); `None` for a digest or `latest`.
fn release(s: &str) -> Option<String> {
    let parts: Vec<&str> = s
        .split(['.', '-', '+'])
        .take(3)
        .take_while(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
        .collect();
    (parts.len() == 3).then(|| parts.join("."))
}

/// Judges one ping answer: its JSON body and version header. `expected` is the image tag; a
/// tag that is no release (a digest, `latest`) skips the version check.
pub fn judge(
    body: &[u8],
    version_header: Option<&str>,
    expected: &str,
    url: &str,
) -> Result<ServerReport, VerifyError> {
    let json: serde_json::Value = serde_json::from_slice(body).map_err(|e| VerifyError::BadResponse {
        url: url.to_owned(),
        message: format!("not JSON: {e}"),
    })?;
    let field = |k: &str| json.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    let Some(status) = field("status") else {
        return Err(VerifyError::BadResponse {
            url: url.to_owned(),
            message: "no `status` in the ping answer".to_owned(),
        });
    };
    let database = field("database_status").unwrap_or_else(|| "not reported".to_owned());
    let filestore = field("filestore_status").unwrap_or_else(|| "not reported".to_owned());
    if status != OK || database != OK || filestore != OK {
        return Err(VerifyError::Unhealthy {
            status,
            database,
            filestore,
        });
    }
    let reported = version_header
        .and_then(release)
        .or_else(|| field("version").as_deref().and_then(release));
    if let Some(want) = release(expected)
        && reported.as_ref() != Some(&want)
    {
        return Err(VerifyError::WrongVersion {
            expected: want,
            reported: reported.unwrap_or_else(|| "unknown".to_owned()),
        });
    }
    Ok(ServerReport { version: reported })
}

/// One ping of the server at `base_url` (`http://host:port`).
pub async fn check(base_url: &str, expected: &str) -> Result<ServerReport, VerifyError> {
    let url = format!("{}{PING_PATH}", base_url.trim_end_matches('/'));
    let unreachable = |message: String| VerifyError::Unreachable {
        url: url.clone(),
        message,
    };
    let uri: http::Uri = url
        .parse()
        .map_err(|e| unreachable(format!("invalid URL: {e}")))?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let request = http::Request::get(uri)
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::new())
        .map_err(|e| unreachable(e.to_string()))?;
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let header = response
            .headers()
            .get(VERSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| unreachable(e.to_string()))?
            .to_bytes();
        Ok((header, body))
    };
    let (header, body) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| unreachable(format!("no answer within {REQUEST_TIMEOUT:?}")))??;
    judge(&body, header.as_deref(), expected, &url)
}

/// Pings until the server passes or `timeout` is over (pods that just became Ready may still
/// warm up); the last failure otherwise.
pub async fn verify(
    base_url: &str,
    expected: &str,
    timeout: Duration,
    interval: Duration,
) -> Result<ServerReport, VerifyError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let result = check(base_url, expected).await;
        if result.is_ok() || tokio::time::Instant::now() + interval >= deadline {
            return result;
        }
        tokio::time::sleep(interval).await;
    }
}

/// Where Kubernetes reads a container's termination message.
const TERMINATION_LOG: &str = "/dev/termination-log";

/// Runs the `verify` subcommand: prints the result, and on failure also writes it where
/// Kubernetes picks it up as the Job pod's termination message.
pub async fn run(args: &crate::cli::VerifyArgs) -> std::process::ExitCode {
    match verify(&args.url, &args.expect_version, args.timeout, args.interval).await {
        Ok(report) => {
            println!(
                "server healthy (database, file store) at version {}",
                report.version.as_deref().unwrap_or("unknown")
            );
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            let message = format!("{}: {e}", e.reason());
            eprintln!("{message}");
            // Best effort: outside a pod the file does not exist, and stderr has the message.
            let _ = std::fs::write(TERMINATION_LOG, &message);
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_from_tags_and_headers() {
        assert_eq!(release("10.9.0.12345.abc.true").as_deref(), Some("10.9.0"));
        assert_eq!(release("10.9.0-rc1").as_deref(), Some("10.9.0"));
        assert_eq!(release("sha256:abc"), None);
        assert_eq!(release("latest"), None);
        assert_eq!(release("10.9"), None);
    }

    #[test]
    fn judging_answers() {
        let ok = br#"{"status":"OK","database_status":"OK","filestore_status":"OK"}"#;
        assert!(judge(ok, Some("10.9.0.1.h.true"), "10.9.0", "u").is_ok());
        assert!(
            judge(ok, None, "sha256:abc", "u").is_ok(),
            "digests skip the version check"
        );
        assert_eq!(
            judge(ok, Some("10.8.1.1.h.true"), "10.9.0", "u")
                .unwrap_err()
                .reason(),
            "WrongVersion"
        );
        let db = br#"{"status":"UNHEALTHY","database_status":"UNHEALTHY","filestore_status":"OK"}"#;
        assert_eq!(
            judge(db, Some("10.9.0"), "10.9.0", "u").unwrap_err().reason(),
            "ServerUnhealthy"
        );
        assert_eq!(
            judge(b"<html>", None, "10.9.0", "u").unwrap_err().reason(),
            "BadResponse"
        );
    }

    /// A local server that answers like Mattermost's ping: `/<mode>/api/v4/system/ping`.
    async fn fake_mattermost() -> String {
        use axum::extract::{Path, State};
        use axum::http::StatusCode;
        use axum::response::IntoResponse;
        use std::sync::Arc;
        use std::sync::atomic::{AtomicU32, Ordering};

        async fn ping(
            Path(mode): Path<String>,
            State(calls): State<Arc<AtomicU32>>,
        ) -> axum::response::Response {
            let healthy = serde_json::json!({"status": "OK", "database_status": "OK", "filestore_status": "OK", "ActiveSearchBackend": "database"});
            let unhealthy_db = serde_json::json!({"status": "UNHEALTHY", "database_status": "UNHEALTHY", "filestore_status": "OK"});
            let (code, version, body) = match mode.as_str() {
                "healthy" => (StatusCode::OK, "10.9.0.15432.1a2b3c.true", healthy),
                "unhealthy-db" => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "10.9.0.15432.1a2b3c.true",
                    unhealthy_db,
                ),
                "old-version" => (StatusCode::OK, "10.8.1.15000.9f8e7d.true", healthy),
                // Unhealthy for the first two calls, as a server still warming up.
                _ if calls.fetch_add(1, Ordering::SeqCst) < 2 => {
                    (StatusCode::INTERNAL_SERVER_ERROR, "10.9.0.1.a.true", unhealthy_db)
                }
                _ => (StatusCode::OK, "10.9.0.1.a.true", healthy),
            };
            (code, [("X-Version-Id", version)], axum::Json(body)).into_response()
        }
        let app = axum::Router::new()
            .route("/{mode}/api/v4/system/ping", axum::routing::get(ping))
            .with_state(Arc::new(AtomicU32::new(0)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn the_check_against_a_server_that_answers_like_mattermost() {
        let base = fake_mattermost().await;
        let report = check(&format!("{base}/healthy"), "10.9.0").await.unwrap();
        assert_eq!(report.version.as_deref(), Some("10.9.0"));

        let err = check(&format!("{base}/unhealthy-db"), "10.9.0")
            .await
            .unwrap_err();
        assert_eq!(err.reason(), "ServerUnhealthy");
        assert!(err.to_string().contains("database UNHEALTHY"), "{err}");

        let err = check(&format!("{base}/old-version"), "10.9.0").await.unwrap_err();
        assert_eq!(
            err,
            VerifyError::WrongVersion {
                expected: "10.9.0".into(),
                reported: "10.8.1".into()
            }
        );

        // Retries until healthy within the timeout; gives up with the last failure otherwise.
        let fast = Duration::from_millis(20);
        let warming = format!("{base}/warming-up");
        assert!(
            verify(&warming, "10.9.0", Duration::from_secs(5), fast)
                .await
                .is_ok()
        );
        let err = verify(
            &format!("{base}/unhealthy-db"),
            "10.9.0",
            Duration::from_millis(100),
            fast,
        )
        .await
        .unwrap_err();
        assert_eq!(err.reason(), "ServerUnhealthy");
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let err = check(&format!("http://{closed}"), "10.9.0").await.unwrap_err();
        assert_eq!(err.reason(), "ServerUnreachable");
    }
}
