//! `kubectl mattermost`: a kubectl plugin (on PATH as `kubectl-mattermost`) for fleets of
//! Mattermost installations managed by mattermost-operator.

// First, so that its `outln!`/`out!` macros are in scope in every module below.
#[macro_use]
mod output;
mod cli;
mod commands;
mod error;
mod fleet;
mod kube_ctx;
mod sites;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use cli::{Cli, Command, PlanCommand, SitesCommand};
use kube_ctx::Ctx;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    if let Command::Completion { shell } = &cli.command {
        // Generated in memory (clap_complete panics on a failed write), then written with the
        // closed-pipe handling of every other output (`completion bash | head`).
        let mut script = Vec::new();
        clap_complete::generate(*shell, &mut Cli::command(), "kubectl-mattermost", &mut script);
        output::write_stdout_bytes(&script);
        return ExitCode::SUCCESS;
    }
    match run(cli).await {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> Result<u8, error::Error> {
    // Each site has its own cluster: `sites` connects per site, not to the current context.
    if let Command::Sites { what } = &cli.command {
        use sites::progress::Mode;
        let (args, mode) = match what {
            SitesCommand::Plan(a) => (a, None),
            SitesCommand::Upgrade(a) => (a, Some(Mode::Upgrade)),
            SitesCommand::Rollback(a) => (a, Some(Mode::Rollback)),
        };
        return sites::run::run(&cli.global, args, mode).await;
    }
    let ctx = Ctx::connect(&cli.global).await?;
    match cli.command {
        Command::Status { name, output } => commands::status::run(&ctx, name, output).await,
        Command::Plan {
            what: PlanCommand::Upgrade(args),
        } => commands::upgrade::run_plan(&ctx, &args).await,
        Command::Upgrade(args) => commands::upgrade::run_upgrade(&ctx, &args).await,
        Command::Rollback { names, wait, timeout } => {
            commands::upgrade::run_rollback(&ctx, &names, wait, timeout).await
        }
        Command::Migrate {
            names,
            wait,
            revert,
            timeout,
        } => commands::migrate::run(&ctx, &names, wait, revert, timeout).await,
        Command::Preflight {
            name,
            version,
            output,
        } => commands::preflight::run(&ctx, name, &version, output).await,
        Command::Report {
            name,
            output,
            operator_namespace,
        } => commands::report::run(&ctx, name, &output, operator_namespace.as_deref()).await,
        Command::Completion { .. } | Command::Sites { .. } => Ok(0),
    }
}
