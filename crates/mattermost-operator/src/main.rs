//! `mattermost-operator [run] | crd | verify`. Without a subcommand it runs, as the Go operator's
//! container command does.

use std::process::ExitCode;

use mattermost_operator::cli::{Cli, Command};
use mattermost_operator::{crd, run, verify};

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    match Cli::parse_args().into_command() {
        Command::Crd => {
            print!("{}", crd::all_yaml()?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(args) => run::run(*args).await,
        Command::Verify(args) => Ok(verify::run(&args).await),
    }
}
