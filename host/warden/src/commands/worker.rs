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

/// Runs `warden worker` until Ctrl-C: the first claims nothing more and lets the running jobs
/// end (their ends recorded); a second interrupts them (they end failed, or outcome-unknown
/// when they may have written); a third quits at once (exit 130).
pub async fn run(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let store = args.work.database.open(true).await?;
    let worker = Worker::start(&args.work, store).await?;
    eprintln!(
        "worker: taking fleet jobs ({} at a time)",
        args.work.concurrency
    );
    let first = super::run::listen_for_ctrl_c().await;
    super::fleet::work_steered_by_ctrl_c(
        &worker,
        worker.work(None),
        first,
        "worker: stopping; running jobs end first (Ctrl-C again interrupts them)",
    )
    .await?;
    Ok(ExitCode::SUCCESS)
}
