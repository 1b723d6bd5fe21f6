//! Command line: `crd` and `run`. Every `run` flag is also an environment variable, with the Go
//! operator's names where it had one (the Helm chart and fleet manifests set those).

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

/// Kubernetes operator for Mattermost.
#[derive(Debug, Parser)]
#[command(name = "mattermost-operator", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the CustomResourceDefinitions as YAML (install with `kubectl apply --server-side -f -`).
    Crd,
    /// Run the operator.
    Run(RunArgs),
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Plain,
    /// One JSON object per line.
    Json,
}

/// Settings of `run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Namespace to watch; empty watches all namespaces.
    #[arg(long, env = "WATCH_NAMESPACE", default_value = "")]
    pub watch_namespace: String,
    /// Reconciles running at once.
    #[arg(long, env = "MAX_RECONCILE_CONCURRENCY", default_value_t = 10)]
    pub max_reconcile_concurrency: u16,
    /// Installations that may roll out at once, cluster-wide (0 = no limit).
    #[arg(long, env = "MAX_RECONCILING_INSTALLATIONS", default_value_t = 20)]
    pub max_reconciling_installations: u32,
    /// How long an installation waiting for a rollout slot waits before checking again (Go
    /// duration, e.g. 20s).
    #[arg(long, env = "REQUEUE_ON_LIMIT_DELAY", default_value = "20s", value_parser = parse_duration)]
    pub requeue_on_limit_delay: Duration,
    /// Address of the HTTP server with /healthz, /readyz and /metrics.
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain)]
    pub log_format: LogFormat,
    /// Log filter, e.g. `info` or `info,mattermost_operator=debug`.
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Pod retries of the update Job before it counts as failed.
    #[arg(long, env = "UPDATE_JOB_BACKOFF_LIMIT", default_value_t = 2)]
    pub update_job_backoff_limit: i32,
    /// Seconds an update Job may run (`activeDeadlineSeconds`).
    #[arg(long, env = "UPDATE_JOB_DEADLINE_SECONDS", default_value_t = 600)]
    pub update_job_deadline_seconds: i64,
}

impl RunArgs {
    /// The namespace to watch, `None` for all.
    pub fn namespace(&self) -> Result<Option<String>, String> {
        let names: Vec<&str> = self
            .watch_namespace
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        match names.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some((*one).to_owned())),
            _ => Err(format!(
                "--watch-namespace {:?}: watching several namespaces is not supported; give one namespace, or none \
                 to watch all",
                self.watch_namespace
            )),
        }
    }
}

/// Parses a Go duration such as `20s`, `1m30s`, `500ms` or `2h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let err = || format!("invalid duration {s:?} (examples: 20s, 1m30s, 500ms)");
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(err());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(err)?;
        let value: f64 = rest[..digits].parse().map_err(|_| err())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let secs = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(err()),
        };
        total += Duration::from_secs_f64(value * secs);
        rest = &rest[unit_len..];
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_go_durations() {
        let cli = Cli::try_parse_from(["mattermost-operator", "run"]).unwrap();
        let Command::Run(args) = cli.command else {
            panic!("run expected")
        };
        assert_eq!(args.max_reconcile_concurrency, 10);
        assert_eq!(args.requeue_on_limit_delay, Duration::from_secs(20));
        assert_eq!(args.namespace(), Ok(None));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert!(parse_duration("5 minutes").is_err());
        let cli = Cli::try_parse_from(["mattermost-operator", "run", "--watch-namespace", "chat"]).unwrap();
        let Command::Run(args) = cli.command else {
            panic!("run expected")
        };
        assert_eq!(args.namespace(), Ok(Some("chat".to_owned())));
        let cli = Cli::try_parse_from(["mattermost-operator", "run", "--watch-namespace", "a,b"]).unwrap();
        let Command::Run(args) = cli.command else {
            panic!("run expected")
        };
        assert!(args.namespace().is_err());
    }
}
