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
/// when they may have written).
pub async fn run(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let store = args.work.database.open(true).await?;
    let worker = Worker::start(&args.work, store).await?;
    eprintln!(
        "worker: taking fleet jobs ({} at a time)",
        args.work.concurrency
    );
    let work = worker.work(None);
    tokio::pin!(work);
    tokio::select! {
        result = &mut work => {
            result?;
            return Ok(ExitCode::SUCCESS);
        }
        _ = tokio::signal::ctrl_c() => {}
    }
    eprintln!("worker: stopping; running jobs end first (Ctrl-C again interrupts them)");
    worker.stop();
    tokio::select! {
        result = &mut work => result?,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("worker: interrupting the running jobs");
            worker.interrupt_running();
            work.await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
