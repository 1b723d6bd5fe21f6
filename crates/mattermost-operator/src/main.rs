//! `mattermost-operator [run] | crd | verify`. Without a subcommand it runs, as the Go operator's
//! container command does.

use std::process::ExitCode;

use mattermost_operator::cli::{Cli, Command};
use mattermost_operator::{crd, run, verify};

#[cfg(feature = "dhat-heap")]
#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

/// jemalloc with one arena and a background thread that returns freed pages within seconds
/// (`.cargo/config.toml`): glibc malloc kept most of what a fleet upgrade allocated and freed
/// (docs/benchmarks.md).
#[cfg(not(feature = "dhat-heap"))]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    // Written to dhat-heap.json when main returns (the peak heap and where it was allocated).
    #[cfg(feature = "dhat-heap")]
    let _profiler = dhat::Profiler::new_heap();
    match Cli::parse_args().into_command() {
        Command::Crd => {
            print!("{}", crd::all_yaml()?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(args) => run::run(*args).await,
        Command::Verify(args) => Ok(verify::run(&args).await),
    }
}
