//! `mattermost-operator crd | run`.

use std::sync::Arc;

use clap::Parser;
use mattermost_operator::cli::{Cli, Command};
use mattermost_operator::{controller, crd, http, metrics::Metrics, reconcile, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crd => {
            print!("{}", crd::all_yaml()?);
            Ok(())
        }
        Command::Run(args) => {
            telemetry::init(args.log_format, &args.log_level)?;
            let settings = controller::Settings::from_args(&args).map_err(anyhow::Error::msg)?;
            let client = kube::Client::try_default().await?;
            let metrics = Arc::new(Metrics::new(
                &[reconcile::CONTROLLER],
                i64::from(args.max_reconcile_concurrency),
            ));
            let state = Arc::new(http::HttpState::new(metrics.clone()));
            let state_for_server = state.clone();
            let shutdown = async {
                let _ = tokio::signal::ctrl_c().await;
            };
            let listener = http::bind(args.http_addr).await?;
            let server = tokio::spawn(async move {
                if let Err(e) = http::serve(listener, state_for_server, shutdown).await {
                    tracing::error!(error = %e, "HTTP server failed");
                }
            });
            tracing::info!(namespace = ?settings.namespace, http = %args.http_addr, "starting");
            controller::run(client, settings, metrics, move || state.set_ready()).await;
            server.abort();
            tracing::info!("stopped");
            Ok(())
        }
    }
}
