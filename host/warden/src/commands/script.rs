//! `warden script` and `warden eval`: run a Rhai script file, or a one-liner, under the policy.
//! Scripts reach Exchange through the same broker as plugins (`exo::invoke`), so the same call
//! gets the same decision either way.

use crate::guest_args::GuestArgs;
use crate::output::RunDisplay;
use clap::Args;
use serde_json::Value;
use std::path::PathBuf;
use std::process::ExitCode;
use warden_policy::{OPERATOR, Policy, Principal};
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
    after_help = "The one-liner runs under the grant that pins the sha256 of its exact text \
(script_inline_sha256) if there is one, else under the operator's ad hoc grant \
(principal = \"operator\", script_inline = \"any\"), which records its text in the audit trail; \
a refusal prints the hash to pin.\n\
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
    args.guest.preload_system_roots();
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
        |_| principal,
        &args.guest,
        args.args.clone(),
        verbose,
    )
    .await
}

/// Runs `warden eval`: under the grant pinning its text, else the operator's ad hoc grant.
/// Piped JSON is the script's `input` when the text names `input`; stdin is read only then, so
/// `ssh host warden eval …` or a `while read` loop around it neither waits nor eats its input.
pub async fn run_inline(args: EvalArgs, verbose: bool) -> anyhow::Result<ExitCode> {
    args.guest.preload_system_roots();
    let host = ScriptHost::new(RuntimeLimits::default());
    let compiled = host.compile("inline script", &args.source);
    // Variables are strict: a text that compiles only with `input` defined is one that uses it.
    let names_input = compiled.is_err()
        && host
            .compile_with_variables("inline script", &args.source, &["input", "ARGS"])
            .is_ok();
    if names_input && let Some(input) = read_input()? {
        return eval_with_input(&host, args, input, verbose).await;
    }
    compiled.map_err(crate::guest_args::runtime_error)?;
    execute(
        "inline script",
        &args.source,
        |policy| policy.inline_principal(OPERATOR, &args.source),
        &args.guest,
        args.args.clone(),
        verbose,
    )
    .await
}

/// Most bytes read from stdin as `input`: a pipeline narrows a cmdlet's results, and more
/// than this belongs in a plugin that streams them.
const MAX_INPUT_BYTES: u64 = 16 * 1024 * 1024;

/// Piped JSON as `input`'s items: one JSON array's items, else one value per non-blank line
/// (what `warden invoke --output json` prints). `None` when stdin is a terminal.
fn read_input() -> anyhow::Result<Option<Vec<Value>>> {
    use std::io::{IsTerminal, Read};
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return Ok(None);
    }
    let mut text = String::new();
    stdin
        .lock()
        .take(MAX_INPUT_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| {
            anyhow::anyhow!(
                "stdin: cannot be read as text: {e}
  fix: pipe JSON lines (UTF-8) into warden eval"
            )
        })?;
    if text.len() as u64 > MAX_INPUT_BYTES {
        anyhow::bail!(
            "stdin: more than {MAX_INPUT_BYTES} bytes of input
  fix: narrow the results before the pipe (--select, a filter, a smaller ResultSize), or write a plugin that streams them"
        );
    }
    if let Ok(Value::Array(items)) = serde_json::from_str::<Value>(&text) {
        return Ok(Some(items));
    }
    let mut items = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value = serde_json::from_str(line).map_err(|e| {
            anyhow::anyhow!(
                "stdin line {}: not JSON: {e}
  fix: pipe JSON lines, e.g. warden invoke … --output json",
                n + 1
            )
        })?;
        items.push(value);
    }
    Ok(Some(items))
}

/// `warden eval` over piped input: one text, in a session with `input` (and `ARGS`) defined.
async fn eval_with_input(
    host: &ScriptHost,
    args: EvalArgs,
    input: Vec<Value>,
    verbose: bool,
) -> anyhow::Result<ExitCode> {
    host.compile_with_variables("inline script", &args.source, &["input", "ARGS"])
        .map_err(crate::guest_args::runtime_error)?;
    let context = args.guest.broker().await?;
    let principal = context
        .broker
        .policy()
        .inline_principal(OPERATOR, &args.source);
    let display = RunDisplay::new(args.guest.quiet, verbose);
    let request = RunRequest {
        args: args.args.clone(),
        observer: display.clone(),
        interrupt: Default::default(),
        delegation: None,
    };
    let constants = vec![("input".to_owned(), Value::Array(input))];
    let result = match host
        .open(principal, &context.broker, request, constants, Vec::new())
        .await
    {
        Ok(session) => {
            session.eval(&args.source).await;
            Ok(session.close().await)
        }
        Err(error) => Err(error),
    };
    args.guest.finish(result, &context, &display)
}

async fn execute(
    what: &str,
    source: &str,
    principal: impl FnOnce(&Policy) -> Principal,
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
    let principal = principal(context.broker.policy());
    let display = RunDisplay::new(guest.quiet, verbose);
    let request = RunRequest {
        args,
        observer: display.clone(),
        interrupt: Interrupt::new(),
        delegation: None,
    };
    let ctrl_c = super::run::interrupt_on_ctrl_c(&request.interrupt, context.audit.clone()).await;
    let result = host.run(&script, principal, &context.broker, request).await;
    ctrl_c.abort();
    let unclosed = super::run::trail_unclosed(&result);
    let code = guest.finish(result, &context, &display)?;
    Ok(unclosed.unwrap_or(code))
}
