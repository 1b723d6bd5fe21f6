//! The Kubernetes client: where the config comes from, the User-Agent that names us in audit logs,
//! and the timeouts that keep a dead connection from hanging a reconcile.

use std::path::Path;
use std::time::Duration;

use http::HeaderValue;
use http::header::USER_AGENT;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// `mattermost-operator/<version>`, sent with every request.
pub const USER_AGENT_VALUE: &str = concat!("mattermost-operator/", env!("CARGO_PKG_VERSION"));

/// Time to open a connection to the API server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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
    let mut config = match kubeconfig {
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
    with_defaults(&mut config);
    Ok(config)
}

/// Our User-Agent and connect timeout. Read timeouts stay off: watches are long reads, and
/// kube-runtime's watcher has its own idle timeout.
pub fn with_defaults(config: &mut Config) {
    config.headers.retain(|(name, _)| name != USER_AGENT);
    config
        .headers
        .push((USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE)));
    config.connect_timeout = Some(CONNECT_TIMEOUT);
}

/// A client for `config` with our defaults applied.
pub fn client(mut config: Config) -> Result<Client, ClientError> {
    with_defaults(&mut config);
    Ok(Client::try_from(config)?)
}

/// A client for `config` whose every request is counted in `rest_client_requests_total`.
pub fn counted(
    config: Config,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
) -> Result<Client, ClientError> {
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
}
