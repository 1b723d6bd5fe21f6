//! Command line: `crd`, `run`, `verify`, and no subcommand (= `run`, as the Go operator's container starts it:
//! `/mattermost-operator --enable-leader-election --metrics-addr=0.0.0.0:8383`). Every `run` flag is
//! also an environment variable, with the Go operator's names where it had one (the Helm chart and
//! fleet manifests set those).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

/// Kubernetes operator for Mattermost.
#[derive(Debug, Parser)]
#[command(
    name = "mattermost-operator",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// What to do; without a subcommand the operator runs.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Settings when run without a subcommand.
    #[command(flatten)]
    pub run: RunArgs,
}

impl Cli {
    /// Parses the process arguments, accepting Go-style single-dash long flags (`-metrics-addr`).
    pub fn parse_args() -> Self {
        Self::parse_from(go_style_args(std::env::args_os()))
    }

    /// The command to execute: `run` when none was given.
    pub fn into_command(self) -> Command {
        self.command.unwrap_or(Command::Run(Box::new(self.run)))
    }
}

/// Rewrites Go `flag` package spellings (`-metrics-addr=x`) to clap's (`--metrics-addr=x`). Short
/// flags (`-h`, `-V`) and values are left alone.
pub fn go_style_args<I: IntoIterator<Item = std::ffi::OsString>>(args: I) -> Vec<std::ffi::OsString> {
    args.into_iter()
        .enumerate()
        .map(|(i, a)| match a.to_str() {
            Some(s) if i > 0 && s.len() > 2 && s.starts_with('-') && !s.starts_with("--") => {
                let name = s[1..].split('=').next().unwrap_or_default();
                if name.len() > 1 && name.chars().all(|c| c.is_ascii_lowercase() || c == '-') {
                    format!("-{s}").into()
                } else {
                    a
                }
            }
            _ => a,
        })
        .collect()
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the CustomResourceDefinitions as YAML (install with `kubectl apply --server-side -f -`).
    Crd,
    /// Run the operator (also what happens without a subcommand).
    Run(Box<RunArgs>),
    /// Check a Mattermost server's health and version (what the verification Job runs).
    Verify(VerifyArgs),
}

/// Settings of `verify`.
#[derive(Debug, Clone, clap::Args)]
pub struct VerifyArgs {
    /// Base URL of the server, e.g. `http://chat.ns.svc:8065`.
    #[arg(long, env = "VERIFY_URL")]
    pub url: String,
    /// The version the server must report (an image tag; a digest skips the check).
    #[arg(long, env = "VERIFY_EXPECT_VERSION")]
    pub expect_version: String,
    /// How long the server may take to pass (Go duration).
    #[arg(long, env = "VERIFY_TIMEOUT", default_value = "120s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Pause between two attempts.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub interval: Duration,
    /// A bot's access token for the smoke test (from a Secret; never printed).
    #[arg(long, env = "VERIFY_SMOKE_TOKEN", hide_env_values = true)]
    pub smoke_token: Option<String>,
    /// Channel the smoke test posts to.
    #[arg(long, env = "VERIFY_SMOKE_CHANNEL")]
    pub smoke_channel: Option<String>,
}

impl VerifyArgs {
    /// The smoke test, when both a token and a channel were given.
    pub fn smoke_test(&self) -> Option<crate::verify::SmokeTest> {
        let token = self.smoke_token.clone().filter(|t| !t.is_empty())?;
        let channel_id = self.smoke_channel.clone().filter(|c| !c.is_empty())?;
        Some(crate::verify::SmokeTest { token, channel_id })
    }
}

/// The operator's own image, which the verification Jobs run: this build's release.
pub fn default_operator_image() -> String {
    format!(
        "ghcr.io/mattermost-operator-rs/mattermost-operator:{}",
        env!("CARGO_PKG_VERSION")
    )
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
    /// Namespaces to watch, comma-separated; empty watches all namespaces.
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
    /// Address of the HTTP server with /healthz, /readyz and /metrics (the Go operator's
    /// `--metrics-addr`).
    #[arg(long, visible_alias = "metrics-addr", env = "HTTP_ADDR", default_value = "0.0.0.0:8383", value_parser = parse_addr)]
    pub http_addr: SocketAddr,
    /// Run controllers only while holding the Lease (two or more replicas; also excludes a Go
    /// operator that uses the same Lease).
    #[arg(long, env = "ENABLE_LEADER_ELECTION", num_args = 0..=1, default_missing_value = "true", default_value_t = false, action = clap::ArgAction::Set)]
    pub enable_leader_election: bool,
    /// Name of the leader-election Lease (the Go operator's, so the two exclude each other).
    #[arg(long, env = "LEADER_ELECTION_ID", default_value = crate::leader::DEFAULT_LEASE_NAME)]
    pub leader_election_id: String,
    /// Namespace of the Lease; defaults to `POD_NAMESPACE`, then the in-cluster service account's.
    #[arg(long, env = "LEADER_ELECTION_NAMESPACE")]
    pub leader_election_namespace: Option<String>,
    /// How long a Lease stays valid without renewal; a follower takes over after it expires.
    #[arg(long, env = "LEADER_ELECTION_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    pub leader_election_lease_duration: Duration,
    /// On SIGTERM, how long in-flight reconciles may run before the Lease is released anyway.
    #[arg(long, env = "GRACEFUL_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub graceful_shutdown_timeout: Duration,
    /// How often a stable installation is checked again although no watch reported a change (a
    /// safety net; from caches, no API request unless something drifted; plus up to 10 % jitter).
    /// `0s` turns it off.
    #[arg(long, env = "RESYNC_PERIOD", default_value = "5m", value_parser = parse_duration)]
    pub resync_period: Duration,
    /// How long one step of a ClusterInstallation migration may take before it is reported
    /// `Stalled` and gives its rollout slot back (Go duration).
    #[arg(long, env = "MIGRATION_STEP_DEADLINE", default_value = "10m", value_parser = parse_duration)]
    pub migration_step_deadline: Duration,
    /// Kubeconfig file (without it: `KUBECONFIG`, `~/.kube/config`, then in-cluster).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
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
    /// Image of the verification Jobs: the operator's own (set by the Helm chart; a mirror in
    /// air-gapped clusters).
    #[arg(long, env = "OPERATOR_IMAGE", default_value_t = default_operator_image())]
    pub operator_image: String,
}

/// Which namespaces the operator watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every namespace (needs the ClusterRole).
    Cluster,
    /// Only these namespaces (a Role in each is enough).
    Namespaces(Vec<String>),
}

impl Scope {
    /// The namespaces to run one set of watches for: `None` stands for all namespaces.
    pub fn watches(&self) -> Vec<Option<String>> {
        match self {
            Scope::Cluster => vec![None],
            Scope::Namespaces(names) => names.iter().cloned().map(Some).collect(),
        }
    }
}

impl RunArgs {
    /// The namespaces to watch.
    pub fn scope(&self) -> Result<Scope, String> {
        let mut names: Vec<String> = Vec::new();
        for name in self
            .watch_namespace
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            if !is_dns_label(name) {
                return Err(format!(
                    "--watch-namespace: {name:?} is not a namespace name (lowercase letters, digits and '-')"
                ));
            }
            if !names.iter().any(|n| n == name) {
                names.push(name.to_owned());
            }
        }
        Ok(if names.is_empty() {
            Scope::Cluster
        } else {
            Scope::Namespaces(names)
        })
    }
}

fn is_dns_label(s: &str) -> bool {
    s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Parses a listen address; like Go, `:8383` means every interface.
fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    let full = if s.starts_with(':') {
        format!("0.0.0.0{s}")
    } else {
        s.to_owned()
    };
    full.parse()
        .map_err(|_| format!("invalid address {s:?} (examples: 0.0.0.0:8383, :8383, 127.0.0.1:8080)"))
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

    fn run_args(args: &[&str]) -> RunArgs {
        let argv = go_style_args(args.iter().map(std::ffi::OsString::from));
        match Cli::try_parse_from(argv).unwrap().into_command() {
            Command::Run(a) => *a,
            Command::Crd | Command::Verify(_) => panic!("run expected"),
        }
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_and_go_durations() {
        let args = run_args(&["mattermost-operator", "run"]);
        assert_eq!(args.max_reconcile_concurrency, 10);
        assert_eq!(args.requeue_on_limit_delay, Duration::from_secs(20));
        assert_eq!(args.resync_period, Duration::from_secs(300));
        assert_eq!(args.scope(), Ok(Scope::Cluster));
        assert!(!args.enable_leader_election);
        assert_eq!(args.http_addr, "0.0.0.0:8383".parse().unwrap());
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert!(parse_duration("5 minutes").is_err());
    }

    #[test]
    fn verify_subcommand() {
        let cli = Cli::try_parse_from([
            "mattermost-operator",
            "verify",
            "--url=http://chat.ns.svc:8065",
            "--expect-version=10.9.0",
            "--timeout=30s",
        ])
        .unwrap();
        let Command::Verify(args) = cli.into_command() else {
            panic!("verify expected")
        };
        assert_eq!(
            (args.url.as_str(), args.expect_version.as_str(), args.timeout),
            ("http://chat.ns.svc:8065", "10.9.0", Duration::from_secs(30))
        );
        assert!(
            run_args(&["mattermost-operator"])
                .operator_image
                .ends_with(env!("CARGO_PKG_VERSION"))
        );
    }

    #[test]
    fn namespaces() {
        let args = run_args(&["mattermost-operator", "run", "--watch-namespace", "chat"]);
        assert_eq!(args.scope(), Ok(Scope::Namespaces(vec!["chat".into()])));
        let args = run_args(&["mattermost-operator", "--watch-namespace", "a, b,a"]);
        assert_eq!(args.scope(), Ok(Scope::Namespaces(vec!["a".into(), "b".into()])));
        let args = run_args(&["mattermost-operator", "--watch-namespace", "Bad_NS"]);
        assert!(args.scope().unwrap_err().contains("Bad_NS"));
    }

    #[test]
    fn go_operator_container_args_run_the_operator() {
        let args = run_args(&[
            "/mattermost-operator",
            "--enable-leader-election",
            "--metrics-addr=0.0.0.0:8383",
        ]);
        assert!(args.enable_leader_election);
        assert_eq!(args.http_addr, "0.0.0.0:8383".parse().unwrap());
        // Go's flag package also takes one dash, `=true` and `:port`.
        let args = run_args(&[
            "/mattermost-operator",
            "-enable-leader-election=true",
            "-metrics-addr",
            ":9000",
        ]);
        assert!(args.enable_leader_election);
        assert_eq!(args.http_addr, "0.0.0.0:9000".parse().unwrap());
        let args = run_args(&["/mattermost-operator", "--enable-leader-election=false"]);
        assert!(!args.enable_leader_election);
    }

    #[test]
    fn unknown_flags_are_refused_by_name() {
        let err = Cli::try_parse_from(["mattermost-operator", "--zap-devel"]).unwrap_err();
        assert!(err.to_string().contains("--zap-devel"), "{err}");
        assert!(matches!(
            Cli::try_parse_from(["mattermost-operator", "crd"])
                .unwrap()
                .into_command(),
            Command::Crd
        ));
    }
}
