//! The Kubernetes clients: where the config comes from, the User-Agent that names us in audit
//! logs, and the timeouts that keep a dead connection from hanging a reconcile.
//!
//! Two clients, because kube's read timeout applies to every response on a connection, watches
//! included: a quiet watch would time out and reconnect every few seconds. Requests (reads and
//! writes of reconciles, events, the Lease) use a client with a read timeout; watches use one
//! without, and rely on the watcher's idle timeout (the server ends a watch after 290 s; no byte
//! for 295 s counts as a dead connection). A connection the API server closed (a restart, a reset)
//! is dropped from the pool at once by hyper and never reused; one that went silent fails the
//! next request by its read timeout and is dropped then.

use std::path::Path;
use std::time::Duration;

use http::HeaderValue;
use http::header::USER_AGENT;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// `mattermost-operator/<version>`, sent with every request.
pub const USER_AGENT_VALUE: &str = concat!("mattermost-operator/", env!("CARGO_PKG_VERSION"));

/// Time to open a connection (TCP and TLS) to the API server.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for the next bytes of a response (not the whole response: a large LIST that keeps
/// streaming is fine). The API server's own request timeout is 60 s; a healthy server answers
/// reconcile-sized requests in milliseconds.
pub const READ_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest silence on a watch connection. The API server sends every watch a bookmark about once a
/// minute (its watch cache's heartbeat, to watchers that allow bookmarks, as kube's watcher does),
/// so a watch that stays silent for two and a half of those is dead: dropped and re-established
/// in minutes rather than at the end of kube's 295 s watch timeout, and with no request while
/// the connection is healthy.
pub const WATCH_READ_TIMEOUT: Duration = Duration::from_secs(150);
/// Longest wait to send a request.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(20);

/// Errors while building the client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The kubeconfig given with `--kubeconfig` could not be used.
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The file.
        path: String,
        /// Why.
        source: kube::config::KubeconfigError,
    },
    /// Neither a kubeconfig nor the in-cluster service account was found.
    #[error("no Kubernetes configuration: {0}")]
    Infer(#[from] kube::config::InferConfigError),
    /// The client could not be built from the config.
    #[error("building the Kubernetes client: {0}")]
    Build(#[from] kube::Error),
}

/// Loads the config from `kubeconfig`, or infers it (`KUBECONFIG`, `~/.kube/config`, in-cluster).
pub async fn config(kubeconfig: Option<&Path>) -> Result<Config, ClientError> {
    let config = match kubeconfig {
        Some(path) => {
            let err = |source| ClientError::Kubeconfig {
                path: path.display().to_string(),
                source,
            };
            let kc = Kubeconfig::read_from(path).map_err(err)?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(err)?
        }
        None => Config::infer().await?,
    };
    Ok(config)
}

/// Our User-Agent and the connect and write timeouts (both clients).
pub fn with_defaults(config: &mut Config) {
    config.headers.retain(|(name, _)| name != USER_AGENT);
    config
        .headers
        .push((USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE)));
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    config.write_timeout = Some(WRITE_TIMEOUT);
}

/// The request client's config: our defaults plus a read timeout counted from when the request
/// was sent (not from when its pooled connection went idle).
pub fn for_requests(mut config: Config) -> Config {
    with_defaults(&mut config);
    config.read_timeout = Some(READ_TIMEOUT);
    config.reset_reader_on_write = true;
    config
}

/// The watch client's config: our defaults and a read timeout between two reads (not from the
/// request: a watch lasts minutes), longer than the API server's bookmark heartbeat.
pub fn for_watches(mut config: Config) -> Config {
    with_defaults(&mut config);
    config.read_timeout = Some(WATCH_READ_TIMEOUT);
    config.reset_reader_on_write = false;
    config
}

/// A client for requests and a client for watches, on separate connection pools.
#[derive(Clone)]
pub struct Clients {
    /// Reads and writes: connect, write and read timeouts.
    pub requests: Client,
    /// Watches: connect and write timeouts; dead watches are caught by the watcher's idle timeout.
    pub watches: Client,
}

impl Clients {
    /// Both clients for `config`, counting their requests in `rest_client_requests_total`.
    pub fn counted(
        config: Config,
        metrics: &std::sync::Arc<crate::metrics::Metrics>,
    ) -> Result<Self, ClientError> {
        Ok(Self {
            requests: counted(for_requests(config.clone()), metrics.clone())?,
            watches: counted(for_watches(config), metrics.clone())?,
        })
    }

    /// Both clients for `config`.
    pub fn new(config: Config) -> Result<Self, ClientError> {
        Ok(Self {
            requests: Client::try_from(for_requests(config.clone()))?,
            watches: Client::try_from(for_watches(config))?,
        })
    }
}

/// One client for both (tests that build their own client).
impl From<Client> for Clients {
    fn from(client: Client) -> Self {
        Self {
            requests: client.clone(),
            watches: client,
        }
    }
}

/// A client for `config` whose every request is counted in `rest_client_requests_total`.
fn counted(config: Config, metrics: std::sync::Arc<crate::metrics::Metrics>) -> Result<Client, ClientError> {
    let host = config
        .cluster_url
        .authority()
        .map(ToString::to_string)
        .unwrap_or_default();
    let layer = crate::rest_metrics::CountRequestsLayer::new(metrics, host);
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&layer)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_agent_names_the_operator_and_version() {
        let mut config = Config::new("https://127.0.0.1:1".parse().unwrap());
        config
            .headers
            .push((USER_AGENT, HeaderValue::from_static("other")));
        with_defaults(&mut config);
        let agents: Vec<_> = config.headers.iter().filter(|(n, _)| n == USER_AGENT).collect();
        assert_eq!(agents.len(), 1);
        assert_eq!(agents[0].1, USER_AGENT_VALUE);
        assert!(USER_AGENT_VALUE.starts_with("mattermost-operator/0."));
    }

    #[test]
    fn requests_time_out_and_watches_only_when_silent_past_the_heartbeat() {
        let config = Config::new("https://127.0.0.1:1".parse().unwrap());
        let requests = for_requests(config.clone());
        assert_eq!(requests.connect_timeout, Some(CONNECT_TIMEOUT));
        assert_eq!(requests.read_timeout, Some(READ_TIMEOUT));
        assert!(requests.reset_reader_on_write);
        let watches = for_watches(config);
        assert_eq!(watches.connect_timeout, Some(CONNECT_TIMEOUT));
        assert_eq!(watches.read_timeout, Some(WATCH_READ_TIMEOUT));
        assert!(!watches.reset_reader_on_write);
        assert!(
            WATCH_READ_TIMEOUT >= Duration::from_secs(120),
            "two bookmark heartbeats"
        );
    }
}
