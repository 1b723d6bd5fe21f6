//! The `run` command: client, HTTP server, leader election, controllers and an orderly stop.
//!
//! With leader election a process serves `/healthz` and `/metrics` at once and stands by
//! (`/readyz` 200, "standby") until it holds the Lease; only then do controllers start. SIGTERM
//! stops taking work, lets in-flight reconciles finish (bounded by `--graceful-shutdown-timeout`),
//! releases the Lease so a follower takes over at once, and exits 0. Losing the Lease stops every
//! reconcile at once and exits 1, as controller-runtime does; the pod restarts as a follower.

use std::process::ExitCode;
use std::sync::Arc;

use tracing::{error, info, warn};

use crate::cli::RunArgs;
use crate::controller::{self, Settings, Shutdown};
use crate::http::{self, HttpState};
use crate::leader::Election;
use crate::metrics::Metrics;
use crate::{client, reconcile, telemetry};

/// Runs the operator until SIGTERM/SIGINT or the loss of the Lease.
pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    telemetry::init(args.log_format, &args.log_level)?;
    let mut settings = Settings::from_args(&args).map_err(anyhow::Error::msg)?;
    let election = if args.enable_leader_election {
        Some(Election::new(
            &args.leader_election_id,
            args.leader_election_namespace.as_deref(),
            args.leader_election_lease_duration,
        )?)
    } else {
        None
    };
    let metrics = Arc::new(Metrics::new(
        &[reconcile::CONTROLLER, crate::legacy::CONTROLLER],
        i64::from(args.max_reconcile_concurrency),
    ));
    metrics.set_rollout_cap(args.max_reconciling_installations);
    let config = client::config(args.kubeconfig.as_deref()).await?;
    let clients = client::Clients::counted(config, &metrics)?;
    let client = clients.requests.clone();
    let health = crate::watch::Health::new();
    let state = Arc::new(HttpState::new(metrics.clone(), health.clone()));
    let listener = http::bind(args.http_addr).await?;
    let server_state = state.clone();
    let server = tokio::spawn(async move {
        if let Err(e) = http::serve(listener, server_state, std::future::pending()).await {
            error!(error = %e, "HTTP server failed");
        }
    });
    info!(scope = ?settings.scope, http = %args.http_addr, version = env!("CARGO_PKG_VERSION"), "starting");
    let mut terminate = std::pin::pin!(terminate_signal());

    let leader = match &election {
        Some(e) => {
            metrics.set_leader(&e.lease, false);
            state.set_standby();
            tokio::select! {
                // The Lease manager also watches the Lease: the watch client (no read timeout).
                leader = e.acquire(&clients.watches) => Some(leader),
                () = &mut terminate => {
                    info!("stopping before becoming the leader");
                    server.abort();
                    return Ok(ExitCode::SUCCESS);
                }
            }
        }
        None => None,
    };
    if let Some(e) = &election {
        metrics.set_leader(&e.lease, true);
        state.set_starting();
    }

    settings.capacity_check = controller::can_watch_capacity(&client).await;
    if !settings.capacity_check {
        warn!(
            "this service account may not watch nodes and pods in all namespaces: the capacity preflight is skipped (namespace-scoped mode)"
        );
    }
    let (stop, shutdown) = Shutdown::channel();
    let ready_state = state.clone();
    let mut controllers = tokio::spawn(controller::run_until(
        clients,
        settings,
        metrics.clone(),
        health,
        move || ready_state.set_ready(),
        shutdown,
    ));
    let clean = {
        let hold = async {
            match &leader {
                Some(l) => l.hold().await,
                None => std::future::pending().await,
            }
        };
        let mut hold = std::pin::pin!(hold);
        tokio::select! {
            () = &mut terminate => {
                info!("shutting down: finishing in-flight reconciles");
                let _ = stop.send(true);
                tokio::select! {
                    done = tokio::time::timeout(args.graceful_shutdown_timeout, &mut controllers) => {
                        if done.is_err() {
                            warn!(timeout = ?args.graceful_shutdown_timeout, "in-flight reconciles did not finish in time");
                        }
                        true
                    }
                    () = &mut hold => false,
                }
            }
            () = &mut hold => false,
            _ = &mut controllers => {
                error!("the controllers stopped unexpectedly");
                false
            }
        }
    };
    controllers.abort();
    if let (Some(l), Some(e)) = (leader, &election) {
        metrics.set_leader(&e.lease, false);
        if clean {
            l.release().await;
        } else {
            error!("lost the leader Lease: stopped reconciling");
        }
    }
    server.abort();
    info!("stopped");
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// SIGTERM (the kubelet) or SIGINT (Ctrl-C).
async fn terminate_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            warn!(error = %e, "cannot listen for SIGTERM; stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
