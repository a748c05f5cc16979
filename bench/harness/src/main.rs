//! `warden-bench`: the benchmarks of BENCHMARKS.md, against exosim over HTTPS. Measurements, not
//! tests: nothing here fails on a number; it fails only when a contender did not do the work
//! (a call failed, a run did not complete), so a fast wrong answer never passes as a result.
//!
//! `warden-bench all …` runs every measurement and writes a Markdown section and a JSON file;
//! `bench/run.sh` builds what is needed and calls it. `scale-child` is the subprocess the
//! scale measurement runs in (so its peak RSS is its own); `profile` runs only the plugin side
//! of the overhead measurement, for `perf record`; `transports` compares REST and Remote
//! PowerShell; `serve` measures the service (`warden serve`) against `warden eval`; `fleet`
//! times a fleet over many tenants worked by 1, 2, 4 `warden worker` processes.

mod bare;
mod exo;
mod fleet;
mod host;
mod measure;
mod serve;
mod stats;
mod transports;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(about = "exo-warden benchmarks against exosim (see BENCHMARKS.md)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Every measurement; writes Markdown and JSON.
    All(measure::AllArgs),
    /// (internal) one scale measurement in its own process.
    ScaleChild(measure::ScaleChildArgs),
    /// Only the plugin side of the overhead measurement, for a profiler.
    Profile(measure::ProfileArgs),
    /// REST and Remote PowerShell side by side; writes Markdown and JSON.
    Transports(transports::TransportArgs),
    /// `warden serve`: API latency against `warden eval`, and many concurrent delegates.
    Serve(serve::ServeArgs),
    /// Fleets: many tenants × one read, worked by 1, 2, 4 `warden worker` processes on
    /// PostgreSQL; writes Markdown and JSON.
    Fleet(fleet::FleetArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::All(args) => measure::all(args).await,
            Command::ScaleChild(args) => measure::scale_child(args).await,
            Command::Profile(args) => measure::profile(args).await,
            Command::Transports(args) => transports::run(args).await,
            Command::Serve(args) => serve::run(args).await,
            Command::Fleet(args) => fleet::run(args).await,
        }
    })
}

/// Where the repository is, for default paths.
fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}
