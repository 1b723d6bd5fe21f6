//! Command line of `kubectl mattermost`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// See, plan, upgrade, migrate and roll back a fleet of Mattermost installations.
#[derive(Debug, Parser)]
#[command(name = "kubectl-mattermost", bin_name = "kubectl mattermost", version, about)]
pub struct Cli {
    /// Connection and selection.
    #[command(flatten)]
    pub global: Global,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct Global {
    /// Kubeconfig file (default: KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context.
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// Namespace (default: the context's).
    #[arg(short, long, global = true)]
    pub namespace: Option<String>,
    /// Every namespace.
    #[arg(short = 'A', long, global = true)]
    pub all_namespaces: bool,
    /// Label selector, e.g. `tier=gold,region!=eu`.
    #[arg(short = 'l', long, global = true)]
    pub selector: Option<String>,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns.
    Table,
    /// JSON.
    Json,
    /// YAML.
    Yaml,
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// One line per installation and a fleet summary; with NAME, the detailed view. Exit code 0
    /// when all are stable, 1 when any is blocked or degraded, 3 while some still converge.
    Status {
        /// One installation.
        name: Option<String>,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// What an upgrade would do, changing nothing.
    Plan {
        /// What to plan.
        #[command(subcommand)]
        what: PlanCommand,
    },
    /// Upgrade installations in waves, canary first, stopping when the failure budget is spent.
    /// Run it again to continue where it stopped.
    Upgrade(UpgradeArgs),
    /// Set installations back to their last stable version (no update Job).
    Rollback {
        /// Installations (or use -l / -A).
        names: Vec<String>,
        /// Wait until each is stable again.
        #[arg(long)]
        wait: bool,
        /// How long `--wait` waits.
        #[arg(long, default_value = "15m", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Migrate ClusterInstallations to Mattermost (spec.migrate), under the operator's cap.
    Migrate {
        /// ClusterInstallations (or use -n / -A / -l).
        names: Vec<String>,
        /// Wait until each migration finished, showing its steps.
        #[arg(long)]
        wait: bool,
        /// Revert migrations that have not completed.
        #[arg(long)]
        revert: bool,
        /// How long `--wait` waits.
        #[arg(long, default_value = "30m", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Checks before an upgrade: the operator's preflight plus the upgrade guide's checklist.
    Preflight {
        /// One installation.
        name: Option<String>,
        /// Version to check for.
        #[arg(long)]
        version: String,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// A support bundle (zip) with secrets and credentials redacted.
    Report {
        /// One installation.
        name: Option<String>,
        /// Zip file to write.
        #[arg(short, long, default_value = "mattermost-report.zip")]
        output: PathBuf,
        /// Where the operator's pods are, for their logs (default: every namespace).
        #[arg(long)]
        operator_namespace: Option<String>,
    },
    /// Active/active: upgrade several sites (clusters) one at a time with traffic drained, writes
    /// guarded and replication checked, as a site plan file says (docs/active-active.md).
    Sites {
        /// What to do.
        #[command(subcommand)]
        what: SitesCommand,
    },
    /// Shell completions.
    Completion {
        /// Shell.
        shell: clap_complete::Shell,
    },
}

/// Plans.
#[derive(Debug, Subcommand)]
pub enum PlanCommand {
    /// Plan an upgrade.
    Upgrade(PlanArgs),
}

/// `sites` commands.
#[derive(Debug, Subcommand)]
pub enum SitesCommand {
    /// Print every step of the upgrade, changing nothing.
    Plan(SitesArgs),
    /// Upgrade the sites one at a time; run it again to resume where it stopped.
    Upgrade(SitesArgs),
    /// Return the sites the plan upgraded to their last stable version, one at a time, with the
    /// same drain and restore steps.
    Rollback(SitesArgs),
}

/// Arguments of the `sites` commands.
#[derive(Debug, Clone, Args)]
pub struct SitesArgs {
    /// The site plan (YAML).
    #[arg(short = 'f', long)]
    pub file: PathBuf,
    /// Who runs it, recorded in the lock (default: $USER).
    #[arg(long)]
    pub owner: Option<String>,
    /// Take the lock even when another run holds it (only when you know that run is gone).
    #[arg(long)]
    pub break_lock: bool,
    /// Output format (`sites plan` only).
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// Arguments shared by `plan upgrade` and `upgrade`.
#[derive(Debug, Clone, Args)]
pub struct PlanArgs {
    /// Target version (image tag).
    #[arg(long)]
    pub version: String,
    /// Installations in the first wave, alone.
    #[arg(long, default_value_t = 1)]
    pub canary: usize,
    /// Installations per wave after the canary.
    #[arg(long, default_value_t = 10)]
    pub wave_size: usize,
    /// Output format (plan only).
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// Arguments of `upgrade`.
#[derive(Debug, Clone, Args)]
pub struct UpgradeArgs {
    /// Version, canary and waves.
    #[command(flatten)]
    pub plan: PlanArgs,
    /// Failed installations tolerated before stopping.
    #[arg(long, default_value_t = 0)]
    pub max_failures: usize,
    /// How long one wave may take to become stable.
    #[arg(long, default_value = "30m", value_parser = parse_duration)]
    pub wave_timeout: Duration,
    /// Wait until the last wave is stable too. Every earlier wave is always waited for (that is
    /// what makes waves); without this flag the command returns once the last wave is patched.
    #[arg(long)]
    pub wait: bool,
}

/// Parses `90s`, `15m`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    mattermost_operator::cli::parse_duration(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_anywhere() {
        let cli = Cli::try_parse_from([
            "kubectl-mattermost",
            "upgrade",
            "-A",
            "--version",
            "10.5.0",
            "--canary",
            "2",
        ])
        .unwrap();
        assert!(cli.global.all_namespaces);
        let Command::Upgrade(a) = cli.command else {
            panic!()
        };
        assert_eq!((a.plan.canary, a.plan.wave_size, a.max_failures), (2, 10, 0));
        assert!(!a.wait, "upgrade waits for the last wave only when asked");
    }

    #[test]
    fn upgrade_wait_flag() {
        let cli =
            Cli::try_parse_from(["kubectl-mattermost", "upgrade", "--version", "10.5.0", "--wait"]).unwrap();
        let Command::Upgrade(a) = cli.command else {
            panic!()
        };
        assert!(a.wait);
    }
}
