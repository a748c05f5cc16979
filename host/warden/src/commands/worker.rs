//! `warden worker`: works fleet jobs from a shared store (`--database postgres://…`) until
//! stopped, on as many machines as needed. The same code as `warden fleet run` working its own
//! fleet ([`super::fleet::Worker`]); jobs of a worker that dies are taken back by the others
//! after `--stale-after-secs`: reads run again, possible writes become outcome-unknown.

use super::fleet::{WorkArgs, Worker};
use clap::Args;
use std::process::ExitCode;

/// Arguments of `warden worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    work: WorkArgs,
}

/// Runs `warden worker` until Ctrl-C (a running job ends first) or an error of the store.
pub async fn run(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let store = args.work.database.open(None).await?;
    let worker = Worker::start(&args.work, store).await?;
    eprintln!(
        "worker: taking fleet jobs ({} at a time)",
        args.work.concurrency
    );
    tokio::select! {
        result = worker.work(None) => result?,
        _ = tokio::signal::ctrl_c() => eprintln!("worker: stopping"),
    }
    Ok(ExitCode::SUCCESS)
}
