//! `mattermost-operator verify`: what the upgrade guide's validation step asks, answered by the
//! server itself. It calls `/api/v4/system/ping?get_server_status=true` on the installation's
//! Service and checks that the server, its database and its file store are healthy and that it
//! runs the version that was asked for. It runs in the verification Job after a rollout; plain
//! code so tests call it against a local server.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
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
    /// A core function failed with the bot token (`--smoke-token`).
    #[error("smoke test: {step}: {message}")]
    SmokeTest {
        /// What was tried.
        step: &'static str,
        /// What went wrong (never the token).
        message: String,
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
            VerifyError::SmokeTest { .. } => "SmokeTestFailed",
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

/// One HTTP answer: status, `X-Version-Id`, body.
struct Answer {
    status: http::StatusCode,
    version: Option<String>,
    body: Bytes,
}

/// One request; `token` becomes a bearer `Authorization` header.
async fn send(method: http::Method, url: &str, token: Option<&str>, body: Bytes) -> Result<Answer, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("invalid URL: {e}"))?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut request = http::Request::builder()
        .method(method)
        .uri(uri)
        .header(http::header::ACCEPT, "application/json");
    if let Some(token) = token {
        request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request.body(Full::new(body)).map_err(|e| e.to_string())?;
    let exchange = async {
        let response = client.request(request).await.map_err(|e| e.to_string())?;
        let status = response.status();
        let version = response
            .headers()
            .get(VERSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok(Answer {
            status,
            version,
            body,
        })
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("no answer within {REQUEST_TIMEOUT:?}"))?
}

/// One ping of the server at `base_url` (`http://host:port`).
pub async fn check(base_url: &str, expected: &str) -> Result<ServerReport, VerifyError> {
    let url = format!("{}{PING_PATH}", base_url.trim_end_matches('/'));
    let answer = send(http::Method::GET, &url, None, Bytes::new())
        .await
        .map_err(|message| VerifyError::Unreachable {
            url: url.clone(),
            message,
        })?;
    judge(&answer.body, answer.version.as_deref(), expected, &url)
}

/// A bot and a channel for the smoke test.
#[derive(Clone)]
pub struct SmokeTest {
    /// The bot's access token (never printed).
    pub token: String,
    /// Channel the test post goes to.
    pub channel_id: String,
}

impl std::fmt::Debug for SmokeTest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmokeTest")
            .field("channel_id", &self.channel_id)
            .finish_non_exhaustive()
    }
}

/// The upgrade guide's "core functions work" with a bot token: who am I, upload a file, post it
/// to the channel, read the file back, delete the post.
pub async fn smoke_test(base_url: &str, smoke: &SmokeTest) -> Result<(), VerifyError> {
    let base = format!("{}/api/v4", base_url.trim_end_matches('/'));
    let token = Some(smoke.token.as_str());
    let call = |step: &'static str, method: http::Method, url: String, body: Bytes| async move {
        let fail = |message: String| VerifyError::SmokeTest { step, message };
        let answer = send(method, &url, token, body).await.map_err(fail)?;
        if !answer.status.is_success() {
            return Err(fail(format!("HTTP {}", answer.status)));
        }
        Ok(answer.body)
    };
    let field = |step: &'static str, body: &[u8], pointer: &str| {
        serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.pointer(pointer).and_then(|x| x.as_str()).map(str::to_owned))
            .ok_or(VerifyError::SmokeTest {
                step,
                message: format!("no {pointer} in the answer"),
            })
    };
    let me = call(
        "log in",
        http::Method::GET,
        format!("{base}/users/me"),
        Bytes::new(),
    )
    .await?;
    field("log in", &me, "/id")?;
    let content = Bytes::from(format!(
        "mattermost-operator upgrade smoke test {}",
        jiff::Timestamp::now()
    ));
    let upload = call(
        "upload a file",
        http::Method::POST,
        format!(
            "{base}/files?channel_id={}&filename=upgrade-smoke-test.txt",
            smoke.channel_id
        ),
        content.clone(),
    )
    .await?;
    let file_id = field("upload a file", &upload, "/file_infos/0/id")?;
    let post = serde_json::json!({
        "channel_id": smoke.channel_id,
        "message": "Upgrade verified by mattermost-operator.",
        "file_ids": [file_id],
    });
    let posted = call(
        "post to the channel",
        http::Method::POST,
        format!("{base}/posts"),
        Bytes::from(post.to_string()),
    )
    .await?;
    let post_id = field("post to the channel", &posted, "/id")?;
    let read = call(
        "read the file back",
        http::Method::GET,
        format!("{base}/files/{file_id}"),
        Bytes::new(),
    )
    .await?;
    if read != content {
        return Err(VerifyError::SmokeTest {
            step: "read the file back",
            message: "the content differs from what was uploaded".to_owned(),
        });
    }
    call(
        "delete the post",
        http::Method::DELETE,
        format!("{base}/posts/{post_id}"),
        Bytes::new(),
    )
    .await?;
    Ok(())
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

/// [`verify`], then the smoke test when a bot token was given.
pub async fn verify_all(args: &crate::cli::VerifyArgs) -> Result<ServerReport, VerifyError> {
    let report = verify(&args.url, &args.expect_version, args.timeout, args.interval).await?;
    if let Some(smoke) = args.smoke_test() {
        smoke_test(&args.url, &smoke).await?;
    }
    Ok(report)
}

/// Where Kubernetes reads a container's termination message.
const TERMINATION_LOG: &str = "/dev/termination-log";

/// Runs the `verify` subcommand: prints the result, and on failure also writes it where
/// Kubernetes picks it up as the Job pod's termination message.
pub async fn run(args: &crate::cli::VerifyArgs) -> std::process::ExitCode {
    match verify_all(args).await {
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

    /// A local server with the API calls of the smoke test; the file store keeps one file.
    async fn fake_api() -> String {
        use axum::extract::{Path, State};
        use axum::http::{HeaderMap, StatusCode};
        use axum::response::IntoResponse;
        use axum::routing::{delete, get, post};
        use std::sync::{Arc, Mutex};

        type Files = Arc<Mutex<Option<bytes::Bytes>>>;
        fn authorized(h: &HeaderMap) -> bool {
            h.get("authorization").and_then(|v| v.to_str().ok()) == Some("Bearer bot-token")
        }
        async fn me(h: HeaderMap) -> axum::response::Response {
            if !authorized(&h) {
                return StatusCode::UNAUTHORIZED.into_response();
            }
            axum::Json(serde_json::json!({"id": "u1", "username": "upgrade-bot"})).into_response()
        }
        async fn upload(
            h: HeaderMap,
            State(files): State<Files>,
            body: bytes::Bytes,
        ) -> axum::response::Response {
            if !authorized(&h) {
                return StatusCode::UNAUTHORIZED.into_response();
            }
            if let Ok(mut f) = files.lock() {
                *f = Some(body);
            }
            (
                StatusCode::CREATED,
                axum::Json(serde_json::json!({"file_infos": [{"id": "f1"}]})),
            )
                .into_response()
        }
        async fn create_post(h: HeaderMap, body: bytes::Bytes) -> axum::response::Response {
            let post: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            if !authorized(&h) || post["channel_id"] != "town-square" || post["file_ids"][0] != "f1" {
                return StatusCode::BAD_REQUEST.into_response();
            }
            (StatusCode::CREATED, axum::Json(serde_json::json!({"id": "p1"}))).into_response()
        }
        async fn read(Path(id): Path<String>, State(files): State<Files>) -> axum::response::Response {
            match files.lock().ok().and_then(|f| f.clone()) {
                Some(b) if id == "f1" => b.into_response(),
                _ => StatusCode::NOT_FOUND.into_response(),
            }
        }
        async fn remove(Path(id): Path<String>) -> StatusCode {
            if id == "p1" {
                StatusCode::OK
            } else {
                StatusCode::NOT_FOUND
            }
        }
        let app = axum::Router::new()
            .route("/api/v4/users/me", get(me))
            .route("/api/v4/files", post(upload))
            .route("/api/v4/files/{id}", get(read))
            .route("/api/v4/posts", post(create_post))
            .route("/api/v4/posts/{id}", delete(remove))
            .with_state(Files::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn the_smoke_test_logs_in_uploads_posts_reads_back_and_cleans_up() {
        let base = fake_api().await;
        let smoke = SmokeTest {
            token: "bot-token".into(),
            channel_id: "town-square".into(),
        };
        smoke_test(&base, &smoke).await.unwrap();
        let wrong = SmokeTest {
            token: "expired".into(),
            ..smoke.clone()
        };
        let err = smoke_test(&base, &wrong).await.unwrap_err();
        assert_eq!(err.reason(), "SmokeTestFailed");
        assert_eq!(err.to_string(), "smoke test: log in: HTTP 401 Unauthorized");
        assert!(
            !format!("{wrong:?} {err}").contains("expired"),
            "the token is never printed"
        );
        let elsewhere = SmokeTest {
            channel_id: "other".into(),
            ..smoke
        };
        let err = smoke_test(&base, &elsewhere).await.unwrap_err();
        assert!(
            err.to_string().starts_with("smoke test: post to the channel"),
            "{err}"
        );
    }
}
