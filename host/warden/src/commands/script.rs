//! `warden script` and `warden eval`: run a Rhai script file, or a one-liner, under the policy.
//! Scripts reach Exchange through the same broker as plugins (`exo::invoke`), so the same call
//! gets the same decision either way.

use crate::guest_args::GuestArgs;
use crate::output::RunDisplay;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use warden_policy::Principal;
use warden_runtime::{Interrupt, RunRequest, RuntimeLimits, ScriptHost};

/// Arguments of `warden script`.
#[derive(Debug, Args)]
#[command(
    after_help = "Exit status: 0 completed, 1 the script failed or warden could not run it, \
3 refused by the policy, 4 stopped at a limit."
)]
pub struct ScriptArgs {
    /// The script (.rhai). Its grant pins its path and sha256.
    file: PathBuf,
    #[command(flatten)]
    guest: GuestArgs,
    /// Arguments for the script (its `ARGS` array), after `--`.
    #[arg(last = true, value_name = "ARGS")]
    args: Vec<String>,
}

/// Arguments of `warden eval`.
#[derive(Debug, Args)]
#[command(
    after_help = "The one-liner's grant pins the sha256 of its exact text \
(script_inline_sha256); a refusal prints the hash to pin.\n\
Exit status: 0 completed, 1 failed, 3 refused by the policy, 4 stopped at a limit."
)]
pub struct EvalArgs {
    /// The Rhai source, e.g. 'exo::invoke("Get-Mailbox", #{ResultSize: 10}).len()'.
    source: String,
    #[command(flatten)]
    guest: GuestArgs,
    /// Arguments for the script (its `ARGS` array), after `--`.
    #[arg(last = true, value_name = "ARGS")]
    args: Vec<String>,
}

/// Runs `warden script`.
pub async fn run_file(args: ScriptArgs, verbose: bool) -> anyhow::Result<ExitCode> {
    let source = std::fs::read_to_string(&args.file).map_err(|e| {
        anyhow::anyhow!(
            "{}: the script cannot be read: {e}\n  fix: check the path and its permissions",
            crate::output::escape(
                &args.file.display().to_string(),
                crate::output::Layout::Line
            )
        )
    })?;
    let what = args.file.display().to_string();
    let principal = Principal::script_file(&args.file, source.as_bytes());
    execute(
        &what,
        &source,
        principal,
        &args.guest,
        args.args.clone(),
        verbose,
    )
    .await
}

/// Runs `warden eval`.
pub async fn run_inline(args: EvalArgs, verbose: bool) -> anyhow::Result<ExitCode> {
    let principal = Principal::inline_script(&args.source);
    execute(
        "inline script",
        &args.source,
        principal,
        &args.guest,
        args.args.clone(),
        verbose,
    )
    .await
}

async fn execute(
    what: &str,
    source: &str,
    principal: Principal,
    guest: &GuestArgs,
    args: Vec<String>,
    verbose: bool,
) -> anyhow::Result<ExitCode> {
    let host = ScriptHost::new(RuntimeLimits::default());
    // A syntax error is reported before the policy, the audit trail or a credential is touched.
    let script = host
        .compile(what, source)
        .map_err(crate::guest_args::runtime_error)?;
    let context = guest.broker().await?;
    let display = RunDisplay::new(guest.quiet, verbose);
    let request = RunRequest {
        args,
        observer: display.clone(),
        interrupt: Interrupt::new(),
    };
    let ctrl_c = super::run::interrupt_on_ctrl_c(&request.interrupt);
    let result = host.run(&script, principal, &context.broker, request).await;
    ctrl_c.abort();
    let unclosed = super::run::trail_unclosed(&result);
    let code = guest.finish(result, &context, &display)?;
    Ok(unclosed.unwrap_or(code))
}
